package platformtest

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRealZFSSmoke walks the path replication depends on against real ZFS:
// a full send whose stream is cut part way leaves a resumable receive with a
// token; sending from the token completes it, and the received snapshot has
// the sent snapshot's GUID.
func TestRealZFSSmoke(t *testing.T) {
	RequireZFS(t)
	pool := NewPool(t, DefaultPoolSize)
	src, dst := pool.DS("src"), pool.DS("dst")

	Run(t, "zfs", "create", src)
	mnt := Prop(t, src, "mountpoint")
	require.True(t, strings.HasPrefix(mnt, pool.AltRoot), "mountpoint %q not under altroot %q", mnt, pool.AltRoot)
	// Incompressible data, fixed seed: 8 MiB makes a stream that is still
	// well under way when cut at 4 MiB.
	data := make([]byte, 8<<20)
	rng := rand.NewChaCha8([32]byte{'z', 'r', 'e', 'p', 'l'})
	_, _ = rng.Read(data)
	require.NoError(t, os.WriteFile(filepath.Join(mnt, "data"), data, 0o644))
	Run(t, "sync")
	Run(t, "zfs", "snapshot", src+"@s1")
	sentGUID := Prop(t, src+"@s1", "guid")
	require.NotEmpty(t, sentGUID)

	// Interrupted full send: only the first 4 MiB reach the receiver.
	const cut = 4 << 20
	recvStderr, recvErr := sendRecv(t, []string{"send", src + "@s1"}, dst, cut)
	require.Error(t, recvErr, "zfs recv of a cut stream must fail")
	t.Logf("interrupted zfs recv: %v, stderr: %q", recvErr, recvStderr)
	var exitErr *exec.ExitError
	require.True(t, errors.As(recvErr, &exitErr), "recv error %v is not an exit status", recvErr)
	require.Equal(t, 1, exitErr.ExitCode())
	require.Contains(t, recvStderr, "checksum mismatch or incomplete stream")
	require.Contains(t, recvStderr, "Partially received snapshot is saved")

	token := Prop(t, dst, "receive_resume_token")
	require.NotEqual(t, "-", token, "no resume token after an interrupted zfs recv -s")
	require.True(t, strings.HasPrefix(token, "1-"), "token %q lacks the version prefix", token)
	t.Logf("resume token (codec test vector): %s", token)

	// What ZFS itself decodes from the token, for the codec test vector.
	decoded, decodedErr, err := RunErr("zfs", "send", "-nvt", token)
	require.NoError(t, err, "zfs send -nvt: %s", decodedErr)
	t.Logf("zfs send -nvt decodes it to:\n%s%s", decoded, decodedErr)
	require.Contains(t, decoded+decodedErr, "toname = "+src+"@s1")

	// Resume to completion.
	recvStderr, recvErr = sendRecv(t, []string{"send", "-t", token}, dst, -1)
	require.NoError(t, recvErr, "resumed zfs recv: %s", recvStderr)
	require.Equal(t, "-", Prop(t, dst, "receive_resume_token"), "token still set after completing the receive")
	require.Equal(t, sentGUID, Prop(t, dst+"@s1", "guid"), "received snapshot GUID differs from the sent one")

	// The bytes survived the cut and the resume.
	Run(t, "zfs", "mount", dst)
	got, err := os.ReadFile(filepath.Join(Prop(t, dst, "mountpoint"), "data"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "received file differs from the sent one (%d vs %d bytes)", len(got), len(data))

	require.NoError(t, pool.Destroy())
	var stderr string
	_, stderr, err = RunErr("zfs", "list", pool.Name)
	require.Error(t, err, "pool still listed after destroy")
	require.Contains(t, stderr, "dataset does not exist")
}

// sendRecv pipes `zfs <sendArgs>` into `zfs recv -s -u <dst>`, passing at
// most limit bytes (all if limit < 0), and returns the receiver's stderr and
// error. When the stream is cut, the sender is killed: it would otherwise
// block on a pipe nobody reads.
func sendRecv(t *testing.T, sendArgs []string, dst string, limit int64) (stderr string, err error) {
	t.Helper()
	var sendStderr, recvStderr bytes.Buffer
	send := exec.Command("zfs", sendArgs...)
	send.Stderr = &sendStderr
	stream, err := send.StdoutPipe()
	require.NoError(t, err)
	recv := exec.Command("zfs", "recv", "-s", "-u", dst)
	recv.Stderr = &recvStderr
	in, err := recv.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, send.Start())
	require.NoError(t, recv.Start())

	var copyErr error
	if limit < 0 {
		_, copyErr = io.Copy(in, stream)
	} else {
		var n int64
		n, copyErr = io.CopyN(in, stream, limit)
		if copyErr == nil {
			require.Equal(t, limit, n)
		}
	}
	require.NoError(t, in.Close())
	recvErr := recv.Wait()
	if limit >= 0 {
		_ = send.Process.Kill()
		_ = send.Wait()
		require.NoError(t, copyErr, "the stream ended before the cut at %d bytes; send stderr: %s", limit, sendStderr.String())
	} else {
		if recvErr != nil {
			// The receiver gave up; the caller reports its stderr.
			_ = send.Process.Kill()
			_ = send.Wait()
		} else {
			sendErr := send.Wait()
			require.NoError(t, copyErr)
			require.NoError(t, sendErr, "zfs %s: %s", strings.Join(sendArgs, " "), sendStderr.String())
		}
	}
	return strings.TrimRight(recvStderr.String(), "\n"), recvErr
}
