package chunkcodec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/klauspost/compress/fse"
	"github.com/klauspost/compress/huff0"
)

type testCase struct {
	name string
	data []byte
	hint Hint
}

func testCases() []testCase {
	const n = 300_000 // more than two blocks of 128 Ki elements
	bfh, f16h, f32h, f8h, f64h := Hint{2, true}, Hint{2, true}, Hint{4, true}, Hint{1, true}, Hint{8, true}
	cs := []testCase{
		{"bf16", bf16Data(1, n, 0.02), bfh},
		{"bf16-wide", bf16Data(2, n, 3), bfh},
		{"bf16-specials", specials(bf16Data(3, n, 0.02), 2, 7), bfh},
		{"f16", f16Data(4, n, 0.02), f16h},
		{"f16-specials", specials(f16Data(5, n, 0.02), 2, 5), f16h},
		{"f32", f32Data(6, n, 0.02), f32h},
		{"f32-specials", specials(f32Data(7, n, 0.02), 4, 3), f32h},
		{"f32-from-bf16", f32FromBF16(8, n, 0.02), f32h},
		{"f8", f8Data(9, n, 0.02), f8h},
		{"f8-specials", specials(f8Data(10, n, 0.02), 1, 11), f8h},
		{"f64", f64Data(11, n/4, 0.02), f64h},
		{"f64-specials", specials(f64Data(12, n/4, 0.02), 8, 3), f64h},
		{"int8", f8Data(13, n, 1), Hint{1, false}},
		{"int32", f32Data(14, n/2, 1), Hint{4, false}},
		{"zeros-bf16", make([]byte, 2*n), bfh},
		{"zeros-f32", make([]byte, 4*n), f32h},
		{"zeros-opaque", make([]byte, n), Hint{}},
		{"repeat-bf16", repeat([]byte{0x3c, 0x3f}, n), bfh},
		{"repeat-f32", repeat([]byte{1, 2, 3, 4}, n), f32h},
		{"random-bf16", randomBytes(15, 2*n), bfh},
		{"random-f32", randomBytes(16, 4*n), f32h},
		{"random-f8", randomBytes(17, n), f8h},
		{"random-opaque", randomBytes(18, n), Hint{}},
		{"text", []byte(textish(n)), Hint{}},
		{"bf16-sparse", sparse(bf16Data(19, n, 0.02), 2, 20), bfh},
		{"f32-sparse", sparse(f32Data(20, n, 0.02), 4, 30), f32h},
	}
	// Odd lengths: not a multiple of the element size, and small sizes
	// around the block and Huffman limits.
	for _, l := range []int{0, 1, 2, 3, 7, 63, 64, 65, 127, 128, 129, 255, 511, 4097, 1<<18 + 3, 1<<18 - 1} {
		cs = append(cs,
			testCase{fmt.Sprintf("bf16-len%d", l), bf16Data(21, l/2+1, 0.02)[:l], bfh},
			testCase{fmt.Sprintf("f32-len%d", l), f32Data(22, l/4+1, 0.02)[:l], f32h},
			testCase{fmt.Sprintf("f8-len%d", l), f8Data(23, l, 0.02), f8h},
		)
	}
	return cs
}

// sparse keeps one element in k and zeroes the rest.
func sparse(b []byte, e, k int) []byte {
	for i := 0; i+e <= len(b); i += e {
		if (i/e)%k != 0 {
			clear(b[i : i+e])
		}
	}
	return b
}

func textish(n int) string {
	var sb bytes.Buffer
	r := newRand(99)
	words := []string{"\"token\"", "\"merges\"", "Ġthe", "Ġof", "ing", "tion", "\"id\":", ",", "\n", "{", "}", "\"vocab\""}
	for sb.Len() < n {
		sb.WriteString(words[r.IntN(len(words))])
		fmt.Fprintf(&sb, "%d", r.IntN(50000))
	}
	return sb.String()[:n]
}

