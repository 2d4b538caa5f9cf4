package daemon

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// info is the listing row of fs on m.
func info(t *testing.T, m *zfsmodel.Model, fs string) zfs.FilesystemInfo {
	t.Helper()
	i, err := m.Info(zfs.MustDatasetPath(fs))
	require.NoError(t, err)
	return i
}

// A source with send.encrypted sends every puller its encrypted
// filesystems raw and refuses the unencrypted ones: the pull plans a
// conflict naming the key, and a puller that asks anyway is refused.
func TestSourceSendsEncryptedOnly(t *testing.T) {
	for _, transportType := range []string{"local", "tcp"} {
		t.Run(transportType, func(t *testing.T) {
			serve := `{type: local, listener_name: src}`
			connect := `{type: local, listener_name: src, client_identity: backup}`
			addr := ""
			if transportType == "tcp" {
				addr = freeTCPAddr(t)
				serve = fmt.Sprintf(`{type: tcp, listen: "%s", clients: {"127.0.0.1": "backup"}}`, addr)
				connect = fmt.Sprintf(`{type: tcp, address: "%s"}`, addr)
			}
			cfg := parse(t, fmt.Sprintf(`
global: {zfs_backend: model}
jobs:
  - name: src
    type: source
    serve: %s
    filesystems: {"pool/data/plain": true, "pool/data/secret": true}
    snapshotting: {type: manual}
    send: {encrypted: true}
  - name: pull
    type: pull
    connect: %s
    root_fs: backup/pulled
    interval: manual
    pruning: {keep_sender: [{type: not_replicated}], keep_receiver: [{type: last_n, count: 3}]}
`, serve, connect))
			m := model(t)
			require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("pool/data/plain"), zfsmodel.FSOptions{}))
			require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("pool/data/secret"), zfsmodel.FSOptions{Encrypted: true}))
			snapData(t, m, "pool/data/plain", "s1")
			snapData(t, m, "pool/data/secret", "s1")
			d := runDaemon(t, Options{Config: cfg, ZFS: m})
			pull, err := d.Job("pull")
			require.NoError(t, err)
			pull.Wakeup()
			st := waitRuns(t, pull, 1)

			assert.Contains(t, st.LastError, "pool/data/plain")
			assert.Contains(t, st.LastError, "send.encrypted is true and the filesystem is not encrypted")
			_, err = m.Info(zfs.MustDatasetPath("backup/pulled/pool/data/plain"))
			assert.ErrorIs(t, err, zfs.ErrDatasetNotExist, "nothing of the unencrypted filesystem was sent")
			secret := info(t, m, "backup/pulled/pool/data/secret")
			assert.Equal(t, "backup/pulled/pool/data/secret", secret.EncryptionRoot, "received raw: its own encryption root")
			assert.Equal(t, zfs.KeyStatusUnavailable, secret.KeyStatus)
			assert.Equal(t, []string{"s1"}, snapshots(t, m, "backup/pulled/pool/data/secret"))

			if addr == "" {
				return
			}
			// A puller that does not plan by the source's policy asks for
			// the unencrypted filesystem anyway.
			c, err := rpc.NewClient(rpc.ClientConfig{Dial: func(ctx context.Context) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			}})
			require.NoError(t, err)
			defer c.Close()
			vs, err := m.ListVersions(context.Background(), zfs.MustDatasetPath("pool/data/plain"))
			require.NoError(t, err)
			s1 := vs[0]
			_, err = c.Sender().Send(context.Background(), endpoint.SendRequest{FS: "pool/data/plain", To: s1})
			require.Error(t, err)
			assert.ErrorIs(t, err, endpoint.ErrNotAllowed)
			assert.ErrorIs(t, err, zfs.ErrNotEncrypted)
			assert.Contains(t, err.Error(), "pool/data/plain")
		})
	}
}
