package chunkcodec

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
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
		// Tables per block, fine blocks.
		{ByteGrouped, append(bf16Data(4, 1<<17, 0.02), bf16Data(5, 1<<16+77, 1e-4)...), Hint{2, true}},
		{ByteGrouped, mixedRows(6, 120_000, 7), Hint{4, true}},
		{Zstd, text, Hint{}},
		{Raw, text, Hint{}},
	} {
		enc, err := EncodeWith(tc.id, nil, tc.data, tc.hint)
		if err != nil {
			t.Fatal(err)
		}
		var hot []int
		if tc.id == ByteGrouped {
			hot = walkFrame(t, enc).offsets
		}
		checkCorrupt(t, tc.id, enc, tc.data, hot)
	}
	if _, err := Decode(ID(9), nil, nil, 0); !errors.Is(err, ErrUnknownCodec) {
		t.Fatalf("unknown codec: %v", err)
	}
}

// checkCorrupt decodes damaged forms of enc, the encoding of data with
// codec id: each must fail with ErrCorrupt, or decode to the raw length
// (damage to stored bytes is not detectable). hot lists offsets where
// damage is most telling (block headers and tables), which get bit flips
// in the 40 bytes that follow them as well as the header.
func checkCorrupt(t *testing.T, id ID, enc, data []byte, hot []int) {
	t.Helper()
	n := len(data)
	check := func(what string, src []byte, rawLen int) {
		t.Helper()
		got, err := Decode(id, nil, src, rawLen)
		if err == nil && rawLen == n && bytes.Equal(got, data) && bytes.Equal(src, enc) {
			return
		}
		if err == nil {
			// A flipped bit in a raw plane or a stored mantissa
			// decodes to different bytes of the right length;
			// detecting that is BLAKE3's job, not the codec's.
			if len(got) != rawLen {
				t.Fatalf("%v %s: %d bytes for raw length %d", id, what, len(got), rawLen)
			}
			return
		}
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%v %s: error %v does not wrap ErrCorrupt", id, what, err)
		}
	}
	check("wrong length+1", enc, n+1)
	check("wrong length-1", enc, n-1)
	check("zero length", enc, 0)
	if _, err := Decode(id, nil, enc, -1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("negative length: %v", err)
	}
	for cut := 0; cut < len(enc); cut += 1 + len(enc)/300 {
		check(fmt.Sprintf("truncated to %d", cut), enc[:cut], n)
	}
	for _, at := range hot {
		check(fmt.Sprintf("truncated to block at %d", at), enc[:at+1], n)
	}
	check("extended", append(bytes.Clone(enc), 0), n)
	r := newRand(7)
	for i := 0; i < 2000; i++ {
		bad := bytes.Clone(enc)
		pos := r.IntN(len(bad))
		switch {
		case len(hot) > 0 && i%3 == 2:
			pos = min(hot[r.IntN(len(hot))]+r.IntN(40), len(bad)-1)
		case i%2 == 0:
			pos = r.IntN(min(len(bad), 64)) // header and tables
		}
		bad[pos] ^= 1 << r.IntN(8)
		check(fmt.Sprintf("bit flip at %d", pos), bad, n)
	}
}

