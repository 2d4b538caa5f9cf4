package transport

import "net"

// For the tests of package transport_test, which may import engine/rpc.

const (
	CloseGrace    = closeGrace
	StderrInError = stderrInError
)

// StderrMemory returns the bytes an ssh connection holds for stderr.
func StderrMemory(c net.Conn) int { return cap(c.(*processConn).stderr.buf) }
