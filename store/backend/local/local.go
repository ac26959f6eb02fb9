// Package local is the filesystem backend.Backend: each object is one file, at
// DIR/NAME with NAME's '/' as directory separators.
//
// Writes publish the one safe way (style.md pattern 7): a temporary file
// DIR/…/.tmp-* in the target directory, write, check the byte count, mark it
// read-only, fsync, close, rename over the name, fsync the directory and its
// parents up to DIR. A reader holds an open file, so a rename that replaces the
// object never changes what it reads.
//
// Conditional writes (PutIfAbsent, CompareAndSwap) and every other change of
// the namespace (Put's rename, Delete) take an exclusive flock on
// DIR/.heft-backend.lock for the check and the rename only, so the check and
// the change are atomic for every process that uses the same directory; the
// data is written and synced before the lock is taken. The kernel drops the
// lock of a process that dies, so a crash never leaves a stale lock. flock
// must work on DIR's filesystem: it does on local filesystems; NFS clients
// emulate it with POSIX locks, whose reliability depends on the server.
//
// Versions are random tokens stored with the object in an extended attribute
// (user.heft.version), set on the temporary file before the rename so that
// the token and the bytes are published together; a version is therefore never
// reused (no ABA on this backend). On filesystems without user extended
// attributes, the version is a BLAKE3 hash of the content, computed while
// writing and, for Stat and CompareAndSwap, by reading the object.
//
// Listing is consistent: a returned Put or Delete is seen by every later List.
// Names beginning with '.' never occur as objects, so List skips the lock and
// temporary files, and gc-like sweeps can find abandoned temporary files by
// that prefix.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"

	"github.com/heft-dev/heft/internal/fsutil"
	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/internal/objio"
)

// Options tune a Backend. The zero value means the defaults documented per field.
type Options struct {
	// LockTimeout bounds how long a write waits for another process's lock on
	// the namespace before failing with ErrTransient. Default 60 s.
	LockTimeout time.Duration
}

// Backend stores objects as files under one directory.
type Backend struct {
	root string
	opts Options
	// lockFile is DIR/.heft-backend.lock, flocked across processes; sem
	// serialises this process's goroutines, which share the one descriptor.
	lockFile *os.File
	sem      chan struct{}
}

var _ backend.Backend = (*Backend)(nil)

const lockName = ".heft-backend.lock"

// Open opens the backend at dir, creating the directory if needed.
func Open(dir string, opts Options) (*Backend, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 60 * time.Second
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open local backend %s: %w", dir, err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("open local backend %s: %w", root, err)
	}
	f, err := os.OpenFile(filepath.Join(root, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open local backend %s: %w", root, err)
	}
	return &Backend{root: root, opts: opts, lockFile: f, sem: make(chan struct{}, 1)}, nil
}

// Dir returns the backend's directory.
func (b *Backend) Dir() string { return b.root }

func (b *Backend) path(name string) string { return filepath.Join(b.root, filepath.FromSlash(name)) }

func (b *Backend) fail(op, name string, err error) error {
	return &backend.Error{Op: op, Path: b.path(name), Err: err}
}

// lock takes the namespace lock: this process's semaphore, then the flock.
func (b *Backend) lock(ctx context.Context) (unlock func(), err error) {
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	deadline := time.Now().Add(b.opts.LockTimeout)
	delay := time.Millisecond
	fd := int(b.lockFile.Fd())
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				_ = unix.Flock(fd, unix.LOCK_UN)
				<-b.sem
			}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			<-b.sem
			return nil, fmt.Errorf("lock %s: %w", b.lockFile.Name(), err)
		}
		if time.Now().After(deadline) {
			<-b.sem
			return nil, fmt.Errorf("%w: another process held %s for %s", backend.ErrTransient, b.lockFile.Name(), b.opts.LockTimeout)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			<-b.sem
			return nil, ctx.Err()
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}

func (b *Backend) Put(ctx context.Context, name string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	return b.put(ctx, name, r, size, objio.PutAlways, "")
}

func (b *Backend) PutIfAbsent(ctx context.Context, name string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	return b.put(ctx, name, r, size, objio.PutIfAbsent, "")
}

func (b *Backend) CompareAndSwap(ctx context.Context, name, version string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	return b.put(ctx, name, r, size, objio.PutIfMatch, version)
}

