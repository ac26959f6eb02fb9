package store

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestChunkCacheLRU(t *testing.T) {
	c := newChunkCache(100)
	ids := []ID{Sum([]byte("a")), Sum([]byte("b")), Sum([]byte("c"))}
	c.put(ids[0], make([]byte, 20))
	c.put(ids[1], make([]byte, 20))
	if _, ok := c.get(ids[0]); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	for _, k := range []string{"c", "d", "e", "f"} { // over budget: b, the least recent, goes
		c.put(Sum([]byte(k)), make([]byte, 20))
	}
	if _, ok := c.get(ids[1]); ok {
		t.Fatal("b survived eviction")
	}
	if _, ok := c.get(ids[0]); !ok {
		t.Fatal("a was evicted before b")
	}
	c.put(Sum([]byte("big")), make([]byte, 30)) // over a quarter of the budget: not cached
	if c.size > c.max {
		t.Fatalf("cache holds %d of %d bytes", c.size, c.max)
	}
	var nilCache *chunkCache
	nilCache.put(ids[0], nil)
	if _, ok := nilCache.get(ids[0]); ok {
		t.Fatal("nil cache returned data")
	}
}

// TestReadCacheServesRepeatedReads reads a file twice through a store with a read
// cache; between the reads its packs are damaged on disk. The second read is served
// from the verified in-memory copies; a store without the cache reports the damage.
func TestReadCacheServesRepeatedReads(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{ChunkSize: 16 << 10, ReadCacheBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base, _, _, _ := family(t, testCfg())
	importDir(t, s, base, "org/base")
	commit, _ := s.Ref(mustRef(t, "org/base"))
	files, err := s.CommitFiles(commit)
	if err != nil {
		t.Fatal(err)
	}
	read := func(st *Store) (map[string][]byte, error) {
		out := map[string][]byte{}
		for _, f := range files {
			fr, err := st.OpenFile(f.ID)
			if err != nil {
				return nil, err
			}
			data, err := io.ReadAll(io.NewSectionReader(fr, 0, fr.Size()))
			fr.Close()
			if err != nil {
				return nil, err
			}
			out[f.Path] = data
		}
		return out, nil
	}
	first, err := read(s)
	if err != nil {
		t.Fatal(err)
	}
	// Damage every pack's data past its first entries (the metadata objects are
	// loaded again by OpenFile, so keep the packs' heads and tails intact).
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*", "*.pack"))
	for _, p := range packs {
		st, _ := os.Stat(p)
		flip(t, p, st.Size()/2, 0xff)
	}
	uncached, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer uncached.Close()
	if _, err := read(uncached); err == nil {
		t.Fatal("the damage went unnoticed without a cache: the test damaged nothing read")
	}
	second, err := read(s)
	if err != nil {
		t.Skipf("the damage hit an object OpenFile reads (metadata): %v", err)
	}
	for p, data := range first {
		if !bytes.Equal(second[p], data) {
			t.Fatalf("%s: cached read differs", p)
		}
	}
	for _, p := range packs {
		st, _ := os.Stat(p)
		flip(t, p, st.Size()/2, 0xff)
	}
}

// TestWriteRangeTo compares WriteRangeTo with ReadAt on ranges across chunk edges.
func TestWriteRangeTo(t *testing.T) {
	s := TestStore(t, smallChunks)
	base, _, _, _ := family(t, testCfg())
	importDir(t, s, base, "org/base")
	commit, _ := s.Ref(mustRef(t, "org/base"))
	files, _ := s.CommitFiles(commit)
	for _, f := range files {
		fr, err := s.OpenFile(f.ID)
		if err != nil {
			t.Fatal(err)
		}
		size := fr.Size()
		for _, r := range [][2]int64{{0, size}, {0, 0}, {1, size - 1}, {size / 3, size / 3}, {16<<10 - 1, 2}, {size - 1, 1}} {
			if r[0] < 0 || r[1] < 0 || r[0]+r[1] > size {
				continue
			}
			want := make([]byte, r[1])
			if _, err := fr.ReadAt(want, r[0]); err != nil && !(err == io.EOF && r[1] == 0) {
				t.Fatal(err)
			}
			var got bytes.Buffer
			n, err := fr.WriteRangeTo(&got, r[0], r[1])
			if err != nil || n != r[1] || !bytes.Equal(got.Bytes(), want) {
				t.Fatalf("%s [%d, +%d): %d bytes, %v", f.Path, r[0], r[1], n, err)
			}
		}
		if _, err := fr.WriteRangeTo(io.Discard, size, 1); err == nil {
			t.Fatal("a range past the end was written")
		}
		fr.Close()
	}
}
