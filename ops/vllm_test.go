package ops_test

import (
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops"
)

// TestCheckAdapterMatrix is formats.md §14.12: each adapter gets vLLM's error.
func TestCheckAdapterMatrix(t *testing.T) {
	good := `{"r": 8, "lora_alpha": 8, "target_modules": ["q_proj"], "bias": "none", "modules_to_save": null, "use_dora": false}`
	pair := func(mod string) []safetensors.TensorInfo {
		return []safetensors.TensorInfo{
			{Name: "base_model.model.model.layers.0." + mod + ".lora_A.weight", DType: safetensors.BF16, Shape: []uint64{8, 64}},
			{Name: "base_model.model.model.layers.0." + mod + ".lora_B.weight", DType: safetensors.BF16, Shape: []uint64{128, 8}},
		}
	}
	cases := []struct {
		name    string
		config  string
		tensors []safetensors.TensorInfo
		want    string // "" means valid
	}{
		{"valid", good, pair("self_attn.q_proj"), ""},
		{"modules_to_save", strings.Replace(good, `"modules_to_save": null`, `"modules_to_save": ["lm_head"]`, 1), pair("self_attn.q_proj"), "modules_to_save being None"},
		{"empty modules_to_save", strings.Replace(good, `"modules_to_save": null`, `"modules_to_save": []`, 1), pair("self_attn.q_proj"), ""},
		{"lm_head full weight", good, append(pair("self_attn.q_proj"), safetensors.TensorInfo{Name: "base_model.model.lm_head.weight", Shape: []uint64{320, 64}}), "unsupported LoRA weight"},
		{"adapter name in key", good, []safetensors.TensorInfo{{Name: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", Shape: []uint64{8, 64}}}, "unsupported LoRA weight"},
		{"norm", good, pair("input_layernorm"), "expected target modules"},
		{"rank", strings.Replace(good, `"r": 8`, `"r": 32`, 1), pair("self_attn.q_proj"), "greater than max_lora_rank 16"},
		{"dora", strings.Replace(good, `"use_dora": false`, `"use_dora": true`, 1), pair("self_attn.q_proj"), "DoRA"},
		{"bias", strings.Replace(good, `"bias": "none"`, `"bias": "all"`, 1), pair("self_attn.q_proj"), "bias is not supported"},
		{"embedding vocab", good, []safetensors.TensorInfo{{Name: "base_model.model.model.embed_tokens.lora_embedding_A", Shape: []uint64{8, 100}}}, "vocabulary size"},
		{"missing fields", `{"r": 8}`, pair("self_attn.q_proj"), "Missing required configuration fields"},
	}
	for _, c := range cases {
		err := ops.CheckAdapter([]byte(c.config), c.tensors, ops.AdapterRules{MaxLoraRank: 16, Vocab: 320, EmbeddingLoRA: c.name == "embedding vocab"})
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}
