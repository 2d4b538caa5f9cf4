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

// A source's send_properties (zfs send -p) and backup_properties (-b)
// carry the filesystem's user properties to the puller, which receives
// them under its own recv.properties: override sets a local value,
// inherit keeps the property out.
func TestSourceSendsProperties(t *testing.T) {
	for _, tc := range []struct {
		key      string
		wantTag  string
		wantKeep string
	}{
		{key: "send_properties", wantTag: "local", wantKeep: "k"},
		{key: "backup_properties", wantTag: "recvd", wantKeep: ""},
	} {
		t.Run(tc.key, func(t *testing.T) {
			cfg := parse(t, fmt.Sprintf(`
global: {zfs_backend: model}
jobs:
  - name: src
    type: source
    serve: {type: local, listener_name: src}
    filesystems: {"pool/data/a": true}
    snapshotting: {type: manual}
    send: {%s: true}
  - name: pull
    type: pull
    connect: {type: local, listener_name: src, client_identity: backup}
    root_fs: backup/pulled
    interval: manual
    recv:
      properties:
        override: {"com.example:over": "v"}
        inherit: ["com.example:drop"]
    pruning: {keep_sender: [{type: not_replicated}], keep_receiver: [{type: last_n, count: 3}]}
`, tc.key))
			m := model(t)
			ctx := context.Background()
			// pool/data/a got com.example:tag=recvd from a receive of its
			// own, and overrides it locally.
			require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("pool/origin"), zfsmodel.FSOptions{}))
			origin := zfs.MustDatasetPath("pool/origin")
			for k, v := range map[string]string{"com.example:tag": "recvd", "com.example:drop": "d"} {
				require.NoError(t, m.SetUserProperty(ctx, origin, k, v))
			}
			snapData(t, m, "pool/origin", "o1")
			vs, err := m.ListVersions(ctx, origin)
			require.NoError(t, err)
			st, err := m.Send(ctx, zfs.SendArgs{FS: origin, To: vs[0], Flags: zfs.SendFlags{Properties: true}})
			require.NoError(t, err)
			require.NoError(t, m.Receive(ctx, zfs.MustDatasetPath("pool/data/a"), st, zfs.RecvOptions{}))
			require.NoError(t, st.Close())
			a := zfs.MustDatasetPath("pool/data/a")
			require.NoError(t, m.SetUserProperty(ctx, a, "com.example:tag", "local"))
			require.NoError(t, m.SetUserProperty(ctx, a, "com.example:keep", "k"))
			snapData(t, m, "pool/data/a", "s1")

			d := runDaemon(t, Options{Config: cfg, ZFS: m})
			pull, err := d.Job("pull")
			require.NoError(t, err)
			pull.Wakeup()
			if st := waitRuns(t, pull, 1); st.LastError != "" {
				t.Fatal(st.LastError)
			}
			dst := zfs.MustDatasetPath("backup/pulled/pool/data/a")
			assert.Equal(t, []string{"s1"}, snapshots(t, m, dst.String()), "initial replication: the most recent snapshot")
			prop := func(name string) [2]string {
				v, src := m.Property(dst, name)
				return [2]string{v, src}
			}
			assert.Equal(t, [2]string{tc.wantTag, "received"}, prop("com.example:tag"))
			assert.Equal(t, [2]string{"", "-"}, prop("com.example:drop"), "recv.properties.inherit keeps it out")
			assert.Equal(t, [2]string{"v", "local"}, prop("com.example:over"))
			if tc.wantKeep == "" {
				assert.Equal(t, [2]string{"", "-"}, prop("com.example:keep"), "-b sends no local values")
			} else {
				assert.Equal(t, [2]string{tc.wantKeep, "received"}, prop("com.example:keep"))
			}
		})
	}
}
