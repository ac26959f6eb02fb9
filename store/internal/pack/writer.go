package pack

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"slices"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/internal/vfs"
)

// Entry describes one stored object in a pack.
type Entry struct {
	ID        ID     // object ID (opaque to this package)
	Kind      uint8  // opaque
	Codec     uint8  // opaque
	Offset    uint64 // file offset of the stored bytes; the entry header is the 60 bytes before
	RawLen    uint64 // decoded size (opaque; not checked here)
	StoredLen uint64 // number of stored bytes
	CRC       uint32 // CRC-32C of the stored bytes
}

// Info describes a finished pack.
type Info struct {
	ID      ID
	Path    string
	Size    int64
	Entries []Entry
}

// bufSize batches the 60-byte entry headers and small metadata objects into
// few write calls; chunks larger than this go straight to the file.
const bufSize = 256 << 10

// Writer appends entries to a temporary file and publishes it with Finish.
// It is not safe for concurrent use.
//
// Errors are sticky: after any failure every method returns the first
// error joined with ErrBroken, because a pack missing some bytes must never
// be published. Always call Abort (for example deferred) when not calling
// Finish; Abort after a successful Finish does nothing.
type Writer struct {
	dir     string
	steps   durableSteps
	f       tempFile
	name    string // temp file path, for errors and cleanup
	bw      *bufio.Writer
	off     int64 // logical size written so far, buffered bytes included
	entries []Entry
	table   []byte // table rows, built as entries are added
	err     error  // first failure; see fail

	closed   bool // f has been closed
	removed  bool // the temp file has been removed (or renamed away)
	finished bool // Finish succeeded
	aborted  bool
}

// NewWriter creates a temporary pack file DIR/tmp-*.pack on the real
// filesystem and writes the file header to it.
func NewWriter(dir string) (*Writer, error) { return newWriter(osSteps(), dir) }

// NewWriterFS is NewWriter on fsys: every file operation of the Writer,
// including the durability steps, goes through it.
func NewWriterFS(fsys vfs.FS, dir string) (*Writer, error) { return newWriter(fsSteps(fsys), dir) }

func newWriter(steps durableSteps, dir string) (*Writer, error) {
	f, err := steps.createTemp(dir, TempPrefix+"*"+Ext)
	if err != nil {
		return nil, fmt.Errorf("pack: create temporary pack in %s: %w", dir, classify(err))
	}
	w := &Writer{dir: dir, steps: steps, f: f, name: f.Name(), bw: bufio.NewWriterSize(f, bufSize)}
	h := encodeHeader()
	if err := w.write(h[:]); err != nil {
		return nil, errors.Join(err, w.Abort())
	}
	return w, nil
}

// Size returns the number of bytes written so far, header included (the
// size the file would have without its table and footer).
func (w *Writer) Size() int64 { return w.off }

// Len returns the number of entries added.
func (w *Writer) Len() int { return len(w.entries) }

// Name returns the path of the temporary file.
func (w *Writer) Name() string { return w.name }

// Add appends one entry: a 60-byte entry header and the stored bytes. It
// does not retain stored. Add does not check for duplicate object IDs; the
// store deduplicates before writing, and a duplicate is harmless to readers.
func (w *Writer) Add(id ID, kind, codec uint8, rawLen uint64, stored []byte) (Entry, error) {
	if err := w.usable(); err != nil {
		return Entry{}, err
	}
	n := uint64(len(stored))
	if n > MaxStoredLen {
		return Entry{}, fmt.Errorf("pack %s: add object %s: %d stored bytes (limit %d): %w", w.name, id, n, MaxStoredLen, ErrTooLarge)
	}
	if uint64(w.off) > math.MaxInt64-entryHeaderSize-n {
		return Entry{}, fmt.Errorf("pack %s: add object %s: pack would exceed the maximum file size: %w", w.name, id, ErrTooLarge)
	}
	e := Entry{
		ID:        id,
		Kind:      kind,
		Codec:     codec,
		Offset:    uint64(w.off) + entryHeaderSize,
		RawLen:    rawLen,
		StoredLen: n,
		CRC:       checksum(stored),
	}
	var h [entryHeaderSize]byte
	putEntryHeader(h[:], e)
	if err := w.write(h[:]); err != nil {
		return Entry{}, err
	}
	if err := w.write(stored); err != nil {
		return Entry{}, err
	}
	w.entries = append(w.entries, e)
	w.table = appendTableRow(w.table, e)
	return e, nil
}

