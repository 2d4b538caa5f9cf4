package zfsreal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// sendArgv builds `zfs send` for args (already checked); dryRun makes it
// the size estimate `zfs send -nvP`. A resumed send takes only the token:
// the token carries the flags of the interrupted send, and zfs would OR
// any flag given here into them, changing the stream the receiver expects.
func sendArgv(args zfs.SendArgs, dryRun bool) []string {
	argv := []string{"send"}
	if dryRun {
		argv = append(argv, "-nvP")
	}
	if args.ResumeToken != "" {
		return append(argv, "-t", args.ResumeToken)
	}
	f := args.Flags
	for _, fl := range []struct {
		on   bool
		flag string
	}{{f.Raw, "-w"}, {f.Properties, "-p"}, {f.BackupProperties, "-b"}, {f.Compressed, "-c"}, {f.LargeBlocks, "-L"}, {f.EmbeddedData, "-e"}} {
		if fl.on {
			argv = append(argv, fl.flag)
		}
	}
	if args.From != nil {
		argv = append(argv, "-i", args.From.Ref(args.FS).String())
	}
	return append(argv, args.To.Ref(args.FS).String())
}

// checkSendArgs validates every name in args and, for a resumed send,
// that the token encodes the step args describe. It runs nothing.
func checkSendArgs(op string, args zfs.SendArgs) error {
	if err := checkFS(op, args.FS); err != nil {
		return err
	}
	to := args.To.Ref(args.FS)
	if err := checkRef(op, to, zfs.Snapshot); err != nil {
		return err
	}
	if args.From != nil {
		if err := checkRef(op, args.From.Ref(args.FS), zfs.Snapshot, zfs.Bookmark); err != nil {
			return err
		}
	}
	if args.ResumeToken == "" {
		return nil
	}
	tok, err := resumetoken.Decode(args.ResumeToken)
	if err != nil {
		return &zfs.Error{Kind: zfs.ErrResumeTokenCorrupt, Op: op, Dataset: to.String(), Msg: tokenCorruptMsg(err), Err: err}
	}
	if err := tok.Match(resumetoken.Send{FS: args.FS, To: args.To, From: args.From}); err != nil {
		return &zfs.Error{Kind: zfs.ErrResumeTokenMismatch, Op: op, Dataset: to.String(), Err: err}
	}
	// The flags (raw, compressed, ...) are the token's: the receiver's
	// partial state was made by them, whatever args say now.
	return nil
}

// versionArgv lists refs by name with their GUIDs, each name once: zfs
// list says twice that a name given twice does not exist (2.3.9,
// TestDifferential: an estimate from @x to @x).
func versionArgv(refs []zfs.VersionRef) []string {
	argv := []string{"list", "-H", "-p", "-o", "name,guid", "-t", "snapshot,bookmark"}
	for i, r := range refs {
		if !slices.Contains(refs[:i], r) {
			argv = append(argv, r.String())
		}
	}
	return argv
}

// checkVersions asks zfs for To and From by name: a send of a missing
// version then fails here, with zfs's own message, rather than only when
// the stream is read. Where the caller set a GUID it must still be the
// version's, so a snapshot destroyed and re-created under its name is
// never sent in its place (ErrVersionMismatch).
func (c *CLI) checkVersions(ctx context.Context, op string, args zfs.SendArgs) error {
	want := []zfs.FilesystemVersion{args.To}
	if args.From != nil {
		want = append(want, *args.From)
	}
	refs := make([]zfs.VersionRef, len(want))
	for i, w := range want {
		refs[i] = w.Ref(args.FS)
	}
	out, _, err := c.run(ctx, op, refs[0].String(), versionArgv(refs))
	if err != nil {
		return err
	}
	guids := map[string]uint64{}
	err = lines(out, 2, func(no int, line string, f []string) error {
		g, err := parseUint(no, line, "guid", f[1])
		guids[f[0]] = g
		return err
	})
	if err != nil {
		return &zfs.Error{Op: op, Dataset: refs[0].String(), Err: err}
	}
	for i, ref := range refs {
		g, ok := guids[ref.String()]
		if !ok {
			return &zfs.Error{Op: op, Dataset: ref.String(),
				Err: &outputError{Text: strings.TrimSpace(string(out)), Reason: ref.String() + " not listed"}}
		}
		if want[i].GUID != 0 && g != want[i].GUID {
			return &zfs.Error{Kind: zfs.ErrVersionMismatch, Op: op, Dataset: ref.String(),
				Err: fmt.Errorf("guid is %d, want %d", g, want[i].GUID)}
		}
	}
	return nil
}

