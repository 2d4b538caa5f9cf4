package logging

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"log/syslog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
)

var at = time.Date(2024, 5, 6, 7, 8, 9, 0, time.FixedZone("CEST", 2*3600))

func record(l slog.Level, msg string, args ...any) slog.Record {
	r := slog.NewRecord(at, l, msg, 0)
	r.Add(args...)
	return r
}

func stdoutOutlet(format config.LogFormat, level config.LogLevel, timeOn, color bool) config.LogOutlet {
	return config.LogOutlet{Type: config.OutletStdout, Level: level, Format: format, Time: timeOn, Color: color}
}

func lines(t *testing.T, outlets []config.LogOutlet, terminal bool, recs ...slog.Record) []string {
	t.Helper()
	var b bytes.Buffer
	h, err := New(outlets, Stdout{W: &b, Terminal: terminal})
	require.NoError(t, err)
	defer h.Close()
	for _, r := range recs {
		require.NoError(t, h.Handle(t.Context(), r))
	}
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}

// The human format as zrepl prints it: time, short level, the job in
// brackets, the message, the other fields quoted.
func TestHumanFormat(t *testing.T) {
	r := record(slog.LevelInfo, "replication done", "job", "prod", "filesystems", 2, "err", errors.New("x y"))
	o := []config.LogOutlet{stdoutOutlet(config.FormatHuman, config.LevelDebug, true, true)}
	assert.Equal(t, []string{`2024-05-06T07:08:09+02:00 [INFO][prod]: replication done filesystems="2" err="x y"`}, lines(t, o, false, r))

	// time: false off a terminal drops the time; on a terminal the time
	// stays and colours are on.
	o = []config.LogOutlet{stdoutOutlet(config.FormatHuman, config.LevelDebug, false, true)}
	assert.Equal(t, []string{`[WARN]: no job here`}, lines(t, o, false, record(slog.LevelWarn, "no job here")))
	assert.Equal(t, []string{"2024-05-06T07:08:09+02:00 [\x1b[91mERRO\x1b[0m][\x1b[91mj\x1b[0m]: boom \x1b[91mk\x1b[0m=\"v\""},
		lines(t, o, true, record(slog.LevelError, "boom", "job", "j", "k", "v")))
	// color: false on a terminal.
	o = []config.LogOutlet{stdoutOutlet(config.FormatHuman, config.LevelDebug, false, false)}
	assert.Equal(t, []string{`2024-05-06T07:08:09+02:00 [DEBG]: d`}, lines(t, o, true, record(slog.LevelDebug, "d")))
}

func TestLevelsFilter(t *testing.T) {
	o := []config.LogOutlet{stdoutOutlet(config.FormatHuman, config.LevelWarn, false, false)}
	got := lines(t, o, false, record(slog.LevelDebug, "d"), record(slog.LevelInfo, "i"), record(slog.LevelWarn, "w"), record(slog.LevelError, "e"))
	assert.Equal(t, []string{"[WARN]: w", "[ERRO]: e"}, got)
}

func TestLogfmtAndJSON(t *testing.T) {
	r := record(slog.LevelInfo, "snapshots taken", "job", "p", "count", 1, "names", "a b")
	o := []config.LogOutlet{stdoutOutlet(config.FormatLogfmt, config.LevelInfo, true, false)}
	assert.Equal(t, []string{`time=2024-05-06T07:08:09+02:00 level=info job=p msg="snapshots taken" count=1 names="a b"`}, lines(t, o, false, r))

	o = []config.LogOutlet{stdoutOutlet(config.FormatJSON, config.LevelInfo, false, false)}
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines(t, o, false, r)[0]), &got))
	assert.Equal(t, map[string]any{"time": "2024-05-06T07:08:09+02:00", "level": "info", "msg": "snapshots taken", "job": "p", "count": float64(1), "names": "a b"}, got)
}

func TestWithAttrsAndGroups(t *testing.T) {
	var b bytes.Buffer
	h, err := New([]config.LogOutlet{stdoutOutlet(config.FormatLogfmt, config.LevelInfo, false, false)}, Stdout{W: &b})
	require.NoError(t, err)
	l := slog.New(h).With("job", "p").WithGroup("g").With("a", 1)
	l.Info("m", "b", 2)
	assert.Equal(t, "level=info job=p msg=m g.a=1 g.b=2\n", b.String())
}

func TestEmptyListLogsWarningsPlainly(t *testing.T) {
	got := lines(t, nil, false, record(slog.LevelInfo, "i"), record(slog.LevelWarn, "w", "job", "j"))
	assert.Equal(t, []string{"[j]: w"}, got, "zrepl's outlet of an empty logging list: human, warn, no time or level")
}

// syslogServer is a unixgram socket standing in for /dev/log.
type syslogServer struct {
	path string
	conn *net.UnixConn
	got  chan string
}

func newSyslogServer(t *testing.T, path string) *syslogServer {
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	s := &syslogServer{path: path, conn: c, got: make(chan string, 100)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.got <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { c.Close() })
	return s
}

func (s *syslogServer) next(t *testing.T) string {
	select {
	case m := <-s.got:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no syslog message")
		return ""
	}
}

