package pjrtgpu

import (
	"encoding/binary"
	"math"
	"slices"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// Code kinds of an intPlan.
const (
	codeI8     = iota // INT8 bytes [out, in]
	codeE4M3          // F8_E4M3 bytes [out, in]
	codeE5M2          // F8_E5M2 bytes [out, in]
	codePacked        // compressed-tensors weight_packed [out, words] int32: unsigned bits-bit codes, minus 2^(bits−1)
	codeAWQ           // AutoAWQ qweight [in, out/8] int32: unsigned nibbles in AutoAWQ's order
)

// intPlan is a validated dequantization the device's general kernel takes:
// byte codes (INT8, FP8 E4M3 or E5M2: compressed-tensors int- and
// float-quantized, native fp8, quanto), compressed-tensors packed codes
// (1, 2, 4 or 8 bits), or AutoAWQ GEMM qweights; per-tensor, per-channel,
// per-group or per-block scales of BF16, F16, F32 or E8M0; optional zero
// points (integer codes only); an act-order g_idx; BF16, F16 or F32
// output. Every element is
// float32(float32(q − z)·s) rounded once to the output dtype, as
// codec/quant computes it. The host decodes the small tensors (scales to
// float32 bits, zero points to float32 values, AWQ's K-major grids
// transposed) exactly as codec/quant does; the device does the per-element
// work.
type intPlan struct {
	out, in int
	kind    int
	bits    int // packed code width
	words   int // packed: int32 words per row; AWQ: out/8
	r, c    int // scale (and zero-point) grid
	bh, bw  int // elements per grid cell
	dtype   safetensors.DType
	codes   []byte
	scale   []uint32  // float32 bits, [r, c]
	zero    []float32 // [r, c], nil without zero points
	// gidx is the act-order weight_g_idx: the scale column of every input
	// column (nil: column c/bw).
	gidx []int32
	// nanSign is the sign bit (0x8000 or 0) of an F16 NaN that neither the
	// code nor the scale brings: ±Inf × 0, which the host's float32
	// multiply turns into its default NaN.
	nanSign uint32
}

// packed reports whether the codes are int32 words.
func (p *intPlan) packed() bool { return p.kind == codePacked || p.kind == codeAWQ }

// floatCodes reports whether the codes are FP8 values (NaN and ±Inf
// possible).
func (p *intPlan) floatCodes() bool { return p.kind == codeE4M3 || p.kind == codeE5M2 }

// intPlanFor validates a module for the device's general dequantization
// kernel. Anything outside what the kernel implements, and any input
// codec/quant might refuse, gives ErrUnsupported, so the CPU kernel
// computes it or gives the proper error: no zero points on FP8 codes, packed widths dividing 32, tensors whose sizes agree
// with their descriptions, zero points in range.
func intPlanFor(mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType, dstLen int) (*intPlan, error) {
	s := mod.Scheme
	p := &intPlan{dtype: dtype, nanSign: defaultNaNSign}
	switch {
	case dtype != safetensors.BF16 && dtype != safetensors.F16 && dtype != safetensors.F32:
		return nil, unsupportedf("output dtype %s", dtype)
	case s.Bits < 1 || s.Bits > 8:
		return nil, unsupportedf("%d-bit codes", s.Bits)
	}
	switch s.Strategy {
	case quant.StrategyTensor, quant.StrategyChannel:
	case quant.StrategyGroup:
		if s.GroupSize <= 0 {
			return nil, unsupportedf("group size %d", s.GroupSize)
		}
	case quant.StrategyBlock:
		if s.BlockSize[0] <= 0 || s.BlockSize[1] <= 0 {
			return nil, unsupportedf("block %v", s.BlockSize)
		}
	default:
		return nil, unsupportedf("strategy %s", s.Strategy)
	}
	ct, ok := mod.Tensors[quant.RoleCodes]
	if !ok {
		return nil, unsupportedf("no codes")
	}
	if _, ok := mod.Tensors[quant.RoleScale]; !ok {
		return nil, unsupportedf("no scale")
	}
	switch s.Format {
	case quant.FormatCTPacked:
		p.kind, p.bits = codePacked, s.Bits
		if 32%s.Bits != 0 {
			return nil, unsupportedf("%d-bit packed codes", s.Bits)
		}
	case quant.FormatAWQ:
		p.kind, p.bits = codeAWQ, 4
		if s.Bits != 4 {
			return nil, unsupportedf("%d-bit AWQ", s.Bits)
		}
	default:
		switch ct.DType {
		case safetensors.I8:
			p.kind = codeI8
		case safetensors.F8E4M3:
			p.kind = codeE4M3
		case safetensors.F8E5M2:
			p.kind = codeE5M2
		default:
			return nil, unsupportedf("%s codes", ct.DType)
		}
	}
	if p.packed() && ct.DType != safetensors.I32 {
		return nil, unsupportedf("%s packed codes", ct.DType)
	}
	for r, t := range mod.Tensors {
		switch r {
		case quant.RoleCodes, quant.RoleScale, quant.RoleZeroPoint, quant.RoleGIdx:
		case quant.RoleShape:
			if p.kind != codePacked {
				return nil, unsupportedf("module has a %s tensor", r)
			}
		case quant.RoleInputScale, quant.RoleInputZeroPoint, quant.RoleOutputScale:
			continue // not read by dequantization
		default:
			return nil, unsupportedf("module has a %s tensor", r)
		}
		data, ok := tensors[r]
		if !ok {
			return nil, unsupportedf("no data for %s", r)
		}
		if want, err := t.DType.ByteLen(t.Shape); err != nil || uint64(len(data)) != want {
			return nil, unsupportedf("%s of %d bytes for %s%v", r, len(data), t.DType, t.Shape)
		}
	}
	out, in := mod.Out, mod.In
	if p.kind == codePacked {
		var err error
		if out, in, err = mod.Dims(tensors); err != nil {
			return nil, unsupportedf("%v", err)
		}
	}
	if out <= 0 || in <= 0 || out > 1<<24 || in > 1<<24 {
		return nil, unsupportedf("shape [%d, %d]", out, in)
	}
	p.out, p.in = out, in
	p.codes = tensors[quant.RoleCodes]
	switch p.kind {
	case codePacked:
		p.words = cdiv(in*p.bits, 32)
		if !shapeIs(ct.Shape, out, p.words) || len(p.codes) != 4*out*p.words {
			return nil, unsupportedf("codes %v (%d bytes) for [%d, %d] packed", ct.Shape, len(p.codes), out, in)
		}
	case codeAWQ:
		p.words = out / 8
		if out%8 != 0 || !shapeIs(ct.Shape, in, p.words) || len(p.codes) != 4*in*p.words {
			return nil, unsupportedf("AWQ qweight %v for [%d, %d]", ct.Shape, out, in)
		}
	default:
		if !shapeIs(ct.Shape, out, in) || len(p.codes) != out*in {
			return nil, unsupportedf("codes %v (%d bytes) for [%d, %d]", ct.Shape, len(p.codes), out, in)
		}
	}
	if dstLen != out*in*dtype.BitSize()/8 {
		return nil, unsupportedf("destination of %d bytes", dstLen)
	}
	if err := p.setScales(mod, tensors); err != nil {
		return nil, err
	}
	if err := p.setZeroPoints(mod, tensors); err != nil {
		return nil, err
	}
	if err := p.setGIdx(mod, tensors); err != nil {
		return nil, err
	}
	if dtype == safetensors.F16 && p.floatCodes() {
		// A NaN code times a NaN scale: which NaN's sign the host's multiply
		// keeps is up to its compiler. Leave it to the CPU.
		for _, b := range p.scale {
			if b&0x7FFFFFFF > 0x7F800000 {
				return nil, unsupportedf("F16 output of FP8 codes with a NaN scale")
			}
		}
	}
	return p, nil
}

// setScales decodes the scales to float32 bits and sets the grid, as
// codec/quant's plan does (AWQ's [groups, out] transposed).
func (p *intPlan) setScales(mod quant.Module, tensors map[quant.Role][]byte) error {
	s, st := mod.Scheme, mod.Tensors[quant.RoleScale]
	sdata := tensors[quant.RoleScale]
	var n int
	switch st.DType {
	case safetensors.BF16, safetensors.F16:
		n = len(sdata) / 2
	case safetensors.F32:
		n = len(sdata) / 4
	case safetensors.F8E8M0:
		n = len(sdata)
	default:
		return unsupportedf("scale dtype %s", st.DType)
	}
	out, in := p.out, p.in
	switch {
	case n == 1: // one scale, whatever the strategy says (as codec/quant)
		p.r, p.c, p.bh, p.bw = 1, 1, out, in
	case s.Strategy == quant.StrategyChannel && n == out:
		p.r, p.c, p.bh, p.bw = out, 1, 1, in
	case s.Strategy == quant.StrategyGroup && (in < s.GroupSize || in%s.GroupSize == 0) && n == out*cdiv(in, s.GroupSize):
		p.r, p.c, p.bh, p.bw = out, cdiv(in, s.GroupSize), 1, s.GroupSize
	case s.Strategy == quant.StrategyBlock && shapeIs(st.Shape, cdiv(out, s.BlockSize[0]), cdiv(in, s.BlockSize[1])):
		p.r, p.c, p.bh, p.bw = cdiv(out, s.BlockSize[0]), cdiv(in, s.BlockSize[1]), s.BlockSize[0], s.BlockSize[1]
	default:
		return unsupportedf("%d scales for %s [%d, %d]", n, s, out, in)
	}
	p.scale = make([]uint32, n)
	for i := range p.scale {
		switch st.DType {
		case safetensors.BF16:
			p.scale[i] = uint32(binary.LittleEndian.Uint16(sdata[2*i:])) << 16
		case safetensors.F16:
			p.scale[i] = math.Float32bits(numeric.F16ToF32(binary.LittleEndian.Uint16(sdata[2*i:])))
		case safetensors.F32:
			p.scale[i] = binary.LittleEndian.Uint32(sdata[4*i:])
		default: // E8M0: 2^(e−127), 0xFF NaN
			if e := sdata[i]; e == 0xFF {
				p.scale[i] = math.Float32bits(float32(math.NaN()))
			} else {
				p.scale[i] = math.Float32bits(float32(math.Ldexp(1, int(e)-127)))
			}
		}
	}
	if p.kind == codeAWQ && n > 1 {
		p.scale = transposeGrid(p.scale, p.c, p.r)
	}
	return nil
}

// setZeroPoints decodes the zero points as codec/quant does: AutoAWQ's
// packed qzeros (8 when absent), compressed-tensors' zero points packed
// along out, or unpacked ones of any integer or float dtype holding
// integers in the code range.
func (p *intPlan) setZeroPoints(mod quant.Module, tensors map[quant.Role][]byte) error {
	s := mod.Scheme
	zt, ok := mod.Tensors[quant.RoleZeroPoint]
	n := len(p.scale)
	if ok && p.floatCodes() {
		return unsupportedf("zero points on FP8 codes")
	}
	if !ok {
		if p.kind == codeAWQ {
			p.zero = make([]float32, n)
			for i := range p.zero {
				p.zero[i] = 8
			}
		}
		return nil
	}
	zdata := tensors[quant.RoleZeroPoint]
	var zero []float32
	switch {
	case p.kind == codeAWQ:
		if zt.DType != safetensors.I32 || !shapeIs(zt.Shape, p.c, p.out/8) || n != p.r*p.c {
			return unsupportedf("AWQ qzeros %s%v", zt.DType, zt.Shape)
		}
		u, err := quant.UnpackAWQ(int32s(zdata), p.out)
		if err != nil {
			return unsupportedf("AWQ qzeros: %v", err)
		}
		zero = make([]float32, len(u))
		for i, v := range u {
			zero[i] = float32(v)
		}
		zero = transposeGrid(zero, p.c, p.out)
	case p.kind == codePacked && (s.Strategy == quant.StrategyGroup || s.Strategy == quant.StrategyChannel):
		if zt.DType != safetensors.I32 || len(zt.Shape) != 2 {
			return unsupportedf("zero point %s%v", zt.DType, zt.Shape)
		}
		z, err := quant.UnpackInt32Dim0(int32s(zdata), p.out, int(zt.Shape[1]), p.bits, quant.Dense)
		if err != nil {
			return unsupportedf("zero point: %v", err)
		}
		zero = make([]float32, len(z))
		for i, v := range z {
			zero[i] = float32(v)
		}
	default:
		var err error
		if zero, err = decodeZeroPoints(zt.DType, zdata); err != nil {
			return err
		}
		lo, hi := float32(-(int(1) << (s.Bits - 1))), float32(int(1)<<(s.Bits-1)-1)
		for _, v := range zero {
			if v != float32(math.Trunc(float64(v))) || v < lo || v > hi {
				return unsupportedf("zero point %v", v)
			}
		}
	}
	if len(zero) != n {
		return unsupportedf("%d zero points for %d scales", len(zero), n)
	}
	p.zero = zero
	return nil
}

// setGIdx reads weight_g_idx as codec/quant does: the group strategy, I32
// or I64 [in], every value a column of the scale grid.
func (p *intPlan) setGIdx(mod quant.Module, tensors map[quant.Role][]byte) error {
	t, ok := mod.Tensors[quant.RoleGIdx]
	if !ok {
		return nil
	}
	if mod.Scheme.Strategy != quant.StrategyGroup || p.kind == codeAWQ || (t.DType != safetensors.I32 && t.DType != safetensors.I64) {
		return unsupportedf("g_idx %s%v with %s", t.DType, t.Shape, mod.Scheme)
	}
	data := tensors[quant.RoleGIdx]
	size := t.DType.BitSize() / 8
	if len(t.Shape) != 1 || len(data)/size != p.in {
		return unsupportedf("g_idx %s%v for in = %d", t.DType, t.Shape, p.in)
	}
	p.gidx = make([]int32, p.in)
	for i := range p.gidx {
		var v int64
		if size == 4 {
			v = int64(int32(binary.LittleEndian.Uint32(data[4*i:])))
		} else {
			v = int64(binary.LittleEndian.Uint64(data[8*i:]))
		}
		if v < 0 || v >= int64(p.c) {
			return unsupportedf("g_idx %d for input column %d", v, i)
		}
		p.gidx[i] = int32(v)
	}
	return nil
}

// decodeZeroPoints reads unpacked zero points as float32, as codec/quant
// does (range-checked by the caller).
func decodeZeroPoints(dt safetensors.DType, data []byte) ([]float32, error) {
	var z []float32
	switch dt {
	case safetensors.I8:
		for _, b := range data {
			z = append(z, float32(int8(b)))
		}
	case safetensors.U8:
		for _, b := range data {
			z = append(z, float32(b))
		}
	case safetensors.I16:
		for i := 0; i+2 <= len(data); i += 2 {
			z = append(z, float32(int16(binary.LittleEndian.Uint16(data[i:]))))
		}
	case safetensors.I32:
		for i := 0; i+4 <= len(data); i += 4 {
			z = append(z, float32(int32(binary.LittleEndian.Uint32(data[i:]))))
		}
	case safetensors.I64:
		for i := 0; i+8 <= len(data); i += 8 {
			z = append(z, float32(float64(int64(binary.LittleEndian.Uint64(data[i:])))))
		}
	case safetensors.F32:
		for i := 0; i+4 <= len(data); i += 4 {
			z = append(z, math.Float32frombits(binary.LittleEndian.Uint32(data[i:])))
		}
	case safetensors.BF16:
		for i := 0; i+2 <= len(data); i += 2 {
			z = append(z, numeric.BF16ToF32(binary.LittleEndian.Uint16(data[i:])))
		}
	case safetensors.F16:
		for i := 0; i+2 <= len(data); i += 2 {
			z = append(z, numeric.F16ToF32(binary.LittleEndian.Uint16(data[i:])))
		}
	default:
		return nil, unsupportedf("zero point dtype %s", dt)
	}
	return z, nil
}

// int32s decodes little-endian int32 words.
func int32s(b []byte) []int32 {
	w := make([]int32, len(b)/4)
	for i := range w {
		w[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return w
}

// transposeGrid returns the [cols, rows] transpose of a row-major
// [rows, cols] grid.
func transposeGrid[T any](v []T, rows, cols int) []T {
	out := slices.Clone(v)
	for r := range rows {
		for c := range cols {
			out[c*rows+r] = v[r*cols+c]
		}
	}
	return out
}

// defaultNaNSign is the sign bit (as in F16 bits) of the NaN this host's
// float32 multiply makes of ±Inf × 0 (negative on x86, positive on arm64).
var defaultNaNSign = func() uint32 {
	return math.Float32bits(mulF32(float32(math.Inf(1)), 0)) >> 16 & 0x8000
}()

//go:noinline
func mulF32(a, b float32) float32 { return a * b }
