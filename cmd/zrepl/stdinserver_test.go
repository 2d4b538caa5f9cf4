package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// A source daemon serving ssh+stdinserver, reached the way sshd's forced
// command reaches it: `zrepl stdinserver IDENTITY` run per connection (here
// without ssh in between), its stdin/stdout carrying the protocol. A pull
// over it replicates the source's snapshot.
func TestStdinserverCommandReachesTheDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := shortDir(t)
	bin := buildBinary(t)
	cfg := filepath.Join(dir, "src.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`
global:
  zfs_backend: model
  model_state_dir: %[1]s/state
  control: {sockpath: %[1]s/control}
  serve: {stdinserver: {sockdir: %[1]s/stdin}}
  logging: [{type: stdout, level: info, format: human}]
jobs:
  - name: src
    type: source
    serve: {type: stdinserver, client_identities: [backup]}
    filesystems: {"pool/data<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 1h}
`, dir)), 0o600))
	log := filepath.Join(dir, "src.log")
	src := startProc(t, bin, cfg, log)
	waitFor(t, 30*time.Second, "the source's first snapshot", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "snapshots taken")
	})

	dial, err := transport.SSHDialer([]string{bin, "stdinserver", "--config", cfg, "backup"})
	require.NoError(t, err)
	c, err := rpc.NewClient(rpc.ClientConfig{Dial: dial})
	require.NoError(t, err)
	defer c.Close()
	m := zfsmodel.New(zfsmodel.Options{Seed: 1})
	require.NoError(t, m.CreatePool("backup"))
	recv := &endpoint.Receiver{ZFS: m, Job: endpoint.MustJobID("pull"), Root: zfs.MustDatasetPath("backup/pulled")}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep := replication.NewRun(c.Sender(), recv, replication.Config{MaxAttempts: 1}).Do(ctx)
	require.NoError(t, rep.Err())
	vs, err := m.ListVersions(ctx, zfs.MustDatasetPath("backup/pulled/pool/data"))
	require.NoError(t, err)
	require.Len(t, vs, 1)
	assert.True(t, strings.HasPrefix(vs[0].Name, "zrepl_"))

	// An identity the source does not serve has no socket.
	_, err = run(t, "stdinserver", "--config", cfg, "stranger")
	assert.ErrorContains(t, err, "connect to the zrepl daemon")
	_, err = run(t, "stdinserver", "--config", cfg, "../x")
	assert.Error(t, err)

	c.Close()
	src.stop()
}
