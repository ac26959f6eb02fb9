package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/s3"
	"github.com/heft-dev/heft/store/backend/s3/s3test"
)

// Fault injection between the backend and a real server (docs/reliability.md G8):
// a RoundTripper that can answer instead of the server, or let the server act
// and then lose its answer, which is what makes a retried conditional write
// ambiguous.

// kind of request, from method and query.
func kind(req *http.Request) string {
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodPut && q.Has("partNumber"):
		return "part"
	case req.Method == http.MethodPut:
		return "put"
	case req.Method == http.MethodPost && q.Has("uploads"):
		return "create"
	case req.Method == http.MethodPost && q.Has("uploadId"):
		return "complete"
	case req.Method == http.MethodDelete && q.Has("uploadId"):
		return "abort"
	case req.Method == http.MethodGet && q.Has("list-type"):
		return "list"
	}
	return strings.ToLower(req.Method)
}

// faults is the injecting transport. hook sees every request with the number of
// earlier requests of its kind and returns a response or error to use instead
// of the server's; next lets the server handle it.
type faults struct {
	base http.RoundTripper
	mu   sync.Mutex
	seen map[string]int
	log  []string
	hook func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error)
}

func (f *faults) RoundTrip(req *http.Request) (*http.Response, error) {
	k := kind(req)
	f.mu.Lock()
	n := f.seen[k]
	f.seen[k]++
	f.log = append(f.log, k)
	hook := f.hook
	f.mu.Unlock()
	next := func() (*http.Response, error) { return f.base.RoundTrip(req) }
	if hook == nil {
		return next()
	}
	return hook(req, n, next)
}

func (f *faults) count(k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[k]
}

func (f *faults) set(hook func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook, f.seen, f.log = hook, map[string]int{}, nil
}

