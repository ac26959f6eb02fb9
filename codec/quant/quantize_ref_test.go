package quant

import (
	"encoding/binary"
	"math"
	"sort"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
)

// An independent float64 reference of the quantizers: the §5.4 formulas
// evaluated element by element with float64 arithmetic and its own
// rounding functions (no codec/numeric, no kernel code). A torch op on a
// tensor of dtype S is "the exact result rounded to float32, then to S":
// float64 computes +, −, × and ÷ of float32 operands with a rounding that,
// followed by a rounding to float32, gives the correctly rounded float32
// result (53 ≥ 2·24 + 2), so refOp(exact64) reproduces a float32 op.

// refFormat describes a binary float format for refRound.
type refFormat struct {
	bits   int     // significant bits, the leading one included
	minExp int     // exponent of the smallest normal
	max    float64 // largest finite value
}

var (
	refF32  = refFormat{24, -126, math.MaxFloat32}
	refBF16 = refFormat{8, -126, 0x1.FEp127}
	refF16  = refFormat{11, -14, 65504}
)

func refFormatOf(d safetensors.DType) refFormat {
	switch d {
	case safetensors.BF16:
		return refBF16
	case safetensors.F16:
		return refF16
	}
	return refF32
}

// refRound rounds x to format f: RNE to f.bits significant bits (fewer in
// the subnormal range), ±Inf past the largest finite value's rounding
// boundary. NaN stays NaN.
func refRound(x float64, f refFormat) float64 {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	_, e := math.Frexp(x) // |x| = m·2^e, m ∈ [0.5, 1): leading bit at e−1
	lead := max(e-1, f.minExp)
	quantum := math.Ldexp(1, lead-(f.bits-1))
	r := math.RoundToEven(x/quantum) * quantum
	if math.Abs(r) > f.max {
		return math.Copysign(math.Inf(1), x)
	}
	return r
}

// refOp is one torch op on a tensor of dtype S: exact (float64) result,
// rounded to float32, then to S.
func refOp(x float64, s refFormat) float64 { return refRound(refRound(x, refF32), s) }

// refE4M3 lists the non-negative finite E4M3FN values by code (§1.1).
var refE4M3 = func() (v [127]float64) {
	for c := range v {
		e, m := c>>3, float64(c&7)
		if e == 0 {
			v[c] = m * math.Ldexp(1, -9)
		} else {
			v[c] = (1 + m/8) * math.Ldexp(1, e-7)
		}
	}
	return v
}()

// refFP8 is the quantizer's FP8 code of v: clamp to ±448, then the nearest
// E4M3FN value, ties to the even code (even mantissa), found by search.
func refFP8(v float64) byte {
	sign := byte(0)
	if math.Signbit(v) {
		sign, v = 0x80, -v
	}
	v = math.Min(v, 448)
	// The values increase with the code: take the two around v.
	hi := sort.SearchFloat64s(refE4M3[:], v)
	if hi == 0 {
		return sign
	}
	lo := hi - 1
	if hi == len(refE4M3) {
		return byte(lo) | sign
	}
	dl, dh := v-refE4M3[lo], refE4M3[hi]-v
	if dl < dh || dl == dh && lo%2 == 0 {
		return byte(lo) | sign
	}
	return byte(hi) | sign
}

// refDecodeFP8 is the value of an E4M3FN code (no NaN codes occur).
func refDecodeFP8(c byte) float64 {
	v := refE4M3[c&0x7F]
	if c&0x80 != 0 {
		return -v
	}
	return v
}

// refResult is the reference quantization of one weight.
type refResult struct {
	codes  []int     // [out·in]: FP8 code bytes, or signed integer codes
	scales []float64 // stored scale values, row-major grid
	zps    []int     // zero points, grid (asymmetric)
	sRows  int
	sCols  int
	cell   func(r, c int) int
}

