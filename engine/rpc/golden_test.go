package rpc

// Golden wire tests: bytes zrepl v0.7.0 put on the wire talking to itself
// (testdata/zrepl-v0.7.0, see golden_record_test.go and
// platformtest/interop_record_test.go), compared with what this package
// writes and replayed into it. No ZFS needed.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"zrepl.dev/zrepl/engine/rpc/pb"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
)

// recording is one recorded connection.
type recording struct {
	name     string // <scenario>/<n>-<label>
	label    string // control, data
	c2s, s2c []byte
}

func loadRecordings(t *testing.T) []recording {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(goldenDir, "*", "*.c2s"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no recordings in %s", goldenDir)
	var out []recording
	for _, f := range files {
		base := strings.TrimSuffix(f, ".c2s")
		c2s, err := os.ReadFile(f)
		require.NoError(t, err)
		s2c, err := os.ReadFile(base + ".s2c")
		require.NoError(t, err)
		name, _ := filepath.Rel(goldenDir, base)
		label := filepath.Base(base)
		label = label[strings.Index(label, "-")+1:]
		out = append(out, recording{name: name, label: label, c2s: c2s, s2c: s2c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// splitBanner decodes the banner at the start of b with our decoder and
// returns it with its bytes and what follows.
func splitBanner(t *testing.T, b []byte) (banner, []byte, []byte) {
	t.Helper()
	require.GreaterOrEqual(t, len(b), bannerPrefixLen)
	r := bytes.NewReader(b[bannerPrefixLen:])
	bn, err := decodeBanner(b[:bannerPrefixLen], r)
	require.NoError(t, err)
	n := len(b) - r.Len()
	return bn, b[:n], b[n:]
}

// zrepl's banner, on both sides of every connection, is what we write for
// version 7 without extensions, byte for byte; the client's label follows
// it as 64 bytes padded with NULs.
func TestGoldenBanners(t *testing.T) {
	for _, rec := range loadRecordings(t) {
		t.Run(rec.name, func(t *testing.T) {
			for dir, b := range map[string][]byte{"client": rec.c2s, "server": rec.s2c} {
				bn, raw, _ := splitBanner(t, b)
				assert.Equal(t, ProtocolVersion, bn.version, "%s's banner", dir)
				assert.Empty(t, bn.extensions, "zrepl announces no extensions (%s)", dir)
				enc, err := banner{version: ProtocolVersion}.encode()
				require.NoError(t, err)
				assert.Equal(t, string(raw), string(enc), "%s's banner bytes", dir)
			}
			_, _, rest := splitBanner(t, rec.c2s)
			require.GreaterOrEqual(t, len(rest), labelLen)
			want := make([]byte, labelLen)
			copy(want, "zrepl_"+rec.label)
			assert.Equal(t, want, rest[:labelLen], "label")
		})
	}
}

// Our client's handshake against zrepl's recorded server banner writes
// zrepl's label bytes after its own banner, and negotiates no extension.
func TestGoldenClientHandshake(t *testing.T) {
	for _, rec := range loadRecordings(t) {
		t.Run(rec.name, func(t *testing.T) {
			_, serverBanner, _ := splitBanner(t, rec.s2c)
			_, _, clientRest := splitBanner(t, rec.c2s)
			ours, theirs := net.Pipe()
			// Closed only when the handshake returned: net.Pipe fails the
			// handshake's last SetDeadline once the other end is closed.
			defer theirs.Close()
			defer ours.Close()
			got := make(chan []byte, 1)
			go func() {
				// Read our banner and label, then answer as zrepl did.
				var buf bytes.Buffer
				prefix := make([]byte, bannerPrefixLen)
				if _, err := io.ReadFull(theirs, prefix); err != nil {
					got <- nil
					return
				}
				if _, err := decodeBanner(prefix, io.TeeReader(theirs, &buf)); err != nil {
					got <- nil
					return
				}
				if _, err := theirs.Write(serverBanner); err != nil {
					got <- nil
					return
				}
				l := make([]byte, labelLen)
				if _, err := io.ReadFull(theirs, l); err != nil {
					got <- nil
					return
				}
				got <- l
			}()
			peer, err := handshake(context.Background(), ours, ourBanner(), "zrepl_"+rec.label, time.Second)
			require.NoError(t, err)
			assert.True(t, negotiate(peer.extensions, ourExtensions).zrepl(), "against zrepl every extension is off")
			assert.Equal(t, clientRest[:labelLen], <-got)
		})
	}
}

// http2Stream is what one HTTP/2 stream carried in one direction.
type http2Stream struct {
	headers  map[string]string
	trailers map[string]string
	data     []byte
}

// parseHTTP2 splits one direction of a control connection (after banner
// and, for the client, label) into streams; the client's side starts
// with the connection preface.
func parseHTTP2(t *testing.T, b []byte, client bool) map[uint32]*http2Stream {
	t.Helper()
	if client {
		require.True(t, bytes.HasPrefix(b, []byte(http2.ClientPreface)), "no HTTP/2 client preface")
		b = b[len(http2.ClientPreface):]
	}
	fr := http2.NewFramer(io.Discard, bytes.NewReader(b))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 20
	streams := map[uint32]*http2Stream{}
	get := func(id uint32) *http2Stream {
		s, ok := streams[id]
		if !ok {
			s = &http2Stream{}
			streams[id] = s
		}
		return s
	}
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return streams
		}
		require.NoError(t, err)
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			s := get(f.StreamID)
			m := map[string]string{}
			for _, hf := range f.Fields {
				m[hf.Name] = hf.Value
			}
			if s.headers == nil {
				s.headers = m
			} else {
				s.trailers = m
			}
		case *http2.DataFrame:
			s := get(f.StreamID)
			s.data = append(s.data, f.Data()...)
		}
	}
}

// grpcMessages splits a stream's DATA into gRPC length-prefixed messages.
func grpcMessages(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		require.GreaterOrEqual(t, len(b), 5, "short gRPC message prefix")
		require.Equal(t, byte(0), b[0], "compressed gRPC message")
		n := int(b[1])<<24 | int(b[2])<<16 | int(b[3])<<8 | int(b[4])
		require.GreaterOrEqual(t, len(b)-5, n)
		out = append(out, b[5:5+n])
		b = b[5+n:]
	}
	return out
}

// requestOf maps a gRPC method to its request and response types.
func pduPair(t *testing.T, method string) (req, res proto.Message) {
	t.Helper()
	switch method {
	case "/Replication/Ping":
		return &pb.PingReq{}, &pb.PingRes{}
	case "/Replication/ListFilesystems":
		return &pb.ListFilesystemReq{}, &pb.ListFilesystemRes{}
	case "/Replication/ListFilesystemVersions":
		return &pb.ListFilesystemVersionsReq{}, &pb.ListFilesystemVersionsRes{}
	case "/Replication/DestroySnapshots":
		return &pb.DestroySnapshotsReq{}, &pb.DestroySnapshotsRes{}
	case "/Replication/ReplicationCursor":
		return &pb.ReplicationCursorReq{}, &pb.ReplicationCursorRes{}
	case "/Replication/SendDry":
		return &pb.SendReq{}, &pb.SendRes{}
	case "/Replication/SendCompleted":
		return &pb.SendCompletedReq{}, &pb.SendCompletedRes{}
	}
	t.Fatalf("zrepl called %s, which pb does not know", method)
	return nil, nil
}

// requireRoundTrip: b unmarshals into m with no unknown field (every
// field zrepl sent has its number and type in pb) and marshals back to
// the same bytes.
func requireRoundTrip(t *testing.T, what string, b []byte, m proto.Message) {
	t.Helper()
	require.NoError(t, proto.Unmarshal(b, m), what)
	assert.Empty(t, m.ProtoReflect().GetUnknown(), "%s: fields pb does not know: %x", what, m.ProtoReflect().GetUnknown())
	again, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(b, again), "%s (%v) marshals to other bytes: %x, zrepl's %x", what, m, again, b)
}

