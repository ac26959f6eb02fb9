package pack

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// checkDamaged runs every reader on a damaged copy of a pack whose true
// entries and objects are known, and fails if any returns wrong data
// silently or panics. It returns Verify's error and Scan's result.
func checkDamaged(t *testing.T, path string, entries []Entry, objs []obj) (error, ScanResult) {
	t.Helper()
	verr := Verify(path)

	r, err := Open(path)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open: %v, want ErrCorrupt", err)
		}
	} else {
		if !slices.Equal(r.Entries(), entries) {
			r.Close()
			t.Fatalf("Open accepted a table that differs from the real one")
		}
		for i, e := range entries {
			b, err := r.ReadStored(e, nil)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("ReadStored %d: %v, want ErrCorrupt", i, err)
				}
				continue
			}
			if !bytes.Equal(b, objs[i].data) {
				t.Fatalf("ReadStored %d returned wrong bytes without an error", i)
			}
		}
		r.Close()
	}

	sr, err := Scan(path)
	if err != nil && !errors.Is(err, ErrNotPack) {
		t.Fatalf("Scan: %v", err)
	}
	for i, e := range sr.Entries {
		if i >= len(entries) || e != entries[i] {
			t.Fatalf("Scan recovered entry %d = %+v, which the pack never had", i, e)
		}
	}
	for _, d := range sr.Damage {
		if !errors.Is(d, ErrCorrupt) {
			t.Fatalf("Scan damage %v does not match ErrCorrupt", d)
		}
	}
	if sr.Complete && len(sr.Entries) != len(entries) {
		t.Fatalf("Scan claims complete with %d of %d entries", len(sr.Entries), len(entries))
	}
	return verr, sr
}

// TestEveryBitFlip flips each bit of a small pack in turn. Every flip must
// be found by Verify, no reader may return wrong bytes, and Scan must still
// recover every entry (one flip damages only one checksummed region).
func TestEveryBitFlip(t *testing.T) {
	orig, entries, objs := smallPack(t)
	t.Logf("pack of %d bytes, %d bits", len(orig), 8*len(orig))
	path := filepath.Join(t.TempDir(), "flip.pack")
	b := slices.Clone(orig)
	modes := map[ScanMode]int{}
	for bit := range 8 * len(orig) {
		i, m := bit/8, byte(1)<<(bit%8)
		b[i] ^= m
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		b[i] ^= m
		verr, sr := checkDamaged(t, path, entries, objs)
		if verr == nil || !errors.Is(verr, ErrCorrupt) {
			t.Fatalf("byte %d bit %d: Verify = %v, want ErrCorrupt", i, bit%8, verr)
		}
		// Scan does not read entry headers or stored bytes when the table
		// is intact, so it reports damage only for header, table and
		// footer flips; Verify covers the rest.
		if len(sr.Entries) != len(entries) || !sr.Complete {
			t.Fatalf("byte %d bit %d: Scan recovered %d/%d entries, complete %v, damage %v",
				i, bit%8, len(sr.Entries), len(entries), sr.Complete, sr.Damage)
		}
		modes[sr.Mode]++
	}
	t.Logf("scan modes over all flips: %v", modes)
}

