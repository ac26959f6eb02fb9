package quant

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// Files Detect looks for in extraFiles, by base name.
const (
	// QuantoQMapFile marks an optimum-quanto model (§8).
	QuantoQMapFile = "quanto_qmap.json"
	// AWQ side configs vLLM also reads when config.json has no
	// quantization_config (§7).
	awqSideConfig      = "quant_config.json"
	quantizeSideConfig = "quantize_config.json"
)

// maxDim bounds every tensor dimension Detect accepts as part of a quantized
// module, and maxElems the element count of a weight: far beyond any real
// model, and small enough that index arithmetic in int cannot overflow.
const (
	maxDim   = 1 << 31
	maxElems = 1 << 40
)

// Detect works out how a checkpoint is quantized from its config.json (nil or
// empty when there is none), the tensors of all its safetensors files, and
// any side files by base name (quanto_qmap.json, quant_config.json,
// quantize_config.json). It reads no tensor data: shapes and dtypes are
// validated here, values by DequantModule.
//
// A model without quantization_config or side files is "not quantized"
// (Model.Method "") unless its tensor names say otherwise, which is an error.
func Detect(configJSON []byte, tensors []safetensors.TensorInfo, extraFiles map[string][]byte) (*Model, error) {
	ts, err := newTensorSet(tensors)
	if err != nil {
		return nil, err
	}
	cfg := jsonObject{}
	if !isNull(json.RawMessage(strings.TrimSpace(string(configJSON)))) {
		var ok bool
		if cfg, ok, err = parseObject(configJSON, "config.json"); err != nil {
			return nil, err
		} else if !ok {
			return nil, invalidf("", "config.json", "not a JSON object")
		}
		cfg.path = ""
	}
	qc, hasQC, err := cfg.object("quantization_config")
	if err != nil {
		return nil, err
	}
	var m *Model
	switch {
	case hasQC:
		method, ok, err := qc.str("quant_method")
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, invalidf("", qc.field("quant_method"), "missing")
		}
		switch strings.ToLower(method) {
		case "compressed-tensors":
			m, err = detectCT(qc, ts)
		case "fp8":
			m, err = detectFP8(qc, ts)
		case "awq":
			m, err = detectAWQ(qc, ts)
		default:
			return nil, unsupportedf("", qc.field("quant_method"), "%q is not a format this package reads (compressed-tensors, fp8, awq)", method)
		}
		if err != nil {
			return nil, err
		}
	case extraFiles[QuantoQMapFile] != nil:
		if m, err = detectQuanto(extraFiles[QuantoQMapFile], ts); err != nil {
			return nil, err
		}
	default:
		if m, err = detectSideConfig(extraFiles, ts); err != nil {
			return nil, err
		}
	}
	if err := finish(m, ts); err != nil {
		return nil, err
	}
	return m, nil
}