// write appends b through the buffer. bufio.Writer passes large b straight
// to the file once its buffer is empty, so a chunk is not copied.
func (w *Writer) write(b []byte) error {
	if _, err := w.bw.Write(b); err != nil {
		return w.fail(fmt.Errorf("pack %s: write at offset %d: %w", w.name, w.off, classify(err)))
	}
	w.off += int64(len(b))
	return nil
}

// fail records the first error and returns it joined with ErrBroken.
func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return errors.Join(w.err, ErrBroken)
}

func (w *Writer) usable() error {
	if w.err != nil {
		return errors.Join(w.err, ErrBroken)
	}
	if w.finished || w.aborted {
		return fmt.Errorf("pack %s: %w", w.name, ErrClosed)
	}
	return nil
}

// Finish writes the table and footer, makes the file durable, checks what
// was written, and publishes it as DIR/xx/<id>.pack; see the package
// documentation for the exact order. When Finish returns nil the pack
// survives a crash or power loss, so index entries may refer to it.
//
// If a pack of that name already exists it has the same entries by
// construction: Finish checks its table, removes the temporary file and
// returns the existing pack (which is never rewritten).
//
// On failure Finish removes the temporary file and the Writer is broken. If
// only a directory fsync after the rename failed, the published pack stays;
// nothing refers to it, so gc reclaims it like any unreferenced pack.
func (w *Writer) Finish() (Info, error) {
	if err := w.usable(); err != nil {
		return Info{}, err
	}
	if len(w.entries) == 0 {
		return Info{}, fmt.Errorf("pack %s: finish: %w", w.name, ErrEmpty)
	}
	info, err := w.finish()
	if err != nil {
		err = w.fail(err)
		return Info{}, errors.Join(err, w.cleanup())
	}
	w.finished = true
	return info, nil
}

func (w *Writer) finish() (Info, error) {
	trailerOff := w.off
	id := packID(w.table)
	footer := encodeFooter(trailerOff, uint64(len(w.entries)), w.table)
	if err := w.write(w.table); err != nil {
		return Info{}, err
	}
	if err := w.write(footer[:]); err != nil {
		return Info{}, err
	}
	if err := w.bw.Flush(); err != nil {
		return Info{}, fmt.Errorf("pack %s: flush: %w", w.name, classify(err))
	}
	// Read-only before the fsync, so the mode change is durable too: a
	// published pack is immutable and nothing should open it for writing.
	// Best effort, as in restic: some filesystems (CIFS, some FUSE) refuse
	// chmod, and the pack is no less valid for it.
	_ = w.f.Chmod(0o444)
	failpoint.Hit(failpoint.PackBeforeSync)
	if err := w.f.Sync(); err != nil {
		return Info{}, fmt.Errorf("pack %s: fsync: %w", w.name, classify(err))
	}
	w.closed = true
	if err := w.f.Close(); err != nil {
		return Info{}, fmt.Errorf("pack %s: close: %w", w.name, classify(err))
	}
	if err := w.verifyWritten(id, trailerOff); err != nil {
		return Info{}, err
	}

	final := PathFor(w.dir, id)
	sub := filepath.Dir(final)
	if err := w.steps.fsys.Mkdir(sub, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return Info{}, fmt.Errorf("pack %s: create directory for %s: %w", w.name, final, classify(err))
	}
	if _, err := w.steps.fsys.Stat(final); err == nil {
		return w.useExisting(final, id)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("pack %s: stat %s: %w", w.name, final, err)
	}
	// Another writer of the same store could publish the same pack between
	// the Lstat and here; rename then replaces it with identical bytes,
	// which readers cannot tell apart, so no lock is needed for that.
	failpoint.Hit(failpoint.PackBeforeRename)
	if err := w.steps.rename(w.name, final); err != nil {
		return Info{}, fmt.Errorf("pack %s: rename to %s: %w", w.name, final, classify(err))
	}
	w.removed = true
	failpoint.Hit(failpoint.PackBeforeDirSync)
	if err := w.syncDirs(sub, final); err != nil {
		return Info{}, err
	}
	return Info{ID: id, Path: final, Size: w.off, Entries: slices.Clone(w.entries)}, nil
}

