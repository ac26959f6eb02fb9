package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
)

// mustScheme parses a CLI scheme and applies options.
func mustScheme(t testing.TB, name, format string, opts ...func(*QuantizeScheme)) QuantizeScheme {
	t.Helper()
	qs, err := ParseQuantizeScheme(name, format)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(&qs)
	}
	if err := qs.Validate(); err != nil {
		t.Fatal(err)
	}
	return qs
}

func asym(qs *QuantizeScheme)           { qs.Asymmetric = true }
func group(g int) func(*QuantizeScheme) { return func(qs *QuantizeScheme) { qs.GroupSize = g } }
func block(h, w int) func(*QuantizeScheme) {
	return func(qs *QuantizeScheme) { qs.BlockSize = [2]int{h, w} }
}
func scaleDT(d safetensors.DType) func(*QuantizeScheme) {
	return func(qs *QuantizeScheme) { qs.ScaleDType = d }
}

// decoded are QuantizeWeight's outputs read back as numbers.
type decoded struct {
	codes  []int
	scales []float64
	zps    []int // nil when symmetric
	byRole map[Role]QuantizedTensor
}

func decodeOutputs(t *testing.T, qs QuantizeScheme, out, in int, res []QuantizedTensor) decoded {
	t.Helper()
	qs = qs.normalized()
	d := decoded{byRole: map[Role]QuantizedTensor{}}
	for _, r := range res {
		d.byRole[r.Role] = r
	}
	codes := d.byRole[RoleCodes]
	switch qs.Name {
	case QuantW4A16:
		q, err := UnpackInt32(int32sFromBytes(codes.Data), in, 4, Dense)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range q {
			d.codes = append(d.codes, int(v))
		}
	case QuantInt8:
		for _, b := range codes.Data {
			d.codes = append(d.codes, int(int8(b)))
		}
	default:
		for _, b := range codes.Data {
			d.codes = append(d.codes, int(b))
		}
	}
	sc := d.byRole[RoleScale]
	d.scales = decodeScales(sc.DType, sc.Data)
	if zp, ok := d.byRole[RoleZeroPoint]; ok {
		groups := int(sc.Shape[1])
		z, err := UnpackInt32Dim0(int32sFromBytes(zp.Data), out, groups, 4, Dense)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range z {
			d.zps = append(d.zps, int(v))
		}
	}
	return d
}

// quantizeAndCompare quantizes x with QuantizeWeight, checks every output
// against the reference bit for bit, and returns both.
func quantizeAndCompare(t *testing.T, qs QuantizeScheme, wd safetensors.DType, out, in int, x []float64) ([]QuantizedTensor, refResult) {
	t.Helper()
	w := safetensors.TensorInfo{Name: "model.layers.0.mlp.up_proj.weight", DType: wd, Shape: []uint64{uint64(out), uint64(in)}}
	res, err := QuantizeWeight(qs, w, weightBytes(t, wd, x))
	if err != nil {
		t.Fatalf("%s %s [%d, %d]: %v", qs, wd, out, in, err)
	}
	ref := refQuantize(qs, wd, out, in, x)
	got := decodeOutputs(t, qs, out, in, res)
	label := fmt.Sprintf("%s %s [%d, %d]", qs, wd, out, in)
	if !slices.Equal(got.scales, ref.scales) {
		for i := range ref.scales {
			if got.scales[i] != ref.scales[i] {
				t.Fatalf("%s: scale %d = %v, want %v", label, i, got.scales[i], ref.scales[i])
			}
		}
	}
	if qs.Asymmetric && !slices.Equal(got.zps, ref.zps) {
		t.Fatalf("%s: zero points %v, want %v", label, got.zps, ref.zps)
	}
	for i := range ref.codes {
		if got.codes[i] != ref.codes[i] {
			t.Fatalf("%s: code [%d, %d] = %#x, want %#x (x = %v, scale %v)", label, i/in, i%in, got.codes[i], ref.codes[i], x[i], ref.scales[ref.cell(i/in, i%in)])
		}
	}
	if sh, ok := got.byRole[RoleShape]; ok {
		if o, n := binary.LittleEndian.Uint64(sh.Data), binary.LittleEndian.Uint64(sh.Data[8:]); o != uint64(out) || n != uint64(in) {
			t.Fatalf("%s: weight_shape [%d, %d]", label, o, n)
		}
	}
	return res, ref
}

