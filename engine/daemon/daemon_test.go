package daemon

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const pushSinkConfig = `
global:
  zfs_backend: model
jobs:
  - name: push
    type: push
    connect:
      type: local
      listener_name: sink
      client_identity: laptop
    filesystems:
      "pool/data<": true
    snapshotting:
      type: periodic
      prefix: zrepl_
      interval: 10s
    pruning:
      keep_sender:
        - type: not_replicated
        - type: last_n
          count: 3
      keep_receiver:
        - type: last_n
          count: 5
  - name: sink
    type: sink
    serve:
      type: local
      listener_name: sink
    root_fs: backup
`

func parse(t *testing.T, doc string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(doc))
	require.NoError(t, err)
	return cfg
}

// model has the pools and filesystems of the push/sink config.
func model(t *testing.T) *zfsmodel.Model {
	m := zfsmodel.New(zfsmodel.Options{Seed: 3, Clock: time.Now})
	require.NoError(t, m.CreatePool("pool"))
	require.NoError(t, m.CreatePool("backup"))
	require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("pool/data"), zfsmodel.FSOptions{}))
	require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("pool/data/child"), zfsmodel.FSOptions{}))
	return m
}

func snapshots(t *testing.T, m *zfsmodel.Model, fs string) []string {
	t.Helper()
	vs, err := m.ListVersions(context.Background(), zfs.MustDatasetPath(fs))
	require.NoError(t, err)
	var out []string
	for _, v := range vs {
		if v.Kind == zfs.Snapshot {
			out = append(out, v.Name)
		}
	}
	return out
}

// writingZFS writes data into a filesystem of m before each snapshot.
type writingZFS struct {
	zfs.ZFS
	m      *zfsmodel.Model
	writes atomic.Int64
}

func (w *writingZFS) Snapshot(ctx context.Context, fs zfs.DatasetPath, name string) error {
	if err := w.m.WriteData(fs, w.writes.Add(1), 2); err != nil {
		return err
	}
	return w.ZFS.Snapshot(ctx, fs, name)
}

// A push and a sink job in one daemon, on one model over the local
// transport, in virtual time: every 10s a snapshot is taken, replicated
// and both sides are pruned to what their rules keep.
func TestPushSinkInOneDaemon(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := model(t)
		var persisted atomic.Int64
		// New data before every snapshot, as the quickstart's demo
		// decorator in cmd/zrepl writes it.
		w := &writingZFS{ZFS: m, m: m}
		d, err := New(Options{
			Config: parse(t, pushSinkConfig), ZFS: w, Control: newPipeListener(),
			Persist: func() error { persisted.Add(1); return nil },
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- d.Run(ctx) }()

		// Eight periods: snapshots at 0, 10, ..., 70s.
		time.Sleep(75 * time.Second)
		synctest.Wait()

		for _, fs := range []string{"pool/data", "pool/data/child"} {
			sent := snapshots(t, m, fs)
			recv := snapshots(t, m, "backup/laptop/"+fs)
			assert.Len(t, sent, 3, "keep_sender last_n 3 on %s: %v", fs, sent)
			assert.Len(t, recv, 5, "keep_receiver last_n 5 on %s: %v", fs, recv)
			assert.Equal(t, recv[len(recv)-3:], sent, "the sender's snapshots are the receiver's newest")
			for _, s := range recv {
				assert.True(t, strings.HasPrefix(s, "zrepl_"), s)
			}
		}

		// After a completed run, exactly the cursor and the last-received
		// hold of each filesystem remain; no step holds.
		holds, err := d.Holds(context.Background(), "push")
		require.NoError(t, err)
		var got []string
		for _, h := range holds {
			got = append(got, h.Kind+" "+h.Version)
		}
		newest := snapshots(t, m, "pool/data")[2]
		newestChild := snapshots(t, m, "pool/data/child")[2]
		vs, err := m.ListVersions(context.Background(), zfs.MustDatasetPath("pool/data"))
		require.NoError(t, err)
		i := slices.IndexFunc(vs, func(v zfs.FilesystemVersion) bool { return v.Name == newest })
		vc, err := m.ListVersions(context.Background(), zfs.MustDatasetPath("pool/data/child"))
		require.NoError(t, err)
		ic := slices.IndexFunc(vc, func(v zfs.FilesystemVersion) bool { return v.Name == newestChild })
		assert.ElementsMatch(t, []string{
			"replication-cursor-v2 pool/data#" + endpoint.CursorBookmarkName(vs[i].GUID, endpoint.MustJobID("push")),
			"replication-cursor-v2 pool/data/child#" + endpoint.CursorBookmarkName(vc[ic].GUID, endpoint.MustJobID("push")),
		}, got, "the push job's holds and bookmarks")
		sinkHolds, err := d.Holds(context.Background(), "sink")
		require.NoError(t, err)
		got = nil
		for _, h := range sinkHolds {
			got = append(got, h.Kind+" "+h.Version)
		}
		assert.ElementsMatch(t, []string{
			"last-received-hold backup/laptop/pool/data@" + newest,
			"last-received-hold backup/laptop/pool/data/child@" + newestChild,
		}, got, "the sink's holds")

		st := d.Status()
		require.Len(t, st, 2)
		assert.Equal(t, "push", st[0].Name)
		assert.Equal(t, 8, st[0].Runs)
		assert.Empty(t, st[0].LastError)
		assert.Equal(t, job.StateIdle, st[0].State)
		require.NotNil(t, st[0].Replication)
		assert.True(t, st[0].Replication.Finished)
		assert.Equal(t, map[string]int{"sender": (8 - 3) * 2, "receiver": (8 - 5) * 2}, st[0].Pruned, "8 snapshots per filesystem, 3 kept on the sender and 5 on the receiver, 2 filesystems")
		assert.Equal(t, job.StateServing, st[1].State)
		assert.EqualValues(t, 8*2, w.writes.Load(), "a snapshot of each filesystem every period")
		assert.EqualValues(t, 8, persisted.Load(), "state saved after every run")

		cancel()
		require.NoError(t, <-done)
		assert.EqualValues(t, 9, persisted.Load(), "and once more on shutdown")
	})
}

// A sink's recv.properties apply to what its clients push.
func TestSinkRecvProperties(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := model(t)
		doc := pushSinkConfig + `    recv:
      properties:
        override: {"zrepl:test": "on"}
`
		d, err := New(Options{Config: parse(t, doc), ZFS: m, Control: newPipeListener()})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- d.Run(ctx) }()
		time.Sleep(time.Second)
		synctest.Wait()
		v, ok := m.UserProperty(zfs.MustDatasetPath("backup/laptop/pool/data"), "zrepl:test")
		assert.True(t, ok)
		assert.Equal(t, "on", v)
		_, ok = m.UserProperty(zfs.MustDatasetPath("pool/data"), "zrepl:test")
		assert.False(t, ok, "the sender's filesystem is untouched")
		cancel()
		require.NoError(t, <-done)
	})
}
