package quant

import (
	"math/rand/v2"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
)

// Dequantization throughput on one 4096×4096 weight (a Qwen3-8B-sized
// projection). b.SetBytes counts the BF16 output (32 MiB), so MB/s is
// output bytes per second. "alloc" includes allocating (and faulting in)
// the output; "into" reuses one buffer, as a streaming caller would.

func benchSynth(b *testing.B, sy *synth, dtype safetensors.DType) {
	m, err := Detect([]byte(sy.cfg), sy.tensors, sy.extra)
	if err != nil {
		b.Fatal(err)
	}
	mod := m.Modules[0]
	data := map[Role][]byte{}
	for role, info := range mod.Tensors {
		data[role] = sy.data[info.Name]
	}
	n := sy.out * sy.in * dtype.BitSize() / 8
	b.Run("alloc", func(b *testing.B) {
		b.SetBytes(int64(n))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Dequantize(mod, data, dtype); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("into", func(b *testing.B) {
		dst := make([]byte, n)
		b.SetBytes(int64(n))
		b.ReportAllocs()
		for b.Loop() {
			if err := DequantizeInto(dst, mod, data, dtype); err != nil {
				b.Fatal(err)
			}
		}
	})
}

const benchN = 4096

func BenchmarkDequantFP8BlockBF16Scales(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	benchSynth(b, nativeFP8(rng, benchN, benchN, [2]int{128, 128}, safetensors.BF16, safetensors.F8E4M3), safetensors.BF16)
}

func BenchmarkDequantFP8BlockF32Scales(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	benchSynth(b, nativeFP8(rng, benchN, benchN, [2]int{128, 128}, safetensors.F32, safetensors.F8E4M3), safetensors.BF16)
}

func BenchmarkDequantW4A16G128(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	benchSynth(b, ctPacked(rng, 4, StrategyGroup, benchN, benchN, 128, safetensors.BF16, false, false, Dense), safetensors.BF16)
}

func BenchmarkDequantW4A16G128Asym(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	benchSynth(b, ctPacked(rng, 4, StrategyGroup, benchN, benchN, 128, safetensors.BF16, true, false, Dense), safetensors.BF16)
}

func BenchmarkDequantAWQG128(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	benchSynth(b, awqSynth(rng, benchN, benchN, 128, safetensors.F16, true), safetensors.BF16)
}

func BenchmarkDequantInt8Channel(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	benchSynth(b, ctBytes(rng, "int-quantized", TypeInt, 8, StrategyChannel, benchN, benchN, 0, [2]int{}, safetensors.BF16, false, false), safetensors.BF16)
}
