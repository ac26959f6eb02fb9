//go:build failpoints

package pack

import (
	"os"

	"github.com/heft-dev/heft/internal/failpoint"
)

// In a failpoints build the seams pass every durable step through
// failpoint.Fault, so crash tests can make the N-th write, fsync, rename or
// directory fsync of a real heft process fail with ENOSPC or EIO.
func init() {
	create, rename, dirSync := createTemp, renameFile, syncDir
	createTemp = func(dir, pattern string) (tempFile, error) {
		f, err := create(dir, pattern)
		if err != nil {
			return nil, err
		}
		return faultyFile{f}, nil
	}
	renameFile = func(from, to string) error {
		if err := failpoint.Fault(failpoint.FaultRename); err != nil {
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
		}
		return rename(from, to)
	}
	syncDir = func(dir string) error {
		if err := failpoint.Fault(failpoint.FaultDirSync); err != nil {
			return &os.PathError{Op: "fsync", Path: dir, Err: err}
		}
		return dirSync(dir)
	}
}

type faultyFile struct{ tempFile }

func (f faultyFile) Write(p []byte) (int, error) {
	if err := failpoint.Fault(failpoint.FaultWrite); err != nil {
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: err}
	}
	return f.tempFile.Write(p)
}

func (f faultyFile) Sync() error {
	if err := failpoint.Fault(failpoint.FaultSync); err != nil {
		return &os.PathError{Op: "fsync", Path: f.Name(), Err: err}
	}
	return f.tempFile.Sync()
}
