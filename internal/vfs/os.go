package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// OS is the real filesystem. Its Files are *os.File, and Map maps them read-only
// with mmap.
var OS FS = osFS{}

type osFS struct{}

func (osFS) Open(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err // not f: a nil *os.File in an interface is not nil
	}
	return f, nil
}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (osFS) CreateTemp(dir, pattern string) (File, error) {
	if dir == "" {
		return nil, &fs.PathError{Op: "createtemp", Path: pattern, Err: errors.New("vfs: CreateTemp needs a directory")}
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (osFS) Rename(oldname, newname string) error         { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) Mkdir(name string, perm fs.FileMode) error    { return os.Mkdir(name, perm) }
func (osFS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error)   { return os.ReadDir(name) }
func (osFS) Stat(name string) (fs.FileInfo, error)        { return os.Stat(name) }
func (osFS) SyncDir(name string) error                    { return SyncDirOS(name) }
func (osFS) Map(f File) (Mapping, error)                  { return mapFile(f) }

// SyncDirOS fsyncs a directory of the real filesystem so that entries created or
// renamed in it survive power loss; without it a renamed file may vanish after a
// crash even though its data was synced (pebble's memfs_crashable case).
// Filesystems that cannot fsync a directory (EINVAL, ENOTSUP) are accepted as
// restic's local backend does: there is nothing stronger to do there.
func SyncDirOS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if err != nil && (errors.Is(err, errors.ErrUnsupported) || errors.Is(err, syscall.EINVAL)) {
		err = nil
	}
	return errors.Join(err, d.Close())
}

// osMapping is a read-only shared mmap of a whole file.
type osMapping struct{ b []byte }

func mapFile(f File) (Mapping, error) {
	of, ok := f.(*os.File)
	if !ok {
		return readMapping(f)
	}
	st, err := of.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size == 0 {
		return memMapping{}, nil
	}
	if size != int64(int(size)) {
		return nil, &fs.PathError{Op: "mmap", Path: of.Name(), Err: fmt.Errorf("file of %d bytes is too large to map", size)}
	}
	b, err := syscall.Mmap(int(of.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, &fs.PathError{Op: "mmap", Path: of.Name(), Err: err}
	}
	return &osMapping{b: b}, nil
}

func (m *osMapping) Bytes() []byte { return m.b }

var pageSize = os.Getpagesize()

func (m *osMapping) DontNeed(start, end int) {
	start = max(start, 0) / pageSize * pageSize
	end = min((end+pageSize-1)/pageSize*pageSize, len(m.b))
	if start < end {
		_ = syscall.Madvise(m.b[start:end], syscall.MADV_DONTNEED)
	}
}

func (m *osMapping) Close() error {
	if m.b == nil {
		return nil
	}
	err := syscall.Munmap(m.b)
	m.b = nil
	return err
}

// memMapping is a Mapping of bytes in memory: what FSs without mmap return.
type memMapping struct{ b []byte }

func (m memMapping) Bytes() []byte   { return m.b }
func (memMapping) DontNeed(_, _ int) {}
func (memMapping) Close() error      { return nil }

// readMapping reads the whole of f into memory.
func readMapping(f File) (Mapping, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, st.Size())
	if n, err := f.ReadAt(b, 0); n != len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, &fs.PathError{Op: "read", Path: f.Name(), Err: err}
	}
	return memMapping{b: b}, nil
}
