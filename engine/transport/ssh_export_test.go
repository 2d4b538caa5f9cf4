package transport

import (
	"context"
	"io"
	"net"
)

// For the tests of package transport_test, which may import engine/rpc.

const (
	CloseGrace    = closeGrace
	StderrInError = stderrInError
)

// StderrMemory returns the bytes an ssh connection holds for stderr.
func StderrMemory(c net.Conn) int { return cap(c.(*processConn).stderr.buf) }

// StdinServerVia is StdinServer over a connection from dial, so that tests
// can run it over a simulated network instead of a unix socket.
func StdinServerVia(ctx context.Context, dial func(context.Context) (net.Conn, error), identity string, stdin io.Reader, stdout io.Writer) error {
	return stdinServer(ctx, dial, identity, stdin, stdout)
}

// StdinServerListenerOn accepts stdinserver connections on l.
func StdinServerListenerOn(l net.Listener) *StdinServerListener {
	return newStdinServerListener(l, l.Addr().String())
}
