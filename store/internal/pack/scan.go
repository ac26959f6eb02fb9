package pack

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/heft-dev/heft/internal/vfs"
)

// ScanMode says where Scan found a pack's entries.
type ScanMode uint8

const (
	// ScanTrailer: the footer and table were intact and list the entries.
	ScanTrailer ScanMode = iota + 1
	// ScanWalk: the footer or table was damaged or missing; the entries
	// were recovered by walking the entry headers from the start.
	ScanWalk
)

func (m ScanMode) String() string {
	switch m {
	case ScanTrailer:
		return "trailer"
	case ScanWalk:
		return "walk"
	default:
		return fmt.Sprintf("ScanMode(%d)", uint8(m))
	}
}

// ScanResult is what Scan recovered from a pack.
type ScanResult struct {
	Path    string
	Size    int64
	Mode    ScanMode
	Entries []Entry

	// ID is the pack ID in ScanTrailer mode. In ScanWalk mode it is the ID
	// a table of the recovered entries would have, which equals the ID in
	// the file name only if no entry was lost.
	ID ID

	// Complete reports whether Entries are all the entries the pack had:
	// always in ScanTrailer mode; in ScanWalk mode when the walk ended
	// where the table starts and either the table or the footer is intact
	// and confirms the recovered entries (see walkComplete).
	Complete bool

	// Damage lists what was found wrong, each wrapping a *CorruptError (so
	// errors.Is(d, ErrCorrupt)); empty for a sound pack.
	Damage []error
}

// Scan recovers the entries of a pack for index repair without reading
// stored bytes (Verify does that). It uses the table if the footer and
// table are intact, even when the header is damaged. Otherwise it walks the
// entry headers from offset 24, keeping each entry whose header CRC is valid
// and whose stored bytes lie within the file, and stops at the first one
// that is not. Damage is reported in the result; the error is only for I/O
// failures, ErrNotPack and ErrUnsupportedVersion.
func Scan(path string) (ScanResult, error) { return ScanFS(vfs.OS, path) }

// ScanFS is Scan on fsys.
func ScanFS(fsys vfs.FS, path string) (ScanResult, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return ScanResult{}, fmt.Errorf("pack %s: open: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ScanResult{}, fmt.Errorf("pack %s: stat: %w", path, err)
	}
	size := fi.Size()
	res := ScanResult{Path: path, Size: size, Mode: ScanWalk}

	switch st, herr := readHeader(f, path, size); st {
	case headerOK:
	case headerDamaged, headerBadMagic:
		res.Damage = append(res.Damage, herr) // the table may still be intact
	case headerTruncated:
		if !errors.Is(herr, ErrCorrupt) {
			return res, herr
		}
		res.Damage = append(res.Damage, herr)
		res.ID = packID(nil)
		return res, nil
	default:
		return res, herr
	}

	tr, terr := readTrailer(f, path, size)
	if terr == nil {
		res.Mode, res.ID, res.Entries, res.Complete = ScanTrailer, tr.id, tr.entries, true
		return res, nil
	}
	if !errors.Is(terr, ErrCorrupt) {
		return res, terr
	}
	res.Damage = append(res.Damage, terr)

	var (
		table []byte
		eh    [entryHeaderSize]byte
		stop  error
		pos   = int64(headerSize)
	)
	for {
		if size-pos < entryHeaderSize {
			if size > pos {
				stop = corruptf(path, pos, ID{}, "entry walk stopped: %d trailing bytes are too few for an entry header", size-pos)
			}
			break
		}
		if err := readFullAt(f, path, eh[:], pos); err != nil {
			return res, err // the size was checked, so this is an I/O error
		}
		e, err := parseEntryHeader(path, pos, eh[:])
		if err != nil {
			stop = fmt.Errorf("entry walk stopped: %w", err)
			break
		}
		if e.StoredLen > uint64(size)-e.Offset {
			stop = corruptf(path, int64(e.Offset), e.ID, "entry walk stopped: %d stored bytes declared, %d left in the file (truncated)", e.StoredLen, uint64(size)-e.Offset)
			break
		}
		res.Entries = append(res.Entries, e)
		table = appendTableRow(table, e)
		pos = int64(e.Offset + e.StoredLen)
	}
	res.ID = packID(table)
	complete, err := walkComplete(f, path, size, pos, table)
	if err != nil {
		return res, err
	}
	// A walk of an undamaged entry region always stops at the table; that
	// stop is only news when the walk cannot be shown to be complete.
	res.Complete = complete
	if !complete && stop != nil {
		res.Damage = append(res.Damage, stop)
	}
	return res, nil
}

// walkComplete reports whether an entry walk that ended at pos found every
// entry: the rest of the file must have the size of the table plus footer
// of the recovered entries, and either the table bytes there are exactly
// that table (so only the footer is damaged) or the footer is intact and
// names pos and that entry count (so only the table is damaged). File size
// alone is not enough: a truncated file can have that size by chance.
func walkComplete(f io.ReaderAt, path string, size, pos int64, table []byte) (bool, error) {
	if size-pos != int64(len(table))+footerSize {
		return false, nil
	}
	rest := make([]byte, size-pos) // bounded by the table already in memory
	if err := readFullAt(f, path, rest, pos); err != nil {
		return false, err
	}
	// With no entries the table comparison is vacuous; only a footer can
	// then confirm that the pack is empty.
	if len(table) > 0 && bytes.Equal(rest[:len(table)], table) {
		return true, nil
	}
	ft := rest[len(table):]
	return [8]byte(ft[24:32]) == footerMagic &&
		le.Uint32(ft[20:24]) == checksum(ft[:20]) &&
		le.Uint64(ft[0:8]) == uint64(pos) &&
		le.Uint64(ft[8:16]) == uint64(len(table)/tableRowSize), nil
}

