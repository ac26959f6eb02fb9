package quant

import (
	"encoding/binary"
)

// Lossless AutoAWQ GEMM ↔ compressed-tensors pack-quantized W4A16 (§7, §12):
// the codes and zero points are re-packed, the scales transposed and kept
// bit for bit, so (q_ct − zp_ct)·s = (u − z)·s and both dequantize to the
// same bytes.

// AWQTensors are the raw little-endian bytes of one AutoAWQ GEMM module,
// K-major.
type AWQTensors struct {
	QWeight []byte // I32 [in, out/8]
	// QZeros is I32 [in/group, out/8]; nil means every zero point is 8
	// (a zero_point=false model).
	QZeros []byte
	Scales []byte // 2-byte floats (F16 for AutoAWQ) [in/group, out]
}

// PackedTensors are the raw bytes of one compressed-tensors pack-quantized
// 4-bit group module.
type PackedTensors struct {
	WeightPacked []byte // I32 [out, in/8]
	WeightScale  []byte // 2-byte floats, same dtype as the AWQ scales, [out, in/group]
	// WeightZeroPoint is I32 [cdiv(out, 8), in/group], packed along out;
	// nil for a symmetric scheme.
	WeightZeroPoint []byte
	WeightShape     []byte // I64 [2] = [out, in]
}

// checkAWQDims enforces what both AWQ and the conversion need: out a
// multiple of 8 and group dividing in (§12 "CT W4A16 → AutoAWQ").
func checkAWQDims(out, in, group int) error {
	if out < 0 || in < 0 || out > maxDim || in > maxDim || out*in > maxElems || out%8 != 0 {
		return invalidf("", "shape", "[%d, %d]: AWQ needs out a multiple of 8", out, in)
	}
	if group <= 0 || in%group != 0 {
		return invalidf("", "group_size", "group size %d does not divide in = %d", group, in)
	}
	return nil
}

func wantLen(name string, b []byte, n int) error {
	if len(b) != n {
		return invalidf(name, "", "%d bytes, want %d", len(b), n)
	}
	return nil
}

// AWQToPacked converts one AutoAWQ GEMM module of weight shape [out, in] to
// compressed-tensors pack-quantized (CT's AutoAWQConverter): unpack and
// de-interleave, q_ct = u − 8 and zp_ct = z − 8, transpose to [out, in],
// pack codes along in and zero points along out. With a.QZeros nil the
// result is symmetric (no zero point).
func AWQToPacked(out, in, group int, a AWQTensors) (PackedTensors, error) {
	if err := checkAWQDims(out, in, group); err != nil {
		return PackedTensors{}, err
	}
	groups := in / group
	if err := wantLen("qweight", a.QWeight, in*out/2); err != nil {
		return PackedTensors{}, err
	}
	if err := wantLen("scales", a.Scales, 2*groups*out); err != nil {
		return PackedTensors{}, err
	}
	u, err := UnpackAWQ(int32sFromBytes(a.QWeight), out)
	if err != nil {
		return PackedTensors{}, err
	}
	// u is [in, out]; CT wants q = u − 8 as [out, in].
	q := make([]int8, out*in)
	for k := range in {
		for n := range out {
			q[n*in+k] = int8(u[k*out+n]) - 8
		}
	}
	packed, err := PackInt32(q, in, 4, Dense)
	if err != nil {
		return PackedTensors{}, err
	}
	p := PackedTensors{
		WeightPacked: int32sToBytes(packed),
		WeightScale:  transpose16(a.Scales, groups, out),
		WeightShape:  make([]byte, 16),
	}
	binary.LittleEndian.PutUint64(p.WeightShape, uint64(out))
	binary.LittleEndian.PutUint64(p.WeightShape[8:], uint64(in))
	if a.QZeros != nil {
		if err := wantLen("qzeros", a.QZeros, groups*out/2); err != nil {
			return PackedTensors{}, err
		}
		z, err := UnpackAWQ(int32sFromBytes(a.QZeros), out)
		if err != nil {
			return PackedTensors{}, err
		}
		zp := make([]int8, out*groups) // [out, groups]
		for g := range groups {
			for n := range out {
				zp[n*groups+g] = int8(z[g*out+n]) - 8
			}
		}
		pz, err := PackInt32Dim0(zp, out, groups, 4, Dense)
		if err != nil {
			return PackedTensors{}, err
		}
		p.WeightZeroPoint = int32sToBytes(pz)
	}
	return p, nil
}

// PackedToAWQ is the inverse of AWQToPacked. A symmetric module (no zero
// point) gets qzeros of all 8s, which AutoAWQ and vLLM's awq loaders need.
// Scales are copied as 2-byte values: AutoAWQ expects F16, and converting
// BF16 scales to F16 is the caller's (possibly lossy) decision.
func PackedToAWQ(out, in, group int, p PackedTensors) (AWQTensors, error) {
	if err := checkAWQDims(out, in, group); err != nil {
		return AWQTensors{}, err
	}
	groups := in / group
	if err := wantLen("weight_shape", p.WeightShape, 16); err != nil {
		return AWQTensors{}, err
	}
	if o, i := binary.LittleEndian.Uint64(p.WeightShape), binary.LittleEndian.Uint64(p.WeightShape[8:]); o != uint64(out) || i != uint64(in) {
		return AWQTensors{}, invalidf("weight_shape", "", "[%d, %d], want [%d, %d]", int64(o), int64(i), out, in)
	}
	if err := wantLen("weight_packed", p.WeightPacked, out*packedWords(in, 4, Dense)*4); err != nil {
		return AWQTensors{}, err
	}
	if err := wantLen("weight_scale", p.WeightScale, 2*out*groups); err != nil {
		return AWQTensors{}, err
	}
	q, err := UnpackInt32(int32sFromBytes(p.WeightPacked), in, 4, Dense)
	if err != nil {
		return AWQTensors{}, err
	}
	u := make([]uint8, in*out) // [in, out]
	for n := range out {
		for k := range in {
			u[k*out+n] = uint8(q[n*in+k] + 8)
		}
	}
	qw, err := PackAWQ(u, out)
	if err != nil {
		return AWQTensors{}, err
	}
	z := make([]uint8, groups*out) // [groups, out]
	if p.WeightZeroPoint == nil {
		for i := range z {
			z[i] = 8
		}
	} else {
		if err := wantLen("weight_zero_point", p.WeightZeroPoint, 4*packedWords(out, 4, Dense)*groups); err != nil {
			return AWQTensors{}, err
		}
		zp, err := UnpackInt32Dim0(int32sFromBytes(p.WeightZeroPoint), out, groups, 4, Dense)
		if err != nil {
			return AWQTensors{}, err
		}
		for n := range out {
			for g := range groups {
				z[g*out+n] = uint8(zp[n*groups+g] + 8)
			}
		}
	}
	qz, err := PackAWQ(z, out)
	if err != nil {
		return AWQTensors{}, err
	}
	return AWQTensors{
		QWeight: int32sToBytes(qw),
		QZeros:  int32sToBytes(qz),
		Scales:  transpose16(p.WeightScale, out, groups),
	}, nil
}

// transpose16 transposes a row-major [rows, cols] matrix of 2-byte values.
func transpose16(b []byte, rows, cols int) []byte {
	out := make([]byte, len(b))
	for r := range rows {
		for c := range cols {
			copy(out[2*(c*rows+r):], b[2*(r*cols+c):2*(r*cols+c)+2])
		}
	}
	return out
}
