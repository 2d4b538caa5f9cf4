// Package resumetoken reads and writes OpenZFS receive_resume_token values:
// the string a partially received dataset carries so that `zfs send -t` can
// continue where the stream broke off. It is pure Go so the model backend
// can hand out real-format tokens and the engine can inspect a token
// (which snapshot, full or incremental, which flags) without calling zfs.
//
// A token is "<version>-<checksum>-<packed length>-<payload>": the version
// in decimal, checksum and length in hex, and the payload the hex of a
// zlib-compressed packed nvlist. The checksum is the first word of a fletcher-4 over the
// compressed bytes, in the producing host's word order, with a tail of
// fewer than 4 bytes left out (both verified against a real token).
//
// Token.Match is the one rule for whether a token continues a given send;
// the planner, the sending endpoint and both backends ask it.
package resumetoken

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"zrepl.dev/zrepl/engine/zfs"
)

// Version is the only token version OpenZFS has defined
// (ZFS_SEND_RESUME_TOKEN_VERSION).
const Version = 1

const (
	// MaxPackedLen caps the nvlist size a token may claim. Real tokens are
	// a few hundred bytes (redacted sends add a list of GUIDs); the cap
	// keeps a hostile token from making us allocate much.
	MaxPackedLen = 1 << 20
	// maxCompressedLen is the most zlib could need for MaxPackedLen bytes
	// of incompressible input, with room to spare.
	maxCompressedLen = MaxPackedLen + MaxPackedLen/8 + 64
)

// Token is the decoded content of a resume token.
type Token struct {
	// Object and Offset locate where the interrupted stream stopped; Bytes
	// is how much of it was received.
	Object, Offset, Bytes uint64
	ToGUID                uint64
	ToName                string // "pool/fs@snap"
	FromGUID              uint64 // 0 for a full send (field absent)
	// The send flags the interrupted stream used; a resumed send must use
	// them again.
	EmbedOK, LargeBlockOK, CompressOK, RawOK, SavedOK bool
}

// Incremental says whether the token continues an incremental send.
func (t Token) Incremental() bool { return t.FromGUID != 0 }

// Field names in the token nvlist, in the order the kernel adds them.
const (
	fieldFromGUID     = "fromguid"
	fieldObject       = "object"
	fieldOffset       = "offset"
	fieldBytes        = "bytes"
	fieldToGUID       = "toguid"
	fieldToName       = "toname"
	fieldLargeBlockOK = "largeblockok"
	fieldEmbedOK      = "embedok"
	fieldCompressOK   = "compressok"
	fieldRawOK        = "rawok"
	fieldSavedOK      = "savedok"
)

// pairs lists t's fields as the kernel would put them in the nvlist.
func (t Token) pairs() []nvPair {
	var ps []nvPair
	u := func(name string, v uint64) { ps = append(ps, nvPair{Name: name, Type: typeUint64, U64: v}) }
	flag := func(name string, set bool) {
		if set {
			ps = append(ps, nvPair{Name: name, Type: typeBoolean})
		}
	}
	if t.FromGUID != 0 {
		u(fieldFromGUID, t.FromGUID)
	}
	u(fieldObject, t.Object)
	u(fieldOffset, t.Offset)
	u(fieldBytes, t.Bytes)
	u(fieldToGUID, t.ToGUID)
	ps = append(ps, nvPair{Name: fieldToName, Type: typeString, Str: t.ToName})
	flag(fieldLargeBlockOK, t.LargeBlockOK)
	flag(fieldEmbedOK, t.EmbedOK)
	flag(fieldCompressOK, t.CompressOK)
	flag(fieldRawOK, t.RawOK)
	flag(fieldSavedOK, t.SavedOK)
	return ps
}

// zlibWriters keep zlib's compressor state (about a megabyte) between
// Encodes: a Writer after Reset writes what a new one would.
var zlibWriters = sync.Pool{New: func() any { return zlib.NewWriter(nil) }}

