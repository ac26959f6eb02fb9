// Package recipe evaluates the deterministic derivations heft can store instead of
// their output: a recipe names an op, its parameters and its input tensors, and Eval
// recomputes the output bytes. The store keeps the output's hash beside the recipe
// and checks every evaluation against it, so a recipe is only as good as Eval is
// deterministic: every op here gives the same bytes on every machine, whatever the
// number of cores (the kernels in codec/quant split rows, never reductions).
//
// Ops and their parameters:
//
//   - "dequant": one quantized module → its dense weight. Params: "scheme" (the
//     JSON of a quant.Scheme), "roles" (comma-separated quant.Role of each input, in
//     input order), "out" and "in" (the weight's logical shape), "dtype" (the output
//     dtype: BF16, F16 or F32). Bit-exact as codec/quant defines it.
//   - "quantize": one dense weight → one output tensor of its quantization. Params:
//     "scheme" (the JSON of a quant.QuantizeScheme) and "role" (which output:
//     codes, scale, zero_point or shape). Bit-exact as codec/quant defines it.
package recipe

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// Op names.
const (
	OpDequant  = "dequant"
	OpQuantize = "quantize"
)

// ErrUnknownOp is returned for an op this version of heft cannot evaluate.
var ErrUnknownOp = errors.New("recipe: unknown op")

// Input is one input tensor of a recipe.
type Input struct {
	DType safetensors.DType
	Shape []uint64
	Data  []byte
}

// Kernels computes the numerical core of the ops, so that a recipe can be
// evaluated on an accelerator. Contract: Dequantize writes into dst exactly the
// bytes quant.DequantizeInto(dst, mod, tensors, dtype) writes and returns the
// same errors (an implementation runs codec/quant for whatever it does not
// compute itself); it is safe for concurrent use and does not modify its
// inputs. Only a bit-identical implementation keeps recipes verifiable: the
// store checks every later evaluation (on the CPU) against the output hash
// recorded from this one.
type Kernels interface {
	Dequantize(dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error
}

// CPUKernels are codec/quant's own kernels, the reference.
type CPUKernels struct{}

// Dequantize runs quant.DequantizeInto.
func (CPUKernels) Dequantize(dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error {
	return quant.DequantizeInto(dst, mod, tensors, dtype)
}

// Eval computes a recipe's output into dst, which must have exactly the output's
// size, and returns it. Inputs are not modified.
func Eval(op string, params map[string]string, inputs []Input, dst []byte) ([]byte, error) {
	return EvalWith(CPUKernels{}, op, params, inputs, dst)
}

// EvalWith is Eval with the given kernels (nil: CPUKernels) doing the
// numerical work of the ops they implement.
func EvalWith(k Kernels, op string, params map[string]string, inputs []Input, dst []byte) ([]byte, error) {
	if k == nil {
		k = CPUKernels{}
	}
	switch op {
	case OpDequant:
		return evalDequant(k, params, inputs, dst)
	case OpQuantize:
		return evalQuantize(params, inputs, dst)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownOp, op)
}

// DequantParams describes the dequantization of mod, whose tensors are given in the
// order of roles, as recipe parameters.
func DequantParams(mod quant.Module, roles []quant.Role, dtype safetensors.DType) (map[string]string, error) {
	scheme, err := json.Marshal(mod.Scheme)
	if err != nil {
		return nil, err
	}
	rs := make([]string, len(roles))
	for i, r := range roles {
		rs[i] = string(r)
	}
	return map[string]string{
		"scheme": string(scheme),
		"roles":  strings.Join(rs, ","),
		"out":    strconv.Itoa(mod.Out),
		"in":     strconv.Itoa(mod.In),
		"dtype":  string(dtype),
	}, nil
}

func evalDequant(k Kernels, params map[string]string, inputs []Input, dst []byte) ([]byte, error) {
	var mod quant.Module
	if err := json.Unmarshal([]byte(params["scheme"]), &mod.Scheme); err != nil {
		return nil, fmt.Errorf("recipe dequant: scheme: %w", err)
	}
	var err error
	if mod.Out, err = strconv.Atoi(params["out"]); err != nil {
		return nil, fmt.Errorf("recipe dequant: out: %w", err)
	}
	if mod.In, err = strconv.Atoi(params["in"]); err != nil {
		return nil, fmt.Errorf("recipe dequant: in: %w", err)
	}
	dtype, err := safetensors.ParseDType(params["dtype"])
	if err != nil {
		return nil, fmt.Errorf("recipe dequant: %w", err)
	}
	roles := strings.Split(params["roles"], ",")
	if len(roles) != len(inputs) {
		return nil, fmt.Errorf("recipe dequant: %d roles for %d inputs", len(roles), len(inputs))
	}
	mod.Prefix = "recipe"
	mod.Tensors = make(map[quant.Role]safetensors.TensorInfo, len(inputs))
	data := make(map[quant.Role][]byte, len(inputs))
	for i, r := range roles {
		role := quant.Role(r)
		if _, dup := data[role]; dup {
			return nil, fmt.Errorf("recipe dequant: role %s given twice", r)
		}
		in := inputs[i]
		mod.Tensors[role] = safetensors.TensorInfo{Name: "recipe." + r, DType: in.DType, Shape: in.Shape, End: uint64(len(in.Data))}
		data[role] = in.Data
	}
	if err := k.Dequantize(dst, mod, data, dtype); err != nil {
		return nil, fmt.Errorf("recipe dequant: %w", err)
	}
	return dst, nil
}

// QuantizeParams describes output role of quantizing a weight with qs.
func QuantizeParams(qs quant.QuantizeScheme, role quant.Role) (map[string]string, error) {
	scheme, err := json.Marshal(qs)
	if err != nil {
		return nil, err
	}
	return map[string]string{"scheme": string(scheme), "role": string(role)}, nil
}

func evalQuantize(params map[string]string, inputs []Input, dst []byte) ([]byte, error) {
	var qs quant.QuantizeScheme
	dec := json.NewDecoder(strings.NewReader(params["scheme"]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&qs); err != nil {
		return nil, fmt.Errorf("recipe quantize: scheme: %w", err)
	}
	if len(inputs) != 1 {
		return nil, fmt.Errorf("recipe quantize: %d inputs, want the dense weight", len(inputs))
	}
	in := inputs[0]
	w := safetensors.TensorInfo{Name: "recipe.weight", DType: in.DType, Shape: in.Shape, End: uint64(len(in.Data))}
	if err := quant.QuantizeRoleInto(dst, qs, w, in.Data, quant.Role(params["role"])); err != nil {
		return nil, fmt.Errorf("recipe quantize: %w", err)
	}
	return dst, nil
}
