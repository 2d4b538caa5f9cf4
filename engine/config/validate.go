package config

import (
	"fmt"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// validate runs the checks that span jobs.
func (d *decoder) validate(cfg *Config) {
	names := map[string]int{}
	for i, j := range cfg.Jobs {
		if j.Name == "" {
			continue
		}
		if first, dup := names[j.Name]; dup {
			d.jobErrf(cfg, i, ".name", j.nameLine, "duplicate job name %q (first used by %s)", j.Name, d.jobAt(cfg, first, cfg.Jobs[first].nameLine))
			continue
		}
		names[j.Name] = i
	}

	listeners := map[string]int{}
	listens := map[string]int{} // address -> job index, -1 for monitoring
	for _, mon := range cfg.Global.Monitoring {
		if mon.Listen != "" {
			listens[mon.Listen] = -1
		}
	}
	stdinIDs := map[string]int{}
	for i, j := range cfg.Jobs {
		if j.Serve == nil {
			continue
		}
		switch j.Serve.Type {
		case TransportLocal:
			if j.Serve.ListenerName == "" {
				continue
			}
			if first, dup := listeners[j.Serve.ListenerName]; dup {
				d.jobErrf(cfg, i, ".serve.listener_name", j.Serve.Pos.Line("listener_name"), "local listener %q is already served by job %q", j.Serve.ListenerName, cfg.Jobs[first].Name)
				continue
			}
			listeners[j.Serve.ListenerName] = i
		case TransportTCP, TransportTLS:
			if j.Serve.Listen == "" {
				continue
			}
			if first, dup := listens[j.Serve.Listen]; dup {
				by := "the prometheus monitoring endpoint"
				if first >= 0 {
					by = fmt.Sprintf("job %q", cfg.Jobs[first].Name)
				}
				d.jobErrf(cfg, i, ".serve.listen", j.Serve.Pos.Line("listen"), "address %q is already served by %s", j.Serve.Listen, by)
				continue
			}
			listens[j.Serve.Listen] = i
		case TransportStdinserver:
			// Each identity is a socket in one shared directory.
			for _, id := range j.Serve.ClientIdentities {
				if first, dup := stdinIDs[id]; dup && first != i {
					d.jobErrf(cfg, i, ".serve.client_identities", j.Serve.Pos.Line("client_identities"), "stdinserver client identity %q is already served by job %q", id, cfg.Jobs[first].Name)
					continue
				}
				stdinIDs[id] = i
			}
		}
	}

	for i, j := range cfg.Jobs {
		if j.Connect == nil || j.Connect.Type != TransportLocal || j.Connect.ListenerName == "" {
			continue
		}
		const p = ".connect.listener_name"
		want := JobSink
		if j.Type == JobPull {
			want = JobSource
		}
		k, ok := listeners[j.Connect.ListenerName]
		if !ok {
			line := j.Connect.Pos.Line("listener_name")
			var names []string
			for _, q := range cfg.Jobs {
				if q.Type == want && q.Serve != nil && q.Serve.Type == TransportLocal && q.Serve.ListenerName != "" {
					names = append(names, q.Serve.ListenerName)
				}
			}
			if len(names) == 0 {
				d.jobErrf(cfg, i, p, line, "no %s job in this config serves local listener %q (want the listener_name of a %s job with serve type local; there is none)", want, j.Connect.ListenerName, want)
			} else {
				d.jobErrf(cfg, i, p, line, "no %s job in this config serves local listener %q (want one of %s)", want, j.Connect.ListenerName, strings.Join(names, ", "))
			}
			continue
		}
		peer := cfg.Jobs[k]
		if peer.Type != want {
			d.jobErrf(cfg, i, p, j.Connect.Pos.Line("listener_name"), "local listener %q is served by %s job %q, but a %s job needs a %s job", j.Connect.ListenerName, peer.Type, peer.Name, j.Type, want)
			continue
		}
		d.checkLocalLoop(cfg, i, k)
	}

	// Two receivers writing into one subtree would fight over it. Sinks
	// may share a root_fs as long as their clients differ.
	roots := make([][]zfs.DatasetPath, len(cfg.Jobs))
	for i := range cfg.Jobs {
		roots[i] = receiveRoots(cfg, i)
	}
	for i, a := range cfg.Jobs {
	pairs:
		for k := 0; k < i; k++ {
			for _, ra := range roots[i] {
				for _, rb := range roots[k] {
					if ra.HasPrefix(rb) || rb.HasPrefix(ra) {
						b := cfg.Jobs[k]
						d.jobErrf(cfg, i, ".root_fs", a.rootFSLine, "receives into %q, which overlaps %q where %s job %q receives", ra, rb, b.Type, b.Name)
						break pairs
					}
				}
			}
		}
	}
}

// receiveRoots are the subtrees job i receives into: a pull job's root_fs,
// a sink's <root_fs>/<identity> for each client it knows (all of root_fs
// if a tcp identity is a pattern).
func receiveRoots(cfg *Config, i int) []zfs.DatasetPath {
	j := cfg.Jobs[i]
	if j.RootFS.IsZero() {
		return nil
	}
	if j.Type == JobPull || j.Serve == nil {
		return []zfs.DatasetPath{j.RootFS}
	}
	var ids []string
	switch j.Serve.Type {
	case TransportTCP:
		for _, c := range j.Serve.Clients {
			if strings.Contains(c.Identity, "*") {
				return []zfs.DatasetPath{j.RootFS}
			}
			ids = append(ids, c.Identity)
		}
	case TransportTLS:
		ids = j.Serve.ClientCNs
	case TransportStdinserver:
		ids = j.Serve.ClientIdentities
	case TransportLocal:
		for _, p := range cfg.Jobs {
			if p.Type == JobPush && p.Connect != nil && p.Connect.Type == TransportLocal && p.Connect.ListenerName == j.Serve.ListenerName {
				ids = append(ids, p.Connect.ClientIdentity)
			}
		}
	}
	var out []zfs.DatasetPath
	for _, id := range ids {
		if p, err := j.RootFS.Child(id); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// checkLocalLoop refuses a local pair where the sender's filesystems
// include where the receiver puts them: each run would replicate the
// previous run's copies again.
func (d *decoder) checkLocalLoop(cfg *Config, active, passive int) {
	a, p := cfg.Jobs[active], cfg.Jobs[passive]
	// A pull job receives into its root_fs from the source's filesystems.
	senderIdx, recvRoot := passive, a.RootFS
	if a.Type == JobPush {
		// A sink receives into <root_fs>/<client identity>.
		senderIdx = active
		if p.RootFS.IsZero() || a.Connect.ClientIdentity == "" {
			return
		}
		var err error
		if recvRoot, err = p.RootFS.Child(a.Connect.ClientIdentity); err != nil {
			return
		}
	}
	sender := cfg.Jobs[senderIdx].Filesystems
	if sender == nil || recvRoot.IsZero() {
		return
	}
	if w, overlap := sender.Overlap(SubtreeFilter(recvRoot)); overlap {
		sj := cfg.Jobs[senderIdx]
		where := fmt.Sprintf("%q, where", w)
		if w != recvRoot {
			where = fmt.Sprintf("%q, below %q where", w, recvRoot)
		}
		d.jobErrf(cfg, senderIdx, ".filesystems", sj.filesystemsLine,
			"selects %s the local %s/%s pair %q/%q receives: each run would replicate its own copies",
			where, a.Type, p.Type, a.Name, p.Name)
	}
}

// jobPath is the YAML path of cfg.Jobs[i]; jobs that failed to decode are
// not in cfg.Jobs, so the index in the document is kept in the job.
func jobPath(cfg *Config, i int) string {
	return fmt.Sprintf("jobs[%d]", cfg.Jobs[i].index)
}

// jobErrf reports a problem at sub (".name", ".root_fs", ...) of
// cfg.Jobs[i], in the file that defines the job.
func (d *decoder) jobErrf(cfg *Config, i int, sub string, line int, format string, args ...any) {
	d.errs = append(d.errs, &Error{Path: jobPath(cfg, i) + sub, Line: line, Msg: fmt.Sprintf(format, args...), File: cfg.Jobs[i].File})
}

// jobAt names line of cfg.Jobs[i] for a message about another job: with
// the file when the job is in an included one, so that a problem spanning
// two files names both.
func (d *decoder) jobAt(cfg *Config, i, line int) string {
	s := fmt.Sprintf("%s at line %d", jobPath(cfg, i), line)
	switch {
	case cfg.Jobs[i].File != "":
		return s + " of " + cfg.Jobs[i].File
	case !d.included:
		return s
	case d.mainFile != "":
		return s + " of " + d.mainFile
	}
	return s + " of the config file"
}
