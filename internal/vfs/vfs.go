// Package vfs is the filesystem seam under the store: every file the store keeps in
// its own directory (packs, refs, config, reflog, ingest journals) is created, read,
// renamed, removed and made durable through an FS, so tests can inject I/O errors
// (ErrorFS) and simulate power loss at any operation (MemFS, in the style of
// pebble's strict memfs), not only hit crashes at random.
//
// OS is the real implementation; Default is what the store uses when given none (OS,
// or OS with HEFT_FAULT injection in a `-tags failpoints` build).
//
// # Durability contract
//
// Every implementation promises what a POSIX filesystem with the usual fsync rules
// promises, and no more; the store may rely on exactly this:
//
//   - Bytes written to a file are visible to every reader of the same FS at once,
//     but survive a crash (power loss) only up to the file's last successful Sync:
//     after a crash a file holds the content it had at its last Sync (empty if it
//     was never synced), whatever was written since.
//   - A directory entry (a file or directory created, renamed into or removed from
//     a directory) survives a crash only after a successful SyncDir of that
//     directory. A file whose data was synced but whose directory was not may
//     vanish after a crash; a removed file may come back. A new directory needs a
//     SyncDir of its parent as well.
//   - Rename atomically replaces newname (same directory tree of one FS; never
//     across filesystems): a reader sees the old entry or the new one, never
//     neither and never a mix. After a crash, which of the two names exist depends
//     on which of the two directories were synced since; both may exist, naming
//     the same content, if only the target's directory was synced.
//   - Remove of an open or mapped file leaves the open handle and the mapping
//     readable until closed (as unlinking does on POSIX).
//   - An operation that returns an error may or may not have taken effect (a
//     failed Sync leaves the durability of earlier writes unknown); callers treat
//     the affected file as not durable.
//
// Implementations are safe for concurrent use; a single File is used by one
// goroutine at a time except for ReadAt, which may be called concurrently.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File is an open file of an FS. *os.File satisfies it.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.Closer
	// Name returns the name the file was opened with (for CreateTemp, its path).
	Name() string
	Stat() (fs.FileInfo, error)
	// Sync makes the file's content durable (see the package contract); it does
	// not make the file's directory entry durable (SyncDir does).
	Sync() error
	Chmod(mode fs.FileMode) error
}

// Mapping is a read-only view of a whole file's bytes as of when it was mapped.
// The bytes must not be modified. They stay valid until Close, even if the file is
// removed meanwhile.
type Mapping interface {
	Bytes() []byte
	// DontNeed hints that bytes [start, end) will not be read again soon, so their
	// pages may leave the process's resident set (madvise DONTNEED on a real
	// mapping; nothing for in-memory data). The bytes stay readable.
	DontNeed(start, end int)
	Close() error
}

// FS is what the store needs from a filesystem. Names are paths as the os package
// takes them. Errors are *fs.PathError or *os.LinkError wrapping the cause, so
// errors.Is(err, fs.ErrNotExist), fs.ErrExist and syscall errnos work as with os.
type FS interface {
	// Open opens a file for reading.
	Open(name string) (File, error)
	// OpenFile is os.OpenFile: flag is a combination of os.O_RDONLY, O_WRONLY,
	// O_RDWR, O_CREATE, O_EXCL, O_TRUNC and O_APPEND.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// CreateTemp creates a new file in dir with a name made from pattern as
	// os.CreateTemp does ('*' replaced by a random string), opened for reading and
	// writing. dir must be given (no os.TempDir default).
	CreateTemp(dir, pattern string) (File, error)
	// Rename renames oldname to newname atomically, replacing newname if it is a
	// file (see the package contract for what survives a crash).
	Rename(oldname, newname string) error
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// Mkdir creates one directory; MkdirAll creates it and any missing parents.
	Mkdir(name string, perm fs.FileMode) error
	MkdirAll(name string, perm fs.FileMode) error
	// ReadDir lists a directory sorted by name.
	ReadDir(name string) ([]fs.DirEntry, error)
	// Stat follows no symlinks beyond what os.Stat does; in-memory FSs have none.
	Stat(name string) (fs.FileInfo, error)
	// SyncDir makes the entries of directory name durable: what was created,
	// renamed into or removed from it so far survives a crash. Filesystems that
	// cannot fsync a directory (EINVAL, ENOTSUP) count as success: there is
	// nothing stronger to do there.
	SyncDir(name string) error
	// Map returns a read-only view of the whole of f, which must come from this FS
	// (the real FS maps it with mmap: no copy on the read path).
	Map(f File) (Mapping, error)
}

// ErrNotDurable marks a write that is visible (renamed into place) but whose
// directory could not be fsynced, so it may not survive a crash.
var ErrNotDurable = errors.New("written, but its durability could not be confirmed")

// ReadFile reads a whole file, as os.ReadFile does.
func ReadFile(fsys FS, name string) ([]byte, error) {
	if fsys == OS {
		return os.ReadFile(name)
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// RemoveStaleTemps removes the temp files WriteFileAtomic(fsys, path, …) left
// when its process died between creating and renaming them. The caller must
// hold the lock that serializes the writers of path, so that no live writer
// owns one; it returns how many it removed.
func RemoveStaleTemps(fsys FS, path string) (int, error) {
	dir, prefix := filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-"
	entries, err := fsys.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), prefix) {
			if err := fsys.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// WriteFileAtomic publishes data at path the one safe way: a temp file in the same
// directory, write, fsync, close, rename, fsync the directory. Readers see the old
// content or the new, never a torn file, and after a crash the rename is durable.
// perm is set before any byte is written, so a secret is never readable by others.
// A failure after the rename (only the directory fsync) returns an error wrapping
// ErrNotDurable: the new content is visible but may not survive a crash.
func WriteFileAtomic(fsys FS, path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := fsys.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				_ = f.Close()
			}
			_ = fsys.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	n, err := f.Write(data)
	if err == nil && n != len(data) {
		err = &fs.PathError{Op: "write", Path: tmp, Err: io.ErrShortWrite}
	}
	if err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	closed = true
	if err = f.Close(); err != nil {
		return err
	}
	if err = fsys.Rename(tmp, path); err != nil {
		return err
	}
	// From here on the new content is visible: a failure only leaves its survival
	// across a crash unknown.
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	return nil
}

// WalkFunc is filepath.WalkFunc.
type WalkFunc = filepath.WalkFunc

// Walk walks the tree at root as filepath.Walk does (lexical order, fn called for
// root and everything below with Lstat-like info; fs.SkipDir and fs.SkipAll work).
func Walk(fsys FS, root string, fn WalkFunc) error {
	info, err := fsys.Stat(root)
	if err != nil {
		err = fn(root, nil, err)
	} else {
		err = walk(fsys, root, info, fn)
	}
	if err == filepath.SkipDir || err == filepath.SkipAll {
		return nil
	}
	return err
}

func walk(fsys FS, path string, info fs.FileInfo, fn WalkFunc) error {
	if !info.IsDir() {
		return fn(path, info, nil)
	}
	entries, err := fsys.ReadDir(path)
	err1 := fn(path, info, err)
	if err != nil || err1 != nil {
		return err1
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		name := filepath.Join(path, e.Name())
		fi, err := e.Info()
		if err != nil {
			if err := fn(name, fi, err); err != nil && err != filepath.SkipDir {
				return err
			}
			continue
		}
		if err := walk(fsys, name, fi, fn); err != nil {
			if !fi.IsDir() || err != filepath.SkipDir {
				return err
			}
		}
	}
	return nil
}
