package numeric

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// benchElems is 4 Mi elements: 8 MiB of BF16, beyond L2 on most machines,
// as a tensor would be.
const benchElems = 4 << 20

// benchData returns weight-like inputs: N(0, 100) float32 (so the FP8
// encoders see normals, subnormals and values past ±448) and their BF16
// bytes.
func benchData() ([]float32, []byte) {
	rng := rand.New(rand.NewPCG(5, 6))
	f32 := make([]float32, benchElems)
	bf := make([]byte, 2*benchElems)
	for i := range f32 {
		f32[i] = float32(rng.NormFloat64() * 100)
		binary.LittleEndian.PutUint16(bf[2*i:], F32ToBF16(f32[i]))
	}
	return f32, bf
}

// The reported MB/s count source bytes: 2 per BF16, 4 per float32, 1 per
// FP8 code.

func BenchmarkBF16ToF32Slice(b *testing.B) {
	_, bf := benchData()
	dst := make([]float32, benchElems)
	b.SetBytes(int64(len(bf)))
	for b.Loop() {
		BF16ToF32Slice(dst, bf)
	}
}

func BenchmarkF32ToBF16Slice(b *testing.B) {
	f32, _ := benchData()
	dst := make([]byte, 2*benchElems)
	b.SetBytes(4 * benchElems)
	for b.Loop() {
		F32ToBF16Slice(dst, f32)
	}
}

func BenchmarkE4M3FNToF32Slice(b *testing.B) {
	f32, _ := benchData()
	codes := make([]byte, benchElems)
	F32ToE4M3FNSatSlice(codes, f32)
	dst := make([]float32, benchElems)
	b.SetBytes(benchElems)
	for b.Loop() {
		E4M3FNToF32Slice(dst, codes)
	}
}

func BenchmarkF32ToE4M3FNSlice(b *testing.B) {
	f32, _ := benchData()
	dst := make([]byte, benchElems)
	b.SetBytes(4 * benchElems)
	for b.Loop() {
		F32ToE4M3FNSlice(dst, f32)
	}
}

func BenchmarkF32ToE4M3FNSatSlice(b *testing.B) {
	f32, _ := benchData()
	dst := make([]byte, benchElems)
	b.SetBytes(4 * benchElems)
	for b.Loop() {
		F32ToE4M3FNSatSlice(dst, f32)
	}
}

func BenchmarkBF16ToE4M3FNSatSlice(b *testing.B) {
	_, bf := benchData()
	dst := make([]byte, benchElems)
	BF16ToE4M3FNSatSlice(dst, bf) // build the table outside the timing
	b.SetBytes(int64(len(bf)))
	for b.Loop() {
		BF16ToE4M3FNSatSlice(dst, bf)
	}
}