// Encode returns t as a token string `zfs send -t` accepts: a native
// little-endian nvlist, as an x86 or arm64 kernel writes it. The zlib bytes
// differ from the kernel's, which no reader cares about. A ToName with a
// NUL byte cannot be represented; it is cut at the NUL, as C would.
func (t Token) Encode() string {
	if i := strings.IndexByte(t.ToName, 0); i >= 0 {
		t.ToName = t.ToName[:i]
	}
	packed := packNative(t.pairs(), binary.LittleEndian)
	var buf bytes.Buffer
	zw := zlibWriters.Get().(*zlib.Writer)
	zw.Reset(&buf)
	// Writes to a bytes.Buffer cannot fail.
	_, _ = zw.Write(packed)
	_ = zw.Close()
	zlibWriters.Put(zw)
	compressed := buf.Bytes()
	return fmt.Sprintf("%d-%x-%x-%s", Version, fletcher4Word0(compressed, binary.LittleEndian),
		len(packed), hex.EncodeToString(compressed))
}

// String shows the token the way `zfs send -nvt` prints its contents.
func (t Token) String() string {
	var sb strings.Builder
	sb.WriteString("resume token contents:\nnvlist version: 0")
	for _, p := range t.pairs() {
		switch p.Type {
		case typeUint64:
			fmt.Fprintf(&sb, "\n\t%s = 0x%x", p.Name, p.U64)
		case typeString:
			fmt.Fprintf(&sb, "\n\t%s = %s", p.Name, p.Str)
		case typeBoolean:
			fmt.Fprintf(&sb, "\n\t%s = 1", p.Name)
		}
	}
	return sb.String()
}

// DecodeError says why a string is not a valid resume token. It matches
// zfs.ErrResumeTokenCorrupt with errors.Is.
type DecodeError struct {
	// Token is the offending token, shortened for display when long.
	Token  string
	Reason string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("resume token corrupt: %s (token %q)", e.Reason, e.Token)
}

// Unwrap gives every *DecodeError the kind zfs.ErrResumeTokenCorrupt, for
// errors.Is and for zfs.KindOf (which rpc uses to carry the kind across
// the wire).
func (e *DecodeError) Unwrap() error { return zfs.ErrResumeTokenCorrupt }

// maxShownToken bounds how much of a token an error message repeats.
const maxShownToken = 64

func decodeErr(tok, format string, args ...any) error {
	if len(tok) > maxShownToken {
		tok = tok[:maxShownToken-3] + "..."
	}
	return &DecodeError{Token: tok, Reason: fmt.Sprintf(format, args...)}
}

