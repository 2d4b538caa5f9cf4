package transport_test

import (
	"context"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"zrepl.dev/zrepl/engine/endpoint"
	"zrepl.dev/zrepl/engine/rpc"
	"zrepl.dev/zrepl/engine/transport"
	"zrepl.dev/zrepl/engine/zfs"
	"zrepl.dev/zrepl/netsim"
	"zrepl.dev/zrepl/netsim/twohost"
	"zrepl.dev/zrepl/zfsmodel"
	"zrepl.dev/zrepl/zfsmodel/modelpair"
)

// stallingReceiver's listing waits until released, telling when it began.
type stallingReceiver struct {
	rpc.ReceiverEndpoint
	entered chan struct{}
	release chan struct{}
}

func (s *stallingReceiver) ListFilesystems(ctx context.Context) ([]endpoint.Filesystem, error) {
	close(s.entered)
	<-s.release
	return s.ReceiverEndpoint.ListFilesystems(ctx)
}

// The control connection's ssh dies while a call is in progress: gRPC
// keeps only text of why, so the call's error comes from the transport
// (transport.Ended): ssh's exit status and complaint, inspectable as a
// *transport.ProcessExitError, and a temporary failure.
func TestControlCallWhoseSSHDiesNamesTheExit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mp, err := modelpair.New(modelpair.Options{})
		require.NoError(t, err)
		require.NoError(t, mp.Dst.CreateFilesystem(zfs.MustDatasetPath("dst/sinks"), zfsmodel.FSOptions{}))
		w, err := twohost.New(1, netsim.Link{Latency: 10 * time.Millisecond}, "sink", "laptop", 22)
		require.NoError(t, err)
		l, err := w.Listen("laptop")
		require.NoError(t, err)
		stall := &stallingReceiver{entered: make(chan struct{}), release: make(chan struct{})}
		srv, err := rpc.NewServer(rpc.ServerConfig{Receiver: func(identity string) (rpc.ReceiverEndpoint, error) {
			ep, err := rpc.Sink(mp.Dst, mp.Job, zfs.MustDatasetPath("dst/sinks"))(identity)
			stall.ReceiverEndpoint = ep
			return stall, err
		}})
		require.NoError(t, err)
		defer twohost.Serve(srv, l).Stop()
		// netsim's ssh complains as OpenSSH does when its connection is reset.
		const complaint = "client_loop: send disconnect: Connection reset by peer"
		sp := w.SSH(nil)
		c, err := rpc.NewClient(rpc.ClientConfig{Dial: sp.Dialer()})
		require.NoError(t, err)
		defer c.Close()

		errc := make(chan error, 1)
		go func() {
			_, err := c.Receiver().ListFilesystems(ctx)
			errc <- err
		}()
		<-stall.entered
		sp.Proc(0).Conn().Reset() // ssh's connection to the sink breaks: it exits 255
		err = <-errc
		close(stall.release)
		require.Error(t, err)
		t.Logf("the call failed with: %v", err)
		var xe *transport.ProcessExitError
		require.ErrorAs(t, err, &xe, "the ssh exit stays inspectable")
		assert.Equal(t, 255, xe.Status)
		assert.Equal(t, complaint, xe.Stderr)
		assert.ErrorContains(t, err, "list receiver filesystems: ssh exited with status 255: "+complaint)
		assert.Equal(t, 1, sp.Started(), "one process: the control connection")
	})
}

// Ended says nothing before a connection ended, and afterwards what the
// Read that met the end said; connections of other transports say
// nothing more than their errors.
func TestEndedIsWhatTheIOSaid(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		script := netsim.ProcessScript{Exit: netsim.ExitAfterStdout, StdoutBytes: 3, Status: 255, Stderr: "boom\n"}
		_, dial := simSSH(t, fixedScript(script), func(c net.Conn) {
			c.Write([]byte("hello"))
			io.Copy(io.Discard, c)
		})
		c, err := dial(context.Background())
		require.NoError(t, err)
		defer c.Close()
		assert.NoError(t, transport.Ended(c), "alive")
		_, rerr := io.ReadAll(c)
		xe := requireExit(t, rerr, 255, "boom")
		var got *transport.ProcessExitError
		require.ErrorAs(t, transport.Ended(c), &got)
		assert.Same(t, xe, got)

		a, b := net.Pipe()
		a.Close()
		_, err = b.Read(make([]byte, 1))
		assert.Error(t, err)
		assert.NoError(t, transport.Ended(b))
	})
}
