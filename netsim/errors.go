package netsim

import (
	"net"
	"os"
	"syscall"
)

// The errors below mirror what the kernel reports for TCP sockets, so code
// under test can use errors.Is with syscall.ECONNRESET and friends exactly as
// it would on a real connection.

func sysErr(call string, errno syscall.Errno) error {
	return &os.SyscallError{Syscall: call, Err: errno}
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: networkName, Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func dialErr(src, dst net.Addr, err error) error {
	op := &net.OpError{Op: "dial", Net: networkName, Addr: dst, Err: err}
	if src != nil {
		op.Source = src
	}
	return op
}
