package platformtest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// The pull directions serve the plain filesystem from one source job and
// the encrypted one from another with send.encrypted (zrepl's sender
// refuses to send an encrypted filesystem otherwise, also with
// send.raw), each pulled by its own job into its own root_fs.

// Our pull job replicates from a zrepl v0.7.0 source: full, incremental,
// resumed (zrepl's source resumes from our receiver's token), raw
// encrypted; the source's cursor is named after the source job, the
// last-received hold after our pull job, as in zrepl.
func TestInteropPullOursFromZreplSource(t *testing.T) {
	bin := upstreamZrepl(t)
	f := newInteropFixture(t)
	port, encPort := freePort(t), freePort(t)
	z := startZrepl(t, bin, fmt.Sprintf(`
  - name: zsrc
    type: source
    serve: {type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": "ours"}}
    filesystems: {%q: true}
    snapshotting: {type: manual}
  - name: zsrcenc
    type: source
    serve: {type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": "ours"}}
    filesystems: {%q: true}
    send: {encrypted: true}
    snapshotting: {type: manual}
`, port, f.plain, encPort, f.enc))
	proxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	Run(t, "zfs", "create", f.root+"/plain")
	Run(t, "zfs", "create", f.root+"/enc")
	o := startOurs(t, fmt.Sprintf(`
jobs:
  - name: opull
    type: pull
    connect: {type: tcp, address: %q}
    root_fs: %q
    interval: manual
    recv: {placeholder: {encryption: off}}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
  - name: openc
    type: pull
    connect: {type: tcp, address: "127.0.0.1:%d"}
    root_fs: %q
    interval: manual
    recv: {placeholder: {encryption: off}}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
`, proxy.addr, f.root+"/plain", encPort, f.root+"/enc"))
	plainDst, encDst := f.root+"/plain/"+f.plain, f.root+"/enc/"+f.enc

	for i, name := range []string{"s1", "s2"} {
		f.snap(t, name, int64(i+1), 1<<20)
		o.runOK("opull")
		o.runOK("openc")
		requireSameSnapshot(t, f.plain, plainDst, name, true)
		requireAbstractions(t, f.plain, "zsrc", plainDst, "opull", name)
		requireEncryptedRaw(t, f.enc, encDst, name)
		requireAbstractions(t, f.enc, "zsrcenc", encDst, "openc", name)
	}

	f.snap(t, "s3", 3, 24<<20)
	proxy.cut(4 << 20)
	o.runOK("opull")
	require.Equal(t, 1, proxy.cutCount(), "the proxy did not cut the stream")
	require.True(t, z.logHas("zfs send", " -t "), "the step after the cut did not resume (zfs send -t on zrepl's source)")
	requireSameSnapshot(t, f.plain, plainDst, "s3", true)
	requireAbstractions(t, f.plain, "zsrc", plainDst, "opull", "s3")
}

// zrepl v0.7.0's pull job replicates from our source: full, incremental,
// resumed (our source resumes from zrepl's token), raw encrypted.
func TestInteropPullZreplFromOurSource(t *testing.T) {
	bin := upstreamZrepl(t)
	f := newInteropFixture(t)
	port, encPort := freePort(t), freePort(t)
	o := startOurs(t, fmt.Sprintf(`
jobs:
  - name: osrc
    type: source
    serve: {type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": "zr"}}
    filesystems: {%q: true}
    snapshotting: {type: manual}
  - name: osrcenc
    type: source
    serve: {type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": "zr"}}
    filesystems: {%q: true}
    send: {encrypted: true}
    snapshotting: {type: manual}
`, port, f.plain, encPort, f.enc))
	proxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", port))
	Run(t, "zfs", "create", f.root+"/plain")
	Run(t, "zfs", "create", f.root+"/enc")
	z := startZrepl(t, bin, fmt.Sprintf(`
  - name: zpull
    type: pull
    connect: {type: tcp, address: %q}
    root_fs: %q
    interval: manual
    recv: {placeholder: {encryption: off}}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
  - name: zpullenc
    type: pull
    connect: {type: tcp, address: "127.0.0.1:%d"}
    root_fs: %q
    interval: manual
    recv: {placeholder: {encryption: off}}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
`, proxy.addr, f.root+"/plain", encPort, f.root+"/enc"))
	plainDst, encDst := f.root+"/plain/"+f.plain, f.root+"/enc/"+f.enc

	for i, name := range []string{"s1", "s2"} {
		f.snap(t, name, int64(i+1), 1<<20)
		z.runOK("zpull")
		z.runOK("zpullenc")
		requireSameSnapshot(t, f.plain, plainDst, name, true)
		requireAbstractions(t, f.plain, "osrc", plainDst, "zpull", name)
		requireEncryptedRaw(t, f.enc, encDst, name)
		requireAbstractions(t, f.enc, "osrcenc", encDst, "zpullenc", name)
	}

	f.snap(t, "s3", 3, 24<<20)
	o.calls.take()
	proxy.cut(4 << 20)
	z.runAfterCut("zpull")
	require.Equal(t, 1, proxy.cutCount(), "the proxy did not cut the stream")
	require.True(t, sendResumed(o.calls.take()), "the step after the cut did not resume (zfs send -t on our source)")
	requireSameSnapshot(t, f.plain, plainDst, "s3", true)
	requireAbstractions(t, f.plain, "osrc", plainDst, "zpull", "s3")
}