// Every gRPC call zrepl's client made and every answer its server gave
// parse with pb's types, know every field, and re-encode byte for byte.
func TestGoldenControlPDUs(t *testing.T) {
	calls := 0
	methods := map[string]int{}
	for _, rec := range loadRecordings(t) {
		if rec.label != "control" {
			continue
		}
		t.Run(rec.name, func(t *testing.T) {
			_, _, c := splitBanner(t, rec.c2s)
			_, _, s := splitBanner(t, rec.s2c)
			reqs := parseHTTP2(t, c[labelLen:], true)
			ress := parseHTTP2(t, s, false)
			for id, rq := range reqs {
				if rq.headers == nil {
					continue
				}
				method := rq.headers[":path"]
				require.Equal(t, "application/grpc", rq.headers["content-type"], "stream %d", id)
				req, res := pduPair(t, method)
				methods[method]++
				msgs := grpcMessages(t, rq.data)
				require.Len(t, msgs, 1, "%s request", method)
				requireRoundTrip(t, method+" request", msgs[0], req)
				calls++
				rs := ress[id]
				require.NotNil(t, rs, "no answer to %s on stream %d", method, id)
				status := rs.trailers["grpc-status"]
				if rs.trailers == nil { // trailers-only response
					status = rs.headers["grpc-status"]
				}
				if status != "0" {
					continue // an error: no message
				}
				msgs = grpcMessages(t, rs.data)
				require.Len(t, msgs, 1, "%s response", method)
				requireRoundTrip(t, method+" response", msgs[0], res)
			}
		})
	}
	require.NotZero(t, calls, "the recordings have no gRPC call")
	t.Logf("calls recorded: %v", methods)
	// What a push with receiver pruning and a pull with sender pruning
	// call (zrepl v0.7 makes no control Ping in these runs).
	for _, m := range []string{"ListFilesystems", "ListFilesystemVersions", "SendDry", "SendCompleted", "DestroySnapshots", "ReplicationCursor"} {
		assert.NotZero(t, methods["/Replication/"+m], "no %s recorded", m)
	}
}

