package daemon

import (
	"bytes"
	"context"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/config"
)

// A stream under a bandwidth limit takes (size - initial bucket) / rate in
// virtual time; two streams share one job's limit.
func TestBandwidthLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const mib = 1 << 20
		b := newBucket(config.BandwidthLimit{Max: mib, BucketCapacity: 128 << 10})
		start := time.Now()
		n, err := io.Copy(io.Discard, limitReadCloser(io.NopCloser(bytes.NewReader(make([]byte, 10*mib))), b))
		require.NoError(t, err)
		assert.EqualValues(t, 10*mib, n)
		took := time.Since(start)
		assert.InDelta(t, (10*mib-128<<10)/float64(mib), took.Seconds(), 0.05, "took %s", took)

		// Two streams at once share the rate: 2 × 2 MiB take 4 s.
		start = time.Now()
		done := make(chan struct{})
		for range 2 {
			go func() {
				io.Copy(io.Discard, limitReader(context.Background(), bytes.NewReader(make([]byte, 2*mib)), b))
				done <- struct{}{}
			}()
		}
		<-done
		<-done
		assert.InDelta(t, 4.0, time.Since(start).Seconds(), 0.2)
	})
}

// Closing a stream ends its wait for tokens at once.
func TestBandwidthLimitCloseEndsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBucket(config.BandwidthLimit{Max: 1, BucketCapacity: 1 << 20})
		rc := limitReadCloser(io.NopCloser(bytes.NewReader(make([]byte, 4<<20))), b)
		buf := make([]byte, 1<<20)
		_, err := rc.Read(buf) // spends the bucket
		require.NoError(t, err)
		start := time.Now()
		go func() {
			time.Sleep(time.Second)
			rc.Close()
		}()
		_, err = rc.Read(buf) // a million seconds of debt
		require.NoError(t, err)
		assert.Equal(t, time.Second, time.Since(start))
	})
}

func TestUnlimited(t *testing.T) {
	assert.Nil(t, newBucket(config.BandwidthLimit{Max: -1}))
	r := bytes.NewReader(nil)
	assert.Same(t, r, limitReader(context.Background(), r, nil))
}
