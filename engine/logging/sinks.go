package logging

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"log/syslog"
	"net"
	"sync"
	"time"
)

// syslogSink writes to syslog with each level's severity. It connects on
// the first entry; after a failed connection or write it drops entries
// until retry has passed since the last attempt, then connects again.
type syslogSink struct {
	facility syslog.Priority
	retry    time.Duration
	// network and addr are syslog.Dial's: empty for the local syslog.
	network, addr string
	now           func() time.Time

	mu          sync.Mutex
	w           *syslog.Writer
	lastAttempt time.Time
}

func (s *syslogSink) write(l slog.Level, line []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		now := s.now()
		if !s.lastAttempt.IsZero() && now.Sub(s.lastAttempt) < s.retry {
			return nil // dropped until the next attempt, as in zrepl
		}
		s.lastAttempt = now
		w, err := syslog.Dial(s.network, s.addr, s.facility, "zrepl")
		if err != nil {
			return err
		}
		s.w = w
	}
	msg := string(line)
	var err error
	switch {
	case l < slog.LevelInfo:
		err = s.w.Debug(msg)
	case l < slog.LevelWarn:
		err = s.w.Info(msg)
	case l < slog.LevelError:
		err = s.w.Warning(msg)
	default:
		err = s.w.Err(msg)
	}
	if err != nil {
		s.w.Close()
		s.w = nil
		s.lastAttempt = s.now()
	}
	return err
}

// tcpSink sends lines to a log server over tcp (or TLS), from one
// goroutine: a write queues the line, or drops it if the previous one is
// still being sent, so that logging never waits for the network.
type tcpSink struct {
	network, address string
	tls              *tls.Config
	retry            time.Duration

	lines chan []byte
	done  chan struct{}
	stop  sync.Once
}

func newTCPSink(network, address string, tc *tls.Config, retry time.Duration) *tcpSink {
	s := &tcpSink{network: network, address: address, tls: tc, retry: retry, lines: make(chan []byte, 1), done: make(chan struct{})}
	go s.loop()
	return s
}

var errTCPBusy = errors.New("connection broken or not fast enough: entry dropped")

func (s *tcpSink) write(_ slog.Level, line []byte) error {
	select {
	case <-s.done:
		return errors.New("tcp outlet closed")
	default:
	}
	select {
	case s.lines <- append(line, '\n'):
		return nil
	default:
		return errTCPBusy
	}
}

func (s *tcpSink) close() { s.stop.Do(func() { close(s.done) }) }

func (s *tcpSink) dial() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.retry)
	defer cancel()
	if s.tls != nil {
		d := tls.Dialer{Config: s.tls}
		return d.DialContext(ctx, s.network, s.address)
	}
	var d net.Dialer
	return d.DialContext(ctx, s.network, s.address)
}

func (s *tcpSink) loop() {
	var conn net.Conn
	var retryAt time.Time
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		var line []byte
		select {
		case <-s.done:
			return
		case line = <-s.lines:
		}
		for conn == nil {
			if wait := time.Until(retryAt); wait > 0 {
				select {
				case <-s.done:
					return
				case <-time.After(wait):
				}
			}
			c, err := s.dial()
			if err != nil {
				retryAt = time.Now().Add(s.retry)
				continue
			}
			conn = c
		}
		conn.SetWriteDeadline(time.Now().Add(s.retry))
		if _, err := bytes.NewReader(line).WriteTo(conn); err != nil {
			conn.Close()
			conn = nil
			retryAt = time.Now().Add(s.retry)
		}
	}
}
