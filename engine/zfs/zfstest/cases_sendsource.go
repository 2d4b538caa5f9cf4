package zfstest

import (
	"fmt"
	"io"

	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	register("SendFromNotEarlierSource", caseSendFromNotEarlierSource)
}

// An incremental send whose source (snapshot or bookmark) is not older
// than its target fails: incremental source mismatch. Measured on OpenZFS
// 2.1.11 and 2.3.9 (TestDifferential found zfsreal leaving it unclassified
// on 2.3.9).
func caseSendFromNotEarlierSource(e *env) {
	src, dst, a, _, c := e.pair()
	bc := e.bookmark(c.Ref(src), "bc")
	want := fmt.Sprintf("warning: cannot send '%s': not an earlier snapshot from the same fs", a.Ref(src))
	for _, from := range []zfs.FilesystemVersion{c, bc} {
		// Real zfs reports it when it exits: read the stream to its end.
		s, err := e.z.Send(e.ctx, incr(src, from, a))
		if err == nil {
			_, err = io.Copy(io.Discard, s)
			if cerr := s.Close(); err == nil {
				err = cerr
			}
		}
		e.wantErr(err, zfs.ErrIncrementalSourceMismatch, "send", a.Ref(src).String(), want)
	}
	if _, ok := e.info(dst); ok {
		e.t.Errorf("%s exists", dst)
	}
}
