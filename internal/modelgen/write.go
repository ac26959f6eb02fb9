package modelgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/heft-dev/heft/codec/safetensors"
)

// Options control WriteBase.
type Options struct {
	Seed   uint64
	Shards int // number of safetensors files; 0 or 1 writes a single model.safetensors
}

const (
	singleFileName = "model.safetensors"
	indexFileName  = "model.safetensors.index.json"
	// transformersVersion is the release formats.md §14.11 verified against.
	transformersVersion = "5.17.0"
)

// shardMetadata is what transformers' save_pretrained writes in every shard.
var shardMetadata = map[string]string{"format": "pt"}

// WriteBase writes a base model into dir, which must be absent or empty:
// the weights as model.safetensors or as model-0000i-of-0000N.safetensors
// shards with model.safetensors.index.json, plus config.json,
// generation_config.json and tokenizer_config.json. Tensors go to shards in
// name order, split so the shards have about equal size.
func WriteBase(dir string, c Config, o Options) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := prepareDir(dir); err != nil {
		return err
	}
	specs := c.Tensors()
	shards, err := splitShards(specs, max(o.Shards, 1))
	if err != nil {
		return err
	}
	if err := writeShards(dir, shards, func(w io.Writer, t safetensors.TensorInfo) error {
		return generateTensor(w, t, o.Seed)
	}); err != nil {
		return err
	}
	return writeModelFiles(dir, c)
}

// generateTensor writes t's BF16 values: N(0, 0.02), or N(1, 0.02) for norm
// weights.
func generateTensor(w io.Writer, t safetensors.TensorInfo, seed uint64) error {
	if t.DType != safetensors.BF16 {
		return fmt.Errorf("modelgen: tensor %q: cannot generate %s values", t.Name, t.DType)
	}
	table := weightTable()
	if isNormWeight(t.Name) {
		table = normTable()
	}
	s := tensorSeed(seed, t.Name)
	return writeChunks(w, int64(t.Size()), func(i int, buf []byte) error {
		fillBF16(buf, table, chunkRNG(s, purposeValues, i))
		return nil
	})
}

// splitShards assigns specs (in the given order) to n non-empty shards of
// about equal byte size: a tensor goes to the next shard once the middle of
// its bytes passes the current shard's share, or when every remaining tensor
// is needed to keep the remaining shards non-empty.
func splitShards(specs []safetensors.TensorSpec, n int) ([][]safetensors.TensorSpec, error) {
	if n > len(specs) {
		return nil, fmt.Errorf("modelgen: %d shards for %d tensors", n, len(specs))
	}
	sizes := make([]uint64, len(specs))
	var total uint64
	for i, s := range specs {
		size, err := s.DType.ByteLen(s.Shape)
		if err != nil {
			return nil, fmt.Errorf("modelgen: tensor %q: %w", s.Name, err)
		}
		sizes[i] = size
		total += size
	}
	shards := make([][]safetensors.TensorSpec, n)
	shard := 0
	var done uint64
	for i, s := range specs {
		shardsAfter := n - 1 - shard
		if len(shards[shard]) > 0 && shardsAfter > 0 {
			share := float64(total) * float64(shard+1) / float64(n)
			if len(specs)-i <= shardsAfter || float64(done)+float64(sizes[i])/2 > share {
				shard++
			}
		}
		shards[shard] = append(shards[shard], s)
		done += sizes[i]
	}
	return shards, nil
}

// shardFileName is transformers' name for shard i (from 0) of n.
func shardFileName(i, n int) string {
	if n == 1 {
		return singleFileName
	}
	return fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
}

