package vfs

import (
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"sync"
)

// Op is a kind of filesystem operation an ErrorFS can fail.
type Op uint8

// The operations an ErrorFS asks its Policy about. Reads, Stat, ReadDir and Close
// are never failed.
const (
	OpAny     Op = iota // matches every kind below (in FailNth and FailRandom)
	OpCreate            // creating a file (OpenFile with O_CREATE, CreateTemp) or a directory
	OpWrite             // a File.Write
	OpSync              // a File.Sync
	OpRename            // Rename
	OpDirSync           // SyncDir
	OpRemove            // Remove
)

var opNames = [...]string{"any", "create", "write", "sync", "rename", "dir-sync", "remove"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op%d", o)
}

// Policy decides whether one operation fails: it returns nil to let op on path run,
// or the error to return instead (wrapped in a *fs.PathError or *os.LinkError). For
// OpWrite, a *ShortWrite error writes a prefix first. A Policy is called with the
// ErrorFS's lock held, one call at a time.
type Policy func(op Op, path string) error

// ShortWrite, returned by a Policy for OpWrite, makes the write store only its first
// N bytes (fewer if the write is shorter) and then fail with Err.
type ShortWrite struct {
	N   int
	Err error
}

func (e *ShortWrite) Error() string { return fmt.Sprintf("short write of %d bytes: %v", e.N, e.Err) }
func (e *ShortWrite) Unwrap() error { return e.Err }

// FailNth fails the n-th operation (1-based) of kind op (OpAny: of any kind) with
// err; the others run.
func FailNth(op Op, n int, err error) Policy {
	seen := 0
	return func(o Op, _ string) error {
		if op != OpAny && o != op {
			return nil
		}
		seen++
		if seen == n {
			return err
		}
		return nil
	}
}

// ShortWriteNth makes the n-th write store only its first keep bytes and fail with
// err (a torn write, as a full disk leaves one).
func ShortWriteNth(n, keep int, err error) Policy {
	return FailNth(OpWrite, n, &ShortWrite{N: keep, Err: err})
}

// FailRandom fails each operation of the given kinds (all kinds when none are given)
// with probability p, reproducibly for a seed.
func FailRandom(seed int64, p float64, err error, ops ...Op) Policy {
	rng := rand.New(rand.NewSource(seed))
	return func(o Op, _ string) error {
		match := len(ops) == 0
		for _, op := range ops {
			match = match || op == OpAny || op == o
		}
		if match && rng.Float64() < p {
			return err
		}
		return nil
	}
}

// ErrorFS wraps an FS and fails operations as its Policy decides (pebble's errorfs,
// restic's fault backends): ENOSPC, EIO or short writes at chosen or random points.
type ErrorFS struct {
	inner  FS
	mu     sync.Mutex
	policy Policy // +checklocks:mu
}

// NewErrorFS returns inner with faults injected by p (nil: none until SetPolicy).
func NewErrorFS(inner FS, p Policy) *ErrorFS {
	return &ErrorFS{inner: inner, policy: p}
}

// SetPolicy replaces the policy (nil: inject nothing).
func (e *ErrorFS) SetPolicy(p Policy) {
	e.mu.Lock()
	e.policy = p
	e.mu.Unlock()
}

func (e *ErrorFS) inject(op Op, path string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.policy == nil {
		return nil
	}
	return e.policy(op, path)
}

func (e *ErrorFS) Open(name string) (File, error) {
	f, err := e.inner.Open(name)
	if err != nil {
		return nil, err
	}
	return &errFile{File: f, fs: e}, nil
}

func (e *ErrorFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if flag&os.O_CREATE != 0 {
		if err := e.inject(OpCreate, name); err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
	}
	f, err := e.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &errFile{File: f, fs: e}, nil
}

func (e *ErrorFS) CreateTemp(dir, pattern string) (File, error) {
	if err := e.inject(OpCreate, dir); err != nil {
		return nil, &fs.PathError{Op: "createtemp", Path: dir, Err: err}
	}
	f, err := e.inner.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &errFile{File: f, fs: e}, nil
}

func (e *ErrorFS) Rename(oldname, newname string) error {
	if err := e.inject(OpRename, newname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return e.inner.Rename(oldname, newname)
}

func (e *ErrorFS) Remove(name string) error {
	if err := e.inject(OpRemove, name); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	return e.inner.Remove(name)
}

func (e *ErrorFS) Mkdir(name string, perm fs.FileMode) error {
	if err := e.inject(OpCreate, name); err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return e.inner.Mkdir(name, perm)
}

func (e *ErrorFS) MkdirAll(name string, perm fs.FileMode) error {
	if st, err := e.inner.Stat(name); err == nil && st.IsDir() {
		return nil // nothing to create
	}
	if err := e.inject(OpCreate, name); err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return e.inner.MkdirAll(name, perm)
}

func (e *ErrorFS) ReadDir(name string) ([]fs.DirEntry, error) { return e.inner.ReadDir(name) }
func (e *ErrorFS) Stat(name string) (fs.FileInfo, error)      { return e.inner.Stat(name) }

func (e *ErrorFS) SyncDir(name string) error {
	if err := e.inject(OpDirSync, name); err != nil {
		return &fs.PathError{Op: "fsync", Path: name, Err: err}
	}
	return e.inner.SyncDir(name)
}

func (e *ErrorFS) Map(f File) (Mapping, error) {
	if ef, ok := f.(*errFile); ok {
		f = ef.File
	}
	return e.inner.Map(f)
}

type errFile struct {
	File
	fs *ErrorFS
}

func (f *errFile) Write(p []byte) (int, error) {
	err := f.fs.inject(OpWrite, f.Name())
	if err == nil {
		return f.File.Write(p)
	}
	n := 0
	if sw, ok := err.(*ShortWrite); ok {
		if n, _ = f.File.Write(p[:min(max(sw.N, 0), len(p))]); n == len(p) && len(p) > 0 {
			// The whole write fit: a short write of everything is a success.
			return n, nil
		}
		err = sw.Err
	}
	return n, &fs.PathError{Op: "write", Path: f.Name(), Err: err}
}

func (f *errFile) Sync() error {
	if err := f.fs.inject(OpSync, f.Name()); err != nil {
		return &fs.PathError{Op: "fsync", Path: f.Name(), Err: err}
	}
	return f.File.Sync()
}
