package pack

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/heft-dev/heft/internal/vfs"
)

// Reader reads a finished pack. Its methods are safe for concurrent use.
type Reader struct {
	f       vfs.File
	path    string
	size    int64
	trailer trailer
}

// Open opens a pack and checks its header, footer and table (magic, CRCs,
// layout), reading nothing else. A damaged pack gives an error matching
// ErrCorrupt; a file that is not a pack gives ErrNotPack. Stored bytes are
// checked by ReadStored; use Verify to check the whole file.
func Open(path string) (*Reader, error) { return OpenFS(vfs.OS, path) }

// OpenFS is Open on fsys.
func OpenFS(fsys vfs.FS, path string) (*Reader, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pack %s: open: %w", path, err)
	}
	r, err := newReader(f, path)
	if err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return r, nil
}

func newReader(f vfs.File, path string) (*Reader, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pack %s: stat: %w", path, err)
	}
	size := fi.Size()
	if _, err := readHeader(f, path, size); err != nil {
		return nil, err
	}
	tr, err := readTrailer(f, path, size)
	if err != nil {
		return nil, err
	}
	return &Reader{f: f, path: path, size: size, trailer: tr}, nil
}

// ID returns the pack ID (BLAKE3-256 of the table).
func (r *Reader) ID() ID { return r.trailer.id }

// Path returns the file the Reader was opened from.
func (r *Reader) Path() string { return r.path }

// Size returns the file size.
func (r *Reader) Size() int64 { return r.size }

// Entries returns the pack's entries in file order. The slice is a copy.
func (r *Reader) Entries() []Entry { return slices.Clone(r.trailer.entries) }

// Info returns the pack's ID, path, size and entries.
func (r *Reader) Info() Info {
	return Info{ID: r.trailer.id, Path: r.path, Size: r.size, Entries: r.Entries()}
}

// ReadStored reads the stored bytes of e into buf (grown if too small) and
// returns them after checking them against the entry header in the pack and
// the CRC-32C. e usually comes from the index, so it is validated against
// this pack's layout first. Any mismatch is a *CorruptError naming the pack,
// the offset and the object.
func (r *Reader) ReadStored(e Entry, buf []byte) ([]byte, error) {
	if e.Offset < firstDataOffset || e.Offset > uint64(r.trailer.offset) || e.StoredLen > uint64(r.trailer.offset)-e.Offset {
		return nil, corruptf(r.path, int64(min(e.Offset, math.MaxInt64)), e.ID,
			"entry [%d, +%d) is outside the entries region [%d, %d)", e.Offset, e.StoredLen, firstDataOffset, r.trailer.offset)
	}
	return ReadStoredAt(r.f, r.path, e, buf)
}

// ReadStoredAt is ReadStored for callers that cache open files; path is
// used in errors only. It reads the 60-byte entry header before the stored
// bytes and requires it to match e field by field, so an index entry that
// points at the wrong place or the wrong pack can never yield another
// object's bytes, and then checks the stored bytes' CRC-32C.
//
// The result aliases buf when cap(buf) >= e.StoredLen. Safe for concurrent
// use on the same file (it only uses ReadAt).
func ReadStoredAt(f io.ReaderAt, path string, e Entry, buf []byte) ([]byte, error) {
	if e.StoredLen > MaxStoredLen || e.Offset < firstDataOffset || e.Offset > math.MaxInt64-e.StoredLen {
		return nil, corruptf(path, int64(min(e.Offset, math.MaxInt64)), e.ID,
			"entry at offset %d with %d stored bytes is impossible in a pack", e.Offset, e.StoredLen)
	}
	hoff := int64(e.Offset) - entryHeaderSize
	var h [entryHeaderSize]byte
	if err := readFullAt(f, path, h[:], hoff); err != nil {
		return nil, withID(err, e.ID)
	}
	got, err := parseEntryHeader(path, hoff, h[:])
	if err != nil {
		return nil, withID(err, e.ID)
	}
	if got != e {
		return nil, corruptf(path, hoff, e.ID, "entry header in the pack (%s) does not match the entry asked for (%s)", fmtEntry(got), fmtEntry(e))
	}
	n := int(e.StoredLen)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if err := readFullAt(f, path, buf, int64(e.Offset)); err != nil {
		return nil, withID(err, e.ID)
	}
	if c := checksum(buf); c != e.CRC {
		return nil, corruptf(path, int64(e.Offset), e.ID, "stored bytes CRC mismatch (want %08x, got %08x)", e.CRC, c)
	}
	return buf, nil
}

