package planner

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/engine/zfs/resumetoken"
)

// history is a generated scenario for one filesystem: a linear sender
// history of n snapshots (by index), of which some were destroyed on the
// sender (some leaving bookmarks), and some replicated to the receiver
// (in order, later pruned there), plus snapshots only the receiver has.
type history struct {
	guids      []uint64
	txgs       []uint64
	senderSnap []bool // original i survives as a sender snapshot
	senderBook []bool // original i has a sender bookmark
	recv       []bool // the receiver has original i
	recvOnlyOld,
	recvOnlyNew int // receiver-only snapshots before / after the replicated ones
	receiverExists bool
}

func genHistory(t *rapid.T) history {
	n := rapid.IntRange(0, 25).Draw(t, "n")
	h := history{
		guids:      rapid.SliceOfNDistinct(rapid.Uint64Min(1), n+8, n+8, rapid.ID[uint64]).Draw(t, "guids"),
		txgs:       make([]uint64, n),
		senderSnap: make([]bool, n),
		senderBook: make([]bool, n),
		recv:       make([]bool, n),
	}
	// rapid leans towards small draws (a Float64Range is mostly 0; here and below), so
	// the random choices are plain booleans: half the histories lose
	// snapshots, and those keep bookmarks of about half of them.
	deletes := rapid.Bool().Draw(t, "deletes")
	bookmarks := rapid.Bool().Draw(t, "bookmarks")
	txg := uint64(0)
	for i := range n {
		txg += rapid.Uint64Range(1, 5).Draw(t, "dtxg")
		h.txgs[i] = txg
		h.senderSnap[i] = !deletes || rapid.Bool().Draw(t, "keep")
		h.senderBook[i] = bookmarks && rapid.Bool().Draw(t, "book")
	}
	h.receiverExists = rapid.Bool().Draw(t, "receiverExists")
	if h.receiverExists && n > 0 {
		// The receiver got originals 0..k in order and pruned some of
		// the older ones since.
		k := rapid.IntRange(-1, n-1).Draw(t, "k")
		for i := 0; i < k; i++ {
			h.recv[i] = rapid.Bool().Draw(t, "recv")
		}
		if k >= 0 {
			h.recv[k] = true
		}
	}
	if h.receiverExists {
		h.recvOnlyOld = rapid.IntRange(0, 2).Draw(t, "recvOnlyOld")
		if rapid.Bool().Draw(t, "diverge") && rapid.Bool().Draw(t, "diverge more") {
			h.recvOnlyNew = rapid.IntRange(1, 2).Draw(t, "recvOnlyNew")
		}
	}
	return h
}

func (h history) n() int { return len(h.txgs) }

func (h history) senderFS(path string) Filesystem {
	var vs []zfs.FilesystemVersion
	for i := range h.n() {
		if h.senderSnap[i] {
			vs = append(vs, snap(fmt.Sprintf("s%03d", i), h.guids[i], h.txgs[i]))
		}
		if h.senderBook[i] {
			vs = append(vs, book(fmt.Sprintf("zrepl_CURSOR_%03d", i), h.guids[i], h.txgs[i]))
		}
	}
	return sender(path, vs...)
}

func (h history) receiverFS(path string) *Filesystem {
	if !h.receiverExists {
		return nil
	}
	var vs []zfs.FilesystemVersion
	txg := uint64(100)
	extra := h.n()
	add := func(name string, guid uint64) {
		txg += 3
		vs = append(vs, snap(name, guid, txg))
	}
	for range h.recvOnlyOld {
		add(fmt.Sprintf("old%d", extra), h.guids[extra])
		extra++
	}
	for i := range h.n() {
		if h.recv[i] {
			add(fmt.Sprintf("s%03d", i), h.guids[i])
		}
	}
	for range h.recvOnlyNew {
		add(fmt.Sprintf("new%d", extra), h.guids[extra])
		extra++
	}
	fs := receiver(path, vs...)
	if len(vs) == 0 {
		fs = placeholder(fs)
	}
	return &fs
}