// TestDecodeVersion1 decodes frames of version 1, which the encoder wrote
// before its tables adapted within a chunk and which a store may hold
// (testdata/bytegrouped-v1, made by that encoder; SUMS gives each frame's
// raw length and the SHA-256 of its raw bytes).
func TestDecodeVersion1(t *testing.T) {
	sums, err := os.ReadFile("testdata/bytegrouped-v1/SUMS")
	if err != nil {
		t.Fatal(err)
	}
	var planeModes, blockModes [5]int
	tail := false
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		var name, sum string
		var rawLen int
		if _, err := fmt.Sscan(line, &name, &rawLen, &sum); err != nil {
			t.Fatalf("SUMS line %q: %v", line, err)
		}
		f, err := os.ReadFile("testdata/bytegrouped-v1/" + name + ".bg")
		if err != nil {
			t.Fatal(err)
		}
		if f[0] != bgVersion1 {
			t.Fatalf("%s: version %d", name, f[0])
		}
		got, err := Decode(ByteGrouped, nil, f, rawLen)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s := fmt.Sprintf("%x", sha256.Sum256(got)); s != sum {
			t.Fatalf("%s: decoded to SHA-256 %s, want %s", name, s, sum)
		}
		roundTrip(t, ByteGrouped, f, got)
		fi := walkFrame(t, f)
		for _, m := range fi.planes {
			planeModes[m]++
		}
		for _, b := range fi.blocks {
			for _, m := range b {
				blockModes[m]++
			}
		}
		tail = tail || rawLen%int(f[1]) != 0
		checkCorrupt(t, ByteGrouped, f, got, fi.offsets)
		// A version 1 frame with a version 2 block is corrupt.
		if at := slices.Index(fi.blocks[len(fi.blocks)-1], blockHuff); at >= 0 {
			bad := bytes.Clone(f)
			bad[fi.offsets[len(fi.offsets)-len(fi.blocks[len(fi.blocks)-1])+at]] = blockTable
			if _, err := Decode(ByteGrouped, nil, bad, rawLen); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s: table block in a version 1 frame: %v", name, err)
			}
		}
	}
	// The frames cover every mode of version 1.
	if planeModes[planeRaw] == 0 || planeModes[planeConst] == 0 || planeModes[planeCoded] == 0 ||
		blockModes[blockRaw] == 0 || blockModes[blockConst] == 0 || blockModes[blockHuff] == 0 || blockModes[blockZstd] == 0 || !tail {
		t.Errorf("testdata covers plane modes %v, block modes %v, tail %v", planeModes, blockModes, tail)
	}
}

