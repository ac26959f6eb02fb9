// Package fsutil holds heft's durable-publish steps, shared by the pack writer, the
// store's small files (refs, config, rebuilt index) and the hub's token file.
package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/heft-dev/heft/internal/failpoint"
)

// SyncDir fsyncs a directory so that entries created or renamed in it survive power
// loss; without it a renamed file may vanish after a crash even though its data was
// synced (pebble's memfs_crashable case). Filesystems that cannot fsync a directory
// (EINVAL, ENOTSUP) are accepted as restic's local backend does: there is nothing
// stronger to do there.
func SyncDir(dir string) error {
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

// ErrNotDurable marks a write that is visible (renamed into place) but whose
// directory could not be fsynced, so it may not survive a crash.
var ErrNotDurable = errors.New("written, but its durability could not be confirmed")

// WriteFileAtomic publishes data at path the one safe way: a temp file in the same
// directory, write, fsync, close, rename, fsync the directory. Readers see the old
// content or the new, never a torn file, and after a crash the rename is durable.
func WriteFileAtomic(path string, data []byte) error {
	return WriteFileAtomicPerm(path, data, 0o600)
}

// WriteFileAtomicPerm is WriteFileAtomic with the new file's permissions (set
// before any byte is written, so a secret is never readable by others).
func WriteFileAtomicPerm(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = failpoint.Fault(failpoint.FaultWrite); err != nil {
		return &os.PathError{Op: "write", Path: tmp, Err: err}
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = failpoint.Fault(failpoint.FaultSync); err != nil {
		return &os.PathError{Op: "fsync", Path: tmp, Err: err}
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = failpoint.Fault(failpoint.FaultRename); err != nil {
		return &os.LinkError{Op: "rename", Old: tmp, New: path, Err: err}
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	// From here on the new content is visible: a failure only leaves its
	// survival across a crash unknown.
	if err = failpoint.Fault(failpoint.FaultDirSync); err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, &os.PathError{Op: "fsync", Path: dir, Err: err})
	}
	if err = SyncDir(dir); err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	return nil
}