// expected is the oracle: the plan's outcome derived from the scenario's
// indices, not from GUID and txg scanning as the planner does it.
func (h history) expected(pol Policy) (status Status, kind ConflictKind, sends []int, base int) {
	var surviving []int
	for i := range h.n() {
		if h.senderSnap[i] {
			surviving = append(surviving, i)
		}
	}
	recvAny := h.recvOnlyOld+h.recvOnlyNew > 0 || slices.Contains(h.recv, true)
	if !recvAny {
		switch {
		case len(surviving) == 0:
			return StatusNoSnapshots, 0, nil, -1
		case pol.InitialReplication == AllSnapshots:
			return StatusReplicate, 0, surviving, -1
		default:
			return StatusReplicate, 0, surviving[len(surviving)-1:], -1
		}
	}
	base = -1
	for i := h.n() - 1; i >= 0; i-- {
		if h.recv[i] && (h.senderSnap[i] || h.senderBook[i]) {
			base = i
			break
		}
	}
	if base < 0 {
		return StatusConflict, ConflictNoCommonVersion, nil, -1
	}
	for _, i := range surviving {
		if i > base {
			sends = append(sends, i)
		}
	}
	receiverNewer := h.recvOnlyNew > 0
	for i := base + 1; i < h.n(); i++ {
		receiverNewer = receiverNewer || h.recv[i]
	}
	switch {
	case receiverNewer && len(sends) > 0:
		return StatusConflict, ConflictDiverged, nil, base
	case receiverNewer:
		return StatusConflict, ConflictReceiverAhead, nil, base
	case len(sends) == 0:
		return StatusUpToDate, 0, nil, base
	}
	return StatusReplicate, 0, sends, base
}

func TestPropertyHistory(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h := genHistory(t)
		pol := Policy{InitialReplication: InitialReplication(rapid.IntRange(0, 1).Draw(t, "initial"))}
		s, r := h.senderFS("fs"), h.receiverFS("fs")
		in := Input{Sender: []Filesystem{s}, Policy: pol}
		if r != nil {
			in.Receiver = []Filesystem{*r}
		}
		res, err := Plan(in)
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		p := res.Filesystems[0]

		status, kind, sends, base := h.expected(pol)
		if p.Status != status {
			t.Fatalf("status %v, want %v (conflict %v)", p.Status, status, p.Conflict)
		}
		if status == StatusConflict {
			if p.Conflict == nil || p.Conflict.Kind != kind {
				t.Fatalf("conflict %v, want kind %v", p.Conflict, kind)
			}
			return
		}
		if len(p.Steps) != len(sends) {
			t.Fatalf("steps %s, want originals %v", stepsString(p.Steps), sends)
		}

		senderVersions := make(map[string]zfs.FilesystemVersion)
		for _, v := range s.Versions {
			senderVersions[v.RelName()] = v
		}
		var recvGUIDs []uint64 // the receiver's snapshots in receive order
		if r != nil {
			for _, v := range r.Versions {
				recvGUIDs = append(recvGUIDs, v.GUID)
			}
		}
		for i, st := range p.Steps {
			if st.To != senderVersions[st.To.RelName()] || st.To.Kind != zfs.Snapshot {
				t.Fatalf("step %d: To %v is not a sender snapshot", i, st.To)
			}
			if st.To.GUID != h.guids[sends[i]] {
				t.Fatalf("step %d sends %v, want original %d", i, st.To, sends[i])
			}
			switch {
			case i == 0 && st.From == nil:
				if len(recvGUIDs) != 0 {
					t.Fatalf("full send into a receiver with snapshots")
				}
			case i == 0:
				if *st.From != senderVersions[st.From.RelName()] || st.From.GUID != h.guids[base] {
					t.Fatalf("first step from %v, want base original %d", st.From, base)
				}
			default:
				if st.From == nil || *st.From != p.Steps[i-1].To {
					t.Fatalf("step %d does not chain: from %v after %v", i, st.From, p.Steps[i-1].To)
				}
				if st.To.CreateTXG <= st.From.CreateTXG {
					t.Fatalf("step %d goes back in time", i)
				}
			}
			if st.From != nil && st.To.CreateTXG <= st.From.CreateTXG {
				t.Fatalf("step %d: To %v not newer than From %v", i, st.To, st.From)
			}
			// zfs recv -i needs the source as the receiver's newest.
			if st.From != nil && recvGUIDs[len(recvGUIDs)-1] != st.From.GUID {
				t.Fatalf("step %d: receiver's newest guid %d is not the source %v", i, recvGUIDs[len(recvGUIDs)-1], st.From)
			}
			recvGUIDs = append(recvGUIDs, st.To.GUID)
		}
		if len(p.Steps) > 0 {
			last := -1
			for i := range h.n() {
				if h.senderSnap[i] {
					last = i
				}
			}
			if recvGUIDs[len(recvGUIDs)-1] != h.guids[last] {
				t.Fatalf("after the steps the receiver's newest is not the sender's newest")
			}
		}
	})
}