// Tiny matrices whose codes, scales and zero points are worked out by hand
// from §5.4 (and checked against the float64 reference as well).
func TestQuantizeHandVectors(t *testing.T) {
	t.Run("int8", func(t *testing.T) {
		// Row 0: absmax 127.5 → s = 127.5/127.5 = 1; 0.5 → 0 (tie to even),
		// 127.5 clamps to 127. Row 1: absmax 255 → s = 2; −255/2 = −127.5
		// → −128 (tie to even), 3/2 = 1.5 → 2, 5/2 = 2.5 → 2, −1/2 → −0.
		x := []float64{1, -2, 0.5, 127.5, -255, 3, 5, -1}
		res, _ := quantizeAndCompare(t, mustScheme(t, QuantInt8, ""), safetensors.BF16, 2, 4, x)
		d := decodeOutputs(t, QuantizeScheme{Name: QuantInt8}, 2, 4, res)
		if want := []int{1, -2, 0, 127, -128, 2, 2, 0}; !slices.Equal(d.codes, want) {
			t.Errorf("codes %v, want %v", d.codes, want)
		}
		if want := []float64{1, 2}; !slices.Equal(d.scales, want) {
			t.Errorf("scales %v, want %v", d.scales, want)
		}
		if sc := d.byRole[RoleScale]; sc.DType != safetensors.BF16 || !slices.Equal(sc.Shape, []uint64{2, 1}) || !slices.Equal(sc.Data, []byte{0x80, 0x3F, 0x00, 0x40}) {
			t.Errorf("weight_scale %s%v % x", sc.DType, sc.Shape, sc.Data)
		}
	})
	t.Run("w4a16", func(t *testing.T) {
		// absmax 7.5 → s = 1; 7.5 clamps to 7, −7.5 → −8, 2.5 → 2, 3.5 → 4.
		// Stored nibbles q+8 = [15,0,9,7,10,12,8,8], lowest first.
		x := []float64{7.5, -7.5, 1, -1, 2.5, 3.5, 0, 0.5}
		res, _ := quantizeAndCompare(t, mustScheme(t, QuantW4A16, "", group(8), func(qs *QuantizeScheme) { qs.SkipVLLMChecks = true }), safetensors.BF16, 1, 8, x)
		if got := res[0]; got.Name != "model.layers.0.mlp.up_proj.weight_packed" || binary.LittleEndian.Uint32(got.Data) != 0x88CA790F {
			t.Errorf("%s = %#08x, want 0x88CA790F", got.Name, binary.LittleEndian.Uint32(got.Data))
		}
	})
	t.Run("w4a16 asymmetric, §14.5 zero points", func(t *testing.T) {
		// Row 0: lo −9, hi 6 → s = 15/15 = 1, zp = −8 − (−9) = 1.
		// Row 1: lo −6, hi 9 → s = 1, zp = −8 − (−6) = −2.
		// Packed along out: nibbles 1+8, −2+8 → 0x69 (§14.5).
		x := []float64{
			-9, 6, 0, 1, 2, 3, 4, 5,
			-6, 9, 0, 1, 2, 3, 4, 5,
		}
		res, _ := quantizeAndCompare(t, mustScheme(t, QuantW4A16, "", group(8), asym), safetensors.BF16, 2, 8, x)
		d := decodeOutputs(t, mustScheme(t, QuantW4A16, "", group(8), asym), 2, 8, res)
		zp := d.byRole[RoleZeroPoint]
		if zp.Name != "model.layers.0.mlp.up_proj.weight_zero_point" || !slices.Equal(zp.Shape, []uint64{1, 1}) || binary.LittleEndian.Uint32(zp.Data) != 0x69 {
			t.Errorf("%s%v = % x, want [[0x69]]", zp.Name, zp.Shape, zp.Data)
		}
		if want := []int{-8, 7, 1, 2, 3, 4, 5, 6, -8, 7, -2, -1, 0, 1, 2, 3}; !slices.Equal(d.codes, want) {
			t.Errorf("codes %v, want %v", d.codes, want)
		}
	})
	t.Run("fp8-block", func(t *testing.T) {
		// 2×2 blocks of a 2×4 weight. Block 0: amax 448 → s = 1, codes are
		// the values: 448 → 0x7E, −448 → 0xFE, 1 → 0x38, 0.5 → 0x30.
		// Block 1: amax 896 → s = 2: 896 → 0x7E, 3 → 1.5 = 0x3C, −2.125 →
		// −1.0625 → 0xB8 (a tie between 1 and 1.125 goes to the even 1),
		// 0 → 0.
		x := []float64{448, -448, 896, 3, 1, 0.5, -2.125, 0}
		res, _ := quantizeAndCompare(t, mustScheme(t, QuantFP8Block, "", block(2, 2)), safetensors.BF16, 2, 4, x)
		if want := []byte{0x7E, 0xFE, 0x7E, 0x3C, 0x38, 0x30, 0xB8, 0x00}; !slices.Equal(res[0].Data, want) {
			t.Errorf("codes % x, want % x", res[0].Data, want)
		}
		if want := []byte{0x80, 0x3F, 0x00, 0x40}; !slices.Equal(res[1].Data, want) || res[1].Name != "model.layers.0.mlp.up_proj.weight_scale" {
			t.Errorf("%s = % x, want % x", res[1].Name, res[1].Data, want)
		}
	})
	t.Run("native fp8 zero block", func(t *testing.T) {
		// An all-zero block gets scale 1 in native fp8 (transformers) and
		// eps in compressed-tensors; F32 scales as DeepSeek stores them.
		x := []float64{0, 0, 3, 0, 0, 0, 0, -1.5}
		qs := mustScheme(t, QuantFP8Block, OutputFP8, block(2, 2), scaleDT(safetensors.F32))
		res, _ := quantizeAndCompare(t, qs, safetensors.BF16, 2, 4, x)
		if res[1].Name != "model.layers.0.mlp.up_proj.weight_scale_inv" || !slices.Equal(decodeScales(safetensors.F32, res[1].Data), []float64{1, float64(float32(3.0 / 448))}) {
			t.Errorf("%s = %v", res[1].Name, decodeScales(safetensors.F32, res[1].Data))
		}
		ct, _ := quantizeAndCompare(t, mustScheme(t, QuantFP8Block, "", block(2, 2), scaleDT(safetensors.F32)), safetensors.BF16, 2, 4, x)
		if got := decodeScales(safetensors.F32, ct[1].Data); got[0] != 0x1p-23 {
			t.Errorf("compressed-tensors zero block scale %v, want 2^-23", got[0])
		}
	})
}

