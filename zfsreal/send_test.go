package zfsreal

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

func sv(name string) zfs.FilesystemVersion {
	return zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: name}
}
func bv(name string) zfs.FilesystemVersion {
	return zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: name}
}

func withGUID(v zfs.FilesystemVersion, g uint64) zfs.FilesystemVersion { v.GUID = g; return v }

// onVersions adds the by-name listing Send and SendSize run first; each
// row is "name guid", To first, then From.
func (f *fake) onVersions(rows ...string) string {
	args := []string{"list", "-H", "-p", "-o", "name,guid", "-t", "snapshot,bookmark"}
	var out strings.Builder
	for _, r := range rows {
		name, guid, _ := strings.Cut(r, " ")
		args = append(args, name)
		out.WriteString(name + "\t" + guid + "\n")
	}
	f.onArgs(args, fakeRule{Stdout: out.String()})
	return strings.Join(args, " ")
}

func TestSendArgv(t *testing.T) {
	from, fromBook := sv("s1"), bv("b1")
	cases := []struct {
		args zfs.SendArgs
		want string
	}{
		{zfs.SendArgs{FS: fs, To: sv("s2")}, "send pool/a/fs@s2"},
		{zfs.SendArgs{FS: fs, From: &from, To: sv("s2")}, "send -i pool/a/fs@s1 pool/a/fs@s2"},
		{zfs.SendArgs{FS: fs, From: &fromBook, To: sv("s2")}, "send -i pool/a/fs#b1 pool/a/fs@s2"},
		{zfs.SendArgs{FS: fs, To: sv("s2"), Flags: zfs.SendFlags{Raw: true, Compressed: true, LargeBlocks: true, EmbeddedData: true}},
			"send -w -c -L -e pool/a/fs@s2"},
		{zfs.SendArgs{FS: fs, From: &from, To: sv("s2"), Flags: zfs.SendFlags{Raw: true}}, "send -w -i pool/a/fs@s1 pool/a/fs@s2"},
		{zfs.SendArgs{FS: fs, To: sv("s2"), Flags: zfs.SendFlags{Properties: true, BackupProperties: true}}, "send -p -b pool/a/fs@s2"},
		// The token carries the flags; none are repeated.
		{zfs.SendArgs{FS: fs, From: &from, To: sv("s2"), Flags: zfs.SendFlags{Raw: true}, ResumeToken: "1-2-3-4"}, "send -t 1-2-3-4"},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, strings.Join(sendArgv(c.args, false), " "))
		dry := strings.Replace(c.want, "send", "send -nvP", 1)
		assert.Equal(t, dry, strings.Join(sendArgv(c.args, true), " "))
	}
}

func TestSendStreamsToEOF(t *testing.T) {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	const n = 3<<20 + 17
	f.on("send -c pool/a/fs@s1", fakeRule{StreamBytes: n})
	r, err := f.cli().Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1"), Flags: zfs.SendFlags{Compressed: true}})
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(streamBytes(n), got), "stream content differs (got %d bytes)", len(got))
	require.NoError(t, r.Close())
	require.NoError(t, r.Close())
	assert.True(t, gone(f.pidOf("send ")))
}

func TestSendEmptyStream(t *testing.T) {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	f.on("send pool/a/fs@s1", fakeRule{})
	r, err := f.cli().Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	n, err := r.Read(make([]byte, 10))
	assert.Equal(t, 0, n)
	assert.Equal(t, io.EOF, err)
	require.NoError(t, r.Close())
}

// TestSendFailureReplacesEOF: a send that dies after some bytes must not
// look like a complete stream.
func TestSendFailureReplacesEOF(t *testing.T) {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	const n = 200000
	msg := "warning: cannot send 'pool/a/fs@s1': Input/output error\n"
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: n, Stderr: msg, Exit: 1})
	f.on("get -H -p -o value keystatus pool/a/fs", fakeRule{Stdout: "-\n"})
	r, err := f.cli().Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	defer r.Close()
	got, err := io.ReadAll(r)
	assert.Equal(t, streamBytes(n), got)
	e := zerr(t, err, 0)
	assert.Equal(t, strings.TrimSpace(msg), e.Msg)
	assert.Equal(t, 1, e.ExitStatus)
	assert.Equal(t, "send", e.Op)
	assert.Equal(t, "pool/a/fs@s1", e.Dataset)
	// Reading again gives the same error, never EOF.
	_, err2 := r.Read(make([]byte, 1))
	assert.Same(t, e, err2)
}

