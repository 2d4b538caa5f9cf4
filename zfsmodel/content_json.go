package zfsmodel

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// A content is saved as one base64 string of varints, blocks in ascending
// order: the block number's distance from the previous one, then key,
// birth txg and sum. It is most of a saved model, and as a JSON object
// keyed by block number it cost most of the time of Save and Load (a
// simulation saves and loads both hosts after every action). Load still
// reads the object form that older saves wrote.

func (c content) MarshalJSON() ([]byte, error) {
	bns := make([]uint64, 0, len(c))
	for bn := range c {
		bns = append(bns, bn)
	}
	slices.Sort(bns)
	buf := make([]byte, 0, len(c)*16)
	prev := uint64(0)
	for _, bn := range bns {
		b := c[bn]
		buf = binary.AppendUvarint(buf, bn-prev)
		buf = binary.AppendUvarint(buf, b.Key)
		buf = binary.AppendUvarint(buf, b.Birth)
		buf = binary.AppendUvarint(buf, uint64(b.Sum))
		prev = bn
	}
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(buf))+2)
	out = append(out, '"')
	out = base64.StdEncoding.AppendEncode(out, buf)
	return append(out, '"'), nil
}

var errContent = errors.New("malformed block list")

func (c *content) UnmarshalJSON(data []byte) error {
	if len(data) == 0 || data[0] != '"' {
		// The object form of older saves (or null).
		var m map[uint64]block
		if err := json.Unmarshal(data, &m); err != nil {
			return err
		}
		*c = m
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	out, err := decodeContent([]byte(s))
	if err != nil {
		return err
	}
	*c = out
	return nil
}

// decodeContent decodes the base64 text of a saved content.
func decodeContent(b64 []byte) (content, error) {
	buf := make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	n, err := base64.StdEncoding.Decode(buf, b64)
	if err != nil {
		return nil, fmt.Errorf("content: %w", err)
	}
	buf = buf[:n]
	// Every block takes at least four bytes.
	out := make(content, len(buf)/4)
	bn := uint64(0)
	for first := true; len(buf) > 0; first = false {
		var v [4]uint64
		for i := range v {
			x, n := binary.Uvarint(buf)
			if n <= 0 {
				return nil, fmt.Errorf("content: %w", errContent)
			}
			v[i], buf = x, buf[n:]
		}
		if !first && v[0] == 0 || v[3] > 1<<32-1 || bn+v[0] < bn {
			return nil, fmt.Errorf("content: %w", errContent)
		}
		bn += v[0]
		out[bn] = block{Key: v[1], Birth: v[2], Sum: uint32(v[3])}
	}
	return out, nil
}
