package quant

import (
	"fmt"
	"slices"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// Quantization (the inverse of Dequantize): what `heft quantize --scheme
// fp8-block|int8|w4a16 [--format compressed-tensors|fp8]` writes. The
// scheme lives here; the per-weight kernel is in quantize_kernel.go, the
// model-level plan in quantize_plan.go and the config.json writers in
// quantize_config.go.

// Quantize scheme names, as the CLI spells them.
const (
	// QuantFP8Block is FP8 E4M3 weights with one scale per 128×128 block
	// (llm-compressor's FP8_BLOCK preset, §5.6; DeepSeek/Qwen native FP8,
	// §6), input activations FP8 dynamic per group of 128.
	QuantFP8Block = "fp8-block"
	// QuantInt8 is INT8 weights with one symmetric scale per output row and
	// INT8 dynamic per-token input activations (the W8A8/INT8 preset,
	// compressed-tensors int-quantized).
	QuantInt8 = "int8"
	// QuantW4A16 is INT4 weights, one scale per row and 128 input columns,
	// activations unquantized (the W4A16 and W4A16_ASYM presets,
	// compressed-tensors pack-quantized).
	QuantW4A16 = "w4a16"
)

// Output formats of a quantize.
const (
	// OutputCT is compressed-tensors (quant_method "compressed-tensors",
	// §5), which vLLM loads natively. The default.
	OutputCT = "compressed-tensors"
	// OutputFP8 is native block FP8 (quant_method "fp8", §6):
	// `weight_scale_inv` next to an F8_E4M3 `weight`. Only for fp8-block.
	OutputFP8 = "fp8"
)

// Defaults of the scheme options.
const (
	DefaultGroupSize = 128 // w4a16
	DefaultBlockSize = 128 // fp8-block, both dimensions
)

// ctVersion is the compressed-tensors version QuantizedConfig writes: the
// release of the §5.1 example. Per-scheme "format" keys and list-valued
// block_structure need 0.11 or later (§5.8); no loader checks the string.
const ctVersion = "0.12.2"

// QuantizeScheme says how `heft quantize` quantizes a model. The zero
// values of the options mean their defaults, so QuantizeScheme{Name:
// QuantW4A16} is W4A16 symmetric group 128 in compressed-tensors. It is
// comparable, and its JSON encoding (exported fields) is a complete
// description of the arithmetic, so a recipe can store it.
type QuantizeScheme struct {
	// Name is QuantFP8Block, QuantInt8 or QuantW4A16.
	Name string
	// Format is OutputCT ("" means OutputCT) or OutputFP8 (fp8-block only).
	Format string
	// GroupSize (w4a16) is the number of input columns per scale: 0 means
	// DefaultGroupSize, −1 one scale per output row (channel strategy).
	GroupSize int
	// BlockSize (fp8-block) is [rows, cols] per scale; zero means
	// [DefaultBlockSize, DefaultBlockSize].
	BlockSize [2]int
	// Asymmetric (w4a16 only) stores a zero point per scale
	// (W4A16_ASYM): `weight_zero_point`, packed along out.
	Asymmetric bool
	// ScaleDType is the dtype of the stored scales and of the scale
	// arithmetic: BF16, F16 or F32. Empty means the default: for
	// compressed-tensors the weight's own dtype, as compressed-tensors does
	// without a scale_dtype (§5.3: BF16 for a BF16 model); for native fp8
	// BF16, as in Qwen's official FP8 releases (§6; DeepSeek uses F32).
	ScaleDType safetensors.DType
	// SkipVLLMChecks turns off PlanQuantize's checks of what vLLM's
	// kernels need beyond the format itself (Marlin's out % 64, in % 128,
	// in % group and group sizes for w4a16; FP8 block_n for the fused shards
	// q, k and gate). Use it for test models too small for those kernels.
	// It does not change any byte of the output.
	SkipVLLMChecks bool
}

// ParseQuantizeScheme returns the scheme the CLI names, with default
// options: scheme is "fp8-block", "int8" or "w4a16"; format is
// "compressed-tensors" (or "") or "fp8". Names are case-insensitive.
func ParseQuantizeScheme(scheme, format string) (QuantizeScheme, error) {
	qs := QuantizeScheme{Name: strings.ToLower(strings.TrimSpace(scheme)), Format: strings.ToLower(strings.TrimSpace(format))}
	switch qs.Name {
	case QuantFP8Block, QuantInt8, QuantW4A16:
	default:
		return QuantizeScheme{}, unsupportedf("", "scheme", "%q, want %s, %s or %s", scheme, QuantFP8Block, QuantInt8, QuantW4A16)
	}
	qs = qs.normalized()
	if err := qs.Validate(); err != nil {
		return QuantizeScheme{}, err
	}
	return qs, nil
}

// normalized fills in the defaults, so that equal schemes compare equal.
func (qs QuantizeScheme) normalized() QuantizeScheme {
	if qs.Format == "" {
		qs.Format = OutputCT
	}
	switch qs.Name {
	case QuantW4A16:
		if qs.GroupSize == 0 {
			qs.GroupSize = DefaultGroupSize
		}
	case QuantFP8Block:
		if qs.BlockSize == [2]int{} {
			qs.BlockSize = [2]int{DefaultBlockSize, DefaultBlockSize}
		}
	}
	return qs
}

// Validate reports whether the combination of options is one this package
// writes. It checks the scheme alone; PlanQuantize checks each weight.
func (qs QuantizeScheme) Validate() error {
	qs = qs.normalized()
	switch qs.Format {
	case OutputCT:
	case OutputFP8:
		if qs.Name != QuantFP8Block {
			return unsupportedf("", "format", "native %q only stores block FP8, not %s", OutputFP8, qs.Name)
		}
	default:
		return unsupportedf("", "format", "%q, want %q or %q", qs.Format, OutputCT, OutputFP8)
	}
	switch qs.ScaleDType {
	case "", safetensors.BF16, safetensors.F16, safetensors.F32:
	default:
		return unsupportedf("", "scale_dtype", "%s, want BF16, F16 or F32", qs.ScaleDType)
	}
	switch qs.Name {
	case QuantFP8Block:
		if qs.BlockSize[0] <= 0 || qs.BlockSize[1] <= 0 || qs.BlockSize[0] > maxConfigInt || qs.BlockSize[1] > maxConfigInt {
			return invalidf("", "block_size", "%v, want two positive sizes", qs.BlockSize)
		}
		if qs.GroupSize != 0 {
			return invalidf("", "group_size", "%s has blocks, not groups", qs.Name)
		}
		if qs.Asymmetric {
			return unsupportedf("", "symmetric", "FP8 weights are symmetric (no zero point)")
		}
	case QuantInt8:
		if qs.GroupSize != 0 || qs.BlockSize != [2]int{} {
			return invalidf("", "group_size", "%s has one scale per output row", qs.Name)
		}
		if qs.Asymmetric {
			// vLLM's W8A8 int8 schemes require symmetric weights.
			return unsupportedf("", "symmetric", "%s weights must be symmetric for vLLM's W8A8 kernels", qs.Name)
		}
	case QuantW4A16:
		if qs.BlockSize != [2]int{} {
			return invalidf("", "block_size", "%s has groups, not blocks", qs.Name)
		}
		if qs.GroupSize < -1 || qs.GroupSize > maxConfigInt {
			return invalidf("", "group_size", "%d, want a positive size or -1 (one scale per row)", qs.GroupSize)
		}
	default:
		return unsupportedf("", "scheme", "%q, want %s, %s or %s", qs.Name, QuantFP8Block, QuantInt8, QuantW4A16)
	}
	return nil
}

// String describes the scheme, e.g. "w4a16 group 128 asymmetric
// (compressed-tensors)" or "fp8-block 128x128 (native fp8, F32 scales)".
func (qs QuantizeScheme) String() string {
	qs = qs.normalized()
	var b strings.Builder
	b.WriteString(qs.Name)
	switch qs.Name {
	case QuantFP8Block:
		fmt.Fprintf(&b, " %dx%d", qs.BlockSize[0], qs.BlockSize[1])
	case QuantW4A16:
		if qs.GroupSize == -1 {
			b.WriteString(" per-channel")
		} else {
			fmt.Fprintf(&b, " group %d", qs.GroupSize)
		}
	}
	if qs.Asymmetric {
		b.WriteString(" asymmetric")
	}
	if qs.Format == OutputFP8 {
		b.WriteString(" (native fp8")
	} else {
		b.WriteString(" (compressed-tensors")
	}
	if qs.ScaleDType != "" {
		fmt.Fprintf(&b, ", %s scales", qs.ScaleDType)
	}
	b.WriteString(")")
	return b.String()
}

// Scheme is the Scheme Detect reports for every module quantized with qs,
// input activations included.
func (qs QuantizeScheme) Scheme() Scheme {
	qs = qs.normalized()
	switch qs.Name {
	case QuantFP8Block:
		s := Scheme{
			Format: FormatCTFloat, Type: TypeFloat, Bits: 8, CodeDType: safetensors.F8E4M3,
			Strategy: StrategyBlock, BlockSize: qs.BlockSize, Symmetric: true,
			Input: Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyGroup, GroupSize: qs.BlockSize[1], Dynamic: true, Symmetric: true},
		}
		if qs.Format == OutputFP8 {
			s.Format = FormatFP8
		}
		return s
	case QuantInt8:
		return Scheme{
			Format: FormatCTInt, Type: TypeInt, Bits: 8, CodeDType: safetensors.I8,
			Strategy: StrategyChannel, Symmetric: true,
			Input: Activations{Type: TypeInt, Bits: 8, Strategy: "token", Dynamic: true, Symmetric: true},
		}
	default:
		s := Scheme{
			Format: FormatCTPacked, Type: TypeInt, Bits: 4, CodeDType: safetensors.I32,
			Strategy: StrategyGroup, GroupSize: qs.GroupSize, Symmetric: !qs.Asymmetric,
		}
		if qs.GroupSize == -1 {
			s.Strategy, s.GroupSize = StrategyChannel, 0
		}
		return s
	}
}

