package ops

import (
	"context"
	"fmt"
	"strconv"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/recipe"
	"github.com/heft-dev/heft/codec/safetensors"
)

// QuantizeOptions describe one `heft quantize`.
type QuantizeOptions struct {
	Source string // REF of a dense model
	Name   string // ref to write, NAME[:TAG]
	// Scheme is fp8-block, int8 or w4a16; Format compressed-tensors (default)
	// or fp8 (native block FP8, fp8-block only).
	Scheme, Format string
	GroupSize      int    // w4a16: input columns per scale (0: 128; −1: per row)
	Asymmetric     bool   // w4a16: zero points
	ScaleDType     string // BF16, F16 or F32 ("" : the format's default)
	Ignore         []string
	// SkipVLLMChecks allows shapes vLLM's kernels would refuse (tiny test models).
	SkipVLLMChecks bool
	Materialize    bool
	Message        string
}

// QuantizeResult is what a quantize wrote.
type QuantizeResult struct {
	Commit    string `json:"commit"`
	Ref       string `json:"ref"`
	Scheme    string `json:"scheme"`    // described, e.g. "compressed-tensors FP8 block 128x128 …"
	Quantized int    `json:"quantized"` // Linear weights quantized
	Copied    int    `json:"copied"`    // tensors copied unchanged
}

// Quantize writes a quantized model of a dense one: every Linear weight the plan
// selects (quant.PlanQuantize) becomes its quantized tensors, each stored as a
// recipe over the dense weight, everything else is copied, and config.json gains
// the quantization_config vLLM loads.
func Quantize(ctx context.Context, m Models, opts QuantizeOptions) (*QuantizeResult, error) {
	qs, err := quant.ParseQuantizeScheme(opts.Scheme, opts.Format)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	if opts.GroupSize != 0 {
		qs.GroupSize = opts.GroupSize
	}
	qs.Asymmetric = opts.Asymmetric
	qs.SkipVLLMChecks = opts.SkipVLLMChecks
	if opts.ScaleDType != "" {
		dt, err := safetensors.ParseDType(opts.ScaleDType)
		if err != nil {
			return nil, inputErrorf("scale dtype: %v", err)
		}
		qs.ScaleDType = dt
	}
	if err := qs.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	src, err := loadModel(m, opts.Source)
	if err != nil {
		return nil, err
	}
	plan, err := quant.PlanQuantize(src.infos(), qs, opts.Ignore)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInput, opts.Source, err)
	}
	if len(plan.Modules) == 0 {
		return nil, inputErrorf("%s has no Linear weights to quantize", opts.Source)
	}
	res := &QuantizeResult{Ref: opts.Name, Quantized: len(plan.Modules)}
	out := newOutput()
	out.materialize = opts.Materialize
	for _, pt := range plan.Tensors {
		in, ok := src.tensors[pt.Source]
		if !ok {
			return nil, fmt.Errorf("quantize plan names unknown tensor %q", pt.Source)
		}
		shard := src.files[in.file].Path
		t := TensorOut{Name: pt.Name, DType: string(pt.DType), Shape: pt.Shape}
		switch pt.Op {
		case quant.PlanOpCopy:
			t.From = in.tensor.ID
			res.Copied++
		case quant.PlanOpQuantize:
			params, err := recipe.QuantizeParams(plan.Scheme, pt.Role)
			if err != nil {
				return nil, err
			}
			t.Recipe = &Recipe{Op: recipe.OpQuantize, Params: params, Inputs: []string{in.tensor.ID}}
		default:
			return nil, fmt.Errorf("quantize plan: tensor %q: unknown op %q", pt.Name, pt.Op)
		}
		out.shards[shard] = append(out.shards[shard], t)
	}
	if src.config != nil {
		cfg, err := quant.QuantizedConfig(src.config, plan.Scheme, plan.Ignore)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: config.json: %w", ErrInput, opts.Source, err)
		}
		out.replace["config.json"] = cfg
	}
	qm, err := quant.Detect(out.replace["config.json"], plan.TensorInfos(), nil)
	if err == nil {
		res.Scheme = qm.Describe()
	} else {
		res.Scheme = plan.Scheme.Name
	}
	prov := Provenance{Op: "quantize", Source: opts.Source, Inputs: []string{src.commit}, Params: map[string]string{
		"scheme": plan.Scheme.Name, "format": plan.Scheme.Format,
	}}
	if plan.Scheme.Name == quant.QuantW4A16 {
		prov.Params["group_size"] = strconv.Itoa(plan.Scheme.GroupSize)
		prov.Params["asymmetric"] = strconv.FormatBool(plan.Scheme.Asymmetric)
	}
	if plan.Scheme.ScaleDType != "" {
		prov.Params["scale_dtype"] = string(plan.Scheme.ScaleDType)
	}
	if opts.Materialize {
		prov.Params["materialize"] = "true"
	}
	res.Commit, err = out.write(ctx, m, src, opts.Name, opts.Message, prov)
	if err != nil {
		return nil, err
	}
	return res, nil
}
