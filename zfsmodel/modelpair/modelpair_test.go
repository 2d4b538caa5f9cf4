package modelpair_test

import (
	"context"
	"testing"
	"time"

	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsmodel/modelpair"
)

// A pair replicates what its sender sends, and only that, into a
// receiver's root; its hosts are deterministic and use the clock given.
func TestPairReplicates(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p, err := modelpair.New(modelpair.Options{Job: "push", Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if p.Job.String() != "push" {
		t.Fatalf("job %q", p.Job)
	}
	for _, fs := range []string{"src/data/a", "src/other"} {
		if err := p.Src.CreateFilesystem(zfs.MustDatasetPath(fs), zfsmodel.FSOptions{Parents: true}); err != nil {
			t.Fatal(err)
		}
		if err := p.WriteSnap(fs, 1, 2, "s1"); err != nil {
			t.Fatal(err)
		}
	}
	r, err := p.Receiver("dst/backup")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Dst.CreateFilesystem(zfs.MustDatasetPath("dst/backup"), zfsmodel.FSOptions{}); err != nil {
		t.Fatal(err)
	}
	rep := replication.NewRun(p.Sender, r, replication.Config{Sleep: func(context.Context, time.Duration) error { return nil }}).Do(ctx)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	vs, err := p.Dst.ListVersions(ctx, zfs.MustDatasetPath("dst/backup/src/data/a"))
	if err != nil || len(vs) != 1 || vs[0].Name != "s1" || !vs[0].Creation.Equal(now) {
		t.Fatalf("received %+v, %v; want s1 made at %v", vs, err, now)
	}
	if _, err := p.Dst.ListVersions(ctx, zfs.MustDatasetPath("dst/backup/src/other")); err == nil {
		t.Fatal("src/other, which the sender does not send, arrived")
	}
	q, err := modelpair.New(modelpair.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if q.Job.String() != "job" {
		t.Fatalf("default job %q", q.Job)
	}
	if err := q.Src.CreateFilesystem(zfs.MustDatasetPath("src/data/a"), zfsmodel.FSOptions{Parents: true}); err != nil {
		t.Fatal(err)
	}
	if err := q.WriteSnap("src/data/a", 1, 2, "s1"); err != nil {
		t.Fatal(err)
	}
	ws, err := q.Src.ListVersions(ctx, zfs.MustDatasetPath("src/data/a"))
	if err != nil {
		t.Fatal(err)
	}
	xs, err := p.Src.ListVersions(ctx, zfs.MustDatasetPath("src/data/a"))
	if err != nil {
		t.Fatal(err)
	}
	if ws[0].GUID != xs[0].GUID {
		t.Errorf("two pairs gave the same history different GUIDs: %x, %x", ws[0].GUID, xs[0].GUID)
	}
	if _, err := modelpair.New(modelpair.Options{Job: "a/b"}); err == nil {
		t.Error("a job name with a slash was taken")
	}
}