// refQuantize quantizes x ([out·in] exact weight values) with qs for a
// weight of dtype wd: §5.4 step by step.
func refQuantize(qs QuantizeScheme, wd safetensors.DType, out, in int, x []float64) refResult {
	qs = qs.normalized()
	sd := qs.ScaleDTypeFor(wd)
	S := refFormatOf(sd)
	rowDiv, colDiv := 1, in
	var qmin, qmax float64
	fp8 := false
	switch qs.Name {
	case QuantFP8Block:
		rowDiv, colDiv, qmin, qmax, fp8 = qs.BlockSize[0], qs.BlockSize[1], -448, 448, true
	case QuantInt8:
		qmin, qmax = -128, 127
	case QuantW4A16:
		qmin, qmax = -8, 7
		if qs.GroupSize > 0 {
			colDiv = qs.GroupSize
		}
	}
	sRows, sCols := (out+rowDiv-1)/rowDiv, (in+colDiv-1)/colDiv
	res := refResult{codes: make([]int, out*in), scales: make([]float64, sRows*sCols), zps: make([]int, sRows*sCols), sRows: sRows, sCols: sCols}
	res.cell = func(r, c int) int { return (r/rowDiv)*sCols + c/colDiv }
	// Step 1: min(min, 0) and max(max, 0) per cell; the zero padding of a
	// partial block is implied by starting from 0.
	lo, hi := make([]float64, len(res.scales)), make([]float64, len(res.scales))
	for r := range out {
		for c := range in {
			k := res.cell(r, c)
			lo[k], hi[k] = math.Min(lo[k], x[r*in+c]), math.Max(hi[k], x[r*in+c])
		}
	}
	var eps float64
	switch {
	case qs.Format == OutputFP8:
		eps = 1
	case sd == safetensors.BF16:
		eps = math.Ldexp(1, -7)
	case sd == safetensors.F16:
		eps = math.Ldexp(1, -10)
	default:
		eps = math.Ldexp(1, -23)
	}
	for k := range res.scales {
		var s float64
		if !qs.Asymmetric {
			// Step 3: absmax / ((qmax − qmin)/2).
			s = refOp(math.Max(-lo[k], hi[k])/((qmax-qmin)/2), S)
		} else {
			// Step 4: (max − min)/(qmax − qmin); zp from the unreplaced s.
			rng := refOp(hi[k]-lo[k], S)
			s = refOp(rng/(qmax-qmin), S)
			z := refOp(qmin-refOp(lo[k]/s, S), S)
			z = math.Max(qmin, math.Min(qmax, z))
			if !math.IsNaN(z) {
				res.zps[k] = int(math.RoundToEven(z))
			}
		}
		if s == 0 { // step 5
			s = eps
		}
		res.scales[k] = s
	}
	// Codes: float32 quotient by the stored scale (+ zp as a float32 add),
	// clamp, one RNE.
	for r := range out {
		for c := range in {
			k := res.cell(r, c)
			v := refRound(x[r*in+c]/res.scales[k], refF32)
			if qs.Asymmetric {
				v = refRound(v+float64(res.zps[k]), refF32)
			}
			if fp8 {
				res.codes[r*in+c] = int(refFP8(v))
			} else {
				res.codes[r*in+c] = int(math.RoundToEven(math.Max(qmin, math.Min(qmax, v))))
			}
		}
	}
	return res
}

// dequant returns the reference dequantization as BF16 bits: (q − zp)·s,
// exact in float64, rounded to float32 (torch's product) and then to BF16.
func (res refResult) dequant(qs QuantizeScheme, out, in int) []uint16 {
	qs = qs.normalized()
	y := make([]uint16, out*in)
	for r := range out {
		for c := range in {
			k := res.cell(r, c)
			var q float64
			if qs.Name == QuantFP8Block {
				q = refDecodeFP8(byte(res.codes[r*in+c]))
			} else {
				q = float64(res.codes[r*in+c] - res.zps[k])
			}
			v := refRound(refRound(q*res.scales[k], refF32), refBF16)
			y[r*in+c] = uint16(math.Float32bits(float32(v)) >> 16)
		}
	}
	return y
}

