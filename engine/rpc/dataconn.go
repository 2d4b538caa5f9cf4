package rpc

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"zrepl.dev/zrepl/engine/rpc/pb"
)

// Requests on a data connection (zrepl's "dataconn"): one per connection.
// The client sends the endpoint's name as a message of type ReqHeader and
// the request's protobuf as one of type ReqStructured; for /v1/recv the
// send stream follows as type ZFSStream. The server answers with a
// ResHeader message, "HANDLER OK\n" or "HANDLER ERROR:\n" and the error's
// text, then on success the response's protobuf as ResStructured; for
// /v1/send the stream follows. Each side then closes.
const (
	endpointPing = "/v1/ping"
	endpointSend = "/v1/send"
	endpointRecv = "/v1/recv"

	handlerOK       = "HANDLER OK\n"
	handlerErrorPfx = "HANDLER ERROR:\n"

	// zrepl's bounds of each message.
	maxRequestHeader     = 1 << 15
	maxRequestStructured = 1 << 22
	maxResponseHeader    = 1 << 15
	maxResponseStruct    = 1 << 23
)

func (c *dataConn) writeRequest(endpoint string, req proto.Message) error {
	b, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	if err := c.writeMessage(frameReqHeader, []byte(endpoint)); err != nil {
		return err
	}
	return c.writeMessage(frameReqStructured, b)
}

// readRequest reads a request's endpoint and protobuf.
func (c *dataConn) readRequest() (endpoint string, body []byte, err error) {
	h, err := c.readMessage(frameReqHeader, maxRequestHeader)
	if err != nil {
		return "", nil, fmt.Errorf("read request header: %w", err)
	}
	body, err = c.readMessage(frameReqStructured, maxRequestStructured)
	if err != nil {
		return "", nil, fmt.Errorf("read request of %q: %w", h, err)
	}
	return string(h), body, nil
}

// writeResponse answers a request with res, or with herr; with ext.errors
// the error's kinds follow its text.
func (c *dataConn) writeResponse(res proto.Message, herr error, ext extSet) error {
	if herr == nil {
		b, err := proto.Marshal(res)
		if err != nil {
			herr = fmt.Errorf("marshal response: %w", err)
		} else {
			if err := c.writeMessage(frameResHeader, []byte(handlerOK)); err != nil {
				return err
			}
			return c.writeMessage(frameResStructured, b)
		}
	}
	msg := truncateText(herr.Error(), maxResponseHeader-len(handlerErrorPfx)-8)
	if err := c.writeMessage(frameResHeader, []byte(handlerErrorPfx+msg)); err != nil {
		return err
	}
	if !ext.errors {
		return nil
	}
	b, err := proto.Marshal(errorInfo(herr))
	if err != nil {
		return err
	}
	return c.writeMessage(frameErrorInfo, b)
}

// HandlerError is a request's failure on a zrepl server (which sends only
// the text).
type HandlerError struct{ Text string }

func (e *HandlerError) Error() string { return "server error: " + e.Text }

// readResponse reads the answer to a request into res. A handler's error
// is returned as a *RemoteError (with ext.errors) or a *HandlerError.
func (c *dataConn) readResponse(res proto.Message, ext extSet) error {
	h, err := c.readMessage(frameResHeader, maxResponseHeader)
	if err != nil {
		return fmt.Errorf("read response header: %w", err)
	}
	header := string(h)
	if text, ok := strings.CutPrefix(header, handlerErrorPfx); ok {
		if ext.errors {
			b, err := c.readMessage(frameErrorInfo, maxResponseStruct)
			if err != nil {
				// The connection failed between the header and the
				// details: say why, beside what the server said.
				return fmt.Errorf("%w (its details were lost: %w)", &HandlerError{Text: text}, err)
			}
			var info pb.ErrorInfo
			if err := proto.Unmarshal(b, &info); err == nil {
				return remoteError(&info)
			}
		}
		return &HandlerError{Text: text}
	}
	if header != handlerOK {
		return fmt.Errorf("%w: response header %q", ErrProtocol, truncateText(header, 80))
	}
	b, err := c.readMessage(frameResStructured, maxResponseStruct)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if err := proto.Unmarshal(b, res); err != nil {
		return fmt.Errorf("%w: response: %w", ErrProtocol, err)
	}
	return nil
}

var errUnknownEndpoint = errors.New("requested endpoint does not exist")
