package planner

import (
	"fmt"
	"strings"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// matchToken decides whether the receiver's resume token encodes exactly
// step, the first step of the plan for the sender's filesystem fs. The
// token comes from the receiver, which may lie: everything the send would
// take from it (dataset, snapshot name and GUID, incremental source,
// raw-ness) must equal what the plan decided on its own. On a match it
// returns the token's decoded form; otherwise why not. raw is whether the
// plan's stream is raw (zfs.SendFlags.RawStream).
func matchToken(tok string, fs zfs.DatasetPath, step *Step, raw bool) (resumetoken.Token, string) {
	t, err := resumetoken.Decode(tok)
	if err != nil {
		return t, fmt.Sprintf("the receiver's resume token does not decode: %v", err)
	}
	encodes := describeToken(t)
	if step == nil {
		return t, fmt.Sprintf("the receiver's resume token encodes %s, but there is nothing to send", encodes)
	}
	planned := fmt.Sprintf("the plan's first step is %s", describeStep(fs, step, raw))
	mismatch := func(what string) (resumetoken.Token, string) {
		return t, fmt.Sprintf("the receiver's resume token encodes %s, %s (%s differs)", encodes, planned, what)
	}
	ds, snap, ok := strings.Cut(t.ToName, "@")
	switch {
	case !ok || ds != fs.String():
		return mismatch("dataset")
	case snap != step.To.Name:
		return mismatch("snapshot name")
	case t.ToGUID != step.To.GUID:
		return mismatch("snapshot guid")
	case step.From == nil && t.FromGUID != 0:
		return mismatch("incremental source")
	case step.From != nil && t.FromGUID != step.From.GUID:
		return mismatch("incremental source")
	case t.RawOK != raw:
		return mismatch("raw flag")
	case t.SavedOK:
		// zfs send --saved sends the sender's own partial receive
		// state, not the snapshot.
		return mismatch("saved-state flag")
	}
	return t, ""
}

func describeToken(t resumetoken.Token) string {
	from := "full"
	if t.FromGUID != 0 {
		from = fmt.Sprintf("from guid %d", t.FromGUID)
	}
	return fmt.Sprintf("%q (guid %d, %s, raw %v)", clip(t.ToName), t.ToGUID, from, t.RawOK)
}

// clip keeps a name from a token readable: a hostile receiver may put up
// to a megabyte there.
func clip(s string) string {
	const max = 300
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

func describeStep(fs zfs.DatasetPath, s *Step, raw bool) string {
	from := "full"
	if s.From != nil {
		from = fmt.Sprintf("from %s (guid %d)", s.From.RelName(), s.From.GUID)
	}
	return fmt.Sprintf("%q (guid %d, %s, raw %v)", fs.String()+"@"+s.To.Name, s.To.GUID, from, raw)
}
