package scenarios

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
)

// scripted runs body once, with a *rapid.T for the world's methods, in a
// synctest bubble of its own. Its draws (a fault's parameters) are random:
// body must hold for every value they can take.
func scripted(t *testing.T, body func(rt *rapid.T)) {
	setFlag(t, "rapid.checks", "1")
	setFlag(t, "rapid.nofailfile", "true")
	rapid.Check(t, func(rt *rapid.T) {
		var failure any
		t.Run("bubble", func(t *testing.T) {
			synctest.Test(t, func(*testing.T) {
				defer func() { failure = recover() }()
				body(rt)
			})
		})
		if failure != nil {
			panic(failure)
		}
	})
}

// A keepalive misconfiguration kills the control connection mid-send
// (GOAWAY too_many_pings): the run fails temporarily and leaves partial
// state, and the next run resumes it and completes, for a push and for a
// pull.
func TestKeepaliveMisconfigurationResumes(t *testing.T) {
	for _, j := range []job{jobs[0], jobs[2]} {
		t.Run(j.GoString(), func(t *testing.T) {
			scripted(t, func(rt *rapid.T) {
				w := newWorld(rt)
				fs := "src/data"
				// 5 MiB over at most 8 KiB/s: over ten minutes, while
				// the server tolerates a 10-30s ping for a minute or two.
				must(rt, w.src.WriteData(zfs.MustDatasetPath(fs), 1, 40))
				must(rt, w.src.Snapshot(bg, zfs.MustDatasetPath(fs), "s1"))
				v := snapshots(versionsOf(rt, w.src, fs))[0]
				w.sum[v.GUID] = (&checksummer{w: w, m: w.src}).sum(rt, v.Ref(zfs.MustDatasetPath(fs)))
				w.created[fs] = []uint64{v.GUID}

				rep := w.run(rt, j, "keepalive", 1, 1, 1)
				w.persist(rt)
				w.check(rt)
				f := fsReport(rt, rep, fs)
				if f.Err == nil || f.Permanent {
					rt.Fatalf("the run with GOAWAY: %s ended %s (permanent %v): %v, want a temporary failure", fs, f.State, f.Permanent, f.Err)
				}
				// In a pull the cut data stream asks its call why (once,
				// found here, it said "data stream truncated" alone).
				if !strings.Contains(f.Err.Error(), "too_many_pings") {
					rt.Fatalf("the error does not name GOAWAY too_many_pings (pull %v): %v", j.pull, f.Err)
				}
				if resumeToken(rt, w.dst, j.dstFS(fs)) == "" {
					rt.Fatalf("no partial receive state left to resume")
				}

				resumes := stats.resumes.Load()
				rep = w.run(rt, j, "none", 2, 1, 1)
				w.persist(rt)
				w.check(rt)
				if f := fsReport(rt, rep, fs); f.State != replication.FSDone {
					rt.Fatalf("the next run: %s ended %s: %v", fs, f.State, f.Err)
				}
				if stats.resumes.Load() == resumes {
					rt.Fatalf("the next run sent %s anew instead of resuming", fs)
				}
			})
		})
	}
}

func fsReport(rt *rapid.T, rep *replication.Report, fs string) replication.FSReport {
	if rep == nil {
		rt.Fatalf("no report")
	}
	for _, f := range rep.Filesystems {
		if f.FS == fs {
			return f
		}
	}
	rt.Fatalf("%s not in the report %v", fs, fmt.Sprint(rep.Filesystems))
	return replication.FSReport{}
}

// ssh exits with 255 in the middle of a send stream (for a push while the
// stream goes into its stdin, for a pull while it comes out of its
// stdout): the run fails with an error naming ssh's exit status and
// complaint, leaves partial state, and the next run resumes it.
func TestSSHExitResumes(t *testing.T) {
	const complaint = "client_loop: send disconnect: Broken pipe"
	for _, j := range []job{jobs[0], jobs[2]} {
		t.Run(j.GoString(), func(t *testing.T) {
			scripted(t, func(rt *rapid.T) {
				w := newWorld(rt)
				fs := "src/data"
				must(rt, w.src.WriteData(zfs.MustDatasetPath(fs), 1, 16))
				must(rt, w.src.Snapshot(bg, zfs.MustDatasetPath(fs), "s1"))
				v := snapshots(versionsOf(rt, w.src, fs))[0]
				w.sum[v.GUID] = (&checksummer{w: w, m: w.src}).sum(rt, v.Ref(zfs.MustDatasetPath(fs)))
				w.created[fs] = []uint64{v.GUID}

				// Process 0 carries the control connection, 1 the first
				// data connection.
				opts := linkOpts{ssh: true, victim: 1}
				if j.pull {
					opts.script = netsim.ProcessScript{Exit: netsim.ExitAfterStdout, StdoutBytes: 1 << 20, Status: 255, Stderr: complaint + "\r\n"}
				} else {
					opts.script = netsim.ProcessScript{Exit: netsim.ExitAfterStdin, StdinBytes: 1 << 20, Status: 255, Stderr: complaint + "\r\n"}
				}
				lk := w.connect(rt, j, 1, opts)
				snd, rcv := w.endpoints(j, lk)
				rep := replication.NewRun(snd, rcv, replication.Config{MaxAttempts: 1, Now: w.clock}).Do(bg)
				status := lk.ssh.victimStatus()
				lk.close()
				w.persist(rt)
				w.check(rt)
				if status != 255 {
					rt.Fatalf("the data connection's ssh process: status %d, want 255", status)
				}
				f := fsReport(rt, &rep, fs)
				if f.Err == nil || f.Permanent || !strings.Contains(f.Err.Error(), "ssh exited with status 255: "+complaint) {
					rt.Fatalf("the run whose ssh died: %s ended %s (permanent %v): %v, want a temporary failure naming ssh's exit", fs, f.State, f.Permanent, f.Err)
				}
				if resumeToken(rt, w.dst, j.dstFS(fs)) == "" {
					rt.Fatalf("no partial receive state left to resume")
				}

				resumes := stats.resumes.Load()
				next := w.run(rt, j, "none", 2, 1, 1)
				w.persist(rt)
				w.check(rt)
				if f := fsReport(rt, next, fs); f.State != replication.FSDone {
					rt.Fatalf("the next run: %s ended %s: %v", fs, f.State, f.Err)
				}
				if stats.resumes.Load() == resumes {
					rt.Fatalf("the next run sent %s anew instead of resuming", fs)
				}
			})
		})
	}
}
