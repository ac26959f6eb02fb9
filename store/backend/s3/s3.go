// Package s3 is the backend.Backend on S3-compatible object storage, through
// github.com/minio/minio-go/v7 (docs/object-storage.md).
//
// Object NAME is stored at key PREFIX/NAME of the bucket. Objects up to
// Config.PartSize go up in one PUT; larger ones as a multipart upload of
// PartSize parts (PartConcurrency at a time) that CompleteMultipartUpload
// commits at once, so readers never see a partial object either way.
//
// Conditional writes ride on the request that commits the object: If-None-Match:
// * (PutIfAbsent) or If-Match: "ETAG" (CompareAndSwap) on the single PUT, or on
// CompleteMultipartUpload through minio.Core. minio-go's own PutObject is never
// used: above its multipart threshold it drops If-None-Match and silently
// overwrites (docs/object-storage.md §7.1). Versions are ETags.
//
// Retries are this package's, not minio-go's (whose are switched off): each
// request is tried up to Config.MaxAttempts times with jittered exponential
// backoff on 5xx, 408, 429, throttling codes, 409 ConditionalRequestConflict
// and broken connections. Because it knows when an attempt's outcome was
// unknown, it can resolve the case minio-go's retries get wrong: a conditional
// write that timed out after the server committed it, whose retry then finds
// the condition false. There it reads the object back and reports success if
// the object holds exactly the bytes being written. A multipart upload that
// fails is aborted; an abort that itself fails leaves an incomplete upload,
// which a bucket lifecycle rule (AbortIncompleteMultipartUpload) reclaims.
//
// Single PUTs whose body goes unsigned (over TLS, or with UnsignedPayload) carry
// Content-MD5: without a signed body only Content-Length tells a server that a
// body was cut short, and versitygw v1.8.0 commits such a truncated PUT as a
// shorter object (found by the conformance suite's cancellation test). Over
// plain HTTP minio-go's aws-chunked signatures already reveal truncation.
// Multipart parts need no digest for atomicity: a cut part fails, and only a
// Complete listing every part's ETag publishes the object.
//
// Reads stream from one GET; a stream cut by a transient failure resumes with a
// ranged GET pinned to the same ETag (If-Match), so a resumed read never mixes
// two versions.
//
// Measured with the conformance suite (store/backend/backendtest) on loopback:
// versitygw v1.8.0 and SeaweedFS 4.53 (weed mini) honour If-None-Match and
// If-Match on single PUTs and on CompleteMultipartUpload, each with exactly one
// winner per race, and answer If-Match on a missing key with 404 NoSuchKey, as
// AWS does. SeaweedFS makes the losers of a race for one key wait (up to 2 s
// with 8 writers), and answers PutIfAbsent of "a" with 412 while "a/b" exists.
//
// Errors name the bucket and key (s3://BUCKET/KEY) and carry the server's code,
// HTTP status and request ID. A missing bucket is a permanent error, never
// ErrNotFound — except on HEAD (Stat), whose 404 has no body to tell the two
// apart.
package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/internal/objio"
)

// Backend stores objects in one bucket under one prefix.
type Backend struct {
	cfg       resolved
	client    *minio.Client
	core      minio.Core
	transport http.RoundTripper
}

var _ backend.Backend = (*Backend)(nil)

// New connects to the bucket described by cfg. It does not contact the server:
// a wrong endpoint, bucket or credentials show up as permanent errors on the
// first request.
func New(cfg Config) (*Backend, error) {
	r, err := cfg.resolve(os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("s3 backend %s: %w", cfg, err)
	}
	var creds *credentials.Credentials
	if r.AccessKeyID != "" || r.SecretAccessKey != "" {
		creds = credentials.NewStaticV4(r.AccessKeyID, r.SecretAccessKey, r.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{Profile: r.Profile},
		})
	}
	transport := r.Transport
	if transport == nil {
		if transport, err = minio.DefaultTransport(r.secure); err != nil {
			return nil, fmt.Errorf("s3 backend %s: %w", cfg, err)
		}
	}
	lookup := minio.BucketLookupPath
	switch {
	case r.Addressing == "virtual", r.Addressing == "" && strings.HasSuffix(r.host, ".amazonaws.com"):
		lookup = minio.BucketLookupDNS
	}
	client, err := minio.New(r.host, &minio.Options{
		Creds:        creds,
		Secure:       r.secure,
		Region:       r.Region,
		BucketLookup: lookup,
		Transport:    transport,
		MaxRetries:   1, // retries are ours: see the package documentation
	})
	if err != nil {
		return nil, fmt.Errorf("s3 backend %s: %w", cfg, err)
	}
	return &Backend{cfg: r, client: client, core: minio.Core{Client: client}, transport: transport}, nil
}

