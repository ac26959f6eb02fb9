package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path"
	"regexp"
	"strings"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/recipe"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops/internal/linalg"
)

// LoraMergeOptions describe one `heft lora merge`.
type LoraMergeOptions struct {
	Base, Adapter string // REFs
	Name          string // ref to write
	Message       string
	// Backend dequantizes a quantized base and computes W + scale·B·A
	// (nil: the CPU; see Backend.Merge for how closely a GPU's merge
	// follows the CPU's).
	Backend Backend
}

// LoraMergeResult is what a merge wrote.
type LoraMergeResult struct {
	Commit string `json:"commit"`
	Ref    string `json:"ref"`
	Merged int    `json:"merged"` // weights that received a LoRA delta
	// Dequantized counts quantized base weights written dense (a quantized
	// base is dequantized first).
	Dequantized int `json:"dequantized"`
}

// adapterJSON is the part of adapter_config.json a merge needs (§9).
type adapterJSON struct {
	PeftType     string             `json:"peft_type"`
	R            int                `json:"r"`
	LoraAlpha    float64            `json:"lora_alpha"`
	UseRslora    bool               `json:"use_rslora"`
	UseDora      bool               `json:"use_dora"`
	FanInFanOut  bool               `json:"fan_in_fan_out"`
	RankPattern  map[string]int     `json:"rank_pattern"`
	AlphaPattern map[string]float64 `json:"alpha_pattern"`
}

// scaling returns PEFT's scaling for a module: lora_alpha / r (or / √r with
// rsLoRA), with rank_pattern and alpha_pattern keys matching a suffix of the module
// name at a "." boundary (first match in key order wins, as PEFT's regex does).
func (c adapterJSON) scaling(module string) float32 {
	r, alpha := float64(c.R), c.LoraAlpha
	if k, ok := patternMatch(c.RankPattern, module); ok {
		r = float64(c.RankPattern[k])
	}
	if k, ok := patternMatch(c.AlphaPattern, module); ok {
		alpha = c.AlphaPattern[k]
	}
	if c.UseRslora {
		return float32(alpha / math.Sqrt(r))
	}
	return float32(alpha / r)
}

func patternMatch[V any](pattern map[string]V, module string) (string, bool) {
	for k := range pattern {
		re, err := regexp.Compile(`(.*\.)?(` + k + `)$`)
		if err == nil && re.MatchString(module) {
			return k, true
		}
	}
	return "", false
}