// tokenCorruptMsg is what `zfs send -t` says of a token libzfs cannot
// read, picked by where the decoder found it broken; libzfs checks in the
// same order: format, version, hex, checksum, decompression, nvlist.
func tokenCorruptMsg(err error) string {
	why := "invalid format"
	var de *resumetoken.DecodeError
	if errors.As(err, &de) {
		r := de.Reason
		has := func(prefixes ...string) bool {
			for _, p := range prefixes {
				if strings.HasPrefix(r, p) {
					return true
				}
			}
			return false
		}
		switch {
		case has("unsupported version "):
			why = "invalid version " + strings.Fields(r)[2]
		case has("bad hex in payload"):
			why = "payload is not hex-encoded"
		case has("checksum mismatch"):
			why = "incorrect checksum"
		case has("zlib error", "length mismatch"):
			why = "decompression failed"
		case has("empty token", "want 4 ", "bad version", "bad checksum field", "bad length field",
			"length 0x", "empty payload", "payload of "):
			why = "invalid format"
		default:
			// Everything else is found in the unpacked nvlist.
			why = "nvlist_unpack failed"
		}
	}
	return "cannot resume send: resume token is corrupt (" + why + ")"
}

// refineSendError improves a send failure zfs gives no clear words for:
// a non-raw send of a dataset whose key is not loaded fails with just
// "Invalid argument", so the key status is asked for.
func (c *CLI) refineSendError(ctx context.Context, args zfs.SendArgs, e *zfs.Error) {
	if e.Kind != 0 || args.Flags.Raw || ctx.Err() != nil || e.ExitStatus == 0 {
		return
	}
	out, _, err := c.run(ctx, "get", args.FS.String(), []string{"get", "-H", "-p", "-o", "value", "keystatus", args.FS.String()})
	if err == nil && strings.TrimSpace(string(out)) == string(zfs.KeyStatusUnavailable) {
		e.Kind = zfs.ErrKeyNotLoaded
	}
}

// Send implements zfs.ZFS. The stream reads straight from the zfs child's
// stdout. Reading to the end waits for the child: a non-zero exit is
// returned by Read in place of io.EOF, so a failed or cut-off send never
// looks complete. Close before the end kills and reaps the child.
// Cancelling ctx kills the child; Read then fails with ctx's error.
//
// The GUIDs args ask for are checked against the stream's own BEGIN
// record, read here before the stream is handed out (and replayed to its
// reader): a send costs no zfs process beside it (issue 13). A stream
// whose header does not name its snapshots (a compound stream, -p or -b)
// is checked by a by-name listing instead. A missing version fails Send
// itself, with zfs's words, either way.
func (c *CLI) Send(ctx context.Context, args zfs.SendArgs) (io.ReadCloser, error) {
	const op = "send"
	if err := checkSendArgs(op, args); err != nil {
		return nil, err
	}
	stream, err := c.startSend(ctx, args)
	if err != nil {
		return nil, err
	}
	h, ok, err := stream.readHeader()
	if err != nil {
		stream.Close()
		return nil, err
	}
	if ok {
		err = checkHeader(op, args, h)
	} else {
		err = c.checkVersions(ctx, op, args)
	}
	if err != nil {
		stream.Close()
		return nil, err
	}
	return stream, nil
}

// readHeader reads the stream's BEGIN record into s.head, which Read and
// Receive's splice replay first. ok is false where the header does not
// tell the stream's GUIDs (a compound stream, or no BEGIN record); err is
// the send's own failure where it ended before a whole record.
func (s *sendStream) readHeader() (zfs.StreamHeader, bool, error) {
	b := make([]byte, beginRecordLen)
	n, err := io.ReadFull(s.r, b)
	s.head = b[:n]
	if err != nil {
		if e := s.end(); e != io.EOF {
			return zfs.StreamHeader{}, false, e
		}
		return zfs.StreamHeader{}, false, nil
	}
	h, err := parseBeginRecord(b)
	if err != nil || h.ToGUID == 0 {
		return zfs.StreamHeader{}, false, nil
	}
	return h, true, nil
}

