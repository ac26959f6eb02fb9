package pjrtgpu

import (
	"encoding/binary"
	"math"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// intPlan is a validated integer dequantization the device takes: INT8
// codes (compressed-tensors int-quantized) or 4-bit codes packed eight to an
// int32 (pack-quantized, W4A16), with per-channel or per-group scales and
// optional zero points; every element is float32(float32(q − z)·s), as
// codec/quant computes it. The host decodes the small tensors (scales to
// float32 bits, zero points to float32 values) exactly as codec/quant does;
// the device does the per-element work.
type intPlan struct {
	out, in int
	packed  bool // 4-bit codes, words int32 [out, words]
	words   int
	r, c    int // scale (and zero-point) grid
	bh, bw  int // elements per grid cell
	dtype   safetensors.DType
	codes   []byte
	scale   []uint32  // float32 bits, [r, c]
	zero    []float32 // [r, c], nil without zero points
}

// intPlanFor validates a module for the device's integer kernel. Anything
// outside what the kernel implements, and any input codec/quant might
// refuse, gives ErrUnsupported, so the CPU kernel computes it or gives the
// proper error: no act-order g_idx, no AWQ, no FP8 here, scales of BF16,
// F16 or F32, zero points in range.
func intPlanFor(mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType, dstLen int) (*intPlan, error) {
	s := mod.Scheme
	p := &intPlan{dtype: dtype}
	switch {
	case dtype != safetensors.BF16 && dtype != safetensors.F32:
		return nil, unsupportedf("output dtype %s", dtype)
	case s.Type != quant.TypeInt:
		return nil, unsupportedf("%s codes", s.Type)
	case s.Format == quant.FormatCTInt && s.Bits == 8 && s.CodeDType == safetensors.I8:
	case s.Format == quant.FormatCTPacked && s.Bits == 4 && s.CodeDType == safetensors.I32:
		p.packed = true
	default:
		return nil, unsupportedf("format %s, %d-bit %s codes", s.Format, s.Bits, s.CodeDType)
	}
	if s.Strategy != quant.StrategyChannel && s.Strategy != quant.StrategyGroup {
		return nil, unsupportedf("strategy %s", s.Strategy)
	}
	for r := range mod.Tensors {
		switch r {
		case quant.RoleCodes, quant.RoleScale, quant.RoleZeroPoint, quant.RoleInputScale:
		case quant.RoleShape:
			if !p.packed {
				return nil, unsupportedf("module has a %s tensor", r)
			}
		default:
			return nil, unsupportedf("module has a %s tensor", r)
		}
	}
	out, in, err := mod.Dims(tensors)
	if err != nil {
		return nil, unsupportedf("%v", err)
	}
	if out <= 0 || in <= 0 || out > 1<<24 || in > 1<<24 {
		return nil, unsupportedf("shape [%d, %d]", out, in)
	}
	p.out, p.in = out, in
	ct := mod.Tensors[quant.RoleCodes]
	p.codes = tensors[quant.RoleCodes]
	if p.packed {
		p.words = (in + 7) / 8
		if !shapeIs(ct.Shape, out, p.words) || len(p.codes) != 4*out*p.words {
			return nil, unsupportedf("codes %v (%d bytes) for [%d, %d] packed", ct.Shape, len(p.codes), out, in)
		}
	} else if !shapeIs(ct.Shape, out, in) || len(p.codes) != out*in {
		return nil, unsupportedf("codes %v (%d bytes) for [%d, %d]", ct.Shape, len(p.codes), out, in)
	}
	if dstLen != out*in*dtype.BitSize()/8 {
		return nil, unsupportedf("destination of %d bytes", dstLen)
	}
	// Scales.
	st := mod.Tensors[quant.RoleScale]
	sdata := tensors[quant.RoleScale]
	if st.DType != safetensors.BF16 && st.DType != safetensors.F16 && st.DType != safetensors.F32 {
		return nil, unsupportedf("scale dtype %s", st.DType)
	}
	if want, err := st.DType.ByteLen(st.Shape); err != nil || uint64(len(sdata)) != want {
		return nil, unsupportedf("scale of %d bytes for %s%v", len(sdata), st.DType, st.Shape)
	}
	n := len(sdata) / (st.DType.BitSize() / 8)
	switch {
	case n == 1: // one scale, whatever the strategy says (as codec/quant)
		p.r, p.c, p.bh, p.bw = 1, 1, out, in
	case s.Strategy == quant.StrategyChannel && n == out:
		p.r, p.c, p.bh, p.bw = out, 1, 1, in
	case s.Strategy == quant.StrategyGroup && s.GroupSize > 0 && (in < s.GroupSize || in%s.GroupSize == 0) && n == out*cdiv(in, s.GroupSize):
		p.r, p.c, p.bh, p.bw = out, cdiv(in, s.GroupSize), 1, s.GroupSize
	default:
		return nil, unsupportedf("%d scales for %s [%d, %d]", n, s, out, in)
	}
	p.scale = make([]uint32, n)
	for i := range p.scale {
		switch st.DType {
		case safetensors.BF16:
			p.scale[i] = uint32(binary.LittleEndian.Uint16(sdata[2*i:])) << 16
		case safetensors.F16:
			p.scale[i] = math.Float32bits(numeric.F16ToF32(binary.LittleEndian.Uint16(sdata[2*i:])))
		default:
			p.scale[i] = binary.LittleEndian.Uint32(sdata[4*i:])
		}
	}
	// Zero points.
	zt, ok := mod.Tensors[quant.RoleZeroPoint]
	if !ok {
		return p, nil
	}
	zdata := tensors[quant.RoleZeroPoint]
	if want, err := zt.DType.ByteLen(zt.Shape); err != nil || uint64(len(zdata)) != want {
		return nil, unsupportedf("zero point of %d bytes for %s%v", len(zdata), zt.DType, zt.Shape)
	}
	if p.packed && n > 1 {
		// Packed along out, eight to an int32, like the codes.
		if zt.DType != safetensors.I32 || !shapeIs(zt.Shape, (out+7)/8, p.c) || len(zdata) != 4*((out+7)/8)*p.c {
			return nil, unsupportedf("zero point %s%v", zt.DType, zt.Shape)
		}
		words := make([]int32, len(zdata)/4)
		for i := range words {
			words[i] = int32(binary.LittleEndian.Uint32(zdata[4*i:]))
		}
		z, err := quant.UnpackInt32Dim0(words, out, p.c, 4, quant.Dense)
		if err != nil {
			return nil, unsupportedf("zero point: %v", err)
		}
		p.zero = make([]float32, len(z))
		for i, v := range z {
			p.zero[i] = float32(v)
		}
		return p, nil
	}
	lo, hi := -(1 << (s.Bits - 1)), 1<<(s.Bits-1)-1
	var zero []float32
	switch zt.DType {
	case safetensors.I8:
		for _, b := range zdata {
			zero = append(zero, float32(int8(b)))
		}
	case safetensors.I32:
		for i := 0; i+4 <= len(zdata); i += 4 {
			zero = append(zero, float32(int32(binary.LittleEndian.Uint32(zdata[i:]))))
		}
	case safetensors.F32:
		for i := 0; i+4 <= len(zdata); i += 4 {
			zero = append(zero, math.Float32frombits(binary.LittleEndian.Uint32(zdata[i:])))
		}
	default:
		return nil, unsupportedf("zero point dtype %s", zt.DType)
	}
	if len(zero) != n {
		return nil, unsupportedf("%d zero points for %d scales", len(zero), n)
	}
	for _, v := range zero {
		if v != float32(math.Trunc(float64(v))) || v < float32(lo) || v > float32(hi) {
			return nil, unsupportedf("zero point %v", v)
		}
	}
	p.zero = zero
	return p, nil
}
