package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// zrepl's defaults of connect.dial_timeout (0 is no timeout) and
// serve.tls.handshake_timeout.
const (
	DefaultDialTimeout      = 10 * time.Second
	DefaultLocalDialTimeout = 2 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
)

// ValidateClientIdentity checks that id can name the dataset
// <root_fs>/<id> a sink keeps a client's data in.
func ValidateClientIdentity(id string) error {
	if id == "" {
		return fmt.Errorf("empty client identity")
	}
	if i := strings.IndexByte(id, '/'); i >= 0 {
		return fmt.Errorf("client identity %q must not contain '/' (it names one dataset below root_fs)", id)
	}
	if err := zfs.ValidateDatasetPath("p/" + id); err != nil {
		var ne *zfs.NameError
		if errors.As(err, &ne) {
			return fmt.Errorf("client identity %q is not a valid ZFS dataset name component: %s", id, ne.Reason)
		}
		return fmt.Errorf("client identity %q: %w", id, err)
	}
	return nil
}

func (d *decoder) identity(path string, line int, id string) {
	if err := ValidateClientIdentity(id); err != nil {
		d.errf(path, line, "%v", err)
	}
}

// checkHostPort checks a "host:port" address (host may be empty for
// listen addresses).
func (d *decoder) checkHostPort(path string, line int, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		d.errf(path, line, "invalid address %q (want host:port, e.g. \"backup.example.com:8888\" or \":8888\")", addr)
		return
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		d.errf(path, line, "invalid port %q in address %q (want 1 to 65535)", port, addr)
	}
}

var connectTypes = []string{TransportTCP, TransportTLS, TransportSSH, TransportLocal}

func (d *decoder) connect(m *mapping, why string) *Connect {
	cm, ok := d.section(m, "connect", why)
	if !ok {
		return nil
	}
	typ, ok := d.typeOf(cm, "transport", connectTypes...)
	if !ok {
		return nil
	}
	c := &Connect{Type: typ, Pos: cm.pos()}
	addr := func() {
		c.Address = cm.reqStr("address", "")
		if c.Address != "" {
			d.checkHostPort(child(cm.path, "address"), cm.keyLine("address"), c.Address)
		}
	}
	switch typ {
	case TransportTCP:
		addr()
		c.DialTimeout = cm.goDuration("dial_timeout", DefaultDialTimeout, true)
	case TransportTLS:
		addr()
		c.CA = cm.reqStr("ca", "")
		c.Cert = cm.reqStr("cert", "")
		c.Key = cm.reqStr("key", "")
		c.ServerCN = cm.reqStr("server_cn", "the server certificate's expected common name")
		c.DialTimeout = cm.goDuration("dial_timeout", DefaultDialTimeout, true)
	case TransportSSH:
		c.Host = cm.reqStr("host", "")
		c.User = cm.reqStr("user", "")
		c.Port = cm.integer("port", 22, 1, 65535)
		c.IdentityFile = cm.reqStr("identity_file", "")
		c.Options = strs(cm.strList("options"))
		c.DialTimeout = cm.goDuration("dial_timeout", DefaultDialTimeout, true)
		// Inert (warned by the registry), still of zrepl's types.
		cm.strList("transport_open_command")
		cm.str("ssh_command")
	case TransportLocal:
		c.ListenerName = cm.reqStr("listener_name", "must match the serve.listener_name of a job in this config")
		c.ClientIdentity = cm.reqStr("client_identity", "")
		if c.ClientIdentity != "" {
			d.identity(child(cm.path, "client_identity"), cm.keyLine("client_identity"), c.ClientIdentity)
		}
		c.DialTimeout = cm.goDuration("dial_timeout", DefaultLocalDialTimeout, true)
	}
	cm.done()
	return c
}

var serveTypes = []string{TransportTCP, TransportTLS, TransportStdinserver, TransportLocal}

func (d *decoder) serve(m *mapping, why string) *Serve {
	sm, ok := d.section(m, "serve", why)
	if !ok {
		return nil
	}
	typ, ok := d.typeOf(sm, "transport", serveTypes...)
	if !ok {
		return nil
	}
	s := &Serve{Type: typ, Pos: sm.pos()}
	listen := func() {
		s.Listen = sm.reqStr("listen", "")
		if s.Listen != "" {
			d.checkHostPort(child(sm.path, "listen"), sm.keyLine("listen"), s.Listen)
		}
		s.ListenFreebind = sm.boolean("listen_freebind", false)
	}
	identities := func(key string) []string {
		if sm.get(key) == nil {
			sm.missing(key, "")
			return nil
		}
		items := sm.strList(key)
		ids := strs(items)
		seen := map[string]bool{}
		for _, it := range items {
			d.identity(it.Path, it.Line, it.S)
			if seen[it.S] {
				d.errf(it.Path, it.Line, "client identity %q appears twice", it.S)
			}
			seen[it.S] = true
		}
		if len(ids) == 0 {
			d.errf(child(sm.path, key), sm.keyLine(key), "empty list: no client could connect")
		}
		return ids
	}
	switch typ {
	case TransportTCP:
		listen()
		s.Clients = d.tcpClients(sm)
	case TransportTLS:
		listen()
		s.CA = sm.reqStr("ca", "")
		s.Cert = sm.reqStr("cert", "")
		s.Key = sm.reqStr("key", "")
		s.ClientCNs = identities("client_cns")
		// zrepl takes 0, then fails every handshake at once.
		s.HandshakeTimeout = sm.goDuration("handshake_timeout", DefaultHandshakeTimeout, false)
	case TransportStdinserver:
		s.ClientIdentities = identities("client_identities")
	case TransportLocal:
		s.ListenerName = sm.reqStr("listener_name", "")
	}
	sm.done()
	return s
}

func (d *decoder) tcpClients(sm *mapping) []TCPClient {
	cm, ok := d.dict(sm, "clients", "maps client IP addresses or networks to identities")
	if !ok {
		return nil
	}
	var out []TCPClient
	for _, k := range cm.order {
		cm.know(k)
		p, line := mapKey(cm.path, k), cm.keys[k].Line
		var prefix netip.Prefix
		isNet := strings.Contains(k, "/")
		if isNet {
			pr, err := netip.ParsePrefix(k)
			if err != nil {
				d.errf(p, line, "invalid network %q (want an IP address or CIDR network like 10.0.0.0/24)", k)
				continue
			}
			prefix = pr.Masked()
		} else {
			a, err := netip.ParseAddr(k)
			if err != nil {
				d.errf(p, line, "invalid IP address %q (want an IP address or CIDR network like 10.0.0.0/24)", k)
				continue
			}
			prefix = netip.PrefixFrom(a, a.BitLen())
		}
		v := d.resolve(cm.vals[k])
		if v == nil {
			d.errf(p, line, "want a client identity, got null")
			continue
		}
		id, ok := d.scalar(p, v)
		if !ok {
			continue
		}
		check := id
		if strings.Contains(id, "*") {
			if !isNet || strings.Count(id, "*") > 1 {
				d.errf(p, line, "client identity %q: a single '*' (standing for the client's address) is only allowed for networks", id)
				continue
			}
			check = strings.ReplaceAll(id, "*", "x")
		}
		if err := ValidateClientIdentity(check); err != nil {
			d.errf(p, line, "%v", err)
			continue
		}
		out = append(out, TCPClient{Prefix: prefix, Identity: id})
	}
	if len(cm.order) == 0 {
		d.errf(cm.path, cm.line, "empty clients map: no client could connect")
	}
	return out
}
