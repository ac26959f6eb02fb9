package store

import (
	"errors"
	"fmt"
)

// Error classes. Every error the store returns wraps at most one of these, so callers
// (the CLI's exit codes, the hub's HTTP statuses) classify with errors.Is.
var (
	// ErrInput is returned when the caller's input is malformed: a bad safetensors
	// file, an invalid ref name, a destination that is not empty.
	ErrInput = errors.New("invalid input")
	// ErrNotFound is returned when a ref, commit or path does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a ref changed between read and compare-and-swap.
	ErrConflict = errors.New("ref changed concurrently")
	// ErrIntegrity is returned when stored data is damaged or missing: a hash
	// mismatch, a checksum failure, an object the index lists but no pack holds.
	ErrIntegrity = errors.New("integrity failure")
	// ErrIndexCorrupt is returned when the bbolt index is damaged; `heft repair
	// index` rebuilds it from the packs. It wraps ErrIntegrity.
	ErrIndexCorrupt = fmt.Errorf("%w: index damaged (run `heft repair index`)", ErrIntegrity)
	// ErrBusy is returned when another process holds a lock the operation needs
	// for longer than the operation is willing to wait.
	ErrBusy = errors.New("store busy")
)

// IntegrityError names a damaged object and why it is damaged.
type IntegrityError struct {
	ID     ID
	Kind   Kind
	Pack   string // pack file path, when known
	Reason string
	Err    error
}

func (e *IntegrityError) Error() string {
	msg := fmt.Sprintf("damaged %s %s", e.Kind, e.ID.Short())
	if e.Pack != "" {
		msg += " in " + e.Pack
	}
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *IntegrityError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrIntegrity, e.Err}
	}
	return []error{ErrIntegrity}
}

func inputErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInput, fmt.Sprintf(format, args...))
}
