package zfsreal

import (
	"io"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

// TestPipeSize: a send stream's pipe gets Options.PipeSize, 1 MiB by
// default; negative keeps the system's.
func TestPipeSize(t *testing.T) {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: 10})
	for _, c := range []struct {
		size, want int
	}{{0, 1 << 20}, {256 << 10, 256 << 10}, {-1, 64 << 10}} {
		r, err := New(Options{ZFSBinary: f.bin, PipeSize: c.size}).Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
		require.NoError(t, err)
		rc, err := r.(*sendStream).r.SyscallConn()
		require.NoError(t, err)
		var got uintptr
		var errno syscall.Errno
		require.NoError(t, rc.Control(func(fd uintptr) {
			got, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, 0x408 /* F_GETPIPE_SZ */, 0)
		}))
		require.Zero(t, errno)
		assert.EqualValues(t, c.want, got, "PipeSize %d", c.size)
		_, err = io.Copy(io.Discard, r)
		require.NoError(t, err)
		require.NoError(t, r.Close())
	}
}
