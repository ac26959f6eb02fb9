package pack

import (
	"bytes"
	"slices"
	"testing"
)

// TestStoredInMapEveryBitFlip: reading from a mapping of a pack with any single bit
// flipped returns each entry's exact bytes or an error, never wrong bytes.
func TestStoredInMapEveryBitFlip(t *testing.T) {
	orig, entries, objs := smallPack(t)
	for i, e := range entries {
		got, err := StoredInMap(orig, "p", e)
		if err != nil || !bytes.Equal(got, objs[i].data) {
			t.Fatalf("intact pack, entry %d: %v", i, err)
		}
	}
	b := slices.Clone(orig)
	for bit := range 8 * len(orig) {
		i, m := bit/8, byte(1)<<(bit%8)
		b[i] ^= m
		for k, e := range entries {
			got, err := StoredInMap(b, "p", e)
			if err == nil && !bytes.Equal(got, objs[k].data) {
				t.Fatalf("byte %d bit %d: entry %d returned wrong bytes", i, bit%8, k)
			}
		}
		b[i] ^= m
	}
	if _, err := StoredInMap(orig[:len(orig)/2], "p", entries[len(entries)-1]); err == nil {
		t.Fatal("entry beyond a short mapping accepted")
	}
}
