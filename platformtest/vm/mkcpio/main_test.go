package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

type entry struct {
	name string
	mode uint32
	data string
}

// parseNewc is an independent reader of the format, strict about magic,
// alignment and the trailer, so a writer bug shows as a parse failure.
func parseNewc(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		require.NoError(t, err)
		return uint32(v)
	}
	for {
		require.Zero(t, off%4, "header at unaligned offset %d", off)
		require.LessOrEqual(t, off+110, len(b), "truncated header")
		require.Equal(t, "070701", string(b[off:off+6]))
		mode, size, namesize := field(1), field(6), field(11)
		require.Zero(t, field(2), "uid")
		require.Zero(t, field(5), "mtime")
		name := string(b[off+110 : off+110+int(namesize)-1])
		require.Equal(t, byte(0), b[off+110+int(namesize)-1])
		off += 110 + int(namesize)
		off += int(pad4(int64(off)))
		if name == "TRAILER!!!" {
			require.Zero(t, len(b)%512, "archive not padded to 512")
			for _, c := range b[off:] {
				require.Equal(t, byte(0), c, "non-zero byte after trailer")
			}
			return out
		}
		out = append(out, entry{name, mode, string(b[off : off+int(size)])})
		off += int(size)
		off += int(pad4(int64(off)))
	}
}

func makeTree(t *testing.T) string {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "init"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bin", "a"), []byte("x"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600))
	require.NoError(t, os.Symlink("a", filepath.Join(dir, "bin", "sh")))
	return dir
}

func TestWriteArchiveRoundTrip(t *testing.T) {
	dir := makeTree(t)
	var buf bytes.Buffer
	require.NoError(t, WriteArchive(&buf, dir))
	got := parseNewc(t, buf.Bytes())
	want := []entry{
		{"bin", 0o040755, ""},
		{"bin/a", 0o100644, "x"},
		{"bin/sh", 0o120777, "a"},
		{"empty", 0o100600, ""},
		{"init", 0o100755, "#!/bin/sh\necho hi\n"},
	}
	require.Equal(t, want, got)

	// Same tree, same bytes: the base initramfs is cached by content.
	var again bytes.Buffer
	require.NoError(t, WriteArchive(&again, dir))
	require.Equal(t, buf.Bytes(), again.Bytes())
}

func TestWriteArchiveRejectsSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	err := WriteArchive(io.Discard, dir)
	require.ErrorContains(t, err, fifo)
	require.ErrorContains(t, err, "unsupported file type")
}

func TestRunPrependsAndPads(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			dir := makeTree(t)
			base := filepath.Join(t.TempDir(), "base")
			require.NoError(t, os.WriteFile(base, bytes.Repeat([]byte{0xAB}, n), 0o644))
			out := filepath.Join(t.TempDir(), "out")
			require.NoError(t, run(out, dir, base, false))
			b, err := os.ReadFile(out)
			require.NoError(t, err)
			require.Equal(t, bytes.Repeat([]byte{0xAB}, n), b[:n])
			start := n + int(pad4(int64(n)))
			require.Equal(t, make([]byte, start-n), b[n:start], "padding must be zeros")
			require.Len(t, parseNewc(t, b[start:]), 5)
		})
	}
}

func TestRunGzip(t *testing.T) {
	dir := makeTree(t)
	out := filepath.Join(t.TempDir(), "out.gz")
	require.NoError(t, run(out, dir, "", true))
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	require.NoError(t, err)
	b, err := io.ReadAll(zr)
	require.NoError(t, err)
	require.Len(t, parseNewc(t, b), 5)
}

func TestRunMissingDir(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	err := run(out, filepath.Join(t.TempDir(), "nope"), "", false)
	require.ErrorContains(t, err, "nope")
}
