package zfsmodel

import (
	"bytes"
	"encoding/json"
	"reflect"
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
		actions := mc.actions(func(t *rapid.T) {
			mc.m.mu.Lock()
			defer mc.m.mu.Unlock()
			checkSameAsEncoder(t, &mc.m.st)
		})
		actions["property"] = func(t *rapid.T) {
			fs := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
			_ = mc.m.SetUserProperty(bg, fs, "zrepl:x", rapid.String().Draw(t, "value"))
		}
		t.Repeat(actions)
	})
}

// Save writes what json.Encoder writes for the odd states.
func TestSaveIsEncodersOutputOddStates(t *testing.T) {
	for _, st := range oddStates() {
		checkSameAsEncoder(t, &st)
	}
	// Each character json quotes otherwise than itself, alone.
	for _, c := range []string{`"`, `\\`, "<", ">", "&", "\x00", "\x1f", "\x7f", "\xff", "\u2028", "\u2029", "é"} {
		checkSameAsEncoder(t, &state{Pools: map[string]*pool{}, Datasets: map[string]*dataset{"p": {Name: "p" + c, Props: map[string]string{c: "a" + c}}}})
	}
}

// jsonDecode is what Load decoded before its fast way.
func jsonDecode(data []byte) (saved, error) {
	var s saved
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(&s)
	return s, err
}

// checkFastLoad: where the fast way takes data, it decodes what
// encoding/json decodes.
func checkFastLoad(t tb, data []byte) bool {
	t.Helper()
	st, ok := decodeSaved(data)
	if !ok {
		return false
	}
	s, err := jsonDecode(data)
	if err != nil {
		t.Fatalf("the fast way took what encoding/json refuses (%v):\n%s", err, data)
	}
	if s.Format != saveFormat || !reflect.DeepEqual(s.State, st) {
		t.Fatalf("the fast way decoded\n%#v\nencoding/json\n%#v", st, s.State)
	}
	return true
}

// Load's fast way takes every state a model saves (partial receives too)
// and decodes it as encoding/json does.
func TestFastLoadIsJSONs(t *testing.T) {
	partials := 0
	rapid.Check(t, func(t *rapid.T) {
		mc := newMachine(t)
		actions := mc.actions(func(t *rapid.T) {
			var b bytes.Buffer
			if err := mc.m.Save(&b); err != nil {
				t.Fatalf("%v", err)
			}
			if !checkFastLoad(t, b.Bytes()) {
				t.Fatalf("the fast way refused what Save wrote:\n%s", b.Bytes())
			}
			if bytes.Contains(b.Bytes(), []byte(`"Partial":`)) {
				partials++
			}
		})
		actions["property"] = func(t *rapid.T) {
			fs := rapid.SampledFrom(mc.srcs).Draw(t, "fs")
			_ = mc.m.SetUserProperty(bg, fs, "zrepl:x", rapid.StringMatching(`[a-z0-9:]*`).Draw(t, "value"))
		}
		t.Repeat(actions)
	})
	t.Logf("%d saved states with a partial receive", partials)
}

// The fast way decodes the odd states as encoding/json does, or leaves
// them to it; text Save would not write it always leaves.
func TestFastLoadOddStates(t *testing.T) {
	for i, st := range oddStates() {
		b, err := st.appendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		checkFastLoad(t, b)
		if i == len(oddStates())-1 && !checkFastLoad(t, b) {
			t.Fatalf("the fast way refused a state with a partial receive:\n%s", b)
		}
		for _, edit := range [][2]string{
			{`{"Format":2,`, `{"Format":1,`},
			{`{"Format":2,`, `{ "Format":2,`},
			{`"Seed":`, `"seed":`},
			{"}}\n", "}}"},
			{"}}\n", "}} \n"},
			{`"Pools":{`, `"Pools":{"p":{"Name":"p","TXG":1},`},
		} {
			if odd := bytes.Replace(b, []byte(edit[0]), []byte(edit[1]), 1); !bytes.Equal(odd, b) {
				if _, ok := decodeSaved(odd); ok {
					t.Errorf("the fast way took text Save does not write: %q for %q in\n%s", edit[1], edit[0], b)
				}
			}
		}
	}
}

// oddStates are states no model makes but Load reads: nil where JSON has
// null, strings json escapes, zero values of every field (so a field the
// hand encoder lacks shows); the last has a partial receive and plain
// strings only.
func oddStates() []state {
	when := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	return []state{
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
		{Pools: map[string]*pool{"p": {Name: "p", TXG: 9}}, Datasets: map[string]*dataset{"p": {Name: "p", GUID: 3, Props: map[string]string{"a": "b"}, Head: content{},
			Snaps:   []*snapshot{{Name: "s", GUID: 2, TXG: 3, Creation: when, Holds: []string{"h"}, Content: content{1: {Key: 1, Birth: 2, Sum: 3}}}},
			Partial: &partial{BaseGUID: 2, Header: streamHeader{ToName: "p@t", ToGUID: 4}, Blocks: content{1: {Key: 5}}, NextBlock: 2, Bytes: 10}}}},
	}
}
