package ops_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
)

// importFP8Block writes the tiny model in BF16 and as compressed-tensors
// FP8 block (BF16 scales) and imports the latter as org/fp8; it returns
// both directories.
func importFP8Block(t *testing.T, s *store.Store) (bf16, fp8 string) {
	t.Helper()
	root := t.TempDir()
	bf16, fp8 = filepath.Join(root, "bf16"), filepath.Join(root, "fp8")
	if err := modelgen.WriteBase(bf16, modelgen.Tiny(), modelgen.Options{Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.WriteFP8BlockWith(bf16, fp8, modelgen.FP8BlockOptions{ScaleDType: safetensors.BF16}); err != nil {
		t.Fatal(err)
	}
	importDir(t, s, fp8, "org/fp8")
	return bf16, fp8
}

// TestDequantFP8Block dequantizes a compressed-tensors FP8 block model and checks
// the bridge against an independent dequantization of the exported files, its
// config, and its cost (recipes).
func TestDequantFP8Block(t *testing.T) {
	s, m := testStore(t)
	bf16, fp8 := importFP8Block(t, s)
	before, _ := s.Stats(nil)
	res, err := ops.Dequant(ctx, m, ops.DequantOptions{Source: "org/fp8", Name: "org/bridge"})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := s.Stats(nil)
	if res.Modules == 0 || res.Kept == 0 {
		t.Fatalf("dequant result %+v", res)
	}
	dir := export(t, s, "org/bridge")
	got := readTensors(t, dir)
	src := readTensors(t, fp8)
	var cfg map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join(fp8, "config.json")), &cfg); err != nil {
		t.Fatal(err)
	}
	var infos []safetensors.TensorInfo
	for _, tt := range src {
		infos = append(infos, safetensors.TensorInfo{Name: tt.Name, DType: tt.DType, Shape: tt.Shape, End: uint64(len(tt.Data))})
	}
	qm, err := quant.Detect(readFile(t, filepath.Join(fp8, "config.json")), infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range qm.Modules {
		data := map[quant.Role][]byte{}
		for r, ti := range mod.Tensors {
			data[r] = src[ti.Name].Data
		}
		want, err := quant.Dequantize(mod, data, safetensors.BF16)
		if err != nil {
			t.Fatal(err)
		}
		g, ok := got[mod.WeightName()]
		if !ok || g.DType != safetensors.BF16 || !bytes.Equal(g.Data, want) {
			t.Fatalf("%s: bridge tensor differs from the dequantized module", mod.WeightName())
		}
	}
	for _, name := range qm.Dense {
		if !bytes.Equal(got[name].Data, src[name].Data) {
			t.Fatalf("%s: dense tensor changed", name)
		}
	}
	if len(got) != len(qm.Modules)+len(qm.Dense) {
		t.Fatalf("bridge has %d tensors, want %d", len(got), len(qm.Modules)+len(qm.Dense))
	}
	// The bridge's config is the BF16 model's: no quantization_config.
	if bytes.Contains(readFile(t, filepath.Join(dir, "config.json")), []byte("quantization_config")) {
		t.Fatal("bridge config.json still has quantization_config")
	}
	// The shard index names every tensor once, in the shard that holds it.
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "model.safetensors.index.json")), &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.WeightMap) != len(got) {
		t.Fatalf("index lists %d tensors, bridge has %d", len(idx.WeightMap), len(got))
	}
	// Stored as recipes, the bridge costs well under 1% of its size.
	var logical int64
	for _, ms := range after.Models {
		if ms.Ref == "org/bridge:main" {
			logical = ms.LogicalBytes
		}
	}
	added := after.PhysicalBytes - before.PhysicalBytes
	t.Logf("bridge: %d bytes logical, %d bytes added", logical, added)
	if after.RecipeTensors != res.Modules {
		t.Fatalf("%d recipe tensors, want %d", after.RecipeTensors, res.Modules)
	}
	// Not quantized: a clear input error.
	importDir(t, s, bf16, "org/bf16")
	if _, err := ops.Dequant(ctx, m, ops.DequantOptions{Source: "org/bf16", Name: "org/x"}); !errors.Is(err, ops.ErrInput) {
		t.Fatalf("dequant of a BF16 model: %v", err)
	}
	if _, err := s.Ref(mustRef(t, "org/x")); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a failed dequant created its ref")
	}
}

func mustRef(t *testing.T, s string) store.RefName {
	t.Helper()
	r, err := store.ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
