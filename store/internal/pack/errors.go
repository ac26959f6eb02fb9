package pack

import (
	"errors"
	"fmt"
	"syscall"
)

// Errors of the write path.
var (
	// ErrBroken is returned, joined with the first error, by every Writer
	// method after any write, sync, verify or publish step of that Writer
	// failed: a pack with a hole in it must never be finished.
	ErrBroken = errors.New("pack writer is broken by an earlier error")

	// ErrClosed is returned by Writer methods called after Finish succeeded
	// or after Abort.
	ErrClosed = errors.New("pack writer already finished or aborted")

	// ErrEmpty is returned by Finish when no entry was added. The Writer is
	// not broken; call Abort.
	ErrEmpty = errors.New("pack has no entries")

	// ErrTooLarge is returned by Add when the stored bytes exceed
	// MaxStoredLen. Nothing is written and the Writer stays usable.
	ErrTooLarge = errors.New("stored bytes exceed the pack entry limit")

	// ErrNoSpace is returned (wrapping the OS error) when a write, sync or
	// rename failed because the filesystem is full. It is permanent:
	// retrying without freeing space cannot succeed.
	ErrNoSpace = errors.New("no space left on device")
)

// Errors of the read path.
var (
	// ErrCorrupt is matched (errors.Is) by every *CorruptError: returned when
	// a pack's bytes fail a checksum, a magic number or a structural check,
	// or when an Entry given to ReadStored does not match the pack.
	ErrCorrupt = errors.New("pack is corrupt")

	// ErrNotPack is returned when neither the header magic nor the footer
	// magic is present: the file is not a heft pack at all (as opposed to a
	// damaged one, which gives ErrCorrupt).
	ErrNotPack = errors.New("not a heft pack file")

	// ErrUnsupportedVersion is returned when the header is intact (its CRC
	// matches) but names a format version this build does not know.
	ErrUnsupportedVersion = errors.New("unsupported pack format version")

	// ErrInvalidID is returned by ParseID and ParseName for a string that is
	// not 64 lower-case hex digits (or not such a name plus ".pack").
	ErrInvalidID = errors.New("invalid pack id")
)

// CorruptError describes damage found in a pack file. It matches ErrCorrupt
// with errors.Is, so callers need not know the type.
type CorruptError struct {
	Path   string // pack file
	Offset int64  // byte offset where the damage was found
	ID     ID     // object concerned; zero if the damage is not in an entry
	Reason string // what check failed
	Err    error  // underlying error, if any (for example io.ErrUnexpectedEOF)
}

func (e *CorruptError) Error() string {
	s := fmt.Sprintf("pack %s: corrupt at offset %d", e.Path, e.Offset)
	if !e.ID.IsZero() {
		s += " (object " + e.ID.String() + ")"
	}
	s += ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrCorrupt) true for every CorruptError.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func (e *CorruptError) Unwrap() error { return e.Err }

func corruptf(path string, off int64, id ID, format string, args ...any) *CorruptError {
	return &CorruptError{Path: path, Offset: off, ID: id, Reason: fmt.Sprintf(format, args...)}
}

// classify marks a full filesystem as permanent at the source (restic does
// the same in its local backend), so callers need not inspect errno values.
func classify(err error) error {
	if err != nil && errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}