// randomWeights draws n exactly representable values of dtype d: normal
// values of scale sigma, with some rows of zeros, exact ties and tiny and
// huge outliers mixed in.
func randomWeights(rng *rand.Rand, d safetensors.DType, out, in int, sigma float64) []float64 {
	f := refFormatOf(d)
	x := make([]float64, out*in)
	for r := range out {
		kind := rng.IntN(10)
		for c := range in {
			v := rng.NormFloat64() * sigma
			switch {
			case kind == 0: // an all-zero row
				v = 0
			case kind == 1 && rng.IntN(4) == 0: // small integers and halves: ties
				v = float64(rng.IntN(33)-16) / 2
			case kind == 2 && rng.IntN(8) == 0:
				v *= 1e-3
			case kind == 3 && c == 0:
				v *= 100
			}
			x[r*in+c] = refRound(v, f)
		}
	}
	return x
}

// Every scheme, format and scale dtype, on shapes with partial blocks and
// groups, against the reference, bit for bit.
func TestQuantizeMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	skip := func(qs *QuantizeScheme) { qs.SkipVLLMChecks = true }
	schemes := []QuantizeScheme{
		mustScheme(t, QuantFP8Block, ""),
		mustScheme(t, QuantFP8Block, "", block(16, 32)),
		mustScheme(t, QuantFP8Block, OutputFP8),
		mustScheme(t, QuantFP8Block, OutputFP8, scaleDT(safetensors.F32)),
		mustScheme(t, QuantFP8Block, "", block(8, 8), scaleDT(safetensors.F16)),
		mustScheme(t, QuantInt8, ""),
		mustScheme(t, QuantInt8, "", scaleDT(safetensors.F32)),
		mustScheme(t, QuantW4A16, "", group(32)),
		mustScheme(t, QuantW4A16, "", group(32), asym),
		mustScheme(t, QuantW4A16, "", group(-1), asym),
		mustScheme(t, QuantW4A16, "", group(-1)),
		mustScheme(t, QuantW4A16, "", group(100), skip, asym),
		mustScheme(t, QuantW4A16, "", group(64), asym, scaleDT(safetensors.F32)),
	}
	shapes := [][2]int{{1, 1}, {3, 7}, {40, 64}, {33, 200}, {200, 300}}
	for _, qs := range schemes {
		for _, wd := range []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32} {
			for _, sh := range shapes {
				out, in := sh[0], sh[1]
				if qs.Name == QuantW4A16 && qs.GroupSize > 0 && in >= qs.GroupSize && in%qs.GroupSize != 0 {
					in = in / qs.GroupSize * qs.GroupSize
				}
				for _, sigma := range []float64{0.02, 3} {
					quantizeAndCompare(t, qs, wd, out, in, randomWeights(rng, wd, out, in, sigma))
				}
			}
		}
	}
}

// quantizedModule turns QuantizeWeight's outputs into a Detect-ed module
// with its data, through the config QuantizedConfig writes.
func quantizedModule(t *testing.T, qs QuantizeScheme, res []QuantizedTensor) (Module, map[Role][]byte) {
	t.Helper()
	cfg, err := QuantizedConfig([]byte(`{"torch_dtype": "bfloat16"}`), qs, nil)
	if err != nil {
		t.Fatal(err)
	}
	var infos []safetensors.TensorInfo
	for _, r := range res {
		infos = append(infos, safetensors.TensorInfo{Name: r.Name, DType: r.DType, Shape: r.Shape})
	}
	m, err := Detect(cfg, infos, nil)
	if err != nil {
		t.Fatalf("Detect: %v", err)
	}
	if len(m.Modules) != 1 {
		t.Fatalf("Detect found %d modules", len(m.Modules))
	}
	if got, want := m.Modules[0].Scheme, qs.Scheme(); got != want {
		t.Fatalf("Detect's scheme %+v, want %+v", got, want)
	}
	data := map[Role][]byte{}
	for _, r := range res {
		data[r.Role] = r.Data
	}
	return m.Modules[0], data
}

// Quantize, then the existing Dequantize: equal to the reference
// dequantization of the reference codes, and within the format's error of
// the input.
func TestQuantizeRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	for _, qs := range []QuantizeScheme{
		mustScheme(t, QuantFP8Block, ""),
		mustScheme(t, QuantFP8Block, OutputFP8),
		mustScheme(t, QuantFP8Block, OutputFP8, scaleDT(safetensors.F32)),
		mustScheme(t, QuantInt8, ""),
		mustScheme(t, QuantW4A16, ""),
		mustScheme(t, QuantW4A16, "", asym),
		mustScheme(t, QuantW4A16, "", group(-1), asym),
	} {
		for _, wd := range []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32} {
			out, in := 200, 384
			x := randomWeights(rng, wd, out, in, 0.05)
			res, ref := quantizeAndCompare(t, qs, wd, out, in, x)
			mod, data := quantizedModule(t, qs, res)
			y, err := DequantModule(mod, data)
			if err != nil {
				t.Fatal(err)
			}
			want := ref.dequant(qs, out, in)
			for i, u := range u16s(y) {
				if u != want[i] {
					t.Fatalf("%s %s: dequantized [%d, %d] = %#04x, want %#04x", qs, wd, i/in, i%in, u, want[i])
				}
				s := ref.scales[ref.cell(i/in, i%in)]
				if e, bound := math.Abs(float64(numeric.BF16ToF32(u))-x[i]), errorBound(qs, x[i], s, ref.zps[ref.cell(i/in, i%in)]); e > bound {
					t.Fatalf("%s %s: |x − dequant| = %v at [%d, %d] (x = %v, s = %v), bound %v", qs, wd, e, i/in, i%in, x[i], s, bound)
				}
			}
		}
	}
}

