package ops

import (
	"context"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/recipe"
	"github.com/heft-dev/heft/codec/safetensors"
)

// backendKernels lets the store evaluate recipes on a Backend: the Backend
// contract (the CPU's bytes exactly for dequantization) is recipe.Kernels'.
type backendKernels struct {
	ctx context.Context
	be  Backend
}

var _ recipe.Kernels = backendKernels{}

func (k backendKernels) Dequantize(dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error {
	return k.be.Dequantize(k.ctx, dst, mod, tensors, dtype)
}

// withBackend returns m evaluating its recipes on be, when be is not the CPU
// and m can take other kernels; otherwise m itself.
func withBackend(ctx context.Context, m Models, be Backend) Models {
	if be == nil || be.Name() == CPUBackend().Name() {
		return m
	}
	km, ok := m.(KernelModels)
	if !ok {
		return m
	}
	return km.WithKernels(backendKernels{ctx: ctx, be: be})
}
