// Package modelgen generates deterministic Qwen3-architecture model
// directories for tests, demos and benchmarks: a base model, reshardings of
// it, fine-tunes of it, and a directory exercising every safetensors dtype.
//
// Names, shapes and config.json follow shared/docs/formats.md §3, §4 and
// §14.11. Weights are BF16 draws from N(0, 0.02) (norm weights from
// N(1, 0.02)) produced by a seeded PCG generator, so the same seed always
// gives byte-identical files. Files are written one tensor at a time in
// parallel chunks, so a model far larger than memory can be generated.
package modelgen

import (
	"fmt"
	"slices"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// Config holds the Qwen3 dimensions that determine tensor shapes.
type Config struct {
	Hidden        int // hidden_size, H
	Intermediate  int // intermediate_size, I
	Layers        int // num_hidden_layers
	Heads         int // num_attention_heads, NH
	KVHeads       int // num_key_value_heads, NKV
	HeadDim       int // head_dim, D
	Vocab         int // vocab_size, V
	TieEmbeddings bool
}

// Tiny is the layout verified against transformers in formats.md §14.11.
func Tiny() Config {
	return Config{Hidden: 64, Intermediate: 160, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 32, Vocab: 320}
}

// Demo is a small model (about 46 MB in BF16) with dimensions that satisfy
// every loader constraint of formats.md §4: NH·D ≠ H, and every projection's
// dimensions are multiples of 128.
func Demo() Config {
	return Config{Hidden: 512, Intermediate: 1536, Layers: 4, Heads: 8, KVHeads: 2, HeadDim: 128, Vocab: 8192}
}

// sizedWidths are the hidden sizes Sized picks from; all are multiples of 256
// so that heads (H/64) divide evenly into KV groups.
var sizedWidths = []int{256, 512, 768, 1024, 1536, 2048, 2560, 3072, 4096, 5120}

const (
	sizedMinLayers = 8     // real models are rarely shallower; prefer width below that
	sizedVocab     = 32768 // embedding rows before fine adjustment
	vocabStep      = 128
)

// Sized returns a config whose BF16 weights take about the given number of
// bytes (within a few MB). Width grows with size the way real models do:
// the widest hidden size that still allows sizedMinLayers layers is chosen,
// then the vocabulary is adjusted to absorb the remainder.
func Sized(bytes int64) Config {
	params := max(bytes/2, 1)
	var best Config
	for _, h := range sizedWidths {
		c := sizedShape(h)
		c.Vocab = int(min(sizedVocab, max(vocabStep, roundDown(params/int64(8*h), vocabStep))))
		rest := params - c.embeddingParams() - int64(h)
		c.Layers = int(rest / c.layerParams())
		if best.Hidden == 0 || c.Layers >= sizedMinLayers {
			best = c
		}
	}
	best.Layers = max(best.Layers, 1)
	// Put what the whole layers leave over into the vocabulary.
	rest := params - int64(best.Layers)*best.layerParams() - int64(best.Hidden)
	best.Vocab = int(max(vocabStep, roundNearest(rest/int64(2*best.Hidden), vocabStep)))
	return best
}

// sizedShape derives head counts and MLP width from the hidden size, with
// the proportions of Qwen3-32B (NH·D = 1.6 H there; 2 H here, D = 128,
// 4 query heads per KV head) and I = 3 H.
func sizedShape(h int) Config {
	heads := h / 64
	return Config{Hidden: h, Intermediate: 3 * h, Heads: heads, KVHeads: max(1, heads/4), HeadDim: 128}
}

func roundDown(v, step int64) int64    { return v / step * step }
func roundNearest(v, step int64) int64 { return (v + step/2) / step * step }

// Validate reports dimensions that cannot form a Qwen3 model.
func (c Config) Validate() error {
	for _, d := range []struct {
		name  string
		value int
	}{{"Hidden", c.Hidden}, {"Intermediate", c.Intermediate}, {"Layers", c.Layers}, {"Heads", c.Heads}, {"KVHeads", c.KVHeads}, {"HeadDim", c.HeadDim}, {"Vocab", c.Vocab}} {
		if d.value <= 0 {
			return fmt.Errorf("modelgen: config %s = %d, must be positive", d.name, d.value)
		}
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("modelgen: config Heads = %d is not a multiple of KVHeads = %d", c.Heads, c.KVHeads)
	}
	return nil
}

// Tensors lists every weight of the model, all BF16, sorted by name as
// transformers' save_pretrained writes them.
func (c Config) Tensors() []safetensors.TensorSpec {
	h, i, d := uint64(c.Hidden), uint64(c.Intermediate), uint64(c.HeadDim)
	q, kv, v := uint64(c.Heads)*d, uint64(c.KVHeads)*d, uint64(c.Vocab)
	specs := []safetensors.TensorSpec{
		bf16("model.embed_tokens.weight", v, h),
		bf16("model.norm.weight", h),
	}
	if !c.TieEmbeddings {
		specs = append(specs, bf16("lm_head.weight", v, h))
	}
	for layer := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", layer)
		specs = append(specs,
			bf16(p+"input_layernorm.weight", h),
			bf16(p+"self_attn.q_proj.weight", q, h),
			bf16(p+"self_attn.k_proj.weight", kv, h),
			bf16(p+"self_attn.v_proj.weight", kv, h),
			bf16(p+"self_attn.o_proj.weight", h, q),
			bf16(p+"self_attn.q_norm.weight", d),
			bf16(p+"self_attn.k_norm.weight", d),
			bf16(p+"post_attention_layernorm.weight", h),
			bf16(p+"mlp.gate_proj.weight", i, h),
			bf16(p+"mlp.up_proj.weight", i, h),
			bf16(p+"mlp.down_proj.weight", h, i),
		)
	}
	slices.SortFunc(specs, func(a, b safetensors.TensorSpec) int { return strings.Compare(a.Name, b.Name) })
	return specs
}

func bf16(name string, shape ...uint64) safetensors.TensorSpec {
	return safetensors.TensorSpec{Name: name, DType: safetensors.BF16, Shape: shape}
}

// NumParams is the number of weights in the model.
func (c Config) NumParams() int64 {
	n := c.embeddingParams() + int64(c.Hidden) + int64(c.Layers)*c.layerParams()
	if c.TieEmbeddings {
		n -= int64(c.Vocab) * int64(c.Hidden)
	}
	return n
}

// ParamBytes is the size of the weights in BF16: the sum of the tensors'
// data, as model.safetensors.index.json's total_size reports it.
func (c Config) ParamBytes() int64 { return 2 * c.NumParams() }

// embeddingParams counts embed_tokens and lm_head (as if untied).
func (c Config) embeddingParams() int64 { return 2 * int64(c.Vocab) * int64(c.Hidden) }

func (c Config) layerParams() int64 {
	h, i, d := int64(c.Hidden), int64(c.Intermediate), int64(c.HeadDim)
	q, kv := int64(c.Heads)*d, int64(c.KVHeads)*d
	return 2*q*h + 2*kv*h + 3*i*h + 2*h + 2*d
}

// isNormWeight reports whether a tensor is an RMSNorm scale, which models
// initialise to 1 rather than around 0.
func isNormWeight(name string) bool { return strings.HasSuffix(name, "norm.weight") }

// isEmbedding reports whether a tensor is one of the two vocabulary-sized
// matrices that FineTuneOptions.FreezeEmbeddings keeps unchanged.
func isEmbedding(name string) bool {
	return name == "model.embed_tokens.weight" || name == "lm_head.weight"
}
