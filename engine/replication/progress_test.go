package replication

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"

	"zrepl.dev/zrepl/zfsreal"
)

// zfsreal splices a local send into a receive past the step's counter and
// tells it what went by.
func TestCountingReaderLetsReceiversLookThrough(t *testing.T) {
	var n atomic.Int64
	inner := strings.NewReader("stream")
	var w zfsreal.StreamWrapper = countingReader{r: inner, n: &n}
	assert.Same(t, inner, w.Unwrap())
	w.Passed(1 << 20)
	buf := make([]byte, 3)
	_, _ = w.(countingReader).Read(buf)
	assert.Equal(t, int64(1<<20+3), n.Load())
}

func TestTotalsExtrapolateMissingEstimates(t *testing.T) {
	exp, estimated, done := totals([]StepProgress{{Expected: 100, Done: 50}, {Expected: 300, Done: 0}})
	assert.Equal(t, int64(400), exp)
	assert.False(t, estimated)
	assert.Equal(t, int64(50), done)

	// One step without an estimate counts as the average of the others.
	exp, estimated, done = totals([]StepProgress{{Expected: 100, Done: 100}, {Expected: 300}, {Done: 10}})
	assert.Equal(t, int64(600), exp)
	assert.True(t, estimated)
	assert.Equal(t, int64(110), done)

	exp, estimated, _ = totals([]StepProgress{{Done: 10}})
	assert.Equal(t, int64(0), exp, "nothing to extrapolate from")
	assert.True(t, estimated)
}
