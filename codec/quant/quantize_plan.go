package quant

import (
	"slices"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// PlanOp says how an output tensor of a quantized model is produced.
type PlanOp string

// The plan ops.
const (
	// PlanOpCopy: the input tensor of the same name, byte for byte.
	PlanOpCopy PlanOp = "copy"
	// PlanOpQuantize: the output of role Role of QuantizeWeight (or
	// QuantizeRoleInto) applied to the input tensor Source with the plan's
	// scheme.
	PlanOpQuantize PlanOp = "quantize"
)

// PlannedTensor is one tensor of the quantized model and how to compute it
// from the input model. Every output depends on exactly one input tensor.
type PlannedTensor struct {
	Name  string
	DType safetensors.DType
	Shape []uint64
	Op    PlanOp
	// Source is the input tensor it is computed from: the tensor itself
	// for PlanOpCopy, the module's dense weight for PlanOpQuantize.
	Source string
	// Module and Role (PlanOpQuantize only) name the quantized module and
	// which of its outputs this is.
	Module string
	Role   Role
}

// PlannedModule is one Linear weight the plan quantizes.
type PlannedModule struct {
	Prefix     string                 // e.g. "model.layers.0.mlp.up_proj"
	Weight     safetensors.TensorInfo // the dense input weight, Prefix + ".weight"
	ScaleDType safetensors.DType      // the dtype of its stored scales
}

// QuantizePlan is the whole quantized model as a function of the input
// model: what the ops layer executes and records as recipes.
type QuantizePlan struct {
	Scheme QuantizeScheme // with defaults filled in
	// Tensors are all output tensors, sorted by name (byte order, as
	// safetensors and transformers list keys).
	Tensors []PlannedTensor
	// Modules are the quantized modules in natural name order (layer 2
	// before layer 10).
	Modules []PlannedModule
	// Ignore is the ignore list to give QuantizedConfig: "lm_head", the
	// names of any other lm_head modules, the embeddings and other non-Linear
	// weights left dense (compressed-tensors format only: its model-free
	// tools take every non-norm weight for a target unless ignored), then the
	// caller's entries.
	Ignore []string
}

// TensorInfos returns the output tensors as a tensor list (without data
// offsets), e.g. to give Detect.
func (p *QuantizePlan) TensorInfos() []safetensors.TensorInfo {
	out := make([]safetensors.TensorInfo, len(p.Tensors))
	for i, t := range p.Tensors {
		out[i] = safetensors.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	return out
}

// PlanQuantize decides, from the input model's tensor list (all shards;
// names, dtypes and shapes), which tensors a quantize with qs produces and
// how. It reads no data.
//
// Quantized are the weights of Linear modules, as llm-compressor's
// model_free_ptq picks them (§5.6): every 2-D "<module>.weight" whose
// module is not a norm (last name component ending in "norm"), not an
// embedding (a name containing "embed", e.g. embed_tokens), not lm_head and
// not matched by ignore. ignore entries are module names or "re:<regex>"
// (compressed-tensors semantics: Python re.match, anchored at the start
// only); native fp8 configs take names only. Everything else (norms,
// embeddings, lm_head, biases, 1-D and scalar tensors, ignored modules) is
// copied unchanged.
//
// It refuses, with errors naming the tensor: a model that is already
// quantized (quantization tensors, or F8/I8 Linear weights: dequantize it
// first); a Linear weight of another dtype than BF16, F16 or F32, or with 3
// or more dimensions (split fused experts per expert, or ignore the module);
// a shape the format cannot store (w4a16 with a group size that does not
// divide in ≥ group); and, unless qs.SkipVLLMChecks, what vLLM would refuse
// to load (§5.7): w4a16 outside Marlin's out % 64 == 0, in % 128 == 0,
// in % group == 0 and group ∈ {−1, 32, 64, 128}; fp8-block with a fused
// q/k or gate shard whose out is not a multiple of the block height; fused
// shards (q/k/v, gate/up) of which only some are ignored.
func PlanQuantize(tensors []safetensors.TensorInfo, qs QuantizeScheme, ignore []string) (*QuantizePlan, error) {
	if err := qs.Validate(); err != nil {
		return nil, err
	}
	qs = qs.normalized()
	ignores := make([]ctTarget, len(ignore))
	for i, raw := range ignore {
		if qs.Format == OutputFP8 && strings.HasPrefix(raw, "re:") {
			return nil, unsupportedf("", "ignore", "%q: native fp8 configs list module names, not regexes", raw)
		}
		t, err := compileTarget(raw, "ignore")
		if err != nil {
			return nil, err
		}
		ignores[i] = t
	}
	ts, err := newTensorSet(tensors)
	if err != nil {
		return nil, err
	}
	plan := &QuantizePlan{Scheme: qs}
	var lmHeads, embeds []string
	quantized := map[string]bool{} // module prefixes
	for _, name := range ts.names {
		t := ts.byName[name]
		if s, ok := hasAnySuffix(name, quantSuffixes); ok {
			return nil, unsupportedf(name, "", "the model is already quantized (%s); dequantize it first", s)
		}
		if strings.HasSuffix(name, ".weight") && len(t.Shape) == 2 && isQuantCodeDType(t.DType) {
			// Even in an ignored module: Detect would take it for codes
			// without a scale.
			return nil, unsupportedf(name, "dtype", "%s weight: the model is already quantized; dequantize it first", t.DType)
		}
		prefix, isWeight := strings.CutSuffix(name, ".weight")
		last := prefix[strings.LastIndexByte(prefix, '.')+1:]
		switch {
		case isWeight && prefix != "" && len(t.Shape) >= 2 && !isLinearModuleName(prefix) && !strings.HasSuffix(last, "norm"):
			// An embedding: not a Linear, but compressed-tensors' model-free tools
			// (match_quantizable_tensors) take every non-norm weight for a target
			// unless the config ignores it (§5.6).
			embeds = append(embeds, prefix)
		case !isWeight || prefix == "" || len(t.Shape) < 2 || !isLinearModuleName(prefix):
		case last == "lm_head":
			lmHeads = append(lmHeads, prefix)
		case slices.ContainsFunc(ignores, func(ig ctTarget) bool { return ig.ignoreMatch(prefix) }):
		default:
			mod, specs, err := planModule(qs, t, prefix)
			if err != nil {
				return nil, err
			}
			plan.Modules = append(plan.Modules, mod)
			plan.Tensors = append(plan.Tensors, specs...)
			quantized[prefix] = true
			continue
		}
		plan.Tensors = append(plan.Tensors, PlannedTensor{Name: name, DType: t.DType, Shape: slices.Clone(t.Shape), Op: PlanOpCopy, Source: name})
	}
	if len(plan.Modules) == 0 {
		return nil, invalidf("", "", "no Linear weight to quantize (%d tensors, none a 2-D <module>.weight outside norms, embeddings, lm_head and ignore)", len(tensors))
	}
	if !qs.SkipVLLMChecks {
		if err := checkFusedShards(plan.Modules, quantized, ts); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(plan.Tensors, func(a, b PlannedTensor) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(plan.Tensors); i++ {
		if plan.Tensors[i].Name == plan.Tensors[i-1].Name {
			return nil, invalidf(plan.Tensors[i].Name, "", "would be written twice (from %s and %s)", plan.Tensors[i-1].Source, plan.Tensors[i].Source)
		}
	}
	plan.Ignore = appendUnique([]string{"lm_head"}, lmHeads...)
	if qs.Format != OutputFP8 {
		plan.Ignore = appendUnique(plan.Ignore, embeds...)
	}
	plan.Ignore = appendUnique(plan.Ignore, ignore...)
	return plan, nil
}

func appendUnique(list []string, items ...string) []string {
	for _, s := range items {
		if !slices.Contains(list, s) {
			list = append(list, s)
		}
	}
	return list
}

// planModule checks one Linear weight and lists its outputs.
func planModule(qs QuantizeScheme, t safetensors.TensorInfo, prefix string) (PlannedModule, []PlannedTensor, error) {
	if len(t.Shape) > 2 {
		return PlannedModule{}, nil, unsupportedf(t.Name, "shape", "%s: a Linear weight must be 2-D%s; or ignore the module", fmtShape(t.Shape), rank3Hint(t))
	}
	_, out, in, err := qs.checkWeight(t)
	if err != nil {
		return PlannedModule{}, nil, err
	}
	if !qs.SkipVLLMChecks {
		if err := checkVLLM(qs, t.Name, prefix, out, in); err != nil {
			return PlannedModule{}, nil, err
		}
	}
	specs := qs.outputs(t.DType, out, in)
	planned := make([]PlannedTensor, len(specs))
	for i, sp := range specs {
		planned[i] = PlannedTensor{Name: prefix + "." + sp.suffix, DType: sp.dtype, Shape: sp.shape, Op: PlanOpQuantize, Source: t.Name, Module: prefix, Role: sp.role}
	}
	t.Shape = slices.Clone(t.Shape)
	return PlannedModule{Prefix: prefix, Weight: t, ScaleDType: qs.ScaleDTypeFor(t.DType)}, planned, nil
}

// marlinGroupSizes are the group sizes vLLM's Marlin WNA16 kernel takes
// (−1: per channel).
var marlinGroupSizes = []int{-1, 32, 64, 128}

// skipHint ends the messages of the vLLM checks.
const skipHint = " (SkipVLLMChecks writes it anyway)"

// checkVLLM enforces what vLLM needs to load one quantized module at
// tensor parallelism 1 (§4 constraints, §5.7, §6).
func checkVLLM(qs QuantizeScheme, name, prefix string, out, in int) error {
	switch qs.Name {
	case QuantW4A16:
		g := qs.GroupSize
		switch {
		case !slices.Contains(marlinGroupSizes, g):
			return unsupportedf(name, "group_size", "group size %d: vLLM's Marlin W4A16 kernel takes -1, 32, 64 or 128%s", g, skipHint)
		case out%64 != 0:
			return unsupportedf(name, "shape", "out = %d is not a multiple of 64, which vLLM's Marlin W4A16 kernel needs%s", out, skipHint)
		case in%128 != 0:
			return unsupportedf(name, "shape", "in = %d is not a multiple of 128, which vLLM's Marlin W4A16 kernel needs%s", in, skipHint)
		case g > 0 && in%g != 0:
			return unsupportedf(name, "shape", "in = %d is not a multiple of the group size %d, which vLLM needs%s", in, g, skipHint)
		}
	case QuantFP8Block:
		// vLLM fuses q/k/v and gate/up; every shard but the last must end on
		// a block boundary (validate_fp8_block_shape).
		last := prefix[strings.LastIndexByte(prefix, '.')+1:]
		if bh := qs.BlockSize[0]; (last == "q_proj" || last == "k_proj" || last == "gate_proj") && out%bh != 0 {
			return unsupportedf(name, "shape", "out = %d is not a multiple of the block height %d; vLLM fuses %s with the next shard and needs it to end on a block boundary%s", out, bh, last, skipHint)
		}
	}
	return nil
}

// checkFusedShards refuses fused layers (q/k/v, gate/up) of which some
// shards are quantized and some are not: vLLM requires one scheme for all
// (§5.7).
func checkFusedShards(mods []PlannedModule, quantized map[string]bool, ts *tensorSet) error {
	for _, mod := range mods {
		dot := strings.LastIndexByte(mod.Prefix, '.')
		parent, last := mod.Prefix[:dot+1], mod.Prefix[dot+1:]
		for _, group := range fusedGroups {
			if !slices.Contains(group, last) {
				continue
			}
			for _, shard := range group {
				if _, dense := ts.get(parent + shard + ".weight"); dense && !quantized[parent+shard] {
					return unsupportedf(parent+shard+".weight", "ignore", "is left unquantized but %s is quantized; vLLM fuses {%s} and requires one scheme for all of them (ignore all or none)%s",
						mod.Prefix, strings.Join(group, ","), skipHint)
				}
			}
		}
	}
	return nil
}
