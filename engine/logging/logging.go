// Package logging is the daemon's log outlets, as zrepl has them: stdout,
// syslog and tcp (optionally TLS with a client certificate), each with a
// minimum level and a format (human, logfmt, json). New builds them from
// the config into one slog.Handler.
//
// Formats follow zrepl's. human writes
//
//	2024-05-06T07:08:09+02:00 [INFO][job]: message key="value" ...
//
// (the time only where the outlet writes times, the level in zrepl's short
// form DEBG, INFO, WARN, ERRO, the job in brackets, the other fields quoted).
// logfmt writes time=... level=... job=... msg=... then the fields; json one
// object a line with msg, time (RFC 3339), level and the fields.
//
// stdout on a terminal always writes times and colours the level and field
// names by level unless color is false; elsewhere it writes times unless
// time is false, and never colours. syslog writes no time or level into the
// message: each entry goes with the syslog severity of its level (debug,
// info, warning, err). syslog and tcp connect on the first entry and, after
// a failed connection or write, drop entries until retry_interval has passed,
// then connect again. A tcp outlet queues one entry at a time and drops what
// the connection cannot take, so that logging never blocks the daemon.
//
// An outlet that fails to write reports it to the first outlet, as in zrepl
// (which is why the first outlet should be stdout).
package logging

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"zrepl.dev/zrepl/engine/config"
)

// Stdout is where the stdout outlet writes and whether it is a terminal.
type Stdout struct {
	W        io.Writer
	Terminal bool
}

// Handler is the slog.Handler of a config's outlets.
type Handler struct {
	outlets []*outlet
	attrs   []slog.Attr // of WithAttrs, group-qualified
	group   string      // prefix of later attrs: "a.b."
}

var _ slog.Handler = (*Handler)(nil)

// outlet is one outlet: a minimum level, a format and where it writes.
type outlet struct {
	kind     string
	minLevel slog.Level
	format   config.LogFormat
	level    bool // write the level (human, logfmt)
	// time and color are the stdout outlet's settings (true for tcp);
	// terminal is whether stdout is one (see showTime, showColor).
	time, color, terminal bool
	sink                  sink
}

// showTime: on a terminal always, elsewhere as configured.
func (o *outlet) showTime() bool { return o.terminal || o.time }

// showColor: only on a terminal, as configured.
func (o *outlet) showColor() bool { return o.terminal && o.color }

// sink takes formatted lines.
type sink interface {
	write(level slog.Level, line []byte) error
}

// New builds the outlets of cfg. An explicitly empty list logs warnings
// and errors to stdout in the human format without time or level, as zrepl
// does. Certificates and keys of tcp outlets are read here: an error names
// the key and line.
func New(outlets []config.LogOutlet, stdout Stdout) (*Handler, error) {
	h := &Handler{}
	if len(outlets) == 0 {
		h.outlets = []*outlet{{kind: config.OutletStdout, minLevel: slog.LevelWarn, format: config.FormatHuman, sink: &writerSink{w: stdout.W}}}
		return h, nil
	}
	for _, o := range outlets {
		out := &outlet{kind: o.Type, minLevel: Level(o.Level), format: o.Format, level: true}
		switch o.Type {
		case config.OutletStdout:
			out.time, out.color, out.terminal = o.Time, o.Color, stdout.Terminal
			out.sink = &writerSink{w: stdout.W}
		case config.OutletSyslog:
			out.level = false
			out.sink = &syslogSink{facility: Facility(o.Facility), retry: o.RetryInterval, now: time.Now}
		case config.OutletTCP:
			out.time = true
			var tc *tls.Config
			if o.TLS != nil {
				var err error
				if tc, err = tcpTLS(o); err != nil {
					return nil, err
				}
			}
			out.sink = newTCPSink(o.Net, o.Address, tc, o.RetryInterval)
		default:
			return nil, fmt.Errorf("%s: unknown outlet type %q", o.Pos.Of("type"), o.Type)
		}
		h.outlets = append(h.outlets, out)
	}
	return h, nil
}