// errorBound is how far a dequantized element may be from x: the clamp's
// overshoot plus half a step of the code grid, plus the BF16 output
// rounding. FP8's step is relative (3 mantissa bits: 2^-4 of the value) down
// to its subnormal step 2^-9·s.
func errorBound(qs QuantizeScheme, x, s float64, zp int) float64 {
	v := x / s
	var e float64
	switch qs.Name {
	case QuantFP8Block:
		over := math.Max(0, math.Abs(v)-448)
		e = over*s + math.Min(math.Abs(v), 448)*s*0x1p-4 + s*0x1p-10
	case QuantInt8:
		e = (math.Max(0, math.Max(v-127, -128-v)) + 0.5) * s
	default:
		v += float64(zp)
		e = (math.Max(0, math.Max(v-7, -8-v)) + 0.5) * s
	}
	return e*(1+1e-6) + (math.Abs(x)+e)*0x1p-8
}

// §1.2: the clamp comes before the cast, so 448 < x/s ≤ 464 and x/s > 464
// (which torch's cast turns into NaN) all give ±448.
func TestQuantizeFP8Saturation(t *testing.T) {
	for _, v := range []float32{448, 449, 460, 464, 464.01, 465, 479.99, 480, 1e4, float32(math.Inf(1))} {
		if got := numeric.F32ToE4M3FNSat(v); got != 0x7E {
			t.Errorf("sat(%v) = %#02x", v, got)
		}
		if got := numeric.F32ToE4M3FNSat(-v); got != 0xFE {
			t.Errorf("sat(%v) = %#02x", -v, got)
		}
	}
	// A denormal F32 scale has few bits: amax = 667·2^-149 gives
	// s = f32(667/448 · 2^-149) = 2^-149, so x/s = 667, 465, 464: without
	// the clamp 667 and 465 would be NaN (0x7F).
	ulp := 0x1p-149
	x := []float64{667 * ulp, 465 * ulp, 464 * ulp, -667 * ulp, 463 * ulp, 448 * ulp, 1 * ulp, 0}
	qs := mustScheme(t, QuantFP8Block, "", block(1, 8))
	res, _ := quantizeAndCompare(t, qs, safetensors.F32, 1, 8, x)
	if got := decodeScales(safetensors.F32, res[1].Data)[0]; got != ulp {
		t.Fatalf("scale %v, want 2^-149", got)
	}
	// x/s = 667, 465, 464, −667, 463, 448, 1, 0.
	if want := []byte{0x7E, 0x7E, 0x7E, 0xFE, 0x7E, 0x7E, 0x38, 0x00}; !slices.Equal(res[0].Data, want) {
		t.Errorf("codes % x, want % x", res[0].Data, want)
	}
	if numeric.F32ToE4M3FN(465) != 0x7F || numeric.F32ToE4M3FN(667) != 0x7F {
		t.Error("torch's unclamped cast no longer makes 465 NaN: the test proves nothing")
	}
	// The same with BF16 weights and scales: amax = 664·2^-133 gives
	// s = bf16(1.48·2^-133) = 2^-133 (bits 0x0001), so x/s = 664, 472
	// (NaN unclamped) and 464 (a tie to 448 even unclamped).
	b := 0x1p-133
	x = []float64{664 * b, 472 * b, 464 * b, -664 * b, -472 * b, 0, b, -b}
	res, _ = quantizeAndCompare(t, qs, safetensors.BF16, 1, 8, x)
	if got := binary.LittleEndian.Uint16(res[1].Data); got != 0x0001 {
		t.Fatalf("scale bits %#04x, want 0x0001", got)
	}
	if want := []byte{0x7E, 0x7E, 0x7E, 0xFE, 0xFE, 0x00, 0x38, 0xB8}; !slices.Equal(res[0].Data, want) {
		t.Errorf("BF16 codes % x, want % x", res[0].Data, want)
	}
}

// Denormal BF16 scales: amax 2^-118 gives s = 2^-118/448 = 0.571·2^-126, a
// BF16 subnormal that rounds to 73·2^-133 (bits 0x0049); codes divide by
// the stored value, so amax/s = 2^15/73 = 448.9 clamps to 448.
func TestQuantizeDenormalScales(t *testing.T) {
	a := 0x1p-118
	x := []float64{a, -a / 2, a / 4, 0x1p-133, 0, 0x1p-127, -a, a / 64}
	res, _ := quantizeAndCompare(t, mustScheme(t, QuantFP8Block, "", block(1, 8)), safetensors.BF16, 1, 8, x)
	if got := binary.LittleEndian.Uint16(res[1].Data); got != 0x0049 {
		t.Errorf("scale bits %#04x, want 0x0049", got)
	}
	if res[0].Data[0] != 0x7E || res[0].Data[6] != 0xFE {
		t.Errorf("codes % x: ±amax must clamp to ±448", res[0].Data)
	}
	// INT8 and INT4 with subnormal scales, too (reference only).
	quantizeAndCompare(t, mustScheme(t, QuantInt8, ""), safetensors.BF16, 1, 8, x)
	quantizeAndCompare(t, mustScheme(t, QuantW4A16, "", group(8), asym), safetensors.BF16, 1, 8, x)
	quantizeAndCompare(t, mustScheme(t, QuantW4A16, "", group(8)), safetensors.F16, 1, 8, []float64{0x1p-24, -0x1p-24, 3 * 0x1p-24, 0, 0, 0, 0, 0})
}