var cmpPaths = cmp.Comparer(func(a, b zfs.DatasetPath) bool { return a == b })

// shuffled returns in with filesystems and versions in random order.
func shuffled(t *rapid.T, in Input) Input {
	perm := func(n int) []int {
		return rapid.Permutation(func() []int {
			p := make([]int, n)
			for i := range p {
				p[i] = i
			}
			return p
		}()).Draw(t, "perm")
	}
	shuffleFS := func(fss []Filesystem) []Filesystem {
		out := make([]Filesystem, len(fss))
		for i, j := range perm(len(fss)) {
			fs := fss[j]
			vs := make([]zfs.FilesystemVersion, len(fs.Versions))
			for k, l := range perm(len(vs)) {
				vs[k] = fs.Versions[l]
			}
			fs.Versions = vs
			out[i] = fs
		}
		return out
	}
	in.Sender = shuffleFS(in.Sender)
	in.Receiver = shuffleFS(in.Receiver)
	return in
}

// genForest generates several filesystems in a small tree of paths,
// each with its own history; some only on the receiver.
func genForest(t *rapid.T) Input {
	names := []string{"a", "b", "a/x", "a/y", "a/x/p", "b/q", "b/q/r", "c/d/e"}
	var in Input
	for _, p := range names {
		if !rapid.Bool().Draw(t, "has "+p) {
			continue
		}
		h := genHistory(t)
		if !(rapid.Bool().Draw(t, "no sender "+p) && rapid.Bool().Draw(t, "really no sender "+p)) {
			s := h.senderFS(p)
			if rapid.Bool().Draw(t, "enc "+p) && rapid.Bool().Draw(t, "really enc "+p) {
				s = encrypted(s, zfs.KeyStatusAvailable)
			}
			s.Send = genSendPolicy(t)
			in.Sender = append(in.Sender, s)
		}
		if r := h.receiverFS(p); r != nil {
			in.Receiver = append(in.Receiver, *r)
		}
	}
	// The receiver's listing covers its namespace: add the receiver's
	// missing ancestors as placeholders.
	have := map[string]bool{}
	for _, r := range in.Receiver {
		have[r.Path] = true
	}
	for _, r := range slices.Clone(in.Receiver) {
		for p := parentPath(r.Path); p != "" && !have[p]; p = parentPath(p) {
			have[p] = true
			in.Receiver = append(in.Receiver, placeholder(receiver(p)))
		}
	}
	in.Policy = Policy{
		InitialReplication:         InitialReplication(rapid.IntRange(0, 1).Draw(t, "initial")),
		AbortForeignPartialReceive: rapid.Bool().Draw(t, "abort"),
	}
	return in
}

func TestPropertyDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genForest(t)
		first, err := Plan(in)
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		again, err := Plan(in)
		if err != nil {
			t.Fatalf("Plan again: %v", err)
		}
		if d := cmp.Diff(first, again, cmpPaths); d != "" {
			t.Fatalf("same input, different plan (-first +again):\n%s", d)
		}
		other, err := Plan(shuffled(t, in))
		if err != nil {
			t.Fatalf("Plan shuffled: %v", err)
		}
		if d := cmp.Diff(first, other, cmpPaths); d != "" {
			t.Fatalf("shuffled input, different plan (-first +shuffled):\n%s", d)
		}
	})
}