// TestVersion2Checks damages the fields that version 2 adds.
func TestVersion2Checks(t *testing.T) {
	data := append(bf16Data(1, 1<<17, 0.02), bf16Data(2, 1<<16, 1e-4)...)
	f, err := EncodeWith(ByteGrouped, nil, data, Hint{2, true})
	if err != nil {
		t.Fatal(err)
	}
	fi := walkFrame(t, f)
	if fmt.Sprint(fi.blocks[1]) != "[4 4]" {
		t.Fatalf("blocks %v", fi.blocks)
	}
	first := fi.offsets[0]
	for _, tc := range []struct {
		name string
		at   int
		v    byte
	}{
		{"header block log", 3, bgBlockLog},
		{"version 3", 0, 3},
		{"plane block log 13", first - 1, bgMinBlockLog - 1},
		{"plane block log 18", first - 1, bgMaxBlockLog + 1},
		{"plane block log 16", first - 1, 16},
		{"Huffman block before a table", first, blockHuff},
		{"block mode 5", first, 5},
	} {
		bad := bytes.Clone(f)
		bad[tc.at] = tc.v
		if _, err := Decode(ByteGrouped, nil, bad, len(data)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", tc.name, err)
		}
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

func TestHistogram(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 1000, 1<<18 + 5} {
		b := f8Data(uint64(n), n, 0.02)
		var want, got [256]uint32
		for _, v := range b {
			want[v]++
		}
		histogram(&got, b)
		if got != want {
			t.Fatalf("n=%d: histogram differs", n)
		}
	}
}

// frameInfo describes a ByteGrouped frame: the plane modes and, for coded
// planes, their block logs, the modes of their blocks and where the blocks
// start in the frame.
type frameInfo struct {
	planes  []byte
	logs    []int
	blocks  [][]byte
	offsets []int
}

// walkFrame parses a valid ByteGrouped frame of either version.
func walkFrame(t testing.TB, f []byte) frameInfo {
	t.Helper()
	e := int(f[1])
	rawLen, k := binary.Uvarint(f[4:])
	pos := 4 + k
	n := int(rawLen) / e
	var fi frameInfo
	var lens []int
	for p := 0; p < e; p++ {
		d := f[pos+p*descSize:]
		fi.planes = append(fi.planes, d[0])
		lens = append(lens, int(binary.LittleEndian.Uint32(d[1:])))
	}
	pos += descSize * e
	for _, m := range fi.planes {
		if m == planeRaw {
			pos += n
		}
	}
	fi.logs = make([]int, e)
	fi.blocks = make([][]byte, e)
	for p, m := range fi.planes {
		if m != planeCoded {
			continue
		}
		c, end := pos, pos+lens[p]
		if f[0] == bgVersion1 {
			fi.logs[p] = int(f[3])
			if f[c] == 1 {
				var ht huffTable
				var fs fse.Scratch
				used, err := parseTable(&ht, f[c+1:end], &fs)
				if err != nil {
					t.Fatal(err)
				}
				c += used
			}
		} else {
			fi.logs[p] = int(f[c])
		}
		c++
		for j := 0; j < n; j += 1 << fi.logs[p] {
			m := min(1<<fi.logs[p], n-j)
			fi.blocks[p] = append(fi.blocks[p], f[c])
			fi.offsets = append(fi.offsets, c)
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
	return fi
}

func TestFrameModes(t *testing.T) {
	const n = 200_000
	for _, tc := range []struct {
		name   string
		data   []byte
		hint   Hint
		planes []byte
		blocks string // the block modes of the coded planes
	}{
		// Independent values: one table per plane.
		{"bf16", bf16Data(1, n, 0.02), Hint{2, true}, []byte{planeRaw, planeCoded}, "[[] [4 2]]"},
		{"f32", f32Data(2, n, 0.02), Hint{4, true}, []byte{planeRaw, planeRaw, planeRaw, planeCoded}, "[[] [] [] [4 2]]"},
		{"f32-from-bf16", f32FromBF16(3, n, 0.02), Hint{4, true}, []byte{planeConst, planeConst, planeRaw, planeCoded}, "[[] [] [] [4 2]]"},
		{"f32-sparse", sparse(f32Data(4, n, 1), 4, 30), Hint{4, true}, []byte{planeCoded, planeCoded, planeCoded, planeCoded}, "[[3 3] [3 3] [3 3] [3 3]]"},
		{"zeros", make([]byte, 2*n), Hint{2, true}, []byte{planeConst, planeConst}, "[[] []]"},
		{"random", randomBytes(5, 2*n), Hint{2, true}, []byte{planeRaw, planeRaw}, "[[] []]"},
		// Two scales: a table each.
		{"bf16-two-scales", append(bf16Data(6, 1<<17, 0.02), bf16Data(7, 1<<16, 1e-4)...), Hint{2, true}, []byte{planeRaw, planeCoded}, "[[] [4 4]]"},
		// A scale that returns: runs are of consecutive blocks, so a
		// third table.
		{"bf16-a-b-a", append(append(bf16Data(8, 1<<17, 0.02), bf16Data(9, 1<<17, 1e-4)...), bf16Data(10, 1<<17, 0.02)...), Hint{2, true}, []byte{planeRaw, planeCoded}, "[[] [4 4 4]]"},
	} {
		f, err := EncodeWith(ByteGrouped, nil, tc.data, tc.hint)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, ByteGrouped, f, tc.data)
		fi := walkFrame(t, f)
		if !bytes.Equal(fi.planes, tc.planes) {
			t.Errorf("%s: plane modes %v, want %v", tc.name, fi.planes, tc.planes)
		}
		if got := fmt.Sprint(fi.blocks); got != tc.blocks {
			t.Errorf("%s: blocks %s, want %s", tc.name, got, tc.blocks)
		}
		for p, l := range fi.logs {
			if fi.planes[p] == planeCoded && l != bgBlockLog {
				t.Errorf("%s: plane %d has block log %d", tc.name, p, l)
			}
		}
	}
}

// mixedRows is F32 data whose rows of 1000 elements are, in turns of
// rowsPer rows, upcast from BF16 (low 16 bits zero), values of a 3-bit low
// mantissa, and full F32: low mantissa planes that change kind within a
// chunk, as some rows of trained embeddings do.
func mixedRows(seed uint64, n, rowsPer int) []byte {
	b := f32Data(seed, n, 0.02)
	for i := 0; i < n; i++ {
		switch i / 1000 / rowsPer % 3 {
		case 0:
			b[4*i], b[4*i+1] = 0, 0
		case 1:
			b[4*i], b[4*i+1] = 0, b[4*i+1]&7
		}
	}
	return b
}

// TestAdaptive checks that planes whose kind changes within the chunk get
// fine blocks, and that they pay.
func TestAdaptive(t *testing.T) {
	data := mixedRows(1, 400_000, 20)
	f, err := EncodeWith(ByteGrouped, nil, data, Hint{4, true})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, ByteGrouped, f, data)
	fi := walkFrame(t, f)
	if fi.planes[0] != planeCoded || fi.logs[0] != bgFineLog || fi.planes[1] != planeCoded || fi.logs[1] != bgFineLog {
		t.Fatalf("planes %v, block logs %v; want planes 0 and 1 coded in fine blocks", fi.planes, fi.logs)
	}
	var count [5]int
	for _, m := range fi.blocks[0] {
		count[m]++
	}
	if count[blockConst] == 0 || count[blockRaw] == 0 {
		t.Errorf("plane 0 blocks %v: want constant and raw ones", fi.blocks[0])
	}
	count = [5]int{}
	for _, m := range fi.blocks[1] {
		count[m]++
	}
	if count[blockConst] == 0 || count[blockRaw] == 0 || count[blockTable] == 0 {
		t.Errorf("plane 1 blocks %v: want constant, raw and table ones", fi.blocks[1])
	}
	// Of plane 0, a third is zero and two thirds are random; of plane 1,
	// a third is zero, a third takes 3 bits and a third is random; plane 2
	// is random and plane 3, the exponent, takes less than 4 bits.
	n := 400_000
	want := n*2/3 + n/3 + n/3*3/8 + n + n/2
	if len(f) > want+want/50 {
		t.Errorf("%d bytes, want at most %d", len(f), want)
	}
	t.Logf("%d -> %d (%.4f)", len(data), len(f), float64(len(f))/float64(len(data)))
}

// refDecTable is decTable written out plainly: for every window, decode
// symbols one at a time while their codes fit.
func refDecTable(t *huffTable, dt *decTable) {
	var single [1 << lookupBits]uint16
	for s := 0; s < 256; s++ {
		l := t.nbits[s]
		if l == 0 {
			continue
		}
		lo := int(t.code[s]) << (lookupBits - l)
		for i := lo; i < lo+1<<(lookupBits-l); i++ {
			single[i] = uint16(s) | uint16(l)<<8
		}
	}
	const mask = 1<<lookupBits - 1
	for i := range dt {
		first := single[i]
		syms := uint64(first & 0xff)
		used := uint(first >> 8)
		n := uint64(1)
		for n < maxSymsPerLookup {
			next := single[(i<<used)&mask]
			l := uint(next >> 8)
			if used+l > lookupBits {
				break
			}
			syms |= uint64(next&0xff) << (8 * n)
			used += l
			n++
		}
		dt[i] = uint64(used) | n<<8 | uint64(first>>8)<<12 | syms<<16
	}
}

func TestDecTable(t *testing.T) {
	var hs huff0.Scratch
	var fs fse.Scratch
	r := newRand(5)
	for i := 0; i < 300; i++ {
		var hist [256]uint32
		nsym := 2 + r.IntN(255)
		if i%3 == 0 {
			nsym = 2 + r.IntN(6)
		}
		for s := 0; s < nsym; s++ {
			// Skewed counts give short codes, and entries of six symbols.
			hist[r.IntN(256)] += 1 + uint32(r.ExpFloat64()*float64(1+r.IntN(1000)))
		}
		if i%5 == 0 {
			hist[r.IntN(256)] += 100000
		}
		var ht huffTable
		if _, err := buildTable(nil, &ht, &hist, &hs, &fs); err != nil {
			continue
		}
		var got, want decTable
		for j := range got {
			got[j] = 0xdeadbeef
		}
		ht.decTable(&got)
		refDecTable(&ht, &want)
		if got != want {
			for j := range got {
				if got[j] != want[j] {
					t.Fatalf("table %d: entry %d is %#x, want %#x", i, j, got[j], want[j])
				}
			}
		}
	}
}

func TestHistBlocks(t *testing.T) {
	var pt [1 << 16]uint32
	bf := bf16Data(3, 300_000, 0.02)
	lo, hi := make([]byte, 300_000), make([]byte, 300_000)
	split2(bf, lo, hi, true)
	wide := randomBytes(4, 100_000)
	for i := range wide[:50_000] {
		wide[i] &= 7
	}
	for name, b := range map[string][]byte{
		"exponent": hi, "mantissa": lo, "wide": wide, "odd": hi[:100_003],
		"tiny": hi[:5], "empty": nil, "specials": specials(bf16Data(5, 50_000, 0.02), 1, 7),
	} {
		for _, log := range []int{8, 14, 17} {
			nb := (len(b) + 1<<log - 1) >> log
			hs := make([][256]uint32, nb)
			for i := range hs {
				hs[i][3] = 99 // overwritten
			}
			var total [256]uint32
			var seed [4]uint64
			if len(b) > 0 {
				seed[b[0]/64] |= 1 << (b[0] % 64)
			}
			if name == "exponent" {
				seed = [4]uint64{0xff00ff, 1 << 60}
			}
			histBlocks(hs, &total, b, log, &pt, &seed)
			var want [256]uint32
			for i := range hs {
				var h [256]uint32
				for _, v := range b[i<<log : min((i+1)<<log, len(b))] {
					h[v]++
					want[v]++
				}
				if h != hs[i] {
					t.Fatalf("%s log %d: block %d differs", name, log, i)
				}
			}
			if total != want {
				t.Fatalf("%s log %d: total differs", name, log)
			}
			if pt != [1 << 16]uint32{} {
				t.Fatalf("%s log %d: pair table not cleared", name, log)
			}
		}
	}
}

// TestDecodeAllocs checks that Decode allocates nothing but its output
// (pooled scratch aside), for valid frames of either version and for
// damaged ones.
func TestDecodeAllocs(t *testing.T) {
	v1, err := os.ReadFile("testdata/bytegrouped-v1/bf16-rawblock.bg")
	if err != nil {
		t.Fatal(err)
	}
	frames := [][]byte{v1}
	for _, d := range []struct {
		data []byte
		hint Hint
	}{
		{append(bf16Data(1, 1<<17, 0.02), bf16Data(2, 1<<17, 1e-4)...), Hint{2, true}},
		{mixedRows(3, 300_000, 9), Hint{4, true}},
		{f8Data(4, 300_000, 0.02), Hint{1, true}},
	} {
		f, err := EncodeWith(ByteGrouped, nil, d.data, d.hint)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	rawLen := func(f []byte) int {
		l, _ := binary.Uvarint(f[4:])
		return int(l)
	}
	for i, f := range frames {
		n := rawLen(f)
		dst := make([]byte, n)
		if _, err := Decode(ByteGrouped, dst, f, n); err != nil {
			t.Fatal(err)
		}
		if a := testing.AllocsPerRun(20, func() { Decode(ByteGrouped, dst, f, n) }); a >= 1 {
			t.Errorf("frame %d: %.1f allocations a decode into a buffer", i, a)
		}
		// Damaged frames: at most the output and scratch (eight plane
		// buffers of a block and eight decode tables, pooled).
		const scratch = 8<<17 + 8*16<<10
		r := newRand(uint64(i))
		var before, after runtime.MemStats
		const runs = 200
		runtime.ReadMemStats(&before)
		for range runs {
			bad := bytes.Clone(f)
			if r.IntN(2) == 0 {
				bad = bad[:r.IntN(len(bad))]
			} else {
				bad[r.IntN(len(bad))] ^= 1 << r.IntN(8)
			}
			Decode(ByteGrouped, nil, bad, n)
		}
		runtime.ReadMemStats(&after)
		perRun := int(after.TotalAlloc-before.TotalAlloc)/runs - len(f) // the clone
		t.Logf("frame %d: %d bytes over the raw length a damaged decode", i, perRun-n)
		if perRun > n+scratch/8 {
			t.Errorf("frame %d: %d bytes allocated a damaged decode, raw length %d", i, perRun, n)
		}
	}
}
