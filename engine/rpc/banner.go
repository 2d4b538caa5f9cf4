package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ProtocolVersion is the zrepl wire protocol version this package speaks:
// that of zrepl v0.7. Peers of other versions refuse each other at the
// banner.
const ProtocolVersion = 7

const (
	// bannerMagic follows the length in every banner.
	bannerMagic = "ZREPL_ZFS_REPLICATION PROTOVERSION="
	// bannerMaxLen bounds a banner's body (zrepl: 16 pages).
	bannerMaxLen = 16 * 4096
	// maxBannerVersion is the largest version the 4-digit field holds.
	maxBannerVersion = 9999

	// labelLen is the fixed length of the label a client sends after the
	// banners, padded with NUL bytes.
	labelLen     = 64
	labelControl = "zrepl_control"
	labelData    = "zrepl_data"

	// DefaultHandshakeTimeout bounds the banner exchange and the label
	// (zrepl: 10 s each).
	DefaultHandshakeTimeout = 10 * time.Second
)

// ErrVersionMismatch matches a refused connection whose peer speaks another
// protocol version.
var ErrVersionMismatch = errors.New("protocol version mismatch")

// ErrNotZrepl matches a connection whose peer did not send a zrepl banner.
var ErrNotZrepl = errors.New("peer does not speak the zrepl protocol")

// VersionMismatchError names both versions and which to upgrade.
type VersionMismatchError struct {
	// Peer is "server" or "client".
	Peer          string
	Ours, Theirs  int
	theirsProject bool // the peer is a pre-zrepl-protocol build of this project
}

func (e *VersionMismatchError) Error() string {
	if e.theirsProject {
		return fmt.Sprintf("protocol version mismatch: we speak zrepl wire protocol version %d (zrepl v0.7), the %s speaks this project's own earlier protocol version %d: upgrade the %s",
			e.Ours, e.Peer, e.Theirs, e.Peer)
	}
	advice := "upgrade the " + e.Peer
	if e.Theirs > e.Ours {
		advice = "the " + e.Peer + " is newer: upgrade this host"
	}
	return fmt.Sprintf("protocol version mismatch: we speak zrepl wire protocol version %d (zrepl v0.7), the %s speaks version %d (%s)",
		e.Ours, e.Peer, e.Theirs, advice)
}

func (e *VersionMismatchError) Is(target error) bool { return target == ErrVersionMismatch }

// Permanent tells the replication driver not to retry: only an upgrade of
// one side resolves a version mismatch.
func (e *VersionMismatchError) Permanent() bool { return true }

// banner is what each side says first: its protocol version and the
// extensions it speaks.
type banner struct {
	version    int
	extensions []string
}

// encode writes "%010d " (the length of the rest), then
// "ZREPL_ZFS_REPLICATION PROTOVERSION=%04d EXTENSIONS=%04d\n", then one
// line per extension.
func (b banner) encode() ([]byte, error) {
	if b.version <= 0 || b.version > maxBannerVersion {
		return nil, fmt.Errorf("banner: version %d out of range", b.version)
	}
	var body strings.Builder
	fmt.Fprintf(&body, "%s%04d EXTENSIONS=%04d\n", bannerMagic, b.version, len(b.extensions))
	for _, e := range b.extensions {
		if strings.ContainsRune(e, '\n') || !utf8.ValidString(e) {
			return nil, fmt.Errorf("banner: bad extension %q", e)
		}
		body.WriteString(e)
		body.WriteByte('\n')
	}
	return fmt.Appendf(nil, "%010d %s", body.Len(), body.String()), nil
}

// bannerPrefixLen is the length field and its space.
const bannerPrefixLen = 11

// oldHelloMagic starts the hello of this project's own protocol before it
// spoke zrepl's (versions 1 and 2): "ZRPL", version (4 bytes big endian),
// kind (1 byte).
const oldHelloMagic = "ZRPL"

