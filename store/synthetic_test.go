package store

import (
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/heft-dev/heft/internal/modelgen"
)

// TestSeedSyntheticIndex seeds a small synthetic index, finds its records through
// the import's lookup path, and checks that an import into the seeded store still
// round-trips.
func TestSeedSyntheticIndex(t *testing.T) {
	skipIfShared(t, "synthetic packs exist in no backend: a shared store forgets them at its first refresh")
	const n, seed = 50_000, 42
	s := TestStore(t, smallChunks)
	// The synthetic packs do not exist, so verify would report every record.
	s.SkipCleanupCheck()
	st, err := s.SeedSyntheticIndex(n, seed)
	if err != nil {
		t.Fatal(err)
	}
	if st.Objects != n || st.Packs != (n+syntheticPerPack-1)/syntheticPerPack || st.IndexBytes <= 0 {
		t.Fatalf("stats %+v", st)
	}

	// Every record is there, in order, with a valid checksum and a known pack.
	var objects, packs int
	var prev ID
	err = s.idx.view(func(tx *bolt.Tx) error {
		known := map[ID]bool{}
		if err := forEachPack(tx, func(id ID, _ packRecord) error { known[id] = true; packs++; return nil }); err != nil {
			return err
		}
		return forEachObject(tx, func(id ID, loc Location) error {
			if objects > 0 && string(id[:]) <= string(prev[:]) {
				t.Fatalf("object %d out of order", objects)
			}
			if !known[loc.Pack] || loc.Kind != KindChunk || loc.RawLen != DefaultChunkSize {
				t.Fatalf("object %s: implausible location %+v", id.Short(), loc)
			}
			prev = id
			objects++
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if objects != n || packs != st.Packs {
		t.Fatalf("index has %d objects and %d packs, want %d and %d", objects, packs, n, st.Packs)
	}

	hits := SyntheticIDs(n, seed, 1000)
	if len(hits) != 1000 {
		t.Fatalf("SyntheticIDs returned %d ids", len(hits))
	}
	misses := SyntheticIDs(n, seed+1, 1000)
	has, err := s.HasObjects(append(hits, misses...))
	if err != nil {
		t.Fatal(err)
	}
	for i, ok := range has {
		if ok != (i < len(hits)) {
			t.Fatalf("HasObjects[%d] = %v", i, ok)
		}
	}

	// An import afterwards stores every chunk (none collides with a synthetic
	// one) and exports byte-identically.
	src := filepath.Join(t.TempDir(), "model")
	if err := modelgen.WriteBase(src, testCfg(), modelgen.Options{Seed: 3, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if res := importDir(t, s, src, "bench/model"); res.Stats.NewChunks == 0 {
		t.Fatalf("import stored no chunks: %+v", res.Stats)
	}
	assertExportIdentical(t, s, "bench/model", src)
	has, err = s.HasObjects(hits[:10])
	if err != nil || len(has) != 10 || !has[0] || !has[9] {
		t.Fatalf("synthetic records after the import: %v %v", has, err)
	}
}
