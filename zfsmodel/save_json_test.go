package zfsmodel

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// encoderOutput is what Save wrote before it encoded by hand: the state
// through json.Encoder.
func encoderOutput(t tb, st *state) []byte {
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(saved{Format: saveFormat, State: *st}); err != nil {
		t.Fatalf("%v", err)
	}
	return b.Bytes()
}

func checkSameAsEncoder(t tb, st *state) {
	t.Helper()
	got, err := st.appendJSON(nil)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if want := encoderOutput(t, st); !bytes.Equal(got, want) {
		t.Fatalf("Save wrote\n%s\njson.Encoder writes\n%s", got, want)
	}
}

// Save writes what json.Encoder writes for the states a model goes
// through (holds, bookmarks, partial receives, properties, rollbacks).
func TestSaveIsEncodersOutput(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		mc := newMachine(t)
		t.Repeat(map[string]func(*rapid.T){
			"": func(t *rapid.T) {
				mc.m.mu.Lock()
				defer mc.m.mu.Unlock()
				checkSameAsEncoder(t, &mc.m.st)
			},
			"write":     mc.write,
			"snapshot":  mc.snapshot,
			"bookmark":  mc.bookmark,
			"hold":      mc.hold,
			"destroy":   mc.destroy,
			"rollback":  mc.rollback,
			"replicate": mc.replicate,
			"property": func(t *rapid.T) {
				fs := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
				_ = mc.m.SetUserProperty(bg, fs, "zrepl:x", rapid.String().Draw(t, "value"))
			},
		})
	})
}

// Save writes what json.Encoder writes for states no model makes but Load
// reads: nil where JSON has null, strings json escapes, zero values of
// every field (so a field the hand encoder lacks shows).
func TestSaveIsEncodersOutputOddStates(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	for _, st := range []state{
		{},
		{Pools: map[string]*pool{}, Datasets: map[string]*dataset{}},
		{Seed: -5, GUIDCounter: 1 << 63, Pools: map[string]*pool{"p": nil, "q": {}}, Datasets: map[string]*dataset{"p": nil, "q": {}}},
		{Pools: map[string]*pool{"p<&>\"\\\u2028é\x01\xff": {Name: "a\tb", TXG: 3}}, Datasets: map[string]*dataset{
			"p/a": {Name: "p/a\n", GUID: 1, Encrypted: true, EncRoot: "p", KeyID: 9, KeyLoaded: true,
				Props: map[string]string{"b": "<x>", "a": "\u00e9\x00", "": ""}, Received: map[string]string{"r": "1"},
				Head: content{1: {Key: 2, Birth: 3, Sum: 4}, 7: {}}, HeadTXG: 5,
				Snaps: []*snapshot{nil, {}, {Name: "s", GUID: 2, TXG: 3, Creation: when, Holds: []string{}, Content: content{}},
					{Holds: []string{"a", "b&"}, Content: content{3: {Key: 1}}}},
				Bookmarks: []*bookmark{nil, {}, {Name: "b", GUID: 2, TXG: 3, Creation: when}},
				Partial:   &partial{Full: true, BaseGUID: 3, Blocks: content{1: {}}, NextBlock: 2, Header: streamHeader{ToName: "x"}},
			},
			"p/b": {Props: map[string]string{}, Received: map[string]string{}, Snaps: []*snapshot{}, Bookmarks: []*bookmark{}, Partial: &partial{}},
		}},
	} {
		checkSameAsEncoder(t, &st)
	}
	// Each character json quotes otherwise than itself, alone.
	for _, c := range []string{`"`, `\\`, "<", ">", "&", "\x00", "\x1f", "\x7f", "\xff", "\u2028", "\u2029", "é"} {
		checkSameAsEncoder(t, &state{Pools: map[string]*pool{}, Datasets: map[string]*dataset{"p": {Name: "p" + c, Props: map[string]string{c: "a" + c}}}})
	}
}
