package statusui

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/job"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) time.Time { return now.Add(-d) }

// statuses covers every part of the screen: a push job mid-replication on
// its second attempt (a failed filesystem, steps without estimate), both
// sides' pruning (destroyed, kept, skipped, failed), its snapshot with
// hook results; a finished pull; a sink; a snap job that never ran.
func statuses() []job.Status {
	return []job.Status{
		{
			Name: "push", Type: "push", State: job.StateReplicating, Runs: 3, NextRun: now.Add(90 * time.Second), Concurrency: 2,
			LastError: "prune sender: boom\nsecond line",
			Replication: &job.ReplicationStatus{
				Start: ago(75 * time.Second), Attempt: 2, BytesExpected: 3 << 20, BytesDone: 1 << 20, Estimated: true, Rate: 512 << 10, ETASeconds: 4,
				Filesystems: []job.FSStatus{
					{FS: "pool/b", State: "failed", LastError: "dataset is busy", Steps: 1},
					{FS: "pool/a", State: "running", BytesExpected: 2 << 20, BytesDone: 1 << 20, Steps: 3, StepsDone: 1, Step: "@s1 => @s2", Unestimated: 1, Rate: 512 << 10, ETASeconds: 2},
					{FS: "pool/c", State: "done", BytesExpected: 1 << 20, BytesDone: 1 << 20, Steps: 1, StepsDone: 1},
				},
				PreviousAttempt: &job.AttemptStatus{Attempt: 1, Failed: []job.FSError{{FS: "pool/a", Error: "connection reset by peer"}}},
			},
			Pruning: map[string]*job.PruningStatus{
				"receiver": {Start: ago(time.Hour), End: ago(time.Hour - 300*time.Millisecond), Filesystems: []job.PruneFSStatus{
					{FS: "backup/pool/a", Snapshots: 3},
				}},
				"sender": {Start: ago(time.Hour + time.Second), End: ago(time.Hour), Error: "prune pool/c: busy", Filesystems: []job.PruneFSStatus{
					{FS: "pool/a", Snapshots: 6, Destroy: []string{"s1", "s2", "s3", "s4"}, Destroyed: 4},
					{FS: "pool/b", Snapshots: 2, SkipReason: "no replication cursor: nothing is known to be replicated, so not_replicated keeps every snapshot"},
					{FS: "pool/c", Snapshots: 2, Destroy: []string{"s1"}, Error: "prune pool/c: busy"},
				}},
			},
			Snapshotting: &job.SnapshottingStatus{Start: ago(80 * time.Second), End: ago(79 * time.Second), Filesystems: []job.SnapshotFSStatus{
				{FS: "pool/a", Snapshot: "zrepl_1", State: job.SnapDone, Hooks: []job.HookResult{
					{Hook: "postgres-checkpoint", Phase: "pre_snapshot", OK: true, DurationSeconds: 0.2},
				}},
				{FS: "pool/b", Snapshot: "zrepl_1", State: job.SnapSkipped, Error: "pre_snapshot hook failed", Hooks: []job.HookResult{
					{Hook: "command /usr/local/bin/freeze", Phase: "pre_snapshot", Error: "exit status 1", Output: "cannot freeze\n", DurationSeconds: 1.5},
				}},
			}},
		},
		{
			Name: "pull", Type: "pull", State: job.StateIdle, Runs: 1, NextRun: ago(time.Second),
			Replication: &job.ReplicationStatus{Start: ago(2 * time.Hour), End: ago(time.Hour), Attempt: 1, BytesExpected: 5 << 30, BytesDone: 5 << 30, Finished: true,
				Filesystems: []job.FSStatus{{FS: "src/data", State: "done", BytesExpected: 5 << 30, BytesDone: 5 << 30, Steps: 2, StepsDone: 2}}},
		},
		{Name: "sink", Type: "sink", State: job.StateServing},
		{Name: "snap", Type: "snap", State: job.StateIdle, NextRun: now.Add(26 * time.Hour)},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to write %s", path)
	assert.Equal(t, string(want), string(got), "differs from %s (go test -update rewrites it)", path)
}

func TestDumpGolden(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, Dump(&b, statuses(), "", now))
	golden(t, "dump.txt", b.Bytes())

	b.Reset()
	require.NoError(t, Dump(&b, statuses(), "pull", now))
	assert.True(t, strings.HasPrefix(b.String(), "Job: pull (pull), idle, next run due\n"), b.String())
	assert.NotContains(t, b.String(), "push")
	assert.ErrorContains(t, Dump(&b, statuses(), "nope", now), `job "nope" not found`)
}

func TestRawGolden(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, Raw(&b, statuses(), ""))
	golden(t, "raw.json", b.Bytes())
	b.Reset()
	require.NoError(t, Raw(&b, nil, ""))
	assert.Equal(t, "[]\n", b.String())
	assert.ErrorContains(t, Raw(&b, statuses(), "nope"), `job "nope" not found`)
}

func TestHelpers(t *testing.T) {
	assert.Equal(t, "[=====>----]", bar(10, 5, 10))
	assert.Equal(t, "[==========]", bar(10, 20, 10))
	assert.Equal(t, "[>---------]", bar(10, 0, 10))
	assert.Equal(t, "[??????????]", bar(10, 5, 0))
	assert.Equal(t, "1d 2h 0m 5s", humanDuration(26*time.Hour+5*time.Second))
	assert.Equal(t, "1.5s", humanDuration(1500*time.Millisecond))
	assert.Equal(t, "0s", humanDuration(-time.Second))
	assert.Equal(t, "1.0 KiB", Bytes(1024))
	assert.Equal(t, "999 B", Bytes(999))
}
