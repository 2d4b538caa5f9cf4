package daemon

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
)

// Refused connections (issue 12.9) are logged so that an administrator
// sees a misconfigured or hostile peer, but never one line per
// connection: a peer reconnecting in a loop, or a scan from many
// addresses, must not flood the log. Every refusal counts in
// zrepl_daemon_connections_refused_total.
const (
	// refusalInterval is how often one peer's refusals of one reason are
	// logged at most.
	refusalInterval = time.Minute
	// refusalLines bounds a job's refusal lines per interval, over all
	// peers (a scan from many addresses).
	refusalLines = 20
	// maxRefusalPeers bounds the peers a job remembers; refusals of
	// others are summed into one line per interval.
	maxRefusalPeers = 1024
)

// Reasons of refusals, the metric's reason label.
const (
	refusedAddress     = "address_not_allowed" // tcp: outside the allow-list
	refusedTLS         = "tls_handshake"       // tls: handshake failed (bad or no certificate, timeout)
	refusedCN          = "certificate_not_allowed"
	refusedGreeting    = "stdinserver_greeting" // stdinserver: no valid greeting in time
	refusedIdentity    = "identity_mismatch"    // stdinserver: another identity than the socket's
	refusedProtocol    = "protocol"             // an allowed peer that speaks garbage or breaks the protocol
	refusedVersion     = "version_mismatch"
	refusedTimeout     = "timeout"
	refusedOverLimit   = "over_limit" // an identity's connections beyond the server's caps
	refusedOtherReason = "connection"
)

// refusals is one job's refusal log.
type refusals struct {
	job   string
	log   *slog.Logger
	now   func() time.Time
	count func(reason string)

	mu      sync.Mutex
	window  time.Time // start of the current interval
	lines   int       // logged in the current interval
	dropped int       // refusals no per-peer line will report
	peers   map[refusalKey]*refusalState
}

type refusalKey struct {
	attr   string // "peer" (an address) or "client" (an identity)
	who    string
	reason string
}

type refusalState struct {
	logged    time.Time
	notLogged int
}

func newRefusals(job string, log *slog.Logger, now func() time.Time, count func(reason string)) *refusals {
	return &refusals{job: job, log: log, now: now, count: count, peers: map[refusalKey]*refusalState{}}
}

// notePeer notes a connection from addr refused before it had an
// identity.
func (r *refusals) notePeer(addr, reason string, err error) {
	r.note(refusalKey{"peer", addr, reason}, err)
}

// noteClient notes a connection of an authenticated client refused.
func (r *refusals) noteClient(identity, reason string, err error) {
	r.note(refusalKey{"client", identity, reason}, err)
}

func (r *refusals) note(k refusalKey, err error) {
	r.count(k.reason)
	now := r.now()
	r.mu.Lock()
	if now.Sub(r.window) >= refusalInterval {
		r.rollover(now)
	}
	s := r.peers[k]
	switch {
	case s != nil && now.Sub(s.logged) < refusalInterval:
		s.notLogged++
		r.mu.Unlock()
		return
	case r.lines >= refusalLines || s == nil && len(r.peers) >= maxRefusalPeers:
		if s != nil {
			s.notLogged++
		} else {
			r.dropped++
		}
		r.mu.Unlock()
		return
	}
	if s == nil {
		s = &refusalState{}
		r.peers[k] = s
	}
	notLogged := s.notLogged
	s.logged, s.notLogged = now, 0
	r.lines++
	r.mu.Unlock()
	attrs := []any{"job", r.job, k.attr, k.who, "reason", k.reason, "err", err}
	if notLogged > 0 {
		attrs = append(attrs, "not_logged", notLogged)
	}
	r.log.Warn("connection refused", attrs...)
}

// rollover starts a new interval: it says what the last one did not log
// and forgets peers with nothing left to say. r.mu is held.
func (r *refusals) rollover(now time.Time) {
	for k, s := range r.peers {
		age := now.Sub(s.logged)
		if age >= refusalInterval && s.notLogged == 0 || age >= 2*refusalInterval {
			r.dropped += s.notLogged
			delete(r.peers, k)
		}
	}
	if r.dropped > 0 {
		r.log.Warn("connections refused and not logged", "job", r.job, "not_logged", r.dropped, "since", r.window.Format(time.RFC3339))
	}
	r.window, r.lines, r.dropped = now, 0, 0
}

// onReject is a transport listener's OnReject.
func (r *refusals) onReject(remote net.Addr, err error) {
	addr := ""
	if remote != nil {
		addr = remote.String()
		if h, _, e := net.SplitHostPort(addr); e == nil {
			addr = h // the port changes with every connection
		}
	}
	if addr == "" || addr == "@" || remote != nil && remote.Network() == "unix" {
		addr = "local" // a unix socket's peer (stdinserver) has no address
	}
	r.notePeer(addr, rejectReason(err), err)
}

// rejectReason names why a transport refused a connection.
func rejectReason(err error) string {
	switch {
	case errors.Is(err, transport.ErrCNNotAllowed):
		return refusedCN
	case errors.Is(err, transport.ErrNotAllowed):
		return refusedAddress
	case errors.Is(err, transport.ErrTLSHandshake):
		return refusedTLS
	case errors.Is(err, transport.ErrGreeting):
		return refusedGreeting
	}
	return refusedOtherReason
}

// onConnError is an rpc server's OnConnError: an authenticated client's
// connection refused or cut before any call.
func (r *refusals) onConnError(identity string, err error) {
	r.noteClient(identity, connErrorReason(err), err)
}

func connErrorReason(err error) string {
	switch {
	case errors.Is(err, rpc.ErrTooManyConns):
		return refusedOverLimit
	case errors.Is(err, rpc.ErrVersionMismatch):
		return refusedVersion
	case errors.Is(err, rpc.ErrNotZrepl), errors.Is(err, rpc.ErrProtocol), errors.Is(err, rpc.ErrCorruptStream), errors.Is(err, rpc.ErrBadRequest):
		return refusedProtocol
	case errors.Is(err, os.ErrDeadlineExceeded):
		return refusedTimeout
	}
	return refusedOtherReason
}
