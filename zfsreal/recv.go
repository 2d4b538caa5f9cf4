package zfsreal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"zrepl.dev/zrepl/engine/zfs"
)

// recvArgv builds `zfs recv` for fs and opts, checking every property
// name and value. Set properties are sorted so the command line is the
// same for the same options.
func recvArgv(fs zfs.DatasetPath, opts zfs.RecvOptions) ([]string, error) {
	argv := []string{"recv"}
	if opts.Resumable {
		argv = append(argv, "-s")
	}
	argv = append(argv, "-u")
	if opts.ForceRollback {
		argv = append(argv, "-F")
	}
	names := make([]string, 0, len(opts.SetProperties))
	for name := range opts.SetProperties {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := checkPropName(name, false); err != nil {
			return nil, err
		}
		if err := checkPropValue(name, opts.SetProperties[name]); err != nil {
			return nil, err
		}
		argv = append(argv, "-o", name+"="+opts.SetProperties[name])
	}
	for _, name := range opts.InheritProperties {
		if err := checkPropName(name, false); err != nil {
			return nil, err
		}
		if _, ok := opts.SetProperties[name]; ok {
			return nil, fmt.Errorf("property %s is both set (-o) and excluded (-x)", name)
		}
		argv = append(argv, "-x", name)
	}
	return append(argv, fs.String()), nil
}

// readError marks the caller's stream failing, as opposed to zfs.
type readError struct{ err error }

