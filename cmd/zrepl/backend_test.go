package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/daemon"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
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