// ScaleDTypeFor returns the dtype of the scales qs stores for a weight of
// dtype weight (see QuantizeScheme.ScaleDType).
func (qs QuantizeScheme) ScaleDTypeFor(weight safetensors.DType) safetensors.DType {
	switch {
	case qs.ScaleDType != "":
		return qs.ScaleDType
	case qs.normalized().Format == OutputFP8:
		return safetensors.BF16
	}
	return weight
}

// QuantizedTensor is one output tensor of a quantized module.
type QuantizedTensor struct {
	Name  string // e.g. "model.layers.0.mlp.up_proj.weight_scale"
	Role  Role
	DType safetensors.DType
	Shape []uint64
	Data  []byte // little-endian, C order
}

// outSpec is one output tensor of a module, without data.
type outSpec struct {
	suffix string // after the module prefix and its dot: "weight_scale"
	role   Role
	dtype  safetensors.DType
	shape  []uint64
}

func (o outSpec) bytes() int {
	n, _ := o.dtype.ByteLen(o.shape) // bounded by checkWeight
	return int(n)
}

// outputs lists the tensors qs makes from a weight [out, in] of dtype wd,
// in name order (§5.3, §6). The caller has checked the weight.
func (qs QuantizeScheme) outputs(wd safetensors.DType, out, in int) []outSpec {
	qs = qs.normalized()
	sd := qs.ScaleDTypeFor(wd)
	o, i := uint64(out), uint64(in)
	var specs []outSpec
	switch qs.Name {
	case QuantFP8Block:
		bh, bw := qs.BlockSize[0], qs.BlockSize[1]
		scaleName := "weight_scale"
		if qs.Format == OutputFP8 {
			scaleName = "weight_scale_inv"
		}
		specs = []outSpec{
			{"weight", RoleCodes, safetensors.F8E4M3, []uint64{o, i}},
			{scaleName, RoleScale, sd, []uint64{uint64(cdiv(out, bh)), uint64(cdiv(in, bw))}},
		}
	case QuantInt8:
		specs = []outSpec{
			{"weight", RoleCodes, safetensors.I8, []uint64{o, i}},
			{"weight_scale", RoleScale, sd, []uint64{o, 1}},
		}
	case QuantW4A16:
		groups := 1
		if qs.GroupSize > 0 {
			groups = cdiv(in, qs.GroupSize)
		}
		specs = []outSpec{
			{"weight_packed", RoleCodes, safetensors.I32, []uint64{o, uint64(packedWords(in, 4, Dense))}},
			{"weight_scale", RoleScale, sd, []uint64{o, uint64(groups)}},
			{"weight_shape", RoleShape, safetensors.I64, []uint64{2}},
		}
		if qs.Asymmetric {
			specs = append(specs, outSpec{"weight_zero_point", RoleZeroPoint, safetensors.I32, []uint64{uint64(packedWords(out, 4, Dense)), uint64(groups)}})
		}
	}
	slices.SortFunc(specs, func(a, b outSpec) int { return strings.Compare(a.suffix, b.suffix) })
	return specs
}