func roundTrip(t *testing.T, id ID, enc []byte, want []byte) {
	t.Helper()
	got, err := Decode(id, nil, enc, len(want))
	if err != nil {
		t.Fatalf("%v: decode: %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%v: round trip differs", id)
	}
	// Decoding into a buffer with room must not allocate a new one.
	buf := make([]byte, 3, len(want)+10)
	got, err = Decode(id, buf, enc, len(want))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%v: decode into buffer: %v", id, err)
	}
	if len(want) > 0 && &got[0] != &buf[:1][0] {
		t.Fatalf("%v: decode did not reuse dst", id)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range testCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, id := range []ID{Raw, Zstd, ByteGrouped} {
				enc, err := EncodeWith(id, nil, tc.data, tc.hint)
				if err != nil {
					t.Fatalf("%v: %v", id, err)
				}
				roundTrip(t, id, enc, tc.data)
				if id == ByteGrouped && len(enc) > len(tc.data)+64 {
					t.Errorf("bytegrouped expanded %d bytes to %d", len(tc.data), len(enc))
				}
			}
			id, enc, err := Encode(nil, tc.data, tc.hint)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, id, enc, tc.data)
			if len(enc) > len(tc.data) {
				t.Errorf("Encode expanded %d bytes to %d with %v", len(tc.data), len(enc), id)
			}
			if id != Raw && !keep(len(enc), len(tc.data)) {
				t.Errorf("Encode kept %v at %d of %d bytes", id, len(enc), len(tc.data))
			}
			// Deterministic.
			id2, enc2, _ := Encode(make([]byte, 5), tc.data, tc.hint)
			if id2 != id || !bytes.Equal(enc, enc2) {
				t.Errorf("Encode is not deterministic")
			}
			t.Logf("%-8v %8d -> %8d (%.4f)", id, len(tc.data), len(enc), float64(len(enc))/float64(max(len(tc.data), 1)))
		})
	}
}

// TestChoice checks what Encode picks for typical chunks.
func TestChoice(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		hint Hint
		want ID
	}{
		{"random-bf16", randomBytes(1, 1<<20), Hint{2, true}, Raw},
		{"random-f32", randomBytes(2, 1<<20), Hint{4, true}, Raw},
		{"random-int8", randomBytes(3, 1<<20), Hint{1, false}, Raw},
		{"random-opaque", randomBytes(4, 1<<20), Hint{}, Raw},
		{"bf16", bf16Data(5, 1<<19, 0.02), Hint{2, true}, ByteGrouped},
		{"f32", f32Data(6, 1<<18, 0.02), Hint{4, true}, ByteGrouped},
		{"zeros", make([]byte, 1<<20), Hint{2, true}, ByteGrouped},
		{"text", []byte(textish(1 << 20)), Hint{}, Zstd},
		{"tiny", []byte{1, 2, 3}, Hint{2, true}, Raw},
	} {
		id, enc, err := Encode(nil, tc.data, tc.hint)
		if err != nil {
			t.Fatal(err)
		}
		if id != tc.want {
			t.Errorf("%s: Encode chose %v (%d -> %d bytes), want %v", tc.name, id, len(tc.data), len(enc), tc.want)
		}
	}
}

// TestRandomNoExpansion: incompressible input costs only framing.
func TestRandomNoExpansion(t *testing.T) {
	for _, e := range []int{1, 2, 4, 8} {
		data := randomBytes(uint64(e), 1<<20+e/2)
		enc, err := EncodeWith(ByteGrouped, nil, data, Hint{e, true})
		if err != nil {
			t.Fatal(err)
		}
		if over := len(enc) - len(data); over > 4+binary10+descSize*e {
			t.Errorf("e=%d: bytegrouped added %d bytes", e, over)
		}
	}
}

const binary10 = 10