func TestPropertyTree(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := genForest(t)
		res, err := Plan(in)
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		onReceiver := map[string]bool{}
		for _, r := range in.Receiver {
			onReceiver[r.Path] = true
		}
		isSender := map[string]bool{}
		for _, s := range in.Sender {
			isSender[s.Path] = true
		}
		created := map[string]bool{} // by an earlier entry of the plan
		seen := map[string]bool{}
		for _, p := range res.Filesystems {
			if seen[p.Path] {
				t.Fatalf("%q planned twice", p.Path)
			}
			seen[p.Path] = true
			if !isSender[p.Path] && p.Status != StatusPlaceholder && p.Conflict == nil {
				t.Fatalf("%q is no sender filesystem but has status %v", p.Path, p.Status)
			}
			createsPlaceholder := len(p.Actions) > 0 && p.Actions[0].Kind == ActionCreatePlaceholder
			createsFS := !onReceiver[p.Path] && (p.Status == StatusReplicate || createsPlaceholder)
			if createsPlaceholder && onReceiver[p.Path] {
				t.Fatalf("%q: placeholder for a filesystem the receiver has", p.Path)
			}
			if p.Status == StatusPlaceholder && !createsPlaceholder && p.Conflict == nil {
				t.Fatalf("%q: placeholder entry without action", p.Path)
			}
			parent := parentPath(p.Path)
			if createsFS && parent != "" {
				switch {
				case onReceiver[parent]:
					if p.WaitFor != "" {
						t.Fatalf("%q waits for %q, which exists", p.Path, p.WaitFor)
					}
				case created[parent]:
					if p.WaitFor != parent {
						t.Fatalf("%q: WaitFor %q, want %q", p.Path, p.WaitFor, parent)
					}
				default:
					t.Fatalf("%q is created before its parent %q", p.Path, parent)
				}
			}
			if p.Conflict != nil && p.Conflict.Kind == ConflictParentMissing && (onReceiver[parent] || created[parent]) {
				t.Fatalf("%q: parent missing, but %q is there", p.Path, parent)
			}
			if createsFS {
				created[p.Path] = true
			}
		}
		for _, s := range in.Sender {
			if !seen[s.Path] {
				t.Fatalf("sender filesystem %q not planned", s.Path)
			}
		}
	})
}

// genSendPolicy draws a sending job's policy.
func genSendPolicy(t *rapid.T) zfs.SendPolicy {
	return zfs.SendPolicy{
		Encrypted: rapid.Bool().Draw(t, "encrypted"),
		Flags: zfs.SendFlags{
			Raw:          rapid.Bool().Draw(t, "raw"),
			Compressed:   rapid.Bool().Draw(t, "compressed"),
			EmbeddedData: rapid.Bool().Draw(t, "embedded"),
		},
	}
}

// stepShape is what a step sends, without the resume token and the
// flags a token may override.
type stepShape struct {
	From *zfs.FilesystemVersion
	To   zfs.FilesystemVersion
	Raw  bool
}

func shapes(fs Filesystem, steps []Step) []stepShape {
	var out []stepShape
	for _, s := range steps {
		out = append(out, stepShape{s.From, s.To, s.Flags.RawStream(fs.Info)})
	}
	return out
}

