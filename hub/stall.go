package hub

import (
	"io"
	"net/http"
	"time"
)

// DefaultStallTimeout is how long a request body may go without delivering a
// byte before the server gives up on it.
const DefaultStallTimeout = time.Minute

// WithStallTimeout refuses to wait forever on a request body that stops flowing
// (a slow-loris upload, a client that went away without closing): before every read
// of the body it moves the connection's read deadline to now + d, so a body may take
// as long as it needs in total but may not pause for longer than d. A stalled read
// fails, the handler sees an error, and whatever the request was writing is
// abandoned — an upload stores nothing, a push publishes no ref — releasing the
// locks it held. Headers are bounded separately (ReadHeaderTimeout).
func WithStallTimeout(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &stallReader{ReadCloser: r.Body, rc: http.NewResponseController(w), d: d}
		}
		h.ServeHTTP(w, r)
	})
}

type stallReader struct {
	io.ReadCloser
	rc *http.ResponseController
	d  time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	// Best effort: a ResponseWriter that cannot set deadlines (tests' recorders)
	// just reads without one.
	_ = s.rc.SetReadDeadline(time.Now().Add(s.d))
	return s.ReadCloser.Read(p)
}
