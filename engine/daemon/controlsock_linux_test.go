package daemon

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// inotifyEvents returns what happened to names in dir, read after the fact
// from an inotify watch set up by watch.
func watch(t *testing.T, dir string) (events func() map[string][]uint32) {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Close(fd) })
	_, err = syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE|syscall.IN_ATTRIB|syscall.IN_MOVED_TO)
	require.NoError(t, err)
	return func() map[string][]uint32 {
		out := map[string][]uint32{}
		buf := make([]byte, 64<<10)
		n, err := syscall.Read(fd, buf)
		if err != nil {
			return out
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			var ev syscall.InotifyEvent
			require.NoError(t, binary.Read(bytes.NewReader(buf[off:off+syscall.SizeofInotifyEvent]), binary.NativeEndian, &ev))
			name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			out[name] = append(out[name], ev.Mask&^syscall.IN_ISDIR)
			off += syscall.SizeofInotifyEvent + int(ev.Len)
		}
		return out
	}
}

// Under umask 000, in a directory anyone may enter, the control socket is
// never at its path with a mode other than 0600: it arrives there by a
// rename, already 0600, and its mode never changes there (bound in place
// and then chmodded, it was reachable by everyone in between: the
// watch sees its creation and then the mode change).
func TestControlSocketPrivateFromTheStart(t *testing.T) {
	dir, err := os.MkdirTemp("", "zc")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	events := watch(t, dir)

	path := filepath.Join(dir, "control")
	l, err := listenControl(path)
	require.NoError(t, err)
	syscall.Umask(old)
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.NotZero(t, fi.Mode()&os.ModeSocket)
	assert.Equal(t, map[string][]uint32{"control": {syscall.IN_MOVED_TO}}, onlyNamed(events(), "control"),
		"the socket appears at its path by a rename and keeps its mode")
	left, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, left, 1, "the private directory is gone: %v", left)

	c, err := net.Dial("unix", path)
	require.NoError(t, err, "the renamed socket accepts")
	c.Close()
	require.NoError(t, l.Close())
	_, err = os.Lstat(path)
	assert.ErrorIs(t, err, os.ErrNotExist, "closing removes the socket")
}

func onlyNamed(ev map[string][]uint32, name string) map[string][]uint32 {
	return map[string][]uint32{name: ev[name]}
}
