package pack

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// tempFile is what the Writer needs from its temporary file. It is an
// interface so tests can inject short writes, ENOSPC and sync failures, and
// record the order of durability steps (style.md patterns 7 and 8).
type tempFile interface {
	io.Writer
	Chmod(mode os.FileMode) error
	Sync() error
	Close() error
	Name() string
}

// Seams for tests. Production code must only go through these for the
// steps that matter to durability, so a test that replaces them sees every
// step.
var (
	// createTemp creates the temporary pack file in dir (not in os.TempDir:
	// rename is only atomic within one filesystem, and gc looks for
	// leftovers in the store directory).
	createTemp = func(dir, pattern string) (tempFile, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err // not f: a nil *os.File in an interface is not nil
		}
		return f, nil
	}
	renameFile = os.Rename
	syncDir    = syncDirOS
)

// syncDirOS fsyncs a directory so that entries created or renamed in it
// survive power loss; without it a renamed pack may vanish after a crash
// even though its data was synced (pebble's memfs_crashable case).
func syncDirOS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	// Some filesystems and platforms cannot fsync a directory (EINVAL,
	// ENOTSUP). There is nothing stronger to do there; restic's local
	// backend ignores the same errors.
	if err != nil && (errors.Is(err, errors.ErrUnsupported) || errors.Is(err, syscall.EINVAL)) {
		err = nil
	}
	return errors.Join(err, d.Close())
}
