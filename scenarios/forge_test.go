package scenarios

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/twohost"
	"zrepl.dev/zrepl/zfsmodel"
)

// A source serves a remote client it must not trust: the puller plans the
// steps, and a confused or malicious one can send any request, resume
// token included. Only the source's own checks stand between such a
// request and a stream of data it does not serve, or of data other than
// what the request names (a resumed send takes everything from the token,
// whatever the request says).

// Ways to forge a resume token for a Send request.
var forgeries = []string{
	"private-fs",     // the request names a filesystem outside the filter
	"private-token",  // the token sends a filesystem outside the filter
	"other-snapshot", // the token sends another snapshot of the filesystem
	"other-from",     // the token sends from another snapshot or bookmark
	"raw-flipped",    // the token's raw flag is the opposite of the request's
	"other-to-guid",  // the token names the snapshot with another GUID
	"full-as-incr",   // the token is incremental, the request full
}

// forgedPull connects to the source job as a client of its own and asks
// for one send with a forged resume token. The source must refuse with a
// clear error; if it streams anything, the stream's header shows what it
// sent, and that must be what the request asked for.
func (w *world) forgedPull(t *rapid.T) {
	var j job
	for _, c := range jobs {
		if c.pull {
			j = c
		}
	}
	forgery := rapid.SampledFrom(forgeries).Draw(t, "forgery")
	fs := rapid.SampledFrom(fsNames).Draw(t, "fs")
	pickTo := rapid.IntRange(0, 1<<10).Draw(t, "pickTo")
	pickFrom := rapid.IntRange(0, 1<<10).Draw(t, "pickFrom")
	pickOther := rapid.IntRange(0, 1<<10).Draw(t, "pickOther")
	fromGUIDKnown := rapid.Bool().Draw(t, "fromGUIDKnown")
	offsetBlocks := uint64(rapid.IntRange(0, 4).Draw(t, "offsetBlocks"))

	vs := versionsOf(t, w.src, fs)
	snaps := snapshots(vs)
	if len(snaps) == 0 {
		return // a no-op, not t.Skip (see destroySender)
	}
	ti := pickTo % len(snaps)
	to := snaps[ti]
	// The source's own policy decides whether the stream is raw.
	info, err := w.src.Info(zfs.MustDatasetPath(fs))
	must(t, err)
	flags := j.sendPolicy().Flags
	raw := flags.RawStream(info)
	req := endpoint.SendRequest{FS: fs, To: to}
	// The versions older than to: incremental sources.
	var older []zfs.FilesystemVersion
	for _, v := range vs {
		if v.CreateTXG < to.CreateTXG {
			older = append(older, v)
		}
	}
	var from *zfs.FilesystemVersion
	if len(older) > 0 && forgery != "full-as-incr" {
		f := older[pickFrom%len(older)]
		from = &f
		req.From = &f
	}
	// tok is the honest token of req (a send interrupted after
	// offsetBlocks blocks); each forgery changes one thing.
	tok := resumetoken.Token{
		Object: 2, Offset: offsetBlocks * zfsmodel.BlockSize, Bytes: offsetBlocks * zfsmodel.BlockSize,
		ToGUID: to.GUID, ToName: fs + "@" + to.Name, RawOK: raw, CompressOK: flags.Raw || flags.Compressed,
	}
	if from != nil {
		tok.FromGUID = from.GUID
	}
	switch forgery {
	case "private-fs":
		p := snapshots(versionsOf(t, w.src, privateFS))[0]
		req = endpoint.SendRequest{FS: privateFS, To: p}
		tok = resumetoken.Token{Object: 2, ToGUID: p.GUID, ToName: privateFS + "@" + p.Name, RawOK: raw, CompressOK: raw}
	case "private-token":
		p := snapshots(versionsOf(t, w.src, privateFS))[0]
		tok.ToGUID, tok.ToName, tok.FromGUID = p.GUID, privateFS+"@"+p.Name, 0
	case "other-snapshot":
		if len(snaps) < 2 {
			return
		}
		o := snaps[(ti+1+pickOther%(len(snaps)-1))%len(snaps)]
		tok.ToGUID, tok.ToName = o.GUID, fs+"@"+o.Name
	case "other-from":
		// Another source than the request's: another older version, or,
		// for a full request, any older one.
		var others []zfs.FilesystemVersion
		for _, v := range older {
			if from == nil || v.GUID != from.GUID {
				others = append(others, v)
			}
		}
		if len(others) == 0 {
			return
		}
		tok.FromGUID = others[pickOther%len(others)].GUID
	case "raw-flipped":
		tok.RawOK, tok.CompressOK = !raw, !raw
	case "other-to-guid":
		tok.ToGUID = to.GUID ^ (1 + uint64(pickOther))
	case "full-as-incr":
		if len(older) == 0 {
			return
		}
		tok.FromGUID = older[pickOther%len(older)].GUID
	}
	// A puller names a source by its GUID where it knows it; a confused
	// one may not, and the source must not fill it in from the token.
	if req.From != nil && !fromGUIDKnown && forgery != "private-fs" {
		f := *req.From
		f.GUID = 0
		req.From = &f
	}
	req.ResumeToken = tok.Encode()
	h, err := w.askSource(t, j, req, int64(pickOther))
	w.persist(t)
	what := fmt.Sprintf("a request for %s (from guid %016x, raw %v) with a forged resume token (%s: %s guid %016x from guid %016x raw %v)",
		req.To.Ref(zfs.MustDatasetPath(req.FS)), fromGUID(req.From), raw, forgery, tok.ToName, tok.ToGUID, tok.FromGUID, tok.RawOK)
	if err != nil {
		// Refused: the error must say which filesystem and why.
		if !strings.Contains(err.Error(), req.FS) {
			t.Fatalf("INVARIANT source-refuses-clearly: %s failed with an error that does not name %s: %v", what, req.FS, err)
		}
		if !refusal(err) {
			t.Fatalf("INVARIANT source-refuses-clearly: %s failed with an error of no kind that says so: %v", what, err)
		}
		return
	}
	if h == nil {
		t.Fatalf("INVARIANT source-serves-request: %s was accepted, and the stream's header is unreadable", what)
	}
	// What the request asked for, by the sender's own versions.
	wantFrom := uint64(0)
	if req.From != nil {
		for _, v := range vs {
			if v.Kind == req.From.Kind && v.Name == req.From.Name {
				wantFrom = v.GUID
			}
		}
	}
	var diffs []string
	if h.ToName != req.FS+"@"+req.To.Name || h.ToGUID != req.To.GUID {
		diffs = append(diffs, fmt.Sprintf("it sent %s (guid %016x)", h.ToName, h.ToGUID))
	}
	if h.FromGUID != wantFrom {
		diffs = append(diffs, fmt.Sprintf("it sent from guid %016x, not %016x", h.FromGUID, wantFrom))
	}
	if h.RawOK != raw {
		diffs = append(diffs, fmt.Sprintf("it sent raw=%v", h.RawOK))
	}
	if info.Encrypted() && raw && !h.Encrypted {
		diffs = append(diffs, "it sent plain data of an encrypted filesystem")
	}
	if len(diffs) > 0 {
		t.Fatalf("INVARIANT source-serves-request: %s: %s\n%s", what, strings.Join(diffs, "; "), w.dump(t))
	}
	t.Fatalf("INVARIANT source-refuses-clearly: %s was accepted (the stream is what the request names, but the token is not its)\n%s", what, w.dump(t))
}

