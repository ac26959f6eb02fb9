package quant

import (
	"slices"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// optimum-quanto (quanto_qmap.json, §8): 8-bit weights only.

// quantoCodeDTypes maps the supported weight qtypes to their storage dtype.
var quantoCodeDTypes = map[string]struct {
	dtype safetensors.DType
	typ   string
}{
	"qint8":          {safetensors.I8, TypeInt},
	"qfloat8":        {safetensors.F8E4M3, TypeFloat}, // quanto's alias of qfloat8_e4m3fn
	"qfloat8_e4m3fn": {safetensors.F8E4M3, TypeFloat},
	"qfloat8_e5m2":   {safetensors.F8E5M2, TypeFloat},
}

func detectQuanto(qmapJSON []byte, ts *tensorSet) (*Model, error) {
	m := &Model{Method: "quanto", Format: FormatQuanto}
	qmap, ok, err := parseObject(qmapJSON, QuantoQMapFile)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, invalidf("", QuantoQMapFile, "not a JSON object")
	}
	prefixes := make([]string, 0, len(qmap.m))
	for p := range qmap.m {
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, naturalCompare)
	for _, prefix := range prefixes {
		entry, ok, err := qmap.object(prefix)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		qtype, _, err := entry.str("weights")
		if err != nil {
			return nil, err
		}
		if qtype == "" || qtype == "none" {
			continue
		}
		ct, ok := quantoCodeDTypes[qtype]
		if !ok {
			return nil, unsupportedf(prefix, entry.field("weights"), "quanto weight type %q is not supported (qint8, qfloat8_e4m3fn, qfloat8_e5m2)", qtype)
		}
		mod := Module{Prefix: prefix, Tensors: map[Role]safetensors.TensorInfo{}}
		mod.Scheme = Scheme{Format: FormatQuanto, Type: ct.typ, Bits: 8, CodeDType: ct.dtype, Strategy: StrategyChannel, Symmetric: true}
		if act, _, err := entry.str("activations"); err != nil {
			return nil, err
		} else if act != "" && act != "none" {
			typ := TypeInt
			if strings.HasPrefix(act, "qfloat") {
				typ = TypeFloat
			}
			mod.Scheme.Input = Activations{Type: typ, Bits: 8, Strategy: StrategyTensor, Symmetric: true}
		}
		data, ok := ts.get(prefix + ".weight._data")
		if !ok {
			return nil, invalidf(prefix+".weight._data", "", "missing: %s lists %s as %s", QuantoQMapFile, prefix, qtype)
		}
		scale, ok := ts.get(prefix + ".weight._scale")
		if !ok {
			return nil, invalidf(prefix+".weight._scale", "", "missing: %s lists %s as %s", QuantoQMapFile, prefix, qtype)
		}
		mod.Tensors[RoleCodes], mod.Tensors[RoleScale] = data, scale
		ts.optional(&mod, RoleInputScale, prefix+".input_scale")
		ts.optional(&mod, RoleOutputScale, prefix+".output_scale")
		if err := wantDType(data, qtype, ct.dtype); err != nil {
			return nil, err
		}
		if mod.Out, mod.In, err = dims2(data); err != nil {
			return nil, err
		}
		if err := wantDType(scale, "scale", scaleDTypes...); err != nil {
			return nil, err
		}
		// Per-row scales are [out, 1]; quanto stores a scalar when the row
		// axis has size 1, and [out] is accepted as the same thing.
		switch {
		case numel(scale) == 1 && len(scale.Shape) <= 2:
			mod.Scheme.Strategy = StrategyTensor
		case len(scale.Shape) == 1:
			err = wantShape(scale, []int{mod.Out}, "per-row scale")
		default:
			err = wantShape(scale, []int{mod.Out, 1}, "per-row scale [out, 1]")
		}
		if err != nil {
			return nil, err
		}
		m.Modules = append(m.Modules, mod)
	}
	return m, nil
}
