package config

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var durationUnits = map[string]time.Duration{
	"s": time.Second,
	"m": time.Minute,
	"h": time.Hour,
	"d": 24 * time.Hour,
	"w": 7 * 24 * time.Hour,
}

// ParseDuration parses a positive duration in zrepl's form, an integer and
// one of s, m, h, d (24h) or w (7d) like "10m" or "1d", or in Go's form
// like "1h30m" or "500ms".
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty duration (want e.g. 30s, 10m, 2h, 1d, 1w)")
	}
	var d time.Duration
	if n, unit, ok := splitNumUnit(t); ok && durationUnits[unit] != 0 {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v > int64(math.MaxInt64/durationUnits[unit]) {
			return 0, fmt.Errorf("duration %q is out of range", s)
		}
		d = time.Duration(v) * durationUnits[unit]
	} else {
		var err error
		d, err = time.ParseDuration(t)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (want e.g. 30s, 10m, 2h, 1d, 1w)", s)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	return d, nil
}

// ParseGoDuration parses a duration in Go's syntax, as zrepl reads its
// timeouts and retry intervals: "10s", "1h30m", "500ms" ("1d" is not one).
// Negative durations are refused, and zero unless zero is true.
func ParseGoDuration(s string, zero bool) (time.Duration, error) {
	want := "want e.g. 500ms, 10s, 1m30s"
	if zero {
		want += " or 0s for none"
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("invalid duration %q (%s; units ns, us, ms, s, m, h)", s, want)
	case d < 0 || d == 0 && !zero:
		return 0, fmt.Errorf("duration %q must be positive (%s)", s, want)
	}
	return d, nil
}

// splitNumUnit splits "10 m" into "10" and "m"; the number is digits only.
func splitNumUnit(s string) (num, unit string, ok bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return "", "", false
	}
	return s[:i], strings.TrimSpace(s[i:]), true
}

// FormatDuration writes d in the largest of zrepl's units (w, d, h, m, s)
// that divides it, falling back to Go's form; ParseDuration reads it back.
func FormatDuration(d time.Duration) string {
	for _, u := range []string{"w", "d", "h", "m", "s"} {
		if d > 0 && d%durationUnits[u] == 0 {
			return strconv.FormatInt(int64(d/durationUnits[u]), 10) + u
		}
	}
	return d.String()
}

// sizeRE is zrepl's syntax of data sizes and rates: a number, then bit,
// or b (bits) or B (bytes) after one of zrepl's prefixes (K, M, G, T
// decimal; Ki, Mi, Gi, Ti binary). The unit is required and its case
// matters: 10 Mb is 1.25 MB.
var sizeRE = regexp.MustCompile(`^([-0-9.]*)\s*(bit|(|K|Ki|M|Mi|G|Gi|T|Ti)([bB]))$`)

var sizePrefixes = map[string]float64{
	"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
}

const sizeWant = "want a number and a unit: B (bytes) or b, bit (bits), after K, M, G, T or Ki, Mi, Gi, Ti, e.g. 512 KiB, 23.5 MiB, 100 Mb"

// ParseSize parses a size or rate as zrepl does and returns bytes: "23.5
// MiB", "10 MB", "100 Mb" (bits: 12.5 MB), "8000 bit". Negative values
// are returned as they are (a bandwidth_limit's -1 B means none).
func ParseSize(s string) (float64, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("invalid size %q (%s)", s, sizeWant)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil || math.IsInf(n, 0) {
		return 0, fmt.Errorf("invalid size %q: bad number %q (%s)", s, m[1], sizeWant)
	}
	if m[2] == "bit" {
		if n != math.Round(n) {
			return 0, fmt.Errorf("invalid size %q: a count of bits must be whole (%s)", s, sizeWant)
		}
		return n / 8, nil
	}
	bits := n * sizePrefixes[m[3]]
	if m[4] == "B" {
		bits *= 8
	}
	if math.Abs(bits/8) >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return bits / 8, nil
}