// s3Error is a server error response.
func s3Error(req *http.Request, status int, code string) (*http.Response, error) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
	body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected %s</Message><RequestId>injected</RequestId></Error>`, code, code)
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/xml"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
	}, nil
}

var errReset = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

// lost lets the server handle the request and then drops its answer.
func lost(next func() (*http.Response, error)) (*http.Response, error) {
	resp, err := next()
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	return nil, errReset
}

// cutBody delivers the first n bytes of a response body, then a reset.
type cutBody struct {
	r    io.ReadCloser
	left int
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, errReset
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= n
	return n, err
}

func (c *cutBody) Close() error { return c.r.Close() }

type faultEnv struct {
	srv    *s3test.Server
	bucket string
	f      *faults
	b      *s3.Backend
	ctx    context.Context
}

func newFaultEnv(t *testing.T) *faultEnv {
	srv := s3test.VersityGW(t)
	bucket := srv.NewBucket(t)
	base, err := minio.DefaultTransport(false)
	if err != nil {
		t.Fatal(err)
	}
	f := &faults{base: base, seen: map[string]int{}}
	cfg := srv.Config(bucket, "faults")
	cfg.Transport = f
	cfg.PartSize = s3.MinPartSize
	cfg.MaxAttempts = 4
	cfg.RetryBaseDelay, cfg.RetryMaxDelay = time.Millisecond, 5*time.Millisecond
	cfg.Logf = t.Logf
	b, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &faultEnv{srv: srv, bucket: bucket, f: f, b: b, ctx: t.Context()}
}

func (e *faultEnv) content(t *testing.T, name string) []byte {
	t.Helper()
	e.f.set(nil)
	data, _, err := backend.ReadAll(e.ctx, e.b, name)
	if err != nil {
		t.Fatalf("read %s back: %v", name, err)
	}
	return data
}

func payload(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestRetryTransient(t *testing.T) {
	e := newFaultEnv(t)
	small, large := payload(1, 1000), payload(2, 2*s3.MinPartSize+100)
	// Two throttled PUTs, then the server's answer.
	e.f.set(func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
		if kind(req) == "put" && n < 2 {
			return s3Error(req, http.StatusServiceUnavailable, "SlowDown")
		}
		return next()
	})
	if _, err := e.b.Put(e.ctx, "small", bytes.NewReader(small), int64(len(small))); err != nil {
		t.Fatalf("Put after 2 × 503: %v", err)
	}
	if got := e.f.count("put"); got != 3 {
		t.Fatalf("%d PUTs, want 3", got)
	}
	if !bytes.Equal(e.content(t, "small"), small) {
		t.Fatal("wrong content after retried Put")
	}
	// A 500 on every step of a multipart upload once, and a reset on a part.
	e.f.set(func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
		switch k := kind(req); {
		case n == 0 && (k == "create" || k == "complete"):
			return s3Error(req, http.StatusInternalServerError, "InternalError")
		case n == 1 && k == "part":
			return nil, errReset
		}
		return next()
	})
	if _, err := e.b.Put(e.ctx, "large", bytes.NewReader(large), int64(len(large))); err != nil {
		t.Fatalf("multipart Put with transient failures: %v", err)
	}
	if !bytes.Equal(e.content(t, "large"), large) {
		t.Fatal("wrong content after retried multipart Put")
	}
	// Reads and listings retry too.
	e.f.set(func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
		if k := kind(req); n == 0 && (k == "get" || k == "head" || k == "list") {
			return s3Error(req, http.StatusBadGateway, "BadGateway")
		}
		return next()
	})
	if data, _, err := backend.ReadAll(e.ctx, e.b, "small"); err != nil || !bytes.Equal(data, small) {
		t.Fatalf("Get after a 502: %v", err)
	}
	if _, err := e.b.Stat(e.ctx, "small"); err != nil {
		t.Fatalf("Stat after a 502: %v", err)
	}
	n := 0
	if err := e.b.List(e.ctx, "", func(backend.ObjectInfo) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("List after a 502: %d objects, %v", n, err)
	}
}

func TestGiveUp(t *testing.T) {
	e := newFaultEnv(t)
	e.f.set(func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
		return s3Error(req, http.StatusServiceUnavailable, "ServiceUnavailable")
	})
	data := []byte("never")
	_, err := e.b.Put(e.ctx, "obj", bytes.NewReader(data), int64(len(data)))
	if !backend.IsTransient(err) {
		t.Fatalf("Put against a server that always answers 503: %v, want ErrTransient", err)
	}
	if got := e.f.count("put"); got != 4 {
		t.Fatalf("%d attempts, want MaxAttempts = 4", got)
	}
	for _, want := range []string{"s3://" + e.bucket + "/faults/obj", "503", "ServiceUnavailable", "gave up after 4 attempts"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not mention %q", err, want)
		}
	}
}

func TestPermanentErrors(t *testing.T) {
	e := newFaultEnv(t)
	e.f.set(func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
		return s3Error(req, http.StatusForbidden, "AccessDenied")
	})
	data := []byte("denied")
	_, err := e.b.Put(e.ctx, "obj", bytes.NewReader(data), int64(len(data)))
	if err == nil || backend.IsTransient(err) || e.f.count("put") != 1 {
		t.Fatalf("Put refused with 403: %v after %d attempts; want one attempt and a permanent error", err, e.f.count("put"))
	}
	for _, want := range []string{"s3://" + e.bucket + "/faults/obj", "403", "AccessDenied"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not mention %q", err, want)
		}
	}

	// Wrong credentials, from the real server.
	cfg := e.srv.Config(e.bucket, "faults")
	cfg.SecretAccessKey = "wrong-secret"
	bad, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Stat(e.ctx, "obj")
	if err == nil || backend.IsTransient(err) || errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Stat with a wrong secret: %v, want a permanent error that is not ErrNotFound", err)
	}
	t.Logf("wrong secret: %v", err)

	// A missing bucket is not a missing object.
	cfg = e.srv.Config("heft-no-such-bucket", "x")
	nob, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = nob.Get(e.ctx, "obj", 0, -1)
	if err == nil || backend.IsTransient(err) || errors.Is(err, backend.ErrNotFound) || !strings.Contains(err.Error(), "NoSuchBucket") {
		t.Fatalf("Get from a missing bucket: %v, want a permanent NoSuchBucket error that is not ErrNotFound", err)
	}
	err = nob.List(e.ctx, "", func(backend.ObjectInfo) error { return nil })
	if err == nil || backend.IsTransient(err) || errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("List of a missing bucket: %v, want a permanent error that is not ErrNotFound", err)
	}
}

// TestAmbiguousConditionalWrite: the server commits a conditional write but its
// answer is lost; the retry finds the condition false. The backend must see that
// the object is its own and report success — and must still report the loss
// when the object that made the condition false is someone else's.
func TestAmbiguousConditionalWrite(t *testing.T) {
	e := newFaultEnv(t)
	for _, size := range []int{1000, 2*s3.MinPartSize + 100} {
		commit := "put"
		if size > s3.MinPartSize {
			commit = "complete"
		}
		loseFirst := func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
			if kind(req) == commit && n == 0 {
				return lost(next)
			}
			return next()
		}
		name := fmt.Sprintf("amb-%d", size)
		mine := payload(uint64(size), size)
		e.f.set(loseFirst)
		info, err := e.b.PutIfAbsent(e.ctx, name, bytes.NewReader(mine), int64(size))
		if err != nil {
			t.Fatalf("PutIfAbsent (%d bytes) whose first %s answer was lost: %v", size, commit, err)
		}
		if e.f.count(commit) != 2 {
			t.Fatalf("%d %s requests, want 2", e.f.count(commit), commit)
		}
		if !bytes.Equal(e.content(t, name), mine) {
			t.Fatal("wrong content")
		}

		next := payload(uint64(size)+1, size)
		e.f.set(loseFirst)
		if _, err := e.b.CompareAndSwap(e.ctx, name, info.Version, bytes.NewReader(next), int64(size)); err != nil {
			t.Fatalf("CompareAndSwap (%d bytes) whose first %s answer was lost: %v", size, commit, err)
		}
		if !bytes.Equal(e.content(t, name), next) {
			t.Fatal("wrong content after swap")
		}

		// The first attempt fails without reaching the server; the object that
		// the retry finds is someone else's: a loss, not a success.
		other := payload(uint64(size)+2, size)
		e.f.set(func(req *http.Request, n int, nx func() (*http.Response, error)) (*http.Response, error) {
			if kind(req) == commit && n == 0 {
				return s3Error(req, http.StatusServiceUnavailable, "SlowDown")
			}
			return nx()
		})
		_, err = e.b.PutIfAbsent(e.ctx, name, bytes.NewReader(other), int64(size))
		if !errors.Is(err, backend.ErrExists) || backend.IsTransient(err) {
			t.Fatalf("PutIfAbsent over someone else's object after a 503: %v, want ErrExists", err)
		}
		e.f.set(func(req *http.Request, n int, nx func() (*http.Response, error)) (*http.Response, error) {
			if kind(req) == commit && n == 0 {
				return s3Error(req, http.StatusServiceUnavailable, "SlowDown")
			}
			return nx()
		})
		_, err = e.b.CompareAndSwap(e.ctx, name, info.Version, bytes.NewReader(other), int64(size))
		if !errors.Is(err, backend.ErrPreconditionFailed) || backend.IsTransient(err) {
			t.Fatalf("stale CompareAndSwap after a 503: %v, want ErrPreconditionFailed", err)
		}
		if !bytes.Equal(e.content(t, name), next) {
			t.Fatal("a lost conditional write changed the object")
		}
	}
}

// TestConflictRestartsUpload: AWS answers a conditional Complete that raced
// another operation with 409 ConditionalRequestConflict and wants a new upload.
func TestConflictRestartsUpload(t *testing.T) {
	e := newFaultEnv(t)
	data := payload(3, 2*s3.MinPartSize+1)
	e.f.set(func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
		if kind(req) == "complete" && n == 0 {
			return s3Error(req, http.StatusConflict, "ConditionalRequestConflict")
		}
		return next()
	})
	if _, err := e.b.PutIfAbsent(e.ctx, "conflict", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if c, a := e.f.count("create"), e.f.count("abort"); c != 2 || a != 1 {
		t.Fatalf("%d uploads created and %d aborted, want 2 and 1", c, a)
	}
	if !bytes.Equal(e.content(t, "conflict"), data) {
		t.Fatal("wrong content")
	}
}

// TestFailedUploadIsAborted: a part that fails permanently ends the put, and the
// upload is aborted, so no parts are left behind.
func TestFailedUploadIsAborted(t *testing.T) {
	e := newFaultEnv(t)
	data := payload(4, 3*s3.MinPartSize)
	e.f.set(func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
		if kind(req) == "part" && strings.Contains(req.URL.RawQuery, "partNumber=2") {
			return s3Error(req, http.StatusForbidden, "AccessDenied")
		}
		return next()
	})
	_, err := e.b.Put(e.ctx, "aborted", bytes.NewReader(data), int64(len(data)))
	if err == nil || backend.IsTransient(err) || !strings.Contains(err.Error(), "part 2 of 3") {
		t.Fatalf("Put with a refused part: %v", err)
	}
	if e.f.count("abort") != 1 {
		t.Fatalf("%d aborts, want 1", e.f.count("abort"))
	}
	core := minio.Core{Client: e.b.Client()}
	res, err := core.ListMultipartUploads(e.ctx, e.bucket, "faults/", "", "", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Uploads) != 0 {
		t.Fatalf("%d incomplete uploads left", len(res.Uploads))
	}
	if _, err := e.b.Stat(e.ctx, "aborted"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Stat after the failed Put: %v", err)
	}
}

// TestGetResumes: a body cut mid-stream resumes where it stopped, pinned to the
// ETag; if the object was replaced in between, the read fails instead of mixing
// versions.
func TestGetResumes(t *testing.T) {
	e := newFaultEnv(t)
	data := payload(5, 3<<20)
	if _, err := e.b.Put(e.ctx, "big", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	var ifMatch []string
	e.f.set(func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
		resp, err := next()
		if kind(req) != "get" || err != nil {
			return resp, err
		}
		ifMatch = append(ifMatch, req.Header.Get("If-Match")+" "+req.Header.Get("Range"))
		if n < 2 {
			resp.Body = &cutBody{r: resp.Body, left: 1 << 20}
		}
		return resp, nil
	})
	rc, _, err := e.b.Get(e.ctx, "big", 100, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("read through two resets: %v", err)
	}
	if !bytes.Equal(got, data[100:]) {
		t.Fatalf("resumed read: %d bytes, want %d, or wrong bytes", len(got), len(data)-100)
	}
	if len(ifMatch) != 3 || !strings.HasPrefix(ifMatch[1], `"`) || !strings.Contains(ifMatch[2], fmt.Sprintf("bytes=%d-", 100+2<<20)) {
		t.Fatalf("GETs (If-Match, Range): %q; want resumes pinned to the ETag at the offsets reached", ifMatch)
	}

	// Replaced between the cut and the resume.
	e.f.set(func(req *http.Request, n int, next func() (*http.Response, error)) (*http.Response, error) {
		resp, err := next()
		if kind(req) == "get" && err == nil && n == 0 {
			resp.Body = &cutBody{r: resp.Body, left: 1 << 20}
		}
		return resp, err
	})
	rc, _, err = e.b.Get(e.ctx, "big", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	other := payload(6, 3<<20)
	if _, err := e.b.Put(e.ctx, "big", bytes.NewReader(other), int64(len(other))); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, backend.ErrPreconditionFailed) || !strings.Contains(err.Error(), "replaced while it was being read") {
		t.Fatalf("resuming a replaced object: %v, want ErrPreconditionFailed", err)
	}
}
