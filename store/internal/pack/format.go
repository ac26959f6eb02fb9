package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/zeebo/blake3"
)

// Version is the pack format version this package writes and reads.
const Version = 1

// MaxStoredLen bounds the stored bytes of one entry. Chunks are a few MiB;
// the bound exists so that a damaged or hostile length (in a pack or in an
// index entry) cannot make a reader allocate more than this for one read.
const MaxStoredLen = 1 << 30

// Sizes of the fixed-size parts; doc.go documents every byte.
const (
	headerSize      = 24
	entryHeaderSize = 60
	tableRowSize    = 64
	footerSize      = 32

	// minFileSize is a pack with no entries: header, empty table, footer.
	minFileSize = headerSize + footerSize
	// firstDataOffset is where the stored bytes of the first entry start.
	firstDataOffset = headerSize + entryHeaderSize
	// minEntryCost is what one entry adds to the file at least; it bounds
	// the entry count a footer may claim for a file of a given size.
	minEntryCost = entryHeaderSize + tableRowSize
)

var (
	headerMagic = [8]byte{'H', 'E', 'F', 'T', 'P', 'A', 'C', 'K'}
	footerMagic = [8]byte{'H', 'E', 'F', 'T', 'P', 'E', 'N', 'D'}
)

// castagnoli selects the CRC-32C polynomial, which Go computes with the
// SSE4.2 / ARMv8 CRC instructions: ~tens of GB/s, so checksumming a chunk
// costs far less than writing it.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

var le = binary.LittleEndian

func encodeHeader() [headerSize]byte {
	var h [headerSize]byte
	copy(h[0:8], headerMagic[:])
	le.PutUint32(h[8:12], Version)
	le.PutUint32(h[20:24], checksum(h[:20]))
	return h
}

// headerStatus is what checkHeader found; Scan keeps going on a damaged
// header, Open does not.
type headerStatus int

const (
	headerOK         headerStatus = iota
	headerBadMagic                // magic missing: damaged, or not a pack at all
	headerDamaged                 // magic present, CRC or reserved bytes wrong
	headerNewVersion              // intact header of an unknown version
	headerTruncated               // file shorter than the header, starting like a pack
	headerNotPack                 // neither magic present: not a pack at all
)

// readHeader reads and checks the header of a file of the given size. It
// tells a damaged pack from a file that is not a pack: a missing header
// magic is ErrNotPack unless the footer magic is there, and a file shorter
// than the header is ErrNotPack unless it starts like one.
func readHeader(f io.ReaderAt, path string, size int64) (headerStatus, error) {
	var h [headerSize]byte
	n := int(min(size, headerSize))
	if err := readFullAt(f, path, h[:n], 0); err != nil {
		return headerTruncated, err
	}
	if n < headerSize {
		if !bytes.HasPrefix(headerMagic[:], h[:min(n, len(headerMagic))]) {
			return headerNotPack, fmt.Errorf("pack %s: %w", path, ErrNotPack)
		}
		return headerTruncated, corruptf(path, size, ID{}, "file of %d bytes is truncated inside the header (%d bytes)", size, headerSize)
	}
	st, err := checkHeader(path, h[:])
	if st == headerBadMagic && !hasFooterMagic(f, size) {
		return headerNotPack, fmt.Errorf("pack %s: %w", path, ErrNotPack)
	}
	return st, err
}

// hasFooterMagic tells a damaged pack (footer magic still there) from a
// file that is not a pack at all.
func hasFooterMagic(f io.ReaderAt, size int64) bool {
	if size < footerSize {
		return false
	}
	var m [8]byte
	n, _ := f.ReadAt(m[:], size-8)
	return n == len(m) && m == footerMagic
}

func checkHeader(path string, h []byte) (headerStatus, error) {
	if [8]byte(h[0:8]) != headerMagic {
		return headerBadMagic, corruptf(path, 0, ID{}, "header magic %q is not %q", h[0:8], headerMagic[:])
	}
	if want, got := le.Uint32(h[20:24]), checksum(h[:20]); want != got {
		return headerDamaged, corruptf(path, 20, ID{}, "header CRC mismatch (stored %08x, computed %08x)", want, got)
	}
	if v := le.Uint32(h[8:12]); v != Version {
		return headerNewVersion, fmt.Errorf("pack %s: format version %d (this build reads %d): %w", path, v, Version, ErrUnsupportedVersion)
	}
	if le.Uint64(h[12:20]) != 0 {
		return headerDamaged, corruptf(path, 12, ID{}, "reserved header bytes are not zero")
	}
	return headerOK, nil
}

