// Package failpoint names the durable steps of the store, so that crash tests can
// stop a real heft process exactly there and check what a restart finds.
//
// Production builds compile Hit to nothing. A binary built with `-tags failpoints`
// reads HEFT_FAILPOINT=NAME[@N] at start and, on the N-th time (default 1) the step
// NAME is reached, prints "failpoint NAME" on stderr and exits with ExitCode at once,
// skipping every deferred cleanup and unsynced write — as a crash would (the page
// cache survives, as it does when only the process dies; power loss is the
// crash-simulating filesystem's job).
package failpoint

// ExitCode is the status a process stopped at a failpoint exits with.
const ExitCode = 86

// The durable steps, in the order an import reaches them.
const (
	PackBeforeSync     = "pack-before-sync"      // pack data written, not yet fsynced
	PackBeforeRename   = "pack-before-rename"    // pack fsynced under its temp name
	PackBeforeDirSync  = "pack-before-dir-sync"  // pack renamed, directory not yet fsynced
	IndexBeforeCommit  = "index-before-commit"   // pack published, index not yet updated
	IndexAfterCommit   = "index-after-commit"    // pack indexed
	RefBeforeUpdate    = "ref-before-update"     // objects durable and indexed, ref not yet moved
	RefAfterUpdate     = "ref-after-update"      // ref moved
	GCBeforeSweep      = "gc-before-sweep"       // gc marked, nothing removed yet
	GCAfterForgetPack  = "gc-after-forget-pack"  // gc removed a pack from the index, file not yet deleted
	GCAfterRewritePack = "gc-after-rewrite-pack" // gc published a rewritten pack, old one still indexed

	// ServerBeforeRefMove: `heft serve` has received, verified and indexed every
	// object of a `heft push` (hub/remote, before the ref compare-and-swap) or of
	// a Hub commit (storehub, every uploaded object stored, before the commit is
	// written and its branch moved); the ref has not moved.
	ServerBeforeRefMove = "server-before-ref-move"
	// PullBeforeRefMove: a pull (`heft pull REMOTE REF` or `heft pull hf://...`)
	// has every object durable and indexed in the local store; the local ref has
	// not moved (the store's own ref-before-update comes after this, once the
	// ref lock is taken).
	PullBeforeRefMove = "pull-before-ref-move"
	// ExportMidWrite: `heft export` has written about half of the model's bytes
	// into the destination (outside the store); the files are incomplete.
	ExportMidWrite = "export-mid-write"
)

// All lists every failpoint.
var All = []string{PackBeforeSync, PackBeforeRename, PackBeforeDirSync, IndexBeforeCommit, IndexAfterCommit,
	RefBeforeUpdate, RefAfterUpdate, GCBeforeSweep, GCAfterForgetPack, GCAfterRewritePack,
	ServerBeforeRefMove, PullBeforeRefMove, ExportMidWrite}

// Injected faults (HEFT_FAULT=OP@N:ERR in a `-tags failpoints` build): the N-th
// filesystem operation OP of the process fails with ERR (ENOSPC or EIO) instead of
// running, as a full or failing disk would make it; later ones run normally.
const (
	FaultWrite   = "write"    // a write to a pack or a small published file
	FaultSync    = "sync"     // an fsync of such a file
	FaultRename  = "rename"   // publishing it under its final name
	FaultDirSync = "dir-sync" // fsyncing the directory after the rename
)

// Faults lists every fault point.
var Faults = []string{FaultWrite, FaultSync, FaultRename, FaultDirSync}
