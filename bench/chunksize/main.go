// Command chunksize measures how the tensor chunk size trades import and export speed,
// compression ratio and index size against dedup granularity, to choose the default.
//
//	go run ./bench/chunksize -size-mib 512
//
// For each chunk size it imports a generated BF16 model into a fresh store, exports
// it, then imports a variant whose last 2 % of embedding rows changed (new tokens
// trained), without delta coding, and reports what that variant added: the dedup
// granularity.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/heft-dev/heft/bench/internal/benchutil"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/store"
)

func main() {
	size := flag.Int64("size-mib", 512, "model size in MiB")
	sizes := flag.String("chunks", "262144,1048576,4194304,16777216", "chunk sizes to compare (bytes)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "heft-chunksize-")
	check(err)
	defer os.RemoveAll(dir)
	model := filepath.Join(dir, "model")
	check(modelgen.WriteBase(model, modelgen.Sized(*size<<20), modelgen.Options{Seed: 1, Shards: 1}))
	variant := filepath.Join(dir, "variant")
	check(modelgen.CopyDir(model, variant))
	changed := perturbEmbeddingTail(filepath.Join(variant, "model.safetensors"), 0.02)
	logical := benchutil.DirSize(model)

	fmt.Printf("model %d MiB BF16, variant changes %d bytes of embedding rows\n\n", logical>>20, changed)
	fmt.Printf("| chunk size | import MB/s | export MB/s | stored/logical | chunks | variant added |\n|---|---|---|---|---|---|\n")
	for _, cs := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(cs)
		check(err)
		sdir := filepath.Join(dir, "store-"+cs)
		s, err := store.Open(sdir, store.Options{ChunkSize: n})
		check(err)
		ref, _ := store.ParseRef("bench/model")
		start := time.Now()
		res, err := s.Import(context.Background(), model, store.ImportOptions{Ref: ref})
		check(err)
		imp := time.Since(start).Seconds()
		start = time.Now()
		_, err = s.Export(context.Background(), "bench/model", filepath.Join(dir, "export-"+cs), nil)
		check(err)
		exp := time.Since(start).Seconds()
		vref, _ := store.ParseRef("bench/variant")
		vres, err := s.Import(context.Background(), variant, store.ImportOptions{Ref: vref, NoDelta: true})
		check(err)
		fmt.Printf("| %s | %.0f | %.0f | %.3f | %d | %s |\n", human(int64(n)), float64(logical)/imp/1e6, float64(logical)/exp/1e6,
			float64(res.Stats.PackBytes)/float64(logical), res.Stats.Chunks, human(vres.Stats.PackBytes))
		s.Close()
		os.RemoveAll(sdir)
		os.RemoveAll(filepath.Join(dir, "export-"+cs))
	}
}

// perturbEmbeddingTail flips the low mantissa bit of every value in the last share of
// embed_tokens rows, in place, and returns how many bytes it touched.
func perturbEmbeddingTail(path string, share float64) int64 {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	check(err)
	defer f.Close()
	st, _ := f.Stat()
	h, err := safetensors.ReadHeader(f, st.Size(), path)
	check(err)
	t, ok := h.Lookup("model.embed_tokens.weight")
	if !ok {
		check(fmt.Errorf("no embedding"))
	}
	rowBytes := int64(t.Shape[1]) * 2
	rows := int64(float64(t.Shape[0]) * share)
	start := h.DataStart() + int64(t.End) - rows*rowBytes
	buf := make([]byte, rows*rowBytes)
	_, err = f.ReadAt(buf, start)
	check(err)
	for i := 0; i+2 <= len(buf); i += 2 {
		binary.LittleEndian.PutUint16(buf[i:], binary.LittleEndian.Uint16(buf[i:])^1)
	}
	_, err = f.WriteAt(buf, start)
	check(err)
	return int64(len(buf))
}

func human(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "chunksize:", err)
		os.Exit(1)
	}
}
