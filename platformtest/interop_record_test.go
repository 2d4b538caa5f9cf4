package platformtest

import (
	"encoding/base64"
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var interopRecord = flag.Bool("interop.record", false,
	"print the connections of zrepl talking to itself (TestInteropZreplToZrepl) as ZREPL-RECORDING blocks on stdout, "+
		"for engine/rpc/testdata/zrepl-v0.7.0 (go test ./engine/rpc -run TestRecordFromConsole -args -golden.console=LOG)")

// zrepl v0.7.0 talking to itself meets the same checks the mixed tests
// make of both implementations (cursor, step holds, last-received hold,
// GUIDs, data), so those checks are zrepl's behaviour, not our reading of
// it: a push to a sink with the sink pruned over the wire, and a pull
// from a source with the source pruned over the wire. With
// -interop.record its connections become the golden tests' recordings.
func TestInteropZreplToZrepl(t *testing.T) {
	bin := upstreamZrepl(t)
	f := newInteropFixture(t)
	Run(t, "zfs", "create", f.root+"/push")
	Run(t, "zfs", "create", f.root+"/pull")
	sinkPort, srcPort := freePort(t), freePort(t)
	pushProxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", sinkPort))
	pullProxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", srcPort))
	pushProxy.record, pullProxy.record = *interopRecord, *interopRecord
	z := startZrepl(t, bin, fmt.Sprintf(`
  - name: zsink
    type: sink
    root_fs: %[1]q
    serve: {type: tcp, listen: "127.0.0.1:%[2]d", clients: {"127.0.0.1": "zr"}}
    recv: {placeholder: {encryption: off}}
  - name: zpush
    type: push
    connect: {type: tcp, address: %[3]q}
    filesystems: {%[4]q: true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 1}]
  - name: zpushenc
    type: push
    connect: {type: tcp, address: %[3]q}
    filesystems: {%[6]q: true}
    send: {encrypted: true}
    snapshotting: {type: manual}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
  - name: zsrc
    type: source
    serve: {type: tcp, listen: "127.0.0.1:%[5]d", clients: {"127.0.0.1": "zr"}}
    filesystems: {%[4]q: true}
    snapshotting: {type: manual}
  - name: zpull
    type: pull
    connect: {type: tcp, address: %[7]q}
    root_fs: %[8]q
    interval: manual
    recv: {placeholder: {encryption: off}}
    pruning:
      keep_sender: [{type: not_replicated}, {type: last_n, count: 1}]
      keep_receiver: [{type: last_n, count: 10}]
`, f.root+"/push", sinkPort, pushProxy.addr, f.plain, srcPort, f.enc, pullProxy.addr, f.root+"/pull"))
	pushDst, pushEnc := f.root+"/push/zr/"+f.plain, f.root+"/push/zr/"+f.enc
	pullDst := f.root + "/pull/" + f.plain

	for i, name := range []string{"s1", "s2"} {
		f.snap(t, name, int64(i+1), 8<<10)
		z.runOK("zpush")
		requireSameSnapshot(t, f.plain, pushDst, name, true)
		requireAbstractions(t, f.plain, "zpush", pushDst, "zsink", name)
		z.runOK("zpushenc")
		requireEncryptedRaw(t, f.enc, pushEnc, name)
		requireAbstractions(t, f.enc, "zpushenc", pushEnc, "zsink", name)
		z.runOK("zpull")
		requireSameSnapshot(t, f.plain, pullDst, name, true)
		requireAbstractions(t, f.plain, "zsrc", pullDst, "zpull", name)
	}
	// Pruned over the wire: the sink keeps the newest, the source too.
	require.Equal(t, []string{"s2"}, snapNames(t, pushDst))
	require.Equal(t, []string{"s2"}, snapNames(t, f.plain))

	if *interopRecord {
		printRecordings(t, "push-sink", pushProxy)
		printRecordings(t, "pull-source", pullProxy)
	}
}

// printRecordings prints each recorded connection, each direction, as
//
//	ZREPL-RECORDING-BEGIN <scenario>/<nn>-<label>.<c2s|s2c>
//	<base64, 76 characters a line>
//	ZREPL-RECORDING-END
func printRecordings(t *testing.T, scenario string, p *cutProxy) {
	p.close()
	p.wg.Wait()
	for i, rc := range p.recorded {
		label := "unknown"
		if n := bannerLen(rc.c2s); n > 0 && len(rc.c2s) >= n+64 {
			label = strings.TrimPrefix(strings.TrimRight(string(rc.c2s[n:n+64]), "\x00"), "zrepl_")
		}
		for dir, b := range map[string][]byte{"c2s": rc.c2s, "s2c": rc.s2c} {
			enc := base64.StdEncoding.EncodeToString(b)
			var sb strings.Builder
			fmt.Fprintf(&sb, "ZREPL-RECORDING-BEGIN %s/%02d-%s.%s\n", scenario, i, label, dir)
			for len(enc) > 76 {
				sb.WriteString(enc[:76] + "\n")
				enc = enc[76:]
			}
			sb.WriteString(enc + "\nZREPL-RECORDING-END\n")
			fmt.Print(sb.String())
		}
	}
	t.Logf("printed %d connections of %s", len(p.recorded), scenario)
}

// bannerLen is the length of the zrepl banner at the start of b, or 0.
func bannerLen(b []byte) int {
	if len(b) < 11 {
		return 0
	}
	var n int
	if _, err := fmt.Sscanf(string(b[:10]), "%d", &n); err != nil {
		return 0
	}
	return 11 + n
}