// writeShards writes one safetensors file per shard, tensor data coming from
// data, and the index when there is more than one shard.
func writeShards(dir string, shards [][]safetensors.TensorSpec, data safetensors.DataFunc) error {
	weightMap := make(map[string]string)
	var totalSize uint64
	for i, specs := range shards {
		name := shardFileName(i, len(shards))
		h, err := safetensors.Plan(specs, shardMetadata)
		if err != nil {
			return fmt.Errorf("modelgen: plan %s: %w", name, err)
		}
		if err := safetensors.WriteFileStream(filepath.Join(dir, name), h, data); err != nil {
			return fmt.Errorf("modelgen: %w", err)
		}
		for _, t := range h.Tensors {
			weightMap[t.Name] = name
		}
		totalSize += h.DataSize()
	}
	if len(shards) == 1 {
		return nil
	}
	index := map[string]any{
		"metadata":   map[string]any{"total_size": totalSize},
		"weight_map": weightMap,
	}
	return writeJSON(filepath.Join(dir, indexFileName), index)
}

// writeModelFiles writes the non-weight files of a base model.
func writeModelFiles(dir string, c Config) error {
	// Token ids stay inside the (possibly tiny) vocabulary.
	bos, eos := c.Vocab-2, c.Vocab-1
	layerTypes := make([]string, c.Layers)
	for i := range layerTypes {
		layerTypes[i] = "full_attention"
	}
	const ropeTheta = 1_000_000.0
	// Both the transformers v4 and v5 spellings (dtype/torch_dtype,
	// rope_theta/rope_parameters): a loader that only knows the older ones
	// would otherwise silently fall back to rope_theta 10000 (formats.md §3).
	config := map[string]any{
		"architectures":           []string{"Qwen3ForCausalLM"},
		"attention_bias":          false,
		"attention_dropout":       0.0,
		"bos_token_id":            bos,
		"dtype":                   "bfloat16",
		"eos_token_id":            eos,
		"head_dim":                c.HeadDim,
		"hidden_act":              "silu",
		"hidden_size":             c.Hidden,
		"initializer_range":       initStd,
		"intermediate_size":       c.Intermediate,
		"layer_types":             layerTypes,
		"max_position_embeddings": 40960,
		"max_window_layers":       c.Layers,
		"model_type":              "qwen3",
		"num_attention_heads":     c.Heads,
		"num_hidden_layers":       c.Layers,
		"num_key_value_heads":     c.KVHeads,
		"rms_norm_eps":            1e-6,
		"rope_parameters":         map[string]any{"rope_theta": ropeTheta, "rope_type": "default"},
		"rope_scaling":            nil,
		"rope_theta":              ropeTheta,
		"sliding_window":          nil,
		"tie_word_embeddings":     c.TieEmbeddings,
		"torch_dtype":             "bfloat16",
		"transformers_version":    transformersVersion,
		"use_cache":               true,
		"use_sliding_window":      false,
		"vocab_size":              c.Vocab,
	}
	generation := map[string]any{
		"bos_token_id":         bos,
		"do_sample":            true,
		"eos_token_id":         eos,
		"temperature":          0.6,
		"top_k":                20,
		"top_p":                0.95,
		"transformers_version": transformersVersion,
	}
	tokenizer := map[string]any{
		"add_bos_token":    false,
		"bos_token":        nil,
		"eos_token":        "<|im_end|>",
		"model_max_length": 40960,
		"pad_token":        "<|endoftext|>",
		"tokenizer_class":  "Qwen2Tokenizer",
	}
	for name, v := range map[string]any{"config.json": config, "generation_config.json": generation, "tokenizer_config.json": tokenizer} {
		if err := writeJSON(filepath.Join(dir, name), v); err != nil {
			return err
		}
	}
	return nil
}

// writeJSON writes v as transformers does (json.dumps(indent=2,
// sort_keys=True) plus a newline); Go sorts map keys.
func writeJSON(path string, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("modelgen: encode %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("modelgen: %w", err)
	}
	return nil
}

// errNotEmpty is returned when a destination directory already has files.
var errNotEmpty = errors.New("destination directory is not empty")

// prepareDir creates dir, or accepts it if it exists and is empty, so that
// files of an earlier, different layout can never mix with new ones.
func prepareDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("modelgen: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("modelgen: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("modelgen: %s: %w", dir, errNotEmpty)
	}
	return nil
}
