package quant

import (
	"fmt"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// AutoAWQ GEMM (quant_method "awq", version "gemm", §7).

// detectAWQ reads an AWQ config (config.json's quantization_config, or the
// side quant_config.json with AutoAWQ's key spellings).
func detectAWQ(qc jsonObject, ts *tensorSet) (*Model, error) {
	m := &Model{Method: "awq", Format: FormatAWQ}
	// vLLM reads w_bit|bits and q_group_size|group_size; the first spelling
	// present wins, and AutoAWQ's defaults apply to absent keys.
	bits, group, zeroPoint, version := 4, 128, true, "gemm"
	for _, key := range []string{"w_bit", "bits"} {
		if v, ok, err := qc.integer(key); err != nil {
			return nil, err
		} else if ok {
			bits = v
			break
		}
	}
	for _, key := range []string{"q_group_size", "group_size"} {
		if v, ok, err := qc.integer(key); err != nil {
			return nil, err
		} else if ok {
			group = v
			break
		}
	}
	if v, ok, err := qc.boolean("zero_point"); err != nil {
		return nil, err
	} else if ok {
		zeroPoint = v
	}
	if v, ok, err := qc.str("version"); err != nil {
		return nil, err
	} else if ok {
		version = v
	}
	if bits != 4 {
		return nil, unsupportedf("", qc.field("bits"), "%d-bit AWQ: only 4-bit weights exist (vLLM refuses others too)", bits)
	}
	if !strings.EqualFold(version, "gemm") {
		// GEMV, exllama, marlin and ipex use other packings.
		return nil, unsupportedf("", qc.field("version"), "AWQ version %q: only GEMM is supported", version)
	}
	if group <= 0 && group != -1 {
		return nil, invalidf("", qc.field("group_size"), "%d, want a positive size or -1", group)
	}
	ignore, err := qc.strings("modules_to_not_convert")
	if err != nil {
		return nil, err
	}
	m.Ignore = ignore

	for _, prefix := range ts.prefixesWithSuffix(".qweight") {
		mod, err := awqModule(prefix, group, zeroPoint, ts)
		if err != nil {
			return nil, err
		}
		m.Modules = append(m.Modules, mod)
	}
	return m, nil
}

func awqModule(prefix string, group int, zeroPoint bool, ts *tensorSet) (Module, error) {
	mod := Module{Prefix: prefix, Tensors: map[Role]safetensors.TensorInfo{}}
	qweight := ts.byName[prefix+".qweight"]
	if err := wantDType(qweight, "AWQ qweight", safetensors.I32); err != nil {
		return mod, err
	}
	in, words, err := dims2(qweight)
	if err != nil {
		return mod, err
	}
	mod.In, mod.Out = in, 8*words
	g := group
	if g == -1 {
		g = in
	}
	if in > 0 && g > 0 && in%g != 0 {
		return mod, invalidf(prefix, "group_size", "group size %d does not divide in = %d", g, in)
	}
	groups := 0
	if g > 0 {
		groups = in / g
	}
	mod.Scheme = Scheme{Format: FormatAWQ, Type: TypeInt, Bits: 4, CodeDType: safetensors.I32, Strategy: StrategyGroup, GroupSize: g, Symmetric: !zeroPoint}
	mod.Tensors[RoleCodes] = qweight
	scales, ok := ts.get(prefix + ".scales")
	if !ok {
		return mod, invalidf(prefix+".scales", "", "missing: AWQ module %s has a qweight but no scales", prefix)
	}
	mod.Tensors[RoleScale] = scales
	if err := wantDType(scales, "AWQ scales", scaleDTypes...); err != nil {
		return mod, err
	}
	if err := wantShape(scales, []int{groups, mod.Out}, fmt.Sprintf("[in/%d, out], K-major", g)); err != nil {
		return mod, err
	}
	if qzeros, ok := ts.get(prefix + ".qzeros"); ok {
		mod.Tensors[RoleZeroPoint] = qzeros
		if err := wantDType(qzeros, "AWQ qzeros", safetensors.I32); err != nil {
			return mod, err
		}
		if err := wantShape(qzeros, []int{groups, words}, fmt.Sprintf("[in/%d, out/8], K-major", g)); err != nil {
			return mod, err
		}
	} else if zeroPoint {
		return mod, invalidf(prefix+".qzeros", "", "missing: zero_point is true")
	}
	return mod, nil
}
