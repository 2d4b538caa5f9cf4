package zfsmodel

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// partialWorld is newWorld plus srcp/fs@s3, and dstp/fs holding s1 and s2
// with the saved state of an incremental s2->s3 receive cut three
// records before its end. With force, dstp/fs also has a snapshot of its own after s2
// and the receive ran with -F.
func partialWorld(t tb, force bool) (*world, zfs.DatasetPath) {
	w := newWorld(t)
	require.NoError(t, w.m.WriteData(w.src, 3, 5))
	require.NoError(t, w.m.Snapshot(bg, w.src, "s3"))
	s1, s2, s3 := w.v(w.src, "s1"), w.v(w.src, "s2"), w.v(w.src, "s3")
	dst := zfs.MustDatasetPath("dstp/fs")
	recv := func(args zfs.SendArgs) error {
		return w.m.Receive(bg, dst, bytes.NewReader(readAll(t, w.m, args)), zfs.RecvOptions{Resumable: true, ForceRollback: force})
	}
	require.NoError(t, recv(zfs.SendArgs{FS: w.src, To: s1}))
	require.NoError(t, recv(zfs.SendArgs{FS: w.src, From: &s1, To: s2}))
	if force {
		require.NoError(t, w.m.WriteData(dst, 9, 1))
		require.NoError(t, w.m.Snapshot(bg, dst, "local"))
	}
	stream := readAll(t, w.m, zfs.SendArgs{FS: w.src, From: &s2, To: s3})
	cut := len(stream) - 3*recLen // in the middle of the fourth-last record
	err := w.m.Receive(bg, dst, bytes.NewReader(stream[:cut]), zfs.RecvOptions{Resumable: true, ForceRollback: force})
	require.ErrorIs(t, err, zfs.ErrPartialReceive)
	return w, dst
}

func (w *world) token(fs zfs.DatasetPath) (string, resumetoken.Token) {
	info, err := w.m.Info(fs)
	require.NoError(w.t, err)
	if info.ReceiveResumeToken == "" {
		return "", resumetoken.Token{}
	}
	tok, err := resumetoken.Decode(info.ReceiveResumeToken)
	require.NoError(w.t, err)
	return info.ReceiveResumeToken, tok
}

// TestRollbackKeepsPartialReceive: a rollback -r through the base of a
// partial incremental receive is refused (the base has the hidden clone
// real ZFS keeps the state in) before any hold is looked at.
func TestRollbackKeepsPartialReceive(t *testing.T) {
	w, dst := partialWorld(t, false)
	tok, _ := w.token(dst)
	require.NotEmpty(t, tok)
	require.NoError(t, w.m.Hold(bg, zfs.SnapshotRef(dst, "s2"), "keep"))
	err := w.m.Rollback(bg, zfs.SnapshotRef(dst, "s1"), true)
	var ze *zfs.Error
	require.ErrorAs(t, err, &ze)
	assert.Equal(t, zfs.ErrDatasetBusy, ze.Kind)
	assert.Equal(t, "dstp/fs@s1", ze.Dataset)
	assert.Equal(t, "cannot rollback to 'dstp/fs@s1': clones of previous snapshots exist\n"+
		"use '-R' to force deletion of the following clones and dependents:\ndstp/fs/%recv", ze.Msg)
	got, _ := w.token(dst)
	assert.Equal(t, tok, got)

	// Once the state is gone, the same rollback meets the hold.
	require.NoError(t, w.m.AbortReceive(bg, dst))
	err = w.m.Rollback(bg, zfs.SnapshotRef(dst, "s1"), true)
	require.ErrorAs(t, err, &ze)
	assert.Equal(t, zfs.ErrDatasetBusy, ze.Kind)
	assert.Equal(t, "cannot destroy 'dstp/fs@s2': dataset is busy", ze.Msg)
}

