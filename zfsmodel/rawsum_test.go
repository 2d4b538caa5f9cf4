package zfsmodel

import "testing"

// The remembered raw checksum adjustment is the computed one, also after
// the memo was cleared.
func TestRawSumAdjustMemo(t *testing.T) {
	for round := range 3 {
		for i := range 1500 {
			mask := splitmix(uint64(i)) | 1
			if got, want := rawSumAdjust(mask), computeRawSumAdjust(mask); got != want {
				t.Fatalf("round %d, mask %x: %08x, want %08x", round, mask, got, want)
			}
		}
	}
}
