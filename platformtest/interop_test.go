package platformtest

import (
	"fmt"
	"net"
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

// The interop tests proper: one table over the four mixed directions and
// the three transports zrepl v0.7.0 serves over the network. Each case
// replicates a plain and an encrypted filesystem (the latter sent raw)
// with a full, an incremental and a resumed step (the connection reset
// mid-stream by a proxy, the retry sending from the receiver's resume
// token), and checks after each run data, GUIDs, the sender's cursor, no
// step holds or bookmarks, and the receiver's last-received hold.
//
// Push directions: one sink serves both push jobs (plain, encrypted) of
// the client "client"; its filesystems land below root_fs/client. Pull
// directions: a source job per filesystem (zrepl refuses an encrypted
// filesystem without send.encrypted, and a plain one with it), each
// pulled by its own job into its own root_fs, the encrypted one's puller
// named "client-enc".
//
// The cases run in parallel (-test.parallel, by default the VM's cpus):
// most of a case's time is its daemons' and zfs's latency.
func TestInterop(t *testing.T) {
	bin := upstreamZrepl(t)
	useFakeSSH(t)
	for _, dir := range []interopDirection{
		{name: "OursPushToZreplSink"},
		{name: "ZreplPushToOurSink", zreplActive: true},
		{name: "OursPullFromZreplSource", pull: true},
		{name: "ZreplPullFromOurSource", zreplActive: true, pull: true},
	} {
		for _, tr := range interopTransports {
			t.Run(dir.name+"/"+tr.name, func(t *testing.T) {
				t.Parallel()
				runInterop(t, bin, dir, tr)
			})
		}
	}
}

type interopDirection struct {
	name        string
	zreplActive bool // zrepl runs the push or pull jobs, we the sink or source
	pull        bool
}

// interopTransport makes a serving job's endpoint.
type interopTransport struct {
	name string
	// endpoint returns the serve block of a job serving the client id,
	// the address its clients dial (where a proxy can sit in front),
	// and the connect block for a client of that id dialling addr.
	endpoint func(e *interopEnv, id string) (serve, target string, connect func(addr string) string)
}

var interopTransports = []interopTransport{
	{"tcp", func(e *interopEnv, id string) (string, string, func(string) string) {
		port := freePort(e.t)
		return fmt.Sprintf(`{type: tcp, listen: "127.0.0.1:%d", clients: {"127.0.0.1": %q}}`, port, id),
			fmt.Sprintf("127.0.0.1:%d", port),
			func(addr string) string { return fmt.Sprintf(`{type: tcp, address: %q}`, addr) }
	}},
	{"tls", func(e *interopEnv, id string) (string, string, func(string) string) {
		port := freePort(e.t)
		c := e.certs()
		return fmt.Sprintf(`{type: tls, listen: "127.0.0.1:%d", ca: %q, cert: %q, key: %q, client_cns: [%q]}`,
				port, c.ca, c.cert("server"), c.key("server"), id),
			fmt.Sprintf("127.0.0.1:%d", port),
			func(addr string) string {
				return fmt.Sprintf(`{type: tls, address: %q, ca: %q, cert: %q, key: %q, server_cn: "server"}`,
					addr, c.ca, c.cert(id), c.key(id))
			}
	}},
	{"ssh", func(e *interopEnv, id string) (string, string, func(string) string) {
		target := e.sshd(id)
		return fmt.Sprintf(`{type: stdinserver, client_identities: [%q]}`, id), target,
			func(addr string) string {
				host, port, err := net.SplitHostPort(addr)
				require.NoError(e.t, err)
				return fmt.Sprintf(`{type: ssh+stdinserver, host: %q, user: root, port: %s, identity_file: %q}`,
					host, port, e.sshKey())
			}
	}},
}

// interopEnv is one case's world: the pools, both daemons and the
// transport's files.
type interopEnv struct {
	t   *testing.T
	bin string
	f   *interopFixture
	z   *zreplProc
	o   *ours
	tls *tlsFiles
	key string
	// zreplServes: zrepl runs the sink or source, we the active jobs.
	zreplServes bool
}

func (e *interopEnv) certs() tlsFiles {
	if e.tls == nil {
		c := newTLSFiles(e.t, "server", "client", "client-enc")
		e.tls = &c
	}
	return *e.tls
}

func runInterop(t *testing.T, bin string, dir interopDirection, tr interopTransport) {
	e := &interopEnv{t: t, bin: bin, f: newInteropFixture(t), zreplServes: !dir.zreplActive}
	f := e.f
	// The active side prunes both: after s3 each side keeps its newest
	// two snapshots, so s1 goes, on the passive side by RPC.
	const pruning = `
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 2}]
      keep_receiver: [{type: last_n, count: 2}]`
	// Who is who: the jobs' names say whose they are (z…: zrepl's).
	side := func(zrepl bool, ours, theirs string) string {
		if zrepl {
			return theirs
		}
		return ours
	}
	zp, za := !dir.zreplActive, dir.zreplActive // zrepl passive, zrepl active
	var passive, active string
	var proxy *cutProxy
	var plainJob, encJob string // the active jobs
	var sendPlain, sendEnc, recvPlain, recvEnc string
	var plainDst, encDst string
	if !dir.pull {
		sink := side(zp, "osink", "zsink")
		serve, target, connect := tr.endpoint(e, "client")
		proxy = newCutProxy(t, target)
		passive = fmt.Sprintf(`
  - name: %s
    type: sink
    root_fs: %q
    serve: %s
    recv: {placeholder: {encryption: off}}
`, sink, f.root, serve)
		plainJob, encJob = side(za, "opush", "zpush"), side(za, "opushenc", "zpushenc")
		active = fmt.Sprintf(`
  - name: %s
    type: push
    connect: %s
    filesystems: {%q: true}
    snapshotting: {type: manual}%s
  - name: %s
    type: push
    connect: %s
    filesystems: {%q: true}
    send: {encrypted: true}
    snapshotting: {type: manual}%s
`, plainJob, connect(proxy.addr), f.plain, pruning, encJob, connect(proxy.addr), f.enc, pruning)
		sendPlain, sendEnc, recvPlain, recvEnc = plainJob, encJob, sink, sink
		plainDst, encDst = f.root+"/client/"+f.plain, f.root+"/client/"+f.enc
	} else {
		src, srcEnc := side(zp, "osrc", "zsrc"), side(zp, "osrcenc", "zsrcenc")
		serve, target, connect := tr.endpoint(e, "client")
		serveEnc, targetEnc, connectEnc := tr.endpoint(e, "client-enc")
		proxy = newCutProxy(t, target)
		passive = fmt.Sprintf(`
  - name: %s
    type: source
    serve: %s
    filesystems: {%q: true}
    snapshotting: {type: manual}
  - name: %s
    type: source
    serve: %s
    filesystems: {%q: true}
    send: {encrypted: true}
    snapshotting: {type: manual}
`, src, serve, f.plain, srcEnc, serveEnc, f.enc)
		plainJob, encJob = side(za, "opull", "zpull"), side(za, "opullenc", "zpullenc")
		Run(t, "zfs", "create", f.root+"/plain")
		Run(t, "zfs", "create", f.root+"/enc")
		active = fmt.Sprintf(`
  - name: %s
    type: pull
    connect: %s
    root_fs: %q
    interval: manual
    recv: {placeholder: {encryption: off}}%s
  - name: %s
    type: pull
    connect: %s
    root_fs: %q
    interval: manual
    recv: {placeholder: {encryption: off}}%s
`, plainJob, connect(proxy.addr), f.root+"/plain", pruning, encJob, connectEnc(targetEnc), f.root+"/enc", pruning)
		sendPlain, sendEnc, recvPlain, recvEnc = src, srcEnc, plainJob, encJob
		plainDst, encDst = f.root+"/plain/"+f.plain, f.root+"/enc/"+f.enc
	}
	// The passive side first, so that the first run finds it listening.
	if dir.zreplActive {
		e.o = startOurs(t, "jobs:"+passive)
		e.z = startZrepl(t, bin, active)
	} else {
		e.z = startZrepl(t, bin, passive)
		e.o = startOurs(t, "jobs:"+active)
	}
	run := func(jobs ...string) {
		t.Helper()
		if dir.zreplActive {
			e.z.runAllOK(jobs...)
		} else {
			e.o.runAllOK(jobs...)
		}
	}

	// Full, then incremental.
	for i, s := range []string{"s1", "s2"} {
		f.snap(t, s, int64(i+1), 1<<20)
		run(plainJob, encJob)
		requireSameSnapshot(t, f.plain, plainDst, s, true)
		requireAbstractions(t, f.plain, sendPlain, plainDst, recvPlain, s)
		requireEncryptedRaw(t, f.enc, encDst, s)
		requireAbstractions(t, f.enc, sendEnc, encDst, recvEnc, s)
	}

	// Resumed: the connection carrying the stream is cut 2 MiB into
	// 8 MiB; the receiver's zfs recv -s keeps the partial state, and the
	// next attempt (ours: in the same run; zrepl's: its next run) sends
	// from the resume token the receiver lists.
	f.snap(t, "s3", 3, 8<<20)
	e.o.calls.take()
	proxy.cut(2 << 20)
	if dir.zreplActive {
		e.z.runAfterCut(plainJob)
	} else {
		e.o.runOK(plainJob)
	}
	require.Equal(t, 1, proxy.cutCount(), "the proxy did not cut the stream")
	if oursSends := dir.zreplActive == dir.pull; oursSends {
		require.True(t, sendResumed(e.o.calls.take()), "the step after the cut did not resume (zfs send -t on our side)")
	} else {
		require.True(t, e.z.logHas("zfs send", " -t "), "the step after the cut did not resume (zfs send -t on zrepl's side)")
	}
	requireSameSnapshot(t, f.plain, plainDst, "s3", true)
	requireAbstractions(t, f.plain, sendPlain, plainDst, recvPlain, "s3")

	// Pruning, by the active side on both: the run after s3 pruned s1 on
	// sender and receiver; the encrypted job's last run (before s3) had
	// two and kept them.
	for _, c := range []struct {
		fs   string
		want []string
	}{{f.plain, []string{"s2", "s3"}}, {plainDst, []string{"s2", "s3"}}, {f.enc, []string{"s1", "s2", "s3"}}, {encDst, []string{"s1", "s2"}}} {
		require.Equal(t, c.want, snapNames(t, c.fs), "snapshots of %s after pruning (keep last_n 2)", c.fs)
	}
}
