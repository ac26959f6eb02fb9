package numeric

import "math"

// Independent float64 reference implementations. They share no code with
// the package: rounding is done by scaling to the target's ulp and calling
// math.RoundToEven (exact in float64, since every input is a float32 and the
// scaling is by powers of two), and decoding evaluates the formats'
// definitions with integer significands. They are slow and obviously
// correct, which is the point.

// refRound rounds a (≥ 0, finite) to a binary format with mant explicit
// mantissa bits and smallest normal 2^emin, to nearest even, ignoring the
// format's upper range (callers apply their overflow rule).
func refRound(a float64, mant, emin int) float64 {
	if a == 0 {
		return 0
	}
	_, exp := math.Frexp(a) // a ∈ [2^(exp-1), 2^exp)
	e := max(exp-1, emin)
	ulp := math.Ldexp(1, e-mant)
	return math.RoundToEven(a/ulp) * ulp
}

// refResult is a reference conversion result: a NaN (with the sign the
// encoder must keep) or a value whose sign is in neg (so −0 is expressible).
type refResult struct {
	nan bool
	neg bool
	abs float64 // |value|, may be +Inf
}

func refSplit(x float32) (a float64, neg, nan bool) {
	f := float64(x)
	return math.Abs(f), math.Signbit(f), math.IsNaN(f)
}

// refE4M3FN is torch's unclamped cast described as plain rounding: RNE to
// the E4M3FN grid, and |x| > 464 (the midpoint between 448 and the 480
// that the NaN code would be) is NaN.
func refE4M3FN(x float32) refResult {
	a, neg, nan := refSplit(x)
	if nan || a > 464 {
		return refResult{nan: true, neg: neg}
	}
	return refResult{neg: neg, abs: refRound(a, 3, -6)}
}

// refE4M3FNSat clamps to ±448 first; NaN stays NaN.
func refE4M3FNSat(x float32) refResult {
	a, neg, nan := refSplit(x)
	if nan {
		return refResult{nan: true, neg: neg}
	}
	return refResult{neg: neg, abs: refRound(min(a, 448), 3, -6)}
}

// refOverflow rounds with the given format parameters and turns anything
// above maxFinite into Inf (the IEEE-style formats: E5M2, BF16, F16).
func refOverflow(x float32, mant, emin int, maxFinite float64) refResult {
	a, neg, nan := refSplit(x)
	if nan {
		return refResult{nan: true, neg: neg}
	}
	if math.IsInf(a, 0) {
		return refResult{neg: neg, abs: a}
	}
	v := refRound(a, mant, emin)
	if v > maxFinite {
		v = math.Inf(1)
	}
	return refResult{neg: neg, abs: v}
}

func refE5M2(x float32) refResult { return refOverflow(x, 2, -14, 57344) }

// refBF16 uses BF16's largest finite value (2 − 2^-7)·2^127.
func refBF16(x float32) refResult { return refOverflow(x, 7, -126, (2-0x1p-7)*0x1p127) }

func refF16(x float32) refResult { return refOverflow(x, 10, -14, 65504) }

// refDecodeE4M3FN evaluates formats.md §1.1: (8+M)·2^(E−10) for normals,
// M·2^-9 for subnormals, S.1111.111 is NaN.
func refDecodeE4M3FN(c uint8) refResult {
	e, m := int(c>>3&0xF), int(c&7)
	r := refResult{neg: c&0x80 != 0}
	switch {
	case e == 15 && m == 7:
		r.nan = true
	case e == 0:
		r.abs = math.Ldexp(float64(m), -9)
	default:
		r.abs = math.Ldexp(float64(8+m), e-10)
	}
	return r
}

// refDecodeIEEE decodes an IEEE-style binary format with ebits exponent
// bits and mbits mantissa bits (E5M2: 5, 2; F16: 5, 10; BF16: 8, 7).
func refDecodeIEEE(bits uint32, ebits, mbits int) refResult {
	bias := 1<<(ebits-1) - 1
	e := int(bits>>mbits) & (1<<ebits - 1)
	m := int(bits & (1<<mbits - 1))
	r := refResult{neg: bits>>(ebits+mbits)&1 != 0}
	switch {
	case e == 1<<ebits-1 && m != 0:
		r.nan = true
	case e == 1<<ebits-1:
		r.abs = math.Inf(1)
	case e == 0:
		r.abs = math.Ldexp(float64(m), 1-bias-mbits)
	default:
		r.abs = math.Ldexp(float64(1<<mbits+m), e-bias-mbits)
	}
	return r
}

func refDecodeE5M2(c uint8) refResult  { return refDecodeIEEE(uint32(c), 5, 2) }
func refDecodeF16(h uint16) refResult  { return refDecodeIEEE(uint32(h), 5, 10) }
func refDecodeBF16(b uint16) refResult { return refDecodeIEEE(uint32(b), 8, 7) }

// matches reports whether a decoded result equals the reference: both NaN
// with the same sign, or the same magnitude with the same sign.
func (r refResult) matches(want refResult) bool {
	if r.nan || want.nan {
		return r.nan && want.nan && r.neg == want.neg
	}
	return r.abs == want.abs && r.neg == want.neg
}

// matchesIgnoringNaNSign is for conversions whose NaN sign torch does not
// define (BF16's scalar path returns the positive 0x7FC0).
func (r refResult) matchesIgnoringNaNSign(want refResult) bool {
	if r.nan || want.nan {
		return r.nan && want.nan
	}
	return r.abs == want.abs && r.neg == want.neg
}
