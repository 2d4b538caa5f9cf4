package netsim

import (
	"io"
	"math/bits"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

const (
	// DefaultBuffer is the per-direction bound on written but unread bytes
	// when a Link leaves Buffer zero.
	DefaultBuffer = 64 << 10
	// segmentSize is the packet size: bytes travel in packets aligned to
	// multiples of it, so a large write over a slow link arrives gradually.
	// A segment is the part of a packet written at one instant; it arrives
	// with its last byte. Jitter is drawn once per packet. Together this
	// makes arrival times a function of when each byte was written, not of
	// how the writes were chunked or interleaved with reads at that instant,
	// which is what keeps runs under synctest reproducible.
	segmentSize = 4 << 10
)

// Dir names one direction of a connection.
type Dir int

const (
	// Up is client (dialer) to server (accepter).
	Up Dir = iota
	// Down is server to client.
	Down
)

func (d Dir) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	}
	return "dir(" + itoa(int(d)) + ")"
}

func (d Dir) valid() bool { return d == Up || d == Down }

type segment struct {
	data    []byte
	off     int64     // stream offset of data[0]
	wtime   time.Time // when it was written
	floor   time.Time // arrival of the segment before: no overtaking
	arrival time.Time
	sealed  bool // a fault fired after it: later bytes must not join it
}

// window holds back every byte whose arrival falls in [start, end) until end.
type window struct {
	start, end time.Time
	partition  int // id of the partition it stands for, 0 for a conn stall
}

type triggerKind int

const (
	trigReset triggerKind = iota
	trigStall
	trigHalfOpen
	trigExit
)

// trigger fires when the writer's stream offset reaches off.
type trigger struct {
	off  int64
	kind triggerKind
	dur  time.Duration
	// exit is called (pipe lock held) for trigExit; it ends the stream.
	exit func(now time.Time)
}

// stream is one direction of a connection. All fields are guarded by the
// owning pipe's mutex.
type stream struct {
	link Link
	rng  *rand.Rand

	segs    []segment
	headOff int // bytes of segs[0] already read
	// free holds the buffers of read segments for new ones: a stream
	// moves most of its bytes through a few packet-sized buffers.
	free   [][]byte
	queued int // bytes in segs not yet read: the buffer occupancy

	wOff int64 // bytes enqueued (the in-band stream offset)
	rOff int64 // bytes read

	linkFree    time.Time // when the link has sent everything enqueued
	lastArrival time.Time
	// The current busy period of the link began at busyStart with the
	// byte at busyOff; departures are computed from there, exactly.
	busyStart time.Time
	busyOff   int64
	jitBlock  int64 // block the jitter jit was drawn for, -1 before any
	jit       time.Duration

	shut bool // writer closed its side; later writes fail
	// lost: the connection is half-open; bytes from offset lostOff on and
	// any EOF sent afterwards never arrive.
	lost       bool
	lostOff    int64
	fin        bool // EOF follows byte finOff, arriving at finArrival
	finOff     int64
	finArrival time.Time

	// sinkGone: the reading end went away. Writes are dropped, and fail
	// once the writer could know (sinkGoneAt).
	sinkGone   bool
	sinkGoneAt time.Time

	windows  []window
	triggers []trigger // sorted by off

	written int64 // bytes accepted from Write, dropped ones included
	dropped int64
}

func (s *stream) capacity() int {
	if s.link.Buffer > 0 {
		return s.link.Buffer
	}
	return DefaultBuffer
}

// eff returns when something scheduled to arrive at t is seen by the reader,
// after stall and partition windows. It is monotonic in t, so order is kept.
func (s *stream) eff(t time.Time) time.Time {
	for moved := true; moved; {
		moved = false
		for _, w := range s.windows {
			if !t.Before(w.start) && t.Before(w.end) {
				t = w.end
				moved = true
			}
		}
	}
	return t
}

// enqueue sends data, which lies within one packet, at time now.
func (s *stream) enqueue(now time.Time, data []byte) {
	// Strictly before: at one instant the busy period never restarts, so
	// splitting a write cannot change departures.
	if s.linkFree.Before(now) {
		s.busyStart, s.busyOff = now, s.wOff
	}
	end := s.wOff + int64(len(data))
	raw := s.rawArrival(end)
	if i := len(s.segs) - 1; i >= 0 {
		seg := &s.segs[i]
		if !seg.sealed && seg.wtime.Equal(now) && seg.arrival.After(now) &&
			seg.off/segmentSize == s.wOff/segmentSize && seg.off+int64(len(seg.data)) == s.wOff {
			seg.data = append(seg.data, data...)
			seg.arrival = later(raw, seg.floor)
			s.lastArrival = seg.arrival
			s.wOff = end
			return
		}
	}
	arr := later(raw, s.lastArrival)
	var buf []byte
	if k := len(s.free) - 1; k >= 0 {
		buf, s.free = s.free[k], s.free[:k]
	} else {
		buf = make([]byte, 0, segmentSize)
	}
	s.segs = append(s.segs, segment{
		data: append(buf, data...), off: s.wOff, wtime: now, floor: s.lastArrival, arrival: arr,
	})
	s.lastArrival = arr
	s.wOff = end
}