func putEntryHeader(h []byte, e Entry) {
	_ = h[entryHeaderSize-1]
	copy(h[0:32], e.ID[:])
	h[32] = e.Kind
	h[33] = e.Codec
	h[34], h[35] = 0, 0
	le.PutUint64(h[36:44], e.RawLen)
	le.PutUint64(h[44:52], e.StoredLen)
	le.PutUint32(h[52:56], e.CRC)
	le.PutUint32(h[56:60], checksum(h[:56]))
}

// parseEntryHeader decodes the entry header at file offset off. The returned
// Entry's Offset is that of the stored bytes (off + 60).
func parseEntryHeader(path string, off int64, h []byte) (Entry, error) {
	_ = h[entryHeaderSize-1]
	if want, got := le.Uint32(h[56:60]), checksum(h[:56]); want != got {
		return Entry{}, corruptf(path, off, ID{}, "entry header CRC mismatch (stored %08x, computed %08x)", want, got)
	}
	e := Entry{
		ID:        ID(h[0:32]),
		Kind:      h[32],
		Codec:     h[33],
		Offset:    uint64(off) + entryHeaderSize,
		RawLen:    le.Uint64(h[36:44]),
		StoredLen: le.Uint64(h[44:52]),
		CRC:       le.Uint32(h[52:56]),
	}
	if h[34] != 0 || h[35] != 0 {
		return Entry{}, corruptf(path, off+34, e.ID, "reserved entry header bytes are not zero")
	}
	if e.StoredLen > MaxStoredLen {
		return Entry{}, corruptf(path, off+44, e.ID, "stored length %d exceeds the limit %d", e.StoredLen, MaxStoredLen)
	}
	return e, nil
}

func appendTableRow(b []byte, e Entry) []byte {
	var r [tableRowSize]byte
	copy(r[0:32], e.ID[:])
	r[32] = e.Kind
	r[33] = e.Codec
	le.PutUint32(r[36:40], e.CRC)
	le.PutUint64(r[40:48], e.Offset)
	le.PutUint64(r[48:56], e.RawLen)
	le.PutUint64(r[56:64], e.StoredLen)
	return append(b, r[:]...)
}

func encodeFooter(trailerOff int64, count uint64, table []byte) [footerSize]byte {
	var f [footerSize]byte
	le.PutUint64(f[0:8], uint64(trailerOff))
	le.PutUint64(f[8:16], count)
	le.PutUint32(f[16:20], checksum(table))
	le.PutUint32(f[20:24], checksum(f[:20]))
	copy(f[24:32], footerMagic[:])
	return f
}

// packID is the pack's name: BLAKE3-256 of its table bytes.
func packID(table []byte) ID { return ID(blake3.Sum256(table)) }

// trailer is a decoded, validated table.
type trailer struct {
	offset  int64 // trailer offset = end of the last entry's stored bytes
	entries []Entry
	id      ID
}