// Close stops the tcp outlets' senders.
func (h *Handler) Close() {
	for _, o := range h.outlets {
		if t, ok := o.sink.(*tcpSink); ok {
			t.close()
		}
	}
}

func tcpTLS(o config.LogOutlet) (*tls.Config, error) {
	t := o.TLS
	pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: cannot load the client certificate: %w", t.Pos.Of("cert"), t.Pos.Of("key"), err)
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.Pos.Of("ca"), err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", t.Pos.Of("ca"), t.CA)
	}
	host, _, err := net.SplitHostPort(o.Address)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Pos.Of("address"), err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12}, nil
}

// Level maps a config level to slog's.
func Level(l config.LogLevel) slog.Level {
	switch l {
	case config.LevelDebug:
		return slog.LevelDebug
	case config.LevelInfo:
		return slog.LevelInfo
	case config.LevelError:
		return slog.LevelError
	}
	return slog.LevelWarn
}

// Facility maps a syslog facility name to its priority.
func Facility(name string) syslog.Priority {
	facilities := map[string]syslog.Priority{
		"kern": syslog.LOG_KERN, "user": syslog.LOG_USER, "mail": syslog.LOG_MAIL, "daemon": syslog.LOG_DAEMON,
		"auth": syslog.LOG_AUTH, "syslog": syslog.LOG_SYSLOG, "lpr": syslog.LOG_LPR, "news": syslog.LOG_NEWS,
		"uucp": syslog.LOG_UUCP, "cron": syslog.LOG_CRON, "authpriv": syslog.LOG_AUTHPRIV, "ftp": syslog.LOG_FTP,
		"local0": syslog.LOG_LOCAL0, "local1": syslog.LOG_LOCAL1, "local2": syslog.LOG_LOCAL2, "local3": syslog.LOG_LOCAL3,
		"local4": syslog.LOG_LOCAL4, "local5": syslog.LOG_LOCAL5, "local6": syslog.LOG_LOCAL6, "local7": syslog.LOG_LOCAL7,
	}
	if f, ok := facilities[name]; ok {
		return f
	}
	return syslog.LOG_LOCAL0
}

func (h *Handler) Enabled(_ context.Context, l slog.Level) bool {
	for _, o := range h.outlets {
		if l >= o.minLevel {
			return true
		}
	}
	return false
}

func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), qualify(h.group, as)...)
	return &c
}

func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.group = h.group + name + "."
	return &c
}

func qualify(group string, as []slog.Attr) []slog.Attr {
	if group == "" {
		return as
	}
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = slog.Attr{Key: group + a.Key, Value: a.Value}
	}
	return out
}

// field is one field of an entry, groups flattened into "a.b.key".
type field struct {
	key string
	val slog.Value
}

func flatten(prefix string, a slog.Attr, out []field) []field {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			out = flatten(p, g, out)
		}
		return out
	}
	if a.Key == "" {
		return out
	}
	return append(out, field{prefix + a.Key, v})
}

// entry is one record with its fields.
type entry struct {
	level  slog.Level
	time   time.Time
	msg    string
	fields []field
}

func (h *Handler) Handle(_ context.Context, r slog.Record) error {
	e := entry{level: r.Level, time: r.Time, msg: r.Message}
	for _, a := range h.attrs {
		e.fields = flatten("", a, e.fields)
	}
	r.Attrs(func(a slog.Attr) bool {
		e.fields = flatten(h.group, a, e.fields)
		return true
	})
	for i, o := range h.outlets {
		if r.Level < o.minLevel {
			continue
		}
		if err := o.sink.write(r.Level, o.format1(e)); err != nil && i > 0 {
			// The first outlet is the error outlet, as in zrepl.
			first := h.outlets[0]
			report := entry{level: slog.LevelError, time: time.Now(), msg: "cannot write to log outlet",
				fields: []field{{"outlet", slog.StringValue(o.kind)}, {"err", slog.StringValue(err.Error())}}}
			first.sink.write(slog.LevelError, first.format1(report))
		}
	}
	return nil
}

// Short is zrepl's short name of a level.
func Short(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARN"
	}
	return "ERRO"
}

func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}