// syncDirs makes the rename durable: sub holds the new name, and w.dir
// holds sub, which may have just been created.
func (w *Writer) syncDirs(sub, final string) error {
	if err := w.steps.syncDir(sub); err != nil {
		return fmt.Errorf("pack %s: fsync directory %s: %w", final, sub, err)
	}
	if err := w.steps.syncDir(w.dir); err != nil {
		return fmt.Errorf("pack %s: fsync directory %s: %w", final, w.dir, err)
	}
	return nil
}

// useExisting returns the already published pack final after checking that
// it really is this pack, and drops the temporary file. A damaged existing
// pack is reported rather than replaced, because a published pack is never
// modified; repair decides what to do with it.
func (w *Writer) useExisting(final string, id ID) (Info, error) {
	r, err := OpenFS(w.steps.fsys, final)
	if err != nil {
		return Info{}, fmt.Errorf("pack %s: a pack named %s already exists but does not open: %w", w.name, final, err)
	}
	info := r.Info()
	if err := r.Close(); err != nil {
		return Info{}, fmt.Errorf("pack %s: close existing %s: %w", w.name, final, err)
	}
	if info.ID != id || !slices.Equal(info.Entries, w.entries) {
		return Info{}, corruptf(final, 0, ID{}, "existing pack differs from the pack %s being published with the same name", w.name)
	}
	if err := w.steps.fsys.Remove(w.name); err != nil {
		return Info{}, fmt.Errorf("pack %s: remove duplicate of %s: %w", w.name, final, err)
	}
	w.removed = true
	// The existing pack may have been renamed into place by a writer that
	// crashed before its directory fsyncs; redo them before the caller
	// relies on it.
	if err := w.syncDirs(filepath.Dir(final), final); err != nil {
		return Info{}, err
	}
	return info, nil
}

// verifyWritten re-reads the closed temporary file and checks its size,
// header, footer and table against what was meant to be written. It catches
// bugs and bad RAM or hardware between here and the page cache before the
// pack is published (restic's verifyHeader).
func (w *Writer) verifyWritten(id ID, trailerOff int64) error {
	f, err := w.steps.fsys.Open(w.name)
	if err != nil {
		return fmt.Errorf("pack %s: reopen for verification: %w", w.name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("pack %s: stat for verification: %w", w.name, err)
	}
	if fi.Size() != w.off {
		return verifyFailed(w.name, fi.Size(), fmt.Sprintf("file has %d bytes, wrote %d", fi.Size(), w.off))
	}
	var h [headerSize]byte
	if err := readFullAt(f, w.name, h[:], 0); err != nil {
		return err
	}
	if _, err := checkHeader(w.name, h[:]); err != nil {
		return verifyFailed(w.name, 0, err.Error())
	}
	tr, err := readTrailer(f, w.name, fi.Size())
	if err != nil {
		return verifyFailed(w.name, trailerOff, err.Error())
	}
	if tr.id != id || tr.offset != trailerOff || !slices.Equal(tr.entries, w.entries) {
		return verifyFailed(w.name, trailerOff, "table read back differs from the table written")
	}
	return nil
}

// verifyFailed blames hardware or software explicitly, as restic does: the
// bytes were just written by this process, so a mismatch is never the
// user's data.
func verifyFailed(path string, off int64, detail string) *CorruptError {
	return corruptf(path, off, ID{}, "verify after write: %s; the pack was not published (faulty RAM, disk or software; please report it)", detail)
}

// Abort closes and removes the temporary file. It does nothing after a
// successful Finish, so it can be deferred unconditionally.
func (w *Writer) Abort() error {
	if w.finished {
		return nil
	}
	w.aborted = true
	return w.cleanup()
}

func (w *Writer) cleanup() error {
	var errs []error
	if !w.closed {
		w.closed = true
		if err := w.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("pack %s: close: %w", w.name, err))
		}
	}
	if !w.removed {
		if err := w.steps.fsys.Remove(w.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("pack %s: remove temporary file: %w", w.name, err))
		} else {
			w.removed = true
		}
	}
	return errors.Join(errs...)
}