// All-zero rows and blocks: codes 0, scale eps (2^-7 for BF16, bits 0x3C00)
// in compressed-tensors, 1 in native fp8; asymmetric zero point 0 (its
// 0/0 is NaN in torch).
func TestQuantizeAllZero(t *testing.T) {
	x := make([]float64, 4*16)
	for _, tc := range []struct {
		qs        QuantizeScheme
		scaleBits uint16
	}{
		{mustScheme(t, QuantFP8Block, "", block(2, 8)), 0x3C00},
		{mustScheme(t, QuantFP8Block, OutputFP8, block(2, 8)), 0x3F80},
		{mustScheme(t, QuantInt8, ""), 0x3C00},
		{mustScheme(t, QuantW4A16, "", group(8)), 0x3C00},
		{mustScheme(t, QuantW4A16, "", group(8), asym), 0x3C00},
	} {
		res, _ := quantizeAndCompare(t, tc.qs, safetensors.BF16, 4, 16, x)
		d := decodeOutputs(t, tc.qs, 4, 16, res)
		for i, s := range u16s(d.byRole[RoleScale].Data) {
			if s != tc.scaleBits {
				t.Errorf("%s: scale %d bits %#04x, want %#04x", tc.qs, i, s, tc.scaleBits)
			}
		}
		for i, c := range d.codes {
			if c != 0 {
				t.Errorf("%s: code %d = %d", tc.qs, i, c)
			}
		}
		for i, z := range d.zps {
			if z != 0 {
				t.Errorf("%s: zero point %d = %d", tc.qs, i, z)
			}
		}
		mod, data := quantizedModule(t, tc.qs, res)
		y, err := DequantModule(mod, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range u16s(y) {
			if u != 0 {
				t.Fatalf("%s: dequantized a zero weight to %#04x", tc.qs, u)
			}
		}
	}
}

// §14.8: a 200×300 weight with 128-blocks has a [2, 3] grid with partial
// edge blocks on both axes; the padding does not change any scale.
func TestQuantizePartialBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	x := make([]float64, 200*300)
	for i := range x {
		x[i] = refRound(rng.NormFloat64()*0.02, refBF16)
	}
	// Make the partial blocks' absolute maxima negative and distinct.
	x[199*300+299] = -1.5
	x[0*300+299] = -0.75
	for _, format := range []string{OutputCT, OutputFP8} {
		qs := mustScheme(t, QuantFP8Block, format)
		res, ref := quantizeAndCompare(t, qs, safetensors.BF16, 200, 300, x)
		if sc := res[1]; !slices.Equal(sc.Shape, []uint64{2, 3}) {
			t.Errorf("%s scale shape %v, want [2, 3]", format, sc.Shape)
		}
		if got, want := ref.scales[5], refRound(1.5/448, refBF16); got != want {
			t.Errorf("edge block scale %v, want %v", got, want)
		}
		mod, data := quantizedModule(t, qs, res)
		if _, err := DequantModule(mod, data); err != nil {
			t.Fatal(err)
		}
	}
}

// NaN and ±Inf are refused for every scheme and role, naming the tensor and
// the first bad element.
func TestQuantizeNonFinite(t *testing.T) {
	for _, wd := range []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32} {
		for _, qs := range []QuantizeScheme{
			mustScheme(t, QuantFP8Block, ""), mustScheme(t, QuantInt8, ""), mustScheme(t, QuantW4A16, "", asym),
		} {
			for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(math.NaN(), -1)} {
				x := make([]float64, 8*256)
				x[3*256+17] = bad
				x[5*256+1] = bad
				w := safetensors.TensorInfo{Name: "model.layers.3.self_attn.o_proj.weight", DType: wd, Shape: []uint64{8, 256}}
				data := weightBytes(t, wd, x)
				if math.IsNaN(bad) && math.Signbit(bad) && wd != safetensors.F16 {
					// Set the sign bit of the NaN explicitly.
					es := wd.BitSize() / 8
					for _, i := range []int{3*256 + 17, 5*256 + 1} {
						data[(i+1)*es-1] |= 0x80
					}
				}
				_, err := QuantizeWeight(qs, w, data)
				if !errors.Is(err, ErrNonFinite) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("%s %s %v: error %v, want ErrNonFinite", qs, wd, bad, err)
				}
				if msg := err.Error(); !strings.Contains(msg, w.Name) || !strings.Contains(msg, "[3, 17]") || !strings.Contains(msg, "2 non-finite") {
					t.Errorf("message %q does not name the tensor, the first position and the count", msg)
				}
				for _, sp := range qs.outputs(wd, 8, 256) {
					if err := QuantizeRoleInto(make([]byte, sp.bytes()), qs, w, data, sp.role); !errors.Is(err, ErrNonFinite) {
						t.Errorf("QuantizeRoleInto %s: %v, want ErrNonFinite", sp.role, err)
					}
				}
			}
		}
	}
}

