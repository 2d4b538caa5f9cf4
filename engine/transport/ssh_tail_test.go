package transport

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// Whatever the writes, the buffer holds exactly the last max bytes of
// their concatenation, counts the rest as dropped and never holds more
// than max bytes of memory.
func TestTailBufferKeepsTheTail(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		max := rapid.IntRange(0, 64).Draw(t, "max")
		b := newTailBuffer(max)
		var all []byte
		writes := rapid.SliceOf(rapid.SliceOfN(rapid.Byte(), 0, 150)).Draw(t, "writes")
		for _, w := range writes {
			n, err := b.Write(w)
			if err != nil || n != len(w) {
				t.Fatalf("Write(%d bytes) = %d, %v", len(w), n, err)
			}
			all = append(all, w...)
			want := all[len(all)-min(len(all), max):]
			tail, dropped := b.Tail()
			if !bytes.Equal(tail, want) {
				t.Fatalf("tail %q, want %q", tail, want)
			}
			if dropped != int64(len(all)-len(want)) {
				t.Fatalf("dropped %d, want %d", dropped, len(all)-len(want))
			}
			if cap(b.buf) > max {
				t.Fatalf("buffer capacity %d beyond %d", cap(b.buf), max)
			}
		}
	})
}

// A quiet process costs little: the buffer grows with what arrives.
func TestTailBufferGrowsLazily(t *testing.T) {
	b := newTailBuffer(StderrLimit)
	b.Write([]byte("Permission denied (publickey).\n"))
	assert.Less(t, cap(b.buf), 1<<10)
	tail, dropped := b.Tail()
	assert.Equal(t, "Permission denied (publickey).\n", string(tail))
	assert.Zero(t, dropped)
	// Megabytes later it holds StderrLimit bytes and no more.
	chunk := bytes.Repeat([]byte("debug1: something\n"), 1000)
	for range 100 {
		b.Write(chunk)
	}
	tail, dropped = b.Tail()
	require.Len(t, tail, StderrLimit)
	assert.Equal(t, cap(b.buf), StderrLimit)
	assert.Equal(t, int64(31+100*len(chunk)-StderrLimit), dropped)
	assert.True(t, bytes.HasSuffix(tail, []byte("debug1: something\n")))
	// Once full, writing costs no allocation.
	allocs := testing.AllocsPerRun(100, func() { b.Write(chunk) })
	assert.Zero(t, allocs)
}
