package netsim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	networkName    = "netsim"
	firstEphemeral = 49152
	backlogSize    = 128
)

func itoa(i int) string { return strconv.Itoa(i) }

// Addr is a host and port on a simulated network.
type Addr struct {
	Host string
	Port int
}

// Network returns "netsim", so nobody mistakes it for a real TCP address.
func (a Addr) Network() string { return networkName }

// String returns "host:port".
func (a Addr) String() string { return net.JoinHostPort(a.Host, strconv.Itoa(a.Port)) }

// Link describes one direction between two hosts.
type Link struct {
	// Latency is the one-way delay of every byte.
	Latency time.Duration
	// Jitter adds a random delay in [0, Jitter) per packet, drawn from a
	// generator seeded by the network seed and the connection number.
	// Bytes still arrive in order.
	Jitter time.Duration
	// Bandwidth limits the link to this many bytes per second; 0 is unlimited.
	Bandwidth int64
	// Buffer bounds the bytes written but not yet read; 0 means DefaultBuffer.
	Buffer int
}

func (l Link) validate() error {
	switch {
	case l.Latency < 0:
		return fmt.Errorf("netsim: link latency %v is negative", l.Latency)
	case l.Jitter < 0:
		return fmt.Errorf("netsim: link jitter %v is negative", l.Jitter)
	case l.Bandwidth < 0:
		return fmt.Errorf("netsim: link bandwidth %d is negative", l.Bandwidth)
	case l.Buffer < 0:
		return fmt.Errorf("netsim: link buffer %d is negative", l.Buffer)
	}
	return nil
}

// Event is one entry of the network's trace: a connection, a refused dial or
// a fault that fired, at a time relative to the network's creation.
type Event struct {
	At  time.Duration
	Msg string
}

func (e Event) String() string { return fmt.Sprintf("+%v %s", e.At, e.Msg) }

type partition struct {
	id         int
	a, b       string
	start, end time.Time
}

func (pt *partition) between(x, y string) bool {
	return (pt.a == x && pt.b == y) || (pt.a == y && pt.b == x)
}

type refusal struct {
	from, to string
	count    int
}

// Network is a simulated network of named hosts. Its zero value is not
// usable; create one with New.
type Network struct {
	seed  int64
	start time.Time

	mu          sync.Mutex
	defLink     Link
	links       map[[2]string]Link
	hosts       map[string]int // host -> next ephemeral port
	listeners   map[Addr]*Listener
	pipes       []*pipe
	dials       int
	partitions  []*partition
	refusals    []refusal
	planConn    map[int][]Fault
	planRefused map[int]bool

	traceMu sync.Mutex
	trace   []Event
}

// New creates an empty network. The seed drives everything random about it
// (link jitter); fault plans are generated separately (GeneratePlan) and
// given to Schedule. Times in the trace are relative to this call.
func New(seed int64) *Network {
	return &Network{
		seed:        seed,
		start:       time.Now(),
		links:       map[[2]string]Link{},
		hosts:       map[string]int{},
		listeners:   map[Addr]*Listener{},
		planConn:    map[int][]Fault{},
		planRefused: map[int]bool{},
	}
}

// Seed returns the seed the network was created with.
func (n *Network) Seed() int64 { return n.seed }

func validHost(h string) error {
	if h == "" {
		return errors.New("netsim: empty host name")
	}
	if strings.ContainsAny(h, ": \t\r\n") {
		return fmt.Errorf("netsim: invalid host name %q", h)
	}
	return nil
}

// AddHost makes a host known, so that dials to it resolve (and are refused
// where nothing listens) instead of failing as an unknown host.
func (n *Network) AddHost(name string) error {
	if err := validHost(name); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addHostLocked(name)
	return nil
}

func (n *Network) addHostLocked(name string) {
	if _, ok := n.hosts[name]; !ok {
		n.hosts[name] = firstEphemeral
	}
}

