// Package twohost is the two-host world that tests of the rpc protocol,
// the transports and the simulator (scenarios) build on a simulated
// network: a server host listening at one address, a client host dialling
// it directly or through simulated ssh processes (package sshproc), and a
// server serving there until the test stops it. It is the one copy of that
// setup; each test adds its own links, faults and endpoints.
package twohost

import (
	"context"
	"fmt"
	"net"

	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/sshproc"
)

// Hosts are a server host and a client host on one simulated network.
type Hosts struct {
	Net            *netsim.Network
	Server, Client string
	// Port is where the server host listens.
	Port int
}

// New is a network from seed, every link link unless set otherwise (the
// zero Link leaves netsim's default), with a server host that will listen
// at port and a client host.
func New(seed int64, link netsim.Link, server, client string, port int) (*Hosts, error) {
	n := netsim.New(seed)
	if link != (netsim.Link{}) {
		if err := n.SetDefaultLink(link); err != nil {
			return nil, err
		}
	}
	return &Hosts{Net: n, Server: server, Client: client, Port: port}, nil
}

// Addr is the server's address, "host:port".
func (h *Hosts) Addr() string { return fmt.Sprintf("%s:%d", h.Server, h.Port) }

// Listen opens the server host's listener at Addr; it knows every peer as
// the client identity. With ssh, sshd's forced command (stdinserver) would
// introduce the identity: the listener stands in for both.
func (h *Hosts) Listen(identity string) (transport.Listener, error) {
	nl, err := h.Net.Listen(h.Server, h.Port)
	if err != nil {
		return nil, err
	}
	l, err := transport.Fixed(nl, identity)
	if err != nil {
		nl.Close()
		return nil, err
	}
	return l, nil
}

// Dialer dials Addr from the client host.
func (h *Hosts) Dialer() transport.Dialer {
	d := h.Net.DialFunc(h.Client)
	addr := h.Addr()
	return func(ctx context.Context) (net.Conn, error) { return d(ctx, addr) }
}

// SSH starts a simulated ssh process from the client host to Addr per
// connection; script gives the i-th one's script (nil: processes that live
// as long as their connection). Its Dialer is the ssh transport's.
func (h *Hosts) SSH(script func(i int) netsim.ProcessScript) *sshproc.Starter {
	return &sshproc.Starter{N: h.Net, From: h.Client, Addr: h.Addr(), Script: script}
}

// Server is what Serve serves: an rpc.Server, say.
type Server interface {
	Serve(l transport.Listener) error
	Stop()
}

// Serving is a server serving one listener in a goroutine of its own.
type Serving struct {
	srv  Server
	done chan struct{}
	err  error
}

// Serve serves srv on l until Stop.
func Serve(srv Server, l transport.Listener) *Serving {
	s := &Serving{srv: srv, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = srv.Serve(l)
	}()
	return s
}

// Stop stops the server, waits until it stopped serving and returns what
// its Serve returned.
func (s *Serving) Stop() error {
	s.srv.Stop()
	<-s.done
	return s.err
}
