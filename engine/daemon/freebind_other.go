//go:build !linux

package daemon

import (
	"errors"
	"syscall"
)

// setFreebind: IP_FREEBIND is Linux's.
func setFreebind(string, string, syscall.RawConn) error {
	return errors.New("listen_freebind is only supported on Linux")
}
