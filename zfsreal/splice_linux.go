package zfsreal

import (
	"errors"
	"os"
	"syscall"
	"unsafe"
)

const (
	spliceMove     = 0x1 // SPLICE_F_MOVE
	spliceNonblock = 0x2 // SPLICE_F_NONBLOCK
	spliceChunk    = 1 << 20
)

// enlargePipe asks for a pipe buffer of size bytes; failing that (an old
// kernel, pipe-max-size), the pipe works as it is.
func enlargePipe(f *os.File, size int) {
	if size <= 0 {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETPIPE_SZ, uintptr(size))
	})
}

// readable reports whether a read of fd would not block: data, or end of
// stream (no writer left).
func readable(fd uintptr) bool {
	pfd := struct {
		fd      int32
		events  int16
		revents int16
	}{fd: int32(fd), events: 0x1} // POLLIN
	var zero syscall.Timespec
	n, _, errno := syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
	if errno != 0 {
		// Let the splice find out what is wrong.
		return true
	}
	return n > 0 && pfd.revents != 0 // POLLIN, POLLHUP or POLLERR
}

// pending is how many bytes are in the pipe fd.
func pending(fd uintptr) int {
	var n int32
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	if errno != 0 {
		return 0
	}
	return int(n)
}

// errSpliceUnsupported: splice refused the pair of files before anything
// moved; the caller copies instead.
var errSpliceUnsupported = errors.New("splice not supported here")

// splicePipe moves everything from the pipe src to the pipe dst until
// src's end of stream, without the bytes entering this process, and
// calls passed after every move. Both files stay pollable (non-blocking),
// so closing either one ends a wait on it at once, as for a Read or a
// Write. A wait holds only the file it waits for: closing dst ends the
// move even while src has nothing to give. It returns the bytes moved and
// the first error: one of src's is wrapped in srcError.
func splicePipe(dst, src *os.File, passed func(int64)) (int64, error) {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return 0, &srcError{err}
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		// Wait for data or the end, holding src only.
		if err := srcRC.Read(readable); err != nil {
			return total, &srcError{err}
		}
		var n int64
		var serr error
		srcEmpty, dstFull := false, false
		werr := dstRC.Write(func(dfd uintptr) bool {
			srcEmpty, dstFull = false, false
			rerr := srcRC.Read(func(sfd uintptr) bool {
				for {
					n, serr = syscall.Splice(int(sfd), nil, int(dfd), nil, spliceChunk, spliceMove|spliceNonblock)
					if serr != syscall.EINTR {
						break
					}
				}
				if serr != nil {
					n = 0 // the syscall's -1
				}
				if serr == syscall.EAGAIN {
					// Either side may be why: src empty, or dst full.
					serr = nil
					srcEmpty = pending(sfd) == 0
					dstFull = !srcEmpty
				}
				return true
			})
			if rerr != nil {
				serr = &srcError{rerr}
				return true
			}
			// dst full: wait until it has room (holding dst only).
			return !dstFull
		})
		switch {
		case werr != nil:
			return total, werr
		case serr == syscall.EINVAL && total == 0:
			return 0, errSpliceUnsupported
		case serr != nil:
			return total, serr
		case srcEmpty:
			continue // raced with the wait: wait again
		case n == 0:
			return total, nil // end of stream
		}
		total += n
		passed(n)
	}
}

// srcError marks an error of the source pipe (as opposed to dst's).
type srcError struct{ err error }

func (e *srcError) Error() string { return e.err.Error() }
func (e *srcError) Unwrap() error { return e.err }
