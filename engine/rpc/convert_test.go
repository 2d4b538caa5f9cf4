package rpc

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/zfs"
)

var nameGen = rapid.StringMatching(`[a-zA-Z0-9_][a-zA-Z0-9_.:-]{0,20}`)

func versionGen(kind zfs.VersionKind) *rapid.Generator[zfs.FilesystemVersion] {
	return rapid.Custom(func(t *rapid.T) zfs.FilesystemVersion {
		k := kind
		if k == 0 {
			k = rapid.SampledFrom([]zfs.VersionKind{zfs.Snapshot, zfs.Bookmark}).Draw(t, "kind")
		}
		v := zfs.FilesystemVersion{
			Kind: k, Name: nameGen.Draw(t, "name"), GUID: rapid.Uint64().Draw(t, "guid"),
			CreateTXG: rapid.Uint64().Draw(t, "txg"), UserRefs: rapid.Uint64().Draw(t, "refs"),
		}
		if rapid.Bool().Draw(t, "hasCreation") {
			v.Creation = time.Unix(rapid.Int64Range(-62135596800, 253402300799).Draw(t, "sec"), rapid.Int64Range(0, 999999999).Draw(t, "nsec")).UTC()
		}
		return v
	})
}

func pathGen() *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		p := "pool"
		for range rapid.IntRange(0, 4).Draw(t, "depth") {
			p += "/" + nameGen.Draw(t, "comp")
		}
		return p
	})
}

// What one side encodes, the other decodes to the same values.
func TestConversionsRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		req := endpoint.SendRequest{
			FS: pathGen().Draw(t, "fs"), To: versionGen(zfs.Snapshot).Draw(t, "to"),
			ResumeToken: rapid.String().Draw(t, "token"),
			Protection:  rapid.SampledFrom([]endpoint.Protection{endpoint.GuaranteeResumability, endpoint.GuaranteeIncremental, endpoint.GuaranteeNothing}).Draw(t, "protection"),
		}
		if rapid.Bool().Draw(t, "incremental") {
			from := versionGen(0).Draw(t, "from")
			req.From = &from
		}
		got, err := fromPBSendReq(toPBSendReq(req), false)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(req, got); d != "" {
			t.Fatalf("send request changed on the wire:\n%s", d)
		}

		rreq := endpoint.ReceiveRequest{FS: req.FS, From: req.From, To: req.To, Full: req.From == nil, Resuming: rapid.Bool().Draw(t, "resuming"), Protection: req.Protection}
		if rreq.To.GUID == 0 {
			rreq.To.GUID = 1
		}
		gotR, err := fromPBReceiveReq(toPBReceiveReq(rreq, extSet{receive: true}))
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(rreq, gotR); d != "" {
			t.Fatalf("receive request changed on the wire:\n%s", d)
		}

		sender := rapid.Bool().Draw(t, "sender")
		for range rapid.IntRange(0, 5).Draw(t, "nfs") {
			p := zfs.MustDatasetPath(pathGen().Draw(t, "path"))
			f := endpoint.Filesystem{Path: p.String(), Info: zfs.FilesystemInfo{
				GUID:       rapid.Uint64().Draw(t, "fsguid"),
				Encryption: rapid.SampledFrom([]string{"off", "aes-256-gcm"}).Draw(t, "enc"), EncryptionRoot: "",
				KeyStatus:   rapid.SampledFrom([]zfs.KeyStatus{zfs.KeyStatusNone, zfs.KeyStatusAvailable, zfs.KeyStatusUnavailable}).Draw(t, "ks"),
				Placeholder: rapid.Bool().Draw(t, "ph"),
			}}
			f.Versions = rapid.SliceOf(versionGen(0)).Draw(t, "versions")
			if len(f.Versions) == 0 {
				f.Versions = nil
			}
			f.Marks.Cursors = rapid.SliceOfN(rapid.Uint64(), 0, 3).Draw(t, "cursors")
			if len(f.Marks.Cursors) == 0 {
				f.Marks.Cursors = nil
			}
			f.Marks.StepBookmarks = rapid.Bool().Draw(t, "stepbookmarks")
			f.Send = zfs.SendPolicy{Encrypted: rapid.Bool().Draw(t, "encrypted"), Flags: zfs.SendFlags{
				Raw: rapid.Bool().Draw(t, "w"), Properties: rapid.Bool().Draw(t, "p"), BackupProperties: rapid.Bool().Draw(t, "b"),
				LargeBlocks: rapid.Bool().Draw(t, "L"), Compressed: rapid.Bool().Draw(t, "c"), EmbeddedData: rapid.Bool().Draw(t, "e"), Saved: rapid.Bool().Draw(t, "S"),
			}}
			// A sender's name is its full name; a receiver lists its
			// resume token.
			if sender {
				f.Info.Path = p
			} else {
				f.Info.ReceiveResumeToken = rapid.String().Draw(t, "rtok")
			}
			pf := toPBFilesystem(f, true, sender)
			got, err := fromPBFilesystem(pf, sender)
			if err != nil {
				t.Fatal(err)
			}
			if got.Versions, err = fromPBVersions(pf.Path, pf.ZreplDevVersions); err != nil {
				t.Fatal(err)
			}
			if len(got.Versions) == 0 {
				got.Versions = nil
			}
			if d := cmp.Diff(f, got, cmp.AllowUnexported(zfs.DatasetPath{})); d != "" {
				t.Fatalf("listing changed on the wire:\n%s", d)
			}
		}
	})
}
