package transport

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A process that ignores its closed stdin until killed.
func stubbornProcess() ProcessStarter {
	return func(ctx context.Context, stderr io.Writer) (*Process, error) {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		killed := make(chan struct{})
		var once sync.Once
		go func() { _, _ = io.Copy(io.Discard, inR) }()
		return &Process{
			Stdin: inW, Stdout: outR, Name: "ssh",
			Wait: func() error {
				<-killed
				outW.Close()
				inR.Close()
				return errors.New("signal: killed")
			},
			Kill: func() { once.Do(func() { close(killed) }) },
		}, nil
	}
}

// Concurrent Closes of a connection whose process must be killed all
// return once it is gone, in virtual time: a second Close waits on a
// channel, which testing/synctest counts as durably blocked (a mutex is
// not, and the bubble's clock would stop; found by scenarios/).
func TestConcurrentCloseUnderSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := startProcess(context.Background(), stubbornProcess())
		require.NoError(t, err)
		start := time.Now()
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				assert.NoError(t, c.Close())
			}()
		}
		wg.Wait()
		assert.Equal(t, closeGrace, time.Since(start), "every Close returns when the grace ends and the process is killed")
		<-c.exited
	})
}
