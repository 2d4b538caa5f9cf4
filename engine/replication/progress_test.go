package replication

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

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