func (s *stream) seal() {
	if len(s.segs) > 0 {
		s.segs[len(s.segs)-1].sealed = true
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// rawArrival books the link up to stream offset end and returns when the
// byte before end arrives, before the no-overtaking clamp.
func (s *stream) rawArrival(end int64) time.Time {
	depart := s.busyStart
	if bw := s.link.Bandwidth; bw > 0 {
		// Split to keep bytes*1e9 from overflowing on long busy periods.
		b := end - s.busyOff
		hi, lo := bits.Mul64(uint64(b%bw), uint64(time.Second))
		frac, _ := bits.Div64(hi, lo, uint64(bw)) // hi < bw since b%bw < bw
		depart = depart.Add(time.Duration(b/bw)*time.Second + time.Duration(frac))
	}
	s.linkFree = depart
	arr := depart.Add(s.link.Latency)
	if j := s.link.Jitter; j > 0 {
		if blk := (end - 1) / segmentSize; blk != s.jitBlock {
			s.jitBlock = blk
			s.jit = time.Duration(s.rng.Int64N(int64(j)))
		}
		arr = arr.Add(s.jit)
	}
	return arr
}

// delay makes the link send nothing before t (a stall).
func (s *stream) delay(t time.Time) {
	if t.After(s.linkFree) {
		s.linkFree = t
		s.busyStart, s.busyOff = t, s.wOff
	}
}

// setLink changes the link; the busy period restarts so that the new
// bandwidth applies from the next byte.
func (s *stream) setLink(l Link) {
	s.link = l
	s.seal()
	s.busyStart, s.busyOff = s.linkFree, s.wOff
}

// shutAt ends the stream after what is enqueued: the EOF travels behind the data.
func (s *stream) shutAt(now time.Time) {
	if s.shut {
		return
	}
	s.shut = true
	if s.lost {
		return
	}
	s.fin = true
	s.finOff = s.wOff
	depart := now
	if s.linkFree.After(depart) {
		depart = s.linkFree
	}
	s.finArrival = depart.Add(s.link.Latency)
	if s.finArrival.Before(s.lastArrival) {
		s.finArrival = s.lastArrival
	}
}

func (s *stream) discard() {
	s.segs = nil
	s.headOff = 0
	s.queued = 0
}

func (s *stream) addTrigger(t trigger) {
	i := len(s.triggers)
	for i > 0 && s.triggers[i-1].off > t.off {
		i--
	}
	s.triggers = append(s.triggers, trigger{})
	copy(s.triggers[i+1:], s.triggers[i:])
	s.triggers[i] = t
}

// pipe is the shared state of a connection: both directions and both ends.
type pipe struct {
	n    *Network
	id   int
	addr [2]Addr // [0] client, [1] server

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change someone waits for
	waited  bool
	// timers are spare timers for sleepUntil, by side and by read (0) or
	// write (1): a waiter takes one under mu and puts it back after, so
	// most waits need no new timer.
	timers [2][2]*time.Timer

	s      [2]*stream // indexed by the writing side: s[0] is Up
	closed [2]bool
	dl     [2]deadlines

	reset   bool
	resetAt [2]time.Time // when each side learns of the reset

	blackholed bool

	onReset func(now time.Time)    // lock held
	onClose [2]func(now time.Time) // lock held
}

type deadlines struct{ read, write time.Time }

func (p *pipe) waitCh() <-chan struct{} {
	p.waited = true
	return p.changed
}

func (p *pipe) broadcast() {
	if p.waited {
		close(p.changed)
		p.changed = make(chan struct{})
		p.waited = false
	}
}

// sleep blocks until ch is closed or until the given time (zero: no
// limit), with p.mu unlocked, using one of side's spare timers for op
// (0 read, 1 write). It uses only channels and timers, which synctest
// understands. It is called and returns with p.mu held.
func (p *pipe) sleep(side, op int, ch <-chan struct{}, until time.Time) {
	t := p.timers[side][op]
	p.timers[side][op] = nil
	p.mu.Unlock()
	t = sleepUntil(ch, until, t)
	p.mu.Lock()
	if p.timers[side][op] == nil {
		p.timers[side][op] = t
	}
}

// sleepUntil blocks until ch is closed or until the given time (zero: no
// limit), using t if it is not nil; it returns the timer to use next
// time, stopped.
func sleepUntil(ch <-chan struct{}, until time.Time, t *time.Timer) *time.Timer {
	if until.IsZero() {
		<-ch
		return t
	}
	d := time.Until(until)
	if d <= 0 {
		return t
	}
	if t == nil {
		t = time.NewTimer(d)
	} else {
		// Since Go 1.23 a stopped timer's channel holds no stale tick.
		t.Reset(d)
	}
	select {
	case <-ch:
	case <-t.C:
	}
	t.Stop()
	return t
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// visible reports whether something arriving at a (effective time) can
// still be seen by side r after a reset.
func (p *pipe) visible(r int, a time.Time) bool {
	return !p.reset || !a.After(p.resetAt[r])
}

// segVisible reports whether the head segment of s can reach reader r.
func (p *pipe) segVisible(r int, s *stream, a time.Time) bool {
	return p.visible(r, a) && !(s.lost && s.segs[0].off >= s.lostOff)
}

// fireTriggers runs the faults due at the writer's current offset. A non-nil
// error ends the current Write.
func (p *pipe) fireTriggers(side int, now time.Time) error {
	s := p.s[side]
	for len(s.triggers) > 0 && s.triggers[0].off <= s.wOff {
		t := s.triggers[0]
		s.triggers = s.triggers[1:]
		s.seal()
		switch t.kind {
		case trigReset:
			p.n.record(now, "conn#%d %v: reset at byte %d", p.id, Dir(side), s.wOff)
			p.doReset(side, now)
			return sysErr("write", syscall.ECONNRESET)
		case trigStall:
			p.n.record(now, "conn#%d %v: stall at byte %d for %v", p.id, Dir(side), s.wOff, t.dur)
			s.delay(now.Add(t.dur))
		case trigHalfOpen:
			p.n.record(now, "conn#%d %v: half-open at byte %d", p.id, Dir(side), s.wOff)
			p.doBlackhole(now)
		case trigExit:
			t.exit(now)
			if s.sinkGone {
				return sysErr("write", syscall.EPIPE)
			}
		}
	}
	return nil
}

// doReset resets the connection: the writer side learns now, the peer when
// the reset arrives behind the data already sent. Each side can still read
// what arrived before it learned of the reset.
func (p *pipe) doReset(side int, now time.Time) {
	if p.reset {
		return
	}
	s := p.s[side]
	t := now.Add(s.link.Latency)
	if s.lastArrival.After(t) {
		t = s.lastArrival
	}
	p.reset = true
	p.resetAt[side] = now
	p.resetAt[1-side] = s.eff(t)
	p.s[0].triggers, p.s[1].triggers = nil, nil
	if p.onReset != nil {
		p.onReset(now)
	}
	p.broadcast()
}

func (p *pipe) doBlackhole(now time.Time) {
	if p.blackholed {
		return
	}
	p.blackholed = true
	for _, s := range p.s {
		s.seal()
		s.lost = true
		s.lostOff = s.wOff
	}
	p.broadcast()
}

// Conn is one end of a simulated connection. It implements net.Conn; its
// extra methods inject faults and report statistics.
type Conn struct {
	p    *pipe
	side int
}

var _ net.Conn = (*Conn)(nil)

// ID is the connection's number: the number of the Dial that created it.
func (c *Conn) ID() int { return c.p.id }

// LocalAddr returns this end's address.
func (c *Conn) LocalAddr() net.Addr { return c.p.addr[c.side] }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.p.addr[1-c.side] }

// Read reads bytes that have arrived. After the peer's data it returns io.EOF
// if the peer closed (or half-closed), or an error wrapping
// syscall.ECONNRESET if the connection was reset.
func (c *Conn) Read(b []byte) (int, error) {
	p, r := c.p, c.side
	s := p.s[1-r]
	p.mu.Lock()
	for {
		if p.closed[r] {
			p.mu.Unlock()
			return 0, c.opErr("read", net.ErrClosed)
		}
		if len(b) == 0 {
			p.mu.Unlock()
			return 0, nil
		}
		now := time.Now()
		if dl := p.dl[r].read; !dl.IsZero() && !now.Before(dl) {
			p.mu.Unlock()
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		var wake time.Time
		if len(s.segs) > 0 {
			a := s.eff(s.segs[0].arrival)
			if p.segVisible(r, s, a) {
				if !a.After(now) {
					n := c.consume(s, b, now)
					p.broadcast()
					p.mu.Unlock()
					return n, nil
				}
				wake = a
			}
		} else if s.fin && s.rOff == s.finOff {
			a := s.eff(s.finArrival)
			if p.visible(r, a) {
				if !a.After(now) {
					p.mu.Unlock()
					return 0, io.EOF
				}
				wake = a
			}
		}
		if p.reset {
			if !now.Before(p.resetAt[r]) {
				p.mu.Unlock()
				return 0, c.opErr("read", sysErr("read", syscall.ECONNRESET))
			}
			wake = earliest(wake, p.resetAt[r])
		}
		wake = earliest(wake, p.dl[r].read)
		p.sleep(r, 0, p.waitCh(), wake)
	}
}

// consume copies arrived, visible bytes into b.
func (c *Conn) consume(s *stream, b []byte, now time.Time) int {
	n := 0
	for n < len(b) && len(s.segs) > 0 {
		a := s.eff(s.segs[0].arrival)
		if a.After(now) || !c.p.segVisible(c.side, s, a) {
			break
		}
		seg := s.segs[0].data[s.headOff:]
		k := copy(b[n:], seg)
		n += k
		s.headOff += k
		if s.headOff == len(s.segs[0].data) {
			if d := s.segs[0].data; cap(d) == segmentSize {
				s.free = append(s.free, d[:0])
			}
			s.segs[0].data = nil
			s.segs = s.segs[1:]
			s.headOff = 0
		}
	}
	s.queued -= n
	s.rOff += int64(n)
	if len(s.segs) == 0 {
		s.segs = nil
	}
	return n
}

// Write sends b. It blocks while the direction's buffer is full. Writes
// after Close fail with net.ErrClosed, after CloseWrite or once the peer is
// known to be gone with syscall.EPIPE, after a reset with syscall.ECONNRESET.
func (c *Conn) Write(b []byte) (int, error) {
	p, w := c.p, c.side
	s := p.s[w]
	n := 0
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed[w] {
			return n, c.opErr("write", net.ErrClosed)
		}
		now := time.Now()
		if p.reset && !now.Before(p.resetAt[w]) {
			return n, c.opErr("write", sysErr("write", syscall.ECONNRESET))
		}
		if s.shut {
			return n, c.opErr("write", sysErr("write", syscall.EPIPE))
		}
		if s.sinkGone || p.reset {
			if s.sinkGone && !now.Before(s.sinkGoneAt) {
				return n, c.opErr("write", sysErr("write", syscall.EPIPE))
			}
			// Nobody will read these bytes, but the writer cannot know yet.
			k := int64(len(b) - n)
			s.written += k
			s.dropped += k
			return len(b), nil
		}
		if n == len(b) {
			return n, nil
		}
		if dl := p.dl[w].write; !dl.IsZero() && !now.Before(dl) {
			return n, c.opErr("write", os.ErrDeadlineExceeded)
		}
		// Like TCP's silly window avoidance, a writer waits until a useful
		// amount of room is free rather than trickling in the bytes each
		// read frees; otherwise a stream degenerates into tiny segments.
		space := s.capacity() - s.queued
		if space < min(len(b)-n, max(1, min(s.capacity()/2, segmentSize))) {
			p.sleep(w, 1, p.waitCh(), p.dl[w].write)
			continue
		}
		k := min(len(b)-n, space, segmentSize-int(s.wOff%segmentSize))
		if len(s.triggers) > 0 {
			// Stop exactly at the next fault's offset.
			if lim := s.triggers[0].off - s.wOff; lim < int64(k) {
				k = int(lim)
			}
		}
		if k > 0 {
			s.enqueue(now, b[n:n+k])
			s.queued += k
			s.written += int64(k)
			n += k
			p.broadcast()
		}
		if err := p.fireTriggers(w, now); err != nil {
			return n, c.opErr("write", err)
		}
		if n == len(b) {
			// All of b went out, even if a trigger just shut the stream
			// (a process exiting after reading exactly these bytes took
			// them): the next Write learns of the end.
			return n, nil
		}
	}
}

// Close closes this end. The peer reads what was sent, then io.EOF; the
// peer's later writes are dropped and, once it could know, fail with EPIPE.
// On a half-open connection the peer notices nothing.
func (c *Conn) Close() error {
	p, w := c.p, c.side
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed[w] {
		return c.opErr("close", net.ErrClosed)
	}
	now := time.Now()
	p.closed[w] = true
	out, in := p.s[w], p.s[1-w]
	if p.reset {
		out.shut = true // an RST went out already; no FIN follows it
	}
	out.shutAt(now)
	if !p.blackholed {
		in.discard()
	}
	if !p.blackholed && !p.reset {
		in.sinkGone = true
		in.sinkGoneAt = out.eff(out.finArrival)
	}
	if f := p.onClose[w]; f != nil {
		f(now)
	}
	p.broadcast()
	return nil
}

// CloseWrite half-closes: the peer reads io.EOF after the data sent so far,
// while this end can still read.
func (c *Conn) CloseWrite() error {
	p, w := c.p, c.side
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed[w] {
		return c.opErr("close", net.ErrClosed)
	}
	if p.reset {
		p.s[w].shut = true
	}
	p.s[w].shutAt(time.Now())
	p.broadcast()
	return nil
}

// SetDeadline sets both the read and the write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	return c.setDeadline(t, true, true)
}

// SetReadDeadline sets the read deadline; a zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(t, true, false)
}

