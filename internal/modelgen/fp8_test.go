package modelgen

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
)

// fp8Matrix is one quantized weight as read back: codes and the scale grid.
type fp8Matrix struct {
	rows, cols, block int
	src               []byte // the source BF16 bytes
	codes             []byte
	scales            []float32
	scaleDType        safetensors.DType
}

func decodeScales(t *testing.T, d safetensors.DType, b []byte) []float32 {
	t.Helper()
	var out []float32
	switch d {
	case safetensors.F32:
		for i := 0; i+4 <= len(b); i += 4 {
			out = append(out, math.Float32frombits(binary.LittleEndian.Uint32(b[i:])))
		}
	case safetensors.BF16:
		for i := 0; i+2 <= len(b); i += 2 {
			out = append(out, numeric.BF16ToF32(binary.LittleEndian.Uint16(b[i:])))
		}
	default:
		t.Fatalf("scale dtype %s", d)
	}
	return out
}

func bf16Value(b []byte, i int) float32 {
	return numeric.BF16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
}

// check verifies a quantized matrix against its source without reusing the
// quantizer's code paths where avoidable:
//   - each scale is the block's absolute maximum / 448, computed in float64
//     and rounded once to the scale dtype (or that dtype's eps for an
//     all-zero block);
//   - each code is the E4M3FN value nearest to x/scale (x/scale taken
//     through BF16 first for BF16 scales, clamped to ±448), judged by
//     distance in float64 against half the grid spacing there;
//   - each dequantized value code·scale is within the FP8 quantization
//     error of the source value;
//   - every block with a normal, non-eps scale uses the full range: its
//     largest code is ±448.
func (m fp8Matrix) check(t *testing.T, name string) {
	t.Helper()
	nbr, nbc := (m.rows+m.block-1)/m.block, (m.cols+m.block-1)/m.block
	if len(m.scales) != nbr*nbc || len(m.codes) != m.rows*m.cols {
		t.Fatalf("%s: %d scales and %d codes for %dx%d, want %d and %d", name, len(m.scales), len(m.codes), m.rows, m.cols, nbr*nbc, m.rows*m.cols)
	}
	amax := make([]float64, nbr*nbc)
	maxCode := make([]uint8, nbr*nbc)
	for r := range m.rows {
		for c := range m.cols {
			b := r/m.block*nbc + c/m.block
			amax[b] = max(amax[b], math.Abs(float64(bf16Value(m.src, r*m.cols+c))))
			maxCode[b] = max(maxCode[b], m.codes[r*m.cols+c]&0x7F)
		}
	}
	bad := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if bad++; bad <= 5 {
			t.Errorf("%s: "+format, append([]any{name}, args...)...)
		}
	}
	for b, a := range amax {
		want := float32(a / 448)
		eps := float32(0x1p-23)
		if m.scaleDType == safetensors.BF16 {
			want, eps = numeric.BF16ToF32(numeric.F32ToBF16(want)), 0x1p-7
		}
		if want == 0 {
			want = eps
		}
		if m.scales[b] != want {
			fail("block %d: scale %g, want %g (amax %g)", b, m.scales[b], want, a)
		}
		// A subnormal or underflowed scale is too coarse to put the
		// maximum exactly at 448 (BF16 turns amax 1e-39 into eps).
		if a != 0 && want >= 0x1p-126 && m.scales[b] == want && want != eps && maxCode[b] != 0x7E {
			fail("block %d: largest code %#02x, want 0x7E", b, maxCode[b])
		}
	}
	for r := range m.rows {
		for c := range m.cols {
			i := r*m.cols + c
			x := bf16Value(m.src, i)
			s := m.scales[r/m.block*nbc+c/m.block]
			code := m.codes[i]
			got := float64(numeric.E4M3FNToF32(code))
			if code&0x80 != 0 != math.Signbit(float64(x)) || math.IsNaN(got) {
				fail("[%d,%d] = %v: code %#02x has the wrong sign or is NaN", r, c, x, code)
				continue
			}
			y := float64(x / s)
			if m.scaleDType == safetensors.BF16 {
				y = float64(numeric.BF16ToF32(numeric.F32ToBF16(x / s)))
			}
			y = math.Max(-448, math.Min(448, y))
			spacing := 0x1p-9
			if ay := math.Abs(y); ay >= 0x1p-6 {
				_, e := math.Frexp(ay)
				spacing = math.Ldexp(1, e-1-3)
			}
			if math.Abs(got-y) > spacing/2 {
				fail("[%d,%d] = %v: code %#02x = %v is not the nearest to %v", r, c, x, code, got, y)
			}
			// The quantization error bound: half a grid step, relative
			// 2^-4 for normals and 2^-10·scale in the subnormal range, plus
			// BF16's rounding of the quotient for BF16 scales.
			rel := 0x1p-4
			if m.scaleDType == safetensors.BF16 {
				rel += 0x1p-8
			}
			deq, xf, sf := got*float64(s), float64(x), float64(s)
			if math.Abs(deq-xf) > rel*math.Abs(xf)+0x1p-10*sf+0x1p-20*(math.Abs(xf)+sf) {
				fail("[%d,%d] = %v: dequantized %v is outside the FP8 error", r, c, x, deq)
			}
		}
	}
}

