// Package objio holds the small steps every backend implementation shares:
// copying a put's source with cancellation, checking a requested range against an
// object's size, readers that stop when their context ends, the modes of a
// conditional write, and delivering a collected listing in order.
package objio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/heft-dev/heft/store/backend"
)

// ChunkSize is how much CopyFrom reads from the source per step: between two
// steps it checks ctx, so cancellation takes effect within one chunk.
const ChunkSize = 1 << 20

// ErrShortSource is returned when a put's source holds fewer bytes than the size
// the caller gave.
var ErrShortSource = errors.New("source is shorter than the given size")

// CopyFrom writes bytes [0, size) of r to w, checking ctx between chunks.
func CopyFrom(ctx context.Context, w io.Writer, r io.ReaderAt, size int64) error {
	buf := make([]byte, min(size, ChunkSize))
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(buf)), size-off)
		m, err := r.ReadAt(buf[:n], off)
		if int64(m) < n {
			if err == nil || err == io.EOF {
				return fmt.Errorf("%w: %d bytes at offset %d of %d", ErrShortSource, m, off, size)
			}
			return fmt.Errorf("read source: %w", err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		off += n
	}
	return ctx.Err()
}

// CheckSize rejects a negative size before anything is written.
func CheckSize(size int64) error {
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	return nil
}

// Range resolves a Get's (off, length) against the object's size: it returns the
// number of bytes to stream, or an error wrapping io.ErrUnexpectedEOF when the
// range reaches beyond the end, or a plain error for a negative offset.
func Range(size, off, length int64) (int64, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off > size {
		return 0, fmt.Errorf("offset %d is beyond the end of the %d-byte object: %w", off, size, io.ErrUnexpectedEOF)
	}
	if length < 0 {
		return size - off, nil
	}
	if length > size-off {
		return 0, fmt.Errorf("range %d+%d is beyond the end of the %d-byte object: %w", off, length, size, io.ErrUnexpectedEOF)
	}
	return length, nil
}

// ShortRead is the error of a ReadAt that found only n of want bytes.
func ShortRead(off int64, n, want int, size int64) error {
	return fmt.Errorf("read of %d bytes at offset %d found %d (object is %d bytes): %w", want, off, n, size, io.ErrUnexpectedEOF)
}

// CtxReader is a ReadCloser whose Read fails with ctx's error once ctx is done.
type CtxReader struct {
	Ctx context.Context
	R   io.Reader
	C   io.Closer // may be nil
}

func (r *CtxReader) Read(p []byte) (int, error) {
	if err := r.Ctx.Err(); err != nil {
		return 0, err
	}
	return r.R.Read(p)
}

// Close closes C, if any.
func (r *CtxReader) Close() error {
	if r.C == nil {
		return nil
	}
	return r.C.Close()
}

// PutMode is the condition of a conditional write.
type PutMode int

const (
	PutAlways   PutMode = iota // Put
	PutIfAbsent                // PutIfAbsent: fail with ErrExists if the name is taken
	PutIfMatch                 // CompareAndSwap: fail unless the version matches
)

// Op is the mode's operation name, for errors.
func (m PutMode) Op() string {
	switch m {
	case PutIfAbsent:
		return "put-if-absent"
	case PutIfMatch:
		return "compare-and-swap"
	}
	return "put"
}

// Deliver sorts infos by name and passes them to fn in that order, for a
// backend that collects a List's result before delivering it. It stops at the
// first error of fn or once ctx is done.
func Deliver(ctx context.Context, infos []backend.ObjectInfo, fn func(backend.ObjectInfo) error) error {
	slices.SortFunc(infos, func(a, b backend.ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Start checks a call on one object before it does anything: first the name,
// then ctx.
func Start(ctx context.Context, name string) error {
	if err := backend.CheckName(name); err != nil {
		return err
	}
	return ctx.Err()
}