// TestHuff0Compatible decodes the Huffman blocks this package writes with
// huff0's own decoder, and checks the table parser against huff0's.
func TestHuff0Compatible(t *testing.T) {
	planes := map[string][]byte{}
	bf := bf16Data(1, 1<<17, 0.02)
	lo, hi := make([]byte, 1<<17), make([]byte, 1<<17)
	split2(bf, lo, hi, true)
	planes["exponent"] = hi
	planes["f8"] = f8Data(2, 100_000, 0.02)
	planes["text"] = []byte(textish(70_000))
	planes["two-symbols"] = repeat([]byte{0, 0, 0, 1}, 20_000)
	planes["many-symbols"] = func() []byte {
		b := randomBytes(3, 1<<17)
		for i := range b {
			b[i] &= 0x3f
		}
		return b
	}()
	for name, p := range planes {
		t.Run(name, func(t *testing.T) {
			var hist [256]uint32
			histogram(&hist, p)
			var ht huffTable
			var hs huff0.Scratch
			var enc *bgEncoder = new(bgEncoder)
			table, err := buildTable(nil, &ht, &hist, &hs, &enc.fs)
			if err != nil {
				t.Fatal(err)
			}
			var et encTable
			ht.encTable(&et)
			var dt decTable
			ht.decTable(&dt)
			var pt pairTable
			et.fillPairs(&pt)
			for i, m := range []int{minHuffBlock, 1000, 4096 + 3, len(p), minHuffBlock + 1, 1001, 4096 + 2, len(p) - 1} {
				blk := p[:m]
				pairs := &pt
				if i >= 4 {
					pairs = nil
				}
				code := encode4X(nil, blk, &et, pairs)
				s, rest, err := huff0.ReadTable(table, nil)
				if err != nil || len(rest) != 0 {
					t.Fatalf("huff0 rejects our table: %v (%d left)", err, len(rest))
				}
				got, err := s.Decoder().Decompress4X(make([]byte, 0, m), code)
				if err != nil || !bytes.Equal(got, blk) {
					t.Fatalf("m=%d: huff0 decode: %v", m, err)
				}
				mine := make([]byte, m)
				if err := decode4X(mine, code, &dt); err != nil || !bytes.Equal(mine, blk) {
					t.Fatalf("m=%d: decode4X: %v", m, err)
				}
			}
		})
	}
}

func TestCorrupt(t *testing.T) {
	data := specials(bf16Data(1, 200_000, 0.02), 2, 9)
	f32 := f32FromBF16(2, 100_000, 0.02)
	text := []byte(textish(100_000))
	for _, tc := range []struct {
		id   ID
		data []byte
		hint Hint
	}{
		{ByteGrouped, data, Hint{2, true}},
		{ByteGrouped, f32, Hint{4, true}},
		{ByteGrouped, sparse(f32Data(3, 100_000, 1), 4, 20), Hint{4, true}},
		{Zstd, text, Hint{}},
		{Raw, text, Hint{}},
	} {
		enc, err := EncodeWith(tc.id, nil, tc.data, tc.hint)
		if err != nil {
			t.Fatal(err)
		}
		n := len(tc.data)
		check := func(what string, src []byte, rawLen int) {
			t.Helper()
			got, err := Decode(tc.id, nil, src, rawLen)
			if err == nil && rawLen == n && bytes.Equal(got, tc.data) && bytes.Equal(src, enc) {
				return
			}
			if err == nil {
				// A flipped bit in a raw plane or a stored mantissa
				// decodes to different bytes of the right length;
				// detecting that is BLAKE3's job, not the codec's.
				if len(got) != rawLen {
					t.Fatalf("%v %s: %d bytes for raw length %d", tc.id, what, len(got), rawLen)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%v %s: error %v does not wrap ErrCorrupt", tc.id, what, err)
			}
		}
		check("wrong length+1", enc, n+1)
		check("wrong length-1", enc, n-1)
		check("zero length", enc, 0)
		if _, err := Decode(tc.id, nil, enc, -1); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("negative length: %v", err)
		}
		for cut := 0; cut < len(enc); cut += 1 + len(enc)/300 {
			check(fmt.Sprintf("truncated to %d", cut), enc[:cut], n)
		}
		check("extended", append(bytes.Clone(enc), 0), n)
		r := newRand(7)
		for i := 0; i < 2000; i++ {
			bad := bytes.Clone(enc)
			pos := r.IntN(len(bad))
			if i%2 == 0 {
				pos = r.IntN(min(len(bad), 64)) // header and tables
			}
			bad[pos] ^= 1 << r.IntN(8)
			check(fmt.Sprintf("bit flip at %d", pos), bad, n)
		}
	}
	if _, err := Decode(ID(9), nil, nil, 0); !errors.Is(err, ErrUnknownCodec) {
		t.Fatalf("unknown codec: %v", err)
	}
}

