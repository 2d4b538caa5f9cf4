package zfsmodel

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// decodeSaved is Load's fast way: it reads exactly what Save writes
// (appendJSON) and nothing else, without reflection. ok is false for any
// other text (whitespace, escapes in strings, another field order, an
// older format, a typo): Load then decodes it with encoding/json. A
// decoded state is taken only if Save's encoding of it is the input byte
// for byte, so the fast way gives what encoding/json gives or nothing
// (TestFastLoadIsJSONs, FuzzLoad). A partial receive state, rare, goes
// through encoding/json.
func decodeSaved(b []byte) (st state, ok bool) {
	d := &decoder{b: b, ok: true}
	d.lit(`{"Format":` + strconv.Itoa(saveFormat) + `,"State":{"Seed":`)
	st.Seed = d.int()
	d.lit(`,"GUIDCounter":`)
	st.GUIDCounter = d.uint()
	d.lit(`,"Pools":`)
	if !d.null() {
		st.Pools = map[string]*pool{}
		d.object(func(name string) {
			if d.null() {
				st.Pools[name] = nil
				return
			}
			p := &pool{}
			d.lit(`{"Name":`)
			p.Name = d.str()
			d.lit(`,"TXG":`)
			p.TXG = d.uint()
			d.lit("}")
			st.Pools[name] = p
		})
	}
	d.lit(`,"Datasets":`)
	if !d.null() {
		st.Datasets = map[string]*dataset{}
		d.object(func(name string) { st.Datasets[name] = d.dataset() })
	}
	d.lit("}}\n")
	if !d.ok || d.i != len(b) {
		return state{}, false
	}
	again, err := st.appendJSON(make([]byte, 0, len(b)))
	if err != nil || !bytes.Equal(again, b) {
		return state{}, false
	}
	return st, true
}

type decoder struct {
	b  []byte
	i  int
	ok bool
}

// lit0 consumes s if it comes next.
func (d *decoder) lit0(s string) bool {
	if d.ok && bytes.HasPrefix(d.b[d.i:], []byte(s)) {
		d.i += len(s)
		return true
	}
	return false
}

// lit consumes s, which must come next.
func (d *decoder) lit(s string) {
	if !d.lit0(s) {
		d.ok = false
	}
}

func (d *decoder) null() bool { return d.lit0("null") }

// array reads a JSON array, calling elem at each element; object reads a
// JSON object, calling member with each key (its value follows). Both
// stop at the first error (d.ok false).
func (d *decoder) array(elem func()) {
	d.lit("[")
	for first := true; d.ok && !d.lit0("]"); first = false {
		if !first {
			d.lit(",")
		}
		elem()
	}
}

func (d *decoder) object(member func(key string)) {
	d.lit("{")
	for first := true; d.ok && !d.lit0("}"); first = false {
		if !first {
			d.lit(",")
		}
		key := d.str()
		d.lit(":")
		member(key)
	}
}

// token is the text up to the first byte that cannot be in a number.
func (d *decoder) number() string {
	j := d.i
	for j < len(d.b) && (d.b[j] == '-' || d.b[j] >= '0' && d.b[j] <= '9') {
		j++
	}
	s := string(d.b[d.i:j])
	d.i = j
	return s
}

func (d *decoder) uint() uint64 {
	if !d.ok {
		return 0
	}
	x, err := strconv.ParseUint(d.number(), 10, 64)
	d.ok = d.ok && err == nil
	return x
}

func (d *decoder) int() int64 {
	if !d.ok {
		return 0
	}
	x, err := strconv.ParseInt(d.number(), 10, 64)
	d.ok = d.ok && err == nil
	return x
}

func (d *decoder) bool() bool {
	switch {
	case d.lit0("true"):
		return true
	case d.lit0("false"):
		return false
	}
	d.ok = false
	return false
}

