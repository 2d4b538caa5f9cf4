package zfsmodel

import (
	"context"
	"io"
)

// ctxReader makes reads from r return when ctx is cancelled, even while r
// blocks: reads run in a helper goroutine. A read abandoned that way keeps
// the goroutine until r's Read returns (the caller closes the stream, as
// a killed zfs recv would stop reading it). Without a cancellable context
// it reads directly.
type ctxReader struct {
	ctx   context.Context
	r     io.Reader
	reqs  chan []byte
	resps chan readResult
}

type readResult struct {
	n   int
	err error
}

func newCtxReader(ctx context.Context, r io.Reader) *ctxReader {
	return &ctxReader{ctx: ctx, r: r}
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if c.ctx.Done() == nil {
		return c.r.Read(p)
	}
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	if c.reqs == nil {
		c.reqs = make(chan []byte)
		// Buffered, so an abandoned read's result does not block the
		// helper from exiting.
		c.resps = make(chan readResult, 1)
		go func(reqs <-chan []byte, resps chan<- readResult) {
			for p := range reqs {
				n, err := c.r.Read(p)
				resps <- readResult{n, err}
			}
		}(c.reqs, c.resps)
	}
	c.reqs <- p
	select {
	case res := <-c.resps:
		return res.n, res.err
	case <-c.ctx.Done():
		// Data that arrived together with the cancellation still counts.
		select {
		case res := <-c.resps:
			return res.n, res.err
		default:
		}
		// The helper may still write into p; the receive is over and p
		// is not read again.
		c.stop()
		return 0, c.ctx.Err()
	}
}

// stop lets the helper goroutine exit once its current read returns.
func (c *ctxReader) stop() {
	if c.reqs != nil {
		close(c.reqs)
		c.reqs = nil
	}
}