func TestHints(t *testing.T) {
	for _, h := range []Hint{{3, true}, {-1, false}, {16, false}, {0, true}} {
		if _, _, err := Encode(nil, []byte("abc"), h); !errors.Is(err, ErrHint) {
			t.Errorf("%+v: %v", h, err)
		}
	}
	if _, err := EncodeWith(ID(3), nil, []byte("abc"), Hint{}); !errors.Is(err, ErrUnknownCodec) {
		t.Errorf("unknown codec: %v", err)
	}
}

func TestIDString(t *testing.T) {
	for id, want := range map[ID]string{Raw: "raw", Zstd: "zstd", ByteGrouped: "bytegrouped", 7: "ID(7)"} {
		if id.String() != want {
			t.Errorf("%d: %q", uint8(id), id.String())
		}
	}
}

func TestConcurrent(t *testing.T) {
	cs := testCases()[:12]
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range cs {
				tc := cs[(i+g)%len(cs)]
				id, enc, err := Encode(nil, tc.data, tc.hint)
				if err == nil {
					var got []byte
					got, err = Decode(id, nil, enc, len(tc.data))
					if err == nil && !bytes.Equal(got, tc.data) {
						err = fmt.Errorf("%s: mismatch", tc.name)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// refSplit is the plane layout of planes.go written out plainly: element
// groups of eight, permuted within a group, the last n mod 8 in order.
func refSplit(src []byte, e int, rotate bool) [][]byte {
	n := len(src) / e
	order := map[int][]int{1: {0, 1, 2, 3, 4, 5, 6, 7}, 2: {0, 4, 1, 5, 2, 6, 3, 7}, 4: {0, 2, 4, 6, 1, 3, 5, 7}, 8: {0, 1, 2, 3, 4, 5, 6, 7}}[e]
	p := make([][]byte, e)
	for i := range p {
		p[i] = make([]byte, n)
	}
	for i := 0; i < n; i++ {
		el := i // element stored at plane position i
		if g := i &^ 7; g+8 <= n {
			el = g + order[i&7]
		}
		b := bytes.Clone(src[el*e : el*e+e])
		if rotate {
			v := uint16(b[e-2]) | uint16(b[e-1])<<8
			v = v<<1 | v>>15
			b[e-2], b[e-1] = byte(v), byte(v>>8)
		}
		for j := range e {
			p[j][i] = b[j]
		}
	}
	return p
}

func TestPlanes(t *testing.T) {
	for _, e := range []int{1, 2, 4, 8} {
		for _, rotate := range []bool{false, true} {
			if e == 1 && rotate {
				continue
			}
			for _, n := range []int{0, 1, 7, 8, 9, 100} {
				src := randomBytes(uint64(n), n*e)
				var p [8][]byte
				for i := range e {
					p[i] = make([]byte, n)
				}
				splitPlanes(src, e, &p, rotate)
				ref := refSplit(src, e, rotate)
				for i := range e {
					if !bytes.Equal(p[i], ref[i]) {
						t.Fatalf("e=%d rotate=%v n=%d: plane %d differs from reference", e, rotate, n, i)
					}
				}
				got := make([]byte, n*e)
				mergePlanes(got, e, &p, rotate)
				if !bytes.Equal(got, src) {
					t.Fatalf("e=%d rotate=%v n=%d: merge differs", e, rotate, n)
				}
			}
		}
	}
	// BF16 1.0 = 0x3f80: s=0 e=0x7f m=0 -> rotated 0x7f00: exponent plane
	// 0x7f, mantissa plane 0.
	lo, hi := make([]byte, 1), make([]byte, 1)
	split2([]byte{0x80, 0x3f}, lo, hi, true)
	if hi[0] != 0x7f || lo[0] != 0 {
		t.Fatalf("bf16 1.0 split to %#x %#x", hi[0], lo[0])
	}
	// -1.0 = 0xbf80: the sign lands in bit 0 of the low plane.
	split2([]byte{0x80, 0xbf}, lo, hi, true)
	if hi[0] != 0x7f || lo[0] != 1 {
		t.Fatalf("bf16 -1.0 split to %#x %#x", hi[0], lo[0])
	}
}

func TestHistogramPairs(t *testing.T) {
	var tab [1 << 16]uint32
	for _, n := range []int{0, 1, 7, 8, 9, 1000, 1<<18 + 5} {
		b := f8Data(uint64(n), n, 0.02)
		var want, got [256]uint32
		for _, v := range b {
			want[v]++
		}
		histogramPairs(&got, &tab, b)
		if got != want {
			t.Fatalf("n=%d: histogramPairs differs", n)
		}
		got = [256]uint32{}
		histogram(&got, b)
		if got != want {
			t.Fatalf("n=%d: histogram differs", n)
		}
	}
}

// frameModes returns the plane modes of a ByteGrouped frame and, for coded
// planes, the modes of their blocks.
func frameModes(t *testing.T, f []byte) (planes []byte, blocks [][]byte) {
	t.Helper()
	e := int(f[1])
	rawLen, k := binary.Uvarint(f[4:])
	pos := 4 + k
	n := int(rawLen) / e
	var lens []int
	for p := 0; p < e; p++ {
		d := f[pos+p*descSize:]
		planes = append(planes, d[0])
		lens = append(lens, int(binary.LittleEndian.Uint32(d[1:])))
	}
	pos += descSize * e
	for _, m := range planes {
		if m == planeRaw {
			pos += n
		}
	}
	blocks = make([][]byte, e)
	for p, m := range planes {
		if m != planeCoded {
			continue
		}
		c, end := pos, pos+lens[p]
		if f[c] == 1 {
			var ht huffTable
			var fs fse.Scratch
			used, err := parseTable(&ht, f[c+1:end], &fs)
			if err != nil {
				t.Fatal(err)
			}
			c += used
		}
		c++
		for j := 0; j < n; j += 1 << f[3] {
			m := min(1<<f[3], n-j)
			blocks[p] = append(blocks[p], f[c])
			switch f[c] {
			case blockRaw:
				c += 1 + m
			case blockConst:
				c += 2
			default:
				c += blockHdrLen + uint24(f[c+1:])
			}
		}
		if c != end {
			t.Fatalf("plane %d: blocks end at %d, want %d", p, c, end)
		}
		pos = end
	}
	return planes, blocks
}

func TestFrameModes(t *testing.T) {
	const n = 200_000
	for _, tc := range []struct {
		name   string
		data   []byte
		hint   Hint
		planes []byte
		block  byte // mode of the coded planes' first block
	}{
		{"bf16", bf16Data(1, n, 0.02), Hint{2, true}, []byte{planeRaw, planeCoded}, blockHuff},
		{"f32", f32Data(2, n, 0.02), Hint{4, true}, []byte{planeRaw, planeRaw, planeRaw, planeCoded}, blockHuff},
		{"f32-from-bf16", f32FromBF16(3, n, 0.02), Hint{4, true}, []byte{planeConst, planeConst, planeRaw, planeCoded}, blockHuff},
		{"f32-sparse", sparse(f32Data(4, n, 1), 4, 30), Hint{4, true}, []byte{planeCoded, planeCoded, planeCoded, planeCoded}, blockZstd},
		{"zeros", make([]byte, 2*n), Hint{2, true}, []byte{planeConst, planeConst}, 0},
		{"random", randomBytes(5, 2*n), Hint{2, true}, []byte{planeRaw, planeRaw}, 0},
	} {
		f, err := EncodeWith(ByteGrouped, nil, tc.data, tc.hint)
		if err != nil {
			t.Fatal(err)
		}
		planes, blocks := frameModes(t, f)
		if !bytes.Equal(planes, tc.planes) {
			t.Errorf("%s: plane modes %v, want %v", tc.name, planes, tc.planes)
		}
		for p, b := range blocks {
			if len(b) > 0 && b[0] != tc.block {
				t.Errorf("%s: plane %d blocks %v, want first %d", tc.name, p, b, tc.block)
			}
		}
	}
}