// A token from a malicious receiver must never change what the sender
// sends: the plan with a token is the plan without it, except that the
// first step may carry the token (only if the token encodes exactly that
// step), or an abort action is added, or the filesystem is in conflict.
func TestPropertyMaliciousToken(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h := genHistory(t)
		h.receiverExists = true
		s := h.senderFS("fs")
		r := h.receiverFS("fs")
		pol := Policy{
			InitialReplication:         InitialReplication(rapid.IntRange(0, 1).Draw(t, "initial")),
			AbortForeignPartialReceive: rapid.Bool().Draw(t, "abort"),
		}
		// Mostly consistent encryption, so that most plans have steps to
		// lie about; sometimes anything goes.
		switch rapid.IntRange(0, 2).Draw(t, "encryption") {
		case 1:
			s = encrypted(s, zfs.KeyStatusUnavailable)
			*r = encrypted(*r, zfs.KeyStatusUnavailable)
			s.Send = zfs.SendPolicy{Encrypted: true}
		case 2:
			if rapid.Bool().Draw(t, "encrypted sender") {
				s = encrypted(s, zfs.KeyStatusUnavailable)
			}
			if rapid.Bool().Draw(t, "encrypted receiver") {
				*r = encrypted(*r, zfs.KeyStatusUnavailable)
			}
			s.Send = genSendPolicy(t)
		}
		// The plan the token must not change. A receiver without
		// snapshots holding a token is a placeholder being replaced, or
		// a new filesystem being received, whose plan is the one for no
		// receiver filesystem at all.
		ref := Input{Sender: []Filesystem{s}, Receiver: []Filesystem{*r}, Policy: pol}
		if len(r.Versions) == 0 && rapid.Bool().Draw(t, "new filesystem") {
			// Its encryption is then its parent's, and "fs" has none.
			r.Info.Placeholder = false
			r.Info.Encryption, r.Info.EncryptionRoot, r.Info.KeyStatus = "off", "", zfs.KeyStatusNone
			ref.Receiver = nil
		}
		clean, err := Plan(ref)
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		cp := clean.Filesystems[0]

		// Start from the token that would fit, then let the receiver lie.
		var tok resumetoken.Token
		if len(cp.Steps) > 0 {
			st := cp.Steps[0]
			tok = resumetoken.Token{ToName: "pool/fs@" + st.To.Name, ToGUID: st.To.GUID, RawOK: st.Flags.RawStream(s.Info)}
			if st.From != nil {
				tok.FromGUID = st.From.GUID
			}
		}
		versions := append(slices.Clone(s.Versions), r.Versions...)
		pick := func(label string) zfs.FilesystemVersion {
			if len(versions) == 0 {
				return snap("nothing", 1, 1)
			}
			return rapid.SampledFrom(versions).Draw(t, label)
		}
		// An honest token, one lie (the subtle case: everything else
		// fits), or any number of lies.
		lies := map[string]bool{}
		fields := []string{"toname", "toguid", "fromguid", "raw", "saved", "corrupt"}
		switch rapid.IntRange(0, 2).Draw(t, "mode") {
		case 1:
			lies[rapid.SampledFrom(fields).Draw(t, "the lie")] = true
		case 2:
			for _, f := range fields {
				lies[f] = rapid.Bool().Draw(t, "lie "+f)
			}
		}
		if lies["toname"] {
			ds := rapid.SampledFrom([]string{"pool/fs", "pool/other", "pool", "pool/fs/child", ""}).Draw(t, "ds")
			tok.ToName = ds + "@" + pick("toname").Name
		}
		if lies["toguid"] {
			tok.ToGUID = rapid.SampledFrom([]uint64{pick("toguid").GUID, rapid.Uint64().Draw(t, "any guid")}).Draw(t, "guid")
		}
		if lies["fromguid"] {
			tok.FromGUID = rapid.SampledFrom([]uint64{0, pick("fromguid").GUID, rapid.Uint64().Draw(t, "any from")}).Draw(t, "from")
		}
		if lies["raw"] {
			tok.RawOK = !tok.RawOK
		}
		tok.SavedOK = lies["saved"]
		tok.CompressOK = rapid.Bool().Draw(t, "compress")
		encoded := tok.Encode()
		if lies["corrupt"] {
			encoded = rapid.StringMatching(`1-[0-9a-f]{1,8}-[0-9a-f]{1,4}-[0-9a-f]{0,40}`).Draw(t, "garbage")
		}

		rt := withToken(*r, encoded)
		res, err := Plan(Input{Sender: []Filesystem{s}, Receiver: []Filesystem{rt}, Policy: pol})
		if err != nil {
			t.Fatalf("Plan with token: %v", err)
		}
		p := res.Filesystems[0]
		if p.Status == StatusConflict {
			if cp.Status != StatusConflict && p.Conflict.Kind != ConflictForeignPartialReceive {
				t.Fatalf("token caused conflict %v", p.Conflict)
			}
			return
		}
		if d := cmp.Diff(shapes(s, cp.Steps), shapes(s, p.Steps), cmpPaths); d != "" && !continuesOwnStep(cp.Steps, p.Steps, s.Versions) {
			t.Fatalf("the token changed what is sent (-clean +token):\n%s", d)
		}
		for i, st := range p.Steps {
			if i > 0 && st.ResumeToken != "" {
				t.Fatalf("token on step %d", i)
			}
		}
		if len(p.Steps) > 0 && p.Steps[0].ResumeToken != "" {
			st := p.Steps[0]
			dec, err := resumetoken.Decode(st.ResumeToken)
			if err != nil {
				t.Fatalf("used a token that does not decode: %v", err)
			}
			wantFrom := uint64(0)
			if st.From != nil {
				wantFrom = st.From.GUID
			}
			if dec.ToName != "pool/fs@"+st.To.Name || dec.ToGUID != st.To.GUID || dec.FromGUID != wantFrom || dec.RawOK != st.Flags.RawStream(s.Info) || dec.SavedOK {
				t.Fatalf("used token %+v for step %v", dec, st)
			}
			if len(p.Actions) != 0 {
				t.Fatalf("used the token and aborted it")
			}
		} else {
			// Without the policy, only state that can never resume
			// (its incremental source is not on the receiver) is
			// aborted.
			has := func(vs []zfs.FilesystemVersion, guid uint64) bool {
				for _, v := range vs {
					if v.Kind == zfs.Snapshot && v.GUID == guid {
						return true
					}
				}
				return false
			}
			unresumable := false
			if dec, err := resumetoken.Decode(rt.Info.ReceiveResumeToken); err == nil {
				unresumable = dec.FromGUID != 0 && !has(rt.Versions, dec.FromGUID) ||
					strings.HasPrefix(dec.ToName, "pool/fs@") && !has(s.Versions, dec.ToGUID)
			}
			if !pol.AbortForeignPartialReceive && !unresumable || len(p.Actions) != 1 || p.Actions[0].Kind != ActionAbortPartialReceive {
				t.Fatalf("token neither used nor aborted: %+v", p.Actions)
			}
		}
	})
}

