package job

import (
	"slices"
	"time"

	"zrepl.dev/zrepl/engine/replication"
)

// State is what a job does right now.
type State string

const (
	StateIdle            State = "idle"
	StateSnapshotting    State = "snapshotting"
	StateReplicating     State = "replicating"
	StatePruningSender   State = "pruning sender"
	StatePruningReceiver State = "pruning receiver"
	StatePruning         State = "pruning"
	StateServing         State = "serving"
	StateStopped         State = "stopped"
)

// Status is what `zrepl status` shows of a job.
type Status struct {
	Name         string    `json:"name"`
	Type         string    `json:"type"`
	State        State     `json:"state"`
	Runs         int       `json:"runs"`
	LastRunStart time.Time `json:"last_run_start,omitzero"`
	LastRunEnd   time.Time `json:"last_run_end,omitzero"`
	NextRun      time.Time `json:"next_run,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	Concurrency  int       `json:"concurrency,omitempty"`
	// LastSnapshots are the snapshots the last periodic snapshot took.
	LastSnapshots []string `json:"last_snapshots,omitempty"`
	// Snapshotting is the last (or the running) snapshot of the job's
	// filesystems, one entry each; nil before the first.
	Snapshotting *SnapshottingStatus `json:"snapshotting,omitempty"`
	// Pruned counts destroyed snapshots per side since the start.
	Pruned map[string]int `json:"pruned,omitempty"`
	// Pruning is each side's last (or running) pruning: sender,
	// receiver, or local (a snap job).
	Pruning map[string]*PruningStatus `json:"pruning,omitempty"`
	// Replication is the running replication, or else the last one.
	Replication *ReplicationStatus `json:"replication,omitempty"`
}

// SnapshottingStatus is one snapshot of a job's filesystems.
type SnapshottingStatus struct {
	Start time.Time `json:"start"`
	// End is zero while the snapshot runs.
	End time.Time `json:"end,omitzero"`
	// Error is what failed before any filesystem was snapshotted (an
	// invalid snapshot name, the listing of the filesystems).
	Error       string             `json:"error,omitempty"`
	Filesystems []SnapshotFSStatus `json:"filesystems,omitempty"`
}

func (s *SnapshottingStatus) clone() *SnapshottingStatus {
	if s == nil {
		return nil
	}
	c := *s
	c.Filesystems = make([]SnapshotFSStatus, len(s.Filesystems))
	for i, f := range s.Filesystems {
		f.Hooks = slices.Clone(f.Hooks)
		c.Filesystems[i] = f
	}
	return &c
}

// Snapshot states of a filesystem.
const (
	SnapPending = "pending"
	SnapDone    = "done"
	SnapFailed  = "failed"
	// SnapSkipped: not snapshotted on purpose (a fatal pre-hook failed,
	// the snapshot exists already).
	SnapSkipped = "skipped"
)

// SnapshotFSStatus is one filesystem's snapshot and its hooks.
type SnapshotFSStatus struct {
	FS       string `json:"fs"`
	Snapshot string `json:"snapshot"`
	State    string `json:"state"`
	Error    string `json:"error,omitempty"`
	// Hooks are the hooks run around this filesystem's snapshot, in the
	// order they ran (pre-hooks in config order, post-hooks reversed).
	Hooks []HookResult `json:"hooks,omitempty"`
}

// HookResult is one run of one hook on one filesystem.
type HookResult struct {
	// Hook names the hook as its config does (its type, and a command
	// hook's path).
	Hook string `json:"hook"`
	// Phase is pre_snapshot or post_snapshot (ZREPL_HOOKTYPE's values).
	Phase string `json:"phase"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Output is the tail of the hook's stdout and stderr.
	Output          string  `json:"output,omitempty"`
	DurationSeconds float64 `json:"duration_seconds"`
}

// PruningStatus is one side's pruning.
type PruningStatus struct {
	Start time.Time `json:"start"`
	// End is zero while it runs.
	End time.Time `json:"end,omitzero"`
	// Error is why it failed as a whole (the listing), or its
	// filesystems' errors joined.
	Error       string          `json:"error,omitempty"`
	Filesystems []PruneFSStatus `json:"filesystems,omitempty"`
}

// PruneFSStatus is one filesystem's pruning.
type PruneFSStatus struct {
	FS string `json:"fs"`
	// Snapshots is how many it had; Destroy what the keep rules chose
	// to destroy; Destroyed how many of those went.
	Snapshots int      `json:"snapshots"`
	Destroy   []string `json:"destroy,omitempty"`
	Destroyed int      `json:"destroyed"`
	// SkipReason says why nothing was chosen on a filesystem where the
	// rules could not judge (nothing known to be replicated).
	SkipReason string `json:"skip_reason,omitempty"`
	Error      string `json:"error,omitempty"`
}

