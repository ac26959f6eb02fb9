package numeric

import "math"

// E4M3FN constants (formats.md §1.1).
const (
	// E4M3FNMax is the largest finite E4M3FN value, code 0x7E.
	E4M3FNMax = 448
	// E4M3FNNaN is the positive NaN code; 0xFF is the negative one. There
	// are no infinities.
	E4M3FNNaN = 0x7F
)

// Float32 bit patterns the encoders compare |x| against.
const (
	f32AbsMask = 0x7FFFFFFF
	f32Inf     = 0x7F800000
	f32448     = 0x43E00000 // 448.0
	// e4m3NaNFrom is 480.0: from here on, rounding 4 mantissa bits always
	// lands on or beyond exponent 15 mantissa 7, the NaN code. torch tests
	// this bound, not 464, and lets the rounding below produce NaN for
	// 464 < |x| < 480.
	e4m3NaNFrom = 0x43F00000
	// e4m3MinNormal is 2^-6, the smallest normal E4M3FN value.
	e4m3MinNormal = 0x3C800000
	// e4m3SubnormalAddend is 16384.0 = 2^14, whose float32 ulp is 2^-9, the
	// E4M3FN subnormal step: adding it to |x| < 2^-6 makes the float32
	// adder round |x| to a multiple of 2^-9 (RNE) for us.
	e4m3SubnormalAddend = 0x46800000
)

// F32ToE4M3FN converts x to FP8 E4M3FN exactly as torch's
// x.to(torch.float8_e4m3fn) does (c10 fp8e4m3fn_from_fp32_value, formats.md
// §1.2): RNE, subnormals down to 2^-9, no saturation. 448 < |x| ≤ 464
// gives ±448; |x| > 464, ±Inf and NaN give NaN (0x7F, or 0xFF when x's sign
// bit is set). Quantizers want [F32ToE4M3FNSat] instead.
func F32ToE4M3FN(x float32) uint8 {
	u := math.Float32bits(x)
	sign := uint8(u>>24) & 0x80
	b := u & f32AbsMask
	switch {
	case b >= e4m3NaNFrom:
		return E4M3FNNaN | sign
	case b < e4m3MinNormal:
		// The explicit float32 conversion keeps the compiler from folding
		// the sum into wider arithmetic; the rounding of this float32 add
		// is the whole point.
		sum := float32(math.Float32frombits(b) + math.Float32frombits(e4m3SubnormalAddend))
		return uint8(math.Float32bits(sum)-e4m3SubnormalAddend) | sign
	default:
		// Rebias the exponent (127 → 7) and round the 20 bits that are
		// dropped to nearest even, all in one integer add; a carry out of
		// the mantissa correctly bumps the exponent. b ≥ 2^-6 here, so the
		// subtraction cannot wrap.
		odd := (b >> 20) & 1
		b = b - (127-7)<<23 + 0x7FFFF + odd
		return uint8(b>>20) | sign
	}
}

// F32ToE4M3FNSat is the quantizer's conversion: clamp x to [−448, 448], then
// convert as [F32ToE4M3FN]. Finite inputs and ±Inf never become NaN; NaN
// stays NaN (with its sign), as torch.clamp propagates it. This is what
// compressed-tensors, transformers and optimum-quanto compute, and what the
// saturating PTX/CUDA conversions give (formats.md §1.2), so all paths agree.
func F32ToE4M3FNSat(x float32) uint8 {
	u := math.Float32bits(x)
	b := u & f32AbsMask
	if b > f32448 && b <= f32Inf {
		return 0x7E | uint8(u>>24)&0x80
	}
	return F32ToE4M3FN(x)
}

// e4m3Decode holds the value of every E4M3FN code; NaN codes hold NaN with
// the code's sign.
var e4m3Decode = func() (t [256]float32) {
	for c := range t {
		t[c] = decodeE4M3FN(uint8(c))
	}
	return t
}()

// decodeE4M3FN evaluates formats.md §1.1 directly; E4M3FNToF32 uses its
// table.
func decodeE4M3FN(c uint8) float32 {
	e, m := int(c>>3)&0xF, float64(c&7)
	var v float64
	switch {
	case e == 15 && m == 7:
		v = math.NaN()
	case e == 0:
		v = m * 0x1p-9
	default:
		v = math.Ldexp(1+m/8, e-7)
	}
	if c&0x80 != 0 {
		v = math.Copysign(v, -1)
	}
	return float32(v)
}

// E4M3FNToF32 returns the value of the E4M3FN code b (exact in float32).
// 0x7F and 0xFF are NaN.
func E4M3FNToF32(b uint8) float32 { return e4m3Decode[b] }

