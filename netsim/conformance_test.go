package netsim

import (
	"context"
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// TestNetConnConformance runs the x/net conformance suite for net.Conn
// (deadlines, concurrent use, Close releasing blocked calls) against a pair
// of netsim ends. The suite uses subtests, which synctest bubbles forbid, so
// it runs in real time on a zero-latency link; it asserts behaviour, not
// speed. x/net is in the module graph through grpc already.
func TestNetConnConformance(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		n := New(1)
		l, err := n.Listen("b", 80)
		if err != nil {
			return nil, nil, nil, err
		}
		defer l.Close()
		c1, err = n.Dial(context.Background(), "a", "b:80")
		if err != nil {
			return nil, nil, nil, err
		}
		c2, err = l.Accept()
		if err != nil {
			return nil, nil, nil, err
		}
		return c1, c2, func() { _ = n.Close() }, nil
	})
}