// quantizeMatrix runs the quantizer on one in-memory BF16 matrix, through
// the same writeScales/writeCodes calls WriteFP8Block makes, and checks the
// codes do not depend on whether the scales were cached.
func quantizeMatrix(t *testing.T, scaleDType safetensors.DType, block, rows, cols int, src []byte) fp8Matrix {
	t.Helper()
	info := safetensors.TensorInfo{Name: "w", DType: safetensors.BF16, Shape: []uint64{uint64(rows), uint64(cols)}, End: uint64(len(src))}
	q := newFP8Quantizer(scaleDType, block)
	var scales, codes, uncached bytes.Buffer
	if err := q.writeScales(&scales, bytes.NewReader(src), info); err != nil {
		t.Fatal(err)
	}
	if err := q.writeCodes(&codes, bytes.NewReader(src), info); err != nil {
		t.Fatal(err)
	}
	if err := newFP8Quantizer(scaleDType, block).writeCodes(&uncached, bytes.NewReader(src), info); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(codes.Bytes(), uncached.Bytes()) {
		t.Fatalf("codes differ with and without cached scales")
	}
	return fp8Matrix{rows: rows, cols: cols, block: block, src: src, codes: codes.Bytes(),
		scales: decodeScales(t, scaleDType, scales.Bytes()), scaleDType: scaleDType}
}

func bf16Bytes(bits ...uint16) []byte {
	b := make([]byte, 2*len(bits))
	for i, v := range bits {
		binary.LittleEndian.PutUint16(b[2*i:], v)
	}
	return b
}

// The dequantized 3×3 matrix of formats.md §14.8.
var section148BF16 = []uint16{0x3DCD, 0x3E4D, 0xC040, 0x4233, 0x394D, 0x0000, 0x3AC0, 0xBB40, 0x3F5A}

// TestSection148Dequant checks formats.md §14.8 with 2×2 blocks over a 3×3
// weight (so three of the four blocks are partial): codes × scales, the
// product rounded to float32 and then to BF16, for F32 and BF16 scales.
// The dequantization is written out here, as the block indexing the
// quantizer's own checks rely on.
func TestSection148Dequant(t *testing.T) {
	codes := []byte{0x38, 0x40, 0xB8, 0x7E, 0x01, 0x00, 0x3C, 0xC4, 0x30}
	for name, scales := range map[string][]float32{
		"F32":  {0.1, 3.0, 0x1p-10, 1.7},
		"BF16": {numeric.BF16ToF32(numeric.F32ToBF16(0.1)), 3.0, 0x1p-10, numeric.BF16ToF32(numeric.F32ToBF16(1.7))},
	} {
		const rows, cols, block = 3, 3, 2
		if nbr, nbc := cdiv(rows, block), cdiv(cols, block); nbr != 2 || nbc != 2 {
			t.Fatalf("grid %dx%d, want 2x2", nbr, nbc)
		}
		for i, c := range codes {
			r, col := i/cols, i%cols
			s := scales[r/block*2+col/block]
			p := float32(numeric.E4M3FNToF32(c) * s) // one float32 rounding, no fused multiply
			if got := numeric.F32ToBF16(p); got != section148BF16[i] {
				t.Errorf("%s scales: [%d,%d] = %#04x, want %#04x", name, r, col, got, section148BF16[i])
			}
		}
	}
	if got := cdiv(200, fp8BlockSize)*10 + cdiv(300, fp8BlockSize); got != 23 {
		t.Errorf("200x300 with 128-blocks: grid %d, want [2,3]", got)
	}
}