// A scale the scale dtype cannot hold is refused, not stored as Inf.
func TestQuantizeScaleOverflow(t *testing.T) {
	x := []float64{1e30, 1, 2, 3}
	w := safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{1, 4}}
	_, err := QuantizeWeight(mustScheme(t, QuantInt8, "", scaleDT(safetensors.F16)), w, weightBytes(t, safetensors.BF16, []float64{refRound(x[0], refBF16), 1, 2, 3}))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "m.weight") {
		t.Errorf("F16 scale of 1e30/127.5: %v", err)
	}
	// Asymmetric range overflow: max − min = 2·3.4e38 is Inf in F32.
	big := float64(math.MaxFloat32)
	w.DType = safetensors.F32
	w.Shape = []uint64{1, 8}
	_, err = QuantizeWeight(mustScheme(t, QuantW4A16, "", group(8), asym), w, weightBytes(t, safetensors.F32, []float64{big, -big, 0, 0, 0, 0, 0, 0}))
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("asymmetric range overflow: %v", err)
	}
	// −absmax becomes −128·(absmax/127.5): past the largest BF16 number, a
	// code that would dequantize to −Inf.
	w = safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{1, 2}}
	_, err = QuantizeWeight(mustScheme(t, QuantInt8, ""), w, weightBytes(t, safetensors.BF16, []float64{-0x1.FEp127, 1}))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "±Inf") {
		t.Errorf("near-max weight: %v", err)
	}
	if _, err := QuantizeWeight(mustScheme(t, QuantInt8, ""), w, weightBytes(t, safetensors.BF16, []float64{-0x1.FEp120, 1})); err != nil {
		t.Errorf("large but safe weight: %v", err)
	}
}

// The parallel split and buffer reuse change no byte.
func TestQuantizeDeterministic(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	rng := rand.New(rand.NewPCG(10, 10))
	var buf QuantizeBuffers
	for _, qs := range []QuantizeScheme{
		mustScheme(t, QuantFP8Block, ""), mustScheme(t, QuantInt8, ""), mustScheme(t, QuantW4A16, "", asym),
	} {
		for _, sh := range [][2]int{{520, 384}, {64, 256}, {1000, 128}} {
			out, in := sh[0], sh[1]
			w := safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{uint64(out), uint64(in)}}
			data := weightBytes(t, safetensors.BF16, randomWeights(rng, safetensors.BF16, out, in, 0.02))
			var first []QuantizedTensor
			for _, procs := range []int{1, 3, 8} {
				runtime.GOMAXPROCS(procs)
				res, err := QuantizeWeightInto(&buf, qs, w, data)
				if err != nil {
					t.Fatal(err)
				}
				if first == nil {
					first, _ = QuantizeWeight(qs, w, data)
				}
				for i := range res {
					if res[i].Name != first[i].Name || string(res[i].Data) != string(first[i].Data) {
						t.Fatalf("%s [%d, %d] GOMAXPROCS %d: %s differs", qs, out, in, procs, res[i].Name)
					}
				}
				// QuantizeRoleInto gives each tensor alone.
				for _, r := range first {
					dst := make([]byte, len(r.Data))
					if err := QuantizeRoleInto(dst, qs, w, data, r.Role); err != nil || string(dst) != string(r.Data) {
						t.Fatalf("QuantizeRoleInto %s: %v", r.Role, err)
					}
				}
			}
		}
	}
	w := safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{8, 8}}
	if err := QuantizeRoleInto(make([]byte, 3), mustScheme(t, QuantInt8, ""), w, make([]byte, 128), RoleCodes); !errors.Is(err, ErrInvalid) {
		t.Errorf("short destination: %v", err)
	}
	if err := QuantizeRoleInto(make([]byte, 3), mustScheme(t, QuantInt8, ""), w, make([]byte, 128), RoleZeroPoint); !errors.Is(err, ErrInvalid) {
		t.Errorf("missing role: %v", err)
	}
}

// The derivation's claims, on every input: for 16-bit weights and scales
// of the same width, rounding the float32 quotient equals rounding the
// exact quotient; and torch's CUDA path for a scalar divisor (multiplying
// by the float32 reciprocal) gives the same scale wherever it is a normal
// number of S. Only in F16's subnormal range (scales below 2^-14) can the
// exact quotient be a tie of S that the reciprocal's error breaks the other
// way; those cases are counted, and heft divides, as torch on CPU does.
func TestScaleRoundingPaths(t *testing.T) {
	type format struct {
		d         safetensors.DType
		value     func(uint16) float32
		round     func(float32) float32
		ref       refFormat
		inf       uint16
		minNormal float32
	}
	for _, f := range []format{
		{safetensors.BF16, numeric.BF16ToF32, func(x float32) float32 { return numeric.BF16ToF32(numeric.F32ToBF16(x)) }, refBF16, 0x7F80, 0x1p-126},
		{safetensors.F16, numeric.F16ToF32, func(x float32) float32 { return numeric.F16ToF32(numeric.F32ToF16(x)) }, refF16, 0x7C00, 0x1p-14},
	} {
		for _, c := range []float32{448, 127.5, 7.5, 255, 15} {
			recip := 1 / c
			subnormalTies := 0
			for u := range f.inf {
				a := f.value(u)
				div := f.round(a / c)
				if exact := float32(refRound(float64(a)/float64(c), f.ref)); div != exact {
					t.Fatalf("%s %v / %v: float32 division gives %v, the exact quotient %v", f.d, a, c, div, exact)
				}
				if mul := f.round(a * recip); mul != div {
					if div >= f.minNormal || f.d == safetensors.BF16 {
						t.Fatalf("%s %v / %v: reciprocal %v, division %v", f.d, a, c, mul, div)
					}
					subnormalTies++
				}
			}
			if subnormalTies > 0 {
				t.Logf("%s / %v: the reciprocal path differs on %d subnormal ties", f.d, c, subnormalTies)
			}
		}
	}
}

