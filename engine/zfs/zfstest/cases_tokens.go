package zfstest

import (
	"fmt"

	"zrepl.dev/zrepl/engine/zfs"
)

func init() {
	register("ResumeTokenStreamFeatures", caseResumeTokenStreamFeatures)
}

// A partial receive's token records the feature flags of the stream, not
// the flags the send was given: -c gives compressok and -e embedok (the
// embedded_data feature is active on every pool), but -L gives largeblockok
// only where the dataset has blocks above 128 KiB (the large_blocks
// feature active on it), which the suite's filesystems (recordsize 128K)
// never have. Measured on OpenZFS 2.1.11 and 2.3.9 (TestDifferential found
// it on 2.1.11).
func caseResumeTokenStreamFeatures(e *env) {
	src, _, a, b, _ := e.pair()
	for i, f := range []zfs.SendFlags{{}, {LargeBlocks: true}, {Compressed: true}, {EmbeddedData: true},
		{LargeBlocks: true, Compressed: true, EmbeddedData: true}} {
		for _, from := range []*zfs.FilesystemVersion{nil, &a} {
			dst := e.path(fmt.Sprintf("sink/t%d-%v", i, from != nil))
			args := full(src, b)
			var fromGUID uint64
			if from != nil {
				args, fromGUID = incr(src, a, b), a.GUID
				e.mustTransfer(full(src, a), dst, zfs.RecvOptions{})
			}
			args.Flags = f
			err, cut := e.interrupt(args, dst, true)
			e.wantErr(err, zfs.ErrPartialReceive, "recv", dst.String(), "")
			tokStr := e.checkToken(dst, src, b, fromGUID, cut)
			_, tok := e.token(dst)
			if tok.LargeBlockOK || tok.CompressOK != f.Compressed || tok.EmbedOK != f.EmbeddedData || tok.RawOK {
				e.t.Errorf("token of %s (incremental %v) cut at %d: largeblockok %v compressok %v embedok %v rawok %v, want false %v %v false",
					fmt.Sprintf("%+v", f), from != nil, cut, tok.LargeBlockOK, tok.CompressOK, tok.EmbedOK, tok.RawOK, f.Compressed, f.EmbeddedData)
			}
			// The resumed send takes its flags from the token.
			args.ResumeToken = tokStr
			e.mustTransfer(args, dst, zfs.RecvOptions{Resumable: true})
			e.sameContent(b.Ref(src), b.Ref(dst))
		}
	}
}