// zrepl's client bytes of a control connection, replayed verbatim into
// our server (a source with one filesystem), get a banner of version 7
// and an answer to each call, as zrepl's server gave.
func TestGoldenControlReplayIntoOurServer(t *testing.T) {
	for _, rec := range loadRecordings(t) {
		if rec.label != "control" {
			continue
		}
		t.Run(rec.name, func(t *testing.T) {
			h := newHosts(t)
			h.create("src/data/fs")
			h.writeSnap("src/data/fs", 1, 2, "a")
			cfg := ServerConfig{Sender: Source(h.sender)}
			sink := strings.HasPrefix(rec.name, "push-sink")
			if sink {
				cfg = ServerConfig{Receiver: Sink(h.dst, h.job, zfs.MustDatasetPath("dst/sinks"))}
			}
			srv := newServer(t, cfg)
			nl, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			l, err := transport.Fixed(nl, "client")
			require.NoError(t, err)
			go srv.Serve(l)
			defer srv.Stop()
			conn, err := net.Dial("tcp", nl.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			// Without the client's GOAWAY at the end: the server would
			// close before answering.
			_, _, c := splitBanner(t, rec.c2s)
			reqs := parseHTTP2(t, c[labelLen:], true)
			replay := withoutGoAway(t, rec.c2s)
			_, err = conn.Write(replay)
			require.NoError(t, err)
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(2*time.Second)))
			got, _ := io.ReadAll(conn) // ends at the deadline
			bn, _, rest := splitBanner(t, got)
			assert.Equal(t, ProtocolVersion, bn.version)
			ress := parseHTTP2(t, rest, false)
			for id, rq := range reqs {
				if rq.headers == nil {
					continue
				}
				rs := ress[id]
				require.NotNil(t, rs, "our server did not answer %s (stream %d)", rq.headers[":path"], id)
				status := rs.headers["grpc-status"]
				if rs.trailers != nil {
					status = rs.trailers["grpc-status"]
				}
				require.NotEmpty(t, status, "%s: no grpc-status: %v %v", rq.headers[":path"], rs.headers, rs.trailers)
				// The recorded calls name zrepl's filesystems, not the
				// model's: only the listing and ping must succeed.
				switch rq.headers[":path"] {
				case "/Replication/ListFilesystems", "/Replication/Ping":
					assert.Equal(t, "0", status, "%s: %v %v", rq.headers[":path"], rs.headers, rs.trailers)
				}
				if rq.headers[":path"] == "/Replication/ListFilesystems" && !sink {
					msgs := grpcMessages(t, rs.data)
					require.Len(t, msgs, 1)
					var res pb.ListFilesystemRes
					require.NoError(t, proto.Unmarshal(msgs[0], &res))
					var names []string
					for _, fs := range res.GetFilesystems() {
						names = append(names, fs.GetPath())
					}
					assert.Equal(t, []string{"src/data", "src/data/fs"}, names)
				}
			}
		})
	}
}

