//go:build cgo && linux

package pjrtgpu

import (
	"fmt"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/pjrt"
	"github.com/gomlx/go-xla/stablehlo"
	"github.com/gomlx/go-xla/types"
	"github.com/gomlx/go-xla/types/shapes"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// QuantizeWeight quantizes one dense weight: the same tensors and bytes as
// quant.QuantizeWeight(qs, weight, data), on the device for fp8-block
// (QuantizeFP8Block), int8 (per-channel RTN) and w4a16 (symmetric or
// asymmetric, per group or per channel, packed eight codes to an int32).
// Other schemes and inputs the CPU kernel would refuse give ErrUnsupported.
func (d *Device) QuantizeWeight(qs quant.QuantizeScheme, weight safetensors.TensorInfo, data []byte) ([]quant.QuantizedTensor, error) {
	switch qs.Name {
	case quant.QuantInt8, quant.QuantW4A16:
		return d.QuantizeInt(qs, weight, data)
	}
	return d.QuantizeFP8Block(qs, weight, data)
}

// QuantizeInt quantizes one dense weight with the int8 or w4a16 scheme:
// the same tensors and bytes as quant.QuantizeWeight. The device reduces
// each scale cell to its extreme magnitudes, the host derives scales and
// zero points with codec/quant's arithmetic (intQuant.cells), and the
// device computes every code as RNE(clamp(f32(f32(float64(x)·(1/s)) + zp),
// qmin, qmax)), stored as int8 bytes or packed as q + 8 eight to an int32
// word, lowest nibble first, padding codes zero.
func (d *Device) QuantizeInt(qs quant.QuantizeScheme, weight safetensors.TensorInfo, data []byte) ([]quant.QuantizedTensor, error) {
	q, err := intQuantFor(qs, weight, data)
	if err != nil {
		return nil, err
	}
	var wdt dtypes.DType = dtypes.Uint16
	if q.wd == safetensors.F32 {
		wdt = dtypes.Uint32
	}
	w, err := d.upload(data, wdt, q.out, q.in)
	if err != nil {
		return nil, err
	}
	defer destroy(w)
	n := q.out * q.sCols
	pos := make([]uint32, n)
	var neg []uint32
	shape := fmt.Sprintf("%dx%d/1x%d/%s", q.out, q.in, q.colDiv, q.wd)
	if q.asym {
		neg = make([]uint32, n)
		e, err := d.exe("signedmax/"+shape, func() ([]byte, error) { return progSignedMaxBlocks(q.wd, q.out, q.in, 1, q.colDiv) })
		if err != nil {
			return nil, err
		}
		outs, err := d.run(e, w)
		if err != nil {
			return nil, err
		}
		if len(outs) != 2 {
			destroy(outs...)
			return nil, fmt.Errorf("execute: %d outputs, want 2", len(outs))
		}
		err = d.download(outs[0], u32bytes(pos))
		if err == nil {
			err = d.download(outs[1], u32bytes(neg))
		}
		destroy(outs...)
		if err != nil {
			return nil, err
		}
	} else {
		e, err := d.exe("absmax/"+shape, func() ([]byte, error) { return progAbsMaxBlocks(q.wd, q.out, q.in, 1, q.colDiv) })
		if err != nil {
			return nil, err
		}
		mb, err := d.run1(e, w)
		if err != nil {
			return nil, err
		}
		err = d.download(mb, u32bytes(pos))
		destroy(mb)
		if err != nil {
			return nil, err
		}
	}
	cells, ok := q.cells(pos, neg)
	if !ok {
		return nil, unsupportedf("%s: a cell holds a non-finite value or has an unusable scale", weight.Name)
	}
	rcp, err := d.uploadSmall(f64bytes(cells.rcp), dtypes.Float64, q.out, q.sCols)
	if err != nil {
		return nil, err
	}
	defer destroy(rcp)
	inputs := []*pjrt.Buffer{w, rcp}
	if q.asym {
		zf := make([]float32, n)
		for i, z := range cells.zp {
			zf[i] = float32(z)
		}
		zb, err := d.uploadSmall(f32bytes(zf), dtypes.Float32, q.out, q.sCols)
		if err != nil {
			return nil, err
		}
		defer destroy(zb)
		inputs = append(inputs, zb)
	}
	key := fmt.Sprintf("intcodes/%s/%d/%v", shape, q.bits, q.asym)
	e, err := d.exe(key, func() ([]byte, error) { return progIntCodes(q.wd, q.out, q.in, q.colDiv, q.bits, q.asym) })
	if err != nil {
		return nil, err
	}
	cb, err := d.run1(e, inputs...)
	if err != nil {
		return nil, err
	}
	defer destroy(cb)
	var codes []byte
	if q.bits == 8 {
		codes = make([]byte, q.out*q.in)
	} else {
		codes = make([]byte, 4*q.out*q.words())
	}
	if err := d.download(cb, codes); err != nil {
		return nil, err
	}
	return q.tensors(codes, cells), nil
}

// blockCells pads an [out, in] u32 array with zeros to whole [bh, bw] cells
// and reshapes it to [r, bh, c, bw].
func (g *graph) blockCells(x *value, out, in, bh, bw int) *value {
	r, c := cdiv(out, bh), cdiv(in, bw)
	if !g.ok(x) {
		return nil
	}
	if r*bh != out || c*bw != in {
		zero := g.keep(g.fn.ConstantFromScalar(uint32(0)))
		if !g.ok(zero) {
			return nil
		}
		x = g.keep(stablehlo.Pad(x, zero, []int{0, 0}, []int{r*bh - out, c*bw - in}, []int{0, 0}))
		if !g.ok(x) {
			return nil
		}
	}
	return g.keep(stablehlo.Reshape(x, shapes.Make(dtypes.Uint32, r, bh, c, bw)))
}

// progSignedMaxBlocks returns, per [bh, bw] block of an [out, in] weight,
// the magnitude bits (sign cleared, u32) of the largest non-negative
// element and of the most negative one (0 when there is none; −0 counts as
// 0): codec/quant's signed maxima. NaN and ±Inf show as bits at or above
// the dtype's infinity in one of them.
func progSignedMaxBlocks(wd safetensors.DType, out, in, bh, bw int) ([]byte, error) {
	g := newGraph("heft_signedmax_blocks")
	bits, _ := g.weightInput(wd, out, in)
	mask, signBit := uint32(0x7FFF), uint32(0x8000)
	if wd == safetensors.F32 {
		mask, signBit = 0x7FFFFFFF, 0x80000000
	}
	mag := g.andC(bits, mask)
	negative := g.cmp(g.andC(bits, signBit), types.CompareNE, uint32(0))
	zero := g.full(mag, uint32(0))
	pos := g.blockCells(g.sel(negative, zero, mag), out, in, bh, bw)
	neg := g.blockCells(g.sel(negative, mag, zero), out, in, bh, bw)
	return g.build(g.reduce(pos, uint32(0), g.maxFn(dtypes.Uint32), 1, 3), g.reduce(neg, uint32(0), g.maxFn(dtypes.Uint32), 1, 3))
}

// progIntCodes computes the integer codes of an [out, in] weight given each
// cell's float64 reciprocal scale rcp [out, in/bw] (and, when asym, the
// zero points as float32): v = float32(float64(x)·rcp) (the CPU's
// quotient, rounded with integer arithmetic), v = float32(v + zp), q =
// RNE(clamp(v, qmin, qmax)). A float32 subnormal v, flushed to zero or not
// by the add, gives the same code (0, or zp after the add), so the result
// does not depend on the device's flush-to-zero.
// bits 8: int8 bytes [out, in]; bits 4: q + 8 packed eight to a u32 word,
// code c in bits 4·(c%8) of word c/8, padding codes zero ([out, cdiv(in,
// 8)]).
func progIntCodes(wd safetensors.DType, out, in, bw, bits int, asym bool) ([]byte, error) {
	g := newGraph("heft_int_codes")
	c := cdiv(in, bw)
	_, x := g.weightInput(wd, out, in)
	rcp := g.input("rcp", dtypes.Float64, out, c)
	// The quotient rounded to float32 by integer arithmetic (no conversion
	// a compiler could fold into the add below).
	v := g.bitcast(g.f64ToF32Bits(g.bin(stablehlo.Multiply, x, g.blockGrid(rcp, out, in, 1, bw))), dtypes.Float32)
	if asym {
		zp := g.input("zp", dtypes.Float32, out, c)
		v = g.bin(stablehlo.Add, v, g.blockGrid(zp, out, in, 1, bw))
	}
	qmin, qmax := float32(-128), float32(127)
	if bits == 4 {
		qmin, qmax = -8, 7
	}
	v = g.bin(stablehlo.Minimum, g.bin(stablehlo.Maximum, v, g.full(v, qmin)), g.full(v, qmax))
	q := g.convert(g.un(stablehlo.RoundNearestEven, v), dtypes.Int32)
	if bits == 8 {
		return g.build(g.bitcast(g.convert(q, dtypes.Int8), dtypes.Uint8))
	}
	u := g.convert(g.addC(q, int32(8)), dtypes.Uint32)
	words := cdiv(in, 8)
	if !g.ok(u) {
		return nil, g.err
	}
	if words*8 != in {
		zero := g.keep(g.fn.ConstantFromScalar(uint32(0)))
		if !g.ok(zero) {
			return nil, g.err
		}
		u = g.keep(stablehlo.Pad(u, zero, []int{0, 0}, []int{0, words*8 - in}, []int{0, 0}))
	}
	if !g.ok(u) {
		return nil, g.err
	}
	sh := shapes.Make(dtypes.Uint32, out, words, 8)
	u = g.keep(stablehlo.Reshape(u, sh))
	shift := g.mulC(g.keep(g.fn.Iota(sh, 2)), uint32(4))
	return g.build(g.reduce(g.bin(stablehlo.ShiftLeft, u, shift), uint32(0), g.addFn(dtypes.Uint32), 2))
}