// TestSendKeyNotLoaded: zfs says only "Invalid argument" for a non-raw
// send of a locked dataset; the key status says why.
func TestSendKeyNotLoaded(t *testing.T) {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	f.on("send pool/a/fs@s1", fakeRule{Stderr: "warning: cannot send 'pool/a/fs@s1': Invalid argument\n", Exit: 1})
	f.on("get -H -p -o value keystatus pool/a/fs", fakeRule{Stdout: "unavailable\n"})
	// The send dies before its header: Send itself fails.
	_, err := f.cli().Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	zerr(t, err, zfs.ErrKeyNotLoaded)

	f.on("send -nvP pool/a/fs@s1", fakeRule{Stderr: "warning: cannot send 'pool/a/fs@s1': Invalid argument\n", Exit: 1})
	_, err = f.cli().SendSize(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	zerr(t, err, zfs.ErrKeyNotLoaded)
}

func TestSendCloseEarlyKillsChild(t *testing.T) {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	// Far more than a pipe holds: the fake blocks writing.
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: 1 << 30})
	r, err := f.cli().Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	buf := make([]byte, 1000)
	_, err = io.ReadFull(r, buf)
	require.NoError(t, err)
	assert.Equal(t, streamBytes(1000), buf)
	pid := f.pidOf("send ")
	require.NoError(t, r.Close())
	assert.True(t, gone(pid), "zfs child %d still exists after Close", pid)
	_, err = r.Read(buf)
	assert.ErrorIs(t, err, errStreamClosed)
}

func TestSendCloseUnblocksRead(t *testing.T) {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: beginRecordLen, Hang: true})
	r, err := f.cli().Send(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	_, err = io.ReadFull(r, make([]byte, beginRecordLen))
	require.NoError(t, err)
	f.waitCalls(2)
	pid := f.pidOf("send ")
	readErr := make(chan error)
	go func() {
		_, err := r.Read(make([]byte, 10))
		readErr <- err
	}()
	require.NoError(t, r.Close())
	assert.Error(t, <-readErr)
	assert.True(t, gone(pid))
}

func TestSendContextCancel(t *testing.T) {
	f := newFake(t)
	f.onVersions("pool/a/fs@s1 11")
	f.on("send pool/a/fs@s1", fakeRule{StreamBytes: beginRecordLen + 10, Hang: true})
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, err := f.cli().Send(cctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	defer r.Close()
	buf := make([]byte, 10)
	_, err = io.ReadFull(r, buf)
	require.NoError(t, err)
	pid := f.pidOf("send ")
	cancel()
	_, err = io.ReadAll(r)
	assert.ErrorIs(t, err, context.Canceled)
	assert.True(t, gone(pid))
}

func TestSendChecksVersions(t *testing.T) {
	f := newFake(t)
	listing := f.onVersions("pool/a/fs@s2 22", "pool/a/fs#b1 11")
	f.on("send -i pool/a/fs#b1 pool/a/fs@s2", fakeRule{StreamBytes: 5})
	c := f.cli()

	from := withGUID(bv("b1"), 11)
	r, err := c.Send(ctx, zfs.SendArgs{FS: fs, From: &from, To: withGUID(sv("s2"), 22)})
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	assert.ElementsMatch(t, []string{listing, "send -i pool/a/fs#b1 pool/a/fs@s2"}, f.commands())

	// s2 was re-created under the same name.
	_, err = c.Send(ctx, zfs.SendArgs{FS: fs, From: &from, To: withGUID(sv("s2"), 99)})
	e := zerr(t, err, zfs.ErrVersionMismatch)
	assert.Equal(t, "pool/a/fs@s2", e.Dataset)
	assert.Equal(t, "send", e.Op)

	badFrom := withGUID(bv("b1"), 12)
	_, err = c.Send(ctx, zfs.SendArgs{FS: fs, From: &badFrom, To: sv("s2")})
	e = zerr(t, err, zfs.ErrVersionMismatch)
	assert.Equal(t, "pool/a/fs#b1", e.Dataset)

	_, err = c.SendSize(ctx, zfs.SendArgs{FS: fs, From: &from, To: withGUID(sv("s2"), 99)})
	zerr(t, err, zfs.ErrVersionMismatch)

	// Zero GUIDs are not checked, but the listing still runs.
	r, err = c.Send(ctx, zfs.SendArgs{FS: fs, From: &zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: "b1"}, To: sv("s2")})
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, r.Close())

	// Only listings ran besides the sends, which start beside the
	// listing: those refused were killed unread, and none is left.
	for _, c := range f.calls() {
		cmd := strings.Join(c.Args, " ")
		if !strings.HasPrefix(cmd, "send ") {
			assert.Equal(t, listing, cmd)
		}
		assert.True(t, gone(c.Pid), "%s left behind", cmd)
	}
}