// withID fills in the object ID of a CorruptError that was created without
// knowing which object was being read.
func withID(err error, id ID) error {
	var ce *CorruptError
	if errors.As(err, &ce) && ce.ID.IsZero() {
		ce.ID = id
	}
	return err
}

func fmtEntry(e Entry) string {
	return fmt.Sprintf("id %s kind %d codec %d offset %d raw %d stored %d crc %08x",
		e.ID.Str(), e.Kind, e.Codec, e.Offset, e.RawLen, e.StoredLen, e.CRC)
}

// Close closes the file.
func (r *Reader) Close() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("pack %s: close: %w", r.path, err)
	}
	return nil
}

// StoredInMap returns the stored bytes of e from m, a read-only mapping of the whole
// pack file at path, after the same checks as ReadStoredAt (the entry header must
// match e, the bytes must match their CRC-32C). The result aliases m: reading a
// mapped pack costs no copy into a buffer. A pack is never modified once published,
// so its mapping never changes under a reader.
func StoredInMap(m []byte, path string, e Entry) ([]byte, error) {
	if e.StoredLen > MaxStoredLen || e.Offset < firstDataOffset || e.Offset > math.MaxInt64-e.StoredLen ||
		e.Offset+e.StoredLen > uint64(len(m)) {
		return nil, corruptf(path, int64(min(e.Offset, math.MaxInt64)), e.ID,
			"entry at offset %d with %d stored bytes is impossible in a pack of %d bytes", e.Offset, e.StoredLen, len(m))
	}
	hoff := int64(e.Offset) - entryHeaderSize
	got, err := parseEntryHeader(path, hoff, m[hoff:e.Offset])
	if err != nil {
		return nil, withID(err, e.ID)
	}
	if got != e {
		return nil, corruptf(path, hoff, e.ID, "entry header in the pack (%s) does not match the entry asked for (%s)", fmtEntry(got), fmtEntry(e))
	}
	buf := m[e.Offset : e.Offset+e.StoredLen]
	if c := checksum(buf); c != e.CRC {
		return nil, corruptf(path, int64(e.Offset), e.ID, "stored bytes CRC mismatch (want %08x, got %08x)", e.CRC, c)
	}
	return buf, nil
}

// ReadTableAt checks the header and reads the table of a pack of the given size
// through ra (a ranged reader over a remote object, say) without reading any
// stored bytes: two small reads at the start and the end. It returns the pack's
// ID (BLAKE3 of the table) and its entries, or an error matching ErrCorrupt or
// ErrNotPack, naming path.
func ReadTableAt(ra io.ReaderAt, path string, size int64) (ID, []Entry, error) {
	if _, err := readHeader(ra, path, size); err != nil {
		return ID{}, nil, err
	}
	tr, err := readTrailer(ra, path, size)
	if err != nil {
		return ID{}, nil, err
	}
	return tr.id, tr.entries, nil
}

// ReadEntryAt is ReadStoredAt with one read of the entry's header and stored
// bytes together, for readers where each read is a request (a ranged GET of a
// remote pack). The result is a new slice.
func ReadEntryAt(ra io.ReaderAt, path string, e Entry) ([]byte, error) {
	if e.StoredLen > MaxStoredLen || e.Offset < firstDataOffset || e.Offset > math.MaxInt64-e.StoredLen {
		return nil, corruptf(path, int64(min(e.Offset, math.MaxInt64)), e.ID,
			"entry at offset %d with %d stored bytes is impossible in a pack", e.Offset, e.StoredLen)
	}
	hoff := int64(e.Offset) - entryHeaderSize
	all := make([]byte, entryHeaderSize+int(e.StoredLen))
	if err := readFullAt(ra, path, all, hoff); err != nil {
		return nil, withID(err, e.ID)
	}
	got, err := parseEntryHeader(path, hoff, all[:entryHeaderSize])
	if err != nil {
		return nil, withID(err, e.ID)
	}
	if got != e {
		return nil, corruptf(path, hoff, e.ID, "entry header in the pack (%s) does not match the entry asked for (%s)", fmtEntry(got), fmtEntry(e))
	}
	buf := all[entryHeaderSize:]
	if c := checksum(buf); c != e.CRC {
		return nil, corruptf(path, int64(e.Offset), e.ID, "stored bytes CRC mismatch (want %08x, got %08x)", e.CRC, c)
	}
	return buf, nil
}
