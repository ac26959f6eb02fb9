//go:build failpoints

package vfs

import (
	"path/filepath"
	"strings"

	"github.com/heft-dev/heft/internal/failpoint"
)

// In a failpoints build the default filesystem passes every durable publishing
// step through failpoint.Fault, so crash tests can make the N-th write, fsync,
// rename or directory fsync of a real heft process fail with ENOSPC or EIO
// (HEFT_FAULT=OP@N:ERR). Writes and fsyncs count only on temporary files, the ones
// being published (packs and atomically replaced small files), as before the seam.
func init() {
	Default = NewErrorFS(OS, func(op Op, path string) error {
		switch op {
		case OpWrite:
			if isTemp(path) {
				return failpoint.Fault(failpoint.FaultWrite)
			}
		case OpSync:
			if isTemp(path) {
				return failpoint.Fault(failpoint.FaultSync)
			}
		case OpRename:
			return failpoint.Fault(failpoint.FaultRename)
		case OpDirSync:
			return failpoint.Fault(failpoint.FaultDirSync)
		}
		return nil
	})
}

func isTemp(path string) bool {
	base := filepath.Base(path)
	return strings.HasPrefix(base, "tmp-") || strings.HasPrefix(base, ".tmp-")
}