// levelColor is zrepl's colour of a level (bright blue, green, yellow,
// red).
func levelColor(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "94"
	case l < slog.LevelWarn:
		return "92"
	case l < slog.LevelError:
		return "93"
	}
	return "91"
}

// prefixFields are written in brackets before a human message, and first
// in logfmt, in this order (zrepl's job, subsystem and span).
var prefixFields = []string{"job", "subsystem", "span"}

// format1 formats an entry as one line.
func (o *outlet) format1(e entry) []byte {
	switch o.format {
	case config.FormatJSON:
		return formatJSON(e)
	case config.FormatLogfmt:
		return o.formatLogfmt(e)
	}
	return o.formatHuman(e)
}

func (o *outlet) formatHuman(e entry) []byte {
	var b bytes.Buffer
	paint := func(s string) string {
		if !o.showColor() {
			return s
		}
		return "\x1b[" + levelColor(e.level) + "m" + s + "\x1b[0m"
	}
	if o.showTime() {
		b.WriteString(e.time.Format(time.RFC3339))
		b.WriteByte(' ')
	}
	if o.level {
		fmt.Fprintf(&b, "[%s]", paint(Short(e.level)))
	}
	prefixed := map[int]bool{}
	for _, p := range prefixFields {
		for i, f := range e.fields {
			if f.key == p && !prefixed[i] {
				fmt.Fprintf(&b, "[%s]", paint(f.val.String()))
				prefixed[i] = true
				break
			}
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.msg)
	for i, f := range e.fields {
		if !prefixed[i] {
			fmt.Fprintf(&b, " %s=%q", paint(f.key), f.val.String())
		}
	}
	return b.Bytes()
}

func (o *outlet) formatLogfmt(e entry) []byte {
	var b bytes.Buffer
	kv := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(logfmtKey(k))
		b.WriteByte('=')
		b.WriteString(logfmtValue(v))
	}
	if o.showTime() {
		kv("time", e.time.Format(time.RFC3339Nano))
	}
	if o.level {
		kv("level", levelName(e.level))
	}
	prefixed := map[int]bool{}
	for _, p := range prefixFields {
		found := false
		for i, f := range e.fields {
			if f.key == p && !prefixed[i] {
				kv(f.key, f.val.String())
				prefixed[i], found = true, true
				break
			}
		}
		if !found {
			break // zrepl keeps the prefix only while it is complete
		}
	}
	kv("msg", e.msg)
	for i, f := range e.fields {
		if !prefixed[i] {
			kv(f.key, f.val.String())
		}
	}
	return b.Bytes()
}

// logfmtKey drops what a logfmt key may not contain.
func logfmtKey(k string) string {
	k = strings.Map(func(r rune) rune {
		if r <= ' ' || r == '=' || r == '"' || r == utf8.RuneError {
			return -1
		}
		return r
	}, k)
	if k == "" {
		return "_"
	}
	return k
}

// logfmtValue quotes a value that needs it, as go-logfmt does.
func logfmtValue(v string) string {
	if strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r == '=' || r == '"' || r == utf8.RuneError }) < 0 {
		return v
	}
	return strconv.Quote(v)
}

func formatJSON(e entry) []byte {
	data := make(map[string]any, len(e.fields)+3)
	for _, f := range e.fields {
		data[f.key] = jsonValue(f.val)
	}
	data["msg"] = e.msg
	data["time"] = e.time.Format(time.RFC3339)
	data["level"] = levelName(e.level)
	b, err := json.Marshal(data)
	if err != nil {
		b, _ = json.Marshal(map[string]any{"msg": e.msg, "time": data["time"], "level": data["level"], "log_error": err.Error()})
	}
	return b
}

func jsonValue(v slog.Value) any {
	switch v.Kind() {
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return x.Error()
		case fmt.Stringer:
			return x.String()
		default:
			if _, err := json.Marshal(x); err != nil {
				return fmt.Sprint(x)
			}
			return x
		}
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	}
	return v.Any()
}

// writerSink writes lines to a writer (stdout).
type writerSink struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *writerSink) write(_ slog.Level, line []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.w.Write(append(line, '\n'))
	return err
}
