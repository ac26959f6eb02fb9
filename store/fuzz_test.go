package store

import (
	"testing"
)

// Decoders of the store's own on-disk records: the refs file, index values and
// metadata objects. Damaged input must give an error, never a panic.

func FuzzParseRefs(f *testing.F) {
	id := Sum([]byte("x"))
	good := encodeRefs(map[RefName]refState{{Name: "org/m", Tag: "main"}: {id: id}, {Name: "m", Tag: "v1"}: {id: id, fixed: true}}, 0)
	f.Add(good)
	f.Add([]byte(refsHeader + "\n# crc32c 00000000\n"))
	f.Add(good[:len(good)-3])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		refs, err := parseRefs(data, "refs")
		if err != nil {
			return
		}
		// Whatever parses re-encodes to something that parses to the same refs.
		again, err := parseRefs(encodeRefs(refs, 0), "refs")
		if err != nil || len(again) != len(refs) {
			t.Fatalf("re-encoded refs do not parse back: %v", err)
		}
		for r, id := range refs {
			if again[r] != id {
				t.Fatalf("ref %s changed", r)
			}
		}
	})
}

func FuzzDecodeLocation(f *testing.F) {
	f.Add(Location{Offset: 24, StoredLen: 100, RawLen: 200, Kind: KindChunk, Codec: 2, CRC: 7}.encode())
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		loc, err := decodeLocation(ID{}, data)
		if err == nil && string(loc.encode()) != string(data) {
			t.Fatalf("accepted a record that does not re-encode identically")
		}
	})
}

func FuzzDecodeObject(f *testing.F) {
	for kind, v := range map[Kind]any{
		KindTensor:   &Tensor{DType: "BF16", Shape: []uint64{2, 3}, Size: 12, Chunks: []ChunkRef{{ID: Sum([]byte("a")), Size: 12}}},
		KindFile:     &File{Format: FormatBlob, Size: 3, SHA256: "ab", Chunks: []ChunkRef{}},
		KindManifest: &Manifest{Files: []ManifestEntry{{Path: "a", Size: 1}}},
		KindCommit:   &Commit{Time: "2026-01-01T00:00:00Z", Provenance: Provenance{Op: "import"}},
	} {
		data, _, err := encodeObject(kind, v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(kind), data)
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		var v any
		switch Kind(kind) {
		case KindTensor:
			v = &Tensor{}
		case KindFile:
			v = &File{}
		case KindManifest:
			v = &Manifest{}
		case KindCommit:
			v = &Commit{}
		default:
			return
		}
		_ = decodeObject(Kind(kind), data, v)
	})
}
