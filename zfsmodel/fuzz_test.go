package zfsmodel

import (
	"bytes"
	"errors"
	"testing"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// FuzzReceive feeds arbitrary bytes to Receive: it must never panic, and
// must leave either a complete snapshot, resumable state with a valid
// token, or nothing.
func FuzzReceive(f *testing.F) {
	// Seeds: an empty filesystem's full stream (header and trailer only)
	// and an incremental stream of one block.
	m := New(Options{Seed: 1})
	if err := m.CreatePool("p"); err != nil {
		f.Fatal(err)
	}
	fs := zfs.MustDatasetPath("p/fs")
	if err := m.CreateFilesystem(fs, FSOptions{}); err != nil {
		f.Fatal(err)
	}
	_ = m.Snapshot(bg, fs, "a")
	_ = m.WriteData(fs, 1, 1)
	_ = m.Snapshot(bg, fs, "b")
	vs, _ := m.ListVersions(bg, fs)
	f.Add(readAll(f, m, zfs.SendArgs{FS: fs, To: vs[0]}), true)
	f.Add(readAll(f, m, zfs.SendArgs{FS: fs, From: &vs[0], To: vs[1]}), false)
	f.Add([]byte("ZMSTRM\x00\x01\x00\x00\x00\x02{}"), true)

	f.Fuzz(func(t *testing.T, stream []byte, resumable bool) {
		m := New(Options{Seed: 2})
		if err := m.CreatePool("q"); err != nil {
			t.Fatal(err)
		}
		dst := zfs.MustDatasetPath("q/dst")
		err := m.Receive(bg, dst, bytes.NewReader(stream), zfs.RecvOptions{Resumable: resumable})
		info, ierr := m.Info(dst)
		switch {
		case err == nil:
			if ierr != nil || info.ReceiveResumeToken != "" {
				t.Fatalf("successful receive left %+v, %v", info, ierr)
			}
			vs, lerr := m.ListVersions(bg, dst)
			if lerr != nil || len(vs) != 1 || vs[0].Kind != zfs.Snapshot {
				t.Fatalf("successful receive left versions %v, %v", vs, lerr)
			}
		case errors.Is(err, zfs.ErrPartialReceive):
			if !resumable || ierr != nil {
				t.Fatalf("partial receive (resumable %v) but %v", resumable, ierr)
			}
			if _, derr := resumetoken.Decode(info.ReceiveResumeToken); derr != nil {
				t.Fatalf("token %q does not decode: %v", info.ReceiveResumeToken, derr)
			}
		default:
			if ierr == nil {
				t.Fatalf("failed receive (%v) left %+v", err, info)
			}
		}
	})
}

// FuzzLoad: Load never panics, its fast way decodes what encoding/json
// decodes (checkFastLoad), and what it accepts can be saved and listed,
// with listings the engine can use (checkServable).
func FuzzLoad(f *testing.F) {
	w := newWorld(f)
	var buf bytes.Buffer
	if err := w.m.Save(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"Format":1,"State":{"Pools":{"x":{"Name":"x"}},"Datasets":{"x":{"Name":"x","Snaps":[null]}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkFastLoad(t, data)
		m, err := Load(bytes.NewReader(data), Options{})
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := m.Save(&out); err != nil {
			t.Fatal(err)
		}
		checkServable(t, m)
		for _, name := range sortedKeys(m.st.Pools) {
			if p, err := zfs.NewDatasetPath(name); err == nil {
				_, _ = m.ListFilesystems(bg, p)
			}
		}
		for _, name := range sortedKeys(m.st.Datasets) {
			if p, err := zfs.NewDatasetPath(name); err == nil {
				_, _ = m.ListVersions(bg, p)
			}
		}
	})
}