func (e *readError) Error() string { return "reading the stream to receive: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// feed copies r into the child's stdin and closes it, so a failing reader
// shows zfs a cut-off stream. It returns r's error, not the pipe's: a
// write fails only when zfs stopped reading, and zfs's exit says why.
func feed(stdin *os.File, r io.Reader) error {
	defer stdin.Close()
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := stdin.Write(buf[:n]); werr != nil {
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// StreamWrapper is a reader wrapped around a stream of Send that lets
// Receive look past it: given such a stream (or a chain of wrappers ending
// in one), Receive moves the stream from zfs send to zfs recv with
// splice(2), so the bytes never pass through this process, and tells every
// wrapper how many went by in its place (Passed), so that a wrapper that
// counts progress stays right. A wrapper that changes or inspects the
// bytes must not implement it.
type StreamWrapper interface {
	io.Reader
	Unwrap() io.Reader
	Passed(n int64)
}

// spliceSource finds the stream of Send below stream's wrappers, if any.
func spliceSource(stream io.Reader) (*sendStream, []StreamWrapper) {
	var ws []StreamWrapper
	for range 64 { // a cycle of wrappers must not hang Receive
		switch v := stream.(type) {
		case *sendStream:
			return v, ws
		case StreamWrapper:
			ws = append(ws, v)
			stream = v.Unwrap()
		default:
			return nil, nil
		}
	}
	return nil, nil
}

// feedSplice moves s into the child's stdin with splice and closes it;
// its result means what feed's does. handled is false where splice cannot
// be used (nothing was moved then, and stdin is still open).
func feedSplice(stdin *os.File, s *sendStream, ws []StreamWrapper) (err error, handled bool) {
	// What Send read of the stream goes first, by hand: the wrappers
	// above did not see it either.
	if head := s.head; len(head) > 0 {
		s.head = nil
		if _, err := stdin.Write(head); err != nil {
			stdin.Close()
			return nil, true
		}
		for _, w := range ws {
			w.Passed(int64(len(head)))
		}
	}
	_, err = splicePipe(stdin, s.r, func(n int64) {
		for _, w := range ws {
			w.Passed(n)
		}
	})
	if errors.Is(err, errSpliceUnsupported) {
		return nil, false
	}
	defer stdin.Close()
	var se *srcError
	switch {
	case err == nil:
		// The send's output ended: its exit says whether all of it came.
		if end := s.end(); end != io.EOF {
			return end, true
		}
		return nil, true
	case errors.As(err, &se):
		if s.isClosed() {
			return errStreamClosed, true
		}
		return &zfs.Error{Op: "send", Dataset: s.subject, Err: se.err}, true
	default:
		// zfs stopped reading (or its input was closed on cancel): its
		// exit says why.
		return nil, true
	}
}

// Receive implements zfs.ZFS. The stream is fed to zfs's stdin as it is
// read. If reading it fails, zfs gets a cut-off stream, and the error
// carries both the reader's error and zfs's (errors.Is finds each).
//
// Cancelling ctx closes zfs's input, so zfs ends as for a cut-off stream
// (saving the partial state with Resumable); zfs is killed if it has not
// ended within Options.CancelGrace. Receive then returns at once, even if
// a Read on stream is still blocked: that Read's data is dropped when it
// returns. Otherwise Receive returns only when stream is no longer read.
//
// A stream that Send of this package returned, bare or below
// StreamWrappers (also after ReadStreamHeader), is moved with splice(2)
// instead of being read: on one host, send to recv costs no copy through
// this process.
func (c *CLI) Receive(ctx context.Context, fs zfs.DatasetPath, stream io.Reader, opts zfs.RecvOptions) error {
	const op = "recv"
	if err := checkFS(op, fs); err != nil {
		return err
	}
	argv, err := recvArgv(fs, opts)
	if err != nil {
		return badInput(op, fs.String(), err)
	}
	if stream == nil {
		return badInput(op, fs.String(), errors.New("no stream to receive"))
	}
	if err := ctx.Err(); err != nil {
		return &zfs.Error{Op: op, Dataset: fs.String(), Err: err}
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return &zfs.Error{Op: op, Dataset: fs.String(), Err: &startError{err}}
	}
	cmd := c.command(ctx, argv)
	stderr := newTailBuffer(c.stderrLimit)
	cmd.Stdin = pr
	cmd.Stderr = stderr
	cmd.Cancel = pw.Close
	cmd.WaitDelay = c.cancelGrace
	start := time.Now()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return c.cmdError(ctx, op, fs.String(), "", &startError{err})
	}
	pr.Close()
	enlargePipe(pw, c.pipeSize)
	// A stream whose header ReadStreamHeader read: that first, then the
	// rest as any stream.
	var head []byte
	if r, ok := stream.(*replayed); ok {
		head, stream = r.head, r.rest
	}
	src, wrappers := spliceSource(stream)
	fed := make(chan error, 1)
	go func() {
		if len(head) > 0 {
			if _, err := pw.Write(head); err != nil {
				// zfs stopped reading: its exit says why.
				pw.Close()
				fed <- nil
				return
			}
		}
		if src != nil {
			if err, ok := feedSplice(pw, src, wrappers); ok {
				fed <- err
				return
			}
		}
		fed <- feed(pw, stream)
	}()
	waitErr := cmd.Wait()
	c.observed(cmd, start, waitErr)
	if errors.Is(waitErr, os.ErrClosed) {
		// Cancel's close raced with feed's: the close happened either way.
		waitErr = nil
	}

	var readErr error
	select {
	case readErr = <-fed:
	default:
		select {
		case readErr = <-fed:
		case <-ctx.Done():
		}
	}

	var rerr error
	if readErr != nil {
		rerr = &readError{readErr}
	}
	if waitErr == nil {
		if rerr == nil {
			return nil
		}
		// zfs took what it read as complete but the stream failed: do not
		// claim success for a stream the sender may not stand behind.
		return &zfs.Error{Op: op, Dataset: fs.String(), Msg: zfsMessage(stderr.String()), Err: rerr}
	}
	e := c.cmdError(ctx, op, fs.String(), stderr.String(), waitErr)
	if rerr != nil {
		if e.Err == nil {
			e.Err = rerr
		} else {
			e.Err = errors.Join(rerr, e.Err)
		}
	}
	return e
}
