package scenarios

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing/synctest"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

// sequencer makes a run's concurrent work replay exactly. The driver
// carries out its decisions in goroutines of their own; goroutines that
// become runnable at one virtual instant run in any order, and where they
// touch shared state (the control connection, a host's txgs) a replay
// would differ. So every call the run makes to its sender and receiver,
// and every read of a stream it receives, takes a turn: at most one of
// them is under way at a time, and when none is, the sequencer waits
// until the bubble is idle (every goroutine durably blocked: all
// consequences of the last turn have happened) and grants the next turn
// to the waiting call with the smallest key. What runs beside a turn is
// the background work of other calls (a server filling a stream's
// buffers), which touches only state of its own.
//
// Actions (a resize) run the same way, at an idle instant between turns.
type sequencer struct {
	mu      sync.Mutex
	waiting []turn
	busy    bool
	poke    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
}

type turn struct {
	key   string
	grant chan struct{}
	act   func()
}

func newSequencer() *sequencer {
	s := &sequencer{poke: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	go s.dispatch()
	return s
}

// close ends the dispatcher and lets every waiting call go on (a reader
// abandoned by its call may still wait).
func (s *sequencer) close() {
	close(s.stop)
	<-s.stopped
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.waiting {
		if t.grant != nil {
			close(t.grant)
		}
	}
	s.waiting = nil
}

func (s *sequencer) nudge() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// enter waits for the turn of the call named key.
func (s *sequencer) enter(key string) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.waiting = append(s.waiting, turn{key: key, grant: ch})
	s.mu.Unlock()
	s.nudge()
	<-ch
}

// leave ends the current turn.
func (s *sequencer) leave() {
	s.mu.Lock()
	s.busy = false
	s.mu.Unlock()
	s.nudge()
}

// do runs act at the next idle instant between turns, before any waiting
// call, without waiting for it.
func (s *sequencer) do(act func()) {
	s.mu.Lock()
	s.waiting = append(s.waiting, turn{key: "", act: act})
	s.mu.Unlock()
	s.nudge()
}

func (s *sequencer) dispatch() {
	defer close(s.stopped)
	for {
		select {
		case <-s.poke:
		case <-s.stop:
			return
		}
		// Let every consequence of what happened settle at this instant.
		synctest.Wait()
		s.mu.Lock()
		if s.busy || len(s.waiting) == 0 {
			s.mu.Unlock()
			continue
		}
		i := 0
		for j, t := range s.waiting {
			if t.key < s.waiting[i].key {
				i = j
			}
		}
		t := s.waiting[i]
		s.waiting = slices.Delete(s.waiting, i, i+1)
		if t.act != nil {
			s.mu.Unlock()
			t.act()
			s.nudge()
			continue
		}
		s.busy = true
		s.mu.Unlock()
		close(t.grant)
	}
}

// seqSender and seqReceiver take a turn for every call of the run.
type seqSender struct {
	inner interface {
		ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error)
		Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error)
		SendSize(ctx context.Context, req endpoint.SendRequest) (int64, error)
		StepCompleted(ctx context.Context, req endpoint.SendRequest, last bool) error
	}
	s *sequencer
}

func stepKey(req endpoint.SendRequest) string {
	var b strings.Builder
	b.WriteString(req.FS)
	if req.From != nil {
		b.WriteString(" " + req.From.RelName())
	}
	b.WriteString(" " + req.To.RelName())
	if req.ResumeToken != "" {
		b.WriteString(" resume")
	}
	return b.String()
}

func (q seqSender) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	q.s.enter("list sender")
	defer q.s.leave()
	return q.inner.ListFilesystems(ctx)
}

func (q seqSender) Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error) {
	q.s.enter("send " + stepKey(req))
	defer q.s.leave()
	return q.inner.Send(ctx, req)
}

func (q seqSender) SendSize(ctx context.Context, req endpoint.SendRequest) (int64, error) {
	q.s.enter("size " + stepKey(req))
	defer q.s.leave()
	return q.inner.SendSize(ctx, req)
}

func (q seqSender) StepCompleted(ctx context.Context, req endpoint.SendRequest, last bool) error {
	q.s.enter("completed " + stepKey(req))
	defer q.s.leave()
	return q.inner.StepCompleted(ctx, req, last)
}

type seqReceiver struct {
	inner interface {
		ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error)
		Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error
		AbortPartialReceive(ctx context.Context, fs string) error
		MoveLastReceivedHold(ctx context.Context, fs string, to zfs.FilesystemVersion) error
	}
	s *sequencer
}

func (q seqReceiver) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	q.s.enter("list receiver")
	defer q.s.leave()
	return q.inner.ListFilesystems(ctx)
}

// Receive holds the turn while the receiver works and yields it between
// reads of the stream. The reads may come from a goroutine of the
// receiver's own that outlives the call.
func (q seqReceiver) Receive(ctx context.Context, req endpoint.ReceiveRequest, stream io.Reader) error {
	key := "receive " + req.FS
	c := &seqCall{s: q.s}
	c.take(key)
	defer c.end()
	var since int // bytes read in this turn
	return q.inner.Receive(ctx, req, readerFunc(func(p []byte) (int, error) {
		if since >= yieldEvery {
			c.yield()
			c.take(key)
			since = 0
		}
		n, err := stream.Read(p)
		since += n
		return n, err
	}))
}

// yieldEvery is how many bytes of a stream a turn reads: each turn costs
// an idle instant of the bubble, and the points where a stream yields need
// only be fixed, not frequent.
const yieldEvery = 256 << 10

// seqCall is one call's hold on the turn, passed between the goroutines
// that serve the call.
type seqCall struct {
	s    *sequencer
	mu   sync.Mutex
	held bool
	over bool
}

func (c *seqCall) take(key string) {
	c.s.enter(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.over {
		c.s.leave()
		return
	}
	c.held = true
}

func (c *seqCall) yield() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		c.held = false
		c.s.leave()
	}
}

func (c *seqCall) end() {
	c.yield()
	c.mu.Lock()
	c.over = true
	c.mu.Unlock()
}

func (q seqReceiver) AbortPartialReceive(ctx context.Context, fs string) error {
	q.s.enter("abort " + fs)
	defer q.s.leave()
	return q.inner.AbortPartialReceive(ctx, fs)
}

func (q seqReceiver) MoveLastReceivedHold(ctx context.Context, fs string, to zfs.FilesystemVersion) error {
	q.s.enter("hold " + fs)
	defer q.s.leave()
	return q.inner.MoveLastReceivedHold(ctx, fs, to)
}