// maxFindings caps the damage Verify reports, so a pack of garbage does not
// produce an unbounded error.
const maxFindings = 32

// verifyBufSize is the read-ahead of Verify's sequential pass.
const verifyBufSize = 1 << 20

// Verify fully checks a pack: the header; every entry header's CRC and
// every entry's stored-bytes CRC, in one sequential pass; the footer and the
// table CRC; and that the table agrees with the entry headers field by
// field. It returns nil for a sound pack, otherwise the findings joined
// (each a *CorruptError, so errors.Is(err, ErrCorrupt)), or ErrNotPack,
// ErrUnsupportedVersion, or an I/O error.
func Verify(path string) error { return VerifyFS(vfs.OS, path) }

// VerifyFS is Verify on fsys.
func VerifyFS(fsys vfs.FS, path string) error {
	f, err := fsys.Open(path)
	if err != nil {
		return fmt.Errorf("pack %s: open: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("pack %s: stat: %w", path, err)
	}
	size := fi.Size()
	var errs findings
	switch st, herr := readHeader(f, path, size); st {
	case headerOK:
	case headerDamaged, headerBadMagic:
		errs.add(herr) // keep going: the rest can still be checked
	default:
		return herr
	}

	tr, terr := readTrailer(f, path, size)
	limit := size // where entries must end: the trailer, if it can be trusted
	if terr == nil {
		limit = tr.offset
	} else if !errors.Is(terr, ErrCorrupt) {
		return errors.Join(errs.join(), terr)
	} else {
		errs.add(terr)
	}

	walked, werr := verifyEntries(f, path, limit, &errs)
	if werr != nil {
		return errors.Join(errs.join(), werr)
	}
	if terr == nil {
		for i := range min(len(walked), len(tr.entries)) {
			if walked[i] != tr.entries[i] {
				errs.add(corruptf(path, tr.offset+int64(i)*tableRowSize, tr.entries[i].ID,
					"table row %d (%s) disagrees with the entry header (%s)", i, fmtEntry(tr.entries[i]), fmtEntry(walked[i])))
			}
		}
		if len(walked) != len(tr.entries) {
			errs.add(corruptf(path, tr.offset, ID{}, "table lists %d entries, %d intact entry headers found", len(tr.entries), len(walked)))
		}
	}
	return errs.join()
}

// verifyEntries reads [24, limit) sequentially, checking each entry header
// and its stored bytes. It returns the entries whose headers were intact;
// damage goes to errs, and the returned error is for I/O failures only.
func verifyEntries(f io.ReaderAt, path string, limit int64, errs *findings) ([]Entry, error) {
	sr := io.NewSectionReader(f, headerSize, max(limit-headerSize, 0))
	br := bufio.NewReaderSize(sr, int(min(max(limit, 16), verifyBufSize)))
	var (
		walked []Entry
		eh     [entryHeaderSize]byte
		pos    = int64(headerSize)
	)
	for pos < limit {
		if limit-pos < entryHeaderSize {
			errs.add(corruptf(path, pos, ID{}, "%d bytes before offset %d are too few for an entry header", limit-pos, limit))
			break
		}
		if _, err := io.ReadFull(br, eh[:]); err != nil {
			return walked, ioErr(path, pos, err)
		}
		e, err := parseEntryHeader(path, pos, eh[:])
		if err != nil {
			errs.add(err) // later entries cannot be located: stop
			break
		}
		if e.StoredLen > uint64(limit)-e.Offset {
			errs.add(corruptf(path, int64(e.Offset), e.ID, "%d stored bytes declared, only %d before offset %d", e.StoredLen, uint64(limit)-e.Offset, limit))
			break
		}
		c, err := crcN(br, int64(e.StoredLen))
		if err != nil {
			return walked, ioErr(path, int64(e.Offset), err)
		}
		if c != e.CRC {
			errs.add(corruptf(path, int64(e.Offset), e.ID, "stored bytes CRC mismatch (header says %08x, computed %08x)", e.CRC, c))
		}
		walked = append(walked, e)
		pos = int64(e.Offset + e.StoredLen)
	}
	return walked, nil
}

// crcN checksums the next n bytes of br without copying them.
func crcN(br *bufio.Reader, n int64) (uint32, error) {
	var c uint32
	for n > 0 {
		b, err := br.Peek(int(min(n, int64(br.Size()))))
		c = crc32.Update(c, castagnoli, b)
		_, _ = br.Discard(len(b))
		n -= int64(len(b))
		if err != nil && n > 0 {
			return c, err
		}
	}
	return c, nil
}

// ioErr reports a read error in Verify's pass; an early EOF means the file
// shrank under us, since every length was checked against its size first.
func ioErr(path string, off int64, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &CorruptError{Path: path, Offset: off, Reason: "file ended early (changed while being verified?)", Err: io.ErrUnexpectedEOF}
	}
	return fmt.Errorf("pack %s: read at offset %d: %w", path, off, err)
}

// findings collects up to maxFindings errors and counts the rest.
type findings struct {
	errs    []error
	dropped int
}

func (f *findings) add(err error) {
	if len(f.errs) < maxFindings {
		f.errs = append(f.errs, err)
	} else {
		f.dropped++
	}
}

func (f *findings) join() error {
	if f.dropped > 0 {
		return errors.Join(append(f.errs, fmt.Errorf("and %d more findings", f.dropped))...)
	}
	return errors.Join(f.errs...)
}
