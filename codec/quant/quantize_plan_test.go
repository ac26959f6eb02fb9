package quant

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
)

// qwen3Model lists a dense Qwen3 model's tensors: layers of the given
// projection shapes plus embeddings, norms and lm_head of width h.
func qwen3Model(layers int, projections map[string][2]int, h, vocab, headDim uint64) []safetensors.TensorInfo {
	ts := []safetensors.TensorInfo{
		ti("model.embed_tokens.weight", safetensors.BF16, vocab, h),
		ti("model.norm.weight", safetensors.BF16, h),
		ti("lm_head.weight", safetensors.BF16, vocab, h),
	}
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		ts = append(ts,
			ti(p+"input_layernorm.weight", safetensors.BF16, h),
			ti(p+"post_attention_layernorm.weight", safetensors.BF16, h),
			ti(p+"self_attn.q_norm.weight", safetensors.BF16, headDim),
			ti(p+"self_attn.k_norm.weight", safetensors.BF16, headDim),
		)
		for mod, dims := range projections {
			ts = append(ts, ti(p+mod+".weight", safetensors.BF16, uint64(dims[0]), uint64(dims[1])))
		}
	}
	return ts
}

func tinyProjectionMap() map[string][2]int {
	m := map[string][2]int{}
	for _, p := range tinyProjections {
		m[p.name] = [2]int{int(p.out), int(p.in)}
	}
	return m
}

// §14.9 / §4: the quantized shapes of Qwen3-32B, from the plan, for every
// scheme; every shape passes vLLM's checks, and Detect reads the result.
func TestSection149QuantizeShapes(t *testing.T) {
	fp8Grid := map[string][2]uint64{
		"self_attn.q_proj": {64, 40}, "self_attn.k_proj": {8, 40}, "self_attn.v_proj": {8, 40}, "self_attn.o_proj": {40, 64},
		"mlp.gate_proj": {200, 40}, "mlp.up_proj": {200, 40}, "mlp.down_proj": {40, 200},
	}
	// weight_packed, weight_scale, packed weight_zero_point.
	w4 := map[string][3][2]uint64{
		"self_attn.q_proj": {{8192, 640}, {8192, 40}, {1024, 40}},
		"self_attn.k_proj": {{1024, 640}, {1024, 40}, {128, 40}},
		"self_attn.v_proj": {{1024, 640}, {1024, 40}, {128, 40}},
		"self_attn.o_proj": {{5120, 1024}, {5120, 64}, {640, 64}},
		"mlp.gate_proj":    {{25600, 640}, {25600, 40}, {3200, 40}},
		"mlp.up_proj":      {{25600, 640}, {25600, 40}, {3200, 40}},
		"mlp.down_proj":    {{5120, 3200}, {5120, 200}, {640, 200}},
	}
	model := qwen3Model(2, qwen3_32B, 5120, 151936, 128)
	for _, qs := range []QuantizeScheme{
		mustScheme(t, QuantFP8Block, ""), mustScheme(t, QuantFP8Block, OutputFP8), mustScheme(t, QuantInt8, ""),
		mustScheme(t, QuantW4A16, ""), mustScheme(t, QuantW4A16, "", asym),
	} {
		plan, err := PlanQuantize(model, qs, nil)
		if err != nil {
			t.Fatalf("%s: %v", qs, err)
		}
		if len(plan.Modules) != 14 {
			t.Errorf("%s: %d modules", qs, len(plan.Modules))
		}
		for _, pt := range plan.Tensors {
			if pt.Op != PlanOpQuantize {
				continue
			}
			mod := pt.Module[len("model.layers.0."):]
			dims := qwen3_32B[mod]
			var want []uint64
			switch {
			case pt.Role == RoleShape:
				want = []uint64{2}
			case qs.Name == QuantFP8Block && pt.Role == RoleCodes:
				want = []uint64{uint64(dims[0]), uint64(dims[1])}
			case qs.Name == QuantFP8Block:
				g := fp8Grid[mod]
				want = g[:]
			case qs.Name == QuantInt8 && pt.Role == RoleCodes:
				want = []uint64{uint64(dims[0]), uint64(dims[1])}
			case qs.Name == QuantInt8:
				want = []uint64{uint64(dims[0]), 1}
			case pt.Role == RoleCodes:
				w := w4[mod][0]
				want = w[:]
			case pt.Role == RoleScale:
				w := w4[mod][1]
				want = w[:]
			case pt.Role == RoleZeroPoint:
				w := w4[mod][2]
				want = w[:]
			}
			if !slices.Equal(pt.Shape, want) {
				t.Errorf("%s: %s %v, want %v", qs, pt.Name, pt.Shape, want)
			}
		}
		cfg, err := QuantizedConfig([]byte(`{"torch_dtype": "bfloat16"}`), qs, plan.Ignore)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Detect(cfg, plan.TensorInfos(), nil)
		if err != nil {
			t.Fatalf("%s: Detect: %v", qs, err)
		}
		if len(m.Modules) != 14 || m.LinearWeights != 15 {
			t.Errorf("%s: %s", qs, m.Describe())
		}
	}
}

