// Command lorae2e writes a one-layer model with Qwen3-32B's shapes (hidden 5120,
// intermediate 25600, 64 heads, 8 KV heads) and a fine-tune of it (a rank-8 change
// plus noise on every tensor), for timing `heft lora extract` end to end from a
// store on the GPU machine (bench/gpu/lorae2e.sh).
//
//	go run ./bench/gpu/lorae2e -out DIR [-layers 1] [-fp8] [-scale 1]
//
// With -fp8 it writes the base and its FP8 block quantization instead, for
// bench/gpu/dequante2e.sh. -scale N divides the hidden and intermediate sizes
// and the head counts by N (a quick run of the scripts on a small machine).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
)

func main() {
	out := flag.String("out", "", "directory for base/ and tuned/")
	layers := flag.Int("layers", 1, "decoder layers")
	fp8 := flag.Bool("fp8", false, "also write fp8/, the base quantized to FP8 block 128x128 (compressed-tensors, BF16 scales), and skip the fine-tune")
	scale := flag.Int("scale", 1, "divide the hidden and intermediate sizes and the head counts by this")
	flag.Parse()
	if *out == "" || *scale < 1 || 8%*scale != 0 {
		fmt.Fprintln(os.Stderr, "lorae2e: -out is required; -scale must divide 8")
		os.Exit(2)
	}
	s := *scale
	cfg := modelgen.Config{Hidden: 5120 / s, Intermediate: 25600 / s, Layers: *layers, Heads: 64 / s, KVHeads: 8 / s, HeadDim: 128, Vocab: 2048}
	base, tuned := filepath.Join(*out, "base"), filepath.Join(*out, "tuned")
	if err := modelgen.WriteBase(base, cfg, modelgen.Options{Seed: 1, Shards: 1}); err != nil {
		fmt.Fprintln(os.Stderr, "lorae2e:", err)
		os.Exit(1)
	}
	if *fp8 {
		if err := modelgen.WriteFP8BlockWith(base, filepath.Join(*out, "fp8"), modelgen.FP8BlockOptions{ScaleDType: safetensors.BF16}); err != nil {
			fmt.Fprintln(os.Stderr, "lorae2e:", err)
			os.Exit(1)
		}
		fmt.Printf("wrote %s and its FP8 block quantization (%.2f GB BF16)\n", base, float64(cfg.ParamBytes())/1e9)
		return
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2}); err != nil {
		fmt.Fprintln(os.Stderr, "lorae2e:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s and %s (%.2f GB each)\n", base, tuned, float64(cfg.ParamBytes())/1e9)
}
