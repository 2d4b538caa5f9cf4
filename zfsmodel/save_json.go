package zfsmodel

import (
	"encoding/json"
	"strconv"
	"time"
)

// appendJSON appends Save's output to b: what json.NewEncoder(w).Encode of
// saved{saveFormat, st} writes, byte for byte (TestSaveIsEncodersOutput),
// but without reflection. A simulation saves both hosts after every
// action, tens of thousands of small states a minute, and the encoder's
// reflection cost most of that. A partial receive state, rare and
// rich, goes through json.Marshal.
//
// A field added to state, pool, dataset, snapshot or bookmark must be
// added here too: the test compares with json's output on random states.
func (st *state) appendJSON(b []byte) ([]byte, error) {
	b = strconv.AppendInt(append(b, `{"Format":`...), saveFormat, 10)
	b = strconv.AppendInt(append(b, `,"State":{"Seed":`...), st.Seed, 10)
	b = strconv.AppendUint(append(b, `,"GUIDCounter":`...), st.GUIDCounter, 10)
	b = append(b, `,"Pools":`...)
	if st.Pools == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '{')
		for i, name := range sortedKeys(st.Pools) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendString(b, name), ':')
			p := st.Pools[name]
			if p == nil {
				b = append(b, "null"...)
				continue
			}
			b = appendString(append(b, `{"Name":`...), p.Name)
			b = append(strconv.AppendUint(append(b, `,"TXG":`...), p.TXG, 10), '}')
		}
		b = append(b, '}')
	}
	b = append(b, `,"Datasets":`...)
	if st.Datasets == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '{')
		for i, name := range sortedKeys(st.Datasets) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendString(b, name), ':')
			var err error
			if b, err = st.Datasets[name].appendJSON(b); err != nil {
				return nil, err
			}
		}
		b = append(b, '}')
	}
	return append(b, "}}\n"...), nil
}

func (d *dataset) appendJSON(b []byte) ([]byte, error) {
	if d == nil {
		return append(b, "null"...), nil
	}
	b = appendString(append(b, `{"Name":`...), d.Name)
	b = strconv.AppendUint(append(b, `,"GUID":`...), d.GUID, 10)
	b = strconv.AppendBool(append(b, `,"Encrypted":`...), d.Encrypted)
	b = appendString(append(b, `,"EncRoot":`...), d.EncRoot)
	b = strconv.AppendUint(append(b, `,"KeyID":`...), d.KeyID, 10)
	b = strconv.AppendBool(append(b, `,"KeyLoaded":`...), d.KeyLoaded)
	b = appendStringMap(append(b, `,"Props":`...), d.Props)
	if len(d.Received) > 0 { // omitempty
		b = appendStringMap(append(b, `,"Received":`...), d.Received)
	}
	b = appendContent(append(b, `,"Head":`...), d.Head)
	b = strconv.AppendUint(append(b, `,"HeadTXG":`...), d.HeadTXG, 10)
	b = append(b, `,"Snaps":`...)
	if d.Snaps == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, s := range d.Snaps {
			if i > 0 {
				b = append(b, ',')
			}
			if s == nil {
				b = append(b, "null"...)
				continue
			}
			var err error
			b = appendString(append(b, `{"Name":`...), s.Name)
			b = strconv.AppendUint(append(b, `,"GUID":`...), s.GUID, 10)
			b = strconv.AppendUint(append(b, `,"TXG":`...), s.TXG, 10)
			if b, err = appendTime(append(b, `,"Creation":`...), s.Creation); err != nil {
				return nil, err
			}
			b = append(b, `,"Holds":`...)
			if s.Holds == nil {
				b = append(b, "null"...)
			} else {
				b = append(b, '[')
				for j, h := range s.Holds {
					if j > 0 {
						b = append(b, ',')
					}
					b = appendString(b, h)
				}
				b = append(b, ']')
			}
			b = append(appendContent(append(b, `,"Content":`...), s.Content), '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"Bookmarks":`...)
	if d.Bookmarks == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, bm := range d.Bookmarks {
			if i > 0 {
				b = append(b, ',')
			}
			if bm == nil {
				b = append(b, "null"...)
				continue
			}
			b = appendString(append(b, `{"Name":`...), bm.Name)
			b = strconv.AppendUint(append(b, `,"GUID":`...), bm.GUID, 10)
			b = strconv.AppendUint(append(b, `,"TXG":`...), bm.TXG, 10)
			var err error
			if b, err = appendTime(append(b, `,"Creation":`...), bm.Creation); err != nil {
				return nil, err
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if d.Partial != nil { // omitempty
		p, err := json.Marshal(d.Partial)
		if err != nil {
			return nil, err
		}
		b = append(append(b, `,"Partial":`...), p...)
	}
	return append(b, '}'), nil
}

func appendTime(b []byte, t time.Time) ([]byte, error) {
	j, err := t.MarshalJSON()
	return append(b, j...), err
}

func appendContent(b []byte, c content) []byte {
	j, _ := c.MarshalJSON() // never fails
	return append(b, j...)
}

func appendStringMap(b []byte, m map[string]string) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendString(b, k), ':')
		b = appendString(b, m[k])
	}
	return append(b, '}')
}

// appendString appends s as encoding/json quotes it (with its HTML
// escaping, as Save's encoder had): printable ASCII other than the
// characters json escapes directly, anything else through json.Marshal.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			j, _ := json.Marshal(s) // a string never fails
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
