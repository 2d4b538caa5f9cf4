package rpc

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/twohost"
)

// Pushes and pulls over a simulated network with seeded random faults (resets,
// stalls, half-open connections, partitions, refused dials): every run
// ends (none hangs), and once the faults are spent a run replicates
// everything correctly. Runs in virtual time; a failure names its seed
// and fault plan.
func TestReplicationUnderRandomFaults(t *testing.T) {
	seeds := 30
	if testing.Short() {
		seeds = 5
	}
	for _, dir := range []string{"push", "pull"} {
		for seed := int64(1); seed <= int64(seeds); seed++ {
			t.Run(fmt.Sprintf("%s/%d", dir, seed), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) { replicateUnderFaults(t, dir, seed) })
			})
		}
	}
}

func replicateUnderFaults(t *testing.T, dir string, seed int64) {
	h := newHosts(t)
	h.create("src/data/a")
	h.create("src/data/b")
	h.writeSnap("src/data/a", 1, 16, "s1")
	h.writeSnap("src/data/b", 2, 16, "s1")
	h.writeSnap("src/data/a", 3, 8, "s2")
	full := fullSize(t, h, "src/data/b")

	w, err := twohost.New(seed, netsim.Link{Latency: 20 * time.Millisecond, Bandwidth: 2 << 20}, "sink", "laptop", 7000)
	require.NoError(t, err)
	plan, err := netsim.GeneratePlan(seed, netsim.PlanConfig{
		Faults: 3, Conns: 10, MaxByte: full, MaxStall: 3 * time.Minute,
		Hosts: []string{"laptop", "sink"}, Horizon: 20 * time.Second, MaxPartition: 3 * time.Minute,
	})
	require.NoError(t, err)
	require.NoError(t, w.Net.Schedule(plan))
	l, err := w.Listen("alice")
	require.NoError(t, err)
	cfg := ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))}
	dstRoot := "dst/sinks/alice"
	if dir == "pull" {
		cfg = ServerConfig{Sender: Source(h.sender)}
		dstRoot = "dst/pulled"
	}
	srv := newServer(t, cfg)
	defer twohost.Serve(srv, l).Stop()
	c := newClient(t, ClientConfig{Dial: w.Dialer()})
	var sender replication.Sender = h.sender
	var receiver replication.Receiver = c.Receiver()
	if dir == "pull" {
		sender = c.Sender()
		receiver = &endpoint.Receiver{ZFS: h.dst, Job: h.job, Root: zfs.MustDatasetPath("dst/pulled")}
	}

	var last replication.Report
	for run := 1; ; run++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
		last = replication.NewRun(sender, receiver, replication.Config{}).Do(ctx)
		hung := ctx.Err() != nil
		cancel()
		if hung {
			t.Fatalf("run %d did not end within 2 hours (virtual): %+v\n%v\n%s", run, last, plan, w.Net.TraceString())
		}
		if last.Err() == nil {
			t.Logf("replicated in run %d, attempt %d", run, last.Attempts)
			break
		}
		t.Logf("run %d failed: %v", run, last.Err())
		// A partition of minutes outlasts the half minute of retries in a run.
		if run == 8 {
			t.Fatalf("still failing after %d runs: %v\n%v\n%s", run, last.Err(), plan, w.Net.TraceString())
		}
	}
	h.assertReplicated("src/data/a", dstRoot+"/src/data/a", "s2") // a new job starts with the newest
	h.assertReplicated("src/data/b", dstRoot+"/src/data/b", "s1")
}