func TestSyslogSeveritiesAndRedial(t *testing.T) {
	dir, err := os.MkdirTemp("", "zlog")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "log")
	srv := newSyslogServer(t, path)
	now := at
	sink := &syslogSink{facility: syslog.LOG_DAEMON, retry: 10 * time.Second, network: "unixgram", addr: path, now: func() time.Time { return now }}
	h := &Handler{outlets: []*outlet{{kind: config.OutletSyslog, minLevel: slog.LevelDebug, format: config.FormatHuman, sink: sink}}}
	for _, c := range []struct {
		level slog.Level
		pri   syslog.Priority
	}{{slog.LevelDebug, syslog.LOG_DEBUG}, {slog.LevelInfo, syslog.LOG_INFO}, {slog.LevelWarn, syslog.LOG_WARNING}, {slog.LevelError, syslog.LOG_ERR}} {
		require.NoError(t, h.Handle(t.Context(), record(c.level, "hello", "job", "j")))
		m := srv.next(t)
		assert.True(t, strings.HasPrefix(m, "<"+itoa(int(syslog.LOG_DAEMON|c.pri))+">"), "%v: %s", c.level, m)
		assert.True(t, strings.HasSuffix(m, "zrepl["+itoa(os.Getpid())+"]: [j]: hello\n"), m)
	}

	// The server goes away: the write fails and the writer is dropped;
	// entries within retry_interval are dropped without an attempt.
	srv.conn.Close()
	os.Remove(path)
	assert.Error(t, sink.write(slog.LevelInfo, []byte("lost")))
	now = now.Add(5 * time.Second)
	srv = newSyslogServer(t, path)
	require.NoError(t, sink.write(slog.LevelInfo, []byte("dropped")))
	select {
	case m := <-srv.got:
		t.Fatalf("written before retry_interval passed: %s", m)
	case <-time.After(100 * time.Millisecond):
	}
	now = now.Add(6 * time.Second)
	require.NoError(t, sink.write(slog.LevelInfo, []byte("back")))
	assert.Contains(t, srv.next(t), "back")
}

func itoa(i int) string { return strconv.Itoa(i) }

type testPKI struct {
	dir string
	ca  *x509.Certificate
	key *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *testPKI {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	p := &testPKI{dir: t.TempDir(), ca: ca, key: key}
	require.NoError(t, os.WriteFile(filepath.Join(p.dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return p
}

func (p *testPKI) issue(t *testing.T, name string, usage x509.ExtKeyUsage, dns ...string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	require.NoError(t, os.WriteFile(filepath.Join(p.dir, name+".crt"), certPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(p.dir, name+".key"), keyPEM, 0o600))
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	return c
}

// A tcp outlet with TLS sends lines to a server that requires the client
// certificate, whose name the server checks.
func TestTCPOutletWithClientAuth(t *testing.T) {
	pki := newPKI(t)
	server := pki.issue(t, "server", x509.ExtKeyUsageServerAuth, "localhost")
	pki.issue(t, "client", x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	l, err := tls.Listen("tcp", "localhost:0", &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})
	require.NoError(t, err)
	defer l.Close()
	got := make(chan string, 10)
	var clientCN string
	var mu sync.Mutex
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if tc.Handshake() == nil {
			mu.Lock()
			clientCN = tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			mu.Unlock()
		}
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			got <- sc.Text()
		}
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	o := config.LogOutlet{Type: config.OutletTCP, Level: config.LevelInfo, Format: config.FormatLogfmt, Net: "tcp", Address: "localhost:" + port, RetryInterval: time.Second,
		TLS: &config.LogTLS{CA: filepath.Join(pki.dir, "ca.crt"), Cert: filepath.Join(pki.dir, "client.crt"), Key: filepath.Join(pki.dir, "client.key")}}
	h, err := New([]config.LogOutlet{o}, Stdout{W: &bytes.Buffer{}})
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.Handle(t.Context(), record(slog.LevelInfo, "over tls", "job", "j")))
	select {
	case line := <-got:
		assert.Equal(t, `time=2024-05-06T07:08:09+02:00 level=info job=j msg="over tls"`, line)
	case <-time.After(10 * time.Second):
		t.Fatal("no line arrived")
	}
	mu.Lock()
	assert.Equal(t, "client", clientCN)
	mu.Unlock()
}

func TestTCPOutletFilesAreCheckedAtBuild(t *testing.T) {
	o := config.LogOutlet{Type: config.OutletTCP, Level: config.LevelInfo, Format: config.FormatHuman, Net: "tcp", Address: "localhost:1",
		TLS: &config.LogTLS{CA: "/nonexistent/ca", Cert: "/nonexistent/c", Key: "/nonexistent/k"}}
	_, err := New([]config.LogOutlet{o}, Stdout{W: &bytes.Buffer{}})
	assert.ErrorContains(t, err, "cannot load the client certificate")
	assert.ErrorContains(t, err, "/nonexistent/c")
}

// A failing outlet reports to the first one.
func TestFailuresGoToTheFirstOutlet(t *testing.T) {
	var b bytes.Buffer
	h, err := New([]config.LogOutlet{stdoutOutlet(config.FormatHuman, config.LevelError, false, false)}, Stdout{W: &b})
	require.NoError(t, err)
	h.outlets = append(h.outlets, &outlet{kind: config.OutletTCP, minLevel: slog.LevelInfo, format: config.FormatHuman, sink: failing{}})
	require.NoError(t, h.Handle(t.Context(), record(slog.LevelInfo, "x")))
	assert.Equal(t, "[ERRO]: cannot write to log outlet outlet=\"tcp\" err=\"down\"\n", b.String())
}

type failing struct{}

func (failing) write(slog.Level, []byte) error { return errors.New("down") }
