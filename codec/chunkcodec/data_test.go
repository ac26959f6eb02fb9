package chunkcodec

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
)

// Test data: seeded generators for the dtypes the store meets.

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6865667421)) }

// bf16 rounds f to bfloat16 with round-to-nearest-even, as torch does.
func bf16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40 // quiet NaN
	}
	return uint16((b + 0x7fff + (b >> 16 & 1)) >> 16)
}

// f16 converts f to IEEE binary16 with round-to-nearest-even.
func f16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b >> 16 & 0x8000)
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case b&0x7fffffff > 0x7f800000:
		return sign | 0x7e00
	case exp >= 31:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		half := uint32(1) << (shift - 1)
		r := mant >> shift
		rem := mant & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++
	}
	return sign | uint16(r)
}

func normals(seed uint64, n int, sigma float64) []float32 {
	r := newRand(seed)
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64() * sigma)
	}
	return out
}

func bf16Data(seed uint64, n int, sigma float64) []byte {
	b := make([]byte, 2*n)
	for i, f := range normals(seed, n, sigma) {
		binary.LittleEndian.PutUint16(b[2*i:], bf16(f))
	}
	return b
}

func f16Data(seed uint64, n int, sigma float64) []byte {
	b := make([]byte, 2*n)
	for i, f := range normals(seed, n, sigma) {
		binary.LittleEndian.PutUint16(b[2*i:], f16(f))
	}
	return b
}

func f32Data(seed uint64, n int, sigma float64) []byte {
	b := make([]byte, 4*n)
	for i, f := range normals(seed, n, sigma) {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

// f32FromBF16 is F32 upcast from BF16: the low 16 bits are zero.
func f32FromBF16(seed uint64, n int, sigma float64) []byte {
	b := make([]byte, 4*n)
	for i, f := range normals(seed, n, sigma) {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(bf16(f))<<16)
	}
	return b
}

// f8Data is FP8 E5M2, which is the top byte of an F16, with normal values.
func f8Data(seed uint64, n int, sigma float64) []byte {
	b := make([]byte, n)
	for i, f := range normals(seed, n, sigma) {
		b[i] = byte(f16(f) >> 8)
	}
	return b
}

func f64Data(seed uint64, n int, sigma float64) []byte {
	r := newRand(seed)
	b := make([]byte, 8*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(r.NormFloat64()*sigma))
	}
	return b
}

func randomBytes(seed uint64, n int) []byte {
	r := newRand(seed)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// specials overwrites every k-th element of b (element size e) with NaN,
// infinities, denormals, signed zeros and extremes of that width.
func specials(b []byte, e, k int) []byte {
	var pats []uint64
	switch e {
	case 1:
		pats = []uint64{0x7f, 0xff, 0x7c, 0xfc, 0x01, 0x81, 0x00, 0x80, 0x7b}
	case 2:
		pats = []uint64{0x7fc0, 0xffc0, 0x7f80, 0xff80, 0x0001, 0x8001, 0x007f, 0x0000, 0x8000, 0x7f7f, 0x7e00, 0x7c00, 0xfc00, 0x03ff}
	case 4:
		pats = []uint64{0x7fc00000, 0xffc00001, 0x7f800000, 0xff800000, 0x00000001, 0x807fffff, 0, 0x80000000, 0x7f7fffff}
	case 8:
		pats = []uint64{0x7ff8000000000000, 0xfff0000000000000, 0x7ff0000000000000, 1, 0x800fffffffffffff, 0, 1 << 63}
	}
	for i, j := 0, 0; i+e <= len(b); i, j = i+e*k, j+1 {
		v := pats[j%len(pats)]
		for x := 0; x < e; x++ {
			b[i+x] = byte(v >> (8 * x))
		}
	}
	return b
}

func repeat(v []byte, n int) []byte {
	b := make([]byte, 0, len(v)*n)
	for range n {
		b = append(b, v...)
	}
	return b
}
