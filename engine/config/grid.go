package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// KeepAll as GridInterval.Keep keeps every snapshot in the bucket.
const KeepAll = -1

// GridInterval is one "RxD(keep=K)" term of a grid spec: Repeat adjacent
// buckets of length Length, each keeping its Keep oldest snapshots.
type GridInterval struct {
	Repeat int
	Length time.Duration
	Keep   int // >= 1, or KeepAll
}

// GridSpec is a parsed retention grid like "1x1h(keep=all) | 24x1h | 14x1d":
// buckets placed side by side, youngest first.
type GridSpec struct {
	Intervals []GridInterval
}

// maxGridRepeat bounds the number of buckets a term may expand to.
const maxGridRepeat = 1 << 20

// ParseGridSpec parses a grid spec. Keep defaults to 1.
func ParseGridSpec(s string) (GridSpec, error) {
	if strings.TrimSpace(s) == "" {
		return GridSpec{}, fmt.Errorf("empty grid spec (want e.g. 1x1h(keep=all) | 24x1h | 14x1d)")
	}
	var g GridSpec
	for i, term := range strings.Split(s, "|") {
		iv, err := parseGridInterval(strings.TrimSpace(term))
		if err != nil {
			return GridSpec{}, fmt.Errorf("grid spec term %d %q: %w", i+1, strings.TrimSpace(term), err)
		}
		g.Intervals = append(g.Intervals, iv)
	}
	return g, nil
}

func parseGridInterval(t string) (GridInterval, error) {
	if t == "" {
		return GridInterval{}, fmt.Errorf("empty term (want REPEATxDURATION or REPEATxDURATION(keep=N|all))")
	}
	rep, rest, ok := strings.Cut(t, "x")
	if !ok {
		return GridInterval{}, fmt.Errorf("missing 'x' (want REPEATxDURATION, e.g. 24x1h)")
	}
	rep = strings.TrimSpace(rep)
	r, err := strconv.Atoi(rep)
	if err != nil || r < 1 || r > maxGridRepeat {
		return GridInterval{}, fmt.Errorf("repeat count %q must be an integer from 1 to %d", rep, maxGridRepeat)
	}
	iv := GridInterval{Repeat: r, Keep: 1}
	durPart := rest
	if open := strings.IndexByte(rest, '('); open >= 0 {
		durPart = rest[:open]
		opt := strings.TrimSpace(rest[open:])
		if !strings.HasSuffix(opt, ")") {
			return GridInterval{}, fmt.Errorf("missing ')' after %q", opt)
		}
		inner := strings.TrimSpace(opt[1 : len(opt)-1])
		name, val, ok := strings.Cut(inner, "=")
		if !ok || strings.TrimSpace(name) != "keep" {
			return GridInterval{}, fmt.Errorf("unknown option %q (want keep=N or keep=all)", inner)
		}
		val = strings.TrimSpace(val)
		if val == "all" {
			iv.Keep = KeepAll
		} else {
			k, err := strconv.Atoi(val)
			if err != nil || k < 1 {
				return GridInterval{}, fmt.Errorf("keep=%s: want a positive integer or all", val)
			}
			iv.Keep = k
		}
	}
	d, err := ParseDuration(durPart)
	if err != nil {
		return GridInterval{}, err
	}
	iv.Length = d
	return iv, nil
}

func (iv GridInterval) String() string {
	s := strconv.Itoa(iv.Repeat) + "x" + FormatDuration(iv.Length)
	switch {
	case iv.Keep == KeepAll:
		s += "(keep=all)"
	case iv.Keep != 1:
		s += "(keep=" + strconv.Itoa(iv.Keep) + ")"
	}
	return s
}

// String writes the spec in the form ParseGridSpec reads.
func (g GridSpec) String() string {
	parts := make([]string, len(g.Intervals))
	for i, iv := range g.Intervals {
		parts[i] = iv.String()
	}
	return strings.Join(parts, " | ")
}

// Span is the total time the grid covers; older snapshots fall outside it.
// It saturates at the longest time.Duration (292 years): configs in the
// wild say "forever" with terms like 999999x180d.
func (g GridSpec) Span() time.Duration {
	var t time.Duration
	for _, iv := range g.Intervals {
		if iv.Length > math.MaxInt64/time.Duration(iv.Repeat) {
			return math.MaxInt64
		}
		span := time.Duration(iv.Repeat) * iv.Length
		if span > math.MaxInt64-t {
			return math.MaxInt64
		}
		t += span
	}
	return t
}