func plannedNames(p *QuantizePlan) []string {
	var out []string
	for _, t := range p.Tensors {
		out = append(out, t.Name)
	}
	return out
}

// Which tensors a quantize touches, and how each output is produced.
func TestPlanQuantizeSelection(t *testing.T) {
	model := qwen3Model(2, tinyProjectionMap(), 64, 320, 32)
	model = append(model,
		ti("model.layers.0.self_attn.q_proj.bias", safetensors.BF16, 128),
		ti("model.layers.1.mlp.gate.weight", safetensors.BF16, 8, 64), // a MoE router: Linear
		ti("model.rotary_emb.inv_freq", safetensors.F32, 16),
		ti("model.layers.10.mlp.down_proj.weight", safetensors.BF16, 64, 160),
		ti("visual.patch_embed.proj.weight", safetensors.BF16, 64, 3, 2, 14, 14), // an embedding by name: copied
		ti("model.layers.1.mlp.experts.weight", safetensors.BF16, 4, 160, 64),
		ti("model.scalar.weight", safetensors.F32),
	)
	qs := mustScheme(t, QuantFP8Block, "", func(qs *QuantizeScheme) { qs.SkipVLLMChecks = true })
	if _, err := PlanQuantize(model, qs, nil); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "model.layers.1.mlp.experts.weight") {
		t.Fatalf("3-D weight: %v", err)
	}
	ignore := []string{`re:.*\.experts$`, "model.layers.1.mlp.down_proj", `re:.*mlp\.gate$`}
	plan, err := PlanQuantize(model, qs, ignore)
	if err != nil {
		t.Fatal(err)
	}
	names := plannedNames(plan)
	if !slices.IsSorted(names) {
		t.Errorf("tensors not in name order: %v", names)
	}
	var quantized []string
	for _, m := range plan.Modules {
		quantized = append(quantized, m.Prefix)
		if m.ScaleDType != safetensors.BF16 || m.Weight.Name != m.Prefix+".weight" {
			t.Errorf("module %+v", m)
		}
	}
	want := []string{
		"model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj",
		"model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.o_proj", "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
		"model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj",
		"model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj",
		"model.layers.10.mlp.down_proj", // natural order: 10 after 1
	}
	if !slices.Equal(quantized, want) {
		t.Errorf("quantized modules\n%v\nwant\n%v", quantized, want)
	}
	byName := map[string]PlannedTensor{}
	for _, pt := range plan.Tensors {
		byName[pt.Name] = pt
	}
	for _, name := range []string{
		"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.0.self_attn.q_norm.weight",
		"model.layers.0.self_attn.q_proj.bias", "model.layers.1.mlp.gate.weight", "model.rotary_emb.inv_freq",
		"visual.patch_embed.proj.weight", "model.layers.1.mlp.experts.weight", "model.scalar.weight", "model.layers.1.mlp.down_proj.weight",
	} {
		pt, ok := byName[name]
		if !ok || pt.Op != PlanOpCopy || pt.Source != name {
			t.Errorf("%s: %+v, want a copy of itself", name, pt)
		}
	}
	codes := byName["model.layers.0.self_attn.q_proj.weight"]
	scale := byName["model.layers.0.self_attn.q_proj.weight_scale"]
	if codes.Op != PlanOpQuantize || codes.Role != RoleCodes || codes.DType != safetensors.F8E4M3 || codes.Source != "model.layers.0.self_attn.q_proj.weight" ||
		scale.Role != RoleScale || scale.Module != "model.layers.0.self_attn.q_proj" || !slices.Equal(scale.Shape, []uint64{1, 1}) {
		t.Errorf("q_proj outputs %+v %+v", codes, scale)
	}
	// Embeddings are ignored too: compressed-tensors' model-free tools would
	// otherwise look for their scales.
	if want := append([]string{"lm_head", "model.embed_tokens", "visual.patch_embed.proj"}, ignore...); !slices.Equal(plan.Ignore, want) {
		t.Errorf("Ignore %v, want %v", plan.Ignore, want)
	}
	if got := len(plan.Tensors); got != len(model)+len(plan.Modules) {
		t.Errorf("%d outputs for %d inputs and %d modules", got, len(model), len(plan.Modules))
	}
	// The ignore list Detect reads back covers exactly the unquantized
	// Linear modules it sees.
	cfg, err := QuantizedConfig([]byte(`{}`), qs, plan.Ignore)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := Detect(cfg, plan.TensorInfos(), nil); err != nil || len(m.Modules) != len(plan.Modules) {
		t.Fatalf("Detect: %v", err)
	}
}

