package rpc

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// Replication over the ssh transport: every connection is a process (the
// test binary standing in for ssh and the forced stdinserver command) that
// reaches the sink's unix socket as the identity its key is bound to.
func TestReplicateOverSSH(t *testing.T) {
	dir, err := os.MkdirTemp("", "zrepl") // short: unix socket paths are limited
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "stdinserver", "sink")
	l, err := transport.ListenStdinServer(socket)
	require.NoError(t, err)
	t.Setenv("ZREPL_TEST_STDINSERVER_SOCKET", socket)
	t.Setenv("ZREPL_TEST_STDINSERVER_IDENTITY", "backup-host")

	h := newHosts(t)
	srv := newServer(t, ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	dial, err := transport.SSHDialer([]string{os.Args[0], "-test.run=^$"})
	require.NoError(t, err)
	c := newClient(t, ClientConfig{Dial: dial})

	h.create("src/data")
	h.writeSnap("src/data", 1, 16, "s1")
	requireOK(t, run(h.sender, c.Receiver()))
	h.writeSnap("src/data", 2, 4, "s2")
	requireOK(t, run(h.sender, c.Receiver()))
	h.assertReplicated("src/data", "dst/sinks/backup-host/src/data", "s1", "s2")
}
