// Package statusui shows a daemon's job status to a person: as plain
// text (zrepl status --mode dump, and what a pipe gets) and as a live,
// interactive terminal screen (the default on a terminal). Both show the
// same text, built by Render from the job.Status the control socket
// returns; times are shown relative to a now the caller passes, so the
// text of a status is a pure function of it (golden tests).
package statusui

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/job"
)

// text builds indented lines.
type text struct {
	lines  []string
	indent int
}

func (t *text) line(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	// A multi-line value (an error) keeps its indentation.
	for i, l := range strings.Split(s, "\n") {
		pad := strings.Repeat("   ", t.indent)
		if i > 0 {
			pad += "   "
		}
		t.lines = append(t.lines, pad+l)
	}
}

func (t *text) in()  { t.indent++ }
func (t *text) out() { t.indent-- }

// Render is the text of one job's status at now, one string per line.
func Render(s job.Status, now time.Time) []string {
	var t text
	head := fmt.Sprintf("Job: %s (%s), %s", s.Name, s.Type, s.State)
	switch {
	case s.NextRun.IsZero():
	case s.NextRun.After(now):
		head += fmt.Sprintf(", next run in %s", humanDuration(s.NextRun.Sub(now)))
	default:
		head += ", next run due"
	}
	t.line("%s", head)
	if s.Concurrency > 0 && s.Replication != nil {
		t.line("Step concurrency: %d", s.Concurrency)
	}
	if s.LastError != "" {
		t.line("Last run's errors: %s", s.LastError)
	}
	if s.Type == "push" || s.Type == "pull" {
		t.line("")
		t.line("Replication:")
		t.in()
		renderReplication(&t, s.Replication, now)
		t.out()
	}
	sides := sortedSides(s.Pruning)
	for _, side := range sides {
		t.line("")
		t.line("Pruning %s:", side)
		t.in()
		renderPruning(&t, s.Pruning[side], now)
		t.out()
	}
	if len(sides) == 0 && (s.Type == "push" || s.Type == "pull" || s.Type == "snap") {
		t.line("")
		t.line("Pruning: not run yet")
	}
	if s.Type != "sink" && s.Type != "pull" {
		t.line("")
		t.line("Snapshotting:")
		t.in()
		renderSnapshotting(&t, s, now)
		t.out()
	}
	return t.lines
}

// sortedSides orders pruning sides: sender, receiver, local.
func sortedSides(p map[string]*job.PruningStatus) []string {
	order := map[string]int{"sender": 0, "receiver": 1, "local": 2}
	var out []string
	for side := range p {
		out = append(out, side)
	}
	sort.Slice(out, func(i, k int) bool {
		oi, ok1 := order[out[i]]
		ok, ok2 := order[out[k]]
		if ok1 && ok2 {
			return oi < ok
		}
		return out[i] < out[k]
	})
	return out
}

func renderReplication(t *text, r *job.ReplicationStatus, now time.Time) {
	if r == nil {
		t.line("no replication yet")
		return
	}
	when := ""
	switch {
	case !r.End.IsZero():
		when = fmt.Sprintf(", ended %s ago (lasted %s)", humanDuration(now.Sub(r.End)), humanDuration(r.End.Sub(r.Start)))
	case !r.Start.IsZero():
		when = fmt.Sprintf(", running for %s", humanDuration(now.Sub(r.Start)))
	}
	state := "running"
	if r.Finished {
		state = "finished"
		for _, f := range r.Filesystems {
			if f.State == "failed" {
				state = "finished with errors"
			}
		}
	}
	t.line("Attempt #%d, %s%s", r.Attempt, state, when)
	if p := r.PreviousAttempt; p != nil {
		t.line("Attempt #%d failed:", p.Attempt)
		t.in()
		for _, f := range p.Failed {
			t.line("%s: %s", f.FS, f.Error)
		}
		t.out()
	}
	if !r.Finished {
		line := fmt.Sprintf("Progress: %s %s / %s", bar(40, r.BytesDone, r.BytesExpected), Bytes(r.BytesDone), Bytes(r.BytesExpected))
		if r.Rate > 0 {
			line += fmt.Sprintf(" @ %s/s", Bytes(int64(r.Rate)))
		}
		if eta := r.ETA(); eta > 0 {
			line += fmt.Sprintf(" (%s remaining)", humanDuration(eta))
		}
		t.line("%s", line)
	} else {
		t.line("Replicated: %s", Bytes(r.BytesDone))
	}
	unestimated := 0
	for _, f := range r.Filesystems {
		unestimated += f.Unestimated
	}
	if unestimated > 0 {
		t.line("NOTE: %d step(s) lack a size estimate: the total and the ETA are extrapolated from the others", unestimated)
	}
	if len(r.Filesystems) == 0 {
		t.line("no filesystems to replicate")
		return
	}
	fss := slices.Clone(r.Filesystems)
	sort.SliceStable(fss, func(i, k int) bool { return fss[i].FS < fss[k].FS })
	nameW, stateW := 0, 0
	for _, f := range fss {
		nameW, stateW = max(nameW, len(f.FS)), max(stateW, len(f.State))
	}
	for _, f := range fss {
		active := " "
		if f.State == "running" {
			active = "*"
		}
		step := f.StepsDone
		if f.StepsDone < f.Steps {
			step++ // the one running or next, counted from 1
		}
		line := fmt.Sprintf("%s %-*s %-*s step %d/%d %s %s / %s", active, nameW, f.FS, stateW, f.State, step, f.Steps,
			bar(20, f.BytesDone, f.BytesExpected), Bytes(f.BytesDone), Bytes(f.BytesExpected))
		if !r.Finished && f.Rate > 0 && f.State == "running" {
			line += fmt.Sprintf(" @ %s/s", Bytes(int64(f.Rate)))
		}
		if f.ETASeconds > 0 && !r.Finished {
			line += fmt.Sprintf(" ETA %s", humanDuration(time.Duration(f.ETASeconds*float64(time.Second))))
		}
		if f.Unestimated > 0 {
			line += fmt.Sprintf(" (%d step(s) without estimate)", f.Unestimated)
		}
		switch {
		case f.LastError != "":
			line += " ERROR: " + f.LastError
		case f.Step != "" && f.State != "done":
			line += " next: " + f.Step
		}
		t.line("%s", line)
	}
}