// LoraMerge writes base + scaling·B·A for every module the adapter carries. A
// quantized base is dequantized first: its other weights become dense recipes and
// config.json loses its quantization_config. Merged weights keep the base's dtype
// (BF16 for a quantized base), rounded once from the float32 sum.
func LoraMerge(ctx context.Context, m Models, opts LoraMergeOptions) (*LoraMergeResult, error) {
	adMd, err := loadModel(m, opts.Adapter)
	if err != nil {
		return nil, err
	}
	var cfgFile *File
	var adFile *File
	for i := range adMd.files {
		switch adMd.files[i].Path {
		case "adapter_config.json":
			cfgFile = &adMd.files[i]
		case "adapter_model.safetensors":
			adFile = &adMd.files[i]
		}
	}
	if cfgFile == nil || adFile == nil {
		return nil, inputErrorf("%s is not a PEFT adapter (needs adapter_config.json and adapter_model.safetensors)", opts.Adapter)
	}
	raw, err := readSmall(m, *cfgFile)
	if err != nil {
		return nil, err
	}
	var ac adapterJSON
	if err := json.Unmarshal(raw, &ac); err != nil {
		return nil, inputErrorf("%s: adapter_config.json: %v", opts.Adapter, err)
	}
	switch {
	case ac.PeftType != "" && ac.PeftType != "LORA":
		return nil, inputErrorf("%s: peft_type %q: only LORA adapters merge", opts.Adapter, ac.PeftType)
	case ac.UseDora:
		return nil, inputErrorf("%s: DoRA adapters are not supported", opts.Adapter)
	case ac.FanInFanOut:
		return nil, inputErrorf("%s: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported", opts.Adapter)
	case ac.R <= 0:
		return nil, inputErrorf("%s: adapter_config.json: r = %d", opts.Adapter, ac.R)
	}
	// The LoRA pairs by module.
	type pair struct{ a, b Tensor }
	pairs := map[string]*pair{}
	for _, t := range adFile.Tensors {
		name := strings.TrimPrefix(t.Name, peftPrefix)
		var mod string
		var isA bool
		switch {
		case strings.HasSuffix(name, loraA):
			mod, isA = strings.TrimSuffix(name, loraA), true
		case strings.HasSuffix(name, loraB):
			mod = strings.TrimSuffix(name, loraB)
		default:
			return nil, inputErrorf("%s: tensor %q is not a LoRA A/B weight (embedding LoRA, biases and modules_to_save are not supported by merge)", opts.Adapter, t.Name)
		}
		p := pairs[mod]
		if p == nil {
			p = &pair{}
			pairs[mod] = p
		}
		if isA {
			p.a = t
		} else {
			p.b = t
		}
	}
	baseMd, err := loadModel(m, opts.Base)
	if err != nil {
		return nil, err
	}
	base, err := newDenseView(ctx, m, baseMd, opts.Backend)
	if err != nil {
		return nil, err
	}
	for mod, p := range pairs {
		if p.a.Name == "" || p.b.Name == "" {
			return nil, inputErrorf("%s: module %s has only one of lora_A and lora_B", opts.Adapter, mod)
		}
		shape, _, ok := base.shape(mod + ".weight")
		if !ok {
			return nil, inputErrorf("%s: module %s is not a weight of %s", opts.Adapter, mod, opts.Base)
		}
		if len(p.a.Shape) != 2 || len(p.b.Shape) != 2 || len(shape) != 2 || p.a.Shape[0] != p.b.Shape[1] ||
			p.b.Shape[0] != shape[0] || p.a.Shape[1] != shape[1] {
			return nil, inputErrorf("%s: %s: lora_B %v · lora_A %v does not fit the base weight %v", opts.Adapter, mod, p.b.Shape, p.a.Shape, shape)
		}
	}
	res := &LoraMergeResult{Ref: opts.Name}
	be := backendOr(opts.Backend)
	out := newOutput()
	place := func(name string, t TensorOut) {
		p := baseMd.tensors[name]
		shard := baseMd.files[p.file].Path
		out.shards[shard] = append(out.shards[shard], t)
	}
	for _, name := range base.qm.Dense {
		t := baseMd.tensors[name].tensor
		mod := strings.TrimSuffix(name, ".weight")
		p, ok := pairs[mod]
		if !ok || !strings.HasSuffix(name, ".weight") {
			place(name, TensorOut{Name: name, DType: t.DType, Shape: t.Shape, From: t.ID})
			continue
		}
		res.Merged++
		place(name, TensorOut{Name: name, DType: t.DType, Shape: t.Shape, Data: mergeData(ctx, be, base, name, t.DType, p.a, p.b, ac.scaling(mod), m)})
	}
	for _, qmod := range base.qm.Modules {
		name := qmod.WeightName()
		mod := base.modules[name]
		codes := mod.Tensors[quant.RoleCodes].Name
		p := baseMd.tensors[codes]
		shard := baseMd.files[p.file].Path
		shape := []uint64{uint64(mod.Out), uint64(mod.In)}
		res.Dequantized++
		if lp, ok := pairs[mod.Prefix]; ok {
			res.Merged++
			out.shards[shard] = append(out.shards[shard], TensorOut{Name: name, DType: string(safetensors.BF16), Shape: shape,
				Data: mergeData(ctx, be, base, name, string(safetensors.BF16), lp.a, lp.b, ac.scaling(mod.Prefix), m)})
			continue
		}
		var roles []quant.Role
		var inputs []string
		for _, r := range dequantRoles {
			if ti, ok := mod.Tensors[r]; ok {
				roles = append(roles, r)
				inputs = append(inputs, baseMd.tensors[ti.Name].tensor.ID)
			}
		}
		params, err := recipe.DequantParams(mod, roles, safetensors.BF16)
		if err != nil {
			return nil, err
		}
		out.shards[shard] = append(out.shards[shard], TensorOut{Name: name, DType: string(safetensors.BF16), Shape: shape,
			Recipe: &Recipe{Op: recipe.OpDequant, Params: params, Inputs: inputs}})
	}
	if res.Merged != len(pairs) {
		return nil, fmt.Errorf("lora merge: merged %d of %d adapter modules", res.Merged, len(pairs))
	}
	if base.quantized() && baseMd.config != nil {
		cfg, err := quant.DequantizedConfig(baseMd.config)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: config.json: %w", ErrInput, opts.Base, err)
		}
		out.replace["config.json"] = cfg
	}
	if base.quantized() {
		for _, f := range baseMd.files {
			if _, ok := baseMd.side[path.Base(f.Path)]; ok {
				out.drop[f.Path] = true
			}
		}
	}
	prov := Provenance{Op: "lora-merge", Source: opts.Adapter, Inputs: []string{baseMd.commit, adMd.commit}, Params: map[string]string{"base": opts.Base, "adapter": opts.Adapter}}
	res.Commit, err = out.write(ctx, m, baseMd, opts.Name, opts.Message, prov)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// mergeData computes one merged weight on be: W + scale·B·A in float32,
// rounded to dtype.
func mergeData(ctx context.Context, be Backend, base *denseView, name, dtype string, a, b Tensor, scale float32, m Models) func(dst []byte) ([]byte, error) {
	return func(dst []byte) ([]byte, error) {
		w, err := base.floats(name, nil)
		if err != nil {
			return nil, err
		}
		var fa, fb []float32
		for _, x := range []struct {
			t   Tensor
			dst *[]float32
		}{{a, &fa}, {b, &fb}} {
			raw, err := m.TensorBytes(x.t.ID, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", x.t.Name, err)
			}
			if *x.dst, err = decodeFloats(x.t.DType, raw, nil); err != nil {
				return nil, fmt.Errorf("%s: %w", x.t.Name, err)
			}
		}
		r := int(a.Shape[0])
		out, in := int(b.Shape[0]), int(a.Shape[1])
		wm, err := linalg.MatrixOf(out, in, w)
		if err != nil {
			return nil, err
		}
		am, err := linalg.MatrixOf(r, in, fa)
		if err != nil {
			return nil, err
		}
		bm, err := linalg.MatrixOf(out, r, fb)
		if err != nil {
			return nil, err
		}
		if err := be.Merge(ctx, wm, wm, bm, am, scale); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return encodeFloats(dtype, wm.Data, dst)
	}
}