// TestSection148Quantize quantizes §14.8's dequantized matrix back with 2×2
// blocks. The expected scales and codes are worked out by hand: each
// block's largest element maps to ±448, and the partial blocks see only
// the elements that exist (block (1,1) holds just 0.8515625).
func TestSection148Quantize(t *testing.T) {
	src := bf16Bytes(section148BF16...)
	m := quantizeMatrix(t, safetensors.F32, 2, 3, 3, src)
	wantScales := []float32{44.75 / 448, 3.0 / 448, 0.0029296875 / 448, 0.8515625 / 448}
	if !reflect.DeepEqual(m.scales, wantScales) {
		t.Errorf("scales %v, want %v", m.scales, wantScales)
	}
	// 0.1001/(44.75/448) = 1.002 → 1.0; 0.2002/… = 2.004 → 2.0;
	// 0.000195/… = 1.002·2^-9 → 0x01; 0.00146/(0.00293/448) = 224 → 0x76.
	wantCodes := []byte{0x38, 0x40, 0xFE, 0x7E, 0x01, 0x00, 0x76, 0xFE, 0x7E}
	if !bytes.Equal(m.codes, wantCodes) {
		t.Errorf("codes % x, want % x", m.codes, wantCodes)
	}
	m.check(t, "§14.8 F32")
	quantizeMatrix(t, safetensors.BF16, 2, 3, 3, src).check(t, "§14.8 BF16")
}

// randomMatrix returns BF16 bytes for a rows×cols matrix whose blocks
// (of the given edge) have very different magnitudes, including an all-zero
// block, one of BF16 subnormals and one near 1e30, so scales span the
// float32 range.
func randomMatrix(seed uint64, rows, cols, block int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	nbc := (cols + block - 1) / block
	mags := []float64{0, 1e-39, 1e-6, 1e-3, 0.02, 1, 300, 1e5, 1e30}
	b := make([]byte, 2*rows*cols)
	for r := range rows {
		for c := range cols {
			blk := r/block*nbc + c/block
			v := rng.NormFloat64() * mags[blk%len(mags)]
			binary.LittleEndian.PutUint16(b[2*(r*cols+c):], numeric.F32ToBF16(float32(v)))
		}
	}
	return b
}

func TestQuantizeMatrices(t *testing.T) {
	for _, d := range []safetensors.DType{safetensors.F32, safetensors.BF16} {
		for _, shape := range [][3]int{{3, 3, 2}, {7, 5, 2}, {200, 300, 128}, {128, 128, 128}, {1, 129, 128}, {300, 20, 8}} {
			rows, cols, block := shape[0], shape[1], shape[2]
			src := randomMatrix(uint64(rows*cols), rows, cols, block)
			quantizeMatrix(t, d, block, rows, cols, src).check(t, fmt.Sprintf("%s %dx%d/%d", d, rows, cols, block))
		}
	}
}

// TestQuantizeAcrossChunks quantizes a matrix larger than one writeChunks
// chunk with rows that straddle chunk and sub-chunk boundaries.
func TestQuantizeAcrossChunks(t *testing.T) {
	if testing.Short() {
		t.Skip("quantizes 2.5M elements")
	}
	rows, cols := 2000, 1250 // 2.5M elements: two chunks; 1250 divides neither 2^21 nor 2^16
	src := randomMatrix(9, rows, cols, fp8BlockSize)
	quantizeMatrix(t, safetensors.F32, fp8BlockSize, rows, cols, src).check(t, "2000x1250")
}

// TestBF16ScaleDivision backs scaleFor's claim: for every finite BF16
// absolute maximum, torch's CPU division (float32 a/448, then BF16) and its
// CUDA one (a times the float32 reciprocal of 448, then BF16) give the same
// BF16 scale, so the BF16 scales written here match llm-compressor on
// either device.
func TestBF16ScaleDivision(t *testing.T) {
	const recip = float32(1.0 / 448)
	for u := range uint16(0x7F80) {
		a := numeric.BF16ToF32(u)
		cpu := numeric.F32ToBF16(a / 448)
		cuda := numeric.F32ToBF16(float32(a * recip))
		if cpu != cuda {
			t.Errorf("amax %v (%#04x): CPU scale %#04x, CUDA %#04x", a, u, cpu, cuda)
		}
	}
}