func TestPlanQuantizeRejects(t *testing.T) {
	tiny := qwen3Model(1, tinyProjectionMap(), 64, 320, 32)
	skip := func(qs *QuantizeScheme) { qs.SkipVLLMChecks = true }
	with := func(extra ...safetensors.TensorInfo) []safetensors.TensorInfo {
		return append(slices.Clone(tiny), extra...)
	}
	replace := func(name string, t2 safetensors.TensorInfo) []safetensors.TensorInfo {
		out := slices.Clone(tiny)
		for i := range out {
			if out[i].Name == name {
				out[i] = t2
			}
		}
		return out
	}
	q := "model.layers.0.self_attn.q_proj"
	for _, tc := range []struct {
		name    string
		tensors []safetensors.TensorInfo
		qs      QuantizeScheme
		ignore  []string
		want    error
		tensor  string // the error must name it
	}{
		{"already quantized", with(ti(q+".weight_scale", safetensors.BF16, 1, 1)), mustScheme(t, QuantFP8Block, "", skip), nil, ErrUnsupported, q + ".weight_scale"},
		{"F8 weight", replace(q+".weight", ti(q+".weight", safetensors.F8E4M3, 128, 64)), mustScheme(t, QuantFP8Block, "", skip), nil, ErrUnsupported, q + ".weight"},
		{"ignored I8 weight", replace(q+".weight", ti(q+".weight", safetensors.I8, 128, 64)), mustScheme(t, QuantFP8Block, "", skip), []string{q}, ErrUnsupported, q + ".weight"},
		{"F64 weight", replace(q+".weight", ti(q+".weight", safetensors.F64, 128, 64)), mustScheme(t, QuantInt8, "", skip), nil, ErrUnsupported, q + ".weight"},
		{"3-D weight", replace(q+".weight", ti(q+".weight", safetensors.BF16, 2, 128, 64)), mustScheme(t, QuantInt8, "", skip), nil, ErrUnsupported, q + ".weight"},
		{"Marlin in % 128", tiny, mustScheme(t, QuantW4A16, "", group(32)), nil, ErrUnsupported, "model.layers.0.mlp.down_proj.weight"},
		{"group 128 does not divide in = 160", tiny, mustScheme(t, QuantW4A16, "", skip), nil, ErrInvalid, "model.layers.0.mlp.down_proj.weight"},
		{"group does not divide in", tiny, mustScheme(t, QuantW4A16, "", group(48), skip), nil, ErrInvalid, "model.layers.0.mlp.down_proj.weight"},
		{"Marlin group size", replace(q+".weight", ti(q+".weight", safetensors.BF16, 128, 128)), mustScheme(t, QuantW4A16, "", group(16)), []string{`re:.*(down|gate|up|k|v|o)_proj`}, ErrUnsupported, q + ".weight"},
		{"fused shards, one ignored", tiny, mustScheme(t, QuantInt8, ""), []string{`re:.*mlp\.gate`}, ErrUnsupported, "model.layers.0.mlp.gate_proj.weight"},
		{"nothing to quantize", tiny, mustScheme(t, QuantInt8, ""), []string{`re:model\.`}, ErrInvalid, ""},
		{"native fp8 regex ignore", tiny, mustScheme(t, QuantFP8Block, OutputFP8), []string{`re:.*down`}, ErrUnsupported, ""},
		{"duplicate tensor", with(ti(q+".weight", safetensors.BF16, 128, 64)), mustScheme(t, QuantInt8, ""), nil, ErrInvalid, q + ".weight"},
	} {
		_, err := PlanQuantize(tc.tensors, tc.qs, tc.ignore)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.tensor) {
			t.Errorf("%s: %v, want %v naming %q", tc.name, err, tc.want, tc.tensor)
		}
	}
	// FP8 block_n: q_proj (fused with k, v) must end on a block boundary,
	// o_proj need not.
	odd := map[string][2]int{"self_attn.q_proj": {200, 256}, "self_attn.k_proj": {128, 256}, "self_attn.v_proj": {128, 256}, "self_attn.o_proj": {200, 200}}
	_, err := PlanQuantize(qwen3Model(1, odd, 256, 512, 32), mustScheme(t, QuantFP8Block, ""), nil)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "q_proj.weight") {
		t.Errorf("q_proj out 200 with 128-blocks: %v", err)
	}
	odd["self_attn.q_proj"] = [2]int{256, 256}
	if _, err := PlanQuantize(qwen3Model(1, odd, 256, 512, 32), mustScheme(t, QuantFP8Block, ""), nil); err != nil {
		t.Errorf("partial blocks in o_proj only: %v", err)
	}
	// SkipVLLMChecks lets the tiny model through.
	if _, err := PlanQuantize(tiny, mustScheme(t, QuantW4A16, "", skip, group(32)), nil); err != nil {
		t.Errorf("SkipVLLMChecks: %v", err)
	}
}

