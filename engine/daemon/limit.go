package daemon

import (
	"context"
	"io"
	"sync"
	"time"

	"zrepl.dev/zrepl/engine/config"
	"zrepl.dev/zrepl/engine/endpoint"
)

// bucket is a token bucket shared by all streams of one job side: a
// bandwidth_limit caps the job, not each stream. Readers take tokens after
// reading and, when in debt, wait until the debt is paid.
type bucket struct {
	rate     float64 // bytes per second
	capacity float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// newBucket returns nil for an unlimited setting.
func newBucket(l config.BandwidthLimit) *bucket {
	if l.Max <= 0 {
		return nil
	}
	c := l.BucketCapacity
	if c <= 0 {
		c = config.DefaultBucketCapacity
	}
	return &bucket{rate: float64(l.Max), capacity: float64(c), tokens: float64(c)}
}

// take removes n tokens and says how long the reader must wait.
func (b *bucket) take(n int, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		b.tokens = min(b.capacity, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// chunk bounds one read, so that one read never runs far into debt.
func (b *bucket) chunk(n int) int {
	return max(1, min(n, int(b.capacity)))
}

// limitedReader reads through a bucket. done ends a wait (the stream was
// closed or the call cancelled).
type limitedReader struct {
	r    io.Reader
	b    *bucket
	done <-chan struct{}
}

func (l limitedReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p[:l.b.chunk(len(p))])
	if n > 0 {
		if wait := l.b.take(n, time.Now()); wait > 0 {
			select {
			case <-time.After(wait):
			case <-l.done:
			}
		}
	}
	return n, err
}

type limitedReadCloser struct {
	limitedReader
	c    io.Closer
	once sync.Once
	stop chan struct{}
}

func (l *limitedReadCloser) Close() error {
	l.once.Do(func() { close(l.stop) })
	return l.c.Close()
}

func limitReadCloser(rc io.ReadCloser, b *bucket) io.ReadCloser {
	if b == nil {
		return rc
	}
	stop := make(chan struct{})
	return &limitedReadCloser{limitedReader: limitedReader{r: rc, b: b, done: stop}, c: rc, stop: stop}
}

func limitReader(ctx context.Context, r io.Reader, b *bucket) io.Reader {
	if b == nil {
		return r
	}
	return limitedReader{r: r, b: b, done: ctx.Done()}
}

// limitedSender applies a job's send.bandwidth_limit to its streams and
// reports how long each stream (a step's send) took.
type limitedSender struct {
	jobSender
	b *bucket
	// stepDone learns each stream's duration (nil: nobody listens).
	stepDone func(took time.Duration)
}

func (s limitedSender) Send(ctx context.Context, req endpoint.SendRequest) (io.ReadCloser, error) {
	rc, err := s.Sender.Send(ctx, req)
	if err != nil {
		return nil, err
	}
	rc = limitReadCloser(rc, s.b)
	if s.stepDone != nil {
		rc = &timedStream{ReadCloser: rc, start: time.Now(), done: s.stepDone}
	}
	return rc, nil
}

// timedStream reports its lifetime once, when closed.
type timedStream struct {
	io.ReadCloser
	start time.Time
	done  func(time.Duration)
	once  sync.Once
}

func (t *timedStream) Close() error {
	t.once.Do(func() { t.done(time.Since(t.start)) })
	return t.ReadCloser.Close()
}

// Unwrap and Passed let zfsreal's Receive look through the timer and
// splice the stream (zfsreal.StreamWrapper); it counts nothing itself.
func (t *timedStream) Unwrap() io.Reader { return t.ReadCloser }
func (t *timedStream) Passed(int64)      {}