// readFP8Matrices pairs each quantized weight of an FP8 directory with its
// source weight.
func readFP8Matrices(t *testing.T, srcData map[string][]byte, infos map[string]safetensors.TensorInfo, data map[string][]byte) map[string]fp8Matrix {
	t.Helper()
	out := make(map[string]fp8Matrix)
	for name, info := range infos {
		if !isLinearWeight(name) {
			continue
		}
		scale := strings.TrimSuffix(name, "weight") + "weight_scale"
		si, ok := infos[scale]
		if !ok {
			t.Fatalf("%s has no %s", name, scale)
		}
		out[name] = fp8Matrix{rows: int(info.Shape[0]), cols: int(info.Shape[1]), block: fp8BlockSize,
			src: srcData[name], codes: data[name], scales: decodeScales(t, si.DType, data[scale]), scaleDType: si.DType}
	}
	return out
}

// checkFP8Dir checks an FP8 directory against its source: §5.3 names,
// dtypes and shapes; unquantized tensors byte-identical; every quantized
// weight correct; file metadata kept.
func checkFP8Dir(t *testing.T, srcDir, dstDir string, scaleDType safetensors.DType) {
	t.Helper()
	srcInfos, srcData := readTensors(t, srcDir)
	infos, data := readTensors(t, dstDir)
	linear := 0
	for name, si := range srcInfos {
		info, ok := infos[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if !isLinearWeight(name) {
			if info.DType != si.DType || !reflect.DeepEqual(info.Shape, si.Shape) || !bytes.Equal(data[name], srcData[name]) {
				t.Errorf("%s: %s%v changed (was %s%v)", name, info.DType, info.Shape, si.DType, si.Shape)
			}
			continue
		}
		linear++
		if info.DType != safetensors.F8E4M3 || !reflect.DeepEqual(info.Shape, si.Shape) {
			t.Errorf("%s: %s%v, want F8_E4M3%v", name, info.DType, info.Shape, si.Shape)
		}
		scale := strings.TrimSuffix(name, "weight") + "weight_scale"
		want := []uint64{(si.Shape[0] + 127) / 128, (si.Shape[1] + 127) / 128}
		if s := infos[scale]; s.DType != scaleDType || !reflect.DeepEqual(s.Shape, want) {
			t.Errorf("%s: %s%v, want %s%v", scale, s.DType, s.Shape, scaleDType, want)
		}
	}
	if linear == 0 || len(infos) != len(srcInfos)+linear {
		t.Errorf("%d tensors from %d with %d Linear weights", len(infos), len(srcInfos), linear)
	}
	for name, m := range readFP8Matrices(t, srcData, infos, data) {
		m.check(t, name)
	}
	// The files keep the source's names, metadata and tensor assignment.
	srcFiles, err := openWeights(srcDir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeWeights(srcFiles)
	dstFiles, err := openWeights(dstDir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeWeights(dstFiles)
	if len(dstFiles) != len(srcFiles) {
		t.Fatalf("%d files, source has %d", len(dstFiles), len(srcFiles))
	}
	for i, sf := range srcFiles {
		df := dstFiles[i]
		if df.name != sf.name || !reflect.DeepEqual(df.header.Metadata, sf.header.Metadata) {
			t.Errorf("file %s (metadata %v), source %s (metadata %v)", df.name, df.header.Metadata, sf.name, sf.header.Metadata)
		}
		for _, st := range sf.header.Tensors {
			if _, ok := df.header.Lookup(st.Name); !ok {
				t.Errorf("%s moved out of %s", st.Name, sf.name)
			}
			if isLinearWeight(st.Name) {
				if _, ok := df.header.Lookup(strings.TrimSuffix(st.Name, "weight") + "weight_scale"); !ok {
					t.Errorf("scale of %s is not in %s", st.Name, sf.name)
				}
			}
		}
	}
}

// checkFP8Config checks config.json: the source's fields unchanged plus
// formats.md §5.1's FP8_BLOCK quantization_config.
func checkFP8Config(t *testing.T, srcDir, dstDir string) {
	t.Helper()
	src, dst := readJSON(t, filepath.Join(srcDir, "config.json")), readJSON(t, filepath.Join(dstDir, "config.json"))
	qc, _ := dst["quantization_config"].(map[string]any)
	delete(dst, "quantization_config")
	if !reflect.DeepEqual(src, dst) {
		t.Errorf("config.json fields changed:\n%v\n%v", src, dst)
	}
	group, _ := qc["config_groups"].(map[string]any)["group_0"].(map[string]any)
	weights, _ := group["weights"].(map[string]any)
	inputs, _ := group["input_activations"].(map[string]any)
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"quant_method", qc["quant_method"], "compressed-tensors"},
		{"format", qc["format"], "float-quantized"},
		{"quantization_status", qc["quantization_status"], "compressed"},
		{"ignore", qc["ignore"], []any{"lm_head"}},
		{"group format", group["format"], "float-quantized"},
		{"targets", group["targets"], []any{"Linear"}},
		{"weights.type", weights["type"], "float"},
		{"weights.num_bits", weights["num_bits"], 8.0},
		{"weights.strategy", weights["strategy"], "block"},
		{"weights.block_structure", weights["block_structure"], []any{128.0, 128.0}},
		{"weights.symmetric", weights["symmetric"], true},
		{"weights.dynamic", weights["dynamic"], false},
		{"inputs.strategy", inputs["strategy"], "group"},
		{"inputs.group_size", inputs["group_size"], 128.0},
		{"inputs.dynamic", inputs["dynamic"], true},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("quantization_config %s = %v, want %v", c.what, c.got, c.want)
		}
	}
	// compressed-tensors 0.11-0.12 reject these keys (formats.md §5.8).
	for _, args := range []map[string]any{weights, inputs} {
		for _, k := range []string{"scale_dtype", "zp_dtype"} {
			if _, ok := args[k]; ok {
				t.Errorf("quantization_config has %s", k)
			}
		}
	}
}