// TestEveryTruncation cuts the pack at every length. Open must reject each
// cleanly, Verify must report it, and Scan must recover exactly the entries
// that are complete in what is left.
func TestEveryTruncation(t *testing.T) {
	orig, entries, objs := smallPack(t)
	path := filepath.Join(t.TempDir(), "cut.pack")
	for n := range len(orig) {
		if err := os.WriteFile(path, orig[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		if r, err := Open(path); err == nil {
			r.Close()
			t.Fatalf("length %d: Open accepted a truncated pack", n)
		}
		verr, sr := checkDamaged(t, path, entries, objs)
		if !errors.Is(verr, ErrCorrupt) {
			t.Fatalf("length %d: Verify = %v", n, verr)
		}
		want := 0
		for _, e := range entries {
			if e.Offset+e.StoredLen <= uint64(n) {
				want++
			}
		}
		if len(sr.Entries) != want || sr.Complete || sr.Mode != ScanWalk {
			t.Fatalf("length %d: Scan recovered %d entries (want %d), complete %v, mode %v", n, len(sr.Entries), want, sr.Complete, sr.Mode)
		}
	}
}

func TestScanDamagedTrailer(t *testing.T) {
	orig, entries, _ := smallPack(t)
	trailerOff := int(entries[len(entries)-1].Offset + entries[len(entries)-1].StoredLen)
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		mutate   func([]byte) []byte
		want     int
		complete bool
	}{
		{"table zeroed", func(b []byte) []byte {
			clear(b[trailerOff : len(b)-footerSize])
			return b
		}, len(entries), true},
		{"footer zeroed", func(b []byte) []byte {
			clear(b[len(b)-footerSize:])
			return b
		}, len(entries), true},
		{"table and footer zeroed", func(b []byte) []byte {
			clear(b[trailerOff:])
			return b
		}, len(entries), false},
		{"trailer cut off", func(b []byte) []byte { return b[:trailerOff] }, len(entries), false},
		{"third entry header damaged", func(b []byte) []byte {
			b[entries[2].Offset-1] ^= 0xff // its header CRC
			clear(b[len(b)-footerSize:])
			return b
		}, 2, false},
		{"garbage appended", func(b []byte) []byte { return append(b, make([]byte, 100)...) }, len(entries), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".pack")
			if err := os.WriteFile(path, tc.mutate(slices.Clone(orig)), 0o600); err != nil {
				t.Fatal(err)
			}
			sr, err := Scan(path)
			if err != nil {
				t.Fatal(err)
			}
			if sr.Mode != ScanWalk || len(sr.Entries) != tc.want || sr.Complete != tc.complete || len(sr.Damage) == 0 {
				t.Fatalf("mode %v, %d entries (want %d), complete %v (want %v), damage %v",
					sr.Mode, len(sr.Entries), tc.want, sr.Complete, tc.complete, sr.Damage)
			}
			if !slices.Equal(sr.Entries, entries[:tc.want]) {
				t.Fatal("recovered entries differ from the originals")
			}
			if tc.complete {
				var table []byte
				for _, e := range entries {
					table = appendTableRow(table, e)
				}
				if sr.ID != packID(table) {
					t.Fatal("complete walk gives a different pack ID")
				}
			}
			for _, d := range sr.Damage {
				t.Logf("damage: %v", d)
			}
			if err := Verify(path); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestVerifyNamesDamagedObject(t *testing.T) {
	orig, entries, objs := smallPack(t)
	e := entries[3]
	b := slices.Clone(orig)
	b[e.Offset+e.StoredLen/2] ^= 0x10
	path := filepath.Join(t.TempDir(), "x.pack")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	err := Verify(path)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.ID != objs[3].id() || ce.Offset != int64(e.Offset) || ce.Path != path {
		t.Fatalf("Verify = %v, want a CorruptError naming object 3 at %d", err, e.Offset)
	}
	r, err := Open(path)
	if err != nil {
		t.Fatalf("data damage must not stop Open: %v", err)
	}
	defer r.Close()
	_, err = r.ReadStored(e, nil)
	if !errors.As(err, &ce) || ce.ID != e.ID || ce.Offset != int64(e.Offset) || ce.Path != path {
		t.Fatalf("ReadStored = %v", err)
	}
	t.Log(err)
}

func TestReadStoredRejectsForeignEntries(t *testing.T) {
	dir := t.TempDir()
	objs := randObjs(11, 100, 200, 0)
	info := writePack(t, dir, objs)
	r, err := Open(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e := info.Entries[1]
	mutants := map[string]Entry{}
	for name, f := range map[string]func(*Entry){
		"id":         func(e *Entry) { e.ID[0] ^= 1 },
		"kind":       func(e *Entry) { e.Kind++ },
		"codec":      func(e *Entry) { e.Codec++ },
		"raw":        func(e *Entry) { e.RawLen++ },
		"crc":        func(e *Entry) { e.CRC++ },
		"shorter":    func(e *Entry) { e.StoredLen-- },
		"offset+1":   func(e *Entry) { e.Offset++ },
		"offset 0":   func(e *Entry) { e.Offset = 0 },
		"huge":       func(e *Entry) { e.StoredLen = 1 << 62 },
		"past end":   func(e *Entry) { e.Offset = uint64(info.Size) },
		"wraparound": func(e *Entry) { e.Offset, e.StoredLen = ^uint64(0)-10, 20 },
	} {
		m := e
		f(&m)
		mutants[name] = m
	}
	f, err := os.Open(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, m := range mutants {
		if _, err := r.ReadStored(m, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ReadStored with %s changed: %v", name, err)
		}
		if _, err := ReadStoredAt(f, info.Path, m, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ReadStoredAt with %s changed: %v", name, err)
		}
	}
}

func TestNotAPack(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"text":  []byte("this is not a pack file at all, just some text that is long enough"),
		"short": []byte("nope"),
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path); !errors.Is(err, ErrNotPack) {
			t.Errorf("%s: Open = %v", name, err)
		}
		if _, err := Scan(path); !errors.Is(err, ErrNotPack) {
			t.Errorf("%s: Scan = %v", name, err)
		}
		if err := Verify(path); !errors.Is(err, ErrNotPack) {
			t.Errorf("%s: Verify = %v", name, err)
		}
	}
}

func TestUnsupportedVersion(t *testing.T) {
	orig, _, _ := smallPack(t)
	b := slices.Clone(orig)
	le.PutUint32(b[8:12], Version+1)
	le.PutUint32(b[20:24], checksum(b[:20]))
	path := filepath.Join(t.TempDir(), "v2.pack")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, ErrUnsupportedVersion) || errors.Is(err, ErrCorrupt) {
		t.Errorf("Open = %v", err)
	}
	if _, err := Scan(path); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("Scan = %v", err)
	}
	if err := Verify(path); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("Verify = %v", err)
	}
}

