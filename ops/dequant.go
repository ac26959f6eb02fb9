package ops

import (
	"context"
	"fmt"
	"path"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/recipe"
	"github.com/heft-dev/heft/codec/safetensors"
)

// DequantOptions describe one `heft dequant`.
type DequantOptions struct {
	Source string // REF of the quantized model
	Name   string // ref to write, NAME[:TAG]
	// Materialize stores the dense weights as data instead of recipes.
	Materialize bool
	// Backend evaluates the dequantization (nil: the CPU). Its results are the
	// CPU's bytes exactly, so the recipes it records verify on any machine.
	Backend Backend
	Message string
}

// DequantResult is what a dequant wrote.
type DequantResult struct {
	Commit  string `json:"commit"`
	Ref     string `json:"ref"`
	Format  string `json:"format"`  // the source's quantization, described
	Modules int    `json:"modules"` // weights dequantized
	Kept    int    `json:"kept"`    // tensors copied unchanged
	Dropped int    `json:"dropped"` // quantization-only tensors left out
	// Device is the backend that evaluated the weights; Stages where the time
	// went.
	Device string     `json:"device"`
	Stages StageTimes `json:"stages"`
}

// dequantRoles are the module tensors a dequantization reads, in recipe input order.
var dequantRoles = []quant.Role{quant.RoleCodes, quant.RoleScale, quant.RoleZeroPoint, quant.RoleShape, quant.RoleGIdx}

// Dequant writes the dense BF16 model of a quantized one: every quantized module's
// weight becomes a BF16 tensor (a recipe over the module's tensors),
// tensors that only carry quantization parameters are dropped, everything else is
// kept as it is, and config.json loses its quantization_config.
func Dequant(ctx context.Context, m Models, opts DequantOptions) (*DequantResult, error) {
	dtype := safetensors.BF16
	src, err := loadModel(m, opts.Source)
	if err != nil {
		return nil, err
	}
	qm, err := quant.Detect(src.config, src.infos(), src.side)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInput, opts.Source, err)
	}
	if len(qm.Modules) == 0 {
		return nil, inputErrorf("%s is not quantized (%s): nothing to dequantize", opts.Source, qm.Describe())
	}
	res := &DequantResult{Ref: opts.Name, Format: qm.Describe(), Modules: len(qm.Modules)}
	out := newOutput()
	out.materialize = opts.Materialize
	for _, name := range qm.Dense {
		p := src.tensors[name]
		t := p.tensor
		shard := src.files[p.file].Path
		out.shards[shard] = append(out.shards[shard], TensorOut{Name: t.Name, DType: t.DType, Shape: t.Shape, From: t.ID})
		res.Kept++
	}
	res.Dropped = len(qm.Aux)
	for _, mod := range qm.Modules {
		var roles []quant.Role
		var inputs []string
		for _, r := range dequantRoles {
			ti, ok := mod.Tensors[r]
			if !ok {
				continue
			}
			roles = append(roles, r)
			inputs = append(inputs, src.tensors[ti.Name].tensor.ID)
		}
		out2, in, err := moduleDims(m, src, mod)
		if err != nil {
			return nil, err
		}
		mod.Out, mod.In = out2, in
		params, err := recipe.DequantParams(mod, roles, dtype)
		if err != nil {
			return nil, err
		}
		codes := src.tensors[mod.Tensors[quant.RoleCodes].Name]
		shard := src.files[codes.file].Path
		out.shards[shard] = append(out.shards[shard], TensorOut{
			Name: mod.WeightName(), DType: string(dtype), Shape: []uint64{uint64(out2), uint64(in)},
			Recipe: &Recipe{Op: recipe.OpDequant, Params: params, Inputs: inputs},
		})
		// Activation-side tensors (input scales) are dropped with the module.
		res.Dropped += len(mod.Tensors) - len(roles)
	}
	if src.config != nil {
		cfg, err := quant.DequantizedConfig(src.config)
		if err != nil {
			return nil, fmt.Errorf("%s: config.json: %w", opts.Source, err)
		}
		out.replace["config.json"] = cfg
	}
	for _, f := range src.files {
		if _, ok := src.side[path.Base(f.Path)]; ok {
			out.drop[f.Path] = true // the quantization side file describes what is gone
		}
	}
	prov := Provenance{Op: "dequant", Source: opts.Source, Params: map[string]string{"dtype": string(dtype), "format": qm.Describe()}, Inputs: []string{src.commit}}
	if opts.Materialize {
		prov.Params["materialize"] = "true"
	}
	be := backendOr(opts.Backend)
	res.Device = be.Name()
	res.Commit, err = out.write(ctx, withBackend(ctx, m, be), src, opts.Name, opts.Message, prov)
	if err != nil {
		return nil, err
	}
	res.Stages = out.stages
	return res, nil
}

// moduleDims returns a module's logical [out, in]; pack-quantized modules keep it in
// their weight_shape tensor, which is read (16 bytes).
func moduleDims(m Models, src *model, mod quant.Module) (int, int, error) {
	if mod.In > 0 {
		return mod.Out, mod.In, nil
	}
	st, ok := mod.Tensors[quant.RoleShape]
	if !ok {
		return 0, 0, fmt.Errorf("%s: module %s has no input width", src.ref, mod.Prefix)
	}
	data, err := m.TensorBytes(src.tensors[st.Name].tensor.ID, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %s: %w", src.ref, st.Name, err)
	}
	out, in, err := mod.Dims(map[quant.Role][]byte{quant.RoleShape: data})
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", src.ref, err)
	}
	return out, in, nil
}
