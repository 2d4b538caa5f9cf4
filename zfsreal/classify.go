package zfsreal

import (
	"regexp"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// A pattern maps a piece of zfs's stderr to an error kind.
type pattern struct {
	kind zfs.Kind
	// sub is matched as a substring, re when sub is empty.
	sub string
	re  *regexp.Regexp
}

// patterns are tried in order, on stderr with every run of white space
// folded to one space (zfs wraps some messages over two lines). Order
// matters where one message contains another's words: an interrupted
// resumable receive also says "checksum mismatch or incomplete stream",
// and a hold tag "already exists on this dataset".
var patterns = []pattern{
	// Partial receive state saved by this receive; one left by an earlier
	// receive is in the way of a new stream, like a busy dataset (the
	// conformance suite's choice, which zfsmodel shares).
	{kind: zfs.ErrPartialReceive, sub: "Partially received snapshot is saved"},
	{kind: zfs.ErrDatasetBusy, sub: `contains partially-complete state from "zfs receive -s"`},
	{kind: zfs.ErrNoResumableState, sub: "does not have any resumable receive state to abort"},
	{kind: zfs.ErrResumeTokenCorrupt, sub: "resume token is corrupt"},
	// zfs send -t: the token's snapshot was replaced, or is gone.
	{kind: zfs.ErrVersionMismatch, sub: "is no longer the same snapshot used in the initial send"},
	{kind: zfs.ErrDatasetNotExist, sub: "used in the initial send no longer exists"},
	{kind: zfs.ErrDatasetNotExist, re: regexp.MustCompile(`incremental source (0x)?[0-9a-fA-F]+ no longer exists`)},

	{kind: zfs.ErrEncryptionMismatch, sub: "cannot be used to destroy an encrypted filesystem"},
	{kind: zfs.ErrEncryptionMismatch, sub: "overwrite an unencrypted one with an encrypted one"},
	{kind: zfs.ErrEncryptionMismatch, sub: "cannot perform raw receive on top of existing unencrypted dataset"},
	{kind: zfs.ErrEncryptionMismatch, sub: "incompatible embedded data stream feature with encrypted receive"},
	{kind: zfs.ErrKeyNotLoaded, sub: "key must be loaded"},
	{kind: zfs.ErrKeyNotLoaded, sub: "encryption key not loaded"},
	{kind: zfs.ErrKeyNotLoaded, sub: "key not loaded"},
	// zfs create below an encrypted parent whose key is unloaded (2.1.11).
	{kind: zfs.ErrKeyNotLoaded, sub: "encryption root's key is not loaded"},

	// Receive conflicts.
	{kind: zfs.ErrDestinationExists, sub: "must specify -F to overwrite it"},
	{kind: zfs.ErrDestinationExists, sub: "destination has snapshots"},
	{kind: zfs.ErrDestinationExists, sub: "must destroy it to overwrite it"},
	{kind: zfs.ErrDestinationExists, sub: "destination already exists"},
	{kind: zfs.ErrDestinationModified, sub: "has been modified since most recent snapshot"},
	{kind: zfs.ErrIncrementalSourceMismatch, sub: "does not match incremental source"},
	// zfs send -i from a version not older than the target (2.1.11 and
	// 2.3.9, TestDifferential).
	{kind: zfs.ErrIncrementalSourceMismatch, sub: "not an earlier snapshot from the same fs"},
	// Its size estimate (zfs send -nvP) prints the kernel's EXDEV as it is
	// (2.3.9, TestDifferential).
	{kind: zfs.ErrIncrementalSourceMismatch, re: regexp.MustCompile(`cannot send '[^']*': Invalid cross-device link`)},

	{kind: zfs.ErrNewerSnapshotsExist, sub: "more recent snapshots or bookmarks exist"},
	{kind: zfs.ErrNewerSnapshotsExist, sub: "more recent snapshots exist"},

	{kind: zfs.ErrHoldTagExists, sub: "tag already exists on this dataset"},
	{kind: zfs.ErrHoldTagNotFound, sub: "no such tag on this dataset"},

	// A held snapshot, a mounted or in-use dataset; a snapshot with clones
	// cannot be destroyed either while they exist, nor rolled back through
	// with -r (the saved state of a partial incremental receive is such a
	// clone: pool/fs/%recv).
	{kind: zfs.ErrDatasetBusy, sub: "dataset is busy"},
	// A held snapshot's destroy on OpenZFS 2.3.2 (2.1.11 said "dataset is
	// busy"): "cannot destroy snapshot p/fs@s: it's being held. Run 'zfs
	// holds -r p/fs@s' to see holders."
	{kind: zfs.ErrDatasetBusy, sub: "it's being held"},
	{kind: zfs.ErrDatasetBusy, sub: "snapshot has dependent clones"},
	{kind: zfs.ErrDatasetBusy, sub: "clones of previous snapshots exist"},

	{kind: zfs.ErrDatasetExists, sub: "dataset already exists"},
	{kind: zfs.ErrDatasetExists, sub: "bookmark exists"},

	{kind: zfs.ErrDatasetNotExist, sub: "dataset does not exist"},
	{kind: zfs.ErrDatasetNotExist, sub: "could not find any snapshots to destroy"},
	{kind: zfs.ErrDatasetNotExist, sub: "parent does not exist"},
	// zfs send -i from a missing bookmark (2.1.11; 2.3.9 says "cannot open
	// 'p/fs#b': no such pool or dataset"): "warning: cannot send 'p/fs@s':
	// incremental source (p/fs#b) does not exist".
	{kind: zfs.ErrDatasetNotExist, re: regexp.MustCompile(`incremental source \(\S+\) does not exist`)},
	// zfs bookmark from a missing bookmark (2.1.11, TestDifferential).
	{kind: zfs.ErrDatasetNotExist, sub: "no such pool or dataset"},
	// "bookmark 'p/fs#b' does not exist.", "destination 'p/x' does not
	// exist", "cannot send p/fs@a: snapshot p/fs@a does not exist", ...
	{kind: zfs.ErrDatasetNotExist, re: regexp.MustCompile(`\b(bookmark|destination|snapshot|origin|dataset|fs|filesystem)\b[^:]* does not exist`)},

	{kind: zfs.ErrUnsupported, sub: "must be upgraded"},
	{kind: zfs.ErrUnsupported, sub: "feature not enabled"},
	{kind: zfs.ErrUnsupported, sub: "stream has unsupported feature"},
	{kind: zfs.ErrUnsupported, sub: "operation not supported"},

	{kind: zfs.ErrInvalidName, sub: "invalid character"},
	{kind: zfs.ErrInvalidName, sub: "name is too long"},
}

// classify returns the kind of a zfs error message, or 0 if it is not one
// we know (the caller keeps the whole message either way).
func classify(stderr string) zfs.Kind {
	s := strings.Join(strings.Fields(stderr), " ")
	for _, p := range patterns {
		if p.sub != "" {
			if strings.Contains(s, p.sub) {
				return p.kind
			}
		} else if p.re.MatchString(s) {
			return p.kind
		}
	}
	return 0
}
