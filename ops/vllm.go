package ops

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// AdapterRules are the server settings vLLM checks an adapter against.
type AdapterRules struct {
	// MaxLoraRank is the server's --max-lora-rank (vLLM's default is 16).
	MaxLoraRank int
	// Vocab is the base model's vocabulary size, for embedding LoRA (0: unknown).
	Vocab int
	// EmbeddingLoRA allows embed_tokens/lm_head LoRA, which only vLLM versions
	// from December 2025 accept for Qwen3 (formats.md §10 item 6).
	EmbeddingLoRA bool
}

// vllmLinearModules are the module names vLLM accepts LoRA on for Qwen-style
// models (§10 item 6).
var vllmLinearModules = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// CheckAdapter applies vLLM's static adapter checks (formats.md §10, the matrix of
// §14.12) to an adapter_config.json and the adapter's tensor list, and returns every
// violation, each with the message vLLM would fail with.
func CheckAdapter(configJSON []byte, tensors []safetensors.TensorInfo, rules AdapterRules) error {
	if rules.MaxLoraRank == 0 {
		rules.MaxLoraRank = 16
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(configJSON, &raw); err != nil {
		return fmt.Errorf("adapter_config.json: %w", err)
	}
	var errs []error
	var missing []string
	for _, k := range []string{"r", "lora_alpha", "target_modules"} {
		if _, ok := raw[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("Missing required configuration fields: %v", missing))
	}
	var cfg struct {
		R             int            `json:"r"`
		ModulesToSave []string       `json:"modules_to_save"`
		UseDora       bool           `json:"use_dora"`
		Bias          string         `json:"bias"`
		LoraBias      bool           `json:"lora_bias"`
		RankPattern   map[string]int `json:"rank_pattern"`
	}
	if err := json.Unmarshal(configJSON, &cfg); err != nil {
		return fmt.Errorf("adapter_config.json: %w", err)
	}
	if _, ok := raw["r"]; ok && cfg.R <= 0 {
		errs = append(errs, fmt.Errorf("r = %d must be positive", cfg.R))
	}
	if len(cfg.ModulesToSave) > 0 {
		errs = append(errs, errors.New("vLLM only supports modules_to_save being None."))
	}
	if cfg.UseDora {
		errs = append(errs, errors.New("vLLM does not yet support DoRA."))
	}
	if (cfg.Bias != "" && cfg.Bias != "none") || cfg.LoraBias {
		errs = append(errs, errors.New("Adapter bias is not supported."))
	}
	maxRank := cfg.R
	for _, r := range cfg.RankPattern {
		maxRank = max(maxRank, r)
	}
	if maxRank > rules.MaxLoraRank {
		errs = append(errs, fmt.Errorf("LoRA rank %d is greater than max_lora_rank %d.", maxRank, rules.MaxLoraRank))
	}
	expected := slices.Clone(vllmLinearModules)
	if rules.EmbeddingLoRA {
		expected = append(expected, "embed_tokens", "lm_head")
	}
	var unexpected []string
	for _, t := range tensors {
		name := strings.TrimPrefix(t.Name, peftPrefix)
		parts := strings.Split(name, ".")
		var module string
		switch n := len(parts); {
		case n >= 3 && (parts[n-2] == "lora_A" || parts[n-2] == "lora_B") && parts[n-1] == "weight":
			module = parts[n-3]
		case n >= 2 && (parts[n-1] == "lora_embedding_A" || parts[n-1] == "lora_embedding_B"):
			module = parts[n-2]
			if parts[n-1] == "lora_embedding_A" && rules.Vocab > 0 && (len(t.Shape) != 2 || int(t.Shape[1]) != rules.Vocab) {
				errs = append(errs, fmt.Errorf("The embedding LoRA size(%v) must be consistent with the base model's vocabulary size(%d).", t.Shape, rules.Vocab))
			}
		default:
			errs = append(errs, fmt.Errorf("%s is unsupported LoRA weight", t.Name))
			continue
		}
		if !slices.Contains(expected, module) && !slices.Contains(unexpected, module) {
			unexpected = append(unexpected, module)
		}
	}
	if len(unexpected) > 0 {
		sort.Strings(unexpected)
		errs = append(errs, fmt.Errorf("expected target modules in %v but received %v. Please verify that the loaded LoRA module is correct", expected, unexpected))
	}
	return errors.Join(errs...)
}
