package quant

import (
	"fmt"
	"slices"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// Scheme.Format values: the quantization method and, for compressed-tensors,
// the on-disk format of the module (which decides its tensors, §5.3).
const (
	FormatCTFloat  = "compressed-tensors/float-quantized"
	FormatCTPacked = "compressed-tensors/pack-quantized"
	FormatCTInt    = "compressed-tensors/int-quantized"
	FormatCTNaive  = "compressed-tensors/naive-quantized"
	FormatFP8      = "fp8"      // native block FP8 (quant_method "fp8", §6)
	FormatAWQ      = "awq-gemm" // AutoAWQ GEMM (§7)
	FormatQuanto   = "quanto"   // optimum-quanto (§8)
)

// Scheme.Strategy values: how scales are shared (§5.3 scale shapes).
const (
	StrategyTensor  = "tensor"  // one scale
	StrategyChannel = "channel" // one per output row
	StrategyGroup   = "group"   // one per row and GroupSize input columns
	StrategyBlock   = "block"   // one per BlockSize[0]×BlockSize[1] tile
)

// Scheme.Type values.
const (
	TypeInt   = "int"
	TypeFloat = "float"
)

// Scheme is how one module's weight is quantized. It is comparable, so
// modules can be grouped by scheme.
type Scheme struct {
	Format string // one of the Format* constants
	Type   string // TypeInt or TypeFloat
	Bits   int    // bits per code: 8 for FP8 and INT8, 4 for W4A16 and AWQ
	// CodeDType is the storage dtype of the codes tensor: F8_E4M3 or F8_E5M2
	// (float), I8 (int-, naive-quantized, quanto), I32 (packed: CT
	// weight_packed, AWQ qweight).
	CodeDType safetensors.DType
	Strategy  string // one of the Strategy* constants
	GroupSize int    // group strategy: input columns per scale
	BlockSize [2]int // block strategy: [rows, cols] per scale
	Symmetric bool   // no zero point
	// ActOrder is compressed-tensors' actorder: "" (none), "group" (a
	// weight_g_idx tensor maps columns to groups) or "weight" (no g_idx).
	ActOrder string
	// Input is the input-activation quantization the config declares; it
	// does not affect the weight's bytes. Zero when weights only.
	Input Activations
}

// Activations describes input-activation quantization (Bits 0: none).
type Activations struct {
	Type      string // TypeInt or TypeFloat
	Bits      int
	Strategy  string // tensor, channel, group, block, token, …
	GroupSize int
	Dynamic   bool // scales computed at run time (no input_scale tensor)
	Symmetric bool
}

// String is a short human description such as "FP8 block 128x128" or
// "INT4 group 128 asymmetric".
func (s Scheme) String() string {
	var b strings.Builder
	switch {
	case s.Type == TypeFloat && s.CodeDType == safetensors.F8E5M2:
		fmt.Fprintf(&b, "FP%d E5M2", s.Bits)
	case s.Type == TypeFloat:
		fmt.Fprintf(&b, "FP%d", s.Bits)
	default:
		fmt.Fprintf(&b, "INT%d", s.Bits)
	}
	switch s.Strategy {
	case StrategyTensor:
		b.WriteString(" per-tensor")
	case StrategyChannel:
		b.WriteString(" per-channel")
	case StrategyGroup:
		fmt.Fprintf(&b, " group %d", s.GroupSize)
	case StrategyBlock:
		fmt.Fprintf(&b, " block %dx%d", s.BlockSize[0], s.BlockSize[1])
	}
	if s.Type == TypeInt {
		if s.Symmetric {
			b.WriteString(" symmetric")
		} else {
			b.WriteString(" asymmetric")
		}
	}
	switch s.ActOrder {
	case "group":
		b.WriteString(" act-order")
	case "weight":
		b.WriteString(" act-order (weight)")
	}
	return b.String()
}

// Role names what a tensor of a quantized module is for, whatever its file
// name (weight_scale, weight_scale_inv, scales and weight._scale are all
// RoleScale).
type Role string

// The roles.
const (
	// RoleCodes holds the quantized codes: `weight` (F8/I8), `weight_packed`
	// or `qweight` (I32), `weight._data` (quanto).
	RoleCodes Role = "codes"
	// RoleScale is the multiplier grid: `weight_scale`, `weight_scale_inv`,
	// `scales`, `weight._scale`.
	RoleScale Role = "scale"
	// RoleZeroPoint is `weight_zero_point` (packed along out for
	// pack-quantized group/channel) or AWQ `qzeros`.
	RoleZeroPoint Role = "zero_point"
	// RoleShape is pack-quantized `weight_shape`, I64 [out, in].
	RoleShape Role = "shape"
	// RoleGIdx is `weight_g_idx`, I32 [in]: the group of each input column.
	RoleGIdx Role = "g_idx"
	// Activation-side tensors; they do not take part in dequantization.
	RoleInputScale     Role = "input_scale"
	RoleInputZeroPoint Role = "input_zero_point"
	RoleOutputScale    Role = "output_scale"
)

// dequantRoles are the roles DequantModule reads.
var dequantRoles = []Role{RoleCodes, RoleScale, RoleZeroPoint, RoleShape, RoleGIdx}

// Module is one quantized Linear weight.
type Module struct {
	// Prefix is the module name, e.g. "model.layers.0.self_attn.q_proj";
	// the dequantized weight is called Prefix+".weight" ([Module.WeightName]).
	Prefix string
	Scheme Scheme
	// Tensors maps each role the module has to its tensor.
	Tensors map[Role]safetensors.TensorInfo
	// Out and In are the logical weight shape [out, in]. For
	// pack-quantized, In is 0 when only the weight_shape tensor's data can
	// tell it; [Module.Dims] resolves it.
	Out, In int
}

// WeightName is the name of the dense weight the module stands for.
func (m Module) WeightName() string { return m.Prefix + ".weight" }

// TensorNames returns the names of the module's tensors, sorted.
func (m Module) TensorNames() []string {
	names := make([]string, 0, len(m.Tensors))
	for _, t := range m.Tensors {
		names = append(names, t.Name)
	}
	slices.Sort(names)
	return names
}

// Model is what Detect found.
type Model struct {
	// Method is config.json's quant_method ("compressed-tensors", "fp8",
	// "awq"), "quanto" for a quanto_qmap.json model, or "" for a model that
	// is not quantized.
	Method string
	// Format is compressed-tensors' top-level format ("float-quantized",
	// "mixed-precision", …); for the other methods the Scheme format.
	Format string
	// Modules are the quantized modules in natural name order (layer 2
	// before layer 10).
	Modules []Module
	// Dense lists every other tensor (norms, embeddings, ignored modules,
	// biases), except Aux, in natural name order.
	Dense []string
	// Aux lists tensors that only carry quantization parameters outside any
	// quantized module (kv-cache k_scale/v_scale, activation scales of
	// unquantized modules): a dense export drops them.
	Aux []string
	// Ignore is the config's list of modules left unquantized (ignore,
	// modules_to_not_convert, ignored_layers), as written.
	Ignore []string
	// LinearWeights counts the Linear weights: the quantized modules plus
	// the dense 2-D ".weight" tensors that are not norms or embeddings.
	LinearWeights int
	// Warnings are oddities that do not stop dequantization but may stop a
	// consumer (e.g. vLLM's rule that fused q/k/v shards share one scheme).
	Warnings []string
}

// Describe summarises the model in one line, e.g.
// "compressed-tensors FP8 block 128x128 (float-quantized), 196 of 197 Linear
// weights quantized".
func (m *Model) Describe() string {
	if len(m.Modules) == 0 {
		return fmt.Sprintf("not quantized, %d Linear weights", m.LinearWeights)
	}
	// Distinct schemes in order of first appearance, with counts.
	type kind struct {
		s          Scheme
		n          int
		scaleTypes []string
	}
	var kinds []*kind
	for _, mod := range m.Modules {
		i := slices.IndexFunc(kinds, func(k *kind) bool { return k.s == mod.Scheme })
		if i < 0 {
			kinds = append(kinds, &kind{s: mod.Scheme})
			i = len(kinds) - 1
		}
		kinds[i].n++
		if d := string(mod.Tensors[RoleScale].DType); !slices.Contains(kinds[i].scaleTypes, d) {
			kinds[i].scaleTypes = append(kinds[i].scaleTypes, d)
		}
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		var p string
		switch k.s.Format {
		case FormatFP8:
			slices.Sort(k.scaleTypes)
			name := "weight_scale_inv"
			if k.s.Strategy != StrategyBlock {
				name = "weight_scale"
			}
			p = fmt.Sprintf("%s (quant_method fp8, %s %s)", k.s, strings.Join(k.scaleTypes, "/"), name)
		case FormatAWQ, FormatQuanto:
			p = k.s.String()
		default:
			p = fmt.Sprintf("%s (%s)", k.s, strings.TrimPrefix(k.s.Format, "compressed-tensors/"))
		}
		if len(kinds) > 1 {
			p += fmt.Sprintf(" ×%d", k.n)
		}
		parts[i] = p
	}
	var head string
	switch m.Method {
	case "compressed-tensors":
		head = "compressed-tensors "
		if len(kinds) > 1 {
			head += m.Format + ": "
		}
	case "fp8":
		head = "native "
	case "awq":
		head = "AutoAWQ GEMM "
	case "quanto":
		head = "optimum-quanto "
	}
	return fmt.Sprintf("%s%s, %d of %d Linear weights quantized", head, strings.Join(parts, ", "), len(m.Modules), m.LinearWeights)
}
