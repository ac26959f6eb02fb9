package quant

import (
	"fmt"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// Native FP8 (quant_method "fp8", §6): DeepSeek-V3 and Qwen3-*-FP8.

// fp8ScaleDTypes: F32 (DeepSeek), BF16 (Qwen3 dense FP8 releases), F16 for
// good measure, and E8M0 for power-of-two scales (scale_fmt "ue8m0").
var fp8ScaleDTypes = []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16, safetensors.F8E8M0}

func detectFP8(qc jsonObject, ts *tensorSet) (*Model, error) {
	m := &Model{Method: "fp8", Format: FormatFP8}
	s := Scheme{Format: FormatFP8, Type: TypeFloat, Bits: 8, CodeDType: safetensors.F8E4M3, Strategy: StrategyTensor, Symmetric: true}
	if f, _, err := qc.str("fmt"); err != nil {
		return nil, err
	} else if strings.EqualFold(f, "e5m2") {
		s.CodeDType = safetensors.F8E5M2
	}
	block, hasBlock, err := qc.intPair("weight_block_size")
	if err != nil {
		return nil, err
	}
	if hasBlock {
		if block[0] <= 0 || block[1] <= 0 {
			return nil, invalidf("", qc.field("weight_block_size"), "[%d, %d], want two positive sizes", block[0], block[1])
		}
		s.Strategy, s.BlockSize = StrategyBlock, block
	}
	act, hasAct, err := qc.str("activation_scheme")
	if err != nil {
		return nil, err
	}
	switch {
	case !hasAct:
		m.Warnings = append(m.Warnings, "quantization_config has no activation_scheme, which vLLM requires")
	case act == "dynamic" && hasBlock:
		s.Input = Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyGroup, GroupSize: block[1], Dynamic: true, Symmetric: true}
	case act == "dynamic":
		s.Input = Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyTensor, Dynamic: true, Symmetric: true}
	case act == "static":
		s.Input = Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyTensor, Symmetric: true}
		if hasBlock {
			m.Warnings = append(m.Warnings, "weight_block_size with activation_scheme \"static\": vLLM only accepts block FP8 with dynamic activations")
		}
	default:
		return nil, invalidf("", qc.field("activation_scheme"), "%q, want \"dynamic\" or \"static\"", act)
	}
	for _, key := range []string{"modules_to_not_convert", "ignored_layers"} {
		list, err := qc.strings(key)
		if err != nil {
			return nil, err
		}
		m.Ignore = append(m.Ignore, list...)
	}

	scaleSuffix := ".weight_scale_inv"
	if !hasBlock {
		scaleSuffix = ".weight_scale"
	}
	for _, prefix := range ts.prefixesWithSuffix(scaleSuffix) {
		mod := Module{Prefix: prefix, Scheme: s, Tensors: map[Role]safetensors.TensorInfo{}}
		codes, ok := ts.get(prefix + ".weight")
		if !ok {
			return nil, invalidf(prefix+".weight", "", "missing: %s has a scale but no weight", prefix)
		}
		scale := ts.byName[prefix+scaleSuffix]
		mod.Tensors[RoleCodes], mod.Tensors[RoleScale] = codes, scale
		ts.optional(&mod, RoleInputScale, prefix+".input_scale")
		if err := wantDType(codes, fmt.Sprintf("fmt %s", strings.ToLower(strings.TrimPrefix(string(s.CodeDType), "F8_"))), s.CodeDType); err != nil {
			return nil, err
		}
		if mod.Out, mod.In, err = dims2(codes); err != nil {
			return nil, err
		}
		if err := wantDType(scale, "scale", fp8ScaleDTypes...); err != nil {
			return nil, err
		}
		if hasBlock {
			bh, bw := block[0], block[1]
			err = wantShape(scale, []int{cdiv(mod.Out, bh), cdiv(mod.In, bw)}, fmt.Sprintf("[cdiv(out, %d), cdiv(in, %d)]", bh, bw))
		} else {
			err = wantScalarShape(scale, "per-tensor scale")
		}
		if err != nil {
			return nil, err
		}
		m.Modules = append(m.Modules, mod)
	}
	return m, nil
}
