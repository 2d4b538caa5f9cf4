package scenarios

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
)

// scripted runs body once, with a *rapid.T for the world's methods, in a
// synctest bubble of its own. Its draws (a fault's parameters) are random:
// body must hold for every value they can take.
func scripted(t *testing.T, body func(rt *rapid.T)) {
	setFlag(t, "rapid.checks", "1")
	setFlag(t, "rapid.nofailfile", "true")
	rapid.Check(t, func(rt *rapid.T) {
		var failure any
		t.Run("bubble", func(t *testing.T) {
			synctest.Test(t, func(*testing.T) {
				defer func() { failure = recover() }()
				body(rt)
			})
		})
		if failure != nil {
			panic(failure)
		}
	})
}

// The control connection dies mid-send (a reset, as the GOAWAY
// too_many_pings of a misconfigured keepalive once killed it): the send
// flows on its own data connection and is not cut; the run either
// completes or fails temporarily at a call on the control connection, and
// the next run completes without sending the data again. For a push and
// for a pull.
func TestKeepaliveMisconfigurationResumes(t *testing.T) {
	for _, j := range []job{jobs[0], jobs[2]} {
		t.Run(j.GoString(), func(t *testing.T) {
			scripted(t, func(rt *rapid.T) {
				w := newWorld(rt)
				fs := "src/data"
				// 5 MiB over at most 8 KiB/s: over ten minutes.
				must(rt, w.src.WriteData(zfs.MustDatasetPath(fs), 1, 40))
				must(rt, w.src.Snapshot(bg, zfs.MustDatasetPath(fs), "s1"))
				v := snapshots(versionsOf(rt, w.src, fs))[0]
				w.sum[v.GUID] = (&checksummer{w: w, m: w.src}).sum(rt, v.Ref(zfs.MustDatasetPath(fs)))
				w.created[fs] = []uint64{v.GUID}

				goaways := stats.goaways.Load()
				rep := w.run(rt, j, "keepalive", 1, 1, 1)
				w.persist(rt)
				w.check(rt)
				if stats.goaways.Load() == goaways {
					rt.Fatalf("the control connection was not killed")
				}
				// A reset within the first listing fails the run before
				// it reaches the filesystem.
				for _, f := range rep.Filesystems {
					if f.Err != nil && (f.Permanent || errors.Is(f.Err, rpc.ErrTruncated)) {
						rt.Fatalf("the run whose control connection died: %s ended %s (permanent %v): %v, want done or a temporary failure that cut no stream", f.FS, f.State, f.Permanent, f.Err)
					}
				}

				rep = w.run(rt, j, "none", 2, 1, 1)
				w.persist(rt)
				w.check(rt)
				if f := fsReport(rt, rep, fs); f.State != replication.FSDone && f.State != replication.FSUpToDate {
					rt.Fatalf("the next run: %s ended %s: %v", fs, f.State, f.Err)
				}
			})
		})
	}
}

func fsReport(rt *rapid.T, rep *replication.Report, fs string) replication.FSReport {
	if rep == nil {
		rt.Fatalf("no report")
	}
	for _, f := range rep.Filesystems {
		if f.FS == fs {
			return f
		}
	}
	rt.Fatalf("%s not in the report %v", fs, fmt.Sprint(rep.Filesystems))
	return replication.FSReport{}
}

// ssh exits with 255 in the middle of a send stream (for a push while the
// stream goes into its stdin, for a pull while it comes out of its
// stdout): the run fails with an error naming ssh's exit status and
// complaint, leaves partial state, and the next run resumes it.
func TestSSHExitResumes(t *testing.T) {
	const complaint = "client_loop: send disconnect: Broken pipe"
	for _, j := range []job{jobs[0], jobs[2]} {
		t.Run(j.GoString(), func(t *testing.T) {
			scripted(t, func(rt *rapid.T) {
				w := newWorld(rt)
				fs := "src/data"
				must(rt, w.src.WriteData(zfs.MustDatasetPath(fs), 1, 16))
				must(rt, w.src.Snapshot(bg, zfs.MustDatasetPath(fs), "s1"))
				v := snapshots(versionsOf(rt, w.src, fs))[0]
				w.sum[v.GUID] = (&checksummer{w: w, m: w.src}).sum(rt, v.Ref(zfs.MustDatasetPath(fs)))
				w.created[fs] = []uint64{v.GUID}

				// Process 0 carries the control connection, 1 the first
				// data connection.
				opts := linkOpts{ssh: true, victim: 1}
				if j.pull {
					opts.script = netsim.ProcessScript{Exit: netsim.ExitAfterStdout, StdoutBytes: 1 << 20, Status: 255, Stderr: complaint + "\r\n"}
				} else {
					opts.script = netsim.ProcessScript{Exit: netsim.ExitAfterStdin, StdinBytes: 1 << 20, Status: 255, Stderr: complaint + "\r\n"}
				}
				lk := w.connect(rt, j, 1, opts)
				snd, rcv := w.endpoints(j, lk)
				rep := replication.NewRun(snd, rcv, replication.Config{MaxAttempts: 1, Now: w.clock}).Do(bg)
				status := lk.ssh.victimStatus()
				lk.close()
				w.persist(rt)
				w.check(rt)
				if status != 255 {
					rt.Fatalf("the data connection's ssh process: status %d, want 255", status)
				}
				f := fsReport(rt, &rep, fs)
				if f.Err == nil || f.Permanent || !strings.Contains(f.Err.Error(), "ssh exited with status 255: "+complaint) {
					rt.Fatalf("the run whose ssh died: %s ended %s (permanent %v): %v, want a temporary failure naming ssh's exit", fs, f.State, f.Permanent, f.Err)
				}
				if resumeToken(rt, w.dst, j.dstFS(fs)) == "" {
					rt.Fatalf("no partial receive state left to resume")
				}

				resumes := stats.resumes.Load()
				next := w.run(rt, j, "none", 2, 1, 1)
				w.persist(rt)
				w.check(rt)
				if f := fsReport(rt, next, fs); f.State != replication.FSDone {
					rt.Fatalf("the next run: %s ended %s: %v", fs, f.State, f.Err)
				}
				if stats.resumes.Load() == resumes {
					rt.Fatalf("the next run sent %s anew instead of resuming", fs)
				}
			})
		})
	}
}
