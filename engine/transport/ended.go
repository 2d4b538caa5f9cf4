package transport

import "net"

// Ended is why conn ended as its transport knows it, beyond the IO error
// that noticed the end: for an ssh connection whose process exited while
// the connection was in use, the *ProcessExitError (exit status, the tail
// of stderr) its Read or Write returned. It is nil while the connection
// has not ended so, and for transports whose IO errors say all they know
// (tcp, tls, local). It does not wait.
//
// A protocol on top that loses the IO error itself (gRPC turns a control
// connection's failed Read into an "unavailable" status of text only) asks
// here when it turns its own error into a call error.
func Ended(conn net.Conn) error {
	if e, ok := conn.(interface{ ended() error }); ok {
		return e.ended()
	}
	return nil
}
