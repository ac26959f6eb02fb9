package pack

import (
	"io"
	"os"

	"github.com/heft-dev/heft/internal/vfs"
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

// Seams for this package's tests, used by NewWriter (the real filesystem):
// production code must only go through these for the steps that matter to
// durability, so a test that replaces them sees every step. NewWriterFS
// takes the same steps through its vfs.FS instead, which is how the store
// injects faults and simulates crashes (internal/vfs).
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
	syncDir    = vfs.SyncDirOS
)

// durableSteps are the durability steps of one Writer.
type durableSteps struct {
	fsys       vfs.FS
	createTemp func(dir, pattern string) (tempFile, error)
	rename     func(from, to string) error
	syncDir    func(dir string) error
}

func osSteps() durableSteps {
	return durableSteps{fsys: vfs.OS, createTemp: createTemp, rename: renameFile, syncDir: syncDir}
}

func fsSteps(fsys vfs.FS) durableSteps {
	return durableSteps{
		fsys: fsys,
		createTemp: func(dir, pattern string) (tempFile, error) {
			f, err := fsys.CreateTemp(dir, pattern)
			if err != nil {
				return nil, err
			}
			return f, nil
		},
		rename:  fsys.Rename,
		syncDir: fsys.SyncDir,
	}
}
