package zfsmodel_test

import (
	"context"
	"fmt"
	"io"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// A full and an incremental replication between two pools of one model,
// the second stream cut off half way and resumed.
func Example() {
	ctx := context.Background()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := zfsmodel.New(zfsmodel.Options{Seed: 1, Clock: func() time.Time { return start }})
	_ = m.CreatePool("src")
	_ = m.CreatePool("dst")
	fs := zfs.MustDatasetPath("src/data")
	_ = m.CreateFilesystem(fs, zfsmodel.FSOptions{})
	_ = m.WriteData(fs, 1, 8)
	_ = m.Snapshot(ctx, fs, "a")
	_ = m.WriteData(fs, 2, 8)
	_ = m.Snapshot(ctx, fs, "b")
	vs, _ := m.ListVersions(ctx, fs)
	a, b := vs[0], vs[1]

	target := zfs.MustDatasetPath("dst/data")
	s, _ := m.Send(ctx, zfs.SendArgs{FS: fs, To: a})
	fmt.Println("full:", m.Receive(ctx, target, s, zfs.RecvOptions{}))
	s.Close()

	size, _ := m.SendSize(ctx, zfs.SendArgs{FS: fs, From: &a, To: b})
	s, _ = m.Send(ctx, zfs.SendArgs{FS: fs, From: &a, To: b})
	err := m.Receive(ctx, target, io.LimitReader(s, size/2), zfs.RecvOptions{Resumable: true})
	s.Close()
	fmt.Println("cut:", zfs.KindOf(err))

	info, _ := m.Info(target)
	s, _ = m.Send(ctx, zfs.SendArgs{FS: fs, From: &a, To: b, ResumeToken: info.ReceiveResumeToken})
	fmt.Println("resumed:", m.Receive(ctx, target, s, zfs.RecvOptions{Resumable: true}))
	s.Close()

	want, _ := m.Checksum(zfs.SnapshotRef(fs, "b"))
	got, _ := m.Checksum(zfs.SnapshotRef(target, "b"))
	fmt.Println("same content:", want == got)
	// Output:
	// full: <nil>
	// cut: partial receive saved
	// resumed: <nil>
	// same content: true
}
