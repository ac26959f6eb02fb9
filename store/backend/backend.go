// Package backend defines where heft keeps its objects: a flat namespace of named,
// immutable byte sequences (packs and their indexes, ref snapshots, lock objects)
// on a local filesystem, in memory, or in an S3-compatible object store.
//
// The contract below is what the store may rely on; every implementation is
// checked against it by the conformance suite in store/backend/backendtest, which
// the implementations' tests run (style.md patterns 1 and 14).
//
// # Objects and names
//
// An object is a name and the bytes stored under it. Objects are replaced only
// as a whole: there is no append or partial write. Packs are written once and
// never replaced; small mutable objects (refs, locks) change only through
// CompareAndSwap.
//
// A name is one or more segments joined by '/'. A segment is 1 to 200 bytes of
// ASCII letters, digits, '.', '_' and '-', does not start with '.' (names
// starting with '.' are left to implementations for temporary and lock files)
// and is not "." or "..". A name is at most 900 bytes, which leaves room for an
// S3 key prefix within S3's 1024-byte key limit. CheckName enforces this; every
// method that takes a name returns an error wrapping ErrInvalidName for a name
// it refuses.
//
// Names are leaves: "a" and "a/b" should not both exist. Filesystem-backed
// implementations (local, and S3 gateways over POSIX such as versitygw) cannot
// store both and fail the second Put with ErrInvalidName; the in-memory backend
// refuses it too, so that layouts that would break there fail in unit tests.
// AWS S3 and SeaweedFS accept both; portable layouts never rely on that.
// SeaweedFS (4.53) also answers PutIfAbsent of "a" with ErrExists while "a/b"
// exists, although Stat of "a" says ErrNotFound: its namespace holds a
// directory there.
//
// # Atomicity
//
// A successful Put, PutIfAbsent or CompareAndSwap publishes the complete object
// at once: a reader (Get, ReadAt, Stat, List) sees either the previous state of
// the name (absent, or the complete previous object) or the complete new object,
// never a prefix or a mix. A failed or cancelled write publishes nothing, or the
// complete object when it fails after the point of publication (a lost response,
// a cancellation after the last byte): callers that must know which Stat the
// name. Each Get or ReadAt call reads from one version of the object; two calls
// on a name that was replaced in between may read different versions, so a
// mutable object is read with one Get, whose ObjectInfo describes exactly the
// version it streams.
//
// # Versions and compare-and-swap
//
// ObjectInfo.Version is an opaque token of one stored version of an object (the
// ETag on S3). It changes whenever the content changes; it may or may not change
// when identical bytes are written again (S3 ETags of single-part objects are
// content hashes, the local and in-memory backends issue a fresh token per
// write). CompareAndSwap therefore compares content, not history: a name that
// went from A to B and back to A may match a version read while it held A.
// Objects that need protection from that (refs) carry a generation counter in
// their bytes.
//
// # Errors and retries
//
// Errors wrap at most one of the sentinels below, plus context.Canceled or
// context.DeadlineExceeded when ctx ended the call, plus io.ErrUnexpectedEOF
// for ranges beyond the end of an object, so callers classify with errors.Is.
// Each error names the operation and the object's full location (the bucket and
// key on S3) through *Error.
//
// Implementations retry transient failures themselves (5xx, throttling,
// timeouts, connection resets) with backoff; an error that still wraps
// ErrTransient means the retries ran out and the operation may succeed if the
// caller tries again later. Every other error is permanent: retrying the same
// call will fail the same way (a missing object, a lost race, a bad name,
// denied access, a full disk).
//
// Writes may be retried with the same name and bytes. Put is idempotent.
// PutIfAbsent and CompareAndSwap are idempotent within one call: when an attempt
// failed in a way that leaves its outcome unknown and a later attempt finds the
// condition false, the implementation reads the object back and reports success
// if it holds exactly the bytes being written (a write that is in fact its own).
// Across calls they are not: a caller that retries PutIfAbsent after
// ErrTransient may get ErrExists for an object its first call created, and
// should compare the content (lock objects carry a unique owner token for this).
//
// # Listing
//
// List reports objects in lexicographic order of their names. Whether it
// reflects every write and delete that returned before it started is a property
// of the implementation (Properties.ConsistentList): the local and in-memory
// backends always do; an S3 backend does when its server does (AWS S3 since
// December 2020, versitygw and SeaweedFS as measured in docs/object-storage.md)
// and says so only when configured to. Code that deletes on the strength of a
// listing (gc) must not rely on it: a just-written object may be missing.
//
// # Concurrency
//
// A Backend is safe for concurrent use by many goroutines and, for the local and
// S3 backends, by many processes or hosts. A ReadCloser returned by Get is used
// by one goroutine. No method may be called after Close.
package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Backend stores named immutable objects. See the package documentation for the
// contract every method shares (atomicity, errors, retries, listing).
type Backend interface {
	// Put stores the size bytes of r under name, replacing any object there. r
	// must hold at least size bytes and must not change while Put runs: Put may
	// read any part of it more than once (retries) and from several goroutines
	// at once (parts of a multipart upload). Put is idempotent.
	Put(ctx context.Context, name string, r io.ReaderAt, size int64) (ObjectInfo, error)

	// PutIfAbsent stores the object like Put, but only if name does not exist:
	// otherwise it fails with an error wrapping ErrExists and leaves the object
	// as it was. Of any number of concurrent PutIfAbsent calls on one name (from
	// any process or host sharing the backend) exactly one succeeds, whatever
	// the object's size. On S3 this is If-None-Match: * on the request that
	// commits the object (the single PUT, or CompleteMultipartUpload).
	PutIfAbsent(ctx context.Context, name string, r io.ReaderAt, size int64) (ObjectInfo, error)

	// CompareAndSwap replaces the object under name with the size bytes of r if
	// its current version is version. Otherwise it fails with an error wrapping
	// ErrPreconditionFailed (and also ErrNotFound when the object does not
	// exist) and leaves the object as it was. Of concurrent CompareAndSwap calls
	// that pass the same version exactly one succeeds. On S3 this is If-Match on
	// the committing request.
	CompareAndSwap(ctx context.Context, name, version string, r io.ReaderAt, size int64) (ObjectInfo, error)

	// Get streams length bytes of the object starting at off; a negative length
	// means up to the end. The returned ObjectInfo describes the whole object
	// (its full Size and the Version being streamed). Get fails with
	// ErrNotFound when the object does not exist and with an error wrapping
	// io.ErrUnexpectedEOF when off or off+length is beyond its end. The reader
	// yields exactly the requested bytes and then io.EOF; once ctx is done its
	// Read fails with ctx's error. The caller must Close it.
	Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, ObjectInfo, error)

	// ReadAt reads len(p) bytes of the object starting at off. It returns
	// len(p), nil; or, when the object ends before off+len(p), the number of
	// bytes that exist in the range (copied into p) and an error wrapping
	// io.ErrUnexpectedEOF — unlike io.ReaderAt's io.EOF, a short read of a pack
	// is damage, not a normal end. A missing object is ErrNotFound.
	ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error)

	// Stat returns the object's size, version and modification time, or
	// ErrNotFound.
	Stat(ctx context.Context, name string) (ObjectInfo, error)

	// List calls fn for every object whose name starts with prefix (a plain
	// string prefix: "packs/a" matches "packs/ab/x" and "packs/a1"), in
	// lexicographic order, in the caller's goroutine, once per object. Version
	// may be empty in what it reports (use Stat). If fn returns an error, List
	// stops and returns it (wrapped). Objects written or deleted while List runs
	// may or may not be reported; see Properties.ConsistentList for the ones
	// written before.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error

	// Delete removes the object. Deleting a missing object succeeds, so Delete
	// is idempotent.
	Delete(ctx context.Context, name string) error

	// Properties describes the implementation.
	Properties() Properties

	// Close releases the backend's resources.
	Close() error
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Name string
	Size int64
	// Version identifies the stored version (see the package documentation).
	// List may leave it empty.
	Version string
	// ModTime is when the object was last written, by the store's clock (the
	// server's on S3). The result of a write on S3 leaves it zero: S3 does not
	// return it there; Stat does.
	ModTime time.Time
}

