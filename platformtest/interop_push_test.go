package platformtest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// interopFixture is a sending pool with a plain and an encrypted
// filesystem, and a receiving pool with the sink's root_fs.
type interopFixture struct {
	src, dst   *Pool
	plain, enc string // on src
	root       string // on dst: root_fs of the sink, or of the pull job
}

func newInteropFixture(t *testing.T) *interopFixture {
	t.Helper()
	f := &interopFixture{src: NewPool(t, DefaultPoolSize), dst: NewPool(t, DefaultPoolSize)}
	f.plain, f.enc, f.root = f.src.DS("data"), f.src.DS("enc"), f.dst.DS("backup")
	key := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(key, []byte("interop-passphrase\n"), 0o600))
	Run(t, "zfs", "create", f.plain)
	Run(t, "zfs", "create", "-o", "encryption=on", "-o", "keyformat=passphrase", "-o", "keylocation=file://"+key, f.enc)
	Run(t, "zfs", "create", f.root)
	return f
}

// snap writes data of the given size into both filesystems and snapshots
// them as name.
func (f *interopFixture) snap(t *testing.T, name string, seed int64, size int) {
	t.Helper()
	for i, fs := range []string{f.plain, f.enc} {
		writeData(t, fs, seed*2+int64(i), size)
		Run(t, "zfs", "snapshot", fs+"@"+name)
	}
}

// requireEncryptedRaw: dst@name arrived raw: still encrypted, its key
// not loaded here (a raw receive never has it), the GUID the sender's.
func requireEncryptedRaw(t *testing.T, src, dst, name string) {
	t.Helper()
	requireSameSnapshot(t, src, dst, name, false)
	require.NotEqual(t, "off", Prop(t, dst, "encryption"), "%s was not received raw", dst)
	require.Equal(t, "unavailable", Prop(t, dst, "keystatus"), "%s: a raw receive leaves the key unloaded", dst)
}

// Our push job replicates to a zrepl v0.7.0 sink: a full, an incremental
// and a resumed step (the data connection reset mid-stream), and a raw
// send of an encrypted filesystem; after each run both sides carry what
// zrepl expects (cursor, no step holds, last-received hold).
func TestInteropPushOursToZreplSink(t *testing.T) {
	bin := upstreamZrepl(t)
	f := newInteropFixture(t)
	port := freePort(t)
	z := startZrepl(t, bin, fmt.Sprintf(`
  - name: zsink
    type: sink
    root_fs: %q
    serve: {type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": "ours"}}
    recv: {placeholder: {encryption: off}}
`, f.root, port))
	proxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	o := startOurs(t, fmt.Sprintf(`
jobs:
  - name: opush
    type: push
    connect: {type: tcp, address: %q}
    filesystems: {%q: true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
  - name: openc
    type: push
    connect: {type: tcp, address: %q}
    filesystems: {%q: true}
    send: {encrypted: true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
`, proxy.addr, f.plain, proxy.addr, f.enc))
	plainDst := f.root + "/ours/" + f.plain
	encDst := f.root + "/ours/" + f.enc

	// Full.
	f.snap(t, "s1", 1, 1<<20)
	o.runOK("opush")
	o.runOK("openc")
	requireSameSnapshot(t, f.plain, plainDst, "s1", true)
	requireAbstractions(t, f.plain, "opush", plainDst, "zsink", "s1")
	requireEncryptedRaw(t, f.enc, encDst, "s1")
	requireAbstractions(t, f.enc, "openc", encDst, "zsink", "s1")

	// Incremental.
	f.snap(t, "s2", 2, 1<<20)
	o.runOK("opush")
	o.runOK("openc")
	requireSameSnapshot(t, f.plain, plainDst, "s2", true)
	requireAbstractions(t, f.plain, "opush", plainDst, "zsink", "s2")
	requireEncryptedRaw(t, f.enc, encDst, "s2")
	requireAbstractions(t, f.enc, "openc", encDst, "zsink", "s2")

	// Resumed: the data connection is reset 4 MiB into a 24 MiB stream;
	// zrepl's zfs recv -s keeps the partial state, and the next attempt
	// sends from the resume token zrepl lists.
	f.snap(t, "s3", 3, 24<<20)
	o.calls.take()
	proxy.cut(4 << 20)
	o.runOK("opush")
	require.Equal(t, 1, proxy.cutCount(), "the proxy did not cut the stream")
	require.True(t, sendResumed(o.calls.take()), "the step after the cut did not resume (zfs send -t)")
	requireSameSnapshot(t, f.plain, plainDst, "s3", true)
	requireAbstractions(t, f.plain, "opush", plainDst, "zsink", "s3")
	_ = z
}

// zrepl v0.7.0's push job replicates to our sink: a full, an incremental
// and a resumed step (zrepl's send resumes from the token our sink
// lists), and a raw send of an encrypted filesystem; after each run both
// sides carry what zrepl expects.
func TestInteropPushZreplToOurSink(t *testing.T) {
	bin := upstreamZrepl(t)
	f := newInteropFixture(t)
	port := freePort(t)
	startOurs(t, fmt.Sprintf(`
jobs:
  - name: osink
    type: sink
    root_fs: %q
    serve: {type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": "zr"}}
    recv: {placeholder: {encryption: off}}
`, f.root, port))
	proxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	z := startZrepl(t, bin, fmt.Sprintf(`
  - name: zpush
    type: push
    connect: {type: tcp, address: %q}
    filesystems: {%q: true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
  - name: zenc
    type: push
    connect: {type: tcp, address: %q}
    filesystems: {%q: true}
    send: {encrypted: true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
`, proxy.addr, f.plain, proxy.addr, f.enc))
	plainDst := f.root + "/zr/" + f.plain
	encDst := f.root + "/zr/" + f.enc

	f.snap(t, "s1", 1, 1<<20)
	z.runOK("zpush")
	z.runOK("zenc")
	requireSameSnapshot(t, f.plain, plainDst, "s1", true)
	requireAbstractions(t, f.plain, "zpush", plainDst, "osink", "s1")
	requireEncryptedRaw(t, f.enc, encDst, "s1")
	requireAbstractions(t, f.enc, "zenc", encDst, "osink", "s1")

	f.snap(t, "s2", 2, 1<<20)
	z.runOK("zpush")
	z.runOK("zenc")
	requireSameSnapshot(t, f.plain, plainDst, "s2", true)
	requireAbstractions(t, f.plain, "zpush", plainDst, "osink", "s2")
	requireEncryptedRaw(t, f.enc, encDst, "s2")
	requireAbstractions(t, f.enc, "zenc", encDst, "osink", "s2")

	f.snap(t, "s3", 3, 24<<20)
	proxy.cut(4 << 20)
	z.runAfterCut("zpush")
	require.Equal(t, 1, proxy.cutCount(), "the proxy did not cut the stream")
	require.True(t, z.logHas("zfs send", " -t "), "zrepl's step after the cut did not resume (zfs send -t)")
	requireSameSnapshot(t, f.plain, plainDst, "s3", true)
	requireAbstractions(t, f.plain, "zpush", plainDst, "osink", "s3")
}
