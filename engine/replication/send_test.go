package replication_test

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// With the default send section (send.encrypted and send.raw false) an
// encrypted filesystem is sent decrypted, as zrepl does: a receiver that
// holds a plain replica made by zrepl goes on receiving plain streams.
func TestDefaultSendsEncryptedFilesystemsPlain(t *testing.T) {
	p := newPair(t, "push")
	p.create("src/data", true)
	p.write("src/data", 1, 4)
	p.snap("src/data", "s1")
	requireOK(t, p.run(replication.Config{}))
	info, err := p.dst.Info(p.fs("dst/client/src/data"))
	require.NoError(t, err)
	assert.False(t, info.Encrypted(), "a plain stream lands unencrypted below an unencrypted parent")
	p.assertReplicated("src/data", "s1")

	// Without the key loaded there is nothing to send decrypted.
	p.write("src/data", 2, 4)
	p.snap("src/data", "s2")
	require.NoError(t, p.src.UnloadKey(p.fs("src/data")))
	rep := p.run(replication.Config{})
	require.Len(t, rep.Filesystems, 1)
	assert.ErrorIs(t, rep.Filesystems[0].Err, planner.ConflictKeyUnavailable)
	assert.Contains(t, rep.Filesystems[0].Err.Error(), "send.encrypted or send.raw")
}

// resumeRecorder records whether each receive resumed a partial one.
type resumeRecorder struct {
	replication.Receiver
	mu       sync.Mutex
	resuming []bool
}

func (r *resumeRecorder) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	r.mu.Lock()
	r.resuming = append(r.resuming, req.Resuming)
	r.mu.Unlock()
	return r.Receiver.Receive(ctx, req, stream)
}

// send.raw sends an unencrypted filesystem with zfs send -w too, and a
// cut stream resumes: its token says compressok and embedok (what -w
// implies) but not rawok, which only an encrypted dataset's stream has.
func TestRawSendOfUnencryptedFilesystemResumes(t *testing.T) {
	p := newPair(t, "push")
	p.sender.Policy = zfs.SendPolicy{Flags: zfs.SendFlags{Raw: true}}
	p.create("src/data", false)
	p.write("src/data", 1, 16)
	p.snap("src/data", "s1")
	require.NoError(t, p.src.CutNextSend(1<<20))
	rec := &resumeRecorder{Receiver: p.receiver}
	rep := replication.NewRun(p.sender, rec, replication.Config{Sleep: noSleep, MaxAttempts: 1}).Do(ctx)
	require.Error(t, rep.Err(), "the cut stream")
	info, err := p.dst.Info(p.fs("dst/client/src/data"))
	require.NoError(t, err)
	tok, err := resumetoken.Decode(info.ReceiveResumeToken)
	require.NoError(t, err)
	assert.True(t, tok.CompressOK && tok.EmbedOK, "zfs send -w implies -c and -e: %+v", tok)
	assert.False(t, tok.RawOK, "no encrypted data, no rawok: %+v", tok)

	requireOK(t, replication.NewRun(p.sender, rec, replication.Config{Sleep: noSleep}).Do(ctx))
	assert.Equal(t, []bool{false, true}, rec.resuming, "the second run resumed the cut receive")
	p.assertReplicated("src/data", "s1")
}