// TestSendMissingVersion: a missing snapshot fails Send itself, with
// zfs's words, and is not a GUID mismatch.
func TestSendMissingVersion(t *testing.T) {
	f := newFake(t)
	msg := "cannot open 'pool/a/fs@gone': dataset does not exist\n"
	f.on("send pool/a/fs@gone", fakeRule{Stderr: msg, Exit: 1})
	for _, to := range []zfs.FilesystemVersion{sv("gone"), withGUID(sv("gone"), 5)} {
		_, err := f.cli().Send(ctx, zfs.SendArgs{FS: fs, To: to})
		e := zerr(t, err, zfs.ErrDatasetNotExist)
		assert.Equal(t, strings.TrimSpace(msg), e.Msg)
		assert.Equal(t, "send", e.Op)
		assert.Equal(t, "pool/a/fs@gone", e.Dataset)
		assert.False(t, errors.Is(err, zfs.ErrVersionMismatch))
	}
	// No listing ran, and the sends are gone.
	for _, c := range f.calls() {
		assert.Equal(t, "send", c.Args[0])
		assert.True(t, gone(c.Pid), "%v left behind", c.Args)
	}
}

func TestSendResumeToken(t *testing.T) {
	tok := resumetoken.Token{Object: 2, Offset: 0x12e0000, Bytes: 0x130c340,
		ToGUID: 22, ToName: "pool/a/fs@s2", FromGUID: 11, CompressOK: true}
	token := tok.Encode()
	from := withGUID(sv("s1"), 11)
	good := zfs.SendArgs{FS: fs, From: &from, To: withGUID(sv("s2"), 22), Flags: zfs.SendFlags{Compressed: true}, ResumeToken: token}

	f := newFake(t)
	listing := f.onVersions("pool/a/fs@s2 22", "pool/a/fs@s1 11")
	f.on("send -t "+token, fakeRule{StreamBytes: 7})
	c := f.cli()
	r, err := c.Send(ctx, good)
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Len(t, got, 7)
	require.NoError(t, r.Close())
	assert.ElementsMatch(t, []string{listing, "send -t " + token}, f.commands())

	otherFrom := withGUID(sv("s1"), 12)
	bad := map[string]zfs.SendArgs{
		"other snapshot": {FS: fs, From: &from, To: withGUID(sv("s3"), 22), ResumeToken: token},
		"other fs":       {FS: zfs.MustDatasetPath("pool/b/fs"), From: &from, To: withGUID(sv("s2"), 22), ResumeToken: token},
		"other guid":     {FS: fs, From: &from, To: withGUID(sv("s2"), 23), ResumeToken: token},
		"full":           {FS: fs, To: withGUID(sv("s2"), 22), ResumeToken: token},
		"other from":     {FS: fs, From: &otherFrom, To: withGUID(sv("s2"), 22), ResumeToken: token},
	}
	for name, args := range bad {
		_, err := c.Send(ctx, args)
		assert.True(t, errors.Is(err, zfs.ErrResumeTokenMismatch), "%s: %v", name, err)
		_, err = c.SendSize(ctx, args)
		assert.True(t, errors.Is(err, zfs.ErrResumeTokenMismatch), "%s: %v", name, err)
	}
	full := resumetoken.Token{ToGUID: 22, ToName: "pool/a/fs@s2"}.Encode()
	_, err = c.Send(ctx, zfs.SendArgs{FS: fs, From: &from, To: sv("s2"), ResumeToken: full})
	zerr(t, err, zfs.ErrResumeTokenMismatch)

	// Refused before anything ran.
	assert.Len(t, f.calls(), 2)

	// The token's flags rule: a raw flag in args neither refuses the
	// token nor reaches the command line.
	raw := zfs.SendArgs{FS: fs, From: &from, To: sv("s2"), Flags: zfs.SendFlags{Raw: true}, ResumeToken: token}
	r, err = c.Send(ctx, raw)
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	assert.ElementsMatch(t, []string{listing, "send -t " + token, listing, "send -t " + token}, f.commands())
}