// quoted is the text between the next pair of quotes, which must hold
// only printable ASCII and no backslash (json's escapes are left to
// encoding/json).
func (d *decoder) quoted() []byte {
	if !d.lit0(`"`) {
		d.ok = false
		return nil
	}
	for j := d.i; j < len(d.b); j++ {
		switch c := d.b[j]; {
		case c == '"':
			s := d.b[d.i:j]
			d.i = j + 1
			return s
		case c < 0x20 || c > 0x7e || c == '\\':
			d.ok = false
			return nil
		}
	}
	d.ok = false
	return nil
}

func (d *decoder) str() string { return string(d.quoted()) }

func (d *decoder) content() content {
	b64 := d.quoted()
	if !d.ok {
		return nil
	}
	c, err := decodeContent(b64)
	d.ok = err == nil
	return c
}

func (d *decoder) time() time.Time {
	var t time.Time
	start := d.i
	d.quoted()
	if d.ok {
		d.ok = t.UnmarshalJSON(d.b[start:d.i]) == nil
	}
	return t
}

func (d *decoder) strings() []string {
	if d.null() {
		return nil
	}
	out := []string{}
	d.array(func() { out = append(out, d.str()) })
	return out
}

func (d *decoder) stringMap() map[string]string {
	if d.null() {
		return nil
	}
	out := map[string]string{}
	d.object(func(k string) { out[k] = d.str() })
	return out
}

func (d *decoder) dataset() *dataset {
	if d.null() {
		return nil
	}
	ds := &dataset{}
	d.lit(`{"Name":`)
	ds.Name = d.str()
	d.lit(`,"GUID":`)
	ds.GUID = d.uint()
	d.lit(`,"Encrypted":`)
	ds.Encrypted = d.bool()
	d.lit(`,"EncRoot":`)
	ds.EncRoot = d.str()
	d.lit(`,"KeyID":`)
	ds.KeyID = d.uint()
	d.lit(`,"KeyLoaded":`)
	ds.KeyLoaded = d.bool()
	d.lit(`,"Props":`)
	ds.Props = d.stringMap()
	if d.lit0(`,"Received":`) {
		ds.Received = d.stringMap()
	}
	d.lit(`,"Head":`)
	ds.Head = d.content()
	d.lit(`,"HeadTXG":`)
	ds.HeadTXG = d.uint()
	d.lit(`,"Snaps":`)
	if !d.null() {
		ds.Snaps = []*snapshot{}
		d.array(func() {
			if d.null() {
				ds.Snaps = append(ds.Snaps, nil)
				return
			}
			s := &snapshot{}
			d.lit(`{"Name":`)
			s.Name = d.str()
			d.lit(`,"GUID":`)
			s.GUID = d.uint()
			d.lit(`,"TXG":`)
			s.TXG = d.uint()
			d.lit(`,"Creation":`)
			s.Creation = d.time()
			d.lit(`,"Holds":`)
			s.Holds = d.strings()
			d.lit(`,"Content":`)
			s.Content = d.content()
			d.lit("}")
			ds.Snaps = append(ds.Snaps, s)
		})
	}
	d.lit(`,"Bookmarks":`)
	if !d.null() {
		ds.Bookmarks = []*bookmark{}
		d.array(func() {
			if d.null() {
				ds.Bookmarks = append(ds.Bookmarks, nil)
				return
			}
			bm := &bookmark{}
			d.lit(`{"Name":`)
			bm.Name = d.str()
			d.lit(`,"GUID":`)
			bm.GUID = d.uint()
			d.lit(`,"TXG":`)
			bm.TXG = d.uint()
			d.lit(`,"Creation":`)
			bm.Creation = d.time()
			d.lit("}")
			ds.Bookmarks = append(ds.Bookmarks, bm)
		})
	}
	if d.lit0(`,"Partial":`) && d.ok {
		// The rest of the dataset's object is the partial's: a
		// json.Decoder reads one value and tells where it ended.
		dec := json.NewDecoder(bytes.NewReader(d.b[d.i:]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ds.Partial); err != nil || ds.Partial == nil {
			d.ok = false
			return nil
		}
		d.i += int(dec.InputOffset())
	}
	d.lit("}")
	return ds
}
