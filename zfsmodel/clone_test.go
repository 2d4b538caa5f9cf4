package zfsmodel

import (
	"bytes"
	"context"
	"testing"

	"zrepl.dev/zrepl/engine/zfs"
)

func savedBytes(t *testing.T, m *Model) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := m.Save(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A clone saves what its original saves, and the two change apart.
func TestCloneIsLoadOfSave(t *testing.T) {
	ctx := context.Background()
	m := New(Options{Seed: 7})
	fs := zfs.MustDatasetPath("p/fs")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(m.CreatePool("p"))
	must(m.CreateFilesystem(fs, FSOptions{Encrypted: true}))
	must(m.WriteData(fs, 1, 3))
	must(m.Snapshot(ctx, fs, "a"))
	must(m.Hold(ctx, zfs.SnapshotRef(fs, "a"), "tag"))
	must(m.Bookmark(ctx, zfs.SnapshotRef(fs, "a"), "b"))
	must(m.WriteData(fs, 2, 1))
	c := m.Clone(Options{})
	if !bytes.Equal(savedBytes(t, c), savedBytes(t, m)) {
		t.Fatal("the clone saves other state than its original")
	}
	before := savedBytes(t, m)
	must(c.WriteData(fs, 3, 2))
	must(c.Snapshot(ctx, fs, "c"))
	must(c.Release(ctx, zfs.SnapshotRef(fs, "a"), "tag"))
	must(c.UnloadKey(fs))
	if !bytes.Equal(savedBytes(t, m), before) {
		t.Fatal("changing the clone changed its original")
	}
}

// Contents save as a compact string; the object form of older saves
// still loads, and malformed strings are refused.
func TestContentJSON(t *testing.T) {
	c := content{3: {Key: 1, Birth: 2, Sum: 3}, 0: {Key: 9, Birth: 1, Sum: 1<<32 - 1}, 1 << 40: {Key: 5}}
	data, err := c.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var back content
	if err := back.UnmarshalJSON(data); err != nil || back.digest() != c.digest() || len(back) != len(c) || back[0] != c[0] {
		t.Fatalf("round trip: %v, %v", back, err)
	}
	var old content
	if err := old.UnmarshalJSON([]byte(`{"3":{"Key":1,"Birth":2,"Sum":3}}`)); err != nil || old[3] != (block{Key: 1, Birth: 2, Sum: 3}) {
		t.Fatalf("object form: %v, %v", old, err)
	}
	for _, bad := range []string{`"!!"`, `"AQ=="`, `"AAAAAAAAAAA="`} {
		if err := new(content).UnmarshalJSON([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
