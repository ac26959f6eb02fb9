package store

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/heft-dev/heft/codec/chunkcodec"
)

// SyntheticIndexStats says what SeedSyntheticIndex wrote.
type SyntheticIndexStats struct {
	Objects    int           // object records added
	Packs      int           // synthetic pack records added
	Elapsed    time.Duration // wall time of the seeding
	IndexBytes int64         // size of index.db afterwards
}

// syntheticPerPack is how many synthetic chunks share one synthetic pack: a 256 MiB
// pack of 4 MiB chunks, as an import with the default options writes.
const syntheticPerPack = 64

// syntheticBatch is how many object records one write transaction adds. Larger
// batches amortise bbolt's commit (dirty-page spill, freelist write, fsync); 250 k
// records are about 30 MB of pages.
const syntheticBatch = 250_000

// SeedSyntheticIndex adds n synthetic chunk records to the index, for scale
// benchmarks only (issue 7: an index of ≥ 10 M chunks). The IDs are random
// (uniform over the ID space, like BLAKE3 digests, from a PRNG seeded with seed) and
// each location is plausible — a 4 MiB chunk in one of n/64 synthetic 256 MiB packs,
// whose records are added to the packs bucket too — so the B+trees have the shape and
// size of a real store's with n chunks.
//
// The synthetic packs do not exist on disk and no commit reaches the synthetic
// chunks: `heft verify` reports the missing packs, `heft gc` would treat the records
// as unreachable garbage, and `heft repair index` removes them all (it rebuilds the
// index from the pack files). Use a seeded store for benchmarks and throw it away.
// Real imports into a seeded store work as usual: their chunk IDs are BLAKE3
// digests, which collide with the synthetic IDs with negligible probability, and
// the synthetic records are never read.
//
// The records are generated already sorted and written in key order in batches of
// syntheticBatch with the buckets' FillPercent at 1.0 (bbolt then appends to the
// rightmost leaf instead of splitting pages in the middle), which makes seeding
// about as fast as writing the file: 10 M records, about 1.1 GiB of index, take
// on the order of a minute on 2 cores. Seeding must not run while another
// goroutine or process writes the store.
func (s *Store) SeedSyntheticIndex(n int, seed uint64) (*SyntheticIndexStats, error) {
	if n < 0 {
		return nil, fmt.Errorf("seed synthetic index: negative count %d", n)
	}
	start := time.Now()
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	npacks := (n + syntheticPerPack - 1) / syntheticPerPack
	packIDs := sortedRandomIDs(npacks, rand.New(rand.NewPCG(seed, 0x7061636b73))) // "packs"
	gen := newSyntheticGen(n, npacks, seed)

	sizes := make([]uint64, npacks) // bytes written to each synthetic pack so far
	entries := make([]uint64, npacks)
	for i := 0; i < n; {
		end := min(i+syntheticBatch, n)
		err := s.idx.update(func(tx *bolt.Tx) error {
			objs := tx.Bucket(bucketObjects)
			objs.FillPercent = 1.0
			for ; i < end; i++ {
				id, p, stored, crc := gen.next(i)
				loc := Location{
					Pack:      packIDs[p],
					Offset:    sizes[p],
					StoredLen: stored,
					RawLen:    DefaultChunkSize,
					Kind:      KindChunk,
					Codec:     uint8(chunkcodec.ByteGrouped),
					CRC:       crc,
				}
				sizes[p] += stored + entryOverhead
				entries[p]++
				if err := objs.Put(id[:], loc.encode()); err != nil {
					return fmt.Errorf("seed object %s: %w", id.Short(), err)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("seed synthetic index: %w", err)
		}
	}
	err = s.idx.update(func(tx *bolt.Tx) error {
		packs := tx.Bucket(bucketPacks)
		packs.FillPercent = 1.0
		for p, id := range packIDs {
			if err := packs.Put(id[:], packRecord{Size: sizes[p], Entries: entries[p]}.encode()); err != nil {
				return fmt.Errorf("seed pack %s: %w", id.Short(), err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("seed synthetic index: %w", err)
	}
	st := &SyntheticIndexStats{Objects: n, Packs: npacks, Elapsed: time.Since(start)}
	if fi, err := os.Stat(s.idx.path); err == nil {
		st.IndexBytes = fi.Size()
	}
	return st, nil
}

// sortedRandomID returns the i-th of n random IDs in increasing order: its first 8
// bytes fall in the i-th of n equal slices of the 64-bit range, the rest is random.
// The slices are disjoint, so the IDs are distinct and sorted without a sort, and
// uniform over the ID space as content hashes are.
func sortedRandomID(i, n int, rng *rand.Rand) ID {
	var id ID
	stride := ^uint64(0) / uint64(n)
	binary.BigEndian.PutUint64(id[:8], uint64(i)*stride+rng.Uint64N(stride))
	for j := 8; j < len(id); j += 8 {
		binary.LittleEndian.PutUint64(id[j:], rng.Uint64())
	}
	return id
}

func sortedRandomIDs(n int, rng *rand.Rand) []ID {
	ids := make([]ID, n)
	for i := range ids {
		ids[i] = sortedRandomID(i, n, rng)
	}
	return ids
}

// SyntheticIDs returns k of the n IDs that SeedSyntheticIndex(n, seed) writes, spread
// evenly over them, so a benchmark can look up IDs it knows are present. It replays
// the generator, so it costs about a tenth of a second per million records.
func SyntheticIDs(n int, seed uint64, k int) []ID {
	k = min(k, n)
	out := make([]ID, 0, k)
	gen := newSyntheticGen(n, (n+syntheticPerPack-1)/syntheticPerPack, seed)
	step := max(n/max(k, 1), 1)
	for i := 0; i < n && len(out) < k; i++ {
		id, _, _, _ := gen.next(i)
		if i%step == 0 {
			out = append(out, id)
		}
	}
	return out
}

// syntheticGen draws the synthetic records in key order; next must be called with
// i = 0, 1, 2, … for the stream to be the same each time.
type syntheticGen struct {
	rng       *rand.Rand
	n, npacks int
}

func newSyntheticGen(n, npacks int, seed uint64) *syntheticGen {
	return &syntheticGen{rng: rand.New(rand.NewPCG(seed, 0x6f626a73)), n: n, npacks: npacks} // "objs"
}

// next returns the i-th record: its ID, its pack (an index into the pack IDs), its
// stored length (a 4 MiB chunk compressed to 50-100 %) and its CRC. Consecutive IDs
// go to random packs, as content hashes do.
func (g *syntheticGen) next(i int) (id ID, pack int, stored uint64, crc uint32) {
	id = sortedRandomID(i, g.n, g.rng)
	pack = int(g.rng.Uint64N(uint64(g.npacks)))
	stored = uint64(DefaultChunkSize/2 + g.rng.IntN(DefaultChunkSize/2))
	return id, pack, stored, g.rng.Uint32()
}