// detectSideConfig handles AutoAWQ's quant_config.json (and the same keys in
// quantize_config.json), which vLLM reads when config.json carries no
// quantization_config; with neither, the model is not quantized.
func detectSideConfig(extraFiles map[string][]byte, ts *tensorSet) (*Model, error) {
	for _, name := range []string{awqSideConfig, quantizeSideConfig} {
		raw, ok := extraFiles[name]
		if !ok {
			continue
		}
		o, ok, err := parseObject(raw, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		method, _, err := o.str("quant_method")
		if err != nil {
			return nil, err
		}
		switch {
		case strings.EqualFold(method, "awq") || method == "" && (o.has("w_bit") || o.has("q_group_size") || o.has("version")):
			return detectAWQ(o, ts)
		case method != "":
			return nil, unsupportedf("", o.field("quant_method"), "%q is not a format this package reads", method)
		case o.has("desc_act") || o.has("bits"):
			return nil, unsupportedf("", name, "looks like a GPTQ quantize_config (bits/desc_act), which this package does not read")
		}
	}
	return &Model{}, nil
}

// tensorSet indexes the tensor list by name and records which tensors a
// quantized module has claimed.
type tensorSet struct {
	byName  map[string]safetensors.TensorInfo
	names   []string // natural order
	claimed map[string]bool
}

func newTensorSet(tensors []safetensors.TensorInfo) (*tensorSet, error) {
	ts := &tensorSet{byName: make(map[string]safetensors.TensorInfo, len(tensors)), claimed: make(map[string]bool)}
	for _, t := range tensors {
		// Headers from the safetensors reader always pass; a hand-built
		// list may not, and a tensor without a byte size cannot be read.
		if _, err := t.DType.ByteLen(t.Shape); err != nil {
			return nil, invalidf(t.Name, "", "%v", err)
		}
		if _, dup := ts.byName[t.Name]; dup {
			return nil, invalidf(t.Name, "", "tensor appears twice (in two shards?)")
		}
		ts.byName[t.Name] = t
		ts.names = append(ts.names, t.Name)
	}
	slices.SortFunc(ts.names, naturalCompare)
	return ts, nil
}

func (ts *tensorSet) get(name string) (safetensors.TensorInfo, bool) {
	t, ok := ts.byName[name]
	return t, ok
}

// prefixesWithSuffix returns the module prefixes P for which a tensor P+suffix
// exists, in natural order.
func (ts *tensorSet) prefixesWithSuffix(suffixes ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range ts.names {
		for _, s := range suffixes {
			if p, ok := strings.CutSuffix(n, s); ok && p != "" && !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// claim records the module's tensors as taken, refusing a tensor that two
// modules claim.
func (ts *tensorSet) claim(m Module) error {
	for _, t := range m.Tensors {
		if ts.claimed[t.Name] {
			return invalidf(t.Name, "", "belongs to two quantized modules")
		}
		ts.claimed[t.Name] = true
	}
	return nil
}

// quantSuffixes end the names of tensors that only exist in quantized
// modules; one left over after detection means the config and the tensors
// disagree.
var quantSuffixes = []string{
	".weight_scale", ".weight_scale_inv", ".weight_packed", ".weight_zero_point", ".weight_g_idx",
	".weight_shape", ".weight_global_scale", ".qweight", ".qzeros", ".weight._data", ".weight._scale", ".weight._shift",
}

// auxSuffixes end the names of quantization parameters that may exist
// outside a quantized module: kv-cache scales and activation scales.
var auxSuffixes = []string{
	".k_scale", ".v_scale", ".q_scale", ".prob_scale", ".kv_scale", ".k_zero_point", ".v_zero_point",
	".input_scale", ".input_zero_point", ".output_scale", ".output_zero_point",
}

func hasAnySuffix(name string, suffixes []string) (string, bool) {
	for _, s := range suffixes {
		if strings.HasSuffix(name, s) {
			return s, true
		}
	}
	return "", false
}

// finish sorts the modules, splits the remaining tensors into Dense and Aux,
// counts Linear weights and adds warnings.
func finish(m *Model, ts *tensorSet) error {
	slices.SortFunc(m.Modules, func(a, b Module) int { return naturalCompare(a.Prefix, b.Prefix) })
	for _, mod := range m.Modules {
		if err := ts.claim(mod); err != nil {
			return err
		}
	}
	// Leftover quantization tensors first: they explain a leftover F8 or
	// I8 weight better than the weight does.
	for _, name := range ts.names {
		if ts.claimed[name] {
			continue
		}
		if s, ok := hasAnySuffix(name, quantSuffixes); ok {
			if m.Method == "" {
				return invalidf(name, "", "looks like part of a quantized module (%s), but config.json has no quantization_config and there is no %s", s, QuantoQMapFile)
			}
			return invalidf(name, "", "looks like part of a quantized module (%s), but no %s module of this model claims it", s, m.Method)
		}
	}
	m.Dense, m.Aux = nil, nil
	linear := 0
	for _, name := range ts.names {
		if ts.claimed[name] {
			continue
		}
		t := ts.byName[name]
		if _, ok := hasAnySuffix(name, auxSuffixes); ok {
			m.Aux = append(m.Aux, name)
			continue
		}
		if m.Method != "" && strings.HasSuffix(name, ".weight") && isQuantCodeDType(t.DType) && len(t.Shape) == 2 {
			return invalidf(name, "dtype", "%s weight with no scale: not part of any quantized module of this %s model", t.DType, m.Method)
		}
		m.Dense = append(m.Dense, name)
		if isLinearCandidate(t) {
			linear++
		}
	}
	m.LinearWeights = len(m.Modules) + linear
	m.Warnings = append(m.Warnings, fusedShardWarnings(m, ts)...)
	return nil
}

func isQuantCodeDType(d safetensors.DType) bool {
	switch d {
	case safetensors.F8E4M3, safetensors.F8E5M2, safetensors.I8:
		return true
	}
	return false
}

// isLinearCandidate reports whether a dense tensor is the weight of a Linear
// layer, judged by name and shape: a 2-D float ".weight" that is not a norm
// or an embedding (which are not Linear, §6 "Unquantized modules").
func isLinearCandidate(t safetensors.TensorInfo) bool {
	module, ok := strings.CutSuffix(t.Name, ".weight")
	if !ok || len(t.Shape) != 2 {
		return false
	}
	switch t.DType {
	case safetensors.BF16, safetensors.F16, safetensors.F32:
	default:
		return false
	}
	return isLinearModuleName(module)
}

// isLinearModuleName reports whether a module whose ".weight" is 2-D is a
// Linear layer by its name: not a norm (last component ending in "norm")
// and not an embedding (a name containing "embed").
func isLinearModuleName(module string) bool {
	last := strings.ToLower(module[strings.LastIndexByte(module, '.')+1:])
	return !strings.HasSuffix(last, "norm") && !strings.Contains(strings.ToLower(module), "embed")
}

// fusedGroups are the projections vLLM fuses into one layer (§5.7).
var fusedGroups = [][]string{{"q_proj", "k_proj", "v_proj"}, {"gate_proj", "up_proj"}}

// fusedShardWarnings reports fused layers whose shards differ in scheme or
// in being quantized at all, which vLLM refuses to load (§5.7).
func fusedShardWarnings(m *Model, ts *tensorSet) []string {
	schemes := make(map[string]string, len(m.Modules))
	for _, mod := range m.Modules {
		schemes[mod.Prefix] = mod.Scheme.Format + " " + mod.Scheme.String()
	}
	done := map[string]bool{}
	var out []string
	for _, mod := range m.Modules {
		dot := strings.LastIndexByte(mod.Prefix, '.')
		parent, last := mod.Prefix[:dot+1], mod.Prefix[dot+1:]
		for _, group := range fusedGroups {
			if !slices.Contains(group, last) || done[parent+group[0]] {
				continue
			}
			done[parent+group[0]] = true
			var states []string
			differ := false
			for _, shard := range group {
				state, ok := schemes[parent+shard]
				if !ok {
					if _, dense := ts.get(parent + shard + ".weight"); !dense {
						continue // shard absent (e.g. a fused checkpoint)
					}
					state = "not quantized"
				}
				if len(states) > 0 && !strings.HasSuffix(states[0], ": "+state) {
					differ = true
				}
				states = append(states, shard+": "+state)
			}
			if differ {
				out = append(out, fmt.Sprintf("%s{%s} are fused by vLLM but differ (%s); vLLM requires one scheme for all shards", parent, strings.Join(group, ","), strings.Join(states, "; ")))
			}
		}
	}
	return out
}

// naturalCompare orders names with digit runs compared as numbers, so
// layers.2 sorts before layers.10.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := cmp.Compare(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			if c := cmp.Compare(da, db); c != 0 { // "01" after "1", deterministically
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digitRun(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// Shape helpers shared by the format detectors.

// dims2 returns a 2-D tensor's shape as ints, bounded by maxDim.
func dims2(t safetensors.TensorInfo) (int, int, error) {
	if len(t.Shape) != 2 {
		return 0, 0, invalidf(t.Name, "shape", "%s, want a 2-D tensor%s", fmtShape(t.Shape), rank3Hint(t))
	}
	if t.Shape[0] > maxDim || t.Shape[1] > maxDim || t.Shape[0]*t.Shape[1] > maxElems {
		return 0, 0, invalidf(t.Name, "shape", "%s is implausibly large", fmtShape(t.Shape))
	}
	return int(t.Shape[0]), int(t.Shape[1]), nil
}

func rank3Hint(t safetensors.TensorInfo) string {
	if len(t.Shape) == 3 {
		return " (fused 3-D expert tensors are not supported; split them per expert)"
	}
	return ""
}

// numel returns the element count of a tensor whose dims are already known
// to be bounded, or -1 when it is not.
func numel(t safetensors.TensorInfo) int {
	n := uint64(1)
	for _, d := range t.Shape {
		if d > maxDim {
			return -1
		}
		n *= d
		if n > maxElems {
			return -1
		}
	}
	return int(n)
}

func fmtShape(s []uint64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// wantShape checks that t has exactly the given shape.
func wantShape(t safetensors.TensorInfo, want []int, why string) error {
	ok := len(t.Shape) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = want[i] >= 0 && t.Shape[i] == uint64(want[i])
	}
	if !ok {
		w := make([]uint64, len(want))
		for i, d := range want {
			w[i] = uint64(max(d, 0))
		}
		return invalidf(t.Name, "shape", "%s, want %s (%s)", fmtShape(t.Shape), fmtShape(w), why)
	}
	return nil
}

// wantScalarShape accepts the one-element shapes a per-tensor scale is
// written with: [], [1] or [1,1].
func wantScalarShape(t safetensors.TensorInfo, why string) error {
	if numel(t) == 1 && len(t.Shape) <= 2 {
		return nil
	}
	return invalidf(t.Name, "shape", "%s, want [1] (%s)", fmtShape(t.Shape), why)
}

func wantDType(t safetensors.TensorInfo, why string, allowed ...safetensors.DType) error {
	if slices.Contains(allowed, t.DType) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, d := range allowed {
		names[i] = string(d)
	}
	return invalidf(t.Name, "dtype", "%s, want %s (%s)", t.DType, strings.Join(names, " or "), why)
}

var scaleDTypes = []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32}

// zeroPointDTypes are the dtypes an unpacked zero point may have: integer
// types, or a float type holding integers (decoded and checked at dequant).
var zeroPointDTypes = []safetensors.DType{
	safetensors.I8, safetensors.U8, safetensors.I16, safetensors.I32, safetensors.I64,
	safetensors.BF16, safetensors.F16, safetensors.F32,
}

func cdiv(a, b int) int { return (a + b - 1) / b }

// optional adds P+suffix under role when it exists.
func (ts *tensorSet) optional(m *Module, role Role, name string) {
	if t, ok := ts.get(name); ok {
		m.Tensors[role] = t
	}
}
