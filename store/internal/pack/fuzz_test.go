package pack

import (
	"errors"
	"hash/crc32"
	"os"
	"runtime"
	"slices"
	"testing"
)

// FuzzOpen feeds arbitrary bytes, as a file, to Open (and ReadStored on
// every entry it lists), Scan and Verify. None may panic, allocate much more
// than the input's size, return bytes that fail their CRC, or disagree
// about a pack that Verify passes.
func FuzzOpen(f *testing.F) {
	orig, entries, _ := smallPack(f)
	f.Add(orig)
	f.Add(orig[:len(orig)-1])
	f.Add(orig[:entries[2].Offset+3])
	f.Add(orig[:headerSize])
	f.Add([]byte{})
	for _, off := range []int{0, 9, 30, int(entries[1].Offset), len(orig) - 40, len(orig) - 20, len(orig) - 1} {
		b := slices.Clone(orig)
		b[off] ^= 0x04
		f.Add(b)
	}
	// Trailer zeroed but footer intact, and a one-entry pack.
	b := slices.Clone(orig)
	toff := int(entries[len(entries)-1].Offset + entries[len(entries)-1].StoredLen)
	clear(b[toff : len(b)-footerSize])
	f.Add(b)
	one := writePack(f, f.TempDir(), randObjs(12, 5))
	if b, err := os.ReadFile(one.Path); err == nil {
		f.Add(b)
	}

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) { fuzzOne(t, dir, data) })
}

// fuzzOne is FuzzOpen's body for one input.
func fuzzOne(t *testing.T, dir string, data []byte) {
	tf, err := os.CreateTemp(dir, "fuzz-*.pack")
	if err != nil {
		t.Fatal(err)
	}
	path := tf.Name()
	defer os.Remove(path)
	if _, err := tf.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tf.Close(); err != nil {
		t.Fatal(err)
	}

	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc

	var opened []Entry
	if r, err := Open(path); err == nil {
		opened = r.Entries()
		for _, e := range opened {
			if e.Offset+e.StoredLen > uint64(len(data)) {
				t.Fatalf("Open listed entry %+v beyond the %d-byte file", e, len(data))
			}
			b, err := r.ReadStored(e, nil)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ReadStored: %v", err)
				}
				continue
			}
			if uint64(len(b)) != e.StoredLen || crc32.Checksum(b, castagnoli) != e.CRC {
				t.Fatalf("ReadStored returned bytes that do not match entry %+v", e)
			}
		}
		r.Close()
	} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotPack) && !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("Open: unclassified error %v", err)
	}

	sr, serr := Scan(path)
	if serr == nil {
		for _, e := range sr.Entries {
			if e.Offset+e.StoredLen > uint64(len(data)) {
				t.Fatalf("Scan listed entry %+v beyond the %d-byte file", e, len(data))
			}
		}
	} else if !errors.Is(serr, ErrNotPack) && !errors.Is(serr, ErrUnsupportedVersion) {
		t.Fatalf("Scan: unclassified error %v", serr)
	}

	verr := Verify(path)
	if verr == nil {
		// A sound pack: every reader must agree on it.
		if opened == nil && len(data) != minFileSize {
			t.Fatalf("Verify passed a pack that Open rejected")
		}
		if serr != nil || sr.Mode != ScanTrailer || !slices.Equal(sr.Entries, opened) || len(sr.Damage) != 0 {
			t.Fatalf("Verify passed, Scan: %v mode %v damage %v", serr, sr.Mode, sr.Damage)
		}
	} else if !errors.Is(verr, ErrCorrupt) && !errors.Is(verr, ErrNotPack) && !errors.Is(verr, ErrUnsupportedVersion) {
		t.Fatalf("Verify: unclassified error %v", verr)
	}

	// Allocation is bounded by the input: tables and entry lists are
	// sized from the file, never from a length field alone.
	runtime.ReadMemStats(&ms)
	if got, limit := ms.TotalAlloc-before, uint64(16*len(data)+4<<20); got > limit {
		t.Fatalf("allocated %d bytes for a %d-byte input (limit %d)", got, len(data), limit)
	}
}

// FuzzOpenResealed is FuzzOpen after recomputing every checksum the input
// seems to have, so that the fuzzer, which cannot forge CRCs itself, reaches
// the structural checks behind them (counts, offsets, lengths). A hostile
// pack can always carry valid CRCs; only the structure stops it.
func FuzzOpenResealed(f *testing.F) {
	orig, entries, _ := smallPack(f)
	f.Add(orig)
	f.Add(orig[:len(orig)-7])
	b := slices.Clone(orig)
	le.PutUint64(b[len(b)-footerSize+8:], 1<<40) // entry count
	f.Add(b)
	b = slices.Clone(orig)
	le.PutUint64(b[entries[1].Offset-entryHeaderSize+44:], 1<<31) // stored length
	f.Add(b)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) { fuzzOne(t, dir, reseal(slices.Clone(data))) })
}

// reseal recomputes the header CRC, the CRCs of every entry header (and
// its stored bytes) found by walking from the header, and the table and
// footer CRCs as described by the footer, whatever the other fields say.
func reseal(b []byte) []byte {
	if len(b) >= headerSize {
		le.PutUint32(b[20:24], checksum(b[:20]))
	}
	pos := uint64(headerSize)
	for pos+entryHeaderSize <= uint64(len(b)) {
		h := b[pos : pos+entryHeaderSize]
		n := le.Uint64(h[44:52])
		data := pos + entryHeaderSize
		if n > uint64(len(b))-data {
			le.PutUint32(h[56:60], checksum(h[:56]))
			break
		}
		le.PutUint32(h[52:56], checksum(b[data:data+n]))
		le.PutUint32(h[56:60], checksum(h[:56]))
		pos = data + n
	}
	if len(b) >= minFileSize {
		ft := b[len(b)-footerSize:]
		if toff := le.Uint64(ft[0:8]); toff <= uint64(len(b)-footerSize) {
			le.PutUint32(ft[16:20], checksum(b[toff:len(b)-footerSize]))
		}
		le.PutUint32(ft[20:24], checksum(ft[:20]))
	}
	return b
}