func (b *Backend) put(ctx context.Context, name string, r io.ReaderAt, size int64, mode objio.PutMode, want string) (info backend.ObjectInfo, err error) {
	op := mode.Op()
	if err := backend.CheckName(name); err != nil {
		return info, b.fail(op, name, err)
	}
	if err := objio.CheckSize(size); err != nil {
		return info, b.fail(op, name, err)
	}
	if err := ctx.Err(); err != nil {
		return info, b.fail(op, name, err)
	}
	path := b.path(name)
	dir := filepath.Dir(path)
	f, err := b.createTemp(dir)
	if err != nil {
		return info, b.fail(op, name, err)
	}
	tmp := f.Name()
	published := false
	defer func() {
		if !published {
			_ = f.Close() // may already be closed; the error is of no interest then
			_ = os.Remove(tmp)
		}
	}()

	version, hashMode := newVersion(), false
	if err := setVersion(f, version); err != nil {
		hashMode = true // no user xattrs here: the version is the content hash
	}
	var w io.Writer = f
	h := blake3.New()
	if hashMode {
		w = io.MultiWriter(f, h)
	}
	if err := objio.CopyFrom(ctx, w, r, size); err != nil {
		return info, b.fail(op, name, err)
	}
	if hashMode {
		version = hashVersion(h)
	}
	st, err := f.Stat()
	if err != nil {
		return info, b.fail(op, name, err)
	}
	if st.Size() != size {
		return info, b.fail(op, name, fmt.Errorf("wrote %d bytes of %d to %s", st.Size(), size, tmp))
	}
	if err := f.Chmod(0o444); err != nil {
		return info, b.fail(op, name, err)
	}
	if err := f.Sync(); err != nil {
		return info, b.fail(op, name, err)
	}
	if err := f.Close(); err != nil {
		return info, b.fail(op, name, err)
	}

	unlock, err := b.lock(ctx)
	if err != nil {
		return info, b.fail(op, name, err)
	}
	err = b.publish(ctx, tmp, path, mode, want)
	unlock()
	if err != nil {
		return info, b.fail(op, name, err)
	}
	published = true
	if err := b.syncDirs(dir); err != nil {
		return info, b.fail(op, name, fmt.Errorf("object published but its directory not synced: %w", err))
	}
	return backend.ObjectInfo{Name: name, Size: size, Version: version, ModTime: st.ModTime()}, nil
}

// publish renames tmp to path once the mode's condition holds. It runs under the
// namespace lock.
func (b *Backend) publish(ctx context.Context, tmp, path string, mode objio.PutMode, want string) error {
	// The last moment a cancellation can stop the write.
	if err := ctx.Err(); err != nil {
		return err
	}
	switch mode {
	case objio.PutIfAbsent:
		st, err := os.Lstat(path)
		switch {
		case err == nil && st.Mode().IsRegular():
			return backend.ErrExists
		case err == nil:
			return fmt.Errorf("%w: a directory of other objects is in the way", backend.ErrInvalidName)
		case errors.Is(err, syscall.ENOTDIR):
			return fmt.Errorf("%w: a parent is an object, not a directory", backend.ErrInvalidName)
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	case objio.PutIfMatch:
		cur, err := b.currentVersion(path)
		if err != nil {
			return err
		}
		if cur != want {
			return fmt.Errorf("%w: version is %s, expected %s", backend.ErrPreconditionFailed, cur, want)
		}
	}
	err := os.Rename(tmp, path)
	if errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY) {
		return fmt.Errorf("%w: another object's directory or file is in the way: %w", backend.ErrInvalidName, err)
	}
	return err
}

// currentVersion returns the version of the object at path, for
// CompareAndSwap; a missing object fails the precondition.
func (b *Backend) currentVersion(path string) (string, error) {
	f, st, err := openObject(path)
	if errors.Is(err, backend.ErrNotFound) {
		return "", fmt.Errorf("%w: %w", backend.ErrPreconditionFailed, backend.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	return readVersion(f, st.Size())
}

// createTemp makes the temporary file in dir, creating dir first. A concurrent
// Delete may remove an empty dir between the two steps; that is retried.
func (b *Backend) createTemp(dir string) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		err := os.MkdirAll(dir, 0o755)
		if err == nil {
			var f *os.File
			f, err = os.CreateTemp(dir, ".tmp-*")
			if err == nil {
				return f, nil
			}
		}
		if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("%w: a parent is an object, not a directory: %w", backend.ErrInvalidName, err)
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 10 {
			return nil, err
		}
	}
}

// syncDirs fsyncs dir and every directory above it up to the root: dir holds
// the new entry, and any of its parents may have been created by this write.
// A directory with nothing unsynced costs little to fsync.
func (b *Backend) syncDirs(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		if err := fsutil.SyncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if d == b.root || len(d) <= len(b.root) {
			return nil
		}
	}
}

// openObject opens the object file at path. A missing file, or a directory in
// its place, is ErrNotFound.
func openObject(path string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, nil, backend.ErrNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		_ = f.Close()
		return nil, nil, backend.ErrNotFound
	}
	return f, st, nil
}

func (b *Backend) open(ctx context.Context, op, name string) (*os.File, os.FileInfo, error) {
	if err := objio.Start(ctx, name); err != nil {
		return nil, nil, b.fail(op, name, err)
	}
	f, st, err := openObject(b.path(name))
	if err != nil {
		return nil, nil, b.fail(op, name, err)
	}
	return f, st, nil
}

