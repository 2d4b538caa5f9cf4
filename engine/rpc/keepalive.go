package rpc

import (
	"time"

	"google.golang.org/grpc/keepalive"
)

// Keepalive of the control connection, zrepl's settings on both sides: the
// client pings after 5 s without activity (gRPC raises that to its minimum
// of 10 s) and gives up 10 s after an unanswered ping, also while no call
// is open; the server pings likewise and permits client pings as often as
// every 2.5 s, with or without calls. A send stream flows on a data
// connection for hours while the control connection idles, so a server
// that permitted less (gRPC's default: one ping per 5 minutes, none
// without a call) would answer the pings with GOAWAY "too_many_pings" and
// close the connection with the calls on it; the pair is chosen together,
// and a zrepl peer's pair is the same.
const (
	keepaliveTime    = 5 * time.Second
	keepaliveTimeout = 10 * time.Second
)

func clientKeepalive() keepalive.ClientParameters {
	return keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}
}

type serverKeepaliveParams struct {
	params keepalive.ServerParameters
	// enforcement nil is gRPC's default policy.
	enforcement *keepalive.EnforcementPolicy
}

func serverKeepalive() serverKeepaliveParams {
	return serverKeepaliveParams{
		params:      keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout},
		enforcement: &keepalive.EnforcementPolicy{MinTime: keepaliveTime / 2, PermitWithoutStream: true},
	}
}
