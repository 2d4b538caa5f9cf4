package daemon

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/zfsmodel"
)

// A push into a sink and a pull, each receiving below the encrypted
// backup/enc; recv.placeholder.encryption decides how the placeholders
// for the client's area and "pool" are made, or whether they are.
const placeholderConfig = `
global:
  zfs_backend: model
jobs:
  - name: push
    type: push
    connect: {type: local, listener_name: sink, client_identity: laptop}
    filesystems: {"pool/data<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 10s}
    pruning:
      keep_sender: [{type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
  - name: sink
    type: sink
    serve: {type: local, listener_name: sink}
    root_fs: backup/enc/sink
%[1]s
  - name: src
    type: source
    serve: {type: local, listener_name: src}
    filesystems: {"pool/data<": true}
    snapshotting: {type: manual}
  - name: pull
    type: pull
    connect: {type: local, listener_name: src, client_identity: backup}
    root_fs: backup/enc/pulled
    interval: 10s
    pruning:
      keep_sender: [{type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
%[1]s
`

func TestPlaceholderEncryptionWiring(t *testing.T) {
	for _, tc := range []struct {
		setting string // "" leaves the option out
		// want: "refused", or the placeholders' encryption root ("" for
		// unencrypted)
		want string
	}{
		{"", "refused"},
		{"unspecified", "refused"},
		{"off", ""},
		{"inherit", "backup/enc"},
	} {
		t.Run(fmt.Sprintf("%q", tc.setting), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				recv := ""
				if tc.setting != "" {
					recv = "    recv: {placeholder: {encryption: " + tc.setting + "}}"
				}
				m := zfsmodel.New(zfsmodel.Options{Seed: 3, Clock: time.Now})
				require.NoError(t, m.CreatePool("pool"))
				require.NoError(t, m.CreatePool("backup"))
				require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("pool/data"), zfsmodel.FSOptions{}))
				require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("backup/enc"), zfsmodel.FSOptions{Encrypted: true}))
				require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("backup/enc/sink"), zfsmodel.FSOptions{}))
				d, err := New(Options{Config: parse(t, fmt.Sprintf(placeholderConfig, recv)), ZFS: m, Control: newPipeListener()})
				require.NoError(t, err)
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error)
				go func() { done <- d.Run(ctx) }()
				time.Sleep(25 * time.Second)
				synctest.Wait()

				lastErr := map[string]string{}
				for _, s := range d.Status() {
					lastErr[s.Name] = s.LastError
				}
				for _, c := range []struct{ job, area, placeholder string }{
					{"push", "backup/enc/sink/laptop", "backup/enc/sink/laptop/pool"},
					{"pull", "backup/enc/pulled", "backup/enc/pulled/pool"},
				} {
					if tc.want == "refused" {
						refused := c.area
						if c.job == "push" {
							// The sink's client-identity dataset is made
							// whatever the setting, inheriting (as zrepl);
							// the placeholder below it is refused.
							refused = c.placeholder
							info, err := m.Info(zfs.MustDatasetPath(c.area))
							require.NoError(t, err)
							assert.True(t, info.Placeholder, c.area)
							assert.Equal(t, "backup/enc", info.EncryptionRoot, c.area)
						}
						assert.Contains(t, lastErr[c.job], "placeholder "+refused+": its parent")
						assert.Contains(t, lastErr[c.job], endpoint.PlaceholderEncryptionKey+" is unspecified")
						_, err := m.Info(zfs.MustDatasetPath(refused))
						assert.ErrorIs(t, err, zfs.ErrDatasetNotExist, "nothing created")
						continue
					}
					assert.Empty(t, lastErr[c.job], c.job)
					assert.NotEmpty(t, snapshots(t, m, c.placeholder+"/data"), "%s replicated", c.job)
					for _, fs := range []string{c.area, c.placeholder} {
						info, err := m.Info(zfs.MustDatasetPath(fs))
						require.NoError(t, err)
						assert.True(t, info.Placeholder, fs)
						assert.Equal(t, tc.want, info.EncryptionRoot, "%s: encryption root", fs)
					}
				}
				cancel()
				require.NoError(t, <-done)
			})
		})
	}
}

// A new client of a sink whose root_fs is encrypted, with the default
// recv.placeholder.encryption, pushes its whole pool: the sink makes the
// client-identity dataset inheriting the encryption (as zrepl does) and
// needs no placeholder else, so the first push is accepted.
func TestSinkWithEncryptedRootAcceptsANewClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := zfsmodel.New(zfsmodel.Options{Seed: 3, Clock: time.Now})
		require.NoError(t, m.CreatePool("pool"))
		require.NoError(t, m.CreatePool("backup"))
		require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("pool/data"), zfsmodel.FSOptions{}))
		require.NoError(t, m.CreateFilesystem(zfs.MustDatasetPath("backup/enc"), zfsmodel.FSOptions{Encrypted: true}))
		cfg := `
global:
  zfs_backend: model
jobs:
  - name: push
    type: push
    connect: {type: local, listener_name: sink, client_identity: laptop}
    filesystems: {"pool<": true}
    snapshotting: {type: periodic, prefix: zrepl_, interval: 10s}
    pruning:
      keep_sender: [{type: last_n, count: 10}]
      keep_receiver: [{type: last_n, count: 10}]
  - name: sink
    type: sink
    serve: {type: local, listener_name: sink}
    root_fs: backup/enc
`
		d, err := New(Options{Config: parse(t, cfg), ZFS: m, Control: newPipeListener()})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- d.Run(ctx) }()
		time.Sleep(25 * time.Second)
		synctest.Wait()
		for _, s := range d.Status() {
			assert.Empty(t, s.LastError, s.Name)
		}
		info, err := m.Info(zfs.MustDatasetPath("backup/enc/laptop"))
		require.NoError(t, err)
		assert.True(t, info.Placeholder)
		assert.Equal(t, "backup/enc", info.EncryptionRoot)
		for _, fs := range []string{"backup/enc/laptop/pool", "backup/enc/laptop/pool/data"} {
			assert.NotEmpty(t, snapshots(t, m, fs), "%s replicated", fs)
			info, err := m.Info(zfs.MustDatasetPath(fs))
			require.NoError(t, err)
			assert.Equal(t, "backup/enc", info.EncryptionRoot, fs)
		}
		cancel()
		require.NoError(t, <-done)
	})
}