func (b *Backend) Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, backend.ObjectInfo, error) {
	f, st, err := b.open(ctx, "get", name)
	if err != nil {
		return nil, backend.ObjectInfo{}, err
	}
	n, err := objio.Range(st.Size(), off, length)
	if err == nil {
		var info backend.ObjectInfo
		info, err = objectInfo(name, f, st)
		if err == nil {
			return &objio.CtxReader{Ctx: ctx, R: io.NewSectionReader(f, off, n), C: f}, info, nil
		}
	}
	_ = f.Close()
	return nil, backend.ObjectInfo{}, b.fail("get", name, err)
}

func (b *Backend) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	f, st, err := b.open(ctx, "read", name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if off < 0 {
		return 0, b.fail("read", name, fmt.Errorf("negative offset %d", off))
	}
	n, err := f.ReadAt(p, off)
	if err == io.EOF || (err == nil && n < len(p)) || off > st.Size() {
		return n, b.fail("read", name, objio.ShortRead(off, n, len(p), st.Size()))
	}
	if err != nil {
		return n, b.fail("read", name, err)
	}
	return n, nil
}

func (b *Backend) Stat(ctx context.Context, name string) (backend.ObjectInfo, error) {
	f, st, err := b.open(ctx, "stat", name)
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	defer f.Close()
	info, err := objectInfo(name, f, st)
	if err != nil {
		return backend.ObjectInfo{}, b.fail("stat", name, err)
	}
	return info, nil
}

func objectInfo(name string, f *os.File, st os.FileInfo) (backend.ObjectInfo, error) {
	v, err := readVersion(f, st.Size())
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	return backend.ObjectInfo{Name: name, Size: st.Size(), Version: v, ModTime: st.ModTime()}, nil
}

func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if err := backend.CheckPrefix(prefix); err != nil {
		return b.fail("list", prefix, err)
	}
	if err := ctx.Err(); err != nil {
		return b.fail("list", prefix, err)
	}
	// Walk only the directory the prefix's complete segments name.
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i]
	}
	var infos []backend.ObjectInfo
	err := filepath.WalkDir(b.path(base), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				return nil // vanished while walking, or no such directory
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		rel, err := filepath.Rel(b.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() && p != b.root {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			// Descend only where names can still match the prefix.
			if name != "." && !strings.HasPrefix(name+"/", prefix) && !strings.HasPrefix(prefix, name+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(name, prefix) {
			return nil
		}
		st, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		infos = append(infos, backend.ObjectInfo{Name: name, Size: st.Size(), ModTime: st.ModTime()})
		return nil
	})
	if err != nil {
		return b.fail("list", prefix, err)
	}
	if err := objio.Deliver(ctx, infos, fn); err != nil {
		return b.fail("list", prefix, err)
	}
	return nil
}

func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := objio.Start(ctx, name); err != nil {
		return b.fail("delete", name, err)
	}
	path := b.path(name)
	unlock, err := b.lock(ctx)
	if err != nil {
		return b.fail("delete", name, err)
	}
	synced, err := b.remove(path)
	unlock()
	if err != nil {
		return b.fail("delete", name, err)
	}
	if synced == "" {
		return nil
	}
	if err := fsutil.SyncDir(synced); err != nil {
		return b.fail("delete", name, fmt.Errorf("object deleted but its directory not synced: %w", err))
	}
	return nil
}

// remove unlinks the object file at path and then the directories it leaves
// empty, under the namespace lock. It returns the directory whose entries
// changed last, to fsync, or "" when there was no object.
func (b *Backend) remove(path string) (string, error) {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || (err == nil && !st.Mode().IsRegular()) {
		return "", nil // no such object: nothing to do
	}
	if err != nil {
		return "", err
	}
	if err := syscall.Unlink(path); err != nil && !errors.Is(err, syscall.ENOENT) {
		return "", err
	}
	dir := filepath.Dir(path)
	for dir != b.root && len(dir) > len(b.root) {
		if syscall.Rmdir(dir) != nil {
			break // not empty (another object, or a write's temporary file)
		}
		dir = filepath.Dir(dir)
	}
	return dir, nil
}

func (b *Backend) Properties() backend.Properties {
	return backend.Properties{Kind: "local", Location: b.root, ConsistentList: true, Connections: 4}
}

// Close releases the lock file. Objects stay on disk.
func (b *Backend) Close() error { return b.lockFile.Close() }

// newVersion returns a fresh random version token.
func newVersion() string {
	var buf [16]byte
	_, _ = rand.Read(buf[:]) // crypto/rand.Read never fails on supported platforms
	return "r-" + hex.EncodeToString(buf[:])
}

func hashVersion(h *blake3.Hasher) string {
	return "b3-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// readVersion returns the version stored with the open object f, or, when it
// has none (a filesystem without user xattrs, a file written by another tool),
// the hash of its content.
func readVersion(f *os.File, size int64) (string, error) {
	v, err := getVersion(f)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, errNoVersion) {
		return "", err
	}
	h := blake3.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return "", fmt.Errorf("hash %s for its version: %w", f.Name(), err)
	}
	return hashVersion(h), nil
}