// TestSendCorruptToken: a token that does not decode is refused before
// anything runs, with the message zfs send -t gives for it.
func TestSendCorruptToken(t *testing.T) {
	token := resumetoken.Token{ToGUID: 22, ToName: "pool/a/fs@s2"}.Encode()
	parts := strings.SplitN(token, "-", 4)
	cases := map[string]string{
		"not-a-token": "invalid format",
		"nonsense":    "invalid format",
		"2-" + parts[1] + "-" + parts[2] + "-" + parts[3]:         "invalid version 2",
		parts[0] + "-" + parts[1] + "-" + parts[2] + "-" + "zz00": "payload is not hex-encoded",
		parts[0] + "-1234567-" + parts[2] + "-" + parts[3]:        "incorrect checksum",
	}
	f := newFake(t)
	c := f.cli()
	for tok, why := range cases {
		_, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: sv("s2"), ResumeToken: tok})
		e := zerr(t, err, zfs.ErrResumeTokenCorrupt)
		assert.Equal(t, "cannot resume send: resume token is corrupt ("+why+")", e.Msg, "token %q", tok)
		assert.Equal(t, "send", e.Op)
	}
	assert.Empty(t, f.calls())
}

func TestSendRefusesBadArgs(t *testing.T) {
	f := newFake(t)
	c := f.cli()
	bad := []zfs.SendArgs{
		{To: sv("s1")},
		{FS: fs, To: bv("b1")},
		{FS: fs, To: sv("")},
		{FS: fs, To: sv("s 1\t")},
		{FS: fs, To: sv("a@b")},
		{FS: fs, To: sv("s1"), From: &zfs.FilesystemVersion{Kind: 0, Name: "x"}},
		{FS: fs, To: sv("s1"), From: &zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "x,y"}},
	}
	for _, args := range bad {
		_, err := c.Send(ctx, args)
		zerr(t, err, zfs.ErrInvalidName)
		_, err = c.SendSize(ctx, args)
		zerr(t, err, zfs.ErrInvalidName)
	}
	assert.Empty(t, f.calls())
}

