package pack

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
)

// obj is one object to store in a test pack.
type obj struct {
	kind, codec uint8
	raw         uint64
	data        []byte
}

func (o obj) id() ID { return ID(blake3.Sum256(o.data)) }

// randObjs returns objects with the given stored sizes and random contents.
func randObjs(seed uint64, sizes ...int) []obj {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	objs := make([]obj, len(sizes))
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		objs[i] = obj{kind: uint8(i % 3), codec: uint8(i % 2), raw: uint64(n) * 2, data: b}
	}
	return objs
}

func writePack(t testing.TB, dir string, objs []obj) Info {
	t.Helper()
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, o := range objs {
		e, err := w.Add(o.id(), o.kind, o.codec, o.raw, o.data)
		if err != nil {
			t.Fatal(err)
		}
		if e.StoredLen != uint64(len(o.data)) || e.ID != o.id() {
			t.Fatalf("Add returned %+v for %d bytes", e, len(o.data))
		}
	}
	info, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// smallPack writes a pack of a few KB with a zero-length entry and returns
// its bytes, entries and objects.
func smallPack(t testing.TB) ([]byte, []Entry, []obj) {
	t.Helper()
	objs := randObjs(7, 300, 0, 1, 1200, 17, 800)
	info := writePack(t, t.TempDir(), objs)
	b, err := os.ReadFile(info.Path)
	if err != nil {
		t.Fatal(err)
	}
	return b, info.Entries, objs
}

// listDir returns every path under dir, relative to it.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func tempLeftovers(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, TempPrefix+"*"+Ext))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkReadsBack reads every entry of path through Open/ReadStored and
// compares the bytes with objs.
func checkReadsBack(t *testing.T, path string, objs []obj) {
	t.Helper()
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	es := r.Entries()
	if len(es) != len(objs) {
		t.Fatalf("%d entries, want %d", len(es), len(objs))
	}
	var buf []byte
	for i, e := range es {
		o := objs[i]
		if e.ID != o.id() || e.Kind != o.kind || e.Codec != o.codec || e.RawLen != o.raw {
			t.Fatalf("entry %d = %+v, want object %s kind %d codec %d raw %d", i, e, o.id(), o.kind, o.codec, o.raw)
		}
		buf, err = r.ReadStored(e, buf)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if !bytes.Equal(buf, o.data) {
			t.Fatalf("entry %d: read back different bytes", i)
		}
	}
}

// seams replaces the durability seams for one test and restores them.
func seams(t *testing.T) {
	t.Helper()
	ct, rn, sd := createTemp, renameFile, syncDir
	t.Cleanup(func() { createTemp, renameFile, syncDir = ct, rn, sd })
}

// faultFile wraps the real temp file to inject failures and record the
// order of operations.
type faultFile struct {
	*os.File
	log         *[]string
	writeBudget int64 // bytes that may still be written; <0: unlimited
	writeErr    error
	syncErr     error
}

func (f *faultFile) Write(p []byte) (int, error) {
	*f.log = append(*f.log, "write")
	if f.writeBudget >= 0 && int64(len(p)) > f.writeBudget {
		n, _ := f.File.Write(p[:f.writeBudget])
		f.writeBudget = 0
		return n, f.writeErr
	}
	if f.writeBudget >= 0 {
		f.writeBudget -= int64(len(p))
	}
	return f.File.Write(p)
}

func (f *faultFile) Sync() error {
	*f.log = append(*f.log, "sync")
	if f.syncErr != nil {
		return f.syncErr
	}
	return f.File.Sync()
}

func (f *faultFile) Close() error {
	*f.log = append(*f.log, "close")
	return f.File.Close()
}

func (f *faultFile) Chmod(m os.FileMode) error {
	*f.log = append(*f.log, "chmod")
	return f.File.Chmod(m)
}

// injectFile makes the next Writers use faultFile with the given settings.
func injectFile(t *testing.T, log *[]string, budget int64, writeErr, syncErr error) {
	t.Helper()
	seams(t)
	createTemp = func(dir, pattern string) (tempFile, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		return &faultFile{File: f, log: log, writeBudget: budget, writeErr: writeErr, syncErr: syncErr}, nil
	}
}

var errInjected = errors.New("injected failure")
