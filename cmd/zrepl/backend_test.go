package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
	"zrepl.dev/zrepl/zfsmodel"
)

// What saving every change of the model backend costs: replication runs
// of one incremental step each (1 MiB of new data, a snapshot, the step's
// holds, bookmarks and last-received hold), on the bare model and on the
// model as the daemon runs it (Durable, saving to a file with fsync), in
// the same run. Reported: the time ratio and the saves per step.
func BenchmarkModelSaveEveryChange(b *testing.B) {
	const blocks = 8 // 1 MiB per step
	setup := func(b *testing.B, durable bool) (func(i int), func() int64) {
		m := zfsmodel.New(zfsmodel.Options{Seed: 1})
		require.NoError(b, m.CreatePool("pool"))
		require.NoError(b, m.CreatePool("backup"))
		fs := zfs.MustDatasetPath("pool/data")
		require.NoError(b, m.CreateFilesystem(fs, zfsmodel.FSOptions{}))
		require.NoError(b, m.WriteData(fs, 0, 64))
		var z zfs.ZFS = m
		saves := func() int64 { return 0 }
		if durable {
			s := &modelSaver{m: m, dir: b.TempDir()}
			d := daemon.NewDurable(m, s.save)
			z, saves = d, d.Saves
		}
		job := endpoint.MustJobID("bench")
		snd := &endpoint.Sender{ZFS: z, Job: job, Filter: func(p zfs.DatasetPath) bool { return p == fs }, Roots: []zfs.DatasetPath{fs}}
		rcv := &endpoint.Receiver{ZFS: z, Job: job, Root: zfs.MustDatasetPath("backup")}
		step := func(i int) {
			ctx := context.Background()
			require.NoError(b, m.WriteData(fs, int64(i), blocks))
			require.NoError(b, z.Snapshot(ctx, fs, fmt.Sprintf("s%06d", i)))
			rep := replication.NewRun(snd, rcv, replication.Config{}).Do(ctx)
			require.NoError(b, rep.Err())
		}
		step(-1) // the full send, outside the measurement
		return step, saves
	}
	measure := func(b *testing.B, durable bool) (time.Duration, float64) {
		step, saves := setup(b, durable)
		before := saves()
		start := time.Now()
		for i := range b.N {
			step(i)
		}
		return time.Since(start), float64(saves()-before) / float64(b.N)
	}
	b.StopTimer()
	bare, _ := measure(b, false)
	b.StartTimer()
	took, savesPerStep := measure(b, true)
	b.StopTimer()
	b.ReportMetric(float64(took)/float64(bare), "durable/bare")
	b.ReportMetric(savesPerStep, "saves/step")
	b.ReportMetric(float64(took-bare)/float64(b.N)/savesPerStep/1e6, "ms/save")
}

// killAt hands out a stream until at bytes, then reads the state the
// daemon saved so far (what a kill -9 there would leave) and ends the
// stream.
type killAt struct {
	r     io.Reader
	at, n int64
	dir   string
	seen  *zfsmodel.Model
}

func (k *killAt) Read(p []byte) (int, error) {
	if k.n >= k.at {
		if k.seen == nil {
			f, err := os.Open(filepath.Join(k.dir, modelStateFile))
			if err != nil {
				return 0, err
			}
			defer f.Close()
			if k.seen, err = zfsmodel.Load(f, zfsmodel.Options{}); err != nil {
				return 0, err
			}
		}
		return 0, io.ErrUnexpectedEOF
	}
	n, err := k.r.Read(p[:min(int64(len(p)), k.at-k.n)])
	k.n += int64(n)
	return n, err
}