func TestSendSize(t *testing.T) {
	f := newFake(t)
	from := sv("s1")
	f.onVersions("pool/a/fs@s1 11")
	f.onVersions("pool/a/fs@s2 22")
	f.onVersions("pool/a/fs@s2 22", "pool/a/fs@s1 11")
	f.on("send -nvP pool/a/fs@s1", fakeRule{Stdout: "full\tpool/a/fs@s1\t33575792\nsize\t33575792\n"})
	f.on("send -nvP -w -i pool/a/fs@s1 pool/a/fs@s2", fakeRule{Stdout: "incremental\t@s1\tpool/a/fs@s2\t4096\nsize\t4096\n"})
	f.on("send -nvP -c pool/a/fs@s2", fakeRule{Stderr: "full\tpool/a/fs@s2\t77\nsize\t77\n"})
	f.on("send -nvP -L pool/a/fs@s2", fakeRule{Stdout: "nothing useful\n"})
	c := f.cli()

	n, err := c.SendSize(ctx, zfs.SendArgs{FS: fs, To: sv("s1")})
	require.NoError(t, err)
	assert.EqualValues(t, 33575792, n)
	n, err = c.SendSize(ctx, zfs.SendArgs{FS: fs, From: &from, To: sv("s2"), Flags: zfs.SendFlags{Raw: true}})
	require.NoError(t, err)
	assert.EqualValues(t, 4096, n)
	n, err = c.SendSize(ctx, zfs.SendArgs{FS: fs, To: sv("s2"), Flags: zfs.SendFlags{Compressed: true}})
	require.NoError(t, err)
	assert.EqualValues(t, 77, n)
	_, err = c.SendSize(ctx, zfs.SendArgs{FS: fs, To: sv("s2"), Flags: zfs.SendFlags{LargeBlocks: true}})
	var oe *outputError
	assert.ErrorAs(t, err, &oe)
}

func TestParseSendSize(t *testing.T) {
	cases := []struct {
		out  string
		want int64
		ok   bool
	}{
		{"full\tsrcp/fs@a1\t33575792\nsize\t33575792\n", 33575792, true},
		{"incremental\t@from\t@to\t123\nsize\t124\n", 124, true},
		// A resumed send: the token contents, one line, no total.
		{"resume token contents:\nnvlist version: 0\n\tobject = 0x2\n\toffset = 0x12e0000\n\tbytes = 0x130c340\n" +
			"\ttoguid = 0xab88464e08d6da2c\n\ttoname = srcp/fs@s1\nfull\tsrcp/fs@s1\t1000\n", 1000, true},
		{"size\t-1\n", 0, false},
		{"size\tlots\n", 0, false},
		{"", 0, false},
		{"full\n", 0, false},
	}
	for _, c := range cases {
		n, ok := parseSendSize(c.out)
		assert.Equal(t, c.ok, ok, "%q", c.out)
		assert.Equal(t, c.want, n, "%q", c.out)
	}
}

// pidOf is the pid of the last call whose command line starts with
// prefix (a send starts beside its listing: call order varies).
func (f *fake) pidOf(prefix string) int {
	f.t.Helper()
	calls := f.calls()
	for i := len(calls) - 1; i >= 0; i-- {
		if strings.HasPrefix(strings.Join(calls[i].Args, " "), prefix) {
			return calls[i].Pid
		}
	}
	f.t.Fatalf("no call starting with %q in %v", prefix, f.commands())
	return 0
}

// TestSendCheckBesideSend: the by-name check and the size estimate run at
// the same time, each a process start; a send waits for its header; what
// does not finish keeps the result from the caller, and cancelling ends
// every child.
func TestSendCheckBesideSend(t *testing.T) {
	for _, size := range []bool{false, true} {
		f := newFake(t)
		listArgs := strings.Fields("list -H -p -o name,guid -t snapshot,bookmark pool/a/fs@s1")
		f.onArgs(listArgs, fakeRule{Hang: true})
		f.on("send pool/a/fs@s1", fakeRule{StreamBytes: 10, Hang: true})
		f.on("send -nvP pool/a/fs@s1", fakeRule{Stdout: "size\t10\n", Hang: true})
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() {
			var err error
			if size {
				_, err = f.cli().SendSize(cctx, zfs.SendArgs{FS: fs, To: sv("s1")})
			} else {
				var r io.ReadCloser
				if r, err = f.cli().Send(cctx, zfs.SendArgs{FS: fs, To: sv("s1")}); r != nil {
					r.Close()
				}
			}
			done <- err
		}()
		// The estimate runs beside the check; a send waits for its
		// header, which never comes, before any check.
		want := 2
		if !size {
			want = 1
		}
		calls := f.waitCalls(want)
		cancel()
		err := <-done
		assert.ErrorIs(t, err, context.Canceled, "size estimate: %v", size)
		for _, c := range calls {
			assert.True(t, gone(c.Pid), "%v left behind", c.Args)
		}
	}
}