// withoutGoAway is a client's recorded bytes up to its GOAWAY frame,
// without its PING frames: replayed at once, keepalive pings recorded
// seconds apart would be too many for the server's policy.
func withoutGoAway(t *testing.T, c2s []byte) []byte {
	t.Helper()
	_, _, rest := splitBanner(t, c2s)
	off := len(c2s) - len(rest) + labelLen + len(http2.ClientPreface)
	out := append([]byte(nil), c2s[:off]...)
	for off+9 <= len(c2s) {
		n := int(c2s[off])<<16 | int(c2s[off+1])<<8 | int(c2s[off+2])
		switch http2.FrameType(c2s[off+3]) {
		case http2.FrameGoAway:
			return out
		case http2.FramePing:
		default:
			out = append(out, c2s[off:off+9+n]...)
		}
		off += 9 + n
	}
	return out
}

// rawFrame is one data connection frame as recorded.
type rawFrame struct {
	typ     uint32
	payload []byte
}

// parseFrames splits one direction of a data connection (after banner and
// label) into frames, independently of dataConn.
func parseFrames(t *testing.T, b []byte) []rawFrame {
	t.Helper()
	var out []rawFrame
	for len(b) > 0 {
		require.GreaterOrEqual(t, len(b), frameHeaderLen, "a frame header cut short")
		typ := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		n := int(uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7]))
		require.GreaterOrEqual(t, len(b)-frameHeaderLen, n, "a frame of type %#x cut short", typ)
		out = append(out, rawFrame{typ, b[frameHeaderLen : frameHeaderLen+n]})
		b = b[frameHeaderLen+n:]
	}
	return out
}

// dataSide is one direction of a request on a data connection: its
// messages in order (type and bytes), the stream (if any) and how it
// ended.
type dataSide struct {
	messages   []rawFrame // typ is the message's type, payload all of it
	frameSizes []int      // of the stream's frames
	stream     []byte
	heartbeats int
	shutdown   bool
	raw        []byte // the bytes of messages and stream, without heartbeats and shutdown
}

func assemble(t *testing.T, frames []rawFrame) dataSide {
	t.Helper()
	var s dataSide
	var cur *rawFrame
	for i, f := range frames {
		switch {
		case f.typ == frameHeartbeat:
			require.Empty(t, f.payload, "heartbeat with a payload")
			s.heartbeats++
			continue
		case f.typ == frameShutdown:
			require.Empty(t, f.payload)
			require.Equal(t, len(frames)-1, i, "frames after the shutdown frame")
			s.shutdown = true
			continue
		}
		s.raw = binaryFrame(s.raw, f)
		switch {
		case f.typ == frameEnd:
			require.Empty(t, f.payload)
			if cur == nil {
				// An empty message (an empty protobuf): no frame of its
				// own type, only the end frame.
				cur = &rawFrame{typ: 0}
			}
			s.messages = append(s.messages, *cur)
			cur = nil
		case cur == nil:
			cur = &rawFrame{typ: f.typ, payload: append([]byte(nil), f.payload...)}
		default:
			require.Equal(t, cur.typ, f.typ, "a message of type %#x continued by a frame of type %#x", cur.typ, f.typ)
			cur.payload = append(cur.payload, f.payload...)
		}
		if f.typ == frameZFSStream {
			s.frameSizes = append(s.frameSizes, len(f.payload))
			s.stream = append(s.stream, f.payload...)
		}
	}
	require.Nil(t, cur, "a message without its end frame")
	return s
}

// requireType: m is a message of type want, or an empty one (whose type
// no frame shows).
func requireType(t *testing.T, want uint32, m rawFrame) {
	t.Helper()
	if m.typ == 0 {
		require.Empty(t, m.payload)
		return
	}
	require.Equal(t, want, m.typ, "message type")
}

func binaryFrame(b []byte, f rawFrame) []byte {
	n := len(f.payload)
	b = append(b, byte(f.typ>>24), byte(f.typ>>16), byte(f.typ>>8), byte(f.typ), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	return append(b, f.payload...)
}

// ourBytes is what our dataConn writes for fn, up to (not including)
// its shutdown frame.
func ourBytes(t *testing.T, fn func(c *dataConn) error) []byte {
	t.Helper()
	a, b := net.Pipe()
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		got <- all
	}()
	c := newDataConn(a)
	require.NoError(t, fn(c))
	c.abort()
	b.Close()
	return <-got
}

