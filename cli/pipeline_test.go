package cli_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/cli"
	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/internal/pyenv"
	"github.com/heft-dev/heft/ops"
)

// pipelineConfig is a small Qwen3 whose every projection is a multiple of 128, so
// the FP8 block quantization passes vLLM's shape checks without exceptions.
var pipelineConfig = modelgen.Config{Hidden: 256, Intermediate: 768, Layers: 2, Heads: 4, KVHeads: 1, HeadDim: 128, Vocab: 1024}

// heftJSON runs one heft command in-process with --json and decodes its output.
func heftJSON(t *testing.T, storeDir string, out any, args ...string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	full := append([]string{"heft", "--store", storeDir, "--json"}, args...)
	if code := cli.Main(full, &stdout, &stderr); code != 0 {
		t.Fatalf("heft %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
	}
	if out != nil {
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			t.Fatalf("heft %s: %v\n%s", strings.Join(args, " "), err, stdout.String())
		}
	}
}

type statsJSON struct {
	LogicalBytes  int64 `json:"logical_bytes"`
	PhysicalBytes int64 `json:"physical_bytes"`
	RecipeTensors int   `json:"recipe_tensors"`
	Models        []struct {
		Ref          string `json:"ref"`
		LogicalBytes int64  `json:"logical_bytes"`
	} `json:"models"`
}