func (b *Backend) logf(format string, args ...any) {
	if b.cfg.Logf != nil {
		b.cfg.Logf(format, args...)
	}
}

// Client returns the underlying minio-go client (tests create buckets with it).
func (b *Backend) Client() *minio.Client { return b.client }

func (b *Backend) key(name string) string {
	if b.cfg.Prefix == "" {
		return name
	}
	return b.cfg.Prefix + "/" + name
}

func (b *Backend) fail(op, name string, err error) error {
	return &backend.Error{Op: op, Path: "s3://" + b.cfg.Bucket + "/" + b.key(name), Err: err}
}

// retry runs fn until it succeeds or fails with an error that is not transient,
// at most MaxAttempts times. fn learns its attempt number (from 1): an attempt
// after the first follows a transient failure, whose outcome may be unknown. The
// error returned is classified; one that is still transient says how many
// attempts were made.
func (b *Backend) retry(ctx context.Context, what string, fn func(attempt int) error) error {
	for attempt := 1; ; attempt++ {
		raw := fn(attempt)
		if raw == nil {
			return nil
		}
		var pe *permanentError
		if errors.As(raw, &pe) {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			return pe.err
		}
		err := classify(ctx, raw)
		if !backend.IsTransient(err) {
			return err
		}
		if attempt >= b.cfg.MaxAttempts {
			b.logf("s3 %s: attempt %d of %d failed, giving up: %v", what, attempt, b.cfg.MaxAttempts, err)
			return fmt.Errorf("gave up after %d attempts; the failure is temporary and the operation may be retried later: %w", attempt, err)
		}
		b.logf("s3 %s: attempt %d of %d failed, retrying: %v", what, attempt, b.cfg.MaxAttempts, err)
		if err := b.sleep(ctx, attempt); err != nil {
			return err
		}
	}
}

