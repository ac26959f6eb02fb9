package pjrtgpu

import (
	"encoding/binary"
	"math"
	"strings"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// The host half of INT8 and W4A16 quantization (int8 per-channel RTN,
// w4a16 symmetric or asymmetric per group or per channel): the device
// reduces each scale cell to the magnitude bits of its largest
// non-negative and most negative element; the host turns those into the
// stored scales, zero points and reciprocals with codec/quant's own
// arithmetic (quant.QuantizeWeight's notes: every line one float32 op
// rounded to the scale dtype); the device then computes the codes.

// intQuant is a validated int8 or w4a16 quantization the device takes.
type intQuant struct {
	qs         quant.QuantizeScheme // normalized
	prefix     string
	wd, sd     safetensors.DType
	out, in    int
	colDiv     int // input columns per scale cell
	sCols      int // scale cells per row
	bits       int // 8 or 4
	asym       bool
	qmin, qmax float32
	zeroScale  float32
}

// intQuantFor checks a weight and scheme for the device's integer
// quantization. Anything else, and any input quant.QuantizeWeight could
// refuse for its description alone, gives ErrUnsupported so that the CPU
// kernel answers (with its result or its error).
func intQuantFor(qs quant.QuantizeScheme, weight safetensors.TensorInfo, data []byte) (*intQuant, error) {
	if err := qs.Validate(); err != nil || (qs.Name != quant.QuantInt8 && qs.Name != quant.QuantW4A16) {
		return nil, unsupportedf("scheme %s", qs.Name)
	}
	if qs.Format == "" {
		qs.Format = quant.OutputCT
	}
	if qs.Name == quant.QuantW4A16 && qs.GroupSize == 0 {
		qs.GroupSize = quant.DefaultGroupSize
	}
	prefix, ok := strings.CutSuffix(weight.Name, ".weight")
	if !ok || prefix == "" || len(weight.Shape) != 2 || weight.Shape[0] == 0 || weight.Shape[1] == 0 ||
		weight.Shape[0] > 1<<24 || weight.Shape[1] > 1<<24 {
		return nil, unsupportedf("weight %s %v", weight.Name, weight.Shape)
	}
	wd := weight.DType
	if wd != safetensors.BF16 && wd != safetensors.F16 && wd != safetensors.F32 {
		return nil, unsupportedf("weight dtype %s", wd)
	}
	out, in := int(weight.Shape[0]), int(weight.Shape[1])
	if len(data) != out*in*wd.BitSize()/8 {
		return nil, unsupportedf("%d bytes for %s%v", len(data), wd, weight.Shape)
	}
	q := &intQuant{qs: qs, prefix: prefix, wd: wd, sd: qs.ScaleDTypeFor(wd), out: out, in: in, colDiv: in, asym: qs.Asymmetric}
	switch qs.Name {
	case quant.QuantInt8:
		q.bits, q.qmin, q.qmax = 8, -128, 127
	default:
		q.bits, q.qmin, q.qmax = 4, -8, 7
		if g := qs.GroupSize; g > 0 {
			if in >= g && in%g != 0 {
				return nil, unsupportedf("group size %d does not divide in = %d", g, in)
			}
			q.colDiv = g
		}
	}
	q.sCols = cdiv(in, q.colDiv)
	switch q.sd {
	case safetensors.BF16:
		q.zeroScale = 0x1p-7
	case safetensors.F16:
		q.zeroScale = 0x1p-10
	case safetensors.F32:
		q.zeroScale = 0x1p-23
	default:
		return nil, unsupportedf("scale dtype %s", q.sd)
	}
	return q, nil
}

// words is the number of int32 words of a packed 4-bit row.
func (q *intQuant) words() int { return cdiv(q.in, 8) }

// intCells are the per-cell results of the host half.
type intCells struct {
	scales []float32 // stored scales (values of the scale dtype)
	zp     []int32   // zero points (asymmetric)
	rcp    []float64 // 1/s, what the device multiplies by
}

// weightMagnitude returns the value of magnitude bits a of dtype wd and
// the bits of its infinity.
func weightMagnitude(wd safetensors.DType) (func(uint32) float32, uint32) {
	switch wd {
	case safetensors.BF16:
		return func(a uint32) float32 { return numeric.BF16ToF32(uint16(a)) }, 0x7F80
	case safetensors.F16:
		return func(a uint32) float32 { return numeric.F16ToF32(uint16(a)) }, 0x7C00
	}
	return math.Float32frombits, 0x7F800000
}

// toScaleFunc rounds a float32 result to the scale dtype and widens it back
// (⟦·⟧ of quant.QuantizeWeight's notes).
func toScaleFunc(sd safetensors.DType) func(float32) float32 {
	switch sd {
	case safetensors.BF16:
		return func(x float32) float32 { return numeric.BF16ToF32(numeric.F32ToBF16(x)) }
	case safetensors.F16:
		return func(x float32) float32 { return numeric.F16ToF32(numeric.F32ToF16(x)) }
	}
	return func(x float32) float32 { return x }
}

// cells computes every cell's scale (and zero point) from pos, the
// magnitude bits of the largest non-negative element of each cell, and neg,
// those of the most negative one (0 when there is none; nil when
// symmetric, where pos is the largest magnitude). ok is false when a cell
// holds a NaN or ±Inf or its scale is unusable: the CPU kernel then gives
// the error.
func (q *intQuant) cells(pos, neg []uint32) (c intCells, ok bool) {
	magnitude, inf := weightMagnitude(q.wd)
	toScale := toScaleFunc(q.sd)
	n := len(pos)
	c.scales = make([]float32, n)
	c.rcp = make([]float64, n)
	if q.asym {
		c.zp = make([]int32, n)
	}
	for i := range n {
		var nb uint32
		if neg != nil {
			nb = neg[i]
		}
		if pos[i] >= inf || nb >= inf {
			return c, false
		}
		lo, hi := -magnitude(nb), magnitude(pos[i])
		// cellParams of codec/quant, line for line.
		var s float32
		var zp int32
		if !q.asym {
			half := (q.qmax - q.qmin) / 2
			s = toScale(max(-lo, hi) / half)
		} else {
			r := toScale(hi - lo)
			s = toScale(r / (q.qmax - q.qmin))
			t := toScale(lo / s)
			z := toScale(q.qmin - t)
			switch {
			case z < q.qmin:
				z = q.qmin
			case z > q.qmax:
				z = q.qmax
			}
			if z == z {
				zp = int32(math.RoundToEven(float64(z)))
			}
		}
		if s == 0 {
			s = q.zeroScale
		}
		if math.IsInf(float64(s), 0) || q.overflows(s, zp) {
			return c, false
		}
		c.scales[i], c.rcp[i] = s, 1/float64(s)
		if q.asym {
			c.zp[i] = zp
		}
	}
	return c, true
}

// overflows is codec/quant's check that a code of the cell could
// dequantize to ±Inf in the weight dtype.
func (q *intQuant) overflows(s float32, zp int32) bool {
	z := float64(zp)
	m := max(z-float64(q.qmin), float64(q.qmax)-z)
	worst := float32(m * float64(s))
	switch q.wd {
	case safetensors.BF16:
		return numeric.F32ToBF16(worst)&0x7FFF == 0x7F80
	case safetensors.F16:
		return numeric.F32ToF16(worst)&0x7FFF == 0x7C00
	}
	return math.IsInf(float64(worst), 0)
}

// tensors assembles the output tensors in quant.QuantizeWeight's order
// (by name) from the device's codes and the host's cells.
func (q *intQuant) tensors(codes []byte, c intCells) []quant.QuantizedTensor {
	o, i := uint64(q.out), uint64(q.in)
	name := func(s string) string { return q.prefix + "." + s }
	scale := quant.QuantizedTensor{Name: name("weight_scale"), Role: quant.RoleScale, DType: q.sd,
		Shape: []uint64{o, uint64(q.sCols)}, Data: encodeScales(c.scales, q.sd)}
	if q.bits == 8 {
		return []quant.QuantizedTensor{
			{Name: name("weight"), Role: quant.RoleCodes, DType: safetensors.I8, Shape: []uint64{o, i}, Data: codes},
			scale,
		}
	}
	shape := make([]byte, 16)
	binary.LittleEndian.PutUint64(shape, o)
	binary.LittleEndian.PutUint64(shape[8:], i)
	res := []quant.QuantizedTensor{
		{Name: name("weight_packed"), Role: quant.RoleCodes, DType: safetensors.I32, Shape: []uint64{o, uint64(q.words())}, Data: codes},
		scale,
		{Name: name("weight_shape"), Role: quant.RoleShape, DType: safetensors.I64, Shape: []uint64{2}, Data: shape},
	}
	if q.asym {
		// Packed along out (packed_dim 0): word (k, g) holds zp[8k+j, g] + 8
		// in nibble j; rows past out are zero bits.
		g, rows := q.sCols, cdiv(q.out, 8)
		b := make([]byte, 4*rows*g)
		for kw := range rows {
			for col := range g {
				var w uint32
				for j := range 8 {
					if r := 8*kw + j; r < q.out {
						w |= uint32(c.zp[r*g+col]+8) << (4 * j)
					}
				}
				binary.LittleEndian.PutUint32(b[4*(kw*g+col):], w)
			}
		}
		res = append(res, quant.QuantizedTensor{Name: name("weight_zero_point"), Role: quant.RoleZeroPoint, DType: safetensors.I32,
			Shape: []uint64{uint64(rows), uint64(g)}, Data: b})
	}
	return res
}