// TestSeedPipeline is the thesis pipeline on a small Qwen3 family, through the
// command line: import base and fine-tune, quantize the base to FP8 block,
// dequantize a bridge (recipes: < 1% added), extract rank-16 adapters by methods A
// and B, merge, and export the FP8 base and the adapter as vLLM would load them,
// twice, byte-identically.
func TestSeedPipeline(t *testing.T) {
	root := t.TempDir()
	storeDir := filepath.Join(root, "store")
	baseDir, tunedDir := filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := modelgen.WriteBase(baseDir, pipelineConfig, modelgen.Options{Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(baseDir, tunedDir, modelgen.FineTuneOptions{Seed: 3}); err != nil {
		t.Fatal(err)
	}
	heftJSON(t, storeDir, nil, "import", baseDir, "--name", "qwen/base")
	heftJSON(t, storeDir, nil, "import", tunedDir, "--name", "qwen/tuned")
	var q ops.QuantizeResult
	heftJSON(t, storeDir, &q, "quantize", "qwen/base", "--scheme", "fp8-block", "--name", "qwen/base-fp8")
	t.Logf("quantize: %s", q.Scheme)

	var before, after statsJSON
	heftJSON(t, storeDir, &before, "stats")
	var dq ops.DequantResult
	heftJSON(t, storeDir, &dq, "dequant", "qwen/base-fp8", "--name", "qwen/bridge")
	heftJSON(t, storeDir, &after, "stats")
	var bridgeBytes int64
	for _, m := range after.Models {
		if m.Ref == "qwen/bridge:main" {
			bridgeBytes = m.LogicalBytes
		}
	}
	added := after.PhysicalBytes - before.PhysicalBytes
	t.Logf("bridge: %d bytes, %d physical bytes added (%.3f%%)", bridgeBytes, added, 100*float64(added)/float64(bridgeBytes))
	if bridgeBytes == 0 || added*100 >= bridgeBytes {
		t.Errorf("the bridge added %d bytes for %d logical (want < 1%%)", added, bridgeBytes)
	}

	var la, lb ops.LoraExtractResult
	heftJSON(t, storeDir, &la, "lora", "extract", "--base", "qwen/base", "--tuned", "qwen/tuned", "--rank", "16", "--method", "a", "--name", "qwen/lora-a", "--base-model-name", "Qwen/Qwen3-small")
	heftJSON(t, storeDir, &lb, "lora", "extract", "--base", "qwen/base-fp8", "--tuned", "qwen/tuned", "--rank", "16", "--method", "b", "--name", "qwen/lora-b")
	t.Logf("rank-16 relative error: method A mean %.4f max %.4f; method B (FP8 base) mean %.4f max %.4f; %.2f%% of the delta energy left out (%d tensors)",
		la.MeanRelError, la.MaxRelError, lb.MeanRelError, lb.MaxRelError, 100*la.ExcludedEnergyShare, len(la.Excluded))
	var merged ops.LoraMergeResult
	heftJSON(t, storeDir, &merged, "lora", "merge", "--base", "qwen/base-fp8", "--adapter", "qwen/lora-a", "--name", "qwen/merged")
	if merged.Merged != 14 {
		t.Fatalf("merged %d modules", merged.Merged)
	}

	// Export the FP8 base and the adapter twice: byte-identical.
	exports := map[string]string{}
	for _, ref := range []string{"qwen/base-fp8", "qwen/lora-a", "qwen/bridge", "qwen/merged"} {
		var first map[string]string
		for i := range 2 {
			dest := filepath.Join(root, "export", strings.ReplaceAll(ref, "/", "_")+string(rune('0'+i)))
			heftJSON(t, storeDir, nil, "export", ref, dest)
			sums, err := modelgen.TreeSHA256(dest)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = sums
				exports[ref] = dest
			} else if !sameSums(first, sums) {
				t.Fatalf("%s exported twice differs", ref)
			}
		}
	}
	// The FP8 base is what vLLM loads: a compressed-tensors FP8 block config and
	// tensors Detect recognises with every Linear of the decoder quantized.
	fp8 := exports["qwen/base-fp8"]
	cfg, _ := os.ReadFile(filepath.Join(fp8, "config.json"))
	qm, err := quant.Detect(cfg, dirTensors(t, fp8), nil)
	if err != nil || qm.Method != "compressed-tensors" || len(qm.Modules) != 14 {
		t.Fatalf("FP8 base: %v %+v", err, qm)
	}
	if bytes.Contains(cfg, []byte("scale_dtype")) || bytes.Contains(cfg, []byte("zp_dtype")) {
		t.Fatal("FP8 config has scale_dtype/zp_dtype keys older vLLM refuses")
	}
	// The adapter passes vLLM's checks at --max-lora-rank 16.
	ad := exports["qwen/lora-a"]
	acfg, _ := os.ReadFile(filepath.Join(ad, "adapter_config.json"))
	if err := ops.CheckAdapter(acfg, dirTensors(t, ad), ops.AdapterRules{MaxLoraRank: 16}); err != nil {
		t.Fatalf("adapter refused by vLLM's rules: %v", err)
	}
	var lin struct {
		Edges []struct {
			Relation string `json:"relation"`
		} `json:"edges"`
	}
	heftJSON(t, storeDir, &lin, "lineage", "qwen/merged")
	rels := map[string]int{}
	for _, e := range lin.Edges {
		rels[e.Relation]++
	}
	if rels["quantized from"] != 1 || rels["merged from"] != 2 || rels["extracted from"] != 2 {
		t.Fatalf("lineage of the merged model: %v", rels)
	}
	var v struct {
		OK bool `json:"ok"`
	}
	heftJSON(t, storeDir, &v, "verify", "--read-data")
	if !v.OK {
		t.Fatal("verify --read-data found damage")
	}
	checkWithPython(t, root, exports, baseDir, tunedDir)
}

func sameSums(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// dirTensors lists the tensors of every safetensors file in dir.
func dirTensors(t *testing.T, dir string) []safetensors.TensorInfo {
	t.Helper()
	var out []safetensors.TensorInfo
	matches, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	for _, p := range matches {
		f, h, err := safetensors.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		out = append(out, h.Tensors...)
	}
	return out
}

// checkWithPython runs testdata/check_pipeline.py in a venv with safetensors,
// numpy and ml_dtypes over the exported files.
func checkWithPython(t *testing.T, root string, exports map[string]string, baseDir, tunedDir string) {
	t.Helper()
	if testing.Short() {
		t.Log("-short: skipping the Python checks")
		return
	}
	venv := pyenv.Venv(t, "numerics", "numpy", "safetensors", "ml_dtypes")
	spec := map[string]any{"exports": exports, "base": baseDir, "tuned": tunedDir}
	hashes := map[string]map[string]string{}
	for ref, dir := range exports {
		hashes[ref] = valueHashes(t, dir)
	}
	spec["value_hashes"] = hashes
	// The relative errors heft reports for the adapter, as numpy should find them.
	var la ops.LoraExtractResult
	heftJSON(t, filepath.Join(root, "store"), &la, "lora", "extract", "--base", "qwen/base", "--tuned", "qwen/tuned", "--rank", "16", "--name", "qwen/lora-a-again", "--base-model-name", "Qwen/Qwen3-small")
	rel := map[string]float64{}
	for _, m := range la.Modules {
		rel[m.Module] = m.RelError
	}
	spec["lora_rel_error"] = rel
	specPath := filepath.Join(root, "spec.json")
	data, _ := json.Marshal(spec)
	if err := os.WriteFile(specPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(pyenv.Python(venv), filepath.Join("testdata", "check_pipeline.py"), specPath).CombinedOutput()
	t.Logf("python checks: %s", out)
	if err != nil {
		t.Fatalf("python checks failed: %v", err)
	}
}

// valueHashes is, per tensor of dir, the SHA-256 of its values as little-endian
// float32 (NaN as 0x7FC00000) or, for integer dtypes, int64: what the Python side
// computes from what safetensors and ml_dtypes decode.
func valueHashes(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	for _, p := range matches {
		f, h, err := safetensors.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range h.Tensors {
			data := make([]byte, ti.Size())
			if _, err := f.ReadAt(data, h.DataStart()+int64(ti.Begin)); err != nil {
				t.Fatal(err)
			}
			out[ti.Name] = valueHash(t, ti.DType, data)
		}
		f.Close()
	}
	return out
}

func valueHash(t *testing.T, dt safetensors.DType, data []byte) string {
	t.Helper()
	sum := sha256.New()
	var buf [8]byte
	put32 := func(v float32) {
		bits := math.Float32bits(v)
		if v != v {
			bits = 0x7FC00000
		}
		binary.LittleEndian.PutUint32(buf[:4], bits)
		sum.Write(buf[:4])
	}
	put64 := func(v int64) {
		binary.LittleEndian.PutUint64(buf[:], uint64(v))
		sum.Write(buf[:])
	}
	switch dt {
	case safetensors.BF16:
		for i := 0; i < len(data); i += 2 {
			put32(numeric.BF16ToF32(binary.LittleEndian.Uint16(data[i:])))
		}
	case safetensors.F16:
		for i := 0; i < len(data); i += 2 {
			put32(numeric.F16ToF32(binary.LittleEndian.Uint16(data[i:])))
		}
	case safetensors.F32:
		for i := 0; i < len(data); i += 4 {
			put32(math.Float32frombits(binary.LittleEndian.Uint32(data[i:])))
		}
	case safetensors.F8E4M3:
		for _, b := range data {
			put32(numeric.E4M3FNToF32(b))
		}
	case safetensors.F8E5M2:
		for _, b := range data {
			put32(numeric.E5M2ToF32(b))
		}
	case safetensors.I8:
		for _, b := range data {
			put64(int64(int8(b)))
		}
	case safetensors.U8:
		for _, b := range data {
			put64(int64(b))
		}
	case safetensors.I32:
		for i := 0; i < len(data); i += 4 {
			put64(int64(int32(binary.LittleEndian.Uint32(data[i:]))))
		}
	case safetensors.I64:
		for i := 0; i < len(data); i += 8 {
			put64(int64(binary.LittleEndian.Uint64(data[i:])))
		}
	default:
		t.Fatalf("value hash of dtype %s", dt)
	}
	return hex.EncodeToString(sum.Sum(nil))
}