// decodeBanner reads a banner whose first bannerPrefixLen bytes are
// prefix (already read). It is strict: anything but a well-formed banner
// is an error wrapping ErrNotZrepl, quoting what came.
func decodeBanner(prefix []byte, r io.Reader) (banner, error) {
	notZrepl := func(what string, got []byte) error {
		return fmt.Errorf("%w: %s (it sent %q)", ErrNotZrepl, what, truncateText(string(got), 80))
	}
	if len(prefix) != bannerPrefixLen || prefix[10] != ' ' {
		return banner{}, notZrepl("no banner", prefix)
	}
	n, err := strconv.Atoi(string(prefix[:10]))
	if err != nil || n < 0 || !isDigits(prefix[:10]) {
		return banner{}, notZrepl("no banner length", prefix)
	}
	if n > bannerMaxLen {
		return banner{}, notZrepl(fmt.Sprintf("banner of %d bytes, the limit is %d", n, bannerMaxLen), prefix)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return banner{}, fmt.Errorf("read the peer's banner: %w", err)
	}
	rest, ok := bytes.CutPrefix(body, []byte(bannerMagic))
	if !ok {
		return banner{}, notZrepl("no zrepl banner", append(prefix, body...))
	}
	line, exts, ok := bytes.Cut(rest, []byte("\n"))
	// line: "%04d EXTENSIONS=%04d"
	if !ok || len(line) != 4+len(" EXTENSIONS=")+4 || !isDigits(line[:4]) || string(line[4:16]) != " EXTENSIONS=" || !isDigits(line[16:]) {
		return banner{}, notZrepl("malformed zrepl banner", append(prefix, body...))
	}
	version, _ := strconv.Atoi(string(line[:4]))
	count, _ := strconv.Atoi(string(line[16:]))
	if version < 1 {
		return banner{}, notZrepl("protocol version 0", append(prefix, body...))
	}
	b := banner{version: version}
	if count > 0 {
		if len(exts) == 0 || exts[len(exts)-1] != '\n' || bytes.Count(exts, []byte("\n")) != count || !utf8.Valid(exts) {
			return banner{}, notZrepl("malformed extension lines", append(prefix, body...))
		}
		for _, e := range strings.Split(string(exts[:len(exts)-1]), "\n") {
			b.extensions = append(b.extensions, e)
		}
	} else if len(exts) != 0 {
		return banner{}, notZrepl("data after the banner", append(prefix, body...))
	}
	return b, nil
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func deadline(ctx context.Context, timeout time.Duration) time.Time {
	d := time.Now().Add(timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		return cd
	}
	return d
}

// handshake is one connection's banner exchange, from the client
// (label != "": it is sent after the banners) or the server (label ==
// ""). It returns the peer's banner. The server reads the client's banner
// before it sends its own (zrepl's sides both write first, which only
// works over buffered transports), and so can also answer a client of
// this project's earlier protocol in that protocol's words.
func handshake(ctx context.Context, conn net.Conn, ours banner, label string, timeout time.Duration) (theirs banner, err error) {
	if err := conn.SetDeadline(deadline(ctx, timeout)); err != nil {
		return banner{}, fmt.Errorf("handshake: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			err = fmt.Errorf("handshake: %w", context.Cause(ctx))
		}
	}()
	peer := "server"
	if label == "" {
		peer = "client"
	}
	enc, err := ours.encode()
	if err != nil {
		return banner{}, err
	}
	if label != "" {
		if _, err := conn.Write(enc); err != nil {
			return banner{}, fmt.Errorf("handshake: send banner: %w", err)
		}
	}
	readErr := func(err error) error {
		if label != "" && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			return fmt.Errorf("handshake: the server closed the connection before its banner (it may speak an earlier protocol of this project, or a transport refused us): %w", err)
		}
		return fmt.Errorf("handshake: read the %s's banner: %w", peer, err)
	}
	// The first 4 bytes alone tell an old client of this project, whose
	// hello is only 9 bytes long.
	var prefix [bannerPrefixLen]byte
	if _, err := io.ReadFull(conn, prefix[:4]); err != nil {
		return banner{}, readErr(err)
	}
	if label == "" && string(prefix[:4]) == oldHelloMagic {
		var v [5]byte
		if _, err := io.ReadFull(conn, v[:]); err != nil {
			return banner{}, readErr(err)
		}
		e := &VersionMismatchError{Peer: "client", Ours: ours.version, Theirs: int(binary.BigEndian.Uint32(v[:4])), theirsProject: true}
		refuseOldClient(conn, ours.version, e.Error())
		return banner{}, e
	}
	if _, err := io.ReadFull(conn, prefix[4:]); err != nil {
		return banner{}, readErr(err)
	}
	theirs, err = decodeBanner(prefix[:], conn)
	if err != nil {
		return banner{}, fmt.Errorf("handshake with the %s: %w", peer, err)
	}
	if label == "" {
		// After the client's whole banner: over a synchronous pipe (the
		// local transport) both writing first would block each other.
		if _, err := conn.Write(enc); err != nil {
			return banner{}, fmt.Errorf("handshake: send banner: %w", err)
		}
	}
	if theirs.version != ours.version {
		return banner{}, &VersionMismatchError{Peer: peer, Ours: ours.version, Theirs: theirs.version}
	}
	if label != "" {
		var l [labelLen]byte
		copy(l[:], label)
		if _, err := conn.Write(l[:]); err != nil {
			return banner{}, fmt.Errorf("handshake: send label: %w", err)
		}
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return banner{}, fmt.Errorf("handshake: %w", err)
	}
	return theirs, nil
}

// refuseOldClient answers a client of this project's earlier protocol
// with that protocol's version refusal (magic, version, status 1, ticket,
// message), so it reports both versions; the rest of its hello is not
// read.
func refuseOldClient(conn net.Conn, version int, msg string) {
	msg = truncateText(msg, 1000)
	b := make([]byte, 19+len(msg))
	copy(b, oldHelloMagic)
	binary.BigEndian.PutUint32(b[4:], uint32(version))
	b[8] = 1
	binary.BigEndian.PutUint16(b[17:], uint16(len(msg)))
	copy(b[19:], msg)
	conn.Write(b)
}

// readLabel reads the client's label after the banners.
func readLabel(conn net.Conn, timeout time.Duration) (string, error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	var l [labelLen]byte
	if _, err := io.ReadFull(conn, l[:]); err != nil {
		return "", fmt.Errorf("read the client's label: %w", err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return "", err
	}
	return string(bytes.TrimRight(l[:], "\x00")), nil
}
