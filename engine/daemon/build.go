package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/job"
	"zrepl.dev/zrepl/engine/replication"
	"zrepl.dev/zrepl/engine/replication/planner"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// everyPool tells whether f accepts "<": every filesystem of every pool.
func everyPool(f *config.Filter) bool {
	if f == nil {
		return false
	}
	for _, r := range f.Rules() {
		if r.Accept && r.Path.IsZero() {
			return true
		}
	}
	return false
}

// filterRoots are the datasets f's filesystems are listed from: its
// roots, or the pools imported right now for "<".
func filterRoots(ctx context.Context, z zfs.ZFS, f *config.Filter) ([]zfs.DatasetPath, error) {
	if !everyPool(f) {
		return Roots(f), nil
	}
	pools, err := z.ListPools(ctx)
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	return pools, nil
}

// Roots are the datasets a filter's accepting rules name: where its
// filesystems are listed from. The every-pool filter "<" names none: see
// filterRoots.
func Roots(f *config.Filter) []zfs.DatasetPath {
	if f == nil {
		return nil
	}
	var accepted []zfs.DatasetPath
	for _, r := range f.Rules() {
		if !r.Accept {
			continue
		}
		if r.Path.IsZero() {
			return nil // "<": every pool; the caller lists pools
		}
		accepted = append(accepted, r.Path)
	}
	// Listing a root lists everything below it: drop nested roots,
	// whatever order the rules come in.
	var out []zfs.DatasetPath
	for _, p := range accepted {
		nested := false
		for _, q := range accepted {
			if p != q && p.HasPrefix(q) {
				nested = true
			}
		}
		if !nested && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// sender is the endpoint of a job that sends (push, source, snap).
func sender(z zfs.ZFS, j *config.Job) jobSender {
	return jobSender{
		Sender:    &endpoint.Sender{ZFS: z, Job: j.ID, Filter: j.Filesystems.Match, Roots: Roots(j.Filesystems), Policy: j.Send.Policy},
		filter:    j.Filesystems,
		everyPool: everyPool(j.Filesystems),
	}
}

// jobSender is a job's sender endpoint. With the every-pool filter its
// roots are the pools imported at each listing, so a pool imported while
// the daemon runs is seen at the next run.
type jobSender struct {
	*endpoint.Sender
	// filter is what Sender.Filter matches with.
	filter    *config.Filter
	everyPool bool
}

func (s jobSender) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	if !s.everyPool {
		return s.Sender.ListFilesystems(ctx)
	}
	pools, err := s.ZFS.ListPools(ctx)
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	return s.Sender.ListFilesystemsBelow(ctx, pools)
}

// streamSender is the sender a job's streams come from, under its
// send.bandwidth_limit.
func streamSender(s jobSender, j *config.Job, m *Metrics) limitedSender {
	ls := limitedSender{jobSender: s, b: newBucket(j.Send.BandwidthLimit)}
	if m != nil {
		ls.stepDone = func(took time.Duration) { m.StepDone(j.Name, took) }
	}
	return ls
}

// policy maps an active job's conflict settings to the planner's. The
// send flags are the sending job's (endpoint.Sender.Policy).
func policy(j *config.Job) planner.Policy {
	var p planner.Policy
	switch j.ConflictResolution.InitialReplication {
	case config.InitialAll:
		p.InitialReplication = planner.AllSnapshots
	case config.InitialFail:
		p.InitialReplication = planner.Fail
	}
	return p
}

// protection maps a job's replication.protection to the engine's. The
// active side chooses it; the send request carries it to the sender, so a
// pull job's choice applies on the source too.
func protection(j *config.Job) (replication.Protection, error) {
	initial, err := endpoint.ParseProtection(string(j.Replication.Initial))
	if err != nil {
		return replication.Protection{}, fmt.Errorf("replication.protection.initial: %w", err)
	}
	incremental, err := endpoint.ParseProtection(string(j.Replication.Incremental))
	if err != nil {
		return replication.Protection{}, fmt.Errorf("replication.protection.incremental: %w", err)
	}
	return replication.Protection{Initial: initial, Incremental: incremental}, nil
}

// verifyServerCN checks that the server's chain leads to roots and that
// its leaf certificate's common name is cn.
func verifyServerCN(raw [][]byte, roots *x509.CertPool, cn string) error {
	if len(raw) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, b := range raw {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return fmt.Errorf("tls: server certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("tls: server certificate: %w", err)
	}
	if certs[0].Subject.CommonName != cn {
		return fmt.Errorf("tls: server certificate is for %q, server_cn wants %q", certs[0].Subject.CommonName, cn)
	}
	return nil
}

// StdinserverSocket is where `zrepl stdinserver IDENTITY` finds the daemon.
func StdinserverSocket(g *config.Global, identity string) string {
	return filepath.Join(g.StdinserverSockDir, identity)
}

// onlyIdentity refuses stdinserver connections that claim another
// identity than the one their socket is for.
type onlyIdentity struct {
	transport.Listener
	id       string
	refusals *refusals
}

func (o onlyIdentity) Accept() (*transport.AuthConn, error) {
	for {
		c, err := o.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c.Identity == o.id {
			return c, nil
		}
		c.Close()
		o.refusals.noteClient(c.Identity, refusedIdentity, fmt.Errorf("stdinserver: identity %q on the socket of %q", c.Identity, o.id))
	}
}

// recvProps are a receiving job's recv.properties.
type recvProps struct {
	override map[string]string // zfs recv -o
	inherit  []string          // zfs recv -x
}

func newRecvProps(o config.RecvOptions) recvProps {
	return recvProps{override: o.Override, inherit: o.Inherit}
}

// withRecvOptions applies a receiving job's recv.properties to every
// receive: the receiving side's config decides them, whatever the sender.
// It decorates the receiver's endpoint and keeps its other methods, among
// them pruning under the receiver's rules (endpoint.Pruner).
type withRecvOptions struct {
	rpc.ReceiverEndpoint
	props recvProps
	// limit is the job's recv.bandwidth_limit (nil: none).
	limit *bucket
}

func (r withRecvOptions) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	if len(r.props.override) > 0 {
		props := make(map[string]string, len(r.props.override)+len(req.SetProperties))
		maps.Copy(props, req.SetProperties)
		maps.Copy(props, r.props.override)
		req.SetProperties = props
	}
	if len(r.props.inherit) > 0 {
		req.InheritProperties = append(slices.Clone(req.InheritProperties), r.props.inherit...)
	}
	return r.ReceiverEndpoint.Receive(ctx, req, limitReader(ctx, stream, r.limit))
}

// sinkSpec serves a sink's clients, each below <root_fs>/<identity>,
// with the sink's recv options.
//
// The last-received hold a sink places is named after the sink, not after
// the client's push job, as zrepl does: the hold lives on the sink's host,
// whose daemon knows its own jobs and not the clients', so `holds list
// --job` and release-stale can judge it; and the name stays the same
// whatever the client calls its job. It does not make two holders share
// one: each client has its own area <root_fs>/<identity>, and within an
// area a filesystem has one newest received snapshot whichever push job
// sent it (two push jobs of one identity must send disjoint filesystems,
// or they race on the same receiving filesystem anyway). A renamed sink
// leaves its old holds; release-stale releases those a current job's hold
// supersedes.
type sinkSpec struct {
	name  string
	z     zfs.ZFS
	job   endpoint.JobID
	root  zfs.DatasetPath
	opts  rpc.SinkOptions
	props recvProps
	limit *bucket // shared by all clients: the limit caps the job
	// clients keeps one receiver per client for the sink's lifetime, so
	// that it remembers its listing from one request to the next.
	clients func(identity string) (rpc.ReceiverEndpoint, error)
}

func newSinkSpec(z zfs.ZFS, j *config.Job) *sinkSpec {
	s := &sinkSpec{
		name: j.Name, z: z, job: j.ID, root: j.RootFS,
		opts:  rpc.SinkOptions{Placeholder: placeholderEncryption(j.Recv.Placeholder)},
		props: newRecvProps(j.Recv), limit: newBucket(j.Recv.BandwidthLimit),
	}
	s.clients = rpc.SinkWith(s.z, s.job, s.root, s.opts)
	return s
}

// receiver is the endpoint serving one client.
func (s *sinkSpec) receiver(identity string) (rpc.ReceiverEndpoint, error) {
	r, err := s.local(identity)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (s *sinkSpec) local(identity string) (withRecvOptions, error) {
	ep, err := s.clients(identity)
	if err != nil {
		return withRecvOptions{}, err
	}
	return withRecvOptions{ep, s.props, s.limit}, nil
}

// placeholderEncryption maps recv.placeholder.encryption to the
// receiver's setting. The parser fills in unspecified; a Job built without
// the parser (empty value) gets the same default.
func placeholderEncryption(p config.PlaceholderEncryption) endpoint.PlaceholderEncryption {
	switch p {
	case config.PlaceholderOff:
		return endpoint.PlaceholderOff
	case config.PlaceholderInherit:
		return endpoint.PlaceholderInherit
	}
	return endpoint.PlaceholderUnspecified
}

// newClient is an rpc client on a job's dial spec.
func newClient(s *dialSpec) (*rpc.Client, error) {
	d, err := s.dialer()
	if err != nil {
		return nil, err
	}
	return rpc.NewClient(rpc.ClientConfig{Dial: d})
}

// Every side a job prunes is its endpoint (or a decorator of it) and
// prunes under the endpoint's rules: a job's own sender (snap, push), a
// local source's sender (pull), a sink's receiver (push, pull), and the
// remote ones over rpc.
var (
	_ job.PruneTarget = jobSender{}
	_ job.PruneTarget = limitedSender{}
	_ job.PruneTarget = withRecvOptions{}
	_ job.PruneTarget = (*rpc.RemoteSender)(nil)
	_ job.PruneTarget = (*rpc.RemoteReceiver)(nil)
)