// Decode parses a token string as `zfs get receive_resume_token` shows it.
// It checks everything libzfs checks (version, checksum, length, nvlist)
// and that the fields zfs send -t needs are present with their types.
// Unknown fields, such as redact_snaps of newer OpenZFS, are ignored.
func Decode(s string) (Token, error) {
	if s == "" {
		return Token{}, decodeErr(s, "empty token")
	}
	parts := strings.SplitN(s, "-", 4)
	if len(parts) != 4 {
		return Token{}, decodeErr(s, "want 4 dash-separated fields <version>-<checksum>-<length>-<payload>, got %d", len(parts))
	}
	if !isDigits(parts[0]) {
		return Token{}, decodeErr(s, "bad version %q: not a decimal number", parts[0])
	}
	if v, err := strconv.ParseUint(parts[0], 10, 32); err != nil || v != Version {
		return Token{}, decodeErr(s, "unsupported version %s (want %d)", parts[0], Version)
	}
	checksum, err := parseHex(parts[1])
	if err != nil {
		return Token{}, decodeErr(s, "bad checksum field %q: %v", parts[1], err)
	}
	packedLen, err := parseHex(parts[2])
	if err != nil {
		return Token{}, decodeErr(s, "bad length field %q: %v", parts[2], err)
	}
	if packedLen > MaxPackedLen {
		return Token{}, decodeErr(s, "length 0x%x exceeds the limit of 0x%x bytes", packedLen, MaxPackedLen)
	}
	payload := parts[3]
	switch {
	case payload == "":
		return Token{}, decodeErr(s, "empty payload")
	case len(payload) > 2*maxCompressedLen:
		return Token{}, decodeErr(s, "payload of %d hex digits exceeds the limit of %d", len(payload), 2*maxCompressedLen)
	case len(payload)%2 != 0:
		return Token{}, decodeErr(s, "bad hex in payload: odd number of digits (%d)", len(payload))
	}
	for i := 0; i < len(payload); i++ {
		if !isHexDigit(payload[i]) {
			return Token{}, decodeErr(s, "bad hex in payload: %q at digit %d", payload[i], i)
		}
	}
	compressed, err := hex.DecodeString(payload)
	if err != nil { // unreachable after the scan above; kept as a guard
		return Token{}, decodeErr(s, "bad hex in payload: %v", err)
	}
	// Accept either word order: the kernel sums in its native order.
	if sum := fletcher4Word0(compressed, binary.LittleEndian); sum != checksum &&
		fletcher4Word0(compressed, binary.BigEndian) != checksum {
		return Token{}, decodeErr(s, "checksum mismatch: token says 0x%x, payload sums to 0x%x", checksum, sum)
	}
	zr, err := zlib.NewReader(bytes.NewReader(compressed))
	if err != nil {
		return Token{}, decodeErr(s, "zlib error: %v", err)
	}
	// Reading one byte past the claimed length tells "too long" apart; a
	// shorter read ended at the stream's end, after zlib's own checksum.
	packed, err := io.ReadAll(io.LimitReader(zr, int64(packedLen)+1))
	if err != nil {
		return Token{}, decodeErr(s, "zlib error: %v", err)
	}
	if uint64(len(packed)) > packedLen {
		return Token{}, decodeErr(s, "length mismatch: token says 0x%x bytes, payload decompresses to more", packedLen)
	}
	if uint64(len(packed)) != packedLen {
		return Token{}, decodeErr(s, "length mismatch: token says 0x%x bytes, payload decompresses to 0x%x", packedLen, len(packed))
	}
	pairs, err := unpack(packed)
	if err != nil {
		return Token{}, decodeErr(s, "%v", err)
	}
	t, err := fromPairs(pairs)
	if err != nil {
		return Token{}, decodeErr(s, "%v", err)
	}
	return t, nil
}

// fromPairs fills a Token from the nvlist's pairs.
func fromPairs(pairs []nvPair) (Token, error) {
	var t Token
	u64s := map[string]*uint64{
		fieldFromGUID: &t.FromGUID,
		fieldObject:   &t.Object,
		fieldOffset:   &t.Offset,
		fieldBytes:    &t.Bytes,
		fieldToGUID:   &t.ToGUID,
	}
	flags := map[string]*bool{
		fieldLargeBlockOK: &t.LargeBlockOK,
		fieldEmbedOK:      &t.EmbedOK,
		fieldCompressOK:   &t.CompressOK,
		fieldRawOK:        &t.RawOK,
		fieldSavedOK:      &t.SavedOK,
	}
	seen := map[string]bool{}
	for _, p := range pairs {
		var want dataType
		if dst, ok := u64s[p.Name]; ok {
			want = typeUint64
			*dst = p.U64
		} else if dst, ok := flags[p.Name]; ok {
			want = typeBoolean
			*dst = true
		} else if p.Name == fieldToName {
			want = typeString
			t.ToName = p.Str
		} else {
			continue
		}
		if p.Type != want {
			return Token{}, fmt.Errorf("field %q has type %v, want %v", p.Name, p.Type, want)
		}
		// The kernel builds the list with unique names; a repeat is damage.
		if seen[p.Name] {
			return Token{}, fmt.Errorf("duplicate field %q", p.Name)
		}
		seen[p.Name] = true
	}
	for _, name := range []string{fieldObject, fieldOffset, fieldBytes, fieldToGUID, fieldToName} {
		if !seen[name] {
			return Token{}, fmt.Errorf("missing required field %q", name)
		}
	}
	return t, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseHex parses a number as the kernel prints it with %llx: 1 to 16
// hex digits, no prefix or sign.
func parseHex(s string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty")
	}
	if len(s) > 16 {
		return 0, fmt.Errorf("more than 16 hex digits")
	}
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return 0, fmt.Errorf("%q at digit %d is not hex", s[i], i)
		}
	}
	return strconv.ParseUint(s, 16, 64)
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
