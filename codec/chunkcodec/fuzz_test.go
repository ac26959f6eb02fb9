package chunkcodec

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// Fuzz targets; crashers are kept in testdata/fuzz/<Target>/ and replayed by
// go test. To fuzz:
//
//	go test ./codec/chunkcodec -run '^$' -fuzz FuzzDecode -fuzztime 45s
//	go test ./codec/chunkcodec -run '^$' -fuzz FuzzRoundTrip -fuzztime 45s

// fuzzMaxRawLen caps the raw length the fuzzer may ask Decode for.
const fuzzMaxRawLen = 8 << 20

func fuzzHint(elem uint8, float bool) Hint {
	e := []int{0, 1, 2, 4, 8}[elem%5]
	return Hint{ElemBytes: e, Float: float && e > 0}
}

// seedInputs are small chunks of every kind the codecs treat differently.
func seedInputs() []testCase {
	return []testCase{
		{"bf16", bf16Data(1, 3000, 0.02), Hint{2, true}},
		{"bf16-specials", specials(bf16Data(2, 700, 0.02), 2, 3), Hint{2, true}},
		{"f32", f32Data(3, 600, 0.02), Hint{4, true}},
		{"f32-from-bf16", f32FromBF16(4, 500, 0.02), Hint{4, true}},
		{"f8", f8Data(5, 2000, 0.02), Hint{1, true}},
		{"f64", f64Data(6, 200, 0.02), Hint{8, true}},
		{"sparse", sparse(f32Data(7, 800, 1), 4, 25), Hint{4, true}},
		{"zeros", make([]byte, 1000), Hint{2, true}},
		{"text", []byte(textish(3000)), Hint{}},
		{"random", randomBytes(8, 500), Hint{1, false}},
		{"odd", bf16Data(9, 1000, 0.02)[:1999], Hint{2, true}},
		// Planes in fine blocks with tables, constant and raw blocks.
		{"mixed-rows", mixedRows(10, 20_000, 7)[:79_999], Hint{4, true}},
		{"f8-two-scales", append(f8Data(11, 20_000, 0.02), f8Data(12, 18_000, 1e-3)...), Hint{1, true}},
	}
}

func FuzzDecode(f *testing.F) {
	for _, in := range seedInputs() {
		for _, id := range []ID{Raw, Zstd, ByteGrouped} {
			enc, err := EncodeWith(id, nil, in.data, in.hint)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(id), uint32(len(in.data)), enc)
		}
	}
	// Version 1 frames.
	sums, err := os.ReadFile("testdata/bytegrouped-v1/SUMS")
	if err != nil {
		f.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		var name, sum string
		var rawLen int
		fmt.Sscan(line, &name, &rawLen, &sum)
		if enc, err := os.ReadFile("testdata/bytegrouped-v1/" + name + ".bg"); err == nil && len(enc) < 100_000 {
			f.Add(uint8(ByteGrouped), uint32(rawLen), enc)
		}
	}
	f.Fuzz(func(t *testing.T, id uint8, rawLen uint32, src []byte) {
		n := int(rawLen % (fuzzMaxRawLen + 1))
		out, err := Decode(ID(id%4), nil, src, n)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownCodec) {
				t.Fatalf("error %v wraps neither ErrCorrupt nor ErrUnknownCodec", err)
			}
			return
		}
		if len(out) != n {
			t.Fatalf("decoded %d bytes, want %d", len(out), n)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	for _, in := range seedInputs() {
		f.Add(in.data, uint8(map[int]int{0: 0, 1: 1, 2: 2, 4: 3, 8: 4}[in.hint.ElemBytes]), in.hint.Float)
	}
	f.Fuzz(func(t *testing.T, data []byte, elem uint8, float bool) {
		h := fuzzHint(elem, float)
		id, enc, err := Encode(nil, data, h)
		if err != nil {
			t.Fatal(err)
		}
		if len(enc) > len(data) {
			t.Fatalf("Encode expanded %d bytes to %d with %v", len(data), len(enc), id)
		}
		got, err := Decode(id, nil, enc, len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%v: round trip failed: %v", id, err)
		}
		for _, id := range []ID{Zstd, ByteGrouped} {
			enc, err := EncodeWith(id, nil, data, h)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(id, nil, enc, len(data))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%v: round trip failed: %v", id, err)
			}
		}
	})
}
