package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/zfs"
)

func parseExample(t *testing.T, name string) *Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", name))
	require.NoError(t, err)
	cfg, err := Parse(b)
	require.NoError(t, err, "examples/%s", name)
	return cfg
}

func TestEveryExampleParses(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.yml"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 6, "quickstart and the push/sink/pull/source/snap examples")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg := parseExample(t, filepath.Base(f))
			assert.NotEmpty(t, cfg.Jobs)
			for _, j := range cfg.Jobs {
				assert.Equal(t, j.Name, j.ID.String())
			}
		})
	}
}

func TestQuickstartExample(t *testing.T) {
	cfg := parseExample(t, "quickstart.yml")
	assert.Equal(t, BackendModel, cfg.Global.ZFSBackend)
	require.Len(t, cfg.Global.Logging, 1)
	o := cfg.Global.Logging[0]
	assert.Equal(t, LogOutlet{Type: "stdout", Level: LevelInfo, Format: FormatHuman, Time: true, Color: true}, LogOutlet{Type: o.Type, Level: o.Level, Format: o.Format, Time: o.Time, Color: o.Color})
	require.Len(t, cfg.Jobs, 2)

	push, ok := cfg.Job("quickstart_push")
	require.True(t, ok)
	assert.Equal(t, JobPush, push.Type)
	require.NotNil(t, push.Connect)
	assert.Equal(t, TransportLocal, push.Connect.Type)
	assert.Equal(t, "quickstart_sink", push.Connect.ListenerName)
	assert.Equal(t, "laptop", push.Connect.ClientIdentity)
	assert.True(t, push.Filesystems.Match(zfs.MustDatasetPath("pool/data")))
	assert.True(t, push.Filesystems.Match(zfs.MustDatasetPath("pool/data/a/b")))
	assert.False(t, push.Filesystems.Match(zfs.MustDatasetPath("pool/other")))
	assert.Equal(t, &Snapshotting{Type: SnapshottingPeriodic, Prefix: "zrepl_", Interval: 5 * time.Second, TimestampFormat: "dense"}, push.Snapshotting)
	require.Len(t, push.Pruning.KeepSender, 2)
	assert.Equal(t, KeepNotReplicated, push.Pruning.KeepSender[0].Type)
	assert.Equal(t, 10, push.Pruning.KeepSender[1].Count)
	assert.Equal(t, 20, push.Pruning.KeepReceiver[0].Count)
	// defaults
	assert.Equal(t, Replication{Initial: GuaranteeResumability, Incremental: GuaranteeResumability, Steps: 1, SizeEstimates: 4}, push.Replication)
	assert.Equal(t, int64(-1), push.Send.BandwidthLimit.Max)
	assert.Equal(t, InitialMostRecent, push.ConflictResolution.InitialReplication)

	sink, ok := cfg.Job("quickstart_sink")
	require.True(t, ok)
	assert.Equal(t, JobSink, sink.Type)
	assert.Equal(t, zfs.MustDatasetPath("backup"), sink.RootFS)
	assert.Equal(t, "quickstart_sink", sink.Serve.ListenerName)
	assert.Equal(t, PlaceholderUnspecified, sink.Recv.Placeholder)
}

func TestPushSinkTLSExamples(t *testing.T) {
	push := parseExample(t, "push_tls.yml")
	assert.Equal(t, BackendReal, push.Global.ZFSBackend)
	assert.Equal(t, []Monitoring{{Type: "prometheus", Listen: "127.0.0.1:9811"}}, push.Global.Monitoring)
	assert.Equal(t, "syslog", push.Global.Logging[0].Type)
	assert.Equal(t, "local0", push.Global.Logging[0].Facility)
	j := push.Jobs[0]
	assert.Equal(t, TransportTLS, j.Connect.Type)
	assert.Equal(t, "backup", j.Connect.ServerCN)
	assert.Equal(t, DefaultDialTimeout, j.Connect.DialTimeout)
	assert.Equal(t, int64(50<<20), j.Send.BandwidthLimit.Max)
	assert.True(t, j.Send.Policy.Flags.Compressed)
	assert.False(t, j.Filesystems.Match(zfs.MustDatasetPath("zroot/usr/home/paranoid")))
	assert.True(t, j.Filesystems.Match(zfs.MustDatasetPath("zroot/usr/home/paranoid/x")), "an exact exclusion does not exclude children")
	assert.True(t, j.Filesystems.Match(zfs.MustDatasetPath("zroot/usr/home/alice")))
	assert.False(t, j.Filesystems.Match(zfs.MustDatasetPath("zroot/usr")))
	g := j.Pruning.KeepReceiver[0]
	assert.Equal(t, KeepGrid, g.Type)
	assert.Equal(t, "1x1h(keep=all) | 24x1h | 30x1d | 6x30d", g.Grid.String())
	assert.True(t, g.Regex.MatchString("zrepl_20200101"))
	assert.Equal(t, GuaranteeIncremental, j.Replication.Incremental)
	assert.Equal(t, 2, j.Replication.Steps)

	sink := parseExample(t, "sink_tls.yml")
	s := sink.Jobs[0]
	assert.Equal(t, []string{"prod"}, s.Serve.ClientCNs)
	assert.Equal(t, map[string]string{"org.openzfs.systemd:ignore": "on"}, s.Recv.Override)
	assert.Equal(t, []string{"mountpoint"}, s.Recv.Inherit)
	assert.Equal(t, PlaceholderOff, s.Recv.Placeholder)
}

func TestPullSourceSSHExamples(t *testing.T) {
	pull := parseExample(t, "pull_ssh.yml").Jobs[0]
	assert.Equal(t, TransportSSH, pull.Connect.Type)
	assert.Equal(t, 22, pull.Connect.Port)
	assert.Equal(t, []string{"Compression=on"}, pull.Connect.Options)
	assert.Equal(t, PullInterval{Every: 15 * time.Minute}, pull.Interval)
	assert.Equal(t, InitialAll, pull.ConflictResolution.InitialReplication)
	assert.Equal(t, GridInterval{Repeat: 8, Length: 7 * 24 * time.Hour, Keep: 1}, pull.Pruning.KeepReceiver[0].Grid.Intervals[3])

	src := parseExample(t, "source_ssh.yml").Jobs[0]
	assert.Equal(t, TransportStdinserver, src.Serve.Type)
	assert.Equal(t, []string{"backup"}, src.Serve.ClientIdentities)
	assert.Equal(t, "zrepl_2006-01-02T15:04:05.000Z", src.Snapshotting.SnapshotName(time.Date(2006, 1, 2, 15, 4, 5, 0, time.UTC)))
	assert.False(t, src.Filesystems.Match(zfs.MustDatasetPath("tank/tmp/x")))
	assert.True(t, src.Filesystems.Match(zfs.MustDatasetPath("tank")))
}

func TestSnapExample(t *testing.T) {
	j := parseExample(t, "snap.yml").Jobs[0]
	assert.Equal(t, JobSnap, j.Type)
	require.Len(t, j.Pruning.Keep, 2)
	assert.True(t, j.Pruning.Keep[0].Negate)
	assert.Nil(t, j.Pruning.KeepSender)
	assert.Equal(t, 15*time.Minute, j.Snapshotting.Interval)
}
