package quant

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
)

// Quantization throughput on one 4096×4096 BF16 weight (a Qwen3-8B-sized
// projection). b.SetBytes counts the BF16 input (32 MiB), so MB/s is input
// bytes per second; "procs" reports the GOMAXPROCS the run had and
// "MB/s/core" the throughput per goroutine the kernel could use. Set
// GOMAXPROCS=1 in the environment for a single-core run (-cpu 1 alone does
// not reliably reach sub-benchmarks). "alloc" includes allocating (and
// faulting in) the outputs; "into" reuses QuantizeBuffers, as a streaming
// caller would.
func BenchmarkQuantize(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	data := make([]byte, 2*benchN*benchN)
	for i := 0; i < len(data); i += 2 {
		u := numeric.F32ToBF16(float32(rng.NormFloat64() * 0.02))
		data[i], data[i+1] = byte(u), byte(u>>8)
	}
	w := safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{benchN, benchN}}
	for _, qs := range []QuantizeScheme{
		{Name: QuantFP8Block}, {Name: QuantInt8}, {Name: QuantW4A16}, {Name: QuantW4A16, Asymmetric: true},
	} {
		name := qs.Name
		if qs.Asymmetric {
			name += "-asym"
		}
		b.Run(name+"/alloc", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := QuantizeWeight(qs, w, data); err != nil {
					b.Fatal(err)
				}
			}
			reportPerCore(b, len(data))
		})
		b.Run(name+"/into", func(b *testing.B) {
			var buf QuantizeBuffers
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := QuantizeWeightInto(&buf, qs, w, data); err != nil {
					b.Fatal(err)
				}
			}
			reportPerCore(b, len(data))
		})
	}
}

func reportPerCore(b *testing.B, bytes int) {
	procs := runtime.GOMAXPROCS(0)
	b.ReportMetric(float64(procs), "procs")
	if sec := b.Elapsed().Seconds(); sec > 0 {
		b.ReportMetric(float64(bytes)*float64(b.N)/sec/1e6/float64(procs), "MB/s/core")
	}
}