// SetDefaultLink sets the link used between hosts without their own.
// It applies to connections dialed afterwards.
func (n *Network) SetDefaultLink(l Link) error {
	if err := l.validate(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.defLink = l
	return nil
}

// SetLink sets the link from one host to another (one direction). It applies
// to new connections and to the bytes established ones write from now on.
func (n *Network) SetLink(from, to string, l Link) error {
	if err := l.validate(); err != nil {
		return err
	}
	if err := validHost(from); err != nil {
		return err
	}
	if err := validHost(to); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.links[[2]string{from, to}] = l
	for _, p := range n.pipes {
		for side := 0; side < 2; side++ {
			if p.addr[side].Host == from && p.addr[1-side].Host == to {
				p.mu.Lock()
				p.s[side].setLink(l)
				p.mu.Unlock()
			}
		}
	}
	return nil
}

func (n *Network) linkLocked(from, to string) Link {
	if l, ok := n.links[[2]string{from, to}]; ok {
		return l
	}
	return n.defLink
}

func (n *Network) record(now time.Time, format string, args ...any) {
	n.traceMu.Lock()
	defer n.traceMu.Unlock()
	n.trace = append(n.trace, Event{At: now.Sub(n.start), Msg: fmt.Sprintf(format, args...)})
}

// Trace returns what happened so far: connections, refusals, faults. Events
// of one instant are sorted by text: goroutines running at the same virtual
// instant have no meaningful order, and a canonical one keeps traces of
// the same seed comparable.
func (n *Network) Trace() []Event {
	n.traceMu.Lock()
	ev := append([]Event(nil), n.trace...)
	n.traceMu.Unlock()
	sort.SliceStable(ev, func(i, j int) bool {
		if ev[i].At != ev[j].At {
			return ev[i].At < ev[j].At
		}
		return ev[i].Msg < ev[j].Msg
	})
	return ev
}

// TraceString returns the trace one event per line, for test logs.
func (n *Network) TraceString() string {
	var b strings.Builder
	for _, e := range n.Trace() {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Stats returns the byte counts of every connection ever made, by ID.
func (n *Network) Stats() []ConnStats {
	n.mu.Lock()
	pipes := append([]*pipe(nil), n.pipes...)
	n.mu.Unlock()
	out := make([]ConnStats, len(pipes))
	for i, p := range pipes {
		out[i] = p.stats()
	}
	return out
}

// Conn returns both ends of connection id (the number of the Dial that made
// it), so tests can inject faults into connections that library code dialed
// out of their reach (grpc's, for example).
func (n *Network) Conn(id int) (client, server *Conn, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.pipes {
		if p.id == id {
			return &Conn{p: p, side: 0}, &Conn{p: p, side: 1}, true
		}
	}
	return nil, nil, false
}

// Listener accepts simulated connections. It implements net.Listener.
type Listener struct {
	n       *Network
	addr    Addr
	backlog chan *Conn
	done    chan struct{}
	closed  bool // guarded by n.mu
}

var _ net.Listener = (*Listener)(nil)

// Listen listens on host:port; port 0 picks a free ephemeral port.
func (n *Network) Listen(host string, port int) (*Listener, error) {
	if err := validHost(host); err != nil {
		return nil, err
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("netsim: listen on %s: port %d out of range", host, port)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addHostLocked(host)
	if port == 0 {
		port = n.ephemeralLocked(host)
	}
	a := Addr{Host: host, Port: port}
	if _, busy := n.listeners[a]; busy {
		return nil, &net.OpError{Op: "listen", Net: networkName, Addr: a, Err: sysErr("bind", syscall.EADDRINUSE)}
	}
	l := &Listener{n: n, addr: a, backlog: make(chan *Conn, backlogSize), done: make(chan struct{})}
	n.listeners[a] = l
	return l, nil
}

// ephemeralLocked hands out the host's next free port (wrapping in the
// ephemeral range, skipping listening ports).
func (n *Network) ephemeralLocked(host string) int {
	for {
		p := n.hosts[host]
		next := p + 1
		if next > 65535 {
			next = firstEphemeral
		}
		n.hosts[host] = next
		if _, busy := n.listeners[Addr{host, p}]; !busy {
			return p
		}
	}
}

// Accept waits for the next connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, l.closedErr()
	default:
	}
	select {
	case c := <-l.backlog:
		return c, nil
	case <-l.done:
		return nil, l.closedErr()
	}
}

func (l *Listener) closedErr() error {
	return &net.OpError{Op: "accept", Net: networkName, Addr: l.addr, Err: net.ErrClosed}
}

// Close stops listening; connections not yet accepted are reset.
func (l *Listener) Close() error {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	if l.closed {
		return &net.OpError{Op: "close", Net: networkName, Addr: l.addr, Err: net.ErrClosed}
	}
	l.closed = true
	delete(l.n.listeners, l.addr)
	close(l.done)
	for {
		select {
		case c := <-l.backlog:
			c.Reset()
		default:
			return nil
		}
	}
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.addr }

// DialFunc returns a dial function for host from, in the shape grpc's
// WithContextDialer and similar hooks take.
func (n *Network) DialFunc(from string) func(ctx context.Context, address string) (net.Conn, error) {
	return func(ctx context.Context, address string) (net.Conn, error) {
		return n.Dial(ctx, from, address)
	}
}

// Dial connects from host `from` to address "host:port". It takes one round
// trip of the links' latency. It fails with syscall.ECONNREFUSED where
// nothing listens or a refusal is scheduled, with syscall.EHOSTUNREACH while
// the hosts are partitioned, and with a *net.DNSError for unknown hosts.
func (n *Network) Dial(ctx context.Context, from, address string) (net.Conn, error) {
	c, err := n.dial(ctx, from, address, nil)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// dial connects from to address. setup, if not nil, sees the client end
// before the server end is handed to the listener, so that what it
// installs (a process's exit trigger) is in place before the server can
// write a byte.
func (n *Network) dial(ctx context.Context, from, address string, setup func(client *Conn)) (*Conn, error) {
	if err := validHost(from); err != nil {
		return nil, dialErr(nil, nil, err)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, dialErr(nil, nil, fmt.Errorf("netsim: bad address %q: %w", address, err))
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return nil, dialErr(nil, nil, fmt.Errorf("netsim: bad port in address %q", address))
	}
	dst := Addr{Host: host, Port: port}

	n.mu.Lock()
	now := time.Now()
	n.dials++
	id := n.dials
	if _, ok := n.hosts[host]; !ok {
		n.mu.Unlock()
		n.record(now, "dial#%d %s -> %s: no such host", id, from, address)
		return nil, dialErr(nil, dst, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true})
	}
	n.addHostLocked(from)
	src := Addr{Host: from, Port: n.ephemeralLocked(from)}
	up, down := n.linkLocked(from, host), n.linkLocked(host, from)
	if n.partitionedLocked(from, host, now) {
		n.mu.Unlock()
		n.record(now, "dial#%d %s -> %s: unreachable (partition)", id, src, dst)
		return nil, dialErr(src, dst, sysErr("connect", syscall.EHOSTUNREACH))
	}
	refused := n.planRefused[id] || n.consumeRefusalLocked(from, host)
	n.mu.Unlock()

	if err := sleepCtx(ctx, up.Latency+down.Latency); err != nil {
		n.record(time.Now(), "dial#%d %s -> %s: %v", id, src, dst, err)
		return nil, dialErr(src, dst, err)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	now = time.Now()
	l := n.listeners[dst]
	if refused || l == nil || l.closed {
		why := "nothing listening"
		if refused {
			why = "refusal scheduled"
		}
		n.record(now, "dial#%d %s -> %s: refused (%s)", id, src, dst, why)
		return nil, dialErr(src, dst, sysErr("connect", syscall.ECONNREFUSED))
	}
	p := n.newPipeLocked(id, src, dst, up, down, now)
	client := &Conn{p: p, side: 0}
	if setup != nil {
		setup(client)
	}
	// The planned faults go in before the server end exists: a server that
	// accepts and writes at once must not get bytes past a fault's offset.
	for _, f := range n.planConn[id] {
		n.applyConnFaultLocked(p, f)
	}
	select {
	case l.backlog <- &Conn{p: p, side: 1}:
	default:
		n.record(now, "dial#%d %s -> %s: refused (backlog full)", id, src, dst)
		return nil, dialErr(src, dst, sysErr("connect", syscall.ECONNREFUSED))
	}
	n.pipes = append(n.pipes, p)
	n.record(now, "conn#%d %s -> %s established", id, src, dst)
	return client, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (n *Network) newPipeLocked(id int, src, dst Addr, up, down Link, now time.Time) *pipe {
	mk := func(l Link, dir Dir) *stream {
		return &stream{link: l, jitBlock: -1, rng: rand.New(rand.NewPCG(uint64(n.seed), uint64(id)<<1|uint64(dir)))}
	}
	p := &pipe{n: n, id: id, addr: [2]Addr{src, dst}, changed: make(chan struct{})}
	p.s[Up], p.s[Down] = mk(up, Up), mk(down, Down)
	for _, pt := range n.partitions {
		if pt.between(src.Host, dst.Host) && pt.end.After(now) {
			for _, s := range p.s {
				s.windows = append(s.windows, window{start: pt.start, end: pt.end, partition: pt.id})
			}
		}
	}
	return p
}

func (n *Network) partitionedLocked(a, b string, now time.Time) bool {
	for _, pt := range n.partitions {
		if pt.between(a, b) && !now.Before(pt.start) && now.Before(pt.end) {
			return true
		}
	}
	return false
}

func (n *Network) consumeRefusalLocked(from, to string) bool {
	for i := range n.refusals {
		r := &n.refusals[i]
		if r.count > 0 && r.from == from && r.to == to {
			r.count--
			return true
		}
	}
	return false
}

// RefuseDials makes the next count dials from one host to another fail with
// connection refused, whether or not something listens.
func (n *Network) RefuseDials(from, to string, count int) error {
	if err := validHost(from); err != nil {
		return err
	}
	if err := validHost(to); err != nil {
		return err
	}
	if count < 0 {
		return fmt.Errorf("netsim: refusal count %d is negative", count)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.refusals = append(n.refusals, refusal{from: from, to: to, count: count})
	return nil
}

// Partition cuts hosts a and b apart for d, starting now: dials between them
// fail as unreachable and established connections make no progress; what
// was sent arrives when the partition heals.
func (n *Network) Partition(a, b string, d time.Duration) error {
	return n.addPartition(a, b, 0, d, true)
}

func (n *Network) addPartition(a, b string, at, d time.Duration, fromNow bool) error {
	if err := validHost(a); err != nil {
		return err
	}
	if err := validHost(b); err != nil {
		return err
	}
	if a == b {
		return fmt.Errorf("netsim: cannot partition host %q from itself", a)
	}
	if d <= 0 {
		return fmt.Errorf("netsim: partition %s|%s duration %v is not positive", a, b, d)
	}
	if at < 0 {
		return fmt.Errorf("netsim: partition %s|%s start %v is negative", a, b, at)
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	start := n.start.Add(at)
	if fromNow {
		start = now
	}
	pt := &partition{id: len(n.partitions) + 1, a: a, b: b, start: start, end: start.Add(d)}
	n.partitions = append(n.partitions, pt)
	n.record(now, "partition %s|%s from +%v for %v", a, b, start.Sub(n.start), d)
	for _, p := range n.pipes {
		if !pt.between(p.addr[0].Host, p.addr[1].Host) {
			continue
		}
		p.mu.Lock()
		for _, s := range p.s {
			s.windows = append(s.windows, window{start: pt.start, end: pt.end, partition: pt.id})
		}
		p.broadcast()
		p.mu.Unlock()
	}
	return nil
}

// Heal ends every partition between a and b that is in force now; data held
// back by it arrives right away (plus latency already accounted for).
func (n *Network) Heal(a, b string) {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	healed := map[int]bool{}
	for _, pt := range n.partitions {
		if pt.between(a, b) && !now.Before(pt.start) && now.Before(pt.end) {
			pt.end = now
			healed[pt.id] = true
		}
	}
	if len(healed) == 0 {
		return
	}
	n.record(now, "partition %s|%s healed", a, b)
	for _, p := range n.pipes {
		p.mu.Lock()
		for _, s := range p.s {
			for i := range s.windows {
				if healed[s.windows[i].partition] {
					s.windows[i].end = now
				}
			}
		}
		p.broadcast()
		p.mu.Unlock()
	}
}

// Close closes every listener and every connection end still open.
func (n *Network) Close() error {
	n.mu.Lock()
	ls := make([]*Listener, 0, len(n.listeners))
	for _, l := range n.listeners {
		ls = append(ls, l)
	}
	// Sorted, so that resets of unaccepted conns enter the trace in a fixed order.
	sort.Slice(ls, func(i, j int) bool { return ls[i].addr.String() < ls[j].addr.String() })
	pipes := append([]*pipe(nil), n.pipes...)
	n.mu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
	for _, p := range pipes {
		for side := 0; side < 2; side++ {
			_ = (&Conn{p: p, side: side}).Close()
		}
	}
	return nil
}