// askSource sends req to j's source as a client of its own and returns
// the header of the stream it got, or the error of the request (a nil
// header and a nil error: the stream's header was unreadable).
func (w *world) askSource(t *rapid.T, j job, req endpoint.SendRequest, seed int64) (*streamHeader, error) {
	client, done := w.sourceClient(t, j, seed, "mallory")
	defer done()
	ctx, cancel := context.WithTimeout(bg, time.Hour)
	defer cancel()
	stream, err := client.Sender().Send(ctx, req)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	h, err := readStreamHeader(stream)
	if err != nil {
		t.Logf("stream header: %v", err)
		return nil, nil
	}
	return &h, nil
}

// sourceClient serves j's source on the sender host, as the source job
// does, to one client on the receiver host that the server knows as
// identity. done closes both.
func (w *world) sourceClient(t *rapid.T, j job, seed int64, identity string) (client *rpc.Client, done func()) {
	hosts, err := twohost.New(seed, netsim.Link{Latency: 2 * time.Millisecond, Bandwidth: 64 << 20, Buffer: 64 << 10}, senderHost, sinkHost, 7000)
	must(t, err)
	l, err := hosts.Listen(identity)
	must(t, err)
	srv, err := rpc.NewServer(rpc.ServerConfig{Sender: rpc.Source(w.sender(j))})
	must(t, err)
	serving := twohost.Serve(srv, l)
	client, err = rpc.NewClient(rpc.ClientConfig{Dial: hosts.Dialer()})
	must(t, err)
	return client, func() {
		_ = client.Close()
		_ = serving.Stop()
		_ = hosts.Net.Close()
	}
}

// refusal: err is of a kind that refuses a request.
func refusal(err error) bool {
	for _, k := range []error{zfs.ErrResumeTokenCorrupt, zfs.ErrResumeTokenMismatch, zfs.ErrVersionMismatch, zfs.ErrDatasetNotExist, endpoint.ErrNotAllowed} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

func fromGUID(v *zfs.FilesystemVersion) uint64 {
	if v == nil {
		return 0
	}
	return v.GUID
}

// streamHeader is what the checks read of a send stream's header. The
// model's stream format (zfsmodel's package doc): the magic
// "ZMSTRM\x00\x01", a big-endian uint32 length, then the header as JSON.
type streamHeader struct {
	ToName    string
	ToGUID    uint64
	FromGUID  uint64
	Encrypted bool
	RawOK     bool
	Resume    bool
}

func readStreamHeader(r io.Reader) (streamHeader, error) {
	var h streamHeader
	var pre [12]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return h, err
	}
	if string(pre[:8]) != "ZMSTRM\x00\x01" {
		return h, fmt.Errorf("not a model stream (magic %q)", pre[:8])
	}
	l := binary.BigEndian.Uint32(pre[8:])
	if l > 1<<20 {
		return h, fmt.Errorf("header of %d bytes", l)
	}
	js := make([]byte, l)
	if _, err := io.ReadFull(r, js); err != nil {
		return h, err
	}
	return h, json.Unmarshal(js, &h)
}