func renderPruning(t *text, p *job.PruningStatus, now time.Time) {
	if p.End.IsZero() {
		t.line("Status: running for %s", humanDuration(now.Sub(p.Start)))
		return
	}
	t.line("Status: done %s ago (lasted %s)", humanDuration(now.Sub(p.End)), humanDuration(p.End.Sub(p.Start)))
	if p.Error != "" {
		t.line("Error: %s", p.Error)
	}
	if len(p.Filesystems) == 0 {
		t.line("nothing to do")
		return
	}
	fss := slices.Clone(p.Filesystems)
	sort.SliceStable(fss, func(i, k int) bool { return fss[i].FS < fss[k].FS })
	nameW := 0
	for _, f := range fss {
		nameW = max(nameW, len(f.FS))
	}
	for _, f := range fss {
		switch {
		case f.Error != "":
			t.line("%-*s ERROR: %s", nameW, f.FS, f.Error)
		case f.SkipReason != "":
			t.line("%-*s skipped: %s", nameW, f.FS, f.SkipReason)
		case len(f.Destroy) == 0:
			t.line("%-*s kept all %d snapshots", nameW, f.FS, f.Snapshots)
		default:
			t.line("%-*s destroyed %d of %d snapshots (%s)", nameW, f.FS, f.Destroyed, f.Snapshots, abbreviate(f.Destroy, 3))
		}
	}
}

func renderSnapshotting(t *text, s job.Status, now time.Time) {
	sn := s.Snapshotting
	if sn == nil {
		t.line("no snapshot taken yet")
		return
	}
	if sn.End.IsZero() {
		t.line("Status: snapshotting for %s", humanDuration(now.Sub(sn.Start)))
	} else {
		t.line("Last: %s ago (lasted %s)", humanDuration(now.Sub(sn.End)), humanDuration(sn.End.Sub(sn.Start)))
	}
	if sn.Error != "" {
		t.line("Error: %s", sn.Error)
	}
	fss := slices.Clone(sn.Filesystems)
	sort.SliceStable(fss, func(i, k int) bool { return fss[i].FS < fss[k].FS })
	nameW, stateW := 0, 0
	for _, f := range fss {
		nameW, stateW = max(nameW, len(f.FS)), max(stateW, len(f.State))
	}
	for _, f := range fss {
		line := fmt.Sprintf("%-*s %-*s @%s", nameW, f.FS, stateW, f.State, f.Snapshot)
		if f.Error != "" {
			line += " ERROR: " + f.Error
		}
		t.line("%s", line)
		t.in()
		for _, h := range f.Hooks {
			res := "ok"
			if !h.OK {
				res = "FAILED: " + h.Error
			}
			t.line("%s %s %s (%s)", h.Phase, h.Hook, res, humanDuration(time.Duration(h.DurationSeconds*float64(time.Second))))
			if h.Output != "" && !h.OK {
				t.in()
				t.line("output: %s", strings.TrimRight(h.Output, "\n"))
				t.out()
			}
		}
		t.out()
	}
}

// abbreviate lists names, at most n of them.
func abbreviate(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + fmt.Sprintf(" and %d more", len(names)-n)
}

// bar draws done of total in width cells: [=====>----].
func bar(width int, done, total int64) string {
	if total <= 0 {
		return "[" + strings.Repeat("?", width) + "]"
	}
	filled := int(math.Round(float64(width) * math.Min(1, float64(done)/float64(total))))
	if filled >= width {
		return "[" + strings.Repeat("=", width) + "]"
	}
	return "[" + strings.Repeat("=", filled) + ">" + strings.Repeat("-", width-filled-1) + "]"
}

// Bytes is n in binary units: 1.5 MiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// humanDuration is d rounded for a person: 1h 2m 3s, 45s, 0.3s.
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	d = d.Round(time.Second)
	parts := []string{}
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	d -= m * time.Minute
	sec := d / time.Second
	for _, p := range []struct {
		v    time.Duration
		unit string
	}{{days, "d"}, {h, "h"}, {m, "m"}, {sec, "s"}} {
		if p.v > 0 || len(parts) > 0 {
			parts = append(parts, fmt.Sprintf("%d%s", p.v, p.unit))
		}
	}
	return strings.Join(parts, " ")
}
