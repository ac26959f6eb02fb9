package quant

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
)

// tinyProjections are the Linear layers of the tiny Qwen3 of §14.11 with
// their [out, in].
var tinyProjections = []struct {
	name    string
	out, in uint64
}{
	{"self_attn.q_proj", 128, 64}, {"self_attn.k_proj", 64, 64}, {"self_attn.v_proj", 64, 64}, {"self_attn.o_proj", 64, 128},
	{"mlp.gate_proj", 160, 64}, {"mlp.up_proj", 160, 64}, {"mlp.down_proj", 64, 160},
}

// tinyQwen3 lists the tensors of the tiny Qwen3 (§14.11), with each
// projection's weight replaced by whatever quant returns (nil: keep it
// dense BF16).
func tinyQwen3(quant func(prefix string, out, in uint64) []safetensors.TensorInfo) []safetensors.TensorInfo {
	ts := []safetensors.TensorInfo{
		ti("model.embed_tokens.weight", safetensors.BF16, 320, 64),
		ti("model.norm.weight", safetensors.BF16, 64),
		ti("lm_head.weight", safetensors.BF16, 320, 64),
	}
	for l := range 2 {
		p := fmt.Sprintf("model.layers.%d.", l)
		ts = append(ts,
			ti(p+"input_layernorm.weight", safetensors.BF16, 64),
			ti(p+"post_attention_layernorm.weight", safetensors.BF16, 64),
			ti(p+"self_attn.q_norm.weight", safetensors.BF16, 32),
			ti(p+"self_attn.k_norm.weight", safetensors.BF16, 32),
		)
		for _, proj := range tinyProjections {
			var q []safetensors.TensorInfo
			if quant != nil {
				q = quant(p+proj.name, proj.out, proj.in)
			}
			if q == nil {
				q = []safetensors.TensorInfo{ti(p+proj.name+".weight", safetensors.BF16, proj.out, proj.in)}
			}
			ts = append(ts, q...)
		}
	}
	return ts
}

func fp8BlockTensors(scaleName string, scaleDType safetensors.DType) func(string, uint64, uint64) []safetensors.TensorInfo {
	return func(p string, out, in uint64) []safetensors.TensorInfo {
		return []safetensors.TensorInfo{ti(p+".weight", safetensors.F8E4M3, out, in), ti(p+scaleName, scaleDType, (out+127)/128, (in+127)/128)}
	}
}

func w4a16Tensors(asym bool) func(string, uint64, uint64) []safetensors.TensorInfo {
	return func(p string, out, in uint64) []safetensors.TensorInfo {
		ts := []safetensors.TensorInfo{
			ti(p+".weight_packed", safetensors.I32, out, in/8), ti(p+".weight_scale", safetensors.BF16, out, in/32), ti(p+".weight_shape", safetensors.I64, 2),
		}
		if asym {
			ts = append(ts, ti(p+".weight_zero_point", safetensors.I32, out/8, in/32))
		}
		return ts
	}
}

// The §5.1 FP8_BLOCK example, verbatim.
const ctFP8BlockConfig = `{"architectures": ["Qwen3ForCausalLM"], "quantization_config": {
  "config_groups": {"group_0": {
    "format": "float-quantized", "targets": ["Linear"], "output_activations": null,
    "weights": {"num_bits": 8, "type": "float", "symmetric": true, "strategy": "block",
                "block_structure": [128, 128], "group_size": null, "dynamic": false,
                "actorder": null, "observer": "minmax", "observer_kwargs": {}},
    "input_activations": {"num_bits": 8, "type": "float", "symmetric": true, "strategy": "group",
                "group_size": 128, "block_structure": null, "dynamic": true,
                "actorder": null, "observer": null, "observer_kwargs": {}}}},
  "format": "float-quantized", "ignore": ["lm_head"], "kv_cache_scheme": null,
  "quant_method": "compressed-tensors", "quantization_status": "compressed",
  "global_compression_ratio": null, "sparsity_config": {}, "transform_config": {},
  "version": "0.12.2"
}}`

