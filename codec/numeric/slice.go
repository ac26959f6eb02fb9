package numeric

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
)

// bf16ToE4M3 and bf16ToE4M3Sat map every BF16 bit pattern to its E4M3FN
// code. A table is exact here because a BF16 value widens to float32
// without rounding, so the float32 encoder sees exactly the same input.
// Built on first use so that importers that never convert to FP8 pay
// nothing.
var (
	bf16ToE4M3 = sync.OnceValue(func() *[1 << 16]uint8 {
		var t [1 << 16]uint8
		for u := range t {
			t[u] = F32ToE4M3FN(BF16ToF32(uint16(u)))
		}
		return &t
	})
	bf16ToE4M3Sat = sync.OnceValue(func() *[1 << 16]uint8 {
		var t [1 << 16]uint8
		for u := range t {
			t[u] = F32ToE4M3FNSat(BF16ToF32(uint16(u)))
		}
		return &t
	})
)

// BF16ToE4M3FN converts a BF16 value to E4M3FN as torch does (directly or
// via float32; both give the same code, formats.md §14.3).
func BF16ToE4M3FN(b uint16) uint8 { return bf16ToE4M3()[b] }

// BF16ToE4M3FNSat clamps a BF16 value to [−448, 448] and converts it to
// E4M3FN, as [F32ToE4M3FNSat] does.
func BF16ToE4M3FNSat(b uint16) uint8 { return bf16ToE4M3Sat()[b] }

// elems returns the element count of a byte slice of size-byte elements,
// panicking on a partial element: the tensor bytes are malformed.
func elems(src []byte, size int, fn string) int {
	if len(src)%size != 0 {
		panic(fmt.Sprintf("numeric.%s: %d source bytes is not a whole number of %d-byte elements", fn, len(src), size))
	}
	return len(src) / size
}

// BF16ToF32Slice widens the little-endian BF16 values in src into
// dst[:len(src)/2].
func BF16ToF32Slice(dst []float32, src []byte) {
	n := elems(src, 2, "BF16ToF32Slice")
	dst = dst[:n]
	// Four elements per 64-bit load; the re-slicing lets the compiler drop
	// bounds checks in the loop.
	i := 0
	for ; i+4 <= n; i += 4 {
		v := binary.LittleEndian.Uint64(src[2*i : 2*i+8])
		d := dst[i : i+4 : i+4]
		d[0] = math.Float32frombits(uint32(v) << 16)
		d[1] = math.Float32frombits(uint32(v>>16) << 16)
		d[2] = math.Float32frombits(uint32(v>>32) << 16)
		d[3] = math.Float32frombits(uint32(v>>48) << 16)
	}
	for ; i < n; i++ {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// F32ToBF16Slice rounds src to BF16 as [F32ToBF16] does and stores the
// little-endian results in dst[:2*len(src)].
func F32ToBF16Slice(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	for i, x := range src {
		binary.LittleEndian.PutUint16(dst[2*i:2*i+2], F32ToBF16(x))
	}
}

// E4M3FNToF32Slice decodes the E4M3FN codes in src into dst[:len(src)].
func E4M3FNToF32Slice(dst []float32, src []byte) {
	dst = dst[:len(src)]
	t := &e4m3Decode
	for i, c := range src {
		dst[i] = t[c]
	}
}

// F32ToE4M3FNSlice converts src with [F32ToE4M3FN] (torch's unclamped cast)
// into dst[:len(src)].
func F32ToE4M3FNSlice(dst []byte, src []float32) { f32ToE4M3Slice(dst, src, e4m3NaNFrom) }

// F32ToE4M3FNSatSlice converts src with [F32ToE4M3FNSat] (clamp to ±448,
// then cast: the quantizer's path) into dst[:len(src)].
func F32ToE4M3FNSatSlice(dst []byte, src []float32) { f32ToE4M3Slice(dst, src, f32448+1) }

// f32ToE4M3Slice is F32ToE4M3FN written out in the loop, because the
// scalar function is too large for the compiler to inline and the call
// would cost as much as the conversion. |x| ≥ special (as float32 bits)
// takes the special path: NaN for NaN inputs, and for the others NaN
// (unclamped, special = 480) or ±448 (saturating, special just above 448).
// The tests check both against the scalar functions on every BF16 input.
func f32ToE4M3Slice(dst []byte, src []float32, special uint32) {
	dst = dst[:len(src)]
	for i, x := range src {
		u := math.Float32bits(x)
		sign := uint8(u>>24) & 0x80
		b := u & f32AbsMask
		var r uint8
		switch {
		case b >= special:
			r = E4M3FNNaN
			if special != e4m3NaNFrom && b <= f32Inf {
				r = 0x7E
			}
		case b < e4m3MinNormal:
			sum := float32(math.Float32frombits(b) + math.Float32frombits(e4m3SubnormalAddend))
			r = uint8(math.Float32bits(sum) - e4m3SubnormalAddend)
		default:
			odd := (b >> 20) & 1
			r = uint8((b - (127-7)<<23 + 0x7FFFF + odd) >> 20)
		}
		dst[i] = r | sign
	}
}

// BF16ToE4M3FNSlice converts the little-endian BF16 values in src to
// E4M3FN with torch's unclamped cast into dst[:len(src)/2], by table.
func BF16ToE4M3FNSlice(dst, src []byte) {
	bf16TableSlice(dst, src, bf16ToE4M3(), "BF16ToE4M3FNSlice")
}

// BF16ToE4M3FNSatSlice clamps the little-endian BF16 values in src to
// [−448, 448] and converts them to E4M3FN into dst[:len(src)/2], by table.
func BF16ToE4M3FNSatSlice(dst, src []byte) {
	bf16TableSlice(dst, src, bf16ToE4M3Sat(), "BF16ToE4M3FNSatSlice")
}

func bf16TableSlice(dst, src []byte, t *[1 << 16]uint8, fn string) {
	n := elems(src, 2, fn)
	dst = dst[:n]
	i := 0
	for ; i+4 <= n; i += 4 {
		v := binary.LittleEndian.Uint64(src[2*i : 2*i+8])
		d := dst[i : i+4 : i+4]
		d[0] = t[uint16(v)]
		d[1] = t[uint16(v>>16)]
		d[2] = t[uint16(v>>32)]
		d[3] = t[uint16(v>>48)]
	}
	for ; i < n; i++ {
		dst[i] = t[binary.LittleEndian.Uint16(src[2*i:])]
	}
}
