package ops

import (
	"context"
	"fmt"
	"slices"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// denseView presents a model, quantized or not, as dense float32 weights: a
// quantized module's weight is its dequantization (computed by the op's
// backend), any other float tensor its values.
type denseView struct {
	m       Models
	md      *model
	qm      *quant.Model
	modules map[string]quant.Module // by dense weight name
	// ctx and be are the op's: the view lives for one op call.
	ctx context.Context
	be  Backend
}

func newDenseView(ctx context.Context, m Models, md *model, be Backend) (*denseView, error) {
	qm, err := quant.Detect(md.config, md.infos(), md.side)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInput, md.ref, err)
	}
	v := &denseView{m: m, md: md, qm: qm, modules: map[string]quant.Module{}, ctx: ctx, be: backendOr(be)}
	for _, mod := range qm.Modules {
		out, in, err := moduleDims(m, md, mod)
		if err != nil {
			return nil, err
		}
		mod.Out, mod.In = out, in
		v.modules[mod.WeightName()] = mod
	}
	return v, nil
}

func (v *denseView) quantized() bool { return len(v.qm.Modules) > 0 }

// shape returns the dense shape and dtype of a weight, and whether the view has it.
func (v *denseView) shape(name string) ([]uint64, string, bool) {
	if mod, ok := v.modules[name]; ok {
		return []uint64{uint64(mod.Out), uint64(mod.In)}, string(safetensors.BF16), true
	}
	p, ok := v.md.tensors[name]
	if !ok || !slices.Contains(v.qm.Dense, name) {
		return nil, "", false
	}
	return p.tensor.Shape, p.tensor.DType, true
}

// floats returns a weight's values in float32 (into dst when it has the capacity).
func (v *denseView) floats(name string, dst []float32) ([]float32, error) {
	if mod, ok := v.modules[name]; ok {
		data := map[quant.Role][]byte{}
		for r, ti := range mod.Tensors {
			if !slices.Contains(dequantRoles, r) {
				continue
			}
			b, err := v.m.TensorBytes(v.md.tensors[ti.Name].tensor.ID, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", v.md.ref, ti.Name, err)
			}
			data[r] = b
		}
		raw := make([]byte, mod.Out*mod.In*4)
		if err := v.be.Dequantize(v.ctx, raw, mod, data, safetensors.F32); err != nil {
			return nil, fmt.Errorf("%s: %w", v.md.ref, err)
		}
		return decodeFloats(string(safetensors.F32), raw, dst)
	}
	p, ok := v.md.tensors[name]
	if !ok {
		return nil, fmt.Errorf("%s has no tensor %q", v.md.ref, name)
	}
	raw, err := v.m.TensorBytes(p.tensor.ID, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", v.md.ref, name, err)
	}
	vals, err := decodeFloats(p.tensor.DType, raw, dst)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", v.md.ref, name, err)
	}
	return vals, nil
}

// loadDenseViews loads the models named by refs and presents each as dense weights.
func loadDenseViews(ctx context.Context, m Models, be Backend, refs ...string) ([]*model, []*denseView, error) {
	mds := make([]*model, len(refs))
	views := make([]*denseView, len(refs))
	for i, ref := range refs {
		md, err := loadModel(m, ref)
		if err != nil {
			return nil, nil, err
		}
		v, err := newDenseView(ctx, m, md, be)
		if err != nil {
			return nil, nil, err
		}
		mds[i], views[i] = md, v
	}
	return mds, views, nil
}
