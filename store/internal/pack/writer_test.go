package pack

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/heft-dev/heft/internal/fsutil"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	sizes := []int{0, 1, 2, 0, 4 << 20, 100, 1<<20 + 3, 0, 65537}
	for i := range 200 {
		sizes = append(sizes, (i*7919)%5000)
	}
	objs := randObjs(1, sizes...)
	info := writePack(t, dir, objs)

	if want := PathFor(dir, info.ID); info.Path != want {
		t.Fatalf("published at %s, want %s", info.Path, want)
	}
	fi, err := os.Stat(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != info.Size {
		t.Fatalf("Info.Size %d, file has %d bytes", info.Size, fi.Size())
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("published pack mode %v, want read-only", fi.Mode().Perm())
	}
	if got := tempLeftovers(t, dir); len(got) != 0 {
		t.Fatalf("temporary files left: %v", got)
	}
	if id, err := ParseName(filepath.Base(info.Path)); err != nil || id != info.ID {
		t.Fatalf("ParseName(%s) = %v, %v", filepath.Base(info.Path), id, err)
	}

	checkReadsBack(t, info.Path, objs)
	if err := Verify(info.Path); err != nil {
		t.Fatal(err)
	}
	r, err := Open(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.ID() != info.ID || !slices.Equal(r.Entries(), info.Entries) || r.Size() != info.Size {
		t.Fatalf("reopened pack disagrees with Finish's Info")
	}
	sr, err := Scan(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	if sr.Mode != ScanTrailer || !sr.Complete || sr.ID != info.ID || len(sr.Damage) != 0 || !slices.Equal(sr.Entries, info.Entries) {
		t.Fatalf("Scan of a sound pack: mode %v complete %v damage %v", sr.Mode, sr.Complete, sr.Damage)
	}

	// ReadStoredAt with a caller's file, reusing a buffer that is big enough.
	f, err := os.Open(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 0, 8<<20)
	for i, e := range info.Entries {
		got, err := ReadStoredAt(f, info.Path, e, buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(objs[i].data) {
			t.Fatalf("entry %d differs", i)
		}
		if len(got) > 0 && &got[0] != &buf[:1][0] {
			t.Fatalf("ReadStoredAt did not reuse a big enough buffer")
		}
	}
}

func TestConcurrentReaders(t *testing.T) {
	objs := randObjs(2, 10000, 0, 300000, 5, 77777, 123)
	info := writePack(t, t.TempDir(), objs)
	r, err := Open(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			var buf []byte
			for k := range 50 {
				i := (g + k) % len(objs)
				b, err := r.ReadStored(r.Entries()[i], buf)
				if err != nil {
					errs <- err
					return
				}
				if string(b) != string(objs[i].data) {
					errs <- errors.New("wrong bytes")
					return
				}
				buf = b
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestFinishDurabilityOrder(t *testing.T) {
	dir := t.TempDir()
	var log []string
	injectFile(t, &log, -1, nil, nil)
	var tmp string
	renameFile = func(from, to string) error {
		log = append(log, "rename")
		if from != tmp || filepath.Dir(filepath.Dir(to)) != dir {
			t.Errorf("rename %s -> %s", from, to)
		}
		return os.Rename(from, to)
	}
	syncDir = func(d string) error {
		switch {
		case d == dir:
			log = append(log, "syncdir DIR")
		case filepath.Dir(d) == dir && len(filepath.Base(d)) == 2:
			log = append(log, "syncdir xx")
		default:
			t.Errorf("fsync of unexpected directory %s", d)
		}
		return fsutil.SyncDir(d)
	}

	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	tmp = w.Name()
	if !strings.HasPrefix(filepath.Base(tmp), TempPrefix) || filepath.Dir(tmp) != dir || filepath.Ext(tmp) != Ext {
		t.Fatalf("temporary file %s is not DIR/%s*%s", tmp, TempPrefix, Ext)
	}
	for _, o := range randObjs(3, 10, 300000, 0) {
		if _, err := w.Add(o.id(), o.kind, o.codec, o.raw, o.data); err != nil {
			t.Fatal(err)
		}
	}
	info, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}

	// Collapse runs of writes, then the order must be exactly this.
	var steps []string
	for _, s := range log {
		if s == "write" && len(steps) > 0 && steps[len(steps)-1] == "write" {
			continue
		}
		steps = append(steps, s)
	}
	want := []string{"write", "chmod", "sync", "close", "rename", "syncdir xx", "syncdir DIR"}
	if !slices.Equal(steps, want) {
		t.Fatalf("durability steps %v, want %v", steps, want)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file still there: %v", err)
	}
	if fi, err := os.Stat(filepath.Dir(info.Path)); err != nil || !fi.IsDir() {
		t.Fatalf("xx directory: %v", err)
	}
	if err := Verify(info.Path); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort after Finish: %v", err)
	}
	if _, err := os.Stat(info.Path); err != nil {
		t.Fatalf("Abort after Finish touched the pack: %v", err)
	}
	if _, err := w.Add(ID{}, 0, 0, 0, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Finish: %v", err)
	}
}

func TestFinishExisting(t *testing.T) {
	dir := t.TempDir()
	objs := randObjs(4, 100, 0, 2000)
	first := writePack(t, dir, objs)
	before, err := os.Stat(first.Path)
	if err != nil {
		t.Fatal(err)
	}
	second := writePack(t, dir, objs)
	if second.ID != first.ID || second.Path != first.Path || !slices.Equal(second.Entries, first.Entries) {
		t.Fatalf("second identical pack: %+v vs %+v", second, first)
	}
	after, err := os.Stat(first.Path)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("existing pack was replaced (%v)", err)
	}
	if got := listDir(t, dir); len(got) != 2 {
		t.Fatalf("store holds %v, want one xx dir and one pack", got)
	}

	// A damaged pack of the same name is reported, not replaced.
	if err := os.Chmod(first.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(first.Path, first.Size-1); err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, err := w.Add(o.id(), o.kind, o.codec, o.raw, o.data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Finish(); !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrBroken) {
		t.Fatalf("Finish over a damaged pack of the same name: %v", err)
	}
	if got := tempLeftovers(t, dir); len(got) != 0 {
		t.Fatalf("temporary files left: %v", got)
	}
}

func TestStickyWriteError(t *testing.T) {
	dir := t.TempDir()
	var log []string
	// The small objects stay in the write buffer; the big one flushes it
	// and fails part way.
	injectFile(t, &log, 5000, errInjected, nil)
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	objs := randObjs(5, 4000, 4000, 300<<10, 4000)
	var first error
	for i, o := range objs {
		_, err := w.Add(o.id(), o.kind, o.codec, o.raw, o.data)
		if err != nil && first == nil {
			first = err
			if i == 0 {
				t.Fatalf("failed too early")
			}
		}
	}
	if first == nil {
		t.Fatal("no Add failed")
	}
	if !errors.Is(first, errInjected) || !errors.Is(first, ErrBroken) || !strings.Contains(first.Error(), w.Name()) {
		t.Fatalf("first error %v: want injected + ErrBroken, naming the file", first)
	}
	_, err = w.Add(ID{1}, 0, 0, 0, []byte("x"))
	if !errors.Is(err, errInjected) || !errors.Is(err, ErrBroken) {
		t.Fatalf("Add after failure: %v", err)
	}
	if _, err := w.Finish(); !errors.Is(err, errInjected) || !errors.Is(err, ErrBroken) {
		t.Fatalf("Finish after failure: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Fatalf("left behind: %v", got)
	}
}

func TestNoSpaceIsPermanent(t *testing.T) {
	dir := t.TempDir()
	var log []string
	injectFile(t, &log, 1000, &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}, nil)
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	o := randObjs(6, 1<<20)[0]
	_, err = w.Add(o.id(), 0, 0, 0, o.data)
	if !errors.Is(err, ErrNoSpace) || !errors.Is(err, ErrBroken) {
		t.Fatalf("write with ENOSPC: %v", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}

	createTemp = func(string, string) (tempFile, error) {
		return nil, &os.PathError{Op: "open", Path: "x", Err: syscall.ENOSPC}
	}
	if _, err := NewWriter(dir); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("NewWriter with ENOSPC: %v", err)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Fatalf("left behind: %v", got)
	}
}

func TestFinishFailuresPublishNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(t *testing.T, log *[]string)
	}{
		{"sync", func(t *testing.T, log *[]string) { injectFile(t, log, -1, nil, errInjected) }},
		{"table write", func(t *testing.T, log *[]string) { injectFile(t, log, 24+60+100+30, errInjected, nil) }},
		{"rename", func(t *testing.T, log *[]string) {
			seams(t)
			renameFile = func(string, string) error { return errInjected }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var log []string
			tc.inject(t, &log)
			w, err := NewWriter(dir)
			if err != nil {
				t.Fatal(err)
			}
			o := randObjs(8, 100)[0]
			if _, err := w.Add(o.id(), 0, 0, 0, o.data); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Finish(); !errors.Is(err, errInjected) || !errors.Is(err, ErrBroken) {
				t.Fatalf("Finish: %v", err)
			}
			if err := w.Abort(); err != nil {
				t.Fatal(err)
			}
			for _, p := range listDir(t, dir) {
				if filepath.Ext(p) == Ext {
					t.Fatalf("left behind: %s", p)
				}
			}
		})
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range randObjs(9, 10, 500000, 0) {
		if _, err := w.Add(o.id(), o.kind, o.codec, o.raw, o.data); err != nil {
			t.Fatal(err)
		}
	}
	if w.Len() != 3 || w.Size() != 24+3*60+10+500000 {
		t.Fatalf("Len %d Size %d", w.Len(), w.Size())
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Fatalf("left behind: %v", got)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("second Abort: %v", err)
	}
	if _, err := w.Add(ID{}, 0, 0, 0, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Abort: %v", err)
	}
	if _, err := w.Finish(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Finish after Abort: %v", err)
	}
}

func TestFinishEmpty(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Finish(); !errors.Is(err, ErrEmpty) || errors.Is(err, ErrBroken) {
		t.Fatalf("Finish of an empty pack: %v", err)
	}
	// Not broken: entries can still be added.
	if _, err := w.Add(ID{1}, 0, 0, 1, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Fatalf("left behind: %v", got)
	}
}

func TestAddTooLarge(t *testing.T) {
	w, err := NewWriter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	// A slice header that claims MaxStoredLen+1 bytes over one real byte:
	// Add must reject it by length alone, before reading any of it, and
	// allocating a real 1 GiB buffer takes seconds.
	var one byte
	big := unsafe.Slice(&one, MaxStoredLen+1)
	if _, err := w.Add(ID{}, 0, 0, 0, big); !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrBroken) {
		t.Fatalf("Add of %d bytes: %v", len(big), err)
	}
	if _, err := w.Add(ID{1}, 0, 0, 1, []byte{1}); err != nil {
		t.Fatalf("writer broken by a rejected Add: %v", err)
	}
}

func TestParseID(t *testing.T) {
	id := ID{0xde, 0xad, 0xbe, 0xef, 31: 0x01}
	s := id.String()
	if len(s) != 64 || s[:8] != "deadbeef" || id.Str() != "deadbeef" {
		t.Fatalf("String %q", s)
	}
	got, err := ParseID(s)
	if err != nil || got != id {
		t.Fatalf("ParseID(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"", s[:63], s + "0", strings.ToUpper(s), "g" + s[1:], "../" + s[3:]} {
		if _, err := ParseID(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseID(%q): %v", bad, err)
		}
	}
	if _, err := ParseName(s); !errors.Is(err, ErrInvalidID) {
		t.Errorf("ParseName without extension: %v", err)
	}
	if got := PathFor("/d", id); got != filepath.Join("/d", "de", s+".pack") {
		t.Errorf("PathFor = %s", got)
	}
}
