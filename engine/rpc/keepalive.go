package rpc

import (
	"time"

	"google.golang.org/grpc/keepalive"
)

// Keepalive: the client pings the control connection while it waits, e.g.
// during hours of a send stream that flows on the data connection, so
// NATs and firewalls keep the connection. A gRPC server punishes pings that
// come more often than its enforcement policy allows (by default: at most
// every 5 minutes, and none without an active call) with GOAWAY
// "too_many_pings" and closes the connection, which kills the calls on it.
// So the two sides are set together: the server permits what the client
// does, with a margin for timer jitter.

// ClientKeepalive is the client's keepalive.
func ClientKeepalive() keepalive.ClientParameters {
	return keepalive.ClientParameters{Time: time.Minute, Timeout: 20 * time.Second, PermitWithoutStream: true}
}

// ServerKeepalive is the server's side: its own pings and the policy it
// enforces on clients.
type ServerKeepalive struct {
	Params keepalive.ServerParameters
	// Enforcement is nil for gRPC's default policy.
	Enforcement *keepalive.EnforcementPolicy
}

// DefaultServerKeepalive permits ClientKeepalive's pings: MinTime is below
// the client's interval, and pings without active calls are allowed
// because the client sends them.
func DefaultServerKeepalive() ServerKeepalive {
	c := ClientKeepalive()
	return ServerKeepalive{
		Params:      keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second},
		Enforcement: &keepalive.EnforcementPolicy{MinTime: c.Time / 2, PermitWithoutStream: c.PermitWithoutStream},
	}
}

// OldClientKeepalive and OldServerKeepalive are the broken combination
// (a client pinging every 10 seconds, a server with gRPC's default
// enforcement): kept for the test that shows it fails.
func OldClientKeepalive() keepalive.ClientParameters {
	return keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}
}

func OldServerKeepalive() ServerKeepalive {
	return ServerKeepalive{Params: keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}}
}