// ReplicationStatus is a replication's progress, in total and per
// filesystem.
type ReplicationStatus struct {
	// Start of the replication, and its end (zero while it runs).
	Start         time.Time  `json:"start,omitzero"`
	End           time.Time  `json:"end,omitzero"`
	Attempt       int        `json:"attempt"`
	BytesExpected int64      `json:"bytes_expected"`
	BytesDone     int64      `json:"bytes_done"`
	Estimated     bool       `json:"estimated,omitempty"`
	Rate          float64    `json:"rate_bytes_per_second"`
	ETASeconds    float64    `json:"eta_seconds,omitempty"`
	Finished      bool       `json:"finished"`
	Filesystems   []FSStatus `json:"filesystems,omitempty"`
	// PreviousAttempt is the attempt before this one, when this is a
	// retry: what failed then.
	PreviousAttempt *AttemptStatus `json:"previous_attempt,omitempty"`
}

// AttemptStatus is an attempt that ended.
type AttemptStatus struct {
	Attempt int `json:"attempt"`
	// Failed are its filesystems that failed ("(sender)" or
	// "(receiver)": a listing that failed), with why.
	Failed []FSError `json:"failed,omitempty"`
}

// FSError is a filesystem's error.
type FSError struct {
	FS    string `json:"fs"`
	Error string `json:"error"`
}

// FSStatus is one filesystem of a replication.
type FSStatus struct {
	FS            string `json:"fs"`
	State         string `json:"state"`
	BytesExpected int64  `json:"bytes_expected"`
	BytesDone     int64  `json:"bytes_done"`
	Steps         int    `json:"steps"`
	StepsDone     int    `json:"steps_done"`
	// Step is the step running or next ("full @a", "@a => @b"); empty
	// when all are done.
	Step string `json:"step,omitempty"`
	// Unestimated counts the steps left without a size estimate: their
	// bytes are missing from (or extrapolated into) BytesExpected.
	Unestimated int    `json:"unestimated,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	// Rate is this filesystem's bytes over the run's time so far.
	Rate float64 `json:"rate_bytes_per_second,omitempty"`
	// ETASeconds is the filesystem's bytes left at the run's rate.
	ETASeconds float64 `json:"eta_seconds,omitempty"`
}

// replicationStatus merges the progress of a run with its report, if it
// ended.
func replicationStatus(p replication.Progress, rep *replication.Report) *ReplicationStatus {
	out := &ReplicationStatus{
		Attempt: p.Attempt, BytesExpected: p.Expected, BytesDone: p.Done, Estimated: p.Estimated,
		Rate: p.Rate, ETASeconds: p.ETA.Seconds(), Finished: rep != nil,
	}
	idx := map[string]int{}
	get := func(fs string) *FSStatus {
		i, ok := idx[fs]
		if !ok {
			i = len(out.Filesystems)
			idx[fs] = i
			out.Filesystems = append(out.Filesystems, FSStatus{FS: fs, State: "planned"})
		}
		return &out.Filesystems[i]
	}
	for _, s := range p.Steps {
		f := get(s.FS)
		f.Steps++
		f.BytesExpected += s.Expected
		f.BytesDone += s.Done
		if s.State != "done" {
			if f.Step == "" {
				f.Step = s.Step
			}
			if s.Expected == 0 {
				f.Unestimated++
			}
		}
		switch s.State {
		case "done":
			f.StepsDone++
		case "running", "suspending", "suspended", "failed":
			f.State = s.State
		}
		if f.StepsDone == f.Steps {
			f.State = "done"
		} else if f.State == "planned" || f.State == "done" {
			f.State = "waiting"
		}
	}
	if prev := p.Previous; prev != nil && rep == nil {
		a := &AttemptStatus{Attempt: prev.Attempts}
		for _, r := range prev.Filesystems {
			if r.Err != nil {
				a.Failed = append(a.Failed, FSError{FS: r.FS, Error: r.Err.Error()})
			}
		}
		out.PreviousAttempt = a
	}
	if rep != nil {
		for _, r := range rep.Filesystems {
			f := get(r.FS)
			f.State = string(r.State)
			if r.Err != nil {
				f.LastError = r.Err.Error()
			}
		}
	}
	for i := range out.Filesystems {
		f := &out.Filesystems[i]
		if p.Done > 0 {
			// The run's rate is Done over its elapsed time.
			f.Rate = float64(f.BytesDone) * p.Rate / float64(p.Done)
		}
		if left := f.BytesExpected - f.BytesDone; left > 0 && p.Rate > 0 && rep == nil {
			f.ETASeconds = float64(left) / p.Rate
		}
	}
	return out
}

// ETA is the status's ETA as a duration.
func (r *ReplicationStatus) ETA() time.Duration {
	return time.Duration(r.ETASeconds * float64(time.Second))
}