// E5M2 constants (formats.md §1.3).
const (
	// E5M2Max is the largest finite E5M2 value, code 0x7B.
	E5M2Max = 57344
	// e5m2InfFrom is 2^16: at or above it (and for Inf/NaN) torch's
	// encoder takes the special path; 61440 ≤ |x| < 2^16 rounds up to Inf
	// through the ordinary rounding.
	e5m2InfFrom = 143 << 23
	// e5m2MinNormal is 2^-14, the smallest normal E5M2 value.
	e5m2MinNormal = 113 << 23
	// e5m2SubnormalAddend is 128.0 = 2^7, whose float32 ulp is 2^-16, the
	// E5M2 subnormal step.
	e5m2SubnormalAddend = 134 << 23
)

// F32ToE5M2 converts x to FP8 E5M2 as torch does (c10
// fp8e5m2_from_fp32_value): RNE, subnormals down to 2^-16, overflow to ±Inf
// (0x7C/0xFC) past the rounding midpoint above 57344, NaN to 0x7F with x's
// sign.
func F32ToE5M2(x float32) uint8 {
	u := math.Float32bits(x)
	sign := uint8(u>>24) & 0x80
	b := u & f32AbsMask
	switch {
	case b >= e5m2InfFrom:
		if b > f32Inf {
			return 0x7F | sign
		}
		return 0x7C | sign
	case b < e5m2MinNormal:
		sum := float32(math.Float32frombits(b) + math.Float32frombits(e5m2SubnormalAddend))
		return uint8(math.Float32bits(sum)-e5m2SubnormalAddend) | sign
	default:
		odd := (b >> 21) & 1
		b = b - (127-15)<<23 + 0xFFFFF + odd
		return uint8(b>>21) | sign
	}
}

// E5M2ToF32 returns the value of the E5M2 code b. E5M2 is the top byte of
// an IEEE half, so it decodes as one.
func E5M2ToF32(b uint8) float32 { return F16ToF32(uint16(b) << 8) }

// BF16NaN is the NaN torch's scalar float32 → bfloat16 conversion returns.
const BF16NaN = 0x7FC0

// F32ToBF16 converts x to BF16 as torch does (c10 round_to_nearest_even,
// formats.md §1.4): RNE on the 16 dropped bits, no flush to zero, overflow
// to ±Inf, NaN to 0x7FC0 (torch's scalar path; its vectorized CPU path
// gives 0xFFFF, so do not byte-compare NaNs).
func F32ToBF16(x float32) uint16 {
	u := math.Float32bits(x)
	if u&f32AbsMask > f32Inf {
		return BF16NaN
	}
	return uint16((u + 0x7FFF + ((u >> 16) & 1)) >> 16)
}

// BF16ToF32 widens a BF16 value, which is always exact.
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F16ToF32 widens an IEEE half (exact), keeping NaN payloads.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	e, m := uint32(h>>10)&0x1F, uint32(h&0x3FF)
	switch {
	case e == 0x1F: // Inf or NaN: keep the payload in the top mantissa bits.
		return math.Float32frombits(sign | f32Inf | m<<13)
	case e != 0:
		return math.Float32frombits(sign | (e+127-15)<<23 | m<<13)
	case m == 0:
		return math.Float32frombits(sign)
	default:
		// Subnormal m × 2^-24: exact in float32, and the multiply by a
		// power of two cannot round.
		v := float32(m) * 0x1p-24
		return math.Float32frombits(sign | math.Float32bits(v))
	}
}

// f16 bit patterns and float32 bounds for F32ToF16.
const (
	f16NaN = 0x7E00
	f16Inf = 0x7C00
	// f16OverflowFrom is 65520, the midpoint between the largest half
	// (65504, odd mantissa) and 2^16: from it on RNE goes to Inf.
	f16OverflowFrom = 0x477FF000
	// f16MinNormal is 2^-14.
	f16MinNormal = 0x38800000
	// f16SubnormalAddend is 0.5, whose float32 ulp is 2^-24, the half
	// subnormal step.
	f16SubnormalAddend = 0x3F000000
)

// F32ToF16 converts x to an IEEE half with RNE, subnormals and overflow to
// ±Inf; NaN becomes 0x7E00 with x's sign, as c10's
// fp16_ieee_from_fp32_value returns.
func F32ToF16(x float32) uint16 {
	u := math.Float32bits(x)
	sign := uint16(u>>16) & 0x8000
	b := u & f32AbsMask
	switch {
	case b > f32Inf:
		return f16NaN | sign
	case b >= f16OverflowFrom:
		return f16Inf | sign
	case b < f16MinNormal:
		sum := float32(math.Float32frombits(b) + math.Float32frombits(f16SubnormalAddend))
		return uint16(math.Float32bits(sum)-f16SubnormalAddend) | sign
	default:
		odd := (b >> 13) & 1
		b = b - (127-15)<<23 + 0xFFF + odd
		return uint16(b>>13) | sign
	}
}
