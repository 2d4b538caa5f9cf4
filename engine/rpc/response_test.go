package rpc

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"zrepl.dev/zrepl/engine/rpc/pb"
)

// TestHandlerErrorDetailsLost: a connection that fails after a handler's
// error header, before its details, fails the call with the server's text
// and the connection's failure both (the scenarios found a dying ssh
// process hidden behind a bare "server error").
func TestHandlerErrorDetailsLost(t *testing.T) {
	var wire bytes.Buffer
	wire.Write(frameBytes(frameResHeader, []byte(handlerErrorPfx+"boom")))
	wire.Write(frameBytes(frameEnd, nil))
	c := newDataConn(&bufConn{r: &wire, w: io.Discard})
	defer c.abort()
	err := c.readResponse(&pb.ErrorInfo{}, extSet{errors: true})
	var herr *HandlerError
	if !errors.As(err, &herr) || herr.Text != "boom" {
		t.Fatalf("want the server's text as a *HandlerError, got %v", err)
	}
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("want the connection's failure (%v) in the error, got %v", ErrTruncated, err)
	}
	if !strings.Contains(err.Error(), "server error: boom") {
		t.Fatalf("error %q does not say what the server said", err)
	}
}
