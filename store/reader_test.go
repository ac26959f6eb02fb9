package store

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestFileReaderRandomRanges(t *testing.T) {
	s := TestStore(t, smallChunks)
	base, _, _, _ := family(t, testCfg())
	id := importDir(t, s, base, "org/base").Commit
	files, err := s.CommitFiles(id)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, cf := range files {
		want, err := os.ReadFile(filepath.Join(base, cf.Path))
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.OpenFile(cf.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.Size() != int64(len(want)) {
			t.Fatalf("%s: size %d, want %d", cf.Path, r.Size(), len(want))
		}
		all, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		if err != nil || !bytes.Equal(all, want) {
			t.Fatalf("%s: sequential read differs (%v)", cf.Path, err)
		}
		for range 50 {
			if len(want) == 0 {
				break
			}
			off := rng.IntN(len(want))
			n := rng.IntN(len(want)-off) + 1
			buf := make([]byte, n)
			got, err := r.ReadAt(buf, int64(off))
			if got != n || (err != nil && err != io.EOF) || !bytes.Equal(buf, want[off:off+n]) {
				t.Fatalf("%s: ReadAt(%d, %d) = %d, %v", cf.Path, off, n, got, err)
			}
		}
		if _, err := r.ReadAt(make([]byte, 1), int64(len(want))); err != io.EOF {
			t.Fatalf("%s: read at end: %v", cf.Path, err)
		}
		r.Close()
	}
}