func TestDetectCTFP8Block(t *testing.T) {
	m, err := Detect([]byte(ctFP8BlockConfig), tinyQwen3(fp8BlockTensors(".weight_scale", safetensors.BF16)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Describe(), "compressed-tensors FP8 block 128x128 (float-quantized), 14 of 15 Linear weights quantized"; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
	if m.Method != "compressed-tensors" || m.Format != "float-quantized" || !slices.Equal(m.Ignore, []string{"lm_head"}) {
		t.Errorf("model %+v", m)
	}
	want := Scheme{Format: FormatCTFloat, Type: TypeFloat, Bits: 8, CodeDType: safetensors.F8E4M3, Strategy: StrategyBlock, BlockSize: [2]int{128, 128}, Symmetric: true,
		Input: Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyGroup, GroupSize: 128, Dynamic: true, Symmetric: true}}
	mod := m.Modules[0]
	if mod.Scheme != want {
		t.Errorf("scheme %+v, want %+v", mod.Scheme, want)
	}
	if mod.Prefix != "model.layers.0.mlp.down_proj" || mod.Out != 64 || mod.In != 160 {
		t.Errorf("first module %s [%d, %d]", mod.Prefix, mod.Out, mod.In)
	}
	if got := mod.TensorNames(); !slices.Equal(got, []string{"model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.down_proj.weight_scale"}) {
		t.Errorf("tensor names %v", got)
	}
	if m.Modules[7].Prefix != "model.layers.1.mlp.down_proj" {
		t.Errorf("modules not in natural order: %s", m.Modules[7].Prefix)
	}
	if len(m.Dense) != 3+2*4 || !slices.Contains(m.Dense, "lm_head.weight") || len(m.Aux) != 0 || len(m.Warnings) != 0 {
		t.Errorf("dense %v aux %v warnings %v", m.Dense, m.Aux, m.Warnings)
	}
}

func TestDetectNativeFP8(t *testing.T) {
	cfg := `{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128]}}`
	for _, sd := range []safetensors.DType{safetensors.BF16, safetensors.F32} {
		m, err := Detect([]byte(cfg), tinyQwen3(fp8BlockTensors(".weight_scale_inv", sd)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := m.Describe(), fmt.Sprintf("native FP8 block 128x128 (quant_method fp8, %s weight_scale_inv), 14 of 15 Linear weights quantized", sd); got != want {
			t.Errorf("Describe() = %q, want %q", got, want)
		}
	}
	// A weight_scale (not _inv) in a block config is not claimed.
	if _, err := Detect([]byte(cfg), tinyQwen3(fp8BlockTensors(".weight_scale", safetensors.F32)), nil); err == nil || !strings.Contains(err.Error(), "no fp8 module of this model claims it") {
		t.Errorf("weight_scale in a block fp8 model: %v", err)
	}
}

func TestDetectMixedPrecision(t *testing.T) {
	cfg := `{"quantization_config": {"quant_method": "compressed-tensors", "format": "mixed-precision", "quantization_status": "compressed",
		"ignore": ["lm_head"], "config_groups": {
		"group_0": {"targets": ["re:.*mlp\\..*_proj$"], "format": "pack-quantized",
			"weights": {"num_bits": 4, "type": "int", "symmetric": false, "strategy": "group", "group_size": 32}},
		"group_1": {"targets": ["re:.*self_attn\\..*_proj$"],
			"weights": {"num_bits": 8, "type": "float", "strategy": "channel"},
			"input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}}}}`
	m, err := Detect([]byte(cfg), tinyQwen3(func(p string, out, in uint64) []safetensors.TensorInfo {
		if strings.Contains(p, "mlp") {
			return w4a16Tensors(true)(p, out, in)
		}
		return []safetensors.TensorInfo{ti(p+".weight", safetensors.F8E4M3, out, in), ti(p+".weight_scale", safetensors.BF16, out, 1)}
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "compressed-tensors mixed-precision: INT4 group 32 asymmetric (pack-quantized) ×6, FP8 per-channel (float-quantized) ×8, 14 of 15 Linear weights quantized"
	if got := m.Describe(); got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
	for _, mod := range m.Modules {
		// With two or more groups, in = groups × 32 is known from the
		// scale's shape alone.
		if mod.Scheme.Format == FormatCTPacked && mod.In == 0 {
			t.Errorf("%s: in unknown", mod.Prefix)
		}
	}
}

func TestDetectPresetsAndInference(t *testing.T) {
	for _, tc := range []struct {
		cfg, want string
		quant     func(string, uint64, uint64) []safetensors.TensorInfo
	}{
		{`{"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed", "ignore": ["lm_head"],
			"config_groups": {"W4A16": ["Linear"]}}}`,
			"compressed-tensors INT4 group 128 symmetric (pack-quantized), 14 of 15 Linear weights quantized",
			func(p string, out, in uint64) []safetensors.TensorInfo {
				return []safetensors.TensorInfo{ti(p+".weight_packed", safetensors.I32, out, in/8), ti(p+".weight_scale", safetensors.BF16, out, 1), ti(p+".weight_shape", safetensors.I64, 2)}
			}},
		{`{"quantization_config": {"quant_method": "compressed-tensors", "quantization_status": "compressed", "format": "mixed-precision",
			"config_groups": {"FP8_DYNAMIC": ["Linear"]}}}`,
			"compressed-tensors FP8 per-channel (float-quantized), 14 of 15 Linear weights quantized",
			func(p string, out, in uint64) []safetensors.TensorInfo {
				return []safetensors.TensorInfo{ti(p+".weight", safetensors.F8E4M3, out, in), ti(p+".weight_scale", safetensors.BF16, out, 1)}
			}},
		// No format anywhere: inferred as int-quantized (INT weights and
		// input activations, §5.2).
		{`{"quantization_config": {"quant_method": "compressed-tensors", "quantization_status": "compressed",
			"config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8, "group_size": -1},
				"input_activations": {"num_bits": 8, "strategy": "token", "dynamic": true}}}}}`,
			"compressed-tensors INT8 per-channel symmetric (int-quantized), 14 of 15 Linear weights quantized",
			func(p string, out, in uint64) []safetensors.TensorInfo {
				return []safetensors.TensorInfo{ti(p+".weight", safetensors.I8, out, in), ti(p+".weight_scale", safetensors.F32, out, 1)}
			}},
	} {
		m, err := Detect([]byte(tc.cfg), tinyQwen3(tc.quant), nil)
		if err != nil {
			t.Errorf("%s: %v", tc.want, err)
			continue
		}
		if got := m.Describe(); got != tc.want {
			t.Errorf("Describe() = %q, want %q", got, tc.want)
		}
	}
}

// An ignore regex meant for a MoE router but missing its "$" also matches
// gate_proj (§5.7): quantized tensors on an ignored module are an error;
// a consistently ignored gate_proj next to a quantized up_proj is a fused-
// shard warning.
func TestDetectIgnoreRegex(t *testing.T) {
	cfg := strings.Replace(ctFP8BlockConfig, `"ignore": ["lm_head"]`, `"ignore": ["lm_head", "re:.*mlp\\.gate"]`, 1)
	_, err := Detect([]byte(cfg), tinyQwen3(fp8BlockTensors(".weight_scale", safetensors.BF16)), nil)
	if err == nil || !strings.Contains(err.Error(), `model.layers.0.mlp.gate_proj: quantization_config.ignore: module is ignored by "re:.*mlp\\.gate"`) {
		t.Errorf("ignored module with quantized tensors: %v", err)
	}
	m, err := Detect([]byte(cfg), tinyQwen3(func(p string, out, in uint64) []safetensors.TensorInfo {
		if strings.HasSuffix(p, "gate_proj") {
			return nil
		}
		return fp8BlockTensors(".weight_scale", safetensors.BF16)(p, out, in)
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Warnings) != 2 || !strings.Contains(m.Warnings[0], "model.layers.0.mlp.{gate_proj,up_proj} are fused by vLLM but differ (gate_proj: not quantized; up_proj: compressed-tensors/float-quantized FP8 block 128x128)") {
		t.Errorf("warnings %q", m.Warnings)
	}
	if got := m.Describe(); got != "compressed-tensors FP8 block 128x128 (float-quantized), 12 of 15 Linear weights quantized" {
		t.Errorf("Describe() = %q", got)
	}
}

func TestDetectAWQ(t *testing.T) {
	awqTensors := func(p string, out, in uint64) []safetensors.TensorInfo {
		return []safetensors.TensorInfo{
			ti(p+".qweight", safetensors.I32, in, out/8), ti(p+".qzeros", safetensors.I32, in/32, out/8), ti(p+".scales", safetensors.F16, in/32, out),
		}
	}
	cfg := `{"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": true, "version": "gemm", "modules_to_not_convert": null}}`
	m, err := Detect([]byte(cfg), tinyQwen3(awqTensors), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Describe(), "AutoAWQ GEMM INT4 group 32 asymmetric, 14 of 15 Linear weights quantized"; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
	// The side quant_config.json with AutoAWQ's spellings.
	side := map[string][]byte{"quant_config.json": []byte(`{"zero_point": true, "q_group_size": 32, "w_bit": 4, "version": "GEMM"}`)}
	if m, err = Detect([]byte(`{"model_type": "qwen3"}`), tinyQwen3(awqTensors), side); err != nil || m.Method != "awq" || len(m.Modules) != 14 {
		t.Errorf("quant_config.json: %v", err)
	}
	// Group size not dividing in (down_proj has in = 160).
	bad := strings.Replace(cfg, `"group_size": 32`, `"group_size": 64`, 1)
	if _, err := Detect([]byte(bad), tinyQwen3(awqTensors), nil); err == nil || !strings.Contains(err.Error(), "model.layers.0.mlp.down_proj: group_size: group size 64 does not divide in = 160") {
		t.Errorf("group size 64: %v", err)
	}
	// Missing qzeros with zero_point true.
	ts := slices.DeleteFunc(tinyQwen3(awqTensors), func(t safetensors.TensorInfo) bool { return t.Name == "model.layers.1.self_attn.k_proj.qzeros" })
	if _, err := Detect([]byte(cfg), ts, nil); err == nil || !strings.Contains(err.Error(), "model.layers.1.self_attn.k_proj.qzeros: missing: zero_point is true") {
		t.Errorf("missing qzeros: %v", err)
	}
}

func TestDetectQuanto(t *testing.T) {
	qmap := map[string]any{}
	ts := tinyQwen3(func(p string, out, in uint64) []safetensors.TensorInfo {
		qmap[p] = nil
		return []safetensors.TensorInfo{
			ti(p+".weight._data", safetensors.I8, out, in), ti(p+".weight._scale", safetensors.BF16, out, 1),
			ti(p+".input_scale", safetensors.BF16), ti(p+".output_scale", safetensors.BF16),
		}
	})
	var b strings.Builder
	b.WriteString("{")
	i := 0
	for p := range qmap {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `%q: {"weights": "qint8", "activations": "none"}`, p)
		i++
	}
	b.WriteString(`, "lm_head": {"weights": "none", "activations": "none"}}`)
	m, err := Detect(nil, ts, map[string][]byte{QuantoQMapFile: []byte(b.String())})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Describe(), "optimum-quanto INT8 per-channel symmetric, 14 of 15 Linear weights quantized"; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
	if len(m.Modules[0].Tensors) != 4 {
		t.Errorf("module tensors %v", m.Modules[0].TensorNames())
	}
	q4 := strings.Replace(b.String(), `"qint8"`, `"qint4"`, 1)
	if _, err := Detect(nil, ts, map[string][]byte{QuantoQMapFile: []byte(q4)}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("qint4: %v", err)
	}
}

func TestDetectNotQuantized(t *testing.T) {
	m, err := Detect([]byte(`{"model_type": "qwen3"}`), tinyQwen3(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Describe(); got != "not quantized, 15 Linear weights" {
		t.Errorf("Describe() = %q", got)
	}
	if m, err = Detect(nil, nil, nil); err != nil || m.Describe() != "not quantized, 0 Linear weights" {
		t.Errorf("empty model: %v", err)
	}
	ts := append(tinyQwen3(nil), ti("model.layers.0.mlp.up_proj.weight_scale", safetensors.BF16, 2, 1))
	if _, err := Detect([]byte(`{}`), ts, nil); err == nil || !strings.Contains(err.Error(), "model.layers.0.mlp.up_proj.weight_scale: looks like part of a quantized module") {
		t.Errorf("quantized-looking tensor in a dense model: %v", err)
	}
}

func TestDetectAux(t *testing.T) {
	cfg := strings.Replace(ctFP8BlockConfig, `"kv_cache_scheme": null`, `"kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor"}`, 1)
	ts := append(tinyQwen3(fp8BlockTensors(".weight_scale", safetensors.BF16)),
		ti("model.layers.0.self_attn.k_scale", safetensors.F32), ti("model.layers.0.self_attn.v_scale", safetensors.F32))
	m, err := Detect([]byte(cfg), ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Aux, []string{"model.layers.0.self_attn.k_scale", "model.layers.0.self_attn.v_scale"}) {
		t.Errorf("aux %v", m.Aux)
	}
}

// Each broken checkpoint is refused with an error of the right class that
// names the tensor or config field.
func TestDetectErrors(t *testing.T) {
	ct := func(weights string) string {
		return `{"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
			"config_groups": {"group_0": {"targets": ["Linear"], "weights": {` + weights + `}}}}}`
	}
	w4 := `"num_bits": 4, "type": "int", "symmetric": true, "strategy": "group", "group_size": 32`
	replace := func(ts []safetensors.TensorInfo, name string, t safetensors.TensorInfo) []safetensors.TensorInfo {
		out := slices.Clone(ts)
		for i := range out {
			if out[i].Name == name {
				out[i] = t
			}
		}
		return out
	}
	base := tinyQwen3(w4a16Tensors(false))
	for _, tc := range []struct {
		name    string
		cfg     string
		tensors []safetensors.TensorInfo
		extra   map[string][]byte
		class   error
		want    string
	}{
		{"missing zero point", ct(strings.Replace(w4, `"symmetric": true`, `"symmetric": false`, 1)), base, nil, ErrInvalid,
			"model.layers.0.mlp.down_proj.weight_zero_point: missing: group group_0 (pack-quantized, INT4 group 32 asymmetric) needs it"},
		{"bad scale shape", ct(w4), replace(base, "model.layers.1.mlp.up_proj.weight_scale", ti("model.layers.1.mlp.up_proj.weight_scale", safetensors.BF16, 160, 3)), nil, ErrInvalid,
			"model.layers.1.mlp.up_proj.weight_scale: shape: [160,3] says in = 96 (3 groups of 32), but model.layers.1.mlp.up_proj.weight_packed has 8 words per row"},
		{"scale dtype", ct(w4), replace(base, "model.layers.1.mlp.up_proj.weight_scale", ti("model.layers.1.mlp.up_proj.weight_scale", safetensors.I32, 160, 2)), nil, ErrInvalid,
			"model.layers.1.mlp.up_proj.weight_scale: dtype: I32, want BF16 or F16 or F32 (scale)"},
		{"codes dtype", ct(w4), replace(base, "model.layers.1.mlp.up_proj.weight_packed", ti("model.layers.1.mlp.up_proj.weight_packed", safetensors.I64, 160, 8)), nil, ErrInvalid,
			"model.layers.1.mlp.up_proj.weight_packed: dtype: I64, want I32"},
		{"packed width", ct(w4), replace(base, "model.layers.1.mlp.up_proj.weight_packed", ti("model.layers.1.mlp.up_proj.weight_packed", safetensors.I32, 160, 9)), nil, ErrInvalid,
			"model.layers.1.mlp.up_proj.weight_scale: shape: [160,2] says in = 64 (2 groups of 32), but model.layers.1.mlp.up_proj.weight_packed has 9 words per row"},
		{"group does not divide", ct(strings.Replace(w4, "32", "48", 1)), tinyQwen3(func(p string, out, in uint64) []safetensors.TensorInfo {
			return []safetensors.TensorInfo{ti(p+".weight_packed", safetensors.I32, out, in/8), ti(p+".weight_scale", safetensors.BF16, out, (in+47)/48), ti(p+".weight_shape", safetensors.I64, 2)}
		}), nil, ErrInvalid, "model.layers.0.mlp.down_proj: group_size: group size 48 does not divide in (model.layers.0.mlp.down_proj.weight_packed's 20 words per row put in between 153 and 160; the scale has 4 groups)"},
		{"missing g_idx", ct(w4 + `, "actorder": "group"`), base, nil, ErrInvalid, "model.layers.0.mlp.down_proj.weight_g_idx: missing"},
		{"actorder without group", ct(`"num_bits": 4, "strategy": "channel", "actorder": "group"`), base, nil, ErrInvalid, "actorder \"group\" needs the group strategy"},
		{"weight and weight_packed", ct(w4), append(slices.Clone(base), ti("model.layers.0.mlp.up_proj.weight", safetensors.BF16, 160, 64)), nil, ErrInvalid,
			"model.layers.0.mlp.up_proj.weight: unexpected for pack-quantized"},
		{"no group targets", strings.Replace(ct(w4), `"targets": ["Linear"]`, `"targets": ["re:.*self_attn.*"]`, 1), base, nil, ErrInvalid,
			"model.layers.0.mlp.down_proj: quantization_config.config_groups: module has quantized tensors but no quantizing config group targets it"},
		{"3-D tensor", ct(w4), replace(base, "model.layers.0.mlp.up_proj.weight_packed", ti("model.layers.0.mlp.up_proj.weight_packed", safetensors.I32, 2, 160, 8)), nil, ErrInvalid,
			"fused 3-D expert tensors are not supported"},
		{"unknown dtype", ct(w4), append(slices.Clone(base), ti("model.layers.0.mlp.up_proj.input_scale", "F7")), nil, ErrInvalid,
			`model.layers.0.mlp.up_proj.input_scale: safetensors: dtype: unknown dtype "F7"`},
		{"duplicate tensor", ct(w4), append(slices.Clone(base), base[0]), nil, ErrInvalid, "model.embed_tokens.weight: tensor appears twice"},
		{"fp8 weight dtype", `{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}}`,
			replace(tinyQwen3(fp8BlockTensors(".weight_scale_inv", safetensors.F32)), "model.layers.0.self_attn.q_proj.weight", ti("model.layers.0.self_attn.q_proj.weight", safetensors.BF16, 128, 64)), nil, ErrInvalid,
			"model.layers.0.self_attn.q_proj.weight: dtype: BF16, want F8_E4M3 (fmt e4m3)"},
		{"fp8 weight without scale", `{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}}`,
			slices.DeleteFunc(tinyQwen3(fp8BlockTensors(".weight_scale_inv", safetensors.F32)), func(t safetensors.TensorInfo) bool { return t.Name == "model.layers.1.mlp.up_proj.weight_scale_inv" }), nil, ErrInvalid,
			"model.layers.1.mlp.up_proj.weight: dtype: F8_E4M3 weight with no scale"},
		{"bad JSON", `{"quantization_config": [1]}`, base, nil, ErrInvalid, "quantization_config: not a JSON object"},
		{"bad num_bits", ct(`"num_bits": "four"`), base, nil, ErrInvalid, "quantization_config.config_groups.group_0.weights.num_bits: want an integer"},
		{"no quant_method", `{"quantization_config": {"bits": 4}}`, base, nil, ErrInvalid, "quantization_config.quant_method: missing"},

		{"gptq", `{"quantization_config": {"quant_method": "gptq", "bits": 4}}`, base, nil, ErrUnsupported, `"gptq" is not a format this package reads`},
		{"gptq side config", `{}`, base, map[string][]byte{"quantize_config.json": []byte(`{"bits": 4, "group_size": 128, "desc_act": false}`)}, ErrUnsupported, "GPTQ"},
		{"awq gemv", `{"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv"}}`, base, nil, ErrUnsupported, `AWQ version "gemv"`},
		{"awq 3 bits", `{"quantization_config": {"quant_method": "awq", "bits": 3, "group_size": 128, "version": "gemm"}}`, base, nil, ErrUnsupported, "3-bit AWQ"},
		{"nvfp4", ct(`"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16`), base, nil, ErrUnsupported, `weight strategy "tensor_group"`},
		{"fp4 group", ct(`"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32`), base, nil, ErrUnsupported, "4-bit float weights"},
		{"nvfp4 format", strings.Replace(ct(w4), `"format": "pack-quantized"`, `"format": "nvfp4-pack-quantized"`, 1), base, nil, ErrUnsupported, `format "nvfp4-pack-quantized"`},
		{"transform", strings.Replace(ct(w4), `"quantization_status"`, `"transform_config": {"config_groups": {}}, "quantization_status"`, 1), base, nil, ErrUnsupported, "transforms"},
		{"sparse", strings.Replace(ct(w4), `"quantization_status"`, `"sparsity_config": {"format": "sparse-24-bitmask"}, "quantization_status"`, 1), base, nil, ErrUnsupported, "sparse compression"},
		{"frozen", strings.Replace(ct(w4), `"compressed"`, `"frozen"`, 1), base, nil, ErrUnsupported, `"frozen": only compressed checkpoints`},
		{"python regex", strings.Replace(ct(w4), `"targets": ["Linear"]`, `"targets": ["re:(?!lm_head).*"]`, 1), base, nil, ErrUnsupported, "cannot be compiled"},
	} {
		_, err := Detect([]byte(tc.cfg), tc.tensors, tc.extra)
		if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %v containing %q", tc.name, err, tc.class, tc.want)
		}
	}
}