// Native fp8 and compressed-tensors FP8_BLOCK from the same weight: the
// same F8 bytes, the same scales but for all-zero blocks (1 vs eps), so
// renaming weight_scale_inv → weight_scale (§12) gives a CT module that
// dequantizes to the same bytes.
func TestQuantizeNativeVsCT(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	x := randomWeights(rng, safetensors.BF16, 256, 384, 0.02)
	for i := range 128 { // one all-zero block
		for j := range 128 {
			x[i*384+256+j] = 0
		}
	}
	for _, sd := range []safetensors.DType{safetensors.BF16, safetensors.F32} {
		native, _ := quantizeAndCompare(t, mustScheme(t, QuantFP8Block, OutputFP8, scaleDT(sd)), safetensors.BF16, 256, 384, x)
		ctQS := mustScheme(t, QuantFP8Block, "", scaleDT(sd))
		ct, _ := quantizeAndCompare(t, ctQS, safetensors.BF16, 256, 384, x)
		if string(native[0].Data) != string(ct[0].Data) {
			t.Fatalf("%s: F8 bytes differ", sd)
		}
		ns, cs := decodeScales(sd, native[1].Data), decodeScales(sd, ct[1].Data)
		for i := range ns {
			if ns[i] != cs[i] && !(i == 2 && ns[i] == 1) {
				t.Errorf("%s: scale %d native %v, compressed-tensors %v", sd, i, ns[i], cs[i])
			}
		}
		// §12: native → CT by renaming the scale.
		renamed := slices.Clone(native)
		renamed[1].Name = strings.Replace(renamed[1].Name, "weight_scale_inv", "weight_scale", 1)
		mod, data := quantizedModule(t, ctQS, renamed)
		ya, err := DequantModule(mod, data)
		if err != nil {
			t.Fatal(err)
		}
		mod, data = quantizedModule(t, ctQS, ct)
		yb, err := DequantModule(mod, data)
		if err != nil {
			t.Fatal(err)
		}
		if string(ya) != string(yb) {
			t.Errorf("%s: renamed native and compressed-tensors dequantize differently", sd)
		}
		nmod, ndata := quantizedModule(t, mustScheme(t, QuantFP8Block, OutputFP8, scaleDT(sd)), native)
		if yn, err := DequantModule(nmod, ndata); err != nil || string(yn) != string(yb) {
			t.Errorf("%s: native dequantizes differently: %v", sd, err)
		}
	}
}

func TestParseQuantizeScheme(t *testing.T) {
	for _, tc := range []struct {
		name, format string
		want         QuantizeScheme
		str          string
	}{
		{"fp8-block", "", QuantizeScheme{Name: QuantFP8Block, Format: OutputCT, BlockSize: [2]int{128, 128}}, "fp8-block 128x128 (compressed-tensors)"},
		{"FP8-Block", "fp8", QuantizeScheme{Name: QuantFP8Block, Format: OutputFP8, BlockSize: [2]int{128, 128}}, "fp8-block 128x128 (native fp8)"},
		{"int8", "compressed-tensors", QuantizeScheme{Name: QuantInt8, Format: OutputCT}, "int8 (compressed-tensors)"},
		{"w4a16", "", QuantizeScheme{Name: QuantW4A16, Format: OutputCT, GroupSize: 128}, "w4a16 group 128 (compressed-tensors)"},
	} {
		got, err := ParseQuantizeScheme(tc.name, tc.format)
		if err != nil || got != tc.want || got.String() != tc.str {
			t.Errorf("ParseQuantizeScheme(%q, %q) = %+v %q, %v; want %+v %q", tc.name, tc.format, got, got.String(), err, tc.want, tc.str)
		}
	}
	if s := (QuantizeScheme{Name: QuantW4A16, GroupSize: -1, Asymmetric: true, ScaleDType: safetensors.F32}).String(); s != "w4a16 per-channel asymmetric (compressed-tensors, F32 scales)" {
		t.Errorf("String() = %q", s)
	}
	for _, tc := range []struct {
		name, format string
		err          error
	}{
		{"nvfp4", "", ErrUnsupported},
		{"int8", "fp8", ErrUnsupported},
		{"w4a16", "fp8", ErrUnsupported},
		{"fp8-block", "gguf", ErrUnsupported},
	} {
		if _, err := ParseQuantizeScheme(tc.name, tc.format); !errors.Is(err, tc.err) {
			t.Errorf("ParseQuantizeScheme(%q, %q): %v, want %v", tc.name, tc.format, err, tc.err)
		}
	}
	for _, qs := range []QuantizeScheme{
		{Name: QuantInt8, Asymmetric: true},
		{Name: QuantFP8Block, Asymmetric: true},
		{Name: QuantFP8Block, BlockSize: [2]int{0, 128}},
		{Name: QuantFP8Block, GroupSize: 64},
		{Name: QuantW4A16, GroupSize: -2},
		{Name: QuantW4A16, BlockSize: [2]int{1, 1}},
		{Name: QuantInt8, GroupSize: 32},
		{Name: QuantInt8, ScaleDType: safetensors.F8E4M3},
	} {
		if err := qs.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted it", qs)
		}
	}
	// Zero options mean the defaults, so the literal equals the parse.
	if (QuantizeScheme{Name: QuantW4A16}).Scheme() != mustScheme(t, QuantW4A16, "").Scheme() {
		t.Error("zero GroupSize is not the default")
	}
	if d := mustScheme(t, QuantFP8Block, OutputFP8).ScaleDTypeFor(safetensors.F32); d != safetensors.BF16 {
		t.Errorf("native fp8 default scale dtype %s, want BF16", d)
	}
	if d := mustScheme(t, QuantW4A16, "").ScaleDTypeFor(safetensors.F16); d != safetensors.F16 {
		t.Errorf("compressed-tensors default scale dtype %s, want the weight's F16", d)
	}
}