// checkHeader checks the GUIDs args ask for against the stream's header.
func checkHeader(op string, args zfs.SendArgs, h zfs.StreamHeader) error {
	if g := args.To.GUID; g != 0 && h.ToGUID != g {
		return &zfs.Error{Kind: zfs.ErrVersionMismatch, Op: op, Dataset: args.To.Ref(args.FS).String(),
			Err: fmt.Errorf("guid is %d, want %d", h.ToGUID, g)}
	}
	if args.From != nil && args.From.GUID != 0 && h.FromGUID != args.From.GUID {
		return &zfs.Error{Kind: zfs.ErrVersionMismatch, Op: op, Dataset: args.From.Ref(args.FS).String(),
			Err: fmt.Errorf("guid is %d, want %d", h.FromGUID, args.From.GUID)}
	}
	return nil
}

func (c *CLI) startSend(ctx context.Context, args zfs.SendArgs) (*sendStream, error) {
	const op = "send"
	subject := args.To.Ref(args.FS).String()
	if err := ctx.Err(); err != nil {
		return nil, &zfs.Error{Op: op, Dataset: subject, Err: err}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, &zfs.Error{Op: op, Dataset: subject, Err: &startError{err}}
	}
	enlargePipe(w, c.pipeSize)
	cmd := c.command(ctx, sendArgv(args, false))
	stderr := newTailBuffer(c.stderrLimit)
	cmd.Stdout = w
	cmd.Stderr = stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, c.cmdError(ctx, op, subject, "", &startError{err})
	}
	// The child has its own copy; ours would keep the pipe open and hide
	// the child's end of stream.
	w.Close()
	return &sendStream{c: c, ctx: ctx, args: args, subject: subject, r: r, p: &proc{c: c, cmd: cmd, stderr: stderr, start: start}}, nil
}

// errStreamClosed is what Read returns after Close.
var errStreamClosed = errors.New("zfs send stream closed")

type sendStream struct {
	c       *CLI
	ctx     context.Context
	args    zfs.SendArgs
	subject string
	r       *os.File
	p       *proc
	// head is what Send read of the stream (its BEGIN record), given to
	// the reader before the rest.
	head []byte

	mu     sync.Mutex
	closed bool
	result error // the end-of-stream result, once known
	ended  bool
}

func (s *sendStream) Read(b []byte) (int, error) {
	if len(s.head) > 0 {
		n := copy(b, s.head)
		s.head = s.head[n:]
		return n, nil
	}
	n, err := s.r.Read(b)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, os.ErrClosed):
		return n, errStreamClosed
	case err == io.EOF:
		return n, s.end()
	default:
		return n, &zfs.Error{Op: "send", Dataset: s.subject, Err: err}
	}
}

func (s *sendStream) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// end reaps the child at end of stream and decides what the reader sees.
func (s *sendStream) end() error {
	werr := s.p.wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return s.result
	}
	s.ended = true
	s.result = io.EOF
	if werr != nil {
		e := s.c.cmdError(s.ctx, "send", s.subject, s.p.stderr.String(), werr)
		s.c.refineSendError(s.ctx, s.args, e)
		s.result = e
	}
	return s.result
}

// Close aborts the send if it has not ended, and always reaps the child.
// It may be called while another goroutine is blocked in Read, which then
// fails.
func (s *sendStream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	// Closing our end first makes a writing child fail at once (EPIPE);
	// the kill covers one blocked elsewhere.
	s.r.Close()
	s.p.kill()
	_ = s.p.wait()
	return nil
}

// SendSize implements zfs.ZFS with `zfs send -nvP`.
func (c *CLI) SendSize(ctx context.Context, args zfs.SendArgs) (int64, error) {
	const op = "send"
	if err := checkSendArgs(op, args); err != nil {
		return 0, err
	}
	// The check runs beside the estimate, as in Send; its error wins.
	checked := make(chan error, 1)
	go func() { checked <- c.checkVersions(ctx, op, args) }()
	subject := args.To.Ref(args.FS).String()
	out, stderr, err := c.run(ctx, op, subject, sendArgv(args, true))
	if cerr := <-checked; cerr != nil {
		return 0, cerr
	}
	if err != nil {
		var e *zfs.Error
		if errors.As(err, &e) {
			c.refineSendError(ctx, args, e)
		}
		return 0, err
	}
	// zfs has printed the estimate on stdout since 0.8 (-n); look at
	// stderr too in case a version prints it there.
	n, ok := parseSendSize(string(out))
	if !ok {
		n, ok = parseSendSize(stderr)
	}
	if !ok {
		return 0, &zfs.Error{Op: op, Dataset: subject,
			Err: &outputError{Text: strings.TrimSpace(string(out)), Reason: "no size in the estimate"}}
	}
	return n, nil
}