// SetWriteDeadline sets the write deadline; a zero time means none.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(t, false, true)
}

func (c *Conn) setDeadline(t time.Time, read, write bool) error {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed[c.side] {
		return c.opErr("set", net.ErrClosed)
	}
	if read {
		p.dl[c.side].read = t
	}
	if write {
		p.dl[c.side].write = t
	}
	p.broadcast()
	return nil
}

// Reset resets the connection now, as if an RST was sent from this end:
// this end's writes fail at once, the peer's once the reset reaches it
// (after the link's latency). Each end still reads what had arrived before
// it learned of the reset, then gets ECONNRESET.
func (c *Conn) Reset() {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if !p.reset {
		p.n.record(now, "conn#%d %v: reset at byte %d (explicit)", p.id, Dir(c.side), p.s[c.side].wOff)
	}
	p.doReset(c.side, now)
}

// ResetAfter resets the connection when this end has written off bytes in
// total: the peer reads exactly off bytes and then sees ECONNRESET, and the
// Write crossing off returns the bytes up to off with ECONNRESET.
func (c *Conn) ResetAfter(off int64) {
	c.addTrigger(trigger{off: max(off, 0), kind: trigReset})
}

// StallAfter holds back everything this end writes after byte off for d.
func (c *Conn) StallAfter(off int64, d time.Duration) {
	c.addTrigger(trigger{off: max(off, 0), kind: trigStall, dur: d})
}