// TestRefusedResumeKeepsWhatItReceived: a resume refused at its end
// because the target changed keeps, with -s, everything it received (the
// token moves on, as measured on OpenZFS 2.1.11), and loses the state
// without -s.
func TestRefusedResumeKeepsWhatItReceived(t *testing.T) {
	for _, resumable := range []bool{true, false} {
		t.Run(fmt.Sprintf("resumable=%v", resumable), func(t *testing.T) {
			w, dst := partialWorld(t, false)
			tok, before := w.token(dst)
			require.NoError(t, w.m.WriteData(dst, 5, 1))
			s2, s3 := w.v(w.src, "s2"), w.v(w.src, "s3")
			rest := readAll(t, w.m, zfs.SendArgs{FS: w.src, From: &s2, To: s3, ResumeToken: tok})
			err := w.m.Receive(bg, dst, bytes.NewReader(rest), zfs.RecvOptions{Resumable: resumable})
			require.ErrorIs(t, err, zfs.ErrDestinationModified)
			assert.Equal(t, "cannot receive resume stream: destination dstp/fs has been modified\nsince most recent snapshot", err.(*zfs.Error).Msg)
			tok2, after := w.token(dst)
			if !resumable {
				assert.Empty(t, tok2, "state left after a refused resume without -s")
				return
			}
			require.NotEmpty(t, tok2)
			assert.Greater(t, after.Bytes, before.Bytes)
			assert.Greater(t, after.Offset, before.Offset)
			assert.Equal(t, before.ToGUID, after.ToGUID)

			// After a rollback to the newest snapshot, what is left
			// completes the receive with the sender's content.
			require.NoError(t, w.m.Rollback(bg, zfs.SnapshotRef(dst, "s2"), false))
			rest = readAll(t, w.m, zfs.SendArgs{FS: w.src, From: &s2, To: s3, ResumeToken: tok2})
			require.NoError(t, w.m.Receive(bg, dst, bytes.NewReader(rest), zfs.RecvOptions{Resumable: true}))
			want, err := w.m.Checksum(zfs.SnapshotRef(w.src, "s3"))
			require.NoError(t, err)
			got, err := w.m.Checksum(zfs.SnapshotRef(dst, "s3"))
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

// TestPartialReceiveSurvivesVersionOps: whatever rollbacks, destroys,
// writes and snapshots hit a receiver with partial incremental state, the
// state stays, its base stays, and once rolled back to the base the
// receive resumes to the sender's content. (The engine's simulator once
// found a rollback that left a state whose base was gone.)
func TestPartialReceiveSurvivesVersionOps(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		force := rapid.Bool().Draw(rt, "force")
		w, dst := partialWorld(rt, force)
		_, tok0 := w.token(dst)
		for i := range rapid.IntRange(1, 8).Draw(rt, "ops") {
			vs, err := w.m.ListVersions(bg, dst)
			require.NoError(rt, err)
			var snaps []zfs.VersionRef
			for _, v := range vs {
				if v.Kind == zfs.Snapshot {
					snaps = append(snaps, v.Ref(dst))
				}
			}
			switch op := rapid.IntRange(0, 3).Draw(rt, "op"); {
			case op == 0 && len(snaps) > 0:
				s := rapid.SampledFrom(snaps).Draw(rt, "rollbackTo")
				err := w.m.Rollback(bg, s, rapid.Bool().Draw(rt, "destroyNewer"))
				if err != nil && !errors.Is(err, zfs.ErrNewerSnapshotsExist) && !errors.Is(err, zfs.ErrDatasetBusy) {
					rt.Fatalf("rollback to %s: %v", s, err)
				}
			case op == 1 && len(snaps) > 0:
				var doomed []zfs.VersionRef
				for _, s := range snaps {
					if rapid.Bool().Draw(rt, "destroy "+s.Name) {
						doomed = append(doomed, s)
					}
				}
				err := w.m.Destroy(bg, doomed)
				if err != nil && !errors.Is(err, zfs.ErrDatasetBusy) {
					rt.Fatalf("destroy %v: %v", doomed, err)
				}
			case op == 2:
				require.NoError(rt, w.m.WriteData(dst, int64(i), 1))
			default:
				require.NoError(rt, w.m.Snapshot(bg, dst, fmt.Sprintf("op%d", i)))
			}
			_, tok := w.token(dst)
			if tok != tok0 {
				rt.Fatalf("after op %d the token is %+v, was %+v", i, tok, tok0)
			}
			vs, err = w.m.ListVersions(bg, dst)
			require.NoError(rt, err)
			if !slices.ContainsFunc(vs, func(v zfs.FilesystemVersion) bool { return v.GUID == tok.FromGUID }) {
				rt.Fatalf("after op %d the base of the partial receive is gone: %v", i, vs)
			}
		}
		require.NoError(rt, w.m.Rollback(bg, zfs.SnapshotRef(dst, "s2"), true))
		s2, s3 := w.v(w.src, "s2"), w.v(w.src, "s3")
		tok, _ := w.token(dst)
		rest := readAll(rt, w.m, zfs.SendArgs{FS: w.src, From: &s2, To: s3, ResumeToken: tok})
		require.NoError(rt, w.m.Receive(bg, dst, bytes.NewReader(rest), zfs.RecvOptions{Resumable: true}))
		want, err := w.m.Checksum(zfs.SnapshotRef(w.src, "s3"))
		require.NoError(rt, err)
		got, err := w.m.Checksum(zfs.SnapshotRef(dst, "s3"))
		require.NoError(rt, err)
		require.Equal(rt, want, got)
	})
}

func TestListAndDestroyPools(t *testing.T) {
	w := newWorld(t)
	names := func() []string {
		ps, err := w.m.ListPools(bg)
		require.NoError(t, err)
		var out []string
		for _, p := range ps {
			out = append(out, p.String())
		}
		return out
	}
	assert.Equal(t, []string{"dstp", "srcp"}, names())
	require.NoError(t, w.m.CreatePool("a-pool"))
	assert.Equal(t, []string{"a-pool", "dstp", "srcp"}, names())
	require.NoError(t, w.m.DestroyPool("srcp"))
	assert.Equal(t, []string{"a-pool", "dstp"}, names())
	_, err := w.m.Info(w.src)
	assert.ErrorIs(t, err, zfs.ErrDatasetNotExist, "a filesystem of a destroyed pool")
	assert.ErrorIs(t, w.m.DestroyPool("srcp"), zfs.ErrDatasetNotExist)
	// The name is free again, and the new pool is empty.
	require.NoError(t, w.m.CreatePool("srcp"))
	_, err = w.m.Info(w.src)
	assert.ErrorIs(t, err, zfs.ErrDatasetNotExist)

	boom := errors.New("boom")
	require.NoError(t, w.m.FailNext("ListPools", 1, boom))
	_, err = w.m.ListPools(bg)
	assert.ErrorIs(t, err, boom)
	assert.Len(t, names(), 3)
}