// TestSendChecksHeader: a stream whose BEGIN record names its GUIDs is
// checked against it, with no zfs process beside the send (issue 13); the
// stream is whole, header included, and a mismatch kills the send unread.
func TestSendChecksHeader(t *testing.T) {
	f := newFake(t)
	head := beginRecord(binary.LittleEndian, "pool/a/fs@s2", 22, 11, 1700000000)
	const n = 1<<20 + 3
	f.on("send -i pool/a/fs#b1 pool/a/fs@s2", fakeRule{StdoutHex: hex.EncodeToString(head), StreamBytes: n})
	c := f.cli()
	from := withGUID(bv("b1"), 11)
	r, err := c.Send(ctx, zfs.SendArgs{FS: fs, From: &from, To: withGUID(sv("s2"), 22)})
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	assert.Equal(t, append(slices.Clone(head), streamBytes(n)...), got)

	badTo := withGUID(sv("s2"), 99)
	_, err = c.Send(ctx, zfs.SendArgs{FS: fs, From: &from, To: badTo})
	e := zerr(t, err, zfs.ErrVersionMismatch)
	assert.Equal(t, "pool/a/fs@s2", e.Dataset)
	badFrom := withGUID(bv("b1"), 12)
	_, err = c.Send(ctx, zfs.SendArgs{FS: fs, From: &badFrom, To: withGUID(sv("s2"), 22)})
	e = zerr(t, err, zfs.ErrVersionMismatch)
	assert.Equal(t, "pool/a/fs#b1", e.Dataset)

	for _, c := range f.calls() {
		assert.Equal(t, "send", c.Args[0], "only sends ran: %v", c.Args)
		assert.True(t, gone(c.Pid), "%v left behind", c.Args)
	}
}

// TestSendHeaderSpliced: what Send read of the stream (its header)
// reaches zfs recv first when Receive splices the rest past a wrapper that
// is never read, and the wrapper counts it.
func TestSendHeaderSpliced(t *testing.T) {
	const n = 3<<20 + 5
	head := beginRecord(binary.LittleEndian, "pool/a/fs@s1", 11, 0, 1700000000)
	f := sendRecvFake(t, fakeRule{StdoutHex: hex.EncodeToString(head), StreamBytes: n}, fakeRule{})
	c := f.cli()
	r, err := c.Send(ctx, zfs.SendArgs{FS: fs, To: withGUID(sv("s1"), 11)})
	require.NoError(t, err)
	defer r.Close()
	w := &counting{t: t, r: r}
	require.NoError(t, c.Receive(ctx, dstFS, w, zfs.RecvOptions{Resumable: true}))
	in := recvStdin(t, f)
	assert.EqualValues(t, beginRecordLen+n, in.Bytes)
	assert.Equal(t, sha(append(slices.Clone(head), streamBytes(n)...)), in.SHA256)
	assert.EqualValues(t, beginRecordLen+n, w.n.Load())
}

// TestVersionArgvNamesEachOnce: a send from a version to itself lists it
// once, so a missing one is said missing once (2.3.9 says it per name).
func TestVersionArgvNamesEachOnce(t *testing.T) {
	x := zfs.SnapshotRef(fs, "x")
	argv := versionArgv([]zfs.VersionRef{x, x})
	assert.Equal(t, []string{"list", "-H", "-p", "-o", "name,guid", "-t", "snapshot,bookmark", x.String()}, argv)
	b := zfs.BookmarkRef(fs, "x")
	argv = versionArgv([]zfs.VersionRef{x, b})
	assert.Equal(t, []string{x.String(), b.String()}, argv[len(argv)-2:])
}
