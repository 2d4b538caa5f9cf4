package rpc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// DefaultDataIdleTimeout is how long a data connection may carry nothing
// in the direction a side waits for. It is what notices a half-open data
// connection: the control connection's keepalive says nothing about it,
// and without a bound both ends would wait forever.
const DefaultDataIdleTimeout = 5 * time.Minute

// idleConn fails a Read or Write that makes no progress for timeout.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

// The deadline setters' errors are ignored: they fail on a closed
// connection (net.Pipe even when only the peer closed), and then the Read
// or Write itself tells best what happened (io.EOF, a reset).

func (c *idleConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	n, err := c.Conn.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("no data for %v: %w", c.timeout, err)
	}
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	n, err := c.Conn.Write(p)
	return n, c.writeErr(err)
}

// writeBuffers keeps the inner connection's writev.
func (c *idleConn) writeBuffers(bufs *net.Buffers) (int64, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	n, err := bufs.WriteTo(c.Conn)
	return n, c.writeErr(err)
}

func (c *idleConn) writeErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("the peer took no data for %v: %w", c.timeout, err)
	}
	return err
}
