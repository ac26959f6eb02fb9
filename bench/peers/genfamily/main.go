// Command genfamily writes the generated models of the peer benchmarks with
// internal/modelgen (deterministic: the same flags give byte-identical files).
//
//	go run ./bench/peers/genfamily -out DIR [-size-mib 256]          # a family
//	go run ./bench/peers/genfamily -out DIR -base-only [-shards 1]   # one base
//
// A family is four model directories under DIR, the family of `heft demo` at
// benchmark size:
//
//	base/      BF16 N(0, 0.02) weights of modelgen.Sized(size), 2 shards
//	reshard/   the same tensors in 3 shards
//	finetune/  a full fine-tune of base with frozen embeddings
//	copy/      a byte-identical copy of base
//
// With -base-only it writes only DIR/base, in -shards files (default 1).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/heft-dev/heft/internal/modelgen"
)

func main() {
	out := flag.String("out", "", "output directory (its model subdirectories must be absent or empty)")
	sizeMiB := flag.Int64("size-mib", 256, "size of the base's weights in MiB (BF16)")
	baseOnly := flag.Bool("base-only", false, "write only DIR/base")
	shards := flag.Int("shards", 0, "shards of the base (default 2 for a family, 1 with -base-only)")
	seed := flag.Uint64("seed", 1, "generator seed")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 || *sizeMiB <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *shards == 0 {
		*shards = 2
		if *baseOnly {
			*shards = 1
		}
	}
	cfg := modelgen.Sized(*sizeMiB << 20)
	base := filepath.Join(*out, "base")
	check(modelgen.WriteBase(base, cfg, modelgen.Options{Seed: *seed, Shards: *shards}))
	fmt.Fprintf(os.Stderr, "genfamily: %s: %d bytes BF16 (hidden %d, layers %d, vocab %d), %d shards\n",
		base, cfg.ParamBytes(), cfg.Hidden, cfg.Layers, cfg.Vocab, *shards)
	if *baseOnly {
		return
	}
	check(modelgen.Reshard(base, filepath.Join(*out, "reshard"), 3))
	check(modelgen.FineTune(base, filepath.Join(*out, "finetune"), modelgen.FineTuneOptions{Seed: *seed + 1, FreezeEmbeddings: true}))
	check(modelgen.CopyDir(base, filepath.Join(*out, "copy")))
	fmt.Fprintf(os.Stderr, "genfamily: wrote reshard (3 shards), finetune (frozen embeddings), copy under %s\n", *out)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "genfamily:", err)
		os.Exit(1)
	}
}