// checkWeight validates one dense weight against qs: a 2-D BF16, F16 or
// F32 tensor named "<module>.weight", of a shape the format can store. It
// returns the module prefix and the shape. vLLM's own constraints are
// PlanQuantize's business.
func (qs QuantizeScheme) checkWeight(w safetensors.TensorInfo) (prefix string, out, in int, err error) {
	if err := qs.Validate(); err != nil {
		return "", 0, 0, err
	}
	qs = qs.normalized()
	prefix, ok := strings.CutSuffix(w.Name, ".weight")
	if !ok || prefix == "" {
		return "", 0, 0, invalidf(w.Name, "", "a quantized weight must be named <module>.weight")
	}
	switch w.DType {
	case safetensors.BF16, safetensors.F16, safetensors.F32:
	case safetensors.F8E4M3, safetensors.F8E5M2, safetensors.I8, safetensors.U8:
		return "", 0, 0, unsupportedf(w.Name, "dtype", "%s weight is already quantized; dequantize the model first", w.DType)
	default:
		return "", 0, 0, unsupportedf(w.Name, "dtype", "%s, want a BF16, F16 or F32 weight", w.DType)
	}
	if len(w.Shape) != 2 {
		return "", 0, 0, unsupportedf(w.Name, "shape", "%s, want a 2-D [out, in] weight%s", fmtShape(w.Shape), rank3Hint(w))
	}
	if w.Shape[0] == 0 || w.Shape[1] == 0 || w.Shape[0] > maxDim || w.Shape[1] > maxDim || w.Shape[0]*w.Shape[1] > maxElems {
		return "", 0, 0, invalidf(w.Name, "shape", "%s cannot be quantized (empty or implausibly large)", fmtShape(w.Shape))
	}
	out, in = int(w.Shape[0]), int(w.Shape[1])
	// compressed-tensors refuses to (de)quantize a group strategy whose
	// group size neither divides in nor exceeds it (§5.3).
	if qs.Name == QuantW4A16 && qs.GroupSize > 0 && in >= qs.GroupSize && in%qs.GroupSize != 0 {
		return "", 0, 0, invalidf(w.Name, "group_size", "group size %d does not divide in = %d", qs.GroupSize, in)
	}
	return prefix, out, in, nil
}
