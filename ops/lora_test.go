package ops_test

import (
	"bytes"
	"encoding/json"
	stdpng "image/png"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/ops/internal/linalg"
	"github.com/heft-dev/heft/store"
)

// loraFamily imports a tiny base, a fine-tune of it (a rank-8 structured change
// plus noise) and the base's FP8 block quantization.
func loraFamily(t *testing.T) (s *store.Store, m ops.Models, baseDir, tunedDir string) {
	t.Helper()
	s, m = testStore(t)
	root := t.TempDir()
	baseDir, tunedDir = filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := modelgen.WriteBase(baseDir, modelgen.Tiny(), modelgen.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(baseDir, tunedDir, modelgen.FineTuneOptions{Seed: 7}); err != nil {
		t.Fatal(err)
	}
	importDir(t, s, baseDir, "org/base")
	importDir(t, s, tunedDir, "org/tuned")
	if _, err := ops.Quantize(ctx, m, ops.QuantizeOptions{Source: "org/base", Name: "org/base-fp8", Scheme: "fp8-block", SkipVLLMChecks: true}); err != nil {
		t.Fatal(err)
	}
	return s, m, baseDir, tunedDir
}

func f32s(t *testing.T, tt safetensors.Tensor) []float32 {
	t.Helper()
	out := make([]float32, len(tt.Data)/2)
	switch tt.DType {
	case safetensors.BF16:
		numeric.BF16ToF32Slice(out, tt.Data)
	case safetensors.F32:
		out = make([]float32, len(tt.Data)/4)
		for i := range out {
			out[i] = math.Float32frombits(uint32(tt.Data[4*i]) | uint32(tt.Data[4*i+1])<<8 | uint32(tt.Data[4*i+2])<<16 | uint32(tt.Data[4*i+3])<<24)
		}
	default:
		t.Fatalf("%s: dtype %s", tt.Name, tt.DType)
	}
	return out
}

// TestLoraExtractQuality checks Method A's factors against the exact rank-r
// optimum of every module (the acceptance bound is 1.01×), and reports Method B's
// error on the FP8 base beside it.
func TestLoraExtractQuality(t *testing.T) {
	_, m, baseDir, tunedDir := loraFamily(t)
	const rank = 16
	resA, err := ops.LoraExtract(ctx, m, ops.LoraExtractOptions{Base: "org/base", Tuned: "org/tuned", Name: "org/lora-a", Rank: rank, DType: "F32"})
	if err != nil {
		t.Fatal(err)
	}
	base, tuned := readTensors(t, baseDir), readTensors(t, tunedDir)
	if len(resA.Modules) != 14 { // 2 layers × 7 projections
		t.Fatalf("%d modules extracted", len(resA.Modules))
	}
	worst := 0.0
	for _, mod := range resA.Modules {
		name := mod.Module + ".weight"
		b, tu := f32s(t, base[name]), f32s(t, tuned[name])
		for i := range tu {
			tu[i] -= b[i]
		}
		delta, _ := linalg.MatrixOf(mod.Out, mod.In, tu)
		sv, err := linalg.SingularValues(delta, min(mod.Out, mod.In), linalg.SVDOptions{Oversample: min(mod.Out, mod.In)})
		if err != nil {
			t.Fatal(err)
		}
		var tail, total float64
		for i, s := range sv {
			total += s * s
			if i >= rank {
				tail += s * s
			}
		}
		optimum := math.Sqrt(tail / total)
		ratio := mod.RelError / optimum
		worst = max(worst, ratio)
		if ratio > 1.01 {
			t.Errorf("%s: relative error %.5f is %.4f× the rank-%d optimum %.5f", mod.Module, mod.RelError, ratio, rank, optimum)
		}
	}
	t.Logf("method A: mean rel error %.4f, max %.4f, worst ratio to the exact optimum %.5f; excluded %.4f%% of the delta energy (%d tensors)",
		resA.MeanRelError, resA.MaxRelError, worst, 100*resA.ExcludedEnergyShare, len(resA.Excluded))
	for _, ex := range resA.Excluded {
		if !strings.Contains(ex.Tensor, "norm") && !strings.Contains(ex.Tensor, "embed") && !strings.Contains(ex.Tensor, "lm_head") {
			t.Errorf("excluded %s (%s)", ex.Tensor, ex.Reason)
		}
	}
	resB, err := ops.LoraExtract(ctx, m, ops.LoraExtractOptions{Base: "org/base-fp8", Tuned: "org/tuned", Name: "org/lora-b", Rank: rank, Method: "b", DType: "F32"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("method B (FP8 base): mean rel error %.4f, max %.4f", resB.MeanRelError, resB.MaxRelError)
	// Method B also absorbs the quantization noise, so its delta is larger.
	if resB.MeanRelError <= resA.MeanRelError {
		t.Errorf("method B error %.4f not above method A's %.4f", resB.MeanRelError, resA.MeanRelError)
	}
	// The wrong base for a method is refused.
	if _, err := ops.LoraExtract(ctx, m, ops.LoraExtractOptions{Base: "org/base-fp8", Tuned: "org/tuned", Name: "x/y", Rank: rank}); err == nil {
		t.Error("method a on a quantized base succeeded")
	}
	if _, err := ops.LoraExtract(ctx, m, ops.LoraExtractOptions{Base: "org/base", Tuned: "org/tuned", Name: "x/y", Rank: rank, Method: "b"}); err == nil {
		t.Error("method b on a dense base succeeded")
	}
}

// TestLoraAdapterAndMerge checks the adapter directory against PEFT's and vLLM's
// rules and the merge against W + B·A computed here.
func TestLoraAdapterAndMerge(t *testing.T) {
	s, m, baseDir, _ := loraFamily(t)
	if _, err := ops.LoraExtract(ctx, m, ops.LoraExtractOptions{Base: "org/base", Tuned: "org/tuned", Name: "org/adapter", Rank: 8, BaseName: "Qwen/Qwen3-tiny"}); err != nil {
		t.Fatal(err)
	}
	dir := export(t, s, "org/adapter")
	var cfg map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "adapter_config.json")), &cfg); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"r": 8.0, "lora_alpha": 8.0, "peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none", "use_dora": false, "modules_to_save": nil, "base_model_name_or_path": "Qwen/Qwen3-tiny"} {
		if cfg[k] != want {
			t.Errorf("adapter_config %s = %v, want %v", k, cfg[k], want)
		}
	}
	ad := readTensors(t, dir)
	if len(ad) != 28 {
		t.Fatalf("adapter has %d tensors", len(ad))
	}
	if err := ops.CheckAdapter(readFile(t, filepath.Join(dir, "adapter_config.json")), infosOf(ad), ops.AdapterRules{MaxLoraRank: 16}); err != nil {
		t.Fatalf("vLLM rules: %v", err)
	}
	for name, tt := range ad {
		if !strings.HasPrefix(name, "base_model.model.model.layers.") || strings.Contains(name, ".default.") || tt.DType != safetensors.BF16 {
			t.Errorf("adapter tensor %s %s", name, tt.DType)
		}
	}
	// Merge and compare with W + B·A in float64, rounded to BF16.
	res, err := ops.LoraMerge(ctx, m, ops.LoraMergeOptions{Base: "org/base", Adapter: "org/adapter", Name: "org/merged"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Merged != 14 {
		t.Fatalf("merged %d modules", res.Merged)
	}
	merged := readTensors(t, export(t, s, "org/merged"))
	base := readTensors(t, baseDir)
	name := "model.layers.1.self_attn.o_proj"
	w, a, b := f32s(t, base[name+".weight"]), f32s(t, ad["base_model.model."+name+".lora_A.weight"]), f32s(t, ad["base_model.model."+name+".lora_B.weight"])
	got := f32s(t, merged[name+".weight"])
	out, r := int(base[name+".weight"].Shape[0]), 8
	in := len(w) / out
	mismatches := 0
	for i := 0; i < out; i++ {
		for j := 0; j < in; j++ {
			var d float64
			for k := 0; k < r; k++ {
				d += float64(b[i*r+k]) * float64(a[k*in+j])
			}
			want := numeric.BF16ToF32(numeric.F32ToBF16(float32(float64(w[i*in+j]) + d)))
			if got[i*in+j] != want {
				mismatches++
				// float32 accumulation may land one BF16 ulp away at a tie.
				if diff := math.Abs(float64(got[i*in+j] - want)); diff > math.Abs(float64(want))/64+1e-6 {
					t.Fatalf("merged[%d,%d] = %g, want %g", i, j, got[i*in+j], want)
				}
			}
		}
	}
	if mismatches*100 > out*in {
		t.Fatalf("%d of %d merged values differ from the float64 reference by a BF16 ulp", mismatches, out*in)
	}
	// Unchanged tensors are the base's.
	if string(merged["model.norm.weight"].Data) != string(base["model.norm.weight"].Data) {
		t.Fatal("merge changed a tensor the adapter does not touch")
	}
	// Merging onto the FP8 base dequantizes it first.
	resQ, err := ops.LoraMerge(ctx, m, ops.LoraMergeOptions{Base: "org/base-fp8", Adapter: "org/adapter", Name: "org/merged-fp8"})
	if err != nil {
		t.Fatal(err)
	}
	if resQ.Merged != 14 || resQ.Dequantized != 14 {
		t.Fatalf("merge onto FP8: %+v", resQ)
	}
}

// TestAnalyze checks the weight-space report: the rank-8 structure of the
// fine-tune shows in the energy, quantization noise is near-orthogonal to the
// delta, and the PNG decodes.
func TestAnalyze(t *testing.T) {
	_, m, _, _ := loraFamily(t)
	var png bytes.Buffer
	res, err := ops.Analyze(ctx, m, ops.AnalyzeOptions{Base: "org/base", Tuned: "org/tuned", Ranks: []int{4, 8, 32}, PNG: &png})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Modules) != 14 {
		t.Fatalf("%d modules", len(res.Modules))
	}
	for _, am := range res.Modules {
		if !(am.Energy[0] < am.Energy[1] && am.Energy[1] <= am.Energy[2]) || am.Energy[2] > 1 {
			t.Errorf("%s: energy %v not increasing", am.Module, am.Energy)
		}
		if math.Abs(am.CosNoiseLoRA) > 0.2 || am.NoiseNorm <= 0 {
			t.Errorf("%s: cos(noise, lora) %.4f, noise %.4f", am.Module, am.CosNoiseLoRA, am.NoiseNorm)
		}
	}
	t.Logf("mean energy at ranks %v: %.3f; mean cos(noise, LoRA) %.5f, max |cos| %.5f", res.Ranks, res.MeanEnergy, res.MeanCosNoiseLoRA, res.MaxAbsCosNoise)
	if _, err := stdpng.Decode(&png); err != nil {
		t.Fatalf("PNG: %v", err)
	}
	// The same noise from a stored quantization.
	res2, err := ops.Analyze(ctx, m, ops.AnalyzeOptions{Base: "org/base", Tuned: "org/tuned", Quantized: "org/base-fp8", Ranks: []int{8}})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(res2.Modules[0].NoiseNorm-res.Modules[0].NoiseNorm) > 1e-12 {
		t.Errorf("noise from the stored FP8 model %.6f vs on the fly %.6f", res2.Modules[0].NoiseNorm, res.Modules[0].NoiseNorm)
	}
}
