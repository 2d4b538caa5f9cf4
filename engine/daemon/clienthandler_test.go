package daemon

import (
	"net/http"
	"net/http/httptest"
)

// NewClientHandler returns a client that calls h directly, without a
// control socket.
func NewClientHandler(h http.Handler) *Client {
	return &Client{http: &http.Client{Transport: handlerTransport{h}}}
}

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	res := rec.Result()
	res.Request = r
	return res, nil
}
