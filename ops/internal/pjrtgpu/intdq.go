//go:build cgo && linux

package pjrtgpu

import (
	"fmt"
	"time"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/pjrt"
	"github.com/gomlx/go-xla/stablehlo"
	"github.com/gomlx/go-xla/types/shapes"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// dequantInt dequantizes an INT8 or packed 4-bit module (see intPlanFor)
// into dst.
func (d *Device) dequantInt(dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error {
	p, err := intPlanFor(mod, tensors, dtype, len(dst))
	if err != nil {
		return err
	}
	bufs, err := d.uploadInt(p)
	defer destroy(bufs...)
	if err != nil {
		return err
	}
	out, err := d.intResident(p, bufs)
	if err != nil {
		return err
	}
	defer destroy(out)
	return d.download(out, dst)
}

// uploadInt uploads the codes, the scale bits and the zero points.
func (d *Device) uploadInt(p *intPlan) ([]*pjrt.Buffer, error) {
	var bufs []*pjrt.Buffer
	var codes *pjrt.Buffer
	var err error
	if p.packed {
		codes, err = d.upload(p.codes, dtypes.Uint32, p.out, p.words)
	} else {
		codes, err = d.upload(p.codes, dtypes.Uint8, p.out, p.in)
	}
	if err != nil {
		return nil, err
	}
	bufs = append(bufs, codes)
	scale, err := d.uploadSmall(u32bytes(p.scale), dtypes.Uint32, p.r, p.c)
	if err != nil {
		return bufs, err
	}
	bufs = append(bufs, scale)
	if p.zero != nil {
		zero, err := d.uploadSmall(f32bytes(p.zero), dtypes.Float32, p.r, p.c)
		if err != nil {
			return bufs, err
		}
		bufs = append(bufs, zero)
	}
	return bufs, nil
}

func (d *Device) intResident(p *intPlan, bufs []*pjrt.Buffer) (*pjrt.Buffer, error) {
	key := fmt.Sprintf("dequant_int/%v/%dx%d/%dx%d/%dx%d/%v/%s", p.packed, p.out, p.in, p.r, p.c, p.bh, p.bw, p.zero != nil, p.dtype)
	e, err := d.exe(key, func() ([]byte, error) { return progDequantInt(p) })
	if err != nil {
		return nil, err
	}
	return d.run1(e, bufs...)
}

// progDequantInt computes float32(float32(q − z)·s) for every element:
// q from the INT8 byte or the 4-bit code (unsigned in the word, minus 8),
// z and s from their grids. q − z is a small integer; its product with the
// scale's exact float64 value is exact and rounded once to float32 as in
// DequantF64, so the result is the CPU's on any device, flush-to-zero or
// not.
func progDequantInt(p *intPlan) ([]byte, error) {
	g := newGraph("heft_dequant_int")
	var q *value
	if p.packed {
		w := g.input("codes", dtypes.Uint32, p.out, p.words)
		u := g.unpack4(w, p.out, p.words, p.in)
		q = g.convert(g.addC(g.convert(u, dtypes.Int32), int32(-8)), dtypes.Float64)
	} else {
		q = g.convert(g.bitcast(g.input("codes", dtypes.Uint8, p.out, p.in), dtypes.Int8), dtypes.Float64)
	}
	bits := g.input("scale", dtypes.Uint32, p.r, p.c)
	s := g.materialize(g.exactF64(bits))
	if p.zero != nil {
		z := g.materialize(g.convert(g.input("zero", dtypes.Float32, p.r, p.c), dtypes.Float64))
		q = g.bin(stablehlo.Subtract, q, g.blockGrid(z, p.out, p.in, p.bh, p.bw))
	}
	f := g.f64ToF32BitsFast(g.bin(stablehlo.Multiply, q, g.blockGrid(s, p.out, p.in, p.bh, p.bw)))
	switch p.dtype {
	case safetensors.F32:
		return g.build(g.bitcast(f, dtypes.Float32))
	case safetensors.BF16:
		return g.build(g.convert(g.toBF16Bits(f), dtypes.Uint16))
	}
	return nil, fmt.Errorf("pjrtgpu: dequant output dtype %s", p.dtype)
}

// unpack4 unpacks [out, words] int32 words into [out, in] 4-bit codes
// (u32): code c is bits 4·(c%8) to 4·(c%8)+3 of word c/8.
func (g *graph) unpack4(w *value, out, words, in int) *value {
	if !g.ok(w) {
		return nil
	}
	sh := shapes.Make(dtypes.Uint32, out, words, 8)
	b := g.keep(stablehlo.BroadcastInDim(w, sh, []int{0, 1}))
	shift := g.keep(g.fn.Iota(sh, 2))
	u := g.andC(g.bin(stablehlo.ShiftRightLogical, b, g.mulC(shift, uint32(4))), uint32(0xF))
	if !g.ok(u) {
		return nil
	}
	u = g.keep(stablehlo.Reshape(u, shapes.Make(dtypes.Uint32, out, words*8)))
	if words*8 == in || !g.ok(u) {
		return u
	}
	return g.keep(stablehlo.Slice(u, []int{0, 0}, []int{out, in}, []int{1, 1}))
}

// MeasureDequant is a benchmark hook like MeasureDequantFP8 for any module
// the device dequantizes (FP8 block with the device's kernel, INT8, packed
// 4-bit).
func (d *Device) MeasureDequant(mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType, reps int) ([]time.Duration, error) {
	if mod.Scheme.Format != quant.FormatCTInt && mod.Scheme.Format != quant.FormatCTPacked {
		return d.MeasureDequantFP8(mod, tensors, dtype, "", reps)
	}
	p, err := intPlanFor(mod, tensors, dtype, mod.Out*mod.In*dtype.BitSize()/8)
	if err != nil {
		return nil, err
	}
	bufs, err := d.uploadInt(p)
	defer destroy(bufs...)
	if err != nil {
		return nil, err
	}
	var times []time.Duration
	for i := -1; i < reps; i++ {
		start := time.Now()
		out, err := d.intResident(p, bufs)
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			times = append(times, time.Since(start))
		}
		destroy(out)
	}
	return times, nil
}
