//go:build cgo && linux

package pjrtgpu

import (
	"fmt"
	"time"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/pjrt"
	"github.com/gomlx/go-xla/stablehlo"
	"github.com/gomlx/go-xla/types"
	"github.com/gomlx/go-xla/types/shapes"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// dequantInt dequantizes a module with the general kernel (see intPlanFor)
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
	switch p.kind {
	case codePacked:
		codes, err = d.upload(p.codes, dtypes.Uint32, p.out, p.words)
	case codeAWQ:
		codes, err = d.upload(p.codes, dtypes.Uint32, p.in, p.words)
	default:
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
	if p.gidx != nil {
		gi, err := d.uploadSmall(i32bytes(p.gidx), dtypes.Int32, p.in)
		if err != nil {
			return bufs, err
		}
		bufs = append(bufs, gi)
	}
	return bufs, nil
}

func (d *Device) intResident(p *intPlan, bufs []*pjrt.Buffer) (*pjrt.Buffer, error) {
	key := fmt.Sprintf("dequant_int/%d/%d/%dx%d/%dx%d/%dx%d/%v/%v/%s/%d", p.kind, p.bits, p.out, p.in, p.r, p.c, p.bh, p.bw, p.zero != nil, p.gidx != nil, p.dtype, p.nanSign)
	e, err := d.exe(key, func() ([]byte, error) { return progDequantInt(p) })
	if err != nil {
		return nil, err
	}
	return d.run1(e, bufs...)
}

// progDequantInt computes float32(float32(q − z)·s) for every element,
// rounded to the output dtype: q from the INT8 byte, the FP8 E4M3 or E5M2
// code (decoded to float64 with integer operations), the packed code
// (unsigned in the word, minus 2^(bits−1)) or the AWQ nibble (unsigned);
// z and s from their grids. q − z is exact, and so is its product with the
// scale's exact float64 value (at most 24 + 24 significant bits, far from
// float64's subnormals); that is rounded once to float32 as in DequantF64,
// so the result is the CPU's on any device, flush-to-zero or not. BF16 and
// F16 outputs are rounded from the float32 bits with integer arithmetic
// (numeric.F32ToBF16, numeric.F32ToF16); an F16 NaN takes the sign the
// host's float32 arithmetic gives it: the code's if it is a NaN, else the
// scale's, else the host's default NaN's (p.nanSign).
func progDequantInt(p *intPlan) ([]byte, error) {
	g := newGraph("heft_dequant_int")
	var q *value
	switch p.kind {
	case codePacked:
		w := g.input("codes", dtypes.Uint32, p.out, p.words)
		u := g.unpackBits(w, p.out, p.words, p.in, p.bits)
		q = g.convert(g.addC(g.convert(u, dtypes.Int32), int32(-(1<<(p.bits-1)))), dtypes.Float64)
	case codeAWQ:
		w := g.input("codes", dtypes.Uint32, p.in, p.words)
		q = g.convert(g.unpackAWQ(w, p.in, p.words), dtypes.Float64)
	case codeE4M3:
		q = g.decodeE4M3(g.convert(g.input("codes", dtypes.Uint8, p.out, p.in), dtypes.Uint64))
	case codeE5M2:
		q = g.decodeE5M2(g.convert(g.input("codes", dtypes.Uint8, p.out, p.in), dtypes.Uint64))
	default:
		q = g.convert(g.bitcast(g.input("codes", dtypes.Uint8, p.out, p.in), dtypes.Int8), dtypes.Float64)
	}
	bits := g.input("scale", dtypes.Uint32, p.r, p.c)
	s := g.materialize(g.exactF64(bits))
	var z, gi *value
	if p.zero != nil {
		z = g.materialize(g.convert(g.input("zero", dtypes.Float32, p.r, p.c), dtypes.Float64))
	}
	if p.gidx != nil {
		gi = g.input("gidx", dtypes.Int32, p.in)
	}
	// grid broadcasts an [r, c] grid to [out, in]: column c/bw, or gidx[c].
	grid := func(v *value) *value {
		if gi == nil {
			return g.blockGrid(v, p.out, p.in, p.bh, p.bw)
		}
		return g.blockGrid(g.gatherCols(v, gi, p.in), p.out, p.in, p.bh, 1)
	}
	if z != nil {
		q = g.bin(stablehlo.Subtract, q, grid(z))
	}
	f := g.f64ToF32BitsFast(g.bin(stablehlo.Multiply, q, grid(s)))
	switch p.dtype {
	case safetensors.F32:
		return g.build(g.bitcast(f, dtypes.Float32))
	case safetensors.BF16:
		return g.build(g.convert(g.toBF16Bits(f), dtypes.Uint16))
	case safetensors.F16:
		sb := grid(bits)
		sign := g.full(f, p.nanSign)
		sign = g.sel(g.cmp(g.andC(sb, uint32(0x7FFFFFFF)), types.CompareGT, uint32(0x7F800000)), g.andC(g.shr(sb, uint32(16)), uint32(0x8000)), sign)
		if p.floatCodes() {
			qb := g.bitcast(q, dtypes.Uint64)
			qs := g.convert(g.andC(g.shr(qb, uint64(48)), uint64(0x8000)), dtypes.Uint32)
			sign = g.sel(g.cmp(g.andC(qb, uint64(0x7FFFFFFFFFFFFFFF)), types.CompareGT, uint64(0x7FF0000000000000)), qs, sign)
		}
		return g.build(g.convert(g.toF16Bits(f, sign), dtypes.Uint16))
	}
	return nil, fmt.Errorf("pjrtgpu: dequant output dtype %s", p.dtype)
}

// gatherCols returns the [r, n] grid whose column c is column idx[c] of the
// [r, C] grid v (idx int32 [n], every value in range).
func (g *graph) gatherCols(v, idx *value, n int) *value {
	if !g.ok(v, idx) {
		return nil
	}
	r := v.Shape().Dimensions[0]
	ix := g.keep(stablehlo.Reshape(idx, shapes.Make(dtypes.Int32, n, 1)))
	if !g.ok(ix) {
		return nil
	}
	// Batch dimension n (from the indices), offset dimension r (the slice's
	// rows), the slice's one column collapsed: output [r, n].
	return g.keep(stablehlo.Gather(v, ix, 1, []int{0}, []int{1}, nil, nil, []int{1}, []int{r, 1}, false))
}

// unpack4 unpacks [out, words] int32 words into [out, in] 4-bit codes
// (u32): code c is bits 4·(c%8) to 4·(c%8)+3 of word c/8.
func (g *graph) unpack4(w *value, out, words, in int) *value {
	return g.unpackBits(w, out, words, in, 4)
}

// unpackBits unpacks [out, words] int32 words into [out, in] codes of bits
// bits (u32), bits dividing 32: code c is bits·(c%per) to
// bits·(c%per)+bits−1 of word c/per, per = 32/bits (compressed-tensors'
// dense packing, lowest code first).
func (g *graph) unpackBits(w *value, out, words, in, bits int) *value {
	if !g.ok(w) {
		return nil
	}
	per := 32 / bits
	sh := shapes.Make(dtypes.Uint32, out, words, per)
	b := g.keep(stablehlo.BroadcastInDim(w, sh, []int{0, 1}))
	shift := g.keep(g.fn.Iota(sh, 2))
	u := g.andC(g.bin(stablehlo.ShiftRightLogical, b, g.mulC(shift, uint32(bits))), uint32(1)<<bits-1)
	if !g.ok(u) {
		return nil
	}
	u = g.keep(stablehlo.Reshape(u, shapes.Make(dtypes.Uint32, out, words*per)))
	if words*per == in || !g.ok(u) {
		return u
	}
	return g.keep(stablehlo.Slice(u, []int{0, 0}, []int{out, in}, []int{1, 1}))
}

// unpackAWQ turns an AutoAWQ GEMM qweight [in, words] (K-major, eight
// output rows per int32) into the [out, in] unsigned nibbles (u32), out =
// 8·words: output row 8w+j is nibble (j>>1) + 4·(j&1) of word w, AutoAWQ's
// interleave [0, 4, 1, 5, 2, 6, 3, 7] undone.
func (g *graph) unpackAWQ(w *value, in, words int) *value {
	if !g.ok(w) {
		return nil
	}
	sh := shapes.Make(dtypes.Uint32, in, words, 8)
	b := g.keep(stablehlo.BroadcastInDim(w, sh, []int{0, 1}))
	j := g.keep(g.fn.Iota(sh, 2))
	nib := g.bin(stablehlo.Add, g.shr(j, uint32(1)), g.shl(g.andC(j, uint32(1)), uint32(2)))
	u := g.andC(g.bin(stablehlo.ShiftRightLogical, b, g.shl(nib, uint32(2))), uint32(0xF))
	if !g.ok(u) {
		return nil
	}
	u = g.keep(stablehlo.Reshape(u, shapes.Make(dtypes.Uint32, in, 8*words)))
	if !g.ok(u) {
		return nil
	}
	return g.keep(stablehlo.Transpose(u, 1, 0))
}

// decodeE5M2 maps FP8 E5M2 codes (as u64) to their float64 values, exactly
// (numeric.E5M2ToF32: the upper byte of an IEEE half): normal codes by
// assembling the bits, subnormal ones as M·2^-16, ±Inf, and NaN with the
// code's sign.
func (g *graph) decodeE5M2(c *value) *value {
	sign := g.shl(g.andC(c, uint64(0x80)), uint64(56))
	e := g.andC(g.shr(c, uint64(2)), uint64(31))
	m := g.andC(c, uint64(3))
	normal := g.orV(sign, g.orV(g.shl(g.addC(e, uint64(1008)), uint64(52)), g.shl(m, uint64(50))))
	mf := g.convert(m, dtypes.Float64)
	sub := g.orV(g.bitcast(g.bin(stablehlo.Multiply, mf, g.full(mf, float64(0x1p-16))), dtypes.Uint64), sign)
	special := g.orV(sign, g.sel(g.cmp(m, types.CompareEQ, uint64(0)), g.full(m, uint64(0x7FF0000000000000)), g.full(m, uint64(0x7FF8000000000000))))
	bits := g.sel(g.cmp(e, types.CompareEQ, uint64(0)), sub, g.sel(g.cmp(e, types.CompareEQ, uint64(31)), special, normal))
	return g.bitcast(bits, dtypes.Float64)
}

// toF16Bits rounds float32 bits (u32) to IEEE half bits (in u32) as
// numeric.F32ToF16: RNE, subnormal halves by a float32 add of 0.5 (whose
// result is never subnormal, and a flushed subnormal input rounds to the
// same zero), overflow to ±Inf, NaN as 0x7E00 with the sign bit nanSign.
func (g *graph) toF16Bits(u, nanSign *value) *value {
	sign := g.andC(g.shr(u, uint32(16)), uint32(0x8000))
	b := g.andC(u, uint32(0x7FFFFFFF))
	bf := g.bitcast(b, dtypes.Float32)
	sum := g.bin(stablehlo.Add, bf, g.full(bf, float32(0.5)))
	sub := g.bin(stablehlo.Subtract, g.bitcast(sum, dtypes.Uint32), g.full(u, uint32(0x3F000000)))
	odd := g.andC(g.shr(b, uint32(13)), uint32(1))
	normal := g.shr(g.bin(stablehlo.Add, g.addC(g.bin(stablehlo.Subtract, b, g.full(b, uint32(112)<<23)), uint32(0xFFF)), odd), uint32(13))
	h := g.sel(g.cmp(b, types.CompareLT, uint32(0x38800000)), sub, normal)
	h = g.sel(g.cmp(b, types.CompareGE, uint32(0x477FF000)), g.full(h, uint32(0x7C00)), h)
	h = g.orV(h, sign)
	return g.sel(g.cmp(b, types.CompareGT, uint32(0x7F800000)), g.orV(g.full(h, uint32(0x7E00)), nanSign), h)
}

// MeasureDequant is a benchmark hook like MeasureDequantFP8 for any module
// the device dequantizes (FP8 block with the device's kernel, INT8, packed
// 4-bit).
func (d *Device) MeasureDequant(mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType, reps int) ([]time.Duration, error) {
	if _, err := fp8BlockPlan(mod, tensors, dtype, mod.Out*mod.In*dtype.BitSize()/8); err == nil {
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
	return timeRuns(reps, func() (*pjrt.Buffer, error) { return d.intResident(p, bufs) })
}