// The whole path on the tiny Qwen3 of §14.11 for every scheme: plan,
// config, Detect recognises the scheme on every planned module, and each
// module's data quantized by QuantizeWeight dequantizes through the
// Detect-ed module to the reference.
func TestQuantizedModelDetect(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	model := qwen3Model(2, tinyProjectionMap(), 64, 320, 32)
	data := map[string][]float64{}
	for _, tensor := range model {
		if len(tensor.Shape) == 2 {
			data[tensor.Name] = randomWeights(rng, safetensors.BF16, int(tensor.Shape[0]), int(tensor.Shape[1]), 0.02)
		}
	}
	orig := []byte("{\n  \"architectures\": [\n    \"Qwen3ForCausalLM\"\n  ],\n  \"torch_dtype\": \"bfloat16\"\n}\n")
	skip := func(qs *QuantizeScheme) { qs.SkipVLLMChecks = true }
	for _, tc := range []struct {
		qs       QuantizeScheme
		describe string
	}{
		{mustScheme(t, QuantFP8Block, "", skip), "compressed-tensors FP8 block 128x128 (float-quantized), 14 of 15 Linear weights quantized"},
		{mustScheme(t, QuantFP8Block, OutputFP8, skip), "native FP8 block 128x128 (quant_method fp8, BF16 weight_scale_inv), 14 of 15 Linear weights quantized"},
		{mustScheme(t, QuantFP8Block, OutputFP8, skip, scaleDT(safetensors.F32)), "native FP8 block 128x128 (quant_method fp8, F32 weight_scale_inv), 14 of 15 Linear weights quantized"},
		{mustScheme(t, QuantInt8, "", skip), "compressed-tensors INT8 per-channel symmetric (int-quantized), 14 of 15 Linear weights quantized"},
		{mustScheme(t, QuantW4A16, "", skip, group(-1)), "compressed-tensors INT4 per-channel symmetric (pack-quantized), 14 of 15 Linear weights quantized"},
		{mustScheme(t, QuantW4A16, "", skip, group(32), scaleDT(safetensors.F32)), "compressed-tensors INT4 group 32 symmetric (pack-quantized), 14 of 15 Linear weights quantized"},
		{mustScheme(t, QuantW4A16, "", skip, asym, group(32)), "compressed-tensors INT4 group 32 asymmetric (pack-quantized), 14 of 15 Linear weights quantized"},
	} {
		qs := tc.qs
		plan, err := PlanQuantize(model, qs, nil)
		if err != nil {
			t.Fatalf("%s: %v", qs, err)
		}
		cfg, err := QuantizedConfig(orig, qs, plan.Ignore)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Detect(cfg, plan.TensorInfos(), nil)
		if err != nil {
			t.Fatalf("%s: Detect: %v\n%s", qs, err, cfg)
		}
		if got := m.Describe(); got != tc.describe {
			t.Errorf("Describe() = %q, want %q", got, tc.describe)
		}
		if len(m.Modules) != len(plan.Modules) || len(m.Warnings) != 0 {
			t.Fatalf("%s: %d modules for %d planned; warnings %v", qs, len(m.Modules), len(plan.Modules), m.Warnings)
		}
		var copies []string
		for _, pt := range plan.Tensors {
			if pt.Op == PlanOpCopy {
				copies = append(copies, pt.Name)
			}
		}
		dense := slices.Clone(m.Dense)
		slices.Sort(dense)
		if !slices.Equal(dense, copies) {
			t.Errorf("%s: Detect's dense tensors %v, the plan's copies %v", qs, dense, copies)
		}
		var buf QuantizeBuffers
		for i, mod := range m.Modules {
			pm := plan.Modules[i]
			if mod.Prefix != pm.Prefix || mod.Scheme != qs.Scheme() {
				t.Fatalf("%s: module %s %+v, planned %s %+v", qs, mod.Prefix, mod.Scheme, pm.Prefix, qs.Scheme())
			}
			out, in := int(pm.Weight.Shape[0]), int(pm.Weight.Shape[1])
			x := data[pm.Weight.Name]
			res, err := QuantizeWeightInto(&buf, qs, pm.Weight, weightBytes(t, safetensors.BF16, x))
			if err != nil {
				t.Fatal(err)
			}
			tensors := map[Role][]byte{}
			for _, r := range res {
				if info := mod.Tensors[r.Role]; info.Name != r.Name || info.DType != r.DType || !slices.Equal(info.Shape, r.Shape) {
					t.Fatalf("%s: output %s %s%v, planned %s %s%v", qs, r.Name, r.DType, r.Shape, info.Name, info.DType, info.Shape)
				}
				tensors[r.Role] = r.Data
			}
			y, err := DequantModule(mod, tensors)
			if err != nil {
				t.Fatal(err)
			}
			want := refQuantize(qs, safetensors.BF16, out, in, x).dequant(qs, out, in)
			if !slices.Equal(u16s(y), want) {
				t.Fatalf("%s %s: dequantized weight differs from the reference", qs, mod.Prefix)
			}
		}
	}
}