// TestHostileFooter: a footer with valid CRCs that claims a huge entry
// count, or a table whose rows lie about the layout, is rejected before
// anything large is allocated.
func TestHostileFooter(t *testing.T) {
	dir := t.TempDir()
	h := encodeHeader()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Huge count.
	b := append([]byte{}, h[:]...)
	f := encodeFooter(headerSize, 1<<58, nil)
	le.PutUint32(f[20:24], checksum(f[:20]))
	p := write("count", append(b, f[:]...))
	if _, err := Open(p); !errors.Is(err, ErrCorrupt) {
		t.Errorf("huge count: Open = %v", err)
	}
	// A table with a valid CRC describing a stored region past the file.
	e := Entry{ID: ID{1}, Offset: firstDataOffset, StoredLen: 1 << 29}
	var eh [entryHeaderSize]byte
	putEntryHeader(eh[:], e)
	table := appendTableRow(nil, e)
	b = append(append([]byte{}, h[:]...), eh[:]...)
	trailerOff := len(b)
	b = append(b, table...)
	f = encodeFooter(int64(trailerOff), 1, table)
	p = write("layout", append(b, f[:]...))
	if _, err := Open(p); !errors.Is(err, ErrCorrupt) {
		t.Errorf("lying table: Open = %v", err)
	}
	sr, err := Scan(p)
	if err != nil || len(sr.Entries) != 0 {
		t.Errorf("lying table: Scan = %d entries, %v", len(sr.Entries), err)
	}
	if err := Verify(p); !errors.Is(err, ErrCorrupt) {
		t.Errorf("lying table: Verify = %v", err)
	}
	// An empty pack is well-formed (Writer refuses to make one).
	f = encodeFooter(headerSize, 0, nil)
	p = write("empty", append(append([]byte{}, h[:]...), f[:]...))
	r, err := Open(p)
	if err != nil {
		t.Fatalf("empty pack: %v", err)
	}
	r.Close()
	if err := Verify(p); err != nil {
		t.Fatalf("empty pack: Verify = %v", err)
	}
}
