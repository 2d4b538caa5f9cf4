package zfsreal

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

// observer records what Options.Observe is given.
type observer struct {
	mu  sync.Mutex
	got []Invocation
}

func (o *observer) observe(inv Invocation) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got = append(o.got, inv)
}

func (o *observer) commands() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, inv := range o.got {
		out = append(out, strings.Join(inv.Args, " "))
	}
	return out
}

// TestObserveEveryChild: each child (one-shot, send stream, receive) is
// reported once, when reaped, with its arguments, a duration and how it
// ended; a child that never started is not reported.
func TestObserveEveryChild(t *testing.T) {
	f := newFake(t)
	versions := f.onVersions("pool/a/fs@s1 11")
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: 1 << 20})
	f.on("recv -u pool/a/fs", fakeRule{ReadStdin: true})
	f.on("snapshot pool/a/fs@x", fakeRule{Stderr: "cannot create snapshot 'pool/a/fs@x': dataset already exists\n", Exit: 1})
	o := &observer{}
	c := New(Options{ZFSBinary: f.bin, Observe: o.observe})

	r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	assert.Equal(t, []string{versions}, o.commands(), "the send is reported when reaped, not when started")
	_, err = io.Copy(io.Discard, r)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.NoError(t, c.Receive(ctx, fs, bytes.NewReader(make([]byte, 1000)), zfs.RecvOptions{}))
	zerr(t, c.Snapshot(ctx, fs, "x"), zfs.ErrDatasetExists)

	assert.Equal(t, []string{versions, "send pool/a/fs@s1", "recv -u pool/a/fs", "snapshot pool/a/fs@x"}, o.commands())
	for i, inv := range o.got {
		assert.False(t, inv.Start.IsZero(), "invocation %d has no start", i)
		assert.Positive(t, inv.Duration, "invocation %d", i)
		if i < 3 {
			assert.NoError(t, inv.Err, "invocation %d", i)
		}
	}
	assert.Error(t, o.got[3].Err, "the failed snapshot's exit")

	// A binary that cannot be started is no child.
	o2 := &observer{}
	missing := New(Options{ZFSBinary: f.dir + "/no-such-zfs", Observe: o2.observe})
	zerr(t, missing.Snapshot(ctx, fs, "y"), 0)
	assert.Empty(t, o2.commands())
}

// TestObserveKilledSend: a send closed early is reported once, with the
// kill as its end.
func TestObserveKilledSend(t *testing.T) {
	f := newFake(t)
	versions := f.onVersions("pool/a/fs@s1 11")
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: 1 << 10, Hang: true})
	o := &observer{}
	c := New(Options{ZFSBinary: f.bin, Observe: o.observe})
	r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	_, err = io.ReadFull(r, make([]byte, 1<<10))
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.NoError(t, r.Close())
	assert.Equal(t, []string{versions, "send pool/a/fs@s1"}, o.commands())
	assert.Error(t, o.got[1].Err)
}