func (c *Conn) addTrigger(t trigger) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.s[c.side].addTrigger(t)
	// A trigger at or below the current offset is due now.
	_ = p.fireTriggers(c.side, time.Now())
}

// Stall holds back everything arriving in either direction during the next
// d: no progress, then all of it at once.
func (c *Conn) Stall(d time.Duration) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.n.record(now, "conn#%d: stall for %v (explicit)", p.id, d)
	for _, s := range p.s {
		s.windows = append(s.windows, window{start: now, end: now.Add(d)})
	}
	p.broadcast()
}

// HalfOpen makes the connection half-open from now on: each end believes
// it is alive, but nothing either end writes (data, EOF, close) reaches the
// other one. Writers see their buffer fill up and then block, as over a
// TCP connection whose peer vanished.
func (c *Conn) HalfOpen() {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if !p.blackholed {
		p.n.record(now, "conn#%d: half-open (explicit)", p.id)
	}
	p.doBlackhole(now)
}

// DirStats counts the bytes of one direction.
type DirStats struct {
	// Written is what the writer's Write calls accepted, Dropped included.
	Written int64
	// Read is what the reader's Read calls returned.
	Read int64
	// Dropped was accepted but can never be read (peer gone, reset).
	Dropped int64
}

// ConnStats describes one connection.
type ConnStats struct {
	ID             int
	Client, Server Addr
	Up, Down       DirStats
}

// Stats reports the connection's byte counts.
func (c *Conn) Stats() ConnStats { return c.p.stats() }

func (p *pipe) stats() ConnStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	ds := func(s *stream) DirStats {
		return DirStats{Written: s.written, Read: s.rOff, Dropped: s.dropped}
	}
	return ConnStats{ID: p.id, Client: p.addr[0], Server: p.addr[1], Up: ds(p.s[0]), Down: ds(p.s[1])}
}
