package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"sync"
	"time"
)

// VersionInfo is a zrepl binary's version, as zrepl's control socket
// reports it (its field names).
type VersionInfo struct {
	Version         string
	RuntimeGo       string
	RuntimeGOOS     string
	RuntimeGOARCH   string
	RUNTIMECompiler string
}

// NewVersionInfo is this process's version information.
func NewVersionInfo(version string) VersionInfo {
	return VersionInfo{Version: version, RuntimeGo: runtime.Version(), RuntimeGOOS: runtime.GOOS,
		RuntimeGOARCH: runtime.GOARCH, RUNTIMECompiler: runtime.Compiler}
}

// String is zrepl's form.
func (v VersionInfo) String() string {
	return fmt.Sprintf("zrepl version=%s go=%s GOOS=%s GOARCH=%s Compiler=%s",
		v.Version, v.RuntimeGo, v.RuntimeGOOS, v.RuntimeGOARCH, v.RUNTIMECompiler)
}

// PprofRequest turns the daemon's pprof listener on or off (zrepl's
// PprofServerControlMsg).
type PprofRequest struct {
	Run               bool
	HttpListenAddress string
}

// PprofReply says where the listener listens ("" when off).
type PprofReply struct {
	Address string `json:"address,omitempty"`
}

// pprofServer is net/http/pprof on a TCP address the administrator
// chose at run time (`zrepl pprof listen on ADDR`); off by default and
// after every start. Anyone who can reach the address can read the
// daemon's memory profile and run traces: the control socket (mode 0600)
// decides who may turn it on.
type pprofServer struct {
	log *slog.Logger

	mu   sync.Mutex
	srv  *http.Server
	addr string // what was asked for
	l    net.Listener
}

func (p *pprofServer) control(req PprofRequest) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !req.Run {
		p.stopLocked()
		return "", nil
	}
	if req.HttpListenAddress == "" {
		return "", errors.New("pprof: no listen address")
	}
	if p.srv != nil && p.addr == req.HttpListenAddress {
		return p.l.Addr().String(), nil
	}
	p.stopLocked()
	l, err := net.Listen("tcp", req.HttpListenAddress)
	if err != nil {
		return "", fmt.Errorf("pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	p.srv, p.addr, p.l = srv, req.HttpListenAddress, l
	p.log.Warn("pprof listening: whoever reaches this address can profile the daemon", "address", l.Addr().String())
	return l.Addr().String(), nil
}

// stop turns the listener off (on shutdown).
func (p *pprofServer) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
}

func (p *pprofServer) stopLocked() {
	if p.srv == nil {
		return
	}
	p.srv.Close()
	p.log.Info("pprof listener stopped", "address", p.l.Addr().String())
	p.srv, p.addr, p.l = nil, "", nil
}
