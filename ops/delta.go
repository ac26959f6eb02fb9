package ops

import (
	"fmt"
	"runtime"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
	"golang.org/x/sync/errgroup"
)

// deltaBlock is the number of elements a worker converts at a time: small
// enough that its scratch stays in cache, large enough to amortize scheduling.
const deltaBlock = 1 << 16

// deltaFloats returns tuned − base of one weight in float32, computed as
// float32(tuned) − float32(base), which is what subtracting the two float32
// views gives. When both weights are stored dense in BF16 — the fine-tuning
// case — the two reads run at once and the conversion and subtraction are one
// pass over the data on all cores, without a second float32 copy; otherwise
// the views' floats are subtracted.
func deltaFloats(tuned, base *denseView, name string) ([]float32, error) {
	raws, ok, err := bf16Pair(tuned, base, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return subtractViews(tuned, base, name)
	}
	t, b := raws[0], raws[1]
	if len(t) != len(b) {
		return nil, fmt.Errorf("%s: tuned has %d bytes, base %d", name, len(t), len(b))
	}
	n := len(t) / 2
	out := make([]float32, n)
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for lo := 0; lo < n; lo += deltaBlock * 16 {
		hi := min(n, lo+deltaBlock*16)
		g.Go(func() error {
			scratch := make([]float32, deltaBlock)
			for s := lo; s < hi; s += deltaBlock {
				e := min(hi, s+deltaBlock)
				d := out[s:e]
				numeric.BF16ToF32Slice(d, t[2*s:2*e])
				bs := scratch[:e-s]
				numeric.BF16ToF32Slice(bs, b[2*s:2*e])
				for i := range d {
					d[i] -= bs[i]
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	return out, nil
}

// subtractViews is tuned − base through the views' float32 values.
func subtractViews(tuned, base *denseView, name string) ([]float32, error) {
	tv, err := tuned.floats(name, nil)
	if err != nil {
		return nil, err
	}
	bv, err := base.floats(name, nil)
	if err != nil {
		return nil, err
	}
	if len(tv) != len(bv) {
		return nil, fmt.Errorf("%s: tuned has %d values, base %d", name, len(tv), len(bv))
	}
	for i := range tv {
		tv[i] -= bv[i]
	}
	return tv, nil
}

// bf16Pair reads the stored bytes of a weight both views hold dense in BF16,
// the two reads at once; ok is false when either is quantized or not BF16.
func bf16Pair(tuned, base *denseView, name string) (raws [2][]byte, ok bool, err error) {
	views := [2]*denseView{tuned, base}
	var ids [2]string
	for i, v := range views {
		if _, q := v.modules[name]; q {
			return raws, false, nil
		}
		p, has := v.md.tensors[name]
		if !has || p.tensor.DType != string(safetensors.BF16) {
			return raws, false, nil
		}
		ids[i] = p.tensor.ID
	}
	var g errgroup.Group
	for i, v := range views {
		g.Go(func() error {
			b, err := v.m.TensorBytes(ids[i], nil)
			if err != nil {
				return fmt.Errorf("%s: %s: %w", v.md.ref, name, err)
			}
			raws[i] = b
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return raws, false, err
	}
	return raws, true, nil
}
