package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/pruner"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// Every way the daemon prunes a sender (a snap job its own filesystems, a
// push job its sender, a pull job a source in the same process and one
// over TCP) applies the same rules, the sender's own
// (endpoint.Sender.DestroySnapshots): a snapshot re-created under the same
// name since the pruner listed it, one held since, one a send in flight
// uses, a bookmark and a filesystem the job does not send all stay, each
// refused as not allowed. The local cases once had rules of their own
// that destroyed the re-created and the in-use snapshot and said nothing
// of the newly held one.
func TestEverySenderPrunesByOneRule(t *testing.T) {
	addr := freeTCPAddr(t)
	keep := `pruning: {keep_sender: [{type: last_n, count: 1}], keep_receiver: [{type: last_n, count: 1}]}`
	cfg := parse(t, fmt.Sprintf(`
global: {zfs_backend: model}
jobs:
  - {name: snap, type: snap, filesystems: {"pool/snap": true}, snapshotting: {type: manual}, pruning: {keep: [{type: last_n, count: 1}]}}
  - name: push
    type: push
    connect: {type: local, listener_name: sink, client_identity: laptop}
    filesystems: {"pool/push": true}
    snapshotting: {type: manual}
    %[2]s
  - {name: sink, type: sink, serve: {type: local, listener_name: sink}, root_fs: backup/sink}
  - {name: lsrc, type: source, serve: {type: local, listener_name: lsrc}, filesystems: {"pool/lsrc": true}, snapshotting: {type: manual}}
  - name: lpull
    type: pull
    connect: {type: local, listener_name: lsrc, client_identity: backup}
    root_fs: backup/lpulled
    interval: manual
    %[2]s
  - {name: src, type: source, serve: {type: tcp, listen: "%[1]s", clients: {"127.0.0.1": "backup"}}, filesystems: {"pool/src": true}, snapshotting: {type: manual}}
  - name: pull
    type: pull
    connect: {type: tcp, address: "%[1]s"}
    root_fs: backup/pulled
    interval: manual
    %[2]s
`, addr, keep))
	m := model(t)
	for _, fs := range []string{"pool/snap", "pool/push", "pool/lsrc", "pool/src", "pool/other"} {
		require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{}))
	}
	d := runDaemon(t, Options{Config: cfg, ZFS: m})
	ctx := context.Background()

	// sides are what the job prunes its sender with and, where it
	// replicates, what it sends with.
	sides := func(name string) (job.PruneTarget, replication.Sender) {
		aj := d.byName[name].(*activeJob)
		var s job.Sides
		var err error
		switch p := aj.sides.(type) {
		case *pushSides:
			s, err = p.sides(ctx)
		case *pullSides:
			s, err = p.sides(ctx)
		default:
			return aj.local, nil
		}
		require.NoError(t, err)
		return s.SenderPrune, s.Sender
	}
	snapData(t, m, "pool/other", "x")
	for _, tc := range []struct{ job, fs string }{
		{"snap", "pool/snap"},
		{"push", "pool/push"},
		{"lpull", "pool/lsrc"},
		{"pull", "pool/src"},
	} {
		t.Run(tc.job, func(t *testing.T) {
			target, sender := sides(tc.job)
			require.NotNil(t, target)
			fs := zfs.MustDatasetPath(tc.fs)
			snapData(t, m, tc.fs, "recreated", "held")
			// @sent is big enough (32 MiB) that its send stays in
			// flight over TCP while the client reads no more of it.
			require.NoError(t, m.WriteData(fs, 7, 256))
			require.NoError(t, m.Snapshot(ctx, fs, "sent"))
			snapData(t, m, tc.fs, "free")
			require.NoError(t, m.Bookmark(ctx, zfs.SnapshotRef(fs, "free"), "mark"))
			listed := map[string]zfs.FilesystemVersion{}
			fss, err := target.ListFilesystems(ctx)
			require.NoError(t, err)
			for _, f := range fss {
				if f.Path == tc.fs {
					for _, v := range f.Versions {
						listed[v.RelName()] = v
					}
				}
			}
			require.Contains(t, listed, "@free", "the pruner lists the job's filesystem")

			// Since the listing: @recreated is destroyed and made anew,
			// @held is held by someone, and a send of @sent is in flight.
			require.NoError(t, m.Destroy(ctx, []zfs.VersionRef{zfs.SnapshotRef(fs, "recreated")}))
			require.NoError(t, m.Snapshot(ctx, fs, "recreated"))
			require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, "held"), "admin"))
			if sender != nil {
				_, err := sender.ListFilesystems(ctx)
				require.NoError(t, err)
				stream, err := sender.Send(ctx, endpoint.SendRequest{FS: tc.fs, To: listed["@sent"], Protection: endpoint.GuaranteeNothing})
				require.NoError(t, err)
				_, err = stream.Read(make([]byte, 1))
				require.NoError(t, err, "the send is under way")
				defer stream.Close()
			}

			snaps := []zfs.FilesystemVersion{listed["@recreated"], listed["@held"]}
			if sender != nil {
				snaps = append(snaps, listed["@sent"])
			}
			err = target.DestroySnapshots(ctx, tc.fs, snaps)
			require.ErrorIs(t, err, endpoint.ErrNotAllowed)
			assert.ErrorContains(t, err, "@recreated has GUID")
			assert.ErrorContains(t, err, "@held is held")
			if sender != nil {
				assert.ErrorContains(t, err, "@sent is used by a send in progress")
			}
			assert.ElementsMatch(t, []string{"recreated", "held", "sent", "free"}, snapshots(t, m, tc.fs), "nothing went")
			now, err := m.ListVersions(ctx, fs)
			require.NoError(t, err)
			for _, v := range now {
				if v.Name == "recreated" {
					assert.NotEqual(t, listed["@recreated"].GUID, v.GUID, "the new @recreated stays")
				}
			}

			assert.ErrorIs(t, target.DestroySnapshots(ctx, tc.fs, []zfs.FilesystemVersion{listed["#mark"]}), endpoint.ErrNotAllowed, "a bookmark")
			others, err := m.ListVersions(ctx, zfs.MustDatasetPath("pool/other"))
			require.NoError(t, err)
			assert.ErrorIs(t, target.DestroySnapshots(ctx, "pool/other", others), endpoint.ErrNotAllowed, "a filesystem the job does not send")
			assert.Equal(t, []string{"x"}, snapshots(t, m, "pool/other"))

			// What may go goes, the same way everywhere.
			require.NoError(t, target.DestroySnapshots(ctx, tc.fs, []zfs.FilesystemVersion{listed["@free"]}))
			assert.NotContains(t, snapshots(t, m, tc.fs), "free")

			// The job's own pruning (its rules, through the pruner) of a
			// snapshot held since the pruner listed it (and, for senders,
			// of @sent, still in flight): the error names the filesystem
			// once. The pruner and the side once both said "prune <fs>: ".
			snapData(t, m, tc.fs, "late", "newest")
			aj := d.byName[tc.job].(*activeJob)
			rules := aj.pruneSender
			if tc.job == "snap" {
				rules = aj.pruneLocal
			}
			late := &holdAfterListing{Target: target, hold: func() {
				require.NoError(t, m.Hold(ctx, zfs.SnapshotRef(fs, "late"), "admin"))
			}}
			st, err := rules.prune(ctx, late, time.Now(), nil)
			require.ErrorIs(t, err, endpoint.ErrNotAllowed)
			require.ErrorContains(t, err, "@late is held")
			msgs := []string{err.Error()}
			for _, f := range st {
				if f.FS == tc.fs {
					require.Contains(t, f.Error, "@late is held", "the filesystem's status")
					msgs = append(msgs, f.Error)
				}
			}
			require.Len(t, msgs, 2, "the filesystem's status is there")
			for _, msg := range msgs {
				assert.Equal(t, 1, strings.Count(msg, tc.fs), "%q names the filesystem once", msg)
				assert.True(t, strings.HasPrefix(msg, "prune "+tc.fs+": "), "%q says what failed", msg)
			}
			assert.Contains(t, snapshots(t, m, tc.fs), "late")
		})
	}
}

// holdAfterListing is a prune target that runs hold after each listing
// (someone holds a snapshot between the pruner's listing and its
// destroy).
type holdAfterListing struct {
	pruner.Target
	hold func()
}

func (h *holdAfterListing) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	fss, err := h.Target.ListFilesystems(ctx)
	h.hold()
	return fss, err
}