// Every request zrepl's client sent on a data connection and every answer
// its server gave: the framing (messages as frames of their type, then an
// end frame; streams in frames of 512 KiB but the last; a shutdown frame
// last), each PDU with pb's types and no unknown field, and our writer
// producing the same bytes for the same request, answer and stream. Our
// reader, fed zrepl's answer, gets its PDU and stream.
func TestGoldenDataConnections(t *testing.T) {
	seen := map[string]int{}
	for _, rec := range loadRecordings(t) {
		if rec.label != "data" {
			continue
		}
		t.Run(rec.name, func(t *testing.T) {
			_, _, c := splitBanner(t, rec.c2s)
			_, _, s := splitBanner(t, rec.s2c)
			cs := assemble(t, parseFrames(t, c[labelLen:]))
			ss := assemble(t, parseFrames(t, s))
			require.GreaterOrEqual(t, len(cs.messages), 2, "request header and body")
			requireType(t, frameReqHeader, cs.messages[0])
			requireType(t, frameReqStructured, cs.messages[1])
			endpoint := string(cs.messages[0].payload)
			seen[endpoint]++
			var req, res proto.Message
			switch endpoint {
			case endpointSend:
				req, res = &pb.SendReq{}, &pb.SendRes{}
			case endpointRecv:
				req, res = &pb.ReceiveReq{}, &pb.ReceiveRes{}
			case endpointPing:
				req, res = &pb.PingReq{}, &pb.PingRes{}
			default:
				t.Fatalf("zrepl requested %q", endpoint)
			}
			requireRoundTrip(t, endpoint+" request", cs.messages[1].payload, req)
			require.NotEmpty(t, ss.messages)
			requireType(t, frameResHeader, ss.messages[0])
			require.Equal(t, handlerOK, string(ss.messages[0].payload), "zrepl's answer")
			require.GreaterOrEqual(t, len(ss.messages), 2, "response header and body")
			requireType(t, frameResStructured, ss.messages[1])
			requireRoundTrip(t, endpoint+" response", ss.messages[1].payload, res)
			streamSide := map[string]*dataSide{endpointSend: &ss, endpointRecv: &cs}[endpoint]
			if streamSide != nil {
				require.NotEmpty(t, streamSide.stream, "%s without a stream", endpoint)
				for i, n := range streamSide.frameSizes {
					if i < len(streamSide.frameSizes)-1 {
						assert.Equal(t, framePayload, n, "stream frame %d of %d", i, len(streamSide.frameSizes))
					}
				}
			}
			assert.True(t, cs.shutdown, "zrepl's client ends with a shutdown frame")
			assert.True(t, ss.shutdown, "zrepl's server ends with a shutdown frame")

			// Our writer: the same bytes for the same request and stream.
			gotReq := ourBytes(t, func(dc *dataConn) error {
				if err := dc.writeRequest(endpoint, req); err != nil {
					return err
				}
				if endpoint == endpointRecv {
					_, srcErr, connErr := dc.writeStream(frameZFSStream, bytes.NewReader(cs.stream))
					return errors.Join(srcErr, connErr)
				}
				return nil
			})
			assert.Equal(t, cs.raw, gotReq, "our client's bytes for zrepl's request")
			gotRes := ourBytes(t, func(dc *dataConn) error {
				if err := dc.writeResponse(res, nil, extSet{}); err != nil {
					return err
				}
				if endpoint == endpointSend {
					_, srcErr, connErr := dc.writeStream(frameZFSStream, bytes.NewReader(ss.stream))
					return errors.Join(srcErr, connErr)
				}
				return nil
			})
			assert.Equal(t, ss.raw, gotRes, "our server's bytes for zrepl's answer")

			// Our reader on zrepl's answer.
			a, b := net.Pipe()
			go func() {
				b.Write(s)
				io.Copy(io.Discard, b)
			}()
			dc := newDataConn(a)
			defer func() { dc.abort(); b.Close() }()
			got := res.ProtoReflect().New().Interface()
			require.NoError(t, dc.readResponse(got, extSet{}))
			assert.True(t, proto.Equal(res, got), "our reader: %v, zrepl sent %v", got, res)
			if endpoint == endpointSend {
				stream, err := io.ReadAll(dc.streamReader(frameZFSStream))
				require.NoError(t, err)
				assert.Equal(t, ss.stream, stream, "the stream our reader got")
			}
		})
	}
	assert.NotZero(t, seen[endpointSend], "no /v1/send recorded")
	assert.NotZero(t, seen[endpointRecv], "no /v1/recv recorded")
}