// Weights QuantizeWeight refuses.
func TestQuantizeWeightRejects(t *testing.T) {
	qs := mustScheme(t, QuantW4A16, "")
	for _, tc := range []struct {
		w    safetensors.TensorInfo
		n    int
		want error
	}{
		{safetensors.TensorInfo{Name: "m.weight", DType: safetensors.F8E4M3, Shape: []uint64{8, 128}}, 1024, ErrUnsupported},
		{safetensors.TensorInfo{Name: "m.weight", DType: safetensors.F64, Shape: []uint64{8, 128}}, 8192, ErrUnsupported},
		{safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{2, 8, 128}}, 4096, ErrUnsupported},
		{safetensors.TensorInfo{Name: "m.bias", DType: safetensors.BF16, Shape: []uint64{8, 128}}, 2048, ErrInvalid},
		{safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{0, 128}}, 0, ErrInvalid},
		{safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{8, 200}}, 3200, ErrInvalid}, // group 128 ∤ 200
		{safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{8, 128}}, 100, ErrInvalid},  // short data
	} {
		_, err := QuantizeWeight(qs, tc.w, make([]byte, tc.n))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.w.Name) {
			t.Errorf("%s %s%v: %v, want %v naming the tensor", tc.w.Name, tc.w.DType, tc.w.Shape, err, tc.want)
		}
	}
}

// quotients' float64-reciprocal multiply is float32 division, bit for bit:
// every BF16 x (and random float32 x) against scales of every kind.
func TestReciprocalDivision(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	scales := []float32{1, 0x1p-7, 0x1p-10, 0x1p-23, 0x1p-149, 3 * 0x1p-149, 0x1p-126, 448, 127.5, 7.5, math.MaxFloat32 / 1024}
	for range 300 {
		s := math.Float32frombits(rng.Uint32() & 0x7FFFFFFF)
		switch rng.IntN(4) {
		case 0:
			s = numeric.BF16ToF32(uint16(rng.Uint32()) & 0x7FFF)
		case 1:
			s = numeric.F16ToF32(uint16(rng.Uint32()) & 0x7BFF)
		case 2:
			s = math.Float32frombits(rng.Uint32() & 0x007FFFFF) // subnormal
		}
		if s != 0 && !math.IsInf(float64(s), 0) && !math.IsNaN(float64(s)) {
			scales = append(scales, s)
		}
	}
	check := func(x, s float32) {
		want := x / s
		got := float32(float64(x) * (1 / float64(s)))
		if math.Float32bits(got) != math.Float32bits(want) && !(math.IsNaN(float64(got)) && math.IsNaN(float64(want))) {
			t.Fatalf("%v / %v: division %v, reciprocal %v", x, s, want, got)
		}
	}
	for _, s := range scales {
		for u := range 1 << 16 {
			check(numeric.BF16ToF32(uint16(u)), s)
		}
		for range 1 << 12 {
			check(math.Float32frombits(rng.Uint32()), s)
		}
	}
}

// The magnitude-maximum scans against a plain loop, on random bit patterns
// (NaNs, infinities, −0 and subnormals included).
func TestMagnitudeMaxima(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 14))
	for n := range 40 {
		b := make([]byte, 4*n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if n%5 == 0 {
			for i := 1; i < len(b); i += 2 {
				b[i] = 0x80 // −0 and tiny negatives
			}
		}
		var p16, n16, p32, n32 uint32
		for i := 0; i+2 <= len(b); i += 2 {
			u := uint32(binary.LittleEndian.Uint16(b[i:]))
			if u&0x8000 != 0 {
				n16 = max(n16, u&0x7FFF)
			} else {
				p16 = max(p16, u)
			}
		}
		for i := 0; i+4 <= len(b); i += 4 {
			u := binary.LittleEndian.Uint32(b[i:])
			if u&0x80000000 != 0 {
				n32 = max(n32, u&0x7FFFFFFF)
			} else {
				p32 = max(p32, u)
			}
		}
		if p, q := signedMax16(b); p != p16 || q != n16 {
			t.Errorf("signedMax16 = %#x, %#x, want %#x, %#x", p, q, p16, n16)
		}
		if a := absMax16(b); a != max(p16, n16) {
			t.Errorf("absMax16 = %#x, want %#x", a, max(p16, n16))
		}
		if p, q := signedMax32(b); p != p32 || q != n32 {
			t.Errorf("signedMax32 = %#x, %#x, want %#x, %#x", p, q, p32, n32)
		}
		if a := absMax32(b); a != max(p32, n32) {
			t.Errorf("absMax32 = %#x, want %#x", a, max(p32, n32))
		}
	}
}
