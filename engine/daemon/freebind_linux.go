package daemon

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// setFreebind sets IP_FREEBIND or IPV6_FREEBIND on a socket, so that it
// can bind an address the host does not have yet (listen_freebind). A
// socket takes the option of its family; either one succeeding is enough.
func setFreebind(_, _ string, c syscall.RawConn) error {
	var v4, v6 error
	err := c.Control(func(fd uintptr) {
		v4 = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		v6 = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
	})
	if err != nil {
		return err
	}
	if v4 != nil && v6 != nil {
		return v4
	}
	return nil
}
