package config

import (
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

func TestParseGridSpec(t *testing.T) {
	const h, d = time.Hour, 24 * time.Hour
	for _, tc := range []struct {
		in      string
		want    []GridInterval
		wantErr string
	}{
		{in: "1x1h(keep=all) | 24x1h | 14x1d", want: []GridInterval{{1, h, KeepAll}, {24, h, 1}, {14, d, 1}}},
		{in: "1x1h(keep=all)|24x1h|35x1d|6x30d", want: []GridInterval{{1, h, KeepAll}, {24, h, 1}, {35, d, 1}, {6, 30 * d, 1}}},
		{in: " 3 x 5m ( keep = 2 ) | 4x1w ", want: []GridInterval{{3, 5 * time.Minute, 2}, {4, 7 * d, 1}}},
		{in: "2x90s", want: []GridInterval{{2, 90 * time.Second, 1}}},
		{in: "1x1h30m", want: []GridInterval{{1, 90 * time.Minute, 1}}},
		{in: "", wantErr: "empty grid spec (want e.g. 1x1h(keep=all) | 24x1h | 14x1d)"},
		{in: "24x1h |", wantErr: `grid spec term 2 "": empty term (want REPEATxDURATION or REPEATxDURATION(keep=N|all))`},
		{in: "24h", wantErr: `grid spec term 1 "24h": missing 'x' (want REPEATxDURATION, e.g. 24x1h)`},
		{in: "0x1h", wantErr: `grid spec term 1 "0x1h": repeat count "0" must be an integer from 1 to 1048576`},
		{in: "ax1h", wantErr: `grid spec term 1 "ax1h": repeat count "a" must be an integer from 1 to 1048576`},
		{in: "1x1y", wantErr: `grid spec term 1 "1x1y": invalid duration "1y" (want e.g. 30s, 10m, 2h, 1d, 1w)`},
		{in: "1x0h", wantErr: `grid spec term 1 "1x0h": duration "0h" must be positive`},
		{in: "1x1h(keep=0)", wantErr: `grid spec term 1 "1x1h(keep=0)": keep=0: want a positive integer or all`},
		{in: "1x1h(keep=all", wantErr: `grid spec term 1 "1x1h(keep=all": missing ')' after "(keep=all"`},
		{in: "1x1h(hold=3)", wantErr: `grid spec term 1 "1x1h(hold=3)": unknown option "hold=3" (want keep=N or keep=all)`},
		{in: "999999x180d", want: []GridInterval{{999999, 180 * d, 1}}},
		{in: "1048577x1h", wantErr: `grid spec term 1 "1048577x1h": repeat count "1048577" must be an integer from 1 to 1048576`},
	} {
		g, err := ParseGridSpec(tc.in)
		if tc.wantErr != "" {
			assert.EqualError(t, err, tc.wantErr, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, g.Intervals, tc.in)
	}
}

func TestGridSpanSaturates(t *testing.T) {
	for _, s := range []string{"999999x180d", "1x15000w | 1x1000w", "1x1h | 1048576x10000w"} {
		g, err := ParseGridSpec(s)
		require.NoError(t, err)
		assert.Equal(t, time.Duration(math.MaxInt64), g.Span(), s)
	}
}

func TestGridSpecStringAndSpan(t *testing.T) {
	g, err := ParseGridSpec("1x1h(keep=all) | 24x60m | 14x1d(keep=3) | 1x90s")
	require.NoError(t, err)
	assert.Equal(t, "1x1h(keep=all) | 24x1h | 14x1d(keep=3) | 1x90s", g.String())
	assert.Equal(t, 25*time.Hour+14*24*time.Hour+90*time.Second, g.Span())
}

func genGridInterval() *rapid.Generator[GridInterval] {
	return rapid.Custom(func(t *rapid.T) GridInterval {
		units := []time.Duration{time.Millisecond, time.Second, time.Minute, time.Hour, 24 * time.Hour, 7 * 24 * time.Hour}
		unit := rapid.SampledFrom(units).Draw(t, "unit")
		return GridInterval{
			Repeat: rapid.IntRange(1, 1000).Draw(t, "repeat"),
			Length: time.Duration(rapid.IntRange(1, 500).Draw(t, "n")) * unit,
			Keep:   rapid.OneOf(rapid.Just(KeepAll), rapid.IntRange(1, 100)).Draw(t, "keep"),
		}
	})
}

// String and ParseGridSpec are inverses, and Span is the exact total or
// saturates.
func TestGridSpecRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := GridSpec{Intervals: rapid.SliceOfN(genGridInterval(), 1, 8).Draw(t, "intervals")}
		span := new(big.Int)
		for _, iv := range g.Intervals {
			span.Add(span, new(big.Int).Mul(big.NewInt(int64(iv.Repeat)), big.NewInt(int64(iv.Length))))
		}
		if span.Cmp(big.NewInt(math.MaxInt64)) > 0 {
			span = big.NewInt(math.MaxInt64)
		}
		if got := g.Span(); int64(got) != span.Int64() {
			t.Fatalf("Span of %q = %d, want %s", g.String(), got, span)
		}
		back, err := ParseGridSpec(g.String())
		if err != nil {
			t.Fatalf("ParseGridSpec(%q): %v", g.String(), err)
		}
		if !assert.ObjectsAreEqual(g, back) {
			t.Fatalf("round trip of %q gave %+v, want %+v", g.String(), back, g)
		}
	})
}
