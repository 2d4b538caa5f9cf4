package resumetoken

import (
	"fmt"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
)

// Send is the send a resume token is to continue, as far as its caller
// knows it. Everyone who holds a token and a send (the planner, the
// sending endpoint, both backends) asks Match whether the one continues
// the other, so that a token is judged by one set of rules.
type Send struct {
	FS zfs.DatasetPath
	// To is the snapshot sent, by name; its GUID is checked unless 0.
	To zfs.FilesystemVersion
	// From is the incremental source, nil for a full send; its GUID is
	// checked unless 0 (a token names its source by GUID only).
	From *zfs.FilesystemVersion
	// Raw, where set, is whether the send's stream is raw
	// (zfs.SendFlags.RawStream): a policy's decision a token must agree
	// with. The backends leave it nil: ZFS takes a resumed stream's flags
	// from the token.
	Raw *bool
}

// What part of a send a token does not continue (MismatchError.What).
const (
	DiffDataset      = "dataset"
	DiffSnapshotName = "snapshot name"
	DiffSnapshotGUID = "snapshot guid"
	DiffFrom         = "incremental source"
	DiffRaw          = "raw flag"
	// DiffSaved: the token continues a zfs send --saved, which sends the
	// sender's own partial receive state, never a snapshot.
	DiffSaved = "saved-state flag"
)

// MismatchError says that a valid token continues another send. It has
// the kind zfs.ErrResumeTokenMismatch (errors.Is, zfs.KindOf).
type MismatchError struct {
	Token Token
	Send  Send
	// What is the first part that differs, one of the Diff constants.
	What string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("the token encodes %s, the send is %s (%s differs)", Describe(e.Token), describeSend(e.Send), e.What)
}

// Unwrap gives the error its kind.
func (e *MismatchError) Unwrap() error { return zfs.ErrResumeTokenMismatch }

// Match returns nil if t continues s, otherwise a *MismatchError naming
// the first part that differs, in this order: dataset, snapshot name,
// snapshot GUID, incremental source, raw flag, saved-state flag.
func (t Token) Match(s Send) error {
	mismatch := func(what string) error { return &MismatchError{Token: t, Send: s, What: what} }
	ds, snap, ok := strings.Cut(t.ToName, "@")
	switch {
	case !ok || ds != s.FS.String():
		return mismatch(DiffDataset)
	case snap != s.To.Name:
		return mismatch(DiffSnapshotName)
	case s.To.GUID != 0 && t.ToGUID != s.To.GUID:
		return mismatch(DiffSnapshotGUID)
	case s.From == nil && t.FromGUID != 0,
		s.From != nil && t.FromGUID == 0,
		s.From != nil && s.From.GUID != 0 && t.FromGUID != s.From.GUID:
		return mismatch(DiffFrom)
	case s.Raw != nil && t.RawOK != *s.Raw:
		return mismatch(DiffRaw)
	case t.SavedOK:
		return mismatch(DiffSaved)
	}
	return nil
}

// Match decodes tok and matches it against s: the error is a
// *DecodeError (zfs.ErrResumeTokenCorrupt) or a *MismatchError
// (zfs.ErrResumeTokenMismatch). The token is returned as far as decoded.
func Match(tok string, s Send) (Token, error) {
	t, err := Decode(tok)
	if err != nil {
		return t, err
	}
	return t, t.Match(s)
}

// Describe shows what t sends in one line: name (clipped: a hostile
// receiver may put a megabyte there), GUID, source, raw-ness.
func Describe(t Token) string {
	from := "full"
	if t.FromGUID != 0 {
		from = fmt.Sprintf("from guid %d", t.FromGUID)
	}
	saved := ""
	if t.SavedOK {
		saved = ", saved state"
	}
	return fmt.Sprintf("%q (guid %d, %s, raw %v%s)", clip(t.ToName), t.ToGUID, from, t.RawOK, saved)
}

func describeSend(s Send) string {
	from := "full"
	if s.From != nil {
		from = fmt.Sprintf("from %s (guid %d)", s.From.RelName(), s.From.GUID)
	}
	raw := ""
	if s.Raw != nil {
		raw = fmt.Sprintf(", raw %v", *s.Raw)
	}
	return fmt.Sprintf("%q (guid %d, %s%s)", s.FS.String()+"@"+s.To.Name, s.To.GUID, from, raw)
}

// clip keeps a name from a token readable.
func clip(s string) string {
	const max = 300
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
