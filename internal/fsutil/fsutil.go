// Package fsutil holds heft's durable-publish steps on the real filesystem, for
// callers outside the store (the hub's token file, the object-storage backend's
// local implementation). The store itself goes through internal/vfs, which these
// delegate to.
package fsutil

import (
	"os"

	"github.com/heft-dev/heft/internal/vfs"
)

// SyncDir fsyncs a directory so that entries created or renamed in it survive power
// loss; without it a renamed file may vanish after a crash even though its data was
// synced (pebble's memfs_crashable case). Filesystems that cannot fsync a directory
// (EINVAL, ENOTSUP) are accepted as restic's local backend does: there is nothing
// stronger to do there.
func SyncDir(dir string) error { return vfs.SyncDirOS(dir) }

// ErrNotDurable marks a write that is visible (renamed into place) but whose
// directory could not be fsynced, so it may not survive a crash.
var ErrNotDurable = vfs.ErrNotDurable

// WriteFileAtomic publishes data at path the one safe way: a temp file in the same
// directory, write, fsync, close, rename, fsync the directory. Readers see the old
// content or the new, never a torn file, and after a crash the rename is durable.
func WriteFileAtomic(path string, data []byte) error {
	return WriteFileAtomicPerm(path, data, 0o600)
}

// WriteFileAtomicPerm is WriteFileAtomic with the new file's permissions (set
// before any byte is written, so a secret is never readable by others). It goes
// through vfs.Default, so a `-tags failpoints` build injects HEFT_FAULT here too.
func WriteFileAtomicPerm(path string, data []byte, perm os.FileMode) error {
	return vfs.WriteFileAtomic(vfs.Default, path, data, perm)
}
