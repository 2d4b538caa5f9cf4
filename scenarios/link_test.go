package scenarios

import (
	"strings"
	"time"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/sshproc"
	"zrepl.dev/zrepl/netsim/twohost"
)

// link is one replicate action's network: the server of the job's pair
// (the sink on the receiver host for a push, the source on the sender
// host for a pull) and its client on the other host, over a fresh seeded
// netsim.
type link struct {
	n       *netsim.Network
	serving *twohost.Serving
	client  *rpc.Client
	ssh     *sshLink // nil without the ssh transport
}

// controlReset reports whether the network reset connection 1, the
// control connection (the first listing dials it).
func (lk *link) controlReset() bool {
	for _, e := range lk.n.Trace() {
		if strings.HasPrefix(e.Msg, "conn#1 ") && strings.Contains(e.Msg, ": reset at byte") {
			return true
		}
	}
	return false
}

// linkOpts shape a run's network beyond its fault plan.
type linkOpts struct {
	plan netsim.FaultPlan
	// bandwidth of the links in bytes per second (0: 64 MiB/s).
	bandwidth int64
	// ssh: the client connects as over the ssh transport, one simulated
	// ssh process per connection; victim is the number (from 0, in the
	// order they start) of the process that runs script, the others run
	// until the server closes their connection.
	ssh    bool
	victim int
	script netsim.ProcessScript
}

// hosts are the server's and the client's host for j.
func (j job) hosts() (server, client string) {
	if j.pull {
		return senderHost, sinkHost
	}
	return sinkHost, senderHost
}

func (w *world) connect(t *rapid.T, j job, seed int64, o linkOpts) *link {
	bw := o.bandwidth
	if bw == 0 {
		bw = 64 << 20
	}
	serverHost, clientHost := j.hosts()
	port := 7000
	if o.ssh {
		port = 22
	}
	hosts, err := twohost.New(seed, netsim.Link{Latency: 2 * time.Millisecond, Bandwidth: bw, Buffer: 64 << 10}, serverHost, clientHost, port)
	must(t, err)
	must(t, hosts.Net.Schedule(o.plan))
	l, err := hosts.Listen(j.identity)
	must(t, err)
	cfg := rpc.ServerConfig{Receiver: rpc.Sink(w.dst, sinkJob, zfs.MustDatasetPath(sinkRoot))}
	if j.pull {
		cfg = rpc.ServerConfig{Sender: rpc.Source(w.sender(j))}
	}
	srv, err := rpc.NewServer(cfg)
	must(t, err)
	lk := &link{n: hosts.Net, serving: twohost.Serve(srv, l)}
	var dial transport.Dialer
	if o.ssh {
		victim, script := o.victim, o.script
		lk.ssh = &sshLink{victim: victim, Starter: hosts.SSH(func(i int) netsim.ProcessScript {
			if i == victim {
				return script
			}
			return netsim.ProcessScript{}
		})}
		dial = lk.ssh.Dialer()
	} else {
		dial = hosts.Dialer()
	}
	lk.client, err = rpc.NewClient(rpc.ClientConfig{Dial: dial})
	must(t, err)
	return lk
}

// endpoints are what the job's run talks to: the local side directly, the
// remote side through the link's client.
func (w *world) endpoints(j job, lk *link) (replication.Sender, replication.Receiver) {
	if j.pull {
		return lk.client.Sender(), &endpoint.Receiver{ZFS: w.dst, Job: j.recv, Root: j.root()}
	}
	return w.sender(j), lk.client.Receiver()
}

func (lk *link) close() {
	_ = lk.client.Close()
	_ = lk.serving.Stop()
	if lk.ssh != nil {
		lk.ssh.Wait()
	}
	_ = lk.n.Close()
}

// sshLink is a link's simulated ssh processes; the victim's is scripted.
type sshLink struct {
	*sshproc.Starter
	victim int
}

// victimStatus is the scripted process's exit status, or -2 if it has
// not exited (or never started).
func (s *sshLink) victimStatus() int { return s.Status(s.victim) }