// Arbitrary listings, including ones no ZFS would produce, never make
// the planner panic, and whatever it plans still only sends snapshots the
// sender listed, in a chain.
func TestPropertyArbitraryInput(t *testing.T) {
	genVersion := rapid.Custom(func(t *rapid.T) zfs.FilesystemVersion {
		return zfs.FilesystemVersion{
			Kind:      zfs.VersionKind(rapid.IntRange(0, 3).Draw(t, "kind")),
			Name:      rapid.StringMatching(`[ab.@/ ]{0,3}`).Draw(t, "name"),
			GUID:      rapid.Uint64Range(0, 6).Draw(t, "guid"),
			CreateTXG: rapid.Uint64Range(0, 6).Draw(t, "txg"),
		}
	})
	genFS := func(side string) *rapid.Generator[Filesystem] {
		return rapid.Custom(func(t *rapid.T) Filesystem {
			fs := Filesystem{
				Path:     rapid.StringMatching(`[ab./@]{0,3}(/[ab.]{0,2}){0,2}`).Draw(t, side+" path"),
				Versions: rapid.SliceOfN(genVersion, 0, 6).Draw(t, side+" versions"),
			}
			if rapid.IntRange(0, 9).Draw(t, "unnamed") > 0 {
				fs.Info.Path = zfs.MustDatasetPath("pool/fs")
			}
			fs.Info.Encryption = rapid.SampledFrom([]string{"", "off", "aes-256-gcm"}).Draw(t, "encryption")
			fs.Info.KeyStatus = rapid.SampledFrom([]zfs.KeyStatus{"", zfs.KeyStatusNone, zfs.KeyStatusAvailable, zfs.KeyStatusUnavailable}).Draw(t, "keystatus")
			fs.Info.Placeholder = rapid.Bool().Draw(t, "placeholder")
			fs.Send = genSendPolicy(t)
			switch rapid.IntRange(0, 2).Draw(t, "token") {
			case 1:
				fs.Info.ReceiveResumeToken = rapid.String().Draw(t, "garbage token")
			case 2:
				v := genVersion.Draw(t, "token version")
				fs.Info.ReceiveResumeToken = resumetoken.Token{
					ToName:   "pool/fs@" + v.Name,
					ToGUID:   v.GUID,
					FromGUID: rapid.Uint64Range(0, 6).Draw(t, "token from"),
					RawOK:    rapid.Bool().Draw(t, "token raw"),
				}.Encode()
			}
			return fs
		})
	}
	rapid.Check(t, func(t *rapid.T) {
		in := Input{
			Sender:   rapid.SliceOfN(genFS("sender"), 0, 4).Draw(t, "sender"),
			Receiver: rapid.SliceOfN(genFS("receiver"), 0, 4).Draw(t, "receiver"),
			Policy: Policy{
				InitialReplication:         InitialReplication(rapid.IntRange(0, 2).Draw(t, "initial")),
				AbortForeignPartialReceive: rapid.Bool().Draw(t, "abort"),
			},
		}
		res, err := Plan(in)
		_, errShuffled := Plan(shuffled(t, in))
		if fmt.Sprint(err) != fmt.Sprint(errShuffled) {
			t.Fatalf("errors depend on the listing's order: %v, shuffled: %v", err, errShuffled)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidInput) || err.Error() == "" {
				t.Fatalf("error %v is not an ErrInvalidInput", err)
			}
			return
		}
		planned := map[string]FSPlan{}
		for _, p := range res.Filesystems {
			planned[p.Path] = p
			if (p.Conflict != nil) != (p.Status == StatusConflict) {
				t.Fatalf("%q: status %v with conflict %v", p.Path, p.Status, p.Conflict)
			}
			if p.Conflict != nil && (len(p.Steps) > 0 || len(p.Actions) > 0 || p.Conflict.Error() == "") {
				t.Fatalf("%q: conflict with work: %+v", p.Path, p)
			}
		}
		for _, s := range in.Sender {
			p, ok := planned[s.Path]
			if !ok {
				t.Fatalf("sender filesystem %q not planned", s.Path)
			}
			for i, st := range p.Steps {
				if st.To.Kind != zfs.Snapshot || !slices.Contains(s.Versions, st.To) {
					t.Fatalf("%q step %d sends %v, not a sender snapshot", s.Path, i, st.To)
				}
				if st.From != nil && !slices.Contains(s.Versions, *st.From) {
					t.Fatalf("%q step %d from %v, not a sender version", s.Path, i, st.From)
				}
				if i > 0 && (st.From == nil || *st.From != p.Steps[i-1].To) {
					t.Fatalf("%q step %d does not chain", s.Path, i)
				}
			}
		}
	})
}

// continuesOwnStep reports whether a plan that differs from the clean one
// only because it resumes the receiver's partial state is still the
// sender's own history: the first step resumes, all steps chain from the
// clean plan's base through sender snapshots in order to the clean plan's
// newest. (An interrupted initial replication is finished and continued
// straight to the newest snapshot, so which snapshots go may change.)
func continuesOwnStep(clean, token []Step, sender []zfs.FilesystemVersion) bool {
	if len(clean) == 0 || len(token) == 0 || token[0].ResumeToken == "" {
		return false
	}
	if (clean[0].From == nil) != (token[0].From == nil) ||
		clean[0].From != nil && clean[0].From.GUID != token[0].From.GUID ||
		clean[len(clean)-1].To.GUID != token[len(token)-1].To.GUID {
		return false
	}
	txg := map[uint64]uint64{}
	for _, v := range sender {
		if v.Kind == zfs.Snapshot {
			txg[v.GUID] = v.CreateTXG
		}
	}
	for i, st := range token {
		t, ok := txg[st.To.GUID]
		if !ok {
			return false
		}
		if i > 0 && (st.From == nil || st.From.GUID != token[i-1].To.GUID || t <= txg[token[i-1].To.GUID]) {
			return false
		}
	}
	return true
}