// sleep waits before attempt+1: between half and all of
// min(RetryMaxDelay, RetryBaseDelay×2^(attempt-1)).
func (b *Backend) sleep(ctx context.Context, attempt int) error {
	d := b.cfg.RetryMaxDelay
	if attempt < 30 {
		d = min(d, b.cfg.RetryBaseDelay<<(attempt-1))
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// condition is a write's precondition.
type condition struct {
	ifAbsent bool   // If-None-Match: *
	ifMatch  string // If-Match: "ETAG"
}

func (c condition) set() bool { return c.ifAbsent || c.ifMatch != "" }

func (c condition) apply(opts *minio.PutObjectOptions) {
	switch {
	case c.ifAbsent:
		opts.SetMatchETagExcept("*")
	case c.ifMatch != "":
		opts.SetMatchETag(c.ifMatch)
	}
}

// refine turns a failed condition into the contract's class: ErrExists for
// PutIfAbsent; for CompareAndSwap ErrPreconditionFailed, plus ErrNotFound when
// the server said the object is missing (AWS answers If-Match on a missing key
// with 404).
func (c condition) refine(err error) error {
	var re *respError
	if err == nil || !c.set() || !errors.As(err, &re) {
		return err
	}
	failed := errors.Is(err, backend.ErrPreconditionFailed)
	missing := errors.Is(err, backend.ErrNotFound)
	switch {
	case c.ifAbsent && failed:
		re.classes = []error{backend.ErrExists}
	case c.ifMatch != "" && missing:
		re.classes = []error{backend.ErrPreconditionFailed, backend.ErrNotFound}
	}
	return err
}

func (b *Backend) Put(ctx context.Context, name string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	return b.put(ctx, "put", name, r, size, condition{})
}

func (b *Backend) PutIfAbsent(ctx context.Context, name string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	return b.put(ctx, "put-if-absent", name, r, size, condition{ifAbsent: true})
}

func (b *Backend) CompareAndSwap(ctx context.Context, name, version string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	if version == "" {
		return backend.ObjectInfo{}, b.fail("compare-and-swap", name, fmt.Errorf("%w: empty version", backend.ErrPreconditionFailed))
	}
	return b.put(ctx, "compare-and-swap", name, r, size, condition{ifMatch: version})
}

func (b *Backend) put(ctx context.Context, op, name string, r io.ReaderAt, size int64, cond condition) (backend.ObjectInfo, error) {
	if err := backend.CheckName(name); err != nil {
		return backend.ObjectInfo{}, b.fail(op, name, err)
	}
	if err := objio.CheckSize(size); err != nil {
		return backend.ObjectInfo{}, b.fail(op, name, err)
	}
	if err := ctx.Err(); err != nil {
		return backend.ObjectInfo{}, b.fail(op, name, err)
	}
	var (
		info backend.ObjectInfo
		err  error
	)
	if size <= b.cfg.PartSize {
		info, err = b.putSingle(ctx, name, r, size, cond)
	} else {
		info, err = b.putMultipart(ctx, name, r, size, cond)
	}
	if err != nil {
		return backend.ObjectInfo{}, b.fail(op, name, cond.refine(err))
	}
	if info.Version == "" {
		// Some servers (Ceph RGW 16 after multipart) return no ETag on the
		// write; the version then comes from a HEAD.
		st, err := b.Stat(ctx, name)
		if err != nil {
			return backend.ObjectInfo{}, err
		}
		info.Version = st.Version
	}
	return info, nil
}

// source feeds [off, off+size) of a put's ReaderAt to one request and records
// why it stopped early, so that a broken source fails the put at once instead
// of being retried as a network error.
type source struct {
	sr   *io.SectionReader
	size int64
	read int64
	err  error
}

func newSource(r io.ReaderAt, off, size int64) *source {
	return &source{sr: io.NewSectionReader(r, off, size), size: size}
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.sr.Read(p)
	s.read += int64(n)
	switch {
	case err == io.EOF && s.read < s.size:
		s.err = fmt.Errorf("%w: %d of %d bytes", objio.ErrShortSource, s.read, s.size)
		return n, s.err
	case err != nil && err != io.EOF:
		s.err = fmt.Errorf("read source: %w", err)
	}
	return n, err
}

// failed returns the source's failure as a permanent error, or the request's.
func (s *source) failed(err error) error {
	if s.err != nil {
		return &permanentError{s.err}
	}
	return err
}

// unsignedBody reports whether request bodies go without a signature: over TLS
// (minio-go's choice) or when configured. Over plain HTTP minio-go signs them
// in aws-chunked framing, whose per-chunk signatures also reveal truncation.
func (b *Backend) unsignedBody() bool { return b.cfg.secure || b.cfg.UnsignedPayload }

func (b *Backend) putOptions() minio.PutObjectOptions {
	return minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: b.cfg.UnsignedPayload}
}

// putSingle stores the object with one PUT carrying the condition.
func (b *Backend) putSingle(ctx context.Context, name string, r io.ReaderAt, size int64, cond condition) (backend.ObjectInfo, error) {
	key := b.key(name)
	md5sum := ""
	if b.unsignedBody() {
		// Without a signed body nothing but Content-Length tells the server
		// that a body was cut short, and versitygw v1.8.0 commits a truncated
		// unsigned PUT as a shorter object. Content-MD5 makes the server check
		// the bytes it received (BadDigest otherwise).
		h := md5.New()
		if err := objio.CopyFrom(ctx, h, r, size); err != nil {
			return backend.ObjectInfo{}, err
		}
		md5sum = base64.StdEncoding.EncodeToString(h.Sum(nil))
	}
	var info backend.ObjectInfo
	err := b.retry(ctx, "PUT "+key, func(attempt int) error {
		opts := b.putOptions()
		cond.apply(&opts)
		src := newSource(r, 0, size)
		up, err := b.core.PutObject(ctx, b.cfg.Bucket, key, src, size, md5sum, "", opts)
		if err = src.failed(err); err == nil {
			info = backend.ObjectInfo{Name: name, Size: size, Version: up.ETag}
			return nil
		}
		if attempt > 1 && cond.set() && conditionFalse(err) {
			return b.resolveAmbiguous(ctx, name, r, size, &info, err)
		}
		return err
	})
	return info, err
}

// conditionFalse reports whether err is the server refusing a conditional write
// (412, or 404 for If-Match on a missing key).
func conditionFalse(err error) bool {
	var er minio.ErrorResponse
	return errors.As(err, &er) &&
		(er.StatusCode == http.StatusPreconditionFailed || er.Code == "PreconditionFailed" || er.Code == "NoSuchKey")
}

// resolveAmbiguous runs when a conditional write found its condition false after
// an earlier attempt of the same call failed with an unknown outcome: if the
// object now holds exactly our bytes, that earlier attempt committed it and the
// write succeeded. Otherwise the write lost, and refused is returned.
func (b *Backend) resolveAmbiguous(ctx context.Context, name string, r io.ReaderAt, size int64, info *backend.ObjectInfo, refused error) error {
	refused = classify(ctx, refused)
	got, same, err := b.sameContent(ctx, name, r, size)
	if err != nil && !errors.Is(err, backend.ErrNotFound) {
		return &permanentError{fmt.Errorf("%w; then reading the object back to see whether an earlier attempt wrote it failed: %v", refused, err)}
	}
	if !same {
		return &permanentError{refused}
	}
	*info = got
	return nil
}

// sameContent reports whether the object name holds exactly the size bytes of r.
func (b *Backend) sameContent(ctx context.Context, name string, r io.ReaderAt, size int64) (backend.ObjectInfo, bool, error) {
	rc, info, err := b.Get(ctx, name, 0, -1)
	if err != nil {
		return backend.ObjectInfo{}, false, err
	}
	defer rc.Close()
	if info.Size != size {
		return info, false, nil
	}
	want := make([]byte, min(size, objio.ChunkSize))
	got := make([]byte, len(want))
	for off := int64(0); off < size; {
		n := min(int64(len(want)), size-off)
		if _, err := r.ReadAt(want[:n], off); err != nil && !(err == io.EOF && n == size-off) {
			return info, false, fmt.Errorf("read source: %w", err)
		}
		if _, err := io.ReadFull(rc, got[:n]); err != nil {
			return info, false, err
		}
		if !bytes.Equal(want[:n], got[:n]) {
			return info, false, nil
		}
		off += n
	}
	return info, true, nil
}

// errRestart asks putMultipart to start over with a new upload (AWS's advice for
// 409 ConditionalRequestConflict on CompleteMultipartUpload).
var errRestart = errors.New("restart the multipart upload")

// putMultipart stores the object as a multipart upload whose Complete carries the
// condition.
func (b *Backend) putMultipart(ctx context.Context, name string, r io.ReaderAt, size int64, cond condition) (backend.ObjectInfo, error) {
	var err error
	for round := 1; round <= 3; round++ {
		var info backend.ObjectInfo
		info, err = b.multipartOnce(ctx, name, r, size, cond)
		if !errors.Is(err, errRestart) {
			return info, err
		}
	}
	return backend.ObjectInfo{}, fmt.Errorf("%w: conditional multipart upload conflicted 3 times: %w", backend.ErrTransient, err)
}

func (b *Backend) multipartOnce(ctx context.Context, name string, r io.ReaderAt, size int64, cond condition) (info backend.ObjectInfo, err error) {
	key := b.key(name)
	var id string
	err = b.retry(ctx, "create multipart upload "+key, func(int) error {
		var err error
		id, err = b.core.NewMultipartUpload(ctx, b.cfg.Bucket, key, b.putOptions())
		return err
	})
	if err != nil {
		return info, fmt.Errorf("start multipart upload: %w", err)
	}
	completed := false
	defer func() {
		if !completed {
			if aerr := b.abort(ctx, key, id); aerr != nil {
				err = fmt.Errorf("%w (and aborting upload %s failed: %v)", err, id, aerr)
			}
		}
	}()

	nparts := int((size + b.cfg.PartSize - 1) / b.cfg.PartSize)
	parts := make([]minio.CompletePart, nparts)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.cfg.PartConcurrency)
	for i := range nparts {
		off := int64(i) * b.cfg.PartSize
		psize := min(b.cfg.PartSize, size-off)
		g.Go(func() error {
			err := b.retry(gctx, fmt.Sprintf("upload part %d of %s", i+1, key), func(int) error {
				src := newSource(r, off, psize)
				p, err := b.core.PutObjectPart(gctx, b.cfg.Bucket, key, id, i+1, src, psize,
					minio.PutObjectPartOptions{DisableContentSha256: b.cfg.UnsignedPayload})
				if err = src.failed(err); err == nil {
					parts[i] = minio.CompletePart{PartNumber: i + 1, ETag: p.ETag}
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("upload part %d of %d: %w", i+1, nparts, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return info, cerr
		}
		return info, err
	}

	err = b.retry(ctx, "complete multipart upload "+key, func(attempt int) error {
		opts := b.putOptions()
		cond.apply(&opts)
		up, err := b.core.CompleteMultipartUpload(ctx, b.cfg.Bucket, key, id, parts, opts)
		if err == nil {
			completed = true
			info = backend.ObjectInfo{Name: name, Size: size, Version: up.ETag}
			return nil
		}
		code := errorCode(err)
		if code == "ConditionalRequestConflict" {
			return &permanentError{errRestart}
		}
		// After an attempt with an unknown outcome, NoSuchUpload means that
		// attempt completed the upload (or something aborted it), and a false
		// condition may be our own object: look.
		if attempt > 1 && (code == "NoSuchUpload" || cond.set() && conditionFalse(err)) {
			if rerr := b.resolveAmbiguous(ctx, name, r, size, &info, err); rerr != nil {
				return rerr
			}
			completed = true
			return nil
		}
		return err
	})
	if err != nil && !errors.Is(err, errRestart) {
		err = fmt.Errorf("complete multipart upload %s: %w", id, err)
	}
	return info, err
}

// abort abandons a multipart upload, even when ctx is already cancelled.
func (b *Backend) abort(ctx context.Context, key, id string) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := b.retry(actx, "abort multipart upload "+key, func(int) error {
		err := b.core.AbortMultipartUpload(actx, b.cfg.Bucket, key, id)
		if errorCode(err) == "NoSuchUpload" {
			return nil
		}
		return err
	})
	return err
}

func (b *Backend) Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, backend.ObjectInfo, error) {
	if err := backend.CheckName(name); err != nil {
		return nil, backend.ObjectInfo{}, b.fail("get", name, err)
	}
	if off < 0 {
		return nil, backend.ObjectInfo{}, b.fail("get", name, fmt.Errorf("negative offset %d", off))
	}
	if length == 0 {
		// S3 cannot express an empty range: check existence and bounds.
		st, err := b.Stat(ctx, name)
		if err != nil {
			return nil, backend.ObjectInfo{}, err
		}
		if _, err := objio.Range(st.Size, off, 0); err != nil {
			return nil, backend.ObjectInfo{}, b.fail("get", name, err)
		}
		return &objio.CtxReader{Ctx: ctx, R: bytes.NewReader(nil)}, st, nil
	}
	var rc io.ReadCloser
	var info backend.ObjectInfo
	err := b.retry(ctx, "GET "+b.key(name), func(int) error {
		var err error
		rc, info, err = b.getOnce(ctx, name, off, length, "")
		return err
	})
	if errors.Is(err, io.ErrUnexpectedEOF) && !backend.IsTransient(err) {
		// 416: off is at or past the end. bytes=SIZE- is a valid empty read
		// that S3 refuses like any other.
		st, serr := b.Stat(ctx, name)
		if serr != nil {
			return nil, backend.ObjectInfo{}, serr
		}
		if _, rerr := objio.Range(st.Size, off, length); rerr != nil {
			return nil, backend.ObjectInfo{}, b.fail("get", name, rerr)
		}
		return &objio.CtxReader{Ctx: ctx, R: bytes.NewReader(nil)}, st, nil
	}
	if err != nil {
		return nil, backend.ObjectInfo{}, b.fail("get", name, err)
	}
	n, err := objio.Range(info.Size, off, length)
	if err != nil {
		_ = rc.Close()
		return nil, backend.ObjectInfo{}, b.fail("get", name, err)
	}
	return &reader{b: b, ctx: ctx, name: name, etag: info.Version, off: off, left: n, body: rc}, info, nil
}

// getOnce issues one GET for [off, off+length) (length < 0: to the end), with
// If-Match when etag is set. The ObjectInfo describes the whole object: its size
// comes from Content-Range. The body starts at off even where a server ignores
// the Range header.
func (b *Backend) getOnce(ctx context.Context, name string, off, length int64, etag string) (io.ReadCloser, backend.ObjectInfo, error) {
	opts := minio.GetObjectOptions{}
	switch {
	case length > 0:
		opts.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+length-1))
	case off > 0:
		opts.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	if etag != "" {
		if err := opts.SetMatchETag(etag); err != nil {
			return nil, backend.ObjectInfo{}, err
		}
	}
	rc, oi, hdr, err := b.core.GetObject(ctx, b.cfg.Bucket, b.key(name), opts)
	if err != nil {
		return nil, backend.ObjectInfo{}, err
	}
	size := oi.Size
	if cr := hdr.Get("Content-Range"); cr != "" {
		if size, err = totalFromContentRange(cr); err != nil {
			_ = rc.Close()
			return nil, backend.ObjectInfo{}, err
		}
	} else if off > 0 {
		// A whole-object answer to a ranged request: skip to off.
		if _, err := io.CopyN(io.Discard, rc, off); err != nil {
			_ = rc.Close()
			return nil, backend.ObjectInfo{}, err
		}
	}
	return rc, backend.ObjectInfo{Name: name, Size: size, Version: oi.ETag, ModTime: oi.LastModified}, nil
}

// totalFromContentRange reads the complete length from "bytes A-B/TOTAL".
func totalFromContentRange(cr string) (int64, error) {
	_, total, ok := strings.Cut(cr, "/")
	n, err := strconv.ParseInt(total, 10, 64)
	if !ok || err != nil || n < 0 {
		return 0, fmt.Errorf("unexpected Content-Range %q", cr)
	}
	return n, nil
}

// reader streams a Get, resuming after transient failures at the offset reached,
// pinned to the first response's ETag.
type reader struct {
	b       *Backend
	ctx     context.Context
	name    string
	etag    string
	off     int64 // next byte to deliver
	left    int64 // bytes still to deliver
	body    io.ReadCloser
	resumes int
}

func (r *reader) Read(p []byte) (int, error) {
	for {
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
		if r.left == 0 {
			return 0, io.EOF
		}
		if r.body == nil {
			if err := r.resume(); err != nil {
				return 0, r.b.fail("get", r.name, err)
			}
		}
		if int64(len(p)) > r.left {
			p = p[:r.left]
		}
		n, err := r.body.Read(p)
		r.off += int64(n)
		r.left -= int64(n)
		if err == nil || r.left == 0 {
			return n, nil
		}
		// The stream ended or broke before the range did.
		if cerr := r.ctx.Err(); cerr != nil {
			return n, cerr
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the server sent less than it announced
		}
		err = classify(r.ctx, err)
		if !backend.IsTransient(err) || r.resumes >= r.b.cfg.MaxAttempts || r.etag == "" {
			return n, r.b.fail("get", r.name, fmt.Errorf("stream broke at offset %d: %w", r.off, err))
		}
		r.b.logf("s3 GET %s: stream broke at offset %d (%d bytes left), resuming: %v", r.b.key(r.name), r.off, r.left, err)
		_ = r.body.Close()
		r.body = nil
		r.resumes++
		if n > 0 {
			return n, nil
		}
		if err := r.b.sleep(r.ctx, r.resumes); err != nil {
			return 0, err
		}
	}
}

func (r *reader) resume() error {
	var rc io.ReadCloser
	err := r.b.retry(r.ctx, "resume GET "+r.b.key(r.name), func(int) error {
		var err error
		rc, _, err = r.b.getOnce(r.ctx, r.name, r.off, r.left, r.etag)
		return err
	})
	if errors.Is(err, backend.ErrPreconditionFailed) {
		return fmt.Errorf("object replaced while it was being read (resuming at offset %d): %w", r.off, err)
	}
	if err != nil {
		return err
	}
	r.body = rc
	return nil
}

func (r *reader) Close() error {
	if r.body == nil {
		return nil
	}
	err := r.body.Close()
	r.body = nil
	return err
}

func (b *Backend) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	if err := backend.CheckName(name); err != nil {
		return 0, b.fail("read", name, err)
	}
	if off < 0 {
		return 0, b.fail("read", name, fmt.Errorf("negative offset %d", off))
	}
	if len(p) == 0 {
		st, err := b.Stat(ctx, name)
		if err != nil {
			return 0, err
		}
		if off > st.Size {
			return 0, b.fail("read", name, objio.ShortRead(off, 0, 0, st.Size))
		}
		return 0, nil
	}
	var n int
	var size int64
	err := b.retry(ctx, "GET "+b.key(name), func(int) error {
		rc, info, err := b.getOnce(ctx, name, off, int64(len(p)), "")
		if err != nil {
			return err
		}
		defer rc.Close()
		size = info.Size
		want := int(min(int64(len(p)), max(info.Size-off, 0)))
		n, err = io.ReadFull(rc, p[:want])
		return err
	})
	if errors.Is(err, io.ErrUnexpectedEOF) && !backend.IsTransient(err) {
		// 416: off is at or past the end.
		if st, serr := b.Stat(ctx, name); serr == nil {
			size = st.Size
		}
		return 0, b.fail("read", name, objio.ShortRead(off, 0, len(p), size))
	}
	if err != nil {
		return n, b.fail("read", name, err)
	}
	if n < len(p) {
		return n, b.fail("read", name, objio.ShortRead(off, n, len(p), size))
	}
	return n, nil
}

func (b *Backend) Stat(ctx context.Context, name string) (backend.ObjectInfo, error) {
	if err := backend.CheckName(name); err != nil {
		return backend.ObjectInfo{}, b.fail("stat", name, err)
	}
	var info backend.ObjectInfo
	err := b.retry(ctx, "HEAD "+b.key(name), func(int) error {
		oi, err := b.client.StatObject(ctx, b.cfg.Bucket, b.key(name), minio.StatObjectOptions{})
		if err == nil {
			info = backend.ObjectInfo{Name: name, Size: oi.Size, Version: oi.ETag, ModTime: oi.LastModified}
		}
		return err
	})
	if err != nil {
		return backend.ObjectInfo{}, b.fail("stat", name, err)
	}
	return info, nil
}

func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if err := backend.CheckPrefix(prefix); err != nil {
		return b.fail("list", prefix, err)
	}
	keyPrefix := b.key(prefix)
	if prefix == "" && b.cfg.Prefix != "" {
		keyPrefix = b.cfg.Prefix + "/"
	}
	last := "" // the last key delivered: a restarted listing resumes after it
	err := b.retry(ctx, "LIST "+keyPrefix, func(int) error {
		lctx, cancel := context.WithCancel(ctx)
		defer cancel() // stops minio-go's listing goroutine if we return early
		fetchOwner := false
		for oi := range b.client.ListObjects(lctx, b.cfg.Bucket, minio.ListObjectsOptions{
			Prefix: keyPrefix, Recursive: true, StartAfter: last, FetchOwner: &fetchOwner,
		}) {
			if oi.Err != nil {
				return oi.Err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			last = oi.Key
			name, ok := strings.CutPrefix(oi.Key, b.key(""))
			if b.cfg.Prefix == "" {
				name, ok = oi.Key, true
			}
			if !ok || backend.CheckName(name) != nil {
				continue // not an object of this backend (a probe, a foreign key)
			}
			if err := fn(backend.ObjectInfo{Name: name, Size: oi.Size, Version: oi.ETag, ModTime: oi.LastModified}); err != nil {
				return &permanentError{err}
			}
		}
		return ctx.Err()
	})
	if err != nil {
		return b.fail("list", prefix, err)
	}
	return nil
}

func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := backend.CheckName(name); err != nil {
		return b.fail("delete", name, err)
	}
	err := b.retry(ctx, "DELETE "+b.key(name), func(int) error {
		err := b.client.RemoveObject(ctx, b.cfg.Bucket, b.key(name), minio.RemoveObjectOptions{})
		if errorCode(err) == "NoSuchKey" {
			return nil
		}
		return err
	})
	if err != nil {
		return b.fail("delete", name, err)
	}
	return nil
}

func (b *Backend) Properties() backend.Properties {
	return backend.Properties{
		Kind:               "s3",
		Location:           b.cfg.Config.String(),
		ConsistentList:     b.cfg.ConsistentList,
		MultipartThreshold: b.cfg.PartSize,
		Connections:        8,
	}
}

// Close releases idle connections of the transport New made.
func (b *Backend) Close() error {
	if b.cfg.Transport == nil {
		if t, ok := b.transport.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
	}
	return nil
}