// Properties describe a backend.
type Properties struct {
	// Kind is "local", "mem" or "s3".
	Kind string
	// Location is where the objects are, for messages: a directory, or
	// s3://BUCKET/PREFIX on ENDPOINT. It never holds credentials.
	Location string
	// ConsistentList reports that List sees every Put and Delete that returned
	// before List was called.
	ConsistentList bool
	// MultipartThreshold is the size above which Put uploads in parts (0: never).
	// Callers need not care; the conformance suite uses it to test both sides.
	MultipartThreshold int64
	// Connections is how many transfers the backend is comfortable running at
	// once.
	Connections int
}

// Error classes. Every error a backend returns wraps at most one of these.
var (
	// ErrNotFound is returned when the named object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists is returned by PutIfAbsent when the object already exists.
	ErrExists = errors.New("object already exists")
	// ErrPreconditionFailed is returned by CompareAndSwap when the object is not
	// at the expected version (or does not exist).
	ErrPreconditionFailed = errors.New("object is not at the expected version")
	// ErrInvalidName is returned for a name CheckName rejects, or one that
	// conflicts with an existing object ("a" versus "a/b") where the
	// implementation cannot hold both.
	ErrInvalidName = errors.New("invalid object name")
	// ErrTransient is returned when the backend failed temporarily (a server
	// error, throttling, a dropped connection) and its own retries ran out. The
	// caller may retry the operation later.
	ErrTransient = errors.New("temporary backend failure")
)

// IsTransient reports whether err is a temporary failure worth retrying later.
// Every other error is permanent.
func IsTransient(err error) bool { return errors.Is(err, ErrTransient) }

// Error records a failed backend operation and the object it was about.
type Error struct {
	// Op is the operation: "put", "put-if-absent", "compare-and-swap", "get",
	// "read", "stat", "list", "delete".
	Op string
	// Path is the object's full location: a file path, or s3://BUCKET/KEY.
	Path string
	Err  error
}

func (e *Error) Error() string { return e.Op + " " + e.Path + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// ReadAll returns the whole object and the ObjectInfo of the version it read:
// the way to read a small mutable object before a CompareAndSwap.
func ReadAll(ctx context.Context, b Backend, name string) ([]byte, ObjectInfo, error) {
	rc, info, err := b.Get(ctx, name, 0, -1)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.Grow(int(info.Size))
	if _, err := buf.ReadFrom(rc); err != nil {
		return nil, ObjectInfo{}, err
	}
	if int64(buf.Len()) != info.Size {
		return nil, ObjectInfo{}, fmt.Errorf("read %s: got %d bytes of %d: %w", name, buf.Len(), info.Size, io.ErrUnexpectedEOF)
	}
	return buf.Bytes(), info, nil
}
