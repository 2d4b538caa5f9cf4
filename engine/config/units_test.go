package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"pgregory.net/rapid"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "10m", want: 10 * time.Minute},
		{in: " 2 h ", want: 2 * time.Hour},
		{in: "1d", want: 24 * time.Hour},
		{in: "2w", want: 14 * 24 * time.Hour},
		{in: "45s", want: 45 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "", wantErr: "empty duration (want e.g. 30s, 10m, 2h, 1d, 1w)"},
		{in: "10", wantErr: `invalid duration "10" (want e.g. 30s, 10m, 2h, 1d, 1w)`},
		{in: "1y", wantErr: `invalid duration "1y" (want e.g. 30s, 10m, 2h, 1d, 1w)`},
		{in: "0m", wantErr: `duration "0m" must be positive`},
		{in: "-5m", wantErr: `duration "-5m" must be positive`},
		{in: "99999999999999w", wantErr: `duration "99999999999999w" is out of range`},
	} {
		got, err := ParseDuration(tc.in)
		if tc.wantErr != "" {
			assert.EqualError(t, err, tc.wantErr, tc.in)
			continue
		}
		assert.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}

func TestFormatDurationRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		d := time.Duration(rapid.Int64Range(1, 1<<62).Draw(t, "d"))
		back, err := ParseDuration(FormatDuration(d))
		if err != nil || back != d {
			t.Fatalf("FormatDuration(%d) = %q parsed back as %d, %v", d, FormatDuration(d), back, err)
		}
	})
}

// Sizes as zrepl reads them: the unit is required and its case matters,
// b and bit are bits.
func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    float64
		wantErr string
	}{
		{in: "23.5 MiB", want: 23.5 * (1 << 20)},
		{in: "10MB", want: 10_000_000},
		{in: "10 Mb", want: 1_250_000},
		{in: "128 KiB", want: 128 << 10},
		{in: "8000 bit", want: 1000},
		{in: "5 B", want: 5},
		{in: ".5 KiB", want: 512},
		{in: "-1 B", want: -1},
		{in: "1 b", want: 0.125},
		{in: "4096", wantErr: `invalid size "4096" (` + sizeWant + ")"},
		{in: "1 gib", wantErr: `invalid size "1 gib" (` + sizeWant + ")"},
		{in: "10 kB", wantErr: `invalid size "10 kB" (` + sizeWant + ")"},
		{in: "", wantErr: `invalid size "" (` + sizeWant + ")"},
		{in: "MiB", wantErr: `invalid size "MiB": bad number "" (` + sizeWant + ")"},
		{in: "1.2.3 MB", wantErr: `invalid size "1.2.3 MB": bad number "1.2.3" (` + sizeWant + ")"},
		{in: "1.5 bit", wantErr: `invalid size "1.5 bit": a count of bits must be whole (` + sizeWant + ")"},
		{in: "3 parsecs", wantErr: `invalid size "3 parsecs" (` + sizeWant + ")"},
		{in: "99999999999 TiB", wantErr: `size "99999999999 TiB" is out of range`},
	} {
		got, err := ParseSize(tc.in)
		if tc.wantErr != "" {
			assert.EqualError(t, err, tc.wantErr, tc.in)
			continue
		}
		assert.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
}
