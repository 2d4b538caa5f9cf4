package config

import (
	"fmt"
	"math"
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

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "kib": 1 << 10, "ki": 1 << 10,
	"m": 1e6, "mb": 1e6, "mib": 1 << 20, "mi": 1 << 20,
	"g": 1e9, "gb": 1e9, "gib": 1 << 30, "gi": 1 << 30,
	"t": 1e12, "tb": 1e12, "tib": 1 << 40, "ti": 1 << 40,
}

// ParseSize parses a byte size like "23.5 MiB", "10MB" or "4096" (KB is
// 1000 bytes, KiB 1024).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("invalid size %q (want e.g. 512 KiB, 23.5 MiB, 1 GB)", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q (want e.g. 512 KiB, 23.5 MiB, 1 GB)", s)
	}
	b := v * mult
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return int64(b), nil
}