// readTrailer reads and validates the footer and table of a file of the
// given size. It allocates at most the table size, which it first bounds by
// the file size, so hostile footers cannot cause large allocations.
func readTrailer(ra io.ReaderAt, path string, size int64) (trailer, error) {
	if size < minFileSize {
		return trailer{}, corruptf(path, size, ID{}, "file of %d bytes is too short for header and footer (%d bytes)", size, minFileSize)
	}
	footerOff := size - footerSize
	var f [footerSize]byte
	if err := readFullAt(ra, path, f[:], footerOff); err != nil {
		return trailer{}, err
	}
	if [8]byte(f[24:32]) != footerMagic {
		return trailer{}, corruptf(path, footerOff+24, ID{}, "footer magic missing (truncated, or never finished)")
	}
	if want, got := le.Uint32(f[20:24]), checksum(f[:20]); want != got {
		return trailer{}, corruptf(path, footerOff+20, ID{}, "footer CRC mismatch (stored %08x, computed %08x)", want, got)
	}
	toff, count := le.Uint64(f[0:8]), le.Uint64(f[8:16])
	// Bound count before any arithmetic that could overflow or allocate.
	if maxCount := uint64(size-minFileSize) / minEntryCost; count > maxCount {
		return trailer{}, corruptf(path, footerOff+8, ID{}, "entry count %d impossible in a file of %d bytes (at most %d)", count, size, maxCount)
	}
	tableLen := count * tableRowSize
	if want := uint64(footerOff) - tableLen; toff != want {
		return trailer{}, corruptf(path, footerOff, ID{}, "trailer offset %d disagrees with file size %d and entry count %d (want %d)", toff, size, count, want)
	}
	table := make([]byte, tableLen)
	if err := readFullAt(ra, path, table, int64(toff)); err != nil {
		return trailer{}, err
	}
	if want, got := le.Uint32(f[16:20]), checksum(table); want != got {
		return trailer{}, corruptf(path, int64(toff), ID{}, "table CRC mismatch (stored %08x, computed %08x)", want, got)
	}
	entries, err := parseTable(path, table, int64(toff))
	if err != nil {
		return trailer{}, err
	}
	return trailer{offset: int64(toff), entries: entries, id: packID(table)}, nil
}

// parseTable decodes table rows and requires them to describe the file
// exactly (contiguous entries from the header to the trailer offset), so a
// table with a valid CRC but crafted offsets is still rejected.
func parseTable(path string, table []byte, toff int64) ([]Entry, error) {
	entries := make([]Entry, 0, len(table)/tableRowSize)
	next := uint64(firstDataOffset)
	for i := 0; len(table) > 0; i++ {
		r := table[:tableRowSize]
		table = table[tableRowSize:]
		rowOff := toff + int64(i)*tableRowSize
		e := Entry{
			ID:        ID(r[0:32]),
			Kind:      r[32],
			Codec:     r[33],
			CRC:       le.Uint32(r[36:40]),
			Offset:    le.Uint64(r[40:48]),
			RawLen:    le.Uint64(r[48:56]),
			StoredLen: le.Uint64(r[56:64]),
		}
		switch {
		case r[34] != 0 || r[35] != 0:
			return nil, corruptf(path, rowOff+34, e.ID, "table row %d: reserved bytes are not zero", i)
		case e.Offset != next:
			return nil, corruptf(path, rowOff+40, e.ID, "table row %d: stored bytes at offset %d, want %d", i, e.Offset, next)
		case e.Offset > uint64(toff):
			return nil, corruptf(path, rowOff+40, e.ID, "table row %d: stored bytes at offset %d are past the trailer at %d", i, e.Offset, toff)
		case e.StoredLen > MaxStoredLen:
			return nil, corruptf(path, rowOff+56, e.ID, "table row %d: stored length %d exceeds the limit %d", i, e.StoredLen, MaxStoredLen)
		case e.StoredLen > uint64(toff)-e.Offset:
			return nil, corruptf(path, rowOff+56, e.ID, "table row %d: stored bytes [%d, +%d) run past the trailer at %d", i, e.Offset, e.StoredLen, toff)
		}
		entries = append(entries, e)
		next = e.Offset + e.StoredLen + entryHeaderSize
	}
	if end := next - entryHeaderSize; end != uint64(toff) {
		return nil, corruptf(path, toff, ID{}, "entries end at %d but the trailer starts at %d", end, toff)
	}
	return entries, nil
}

// readFullAt reads exactly len(b) bytes at off; a short read means the file
// is shorter than its own structure says, which is damage, not an I/O error.
func readFullAt(ra io.ReaderAt, path string, b []byte, off int64) error {
	n, err := ra.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return &CorruptError{Path: path, Offset: off + int64(n), Reason: fmt.Sprintf("truncated: read %d of %d bytes", n, len(b)), Err: io.ErrUnexpectedEOF}
	}
	return fmt.Errorf("pack %s: read %d bytes at offset %d: %w", path, len(b), off, err)
}
