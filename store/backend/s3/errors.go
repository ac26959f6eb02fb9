package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/minio/minio-go/v7"

	"github.com/heft-dev/heft/store/backend"
)

// Failure classes (docs/reliability.md §3.6): what the server says about the
// object (missing, condition false) is final; server errors, throttling and
// broken connections are transient and retried; everything else (access
// denied, a missing bucket, a malformed request, TLS trust failures) is
// permanent and returned at once.

// respError is an S3 error response, with the classes it belongs to.
type respError struct {
	classes []error
	resp    minio.ErrorResponse
}

func (e *respError) Error() string {
	msg := e.resp.Message
	if msg == "" {
		msg = e.resp.Code
	}
	s := fmt.Sprintf("%s (HTTP %d %s", msg, e.resp.StatusCode, e.resp.Code)
	if len(e.classes) > 0 {
		s = e.classes[0].Error() + ": " + s
	}
	if e.resp.RequestID != "" {
		s += ", request " + e.resp.RequestID
	}
	if e.resp.Server != "" {
		s += ", server " + e.resp.Server
	}
	return s + ")"
}

func (e *respError) Unwrap() []error { return e.classes }

// permanentError marks a failure the retry loop must not retry (a broken put
// source, a failed precondition found by the caller).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Error codes that are worth another attempt whatever their HTTP status.
var transientCodes = map[string]bool{
	"RequestTimeout": true, "Throttling": true, "ThrottlingException": true,
	"RequestLimitExceeded": true, "RequestThrottled": true, "SlowDown": true,
	"SlowDownWrite": true, "SlowDownRead": true, "InternalError": true,
	"ServiceUnavailable": true, "ExpiredToken": true, "ExpiredTokenException": true,
	// 409s that mean "a concurrent operation interfered, try again" (AWS's
	// conditional writes; docs/object-storage.md §7.1).
	"ConditionalRequestConflict": true, "OperationAborted": true,
}

// classify wraps err in the classes of the backend contract. It returns ctx's
// error once ctx is done, whatever the request's own failure was.
func classify(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	var re *respError
	if errors.As(err, &re) {
		return re
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return &respError{classes: responseClasses(er), resp: er}
	}
	if isTransportFailure(err) {
		// The cause is kept as text only: a cut connection's io.ErrUnexpectedEOF
		// must not read as the contract's "range beyond the end".
		return fmt.Errorf("%w: %v", backend.ErrTransient, err)
	}
	return err
}

func responseClasses(er minio.ErrorResponse) []error {
	switch {
	case er.Code == "NoSuchBucket":
		return nil // a missing bucket is a configuration error, never a missing object
	case er.Code == "NoSuchKey" || er.Code == "NotFound" || er.StatusCode == http.StatusNotFound && er.Code != "NoSuchUpload":
		return []error{backend.ErrNotFound}
	case er.StatusCode == http.StatusPreconditionFailed || er.Code == "PreconditionFailed":
		return []error{backend.ErrPreconditionFailed}
	case er.StatusCode == http.StatusRequestedRangeNotSatisfiable || er.Code == "InvalidRange":
		return []error{io.ErrUnexpectedEOF}
	case er.Code == "ObjectParentIsFile" || er.Code == "ExistingObjectIsDirectory":
		// versitygw over POSIX: "a" and "a/b" cannot both exist.
		return []error{backend.ErrInvalidName}
	case transientCodes[er.Code],
		er.StatusCode == http.StatusRequestTimeout,
		er.StatusCode == http.StatusTooManyRequests,
		er.StatusCode >= 500:
		return []error{backend.ErrTransient}
	}
	return nil
}

// isTransportFailure reports whether err is a network-level failure (the request
// may or may not have reached the server) rather than a refusal to trust it.
func isTransportFailure(err error) bool {
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		certErr   x509.CertificateInvalidError
		recErr    tls.RecordHeaderError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &hostErr) || errors.As(err, &certErr) || errors.As(err, &recErr) {
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) // a timeout inside the client, ctx still live
}

// errorCode is the S3 error code of err, or "".
func errorCode(err error) string {
	var re *respError
	if errors.As(err, &re) {
		return re.resp.Code
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code
	}
	return ""
}
