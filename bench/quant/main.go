// Command quant times heft's FP8 block quantization and dequantization of one
// large BF16 weight on the CPU and writes the inputs and outputs so that
// numpy_quant.py can time numpy doing the same on the same bytes and check that
// both agree bit for bit. run.sh runs the two back to back.
//
//	go run ./bench/quant -out DIR [-rows 8192 -cols 5120 -reps 5]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

func main() {
	out := flag.String("out", "bench/quant/out", "directory for the data files and results")
	rows := flag.Int("rows", 8192, "weight rows (out features)")
	cols := flag.Int("cols", 5120, "weight columns (in features)")
	reps := flag.Int("reps", 5, "timed repetitions (the best is reported)")
	flag.Parse()
	if err := run(*out, *rows, *cols, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "quant:", err)
		os.Exit(1)
	}
}

func run(out string, rows, cols, reps int) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// A BF16 weight drawn from N(0, 0.02), as modelgen draws them.
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]float32, rows*cols)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64() * 0.02)
	}
	weight := make([]byte, 2*len(vals))
	numeric.F32ToBF16Slice(weight, vals)
	info := safetensors.TensorInfo{Name: "bench.weight", DType: safetensors.BF16, Shape: []uint64{uint64(rows), uint64(cols)}, End: uint64(len(weight))}
	qs, err := quant.ParseQuantizeScheme(quant.QuantFP8Block, "")
	if err != nil {
		return err
	}
	var buf quant.QuantizeBuffers
	var outs []quant.QuantizedTensor
	best := func(f func() error) (time.Duration, error) {
		b := time.Duration(math.MaxInt64)
		for range reps {
			start := time.Now()
			if err := f(); err != nil {
				return 0, err
			}
			b = min(b, time.Since(start))
		}
		return b, nil
	}
	tq, err := best(func() error {
		var err error
		outs, err = quant.QuantizeWeightInto(&buf, qs, info, weight)
		return err
	})
	if err != nil {
		return err
	}
	mod := quant.Module{Prefix: "bench", Scheme: qs.Scheme(), Tensors: map[quant.Role]safetensors.TensorInfo{}, Out: rows, In: cols}
	data := map[quant.Role][]byte{}
	for _, t := range outs {
		mod.Tensors[t.Role] = safetensors.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, End: uint64(len(t.Data))}
		data[t.Role] = t.Data
	}
	bridge := make([]byte, len(weight))
	td, err := best(func() error { return quant.DequantizeInto(bridge, mod, data, safetensors.BF16) })
	if err != nil {
		return err
	}
	files := map[string][]byte{"weight.bf16": weight, "codes.f8": data[quant.RoleCodes], "scale.bf16": data[quant.RoleScale], "bridge.bf16": bridge}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return err
		}
	}
	gb := float64(len(weight)) / 1e9
	res := map[string]any{
		"rows": rows, "cols": cols, "bf16_bytes": len(weight), "gomaxprocs": runtime.GOMAXPROCS(0),
		"quantize_s": tq.Seconds(), "quantize_gbps": gb / tq.Seconds(),
		"dequant_s": td.Seconds(), "dequant_gbps": gb / td.Seconds(),
	}
	enc, _ := json.MarshalIndent(res, "", "  ")
	fmt.Printf("heft (Go, %d cores): FP8 block quantize %.3f s = %.2f GB/s of BF16; dequant to BF16 %.3f s = %.2f GB/s\n",
		runtime.GOMAXPROCS(0), tq.Seconds(), gb/tq.Seconds(), td.Seconds(), gb/td.Seconds())
	return os.WriteFile(filepath.Join(out, "heft.json"), append(enc, '\n'), 0o644)
}
