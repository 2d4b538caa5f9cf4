package planner

import (
	"errors"
	"fmt"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// matchToken decides whether the receiver's resume token encodes exactly
// step, the first step of the plan for the sender's filesystem fs. The
// token comes from the receiver, which may lie: everything the send would
// take from it (dataset, snapshot name and GUID, incremental source,
// raw-ness) must equal what the plan decided on its own
// (resumetoken.Token.Match). On a match it returns the token's decoded
// form; otherwise why not. raw is whether the plan's stream is raw
// (zfs.SendFlags.RawStream).
func matchToken(tok string, fs zfs.DatasetPath, step *Step, raw bool) (resumetoken.Token, string) {
	t, err := resumetoken.Decode(tok)
	if err != nil {
		return t, fmt.Sprintf("the receiver's resume token does not decode: %v", err)
	}
	encodes := resumetoken.Describe(t)
	if step == nil {
		return t, fmt.Sprintf("the receiver's resume token encodes %s, but there is nothing to send", encodes)
	}
	var mm *resumetoken.MismatchError
	if err := t.Match(stepSend(fs, step, raw)); errors.As(err, &mm) {
		return t, fmt.Sprintf("the receiver's resume token encodes %s, the plan's first step is %s (%s differs)",
			encodes, describeStep(fs, step, raw), mm.What)
	}
	return t, ""
}

// stepSend is the send of step on fs as a token must continue it.
func stepSend(fs zfs.DatasetPath, step *Step, raw bool) resumetoken.Send {
	return resumetoken.Send{FS: fs, To: step.To, From: step.From, Raw: &raw}
}

func describeStep(fs zfs.DatasetPath, s *Step, raw bool) string {
	from := "full"
	if s.From != nil {
		from = fmt.Sprintf("from %s (guid %d)", s.From.RelName(), s.From.GUID)
	}
	return fmt.Sprintf("%q (guid %d, %s, raw %v)", fs.String()+"@"+s.To.Name, s.To.GUID, from, raw)
}