func TestWriteFP8BlockTiny(t *testing.T) {
	root := t.TempDir()
	base, fp8 := filepath.Join(root, "base"), filepath.Join(root, "fp8")
	if err := WriteBase(base, Tiny(), Options{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if err := WriteFP8Block(base, fp8); err != nil {
		t.Fatal(err)
	}
	checkFP8Dir(t, base, fp8, safetensors.F32)
	checkFP8Config(t, base, fp8)
	// Tiny's shapes (formats.md §14.11) give partial edge blocks: 160 rows
	// of gate/up are 128+32, 160 columns of down likewise, and 64 < 128.
	infos, _ := readTensors(t, fp8)
	for name, want := range map[string][]uint64{
		"model.layers.0.self_attn.q_proj.weight_scale": {1, 1},
		"model.layers.1.self_attn.o_proj.weight_scale": {1, 1},
		"model.layers.0.mlp.gate_proj.weight_scale":    {2, 1},
		"model.layers.1.mlp.up_proj.weight_scale":      {2, 1},
		"model.layers.0.mlp.down_proj.weight_scale":    {1, 2},
	} {
		if got := infos[name].Shape; !reflect.DeepEqual(got, want) {
			t.Errorf("%s shape %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{"generation_config.json", "tokenizer_config.json"} {
		want, _ := os.ReadFile(filepath.Join(base, name))
		if got, err := os.ReadFile(filepath.Join(fp8, name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s not copied: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(fp8, indexFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("single-file model got an index: %v", err)
	}

	// Deterministic despite the parallel quantization.
	again := filepath.Join(root, "again")
	if err := WriteFP8Block(base, again); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(hashFiles(t, fp8), hashFiles(t, again)) {
		t.Errorf("two runs differ")
	}
}

func TestWriteFP8BlockShardedBF16Scales(t *testing.T) {
	root := t.TempDir()
	base, fp8 := filepath.Join(root, "base"), filepath.Join(root, "fp8")
	if err := WriteBase(base, Tiny(), Options{Seed: 2, Shards: 3}); err != nil {
		t.Fatal(err)
	}
	if err := WriteFP8BlockWith(base, fp8, FP8BlockOptions{ScaleDType: safetensors.BF16}); err != nil {
		t.Fatal(err)
	}
	checkFP8Dir(t, base, fp8, safetensors.BF16)
	checkFP8Config(t, base, fp8)
	checkIndex(t, fp8, 3)
}

// TestWriteFP8BlockForeignModel quantizes a hand-made model whose Linear
// weight is 200×300 (scale grid [2,3], formats.md §14.8) with blocks of
// very different magnitudes, and whose config.json spells numbers the way
// Python does: they must come back unchanged.
func TestWriteFP8BlockForeignModel(t *testing.T) {
	root := t.TempDir()
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	if err := os.MkdirAll(filepath.Join(src, "extra"), 0o755); err != nil {
		t.Fatal(err)
	}
	w := randomMatrix(3, 200, 300, fp8BlockSize)
	norm := bf16Bytes(0x3F80, 0x3F80, 0x3F80)
	err := safetensors.WriteFile(filepath.Join(src, "model.safetensors"), []safetensors.Tensor{
		{TensorSpec: safetensors.TensorSpec{Name: "model.layers.0.mlp.gate_proj.weight", DType: safetensors.BF16, Shape: []uint64{200, 300}}, Data: w},
		{TensorSpec: safetensors.TensorSpec{Name: "model.layers.0.mlp.gate_proj.bias", DType: safetensors.BF16, Shape: []uint64{3}}, Data: norm},
		{TensorSpec: safetensors.TensorSpec{Name: "model.norm.weight", DType: safetensors.BF16, Shape: []uint64{3}}, Data: norm},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const config = `{"model_type": "qwen3", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "big": 12345678901234567890}`
	if err := os.WriteFile(filepath.Join(src, "config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "extra", "notes.txt"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFP8Block(src, dst); err != nil {
		t.Fatal(err)
	}
	checkFP8Dir(t, src, dst, safetensors.F32)
	infos, _ := readTensors(t, dst)
	if got := infos["model.layers.0.mlp.gate_proj.weight_scale"].Shape; !reflect.DeepEqual(got, []uint64{2, 3}) {
		t.Errorf("200x300 scale grid %v, want [2 3]", got)
	}
	b, err := os.ReadFile(filepath.Join(dst, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, lit := range []string{`"rms_norm_eps": 1e-06`, `"rope_theta": 1000000.0`, `"big": 12345678901234567890`, `"quant_method": "compressed-tensors"`} {
		if !bytes.Contains(b, []byte(lit)) {
			t.Errorf("config.json lacks %s:\n%s", lit, b)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dst, "extra", "notes.txt")); err != nil || string(got) != "kept" {
		t.Errorf("extra/notes.txt not copied: %q %v", got, err)
	}
	if _, data := readTensors(t, dst); !bytes.Equal(data["model.layers.0.mlp.gate_proj.bias"], norm) {
		t.Errorf("bias changed")
	}
}

func TestWriteFP8BlockRefuses(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	if err := WriteBase(base, Tiny(), Options{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	fp8 := filepath.Join(root, "fp8")
	if err := WriteFP8Block(base, fp8); err != nil {
		t.Fatal(err)
	}
	for name, run := range map[string]func(dst string) error{
		"already quantized": func(dst string) error { return WriteFP8Block(fp8, dst) },
		"bad scale dtype": func(dst string) error {
			return WriteFP8BlockWith(base, dst, FP8BlockOptions{ScaleDType: safetensors.F16})
		},
		"no weights": func(dst string) error {
			dir := filepath.Join(root, "empty")
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "config.json"), []byte("{}"), 0o644)
			return WriteFP8Block(dir, dst)
		},
	} {
		dst := filepath.Join(root, "out-"+strings.ReplaceAll(name, " ", "-"))
		if err := run(dst); err == nil {
			t.Errorf("%s: no error", name)
		}
		if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: destination created: %v", name, err)
		}
	}
	// A non-empty destination is refused as everywhere in modelgen.
	if err := WriteFP8Block(base, fp8); !errors.Is(err, errNotEmpty) {
		t.Errorf("non-empty destination: %v", err)
	}
}

// BenchmarkWriteFP8Block measures quantization throughput in source BF16
// bytes per second.
func BenchmarkWriteFP8Block(b *testing.B) {
	c := Sized(256 << 20)
	base := filepath.Join(b.TempDir(), "base")
	if err := WriteBase(base, c, Options{Seed: 1, Shards: 2}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(c.ParamBytes())
	for i := 0; b.Loop(); i++ {
		if err := WriteFP8Block(base, filepath.Join(b.TempDir(), fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
	}
}
