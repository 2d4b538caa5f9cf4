package replication

import (
	"io"
	"sync/atomic"
	"time"
)

// StepProgress is a snapshot of one step's progress.
type StepProgress struct {
	FS   string
	Step string
	// Expected is the size estimate in bytes; 0 when unknown.
	Expected int64
	Done     int64
	State    string
}

// Progress is a snapshot of a run's progress.
type Progress struct {
	Attempt int
	// Expected sums the estimates of all planned steps. Where some steps
	// have no estimate, their share is extrapolated from the average of
	// the estimated ones and Estimated is set.
	Expected  int64
	Estimated bool
	Done      int64
	// Rate is bytes per second since the run started; ETA is the time
	// left at that rate (0 when unknown).
	Rate  float64
	ETA   time.Duration
	Steps []StepProgress
	// Previous is the last attempt that ended, once one did (its
	// failures are why the current attempt runs); nil before.
	Previous *Report
}

// countingReader counts bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Unwrap and Passed let a receiver that can move the stream without
// reading it (zfsreal splices a local zfs send into zfs recv) look through
// the counter and still report the bytes that went by.
func (c countingReader) Unwrap() io.Reader { return c.r }

func (c countingReader) Passed(n int64) { c.n.Add(n) }

// totals computes the expected total, extrapolating unknown estimates.
func totals(steps []StepProgress) (expected int64, estimated bool, done int64) {
	var known, unknown int
	var sum int64
	for _, s := range steps {
		done += s.Done
		if s.Expected > 0 {
			known++
			sum += s.Expected
		} else {
			unknown++
		}
	}
	expected = sum
	if unknown > 0 {
		estimated = true
		if known > 0 {
			expected += sum / int64(known) * int64(unknown)
		}
	}
	return expected, estimated, done
}
