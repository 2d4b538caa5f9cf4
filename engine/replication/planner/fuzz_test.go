package planner

import (
	"testing"

	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// FuzzResumeToken feeds arbitrary receiver tokens to the planner: it must
// not panic, and a token it uses must encode exactly the step it rides on.
func FuzzResumeToken(f *testing.F) {
	f.Add(resumetoken.Token{ToName: "pool/fs@b", ToGUID: 102, FromGUID: 101}.Encode(), false)
	f.Add(resumetoken.Token{ToName: "pool/fs@c", ToGUID: 103}.Encode(), true)
	f.Add(resumetoken.Token{ToName: "pool/fs@b", ToGUID: 102, FromGUID: 101, RawOK: true, SavedOK: true}.Encode(), false)
	f.Add("1-deadbeef-10-0011", false)
	f.Add("", true)
	f.Fuzz(func(t *testing.T, tok string, initial bool) {
		r := receiver("fs", snap("a", 101, 3))
		if initial {
			r = receiver("fs")
		}
		r = withToken(r, tok)
		for _, abort := range []bool{false, true} {
			snd := sender("fs", a, b, c)
			res, err := Plan(Input{Sender: []Filesystem{snd}, Receiver: []Filesystem{r}, Policy: Policy{AbortForeignPartialReceive: abort}})
			if err != nil {
				t.Fatal(err)
			}
			p := res.Filesystems[0]
			for i, st := range p.Steps {
				if st.ResumeToken == "" {
					continue
				}
				if i != 0 || st.ResumeToken != tok {
					t.Fatalf("step %d carries token %q", i, st.ResumeToken)
				}
				dec, err := resumetoken.Decode(tok)
				if err != nil {
					t.Fatalf("used an undecodable token: %v", err)
				}
				var from uint64
				if st.From != nil {
					from = st.From.GUID
				}
				if dec.ToName != "pool/fs@"+st.To.Name || dec.ToGUID != st.To.GUID || dec.FromGUID != from || dec.RawOK != st.Flags.RawStream(snd.Info) || dec.SavedOK {
					t.Fatalf("token %+v used for step %v", dec, st)
				}
			}
			if tok != "" && p.Conflict == nil && (len(p.Steps) == 0 || p.Steps[0].ResumeToken == "") && len(p.Actions) != 1 {
				t.Fatalf("token neither used, aborted nor a conflict: %+v", p)
			}
		}
	})
}
