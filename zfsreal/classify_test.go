package zfsreal

import (
	"strings"
	"testing"

	"zrepl.dev/zrepl/engine/zfs"
)

// classifyCases are zfs's stderr texts: measured on OpenZFS 2.1.11 (see
// /work/shared/research/zfs-vm.md) or printed by OpenZFS's libzfs/zfs
// command for the error in question.
var classifyCases = []struct {
	stderr string
	want   zfs.Kind
}{
	// Measured on 2.1.11.
	{"cannot destroy snapshot srcp/fs@s1: dataset is busy\n", zfs.ErrDatasetBusy},
	{"cannot hold snapshot 'srcp/fs@s1': tag already exists on this dataset\n", zfs.ErrHoldTagExists},
	{"cannot release hold from snapshot 'srcp/fs@s1': no such tag on this dataset\n", zfs.ErrHoldTagNotFound},
	{"cannot receive new filesystem stream: destination 'dstp/part' exists\nmust specify -F to overwrite it\n", zfs.ErrDestinationExists},
	{"cannot receive incremental stream: destination dstp/m has been modified\nsince most recent snapshot\n", zfs.ErrDestinationModified},
	{"cannot receive incremental stream: most recent snapshot of dstp/m does not\nmatch incremental source\n", zfs.ErrIncrementalSourceMismatch},
	{"warning: cannot send 'p/fs@a': not an earlier snapshot from the same fs\n", zfs.ErrIncrementalSourceMismatch},
	{"warning: cannot send 'zdiff112_4/src/b@s0': Invalid cross-device link\n", zfs.ErrIncrementalSourceMismatch},
	{"warning: cannot send 'zrt119_1/case-2/src@c': incremental source (zrt119_1/case-2/src#nope) does not exist\n", zfs.ErrDatasetNotExist},
	{"cannot open 'srcp/fs@nonexist': dataset does not exist\n", zfs.ErrDatasetNotExist},
	{"cannot open 'p/fs#nope': no such pool or dataset\n", zfs.ErrDatasetNotExist},
	{"cannot create bookmark 'srcp/fs#bm_a1': bookmark exists\n", zfs.ErrDatasetExists},
	{"bookmark 'srcp/fs#bm_nope' does not exist.\n", zfs.ErrDatasetNotExist},
	{"cannot create snapshot 'srcp/fs@a1': dataset already exists\n", zfs.ErrDatasetExists},
	{"cannot resume send: resume token is corrupt (incorrect checksum)\n", zfs.ErrResumeTokenCorrupt},
	{"cannot resume send: resume token is corrupt (invalid format)\n", zfs.ErrResumeTokenCorrupt},
	{"cannot receive new filesystem stream: checksum mismatch or incomplete stream.\nPartially received snapshot is saved.\n" +
		"A resuming stream can be generated on the sending system by running:\n    zfs send -t 1-b88d7b776-b8-789c\n", zfs.ErrPartialReceive},
	{"'pool/x' does not have any resumable receive state to abort\n", zfs.ErrNoResumableState},

	// Measured on 2.3.2 (bookworm-backports) through the conformance suite
	// in the VM: a held snapshot's destroy, alone and in a batch.
	{"cannot destroy snapshot p/fs@s1: it's being held. Run 'zfs holds -r p/fs@s1' to see holders.\n", zfs.ErrDatasetBusy},

	// Measured on 2.1.11 through the conformance suite in the VM.
	{"warning: cannot send 'p/enc@e1': dataset key must be loaded\n", zfs.ErrKeyNotLoaded},
	{"cannot open 'p/c/nope': dataset does not exist\ncannot receive new filesystem stream: unable to restore to destination\n", zfs.ErrDatasetNotExist},
	{"cannot receive new filesystem stream: incomplete stream\n", 0},

	// Measured on 2.1.11 in the VM under a partial incremental receive of
	// p/dst from @b (its saved state is the hidden clone p/dst/%recv).
	{"cannot rollback to 'p/dst@a': clones of previous snapshots exist\nuse '-R' to force deletion of the following clones and dependents:\np/dst/%recv\n", zfs.ErrDatasetBusy},
	{"cannot destroy 'p/dst@b': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\np/dst/%recv\n", zfs.ErrDatasetBusy},
	{"cannot receive resume stream: destination p/dst has been modified\nsince most recent snapshot\n", zfs.ErrDestinationModified},
	// Without root (or without access to /dev/zfs): no kind of ours.
	{"Permission denied the ZFS utilities must be run as root.\n", 0},

	// Known from OpenZFS.
	{"cannot receive new filesystem stream: destination has snapshots (eg. dstp/m@a)\nmust destroy them to overwrite it\n", zfs.ErrDestinationExists},
	{"cannot receive new filesystem stream: destination 'dstp/m' is a clone\nmust destroy it to overwrite it\n", zfs.ErrDestinationExists},
	{"cannot restore to dstp/m@b: destination already exists\n", zfs.ErrDestinationExists},
	{"cannot receive incremental stream: destination 'dstp/gone' does not exist\n", zfs.ErrDatasetNotExist},
	{"cannot receive new filesystem stream: destination dstp/m contains partially-complete state from \"zfs receive -s\".\n", zfs.ErrDatasetBusy},
	{"cannot receive incremental stream: cannot perform raw receive on top of existing unencrypted dataset\n", zfs.ErrEncryptionMismatch},
	{"cannot receive new filesystem stream: zfs receive -F cannot be used to destroy an encrypted filesystem or overwrite an unencrypted one with an encrypted one\n", zfs.ErrEncryptionMismatch},
	{"cannot receive incremental stream: inherited key must be loaded\n", zfs.ErrKeyNotLoaded},
	{"cannot create 'p/enc/ph': encryption root's key is not loaded or provided\n", zfs.ErrKeyNotLoaded},
	{"cannot resume send: 'srcp/fs@s1' is no longer the same snapshot used in the initial send\n", zfs.ErrVersionMismatch},
	{"cannot resume send: 'srcp/fs@s1' used in the initial send no longer exists\n", zfs.ErrDatasetNotExist},
	{"cannot resume send: incremental source 0xa000000000000000 no longer exists\n", zfs.ErrDatasetNotExist},
	{"cannot rollback to 'p/fs@a': more recent snapshots or bookmarks exist\nuse '-r' to force deletion of the following snapshots and bookmarks:\np/fs@b\np/fs#c\n", zfs.ErrNewerSnapshotsExist},
	{"cannot destroy 'p/fs@a': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\np/clone\n", zfs.ErrDatasetBusy},
	{"cannot destroy 'p/fs': dataset is busy\n", zfs.ErrDatasetBusy},
	{"could not find any snapshots to destroy; check snapshot names.\n", zfs.ErrDatasetNotExist},
	{"cannot create 'p/a/b': parent does not exist\n", zfs.ErrDatasetNotExist},
	{"cannot create 'p/a': dataset already exists\n", zfs.ErrDatasetExists},
	{"cannot send p/fs@a: snapshot p/fs@a does not exist\n", zfs.ErrDatasetNotExist},
	{"cannot hold snapshot 'p/fs@gone': dataset does not exist\n", zfs.ErrDatasetNotExist},
	{"cannot receive: local origin for clone p/c@a does not exist\n", zfs.ErrDatasetNotExist},
	{"cannot receive new filesystem stream: pool must be upgraded to receive this stream.\n", zfs.ErrUnsupported},
	{"cannot receive: stream has unsupported feature, feature flags = 24\n", zfs.ErrUnsupported},
	{"cannot create bookmark 'p/fs#b': bookmark feature not enabled\n", zfs.ErrUnsupported},
	{"cannot open 'p/f!s': invalid character '!' in name\n", zfs.ErrInvalidName},

	// Not classified: the message is kept, the kind is 0.
	{"cannot receive new filesystem stream: checksum mismatch or incomplete stream\n", 0},
	{"cannot receive: failed to read from stream\n", 0},
	{"warning: cannot send 'srcp/enc@e1': Invalid argument\n", 0},
	{"cannot receive new filesystem stream: out of space\n", 0},
	{"internal error: Input/output error\n", 0},
	{"", 0},
}

func TestClassify(t *testing.T) {
	for _, c := range classifyCases {
		if got := classify(c.stderr); got != c.want {
			t.Errorf("classify(%q) = %v (%d), want %v (%d)", c.stderr, got, int(got), c.want, int(c.want))
		}
	}
}

// TestClassifyUnwrapped checks that a message's kind does not depend on
// where zfs broke its lines.
func TestClassifyUnwrapped(t *testing.T) {
	for _, c := range classifyCases {
		flat := strings.Join(strings.Fields(c.stderr), " ")
		if got := classify(flat); got != c.want {
			t.Errorf("classify(%q) = %v, want %v", flat, got, c.want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, c := range classifyCases {
		f.Add(c.stderr)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k := classify(s)
		if k != 0 && strings.TrimSpace(s) == "" {
			t.Errorf("classify(%q) = %v for blank text", s, k)
		}
	})
}