// weightBytes encodes exact values (already representable) in dtype d, with
// the encoders of this file's reference (bit manipulation of the float32
// pattern, exact because the values are representable).
func weightBytes(t *testing.T, d safetensors.DType, x []float64) []byte {
	t.Helper()
	es := d.BitSize() / 8
	b := make([]byte, len(x)*es)
	for i, v := range x {
		if refRound(v, refFormatOf(d)) != v && !math.IsNaN(v) {
			t.Fatalf("weight value %v is not a %s value", v, d)
		}
		f := float32(v)
		switch d {
		case safetensors.BF16:
			binary.LittleEndian.PutUint16(b[2*i:], uint16(math.Float32bits(f)>>16))
		case safetensors.F16:
			binary.LittleEndian.PutUint16(b[2*i:], refF16Bits(v))
		default:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
		}
	}
	return b
}

// refF16Bits encodes an F16-representable value.
func refF16Bits(v float64) uint16 {
	var sign uint16
	if math.Signbit(v) {
		sign, v = 0x8000, -v
	}
	switch {
	case math.IsNaN(v):
		return 0x7E00
	case math.IsInf(v, 0):
		return sign | 0x7C00
	case v == 0:
		return sign
	case v < math.Ldexp(1, -14):
		return sign | uint16(v*math.Ldexp(1, 24))
	}
	_, e := math.Frexp(v)
	e-- // v = (1 + m/1024)·2^e
	m := uint16((v/math.Ldexp(1, e) - 1) * 1024)
	return sign | uint16(e+15)<<10 | m
}

// decodeScales reads a scale tensor as exact values.
func decodeScales(d safetensors.DType, b []byte) []float64 {
	es := d.BitSize() / 8
	out := make([]float64, len(b)/es)
	for i := range out {
		switch d {
		case safetensors.BF16:
			out[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16))
		case safetensors.F16:
			out[i] = refF16Value(binary.LittleEndian.Uint16(b[2*i:]))
		default:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
	}
	return out
}

func refF16Value(h uint16) float64 {
	e, m := int(h>>10)&0x1F, float64(h&0x3FF)
	var v float64
	switch e {
	case 0:
		v = m * math.Ldexp(1, -24)
	case 31:
		v = math.Inf(1)
		if m != 0 {
			v = math.NaN()
		}
	default:
		v = (1 + m/1024) * math.Ldexp(1, e-15)
	}
	if h&0x8000 != 0 {
		v = -v
	}
	return v
}

func TestRefRound(t *testing.T) {
	// §1.4 / §14.4 BF16 vectors and F16 edges, through the reference.
	for _, tc := range []struct {
		x, want float64
		f       refFormat
	}{
		{1 + 0x1p-8, 1, refBF16},
		{1 + 3*0x1p-8, 1 + 0x1p-6, refBF16},
		{1 + 0x1p-8 + 0x1p-20, 1 + 0x1p-7, refBF16},
		{-1.5 + 0x1p-9, -1.5, refBF16},
		{3.4028234663852886e38, math.Inf(1), refBF16},
		{1e-45, 0, refBF16},
		{65519, 65504, refF16},
		{65520, math.Inf(1), refF16},
		{0x1p-25, 0, refF16},
		{0x1.8p-25, 0x1p-24, refF16},
		{math.MaxFloat32, math.MaxFloat32, refF32},
	} {
		if got := refRound(tc.x, tc.f); got != tc.want {
			t.Errorf("refRound(%v, %d bits) = %v, want %v", tc.x, tc.f.bits, got, tc.want)
		}
	}
	// §14.2 FP8 encodes after the clamp.
	for _, tc := range []struct {
		x    float64
		want byte
	}{
		{448, 0x7E}, {464, 0x7E}, {465, 0x7E}, {-480, 0xFE}, {1.0625, 0x38}, {1.1875, 0x3A},
		{0x1p-10, 0x00}, {1.5 * 0x1p-9, 0x02}, {2.5 * 0x1p-9, 0x02}, {0.3, 0x2A}, {-0.3, 0xAA}, {241, 0x77},
	} {
		if got := refFP8(tc.x); got != tc.want {
			t.Errorf("refFP8(%v) = %#02x, want %#02x", tc.x, got, tc.want)
		}
	}
}
