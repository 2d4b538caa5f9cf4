package daemon

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// recording remembers the step holds and step bookmarks a job takes.
type recording struct {
	zfs.ZFS
	mu        sync.Mutex
	holds     []string
	bookmarks []string
}

func (r *recording) Hold(ctx context.Context, s zfs.VersionRef, tag string) error {
	if strings.HasPrefix(tag, "zrepl_STEP_") {
		r.mu.Lock()
		r.holds = append(r.holds, s.String())
		r.mu.Unlock()
	}
	return r.ZFS.Hold(ctx, s, tag)
}

func (r *recording) HoldAll(ctx context.Context, tag string, snaps []zfs.VersionRef) error {
	if strings.HasPrefix(tag, "zrepl_STEP_") {
		r.mu.Lock()
		for _, s := range snaps {
			r.holds = append(r.holds, s.String())
		}
		r.mu.Unlock()
	}
	return r.ZFS.HoldAll(ctx, tag, snaps)
}

func (r *recording) Bookmark(ctx context.Context, from zfs.VersionRef, name string) error {
	if strings.HasPrefix(name, "zrepl_STEP_") || strings.HasPrefix(name, "zrepl_CURSORTENTATIVE_") {
		r.mu.Lock()
		r.bookmarks = append(r.bookmarks, from.String())
		r.mu.Unlock()
	}
	return r.ZFS.Bookmark(ctx, from, name)
}

// replication.protection reaches the sender: resumability holds both ends
// of a step, guarantee_incremental bookmarks the incremental source only,
// guarantee_nothing takes nothing. Two runs: a full step, then an
// incremental one, on each of the two filesystems.
func TestProtectionReachesTheSender(t *testing.T) {
	for _, tc := range []struct {
		name, protection string
		holds, bookmarks int
	}{
		{"default", "", 2*1 + 2*2, 0},
		// zrepl's tentative cursors on both ends of each incremental step.
		{"incremental", "{initial: guarantee_nothing, incremental: guarantee_incremental}", 0, 2 * 2},
		{"nothing", "{initial: guarantee_resumability, incremental: guarantee_nothing}", 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				doc := pushSinkConfig
				if tc.protection != "" {
					doc = strings.Replace(doc, "    snapshotting:\n", "    replication:\n      protection: "+tc.protection+"\n    snapshotting:\n", 1)
				}
				m := model(t)
				rec := &recording{ZFS: m}
				d, err := New(Options{Config: parse(t, doc), ZFS: rec, Control: newPipeListener()})
				require.NoError(t, err)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error)
				go func() { done <- d.Run(ctx) }()
				time.Sleep(15 * time.Second) // runs at 0s and 10s
				synctest.Wait()
				cancel()
				require.NoError(t, <-done)
				st := d.Status()
				assert.Empty(t, st[0].LastError)
				assert.Equal(t, 2, st[0].Runs)
				rec.mu.Lock()
				defer rec.mu.Unlock()
				assert.Len(t, rec.holds, tc.holds, "step holds: %v", rec.holds)
				assert.Len(t, rec.bookmarks, tc.bookmarks, "step bookmarks: %v", rec.bookmarks)
				for _, fs := range []string{"pool/data", "pool/data/child"} {
					assert.Len(t, snapshots(t, m, "backup/laptop/"+fs), 2)
				}
			})
		})
	}
}

func TestProtectionFromConfig(t *testing.T) {
	cfg := parse(t, strings.Replace(pushSinkConfig, "    snapshotting:\n",
		"    replication:\n      protection: {initial: guarantee_incremental, incremental: guarantee_nothing}\n    snapshotting:\n", 1))
	p, err := protection(&cfg.Jobs[0])
	require.NoError(t, err)
	assert.Equal(t, endpoint.GuaranteeIncremental, p.Initial)
	assert.Equal(t, endpoint.GuaranteeNothing, p.Incremental)
	p, err = protection(&parse(t, pushSinkConfig).Jobs[0])
	require.NoError(t, err)
	assert.Equal(t, endpoint.GuaranteeResumability, p.Initial)
	assert.Equal(t, endpoint.GuaranteeResumability, p.Incremental)
}

// A pull job's protection reaches a remote source over the wire: with
// guarantee_nothing the source takes no step holds or bookmarks.
func TestPullProtectionReachesTheSource(t *testing.T) {
	for _, tc := range []struct {
		protection string
		holds      int
	}{
		{"{initial: guarantee_resumability, incremental: guarantee_resumability}", 1 + 2},
		{"{initial: guarantee_nothing, incremental: guarantee_nothing}", 0},
	} {
		t.Run(tc.protection, func(t *testing.T) {
			addr := freeTCPAddr(t)
			cfg := parse(t, fmt.Sprintf(`
global: {zfs_backend: model}
jobs:
  - name: src
    type: source
    serve: {type: tcp, listen: "%[1]s", clients: {"127.0.0.1": "backup"}}
    filesystems: {"pool/data": true}
    snapshotting: {type: manual}
  - name: pull
    type: pull
    connect: {type: tcp, address: "%[1]s"}
    root_fs: backup/pulled
    interval: manual
    replication: {protection: %[2]s}
    pruning: {keep_sender: [{type: last_n, count: 10}], keep_receiver: [{type: last_n, count: 10}]}
`, addr, tc.protection))
			m := model(t)
			rec := &recording{ZFS: m}
			d := runDaemon(t, Options{Config: cfg, ZFS: rec})
			pull, err := d.Job("pull")
			require.NoError(t, err)
			fs := zfs.MustDatasetPath("pool/data")
			for i, name := range []string{"a", "b"} {
				require.NoError(t, m.WriteData(fs, int64(i), 1))
				require.NoError(t, m.Snapshot(context.Background(), fs, name))
				pull.Wakeup()
				require.Empty(t, waitRuns(t, pull, i+1).LastError)
			}
			assert.Equal(t, []string{"a", "b"}, snapshots(t, m, "backup/pulled/pool/data"))
			rec.mu.Lock()
			defer rec.mu.Unlock()
			assert.Len(t, rec.holds, tc.holds, "step holds on the source: %v", rec.holds)
		})
	}
}