// The model backend saves a receive's partial state while the stream
// runs (every global.model_checkpoint_every), so the state on disk in the
// middle of a stream has a resume token at most that far behind; with 0 B
// it has nothing of the receive.
func TestModelBackendSavesCheckpoints(t *testing.T) {
	src := zfsmodel.New(zfsmodel.Options{Seed: 2})
	require.NoError(t, src.CreatePool("pool"))
	fs := zfs.MustDatasetPath("pool/data")
	require.NoError(t, src.CreateFilesystem(fs, zfsmodel.FSOptions{}))
	require.NoError(t, src.WriteData(fs, 1, 40)) // 5 MiB
	require.NoError(t, src.Snapshot(context.Background(), fs, "s"))
	vs, err := src.ListVersions(context.Background(), fs)
	require.NoError(t, err)
	const every, at = 1 << 20, 3<<20 + 1000
	for _, size := range []string{"1 MiB", "0 B"} {
		t.Run("every="+size, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := config.Parse([]byte(fmt.Sprintf(`
global: {zfs_backend: model, model_state_dir: %s, model_checkpoint_every: %s}
jobs:
  - {name: s, type: sink, serve: {type: local, listener_name: s}, root_fs: backup}
`, dir, size)))
			require.NoError(t, err)
			b, err := openBackend(cfg, slog.New(slog.DiscardHandler), false)
			require.NoError(t, err)
			stream, err := src.Send(context.Background(), zfs.SendArgs{FS: fs, To: vs[0]})
			require.NoError(t, err)
			defer stream.Close()
			k := &killAt{r: stream, at: at, dir: dir}
			target := zfs.MustDatasetPath("backup/data")
			err = b.zfs.Receive(context.Background(), target, k, zfs.RecvOptions{Resumable: true})
			require.ErrorIs(t, err, zfs.ErrPartialReceive)
			require.NotNil(t, k.seen, "the stream reached the kill")
			info, ierr := k.seen.Info(target)
			if size == "0 B" {
				require.ErrorIs(t, ierr, zfs.ErrDatasetNotExist, "without checkpoints a kill keeps nothing of the receive")
				return
			}
			require.NoError(t, ierr)
			require.NotEmpty(t, info.ReceiveResumeToken, "saved mid-stream")
			tok, err := resumetoken.Decode(info.ReceiveResumeToken)
			require.NoError(t, err)
			assert.Greater(t, int64(tok.Bytes), int64(at-every-zfsmodel.BlockSize), "at most a checkpoint interval and a record behind")
		})
	}
	t.Run("default", func(t *testing.T) {
		cfg, err := config.Parse([]byte(fmt.Sprintf(`
global: {zfs_backend: model, model_state_dir: %s}
jobs:
  - {name: s, type: sink, serve: {type: local, listener_name: s}, root_fs: backup}
`, t.TempDir())))
		require.NoError(t, err)
		b, err := openBackend(cfg, slog.New(slog.DiscardHandler), false)
		require.NoError(t, err)
		assert.Equal(t, int64(config.DefaultModelCheckpointEvery), b.checkpointEvery)
	})
}

// What the model backend's receive checkpoints cost: a resumable full
// receive of 256 MiB into a daemon's model (Durable, saving to a file with
// fsync) with a checkpoint every config.DefaultModelCheckpointEvery, against the same
// receive without checkpoints, in the same run. Reported: the time ratio,
// the saves per GiB streamed and the time per checkpoint save.
func BenchmarkModelReceiveCheckpoints(b *testing.B) {
	const blocks = 2048 // 256 MiB
	src := zfsmodel.New(zfsmodel.Options{Seed: 2})
	require.NoError(b, src.CreatePool("pool"))
	fs := zfs.MustDatasetPath("pool/data")
	require.NoError(b, src.CreateFilesystem(fs, zfsmodel.FSOptions{}))
	require.NoError(b, src.WriteData(fs, 1, blocks))
	require.NoError(b, src.Snapshot(context.Background(), fs, "s"))
	vs, err := src.ListVersions(context.Background(), fs)
	require.NoError(b, err)
	var streamBytes int64
	measure := func(b *testing.B, every int64) (time.Duration, int64) {
		var took time.Duration
		var saves int64
		for range b.N {
			var d *daemon.Durable
			m := zfsmodel.New(zfsmodel.Options{Seed: 3, CheckpointEvery: every, OnCheckpoint: func() {
				require.NoError(b, d.Checkpoint())
			}})
			require.NoError(b, m.CreatePool("backup"))
			s := &modelSaver{m: m, dir: b.TempDir()}
			d = daemon.NewDurable(m, s.save)
			stream, err := src.Send(context.Background(), zfs.SendArgs{FS: fs, To: vs[0]})
			require.NoError(b, err)
			c := &countingReader{r: stream}
			start := time.Now()
			require.NoError(b, d.Receive(context.Background(), zfs.MustDatasetPath("backup/data"), c, zfs.RecvOptions{Resumable: true}))
			took += time.Since(start)
			saves += d.Saves()
			streamBytes = c.n
			stream.Close()
		}
		return took, saves
	}
	b.StopTimer()
	bare, bareSaves := measure(b, 0)
	b.StartTimer()
	took, saves := measure(b, config.DefaultModelCheckpointEvery)
	b.StopTimer()
	ckSaves := saves - bareSaves
	b.ReportMetric(float64(took)/float64(bare), "checkpoints/none")
	b.ReportMetric(float64(ckSaves)/float64(b.N)*float64(1<<30)/float64(streamBytes), "ckpt-saves/GiB")
	if ckSaves > 0 {
		b.ReportMetric(float64(took-bare)/float64(ckSaves)/1e6, "ms/save")
	}
	b.ReportMetric(float64(streamBytes)*float64(b.N)/bare.Seconds()/(1<<20), "MiB/s-none")
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
