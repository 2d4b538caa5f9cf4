package zfstest

import (
	"fmt"
	"io"

	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	register("SendFromNotEarlierSource", caseSendFromNotEarlierSource)
	register("SendFromMissingSource", caseSendFromMissingSource)
}

// An incremental send whose source (snapshot or bookmark) is not older
// than its target fails: incremental source mismatch. Measured on OpenZFS
// 2.1.11 and 2.3.9 (TestDifferential found zfsreal leaving it unclassified
// on 2.3.9).
// sendAll reads a whole send stream: real zfs reports some errors only
// when it exits.
func (e *env) sendAll(args zfs.SendArgs) error {
	s, err := e.z.Send(e.ctx, args)
	if err == nil {
		_, err = io.Copy(io.Discard, s)
		if cerr := s.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// An incremental send from a snapshot that does not exist fails opening
// it (the error names the target, as zfsreal runs it); from a missing
// bookmark it does not exist either. Measured on OpenZFS 2.1.11 and 2.3.9
// (TestDifferential found the snapshot's text on 2.1.11).
func caseSendFromMissingSource(e *env) {
	src, _, _, _, c := e.pair()
	nope := zfs.FilesystemVersion{Kind: zfs.Snapshot, Name: "nope"}
	e.wantErr(e.sendAll(incr(src, nope, c)), zfs.ErrDatasetNotExist, "send", c.Ref(src).String(),
		fmt.Sprintf("cannot open '%s': dataset does not exist", nope.Ref(src)))
	err := e.sendAll(incr(src, zfs.FilesystemVersion{Kind: zfs.Bookmark, Name: "nope"}, c))
	e.wantErr(err, zfs.ErrDatasetNotExist, "send", "", "")
	e.t.Logf("send from a missing bookmark: %v", err)
}

func caseSendFromNotEarlierSource(e *env) {
	src, dst, a, _, c := e.pair()
	bc := e.bookmark(c.Ref(src), "bc")
	want := fmt.Sprintf("warning: cannot send '%s': not an earlier snapshot from the same fs", a.Ref(src))
	for _, from := range []zfs.FilesystemVersion{c, bc} {
		e.wantErr(e.sendAll(incr(src, from, a)), zfs.ErrIncrementalSourceMismatch, "send", a.Ref(src).String(), want)
	}
	if _, ok := e.info(dst); ok {
		e.t.Errorf("%s exists", dst)
	}
}
