package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
)

// QuantizeWeight quantizes one dense Linear weight (BF16, F16 or F32 bytes,
// shape [out, in], named "<module>.weight") with qs and returns the module's
// output tensors in name order, in exactly the layout of formats.md §5.3
// (compressed-tensors) or §6 (native fp8):
//
//   - fp8-block: `weight` F8_E4M3 [out, in] and `weight_scale` (native:
//     `weight_scale_inv`, the multiplier despite its name)
//     [cdiv(out, bh), cdiv(in, bw)];
//   - int8: `weight` I8 [out, in] and `weight_scale` [out, 1];
//   - w4a16: `weight_packed` I32 [out, cdiv(in, 8)] (codes + 8, eight per
//     word, lowest nibble first, §5.5), `weight_scale` [out, cdiv(in, g)]
//     ([out, 1] per-channel), `weight_shape` I64 [2] = [out, in], and when
//     asymmetric `weight_zero_point` I32 [cdiv(out, 8), groups] packed
//     along out.
//
// Scales are stored in qs.ScaleDTypeFor(weight dtype). The result is a pure
// function of qs, the weight's dtype and shape, and its bytes.
//
// # Arithmetic
//
// compressed-tensors computes qparams with torch ops on tensors of the
// weight's dtype (the observer's amin/amax keep it, calculate_qparams
// divides by Python floats; §5.4), and torch evaluates an op on BF16 or F16
// tensors by widening the operands to float32, computing one float32 result
// and rounding it once, RNE, to the tensor's dtype. heft evaluates the same
// ops the same way in the scale dtype S (by default the weight's dtype, so
// for a BF16 model exactly the ops llm-compressor runs). Writing ⟦e⟧ for
// "e computed in float32, rounded to S" (exact widening back; identity for
// F32), per scale cell (a block, a row's group, or a row):
//
//	lo = min(min(cell), 0), hi = max(max(cell), 0)      exact; a partial edge
//	                                                    block's zero padding
//	                                                    cannot change them
//	symmetric:  s  = ⟦max(−lo, hi) / c⟧,  c = (qmax−qmin)/2:
//	                 448 (FP8), 127.5 (INT8), 7.5 (INT4)
//	asymmetric: r  = ⟦hi − lo⟧,  s = ⟦r / (qmax−qmin)⟧  (255 or 15)
//	            zp = RNE(clamp(⟦qmin − ⟦lo / s⟧⟧, qmin, qmax))
//	then:       s = 0 → eps(S) = 2^-7 (BF16), 2^-10 (F16), 2^-23 (F32)
//	            (native fp8: 1, transformers' all-zero-block scale, §6)
//
// The zero point is computed from s before the zero replacement, as
// calculate_qparams does; an all-zero cell makes it 0/0 = NaN, which torch
// casts to an undefined int8 and heft defines as 0 (any zero point
// dequantizes that cell to exact zeros).
//
// When the weight and S have the same 16-bit width, ⟦a/c⟧ is also the RNE of the exact quotient (an
// operand has at most 11 significant bits, so the exact quotient is either
// representable in float32 or farther from every tie of S than a float32
// rounding error), and, wherever the scale is a normal number of S, also
// what torch's CUDA kernels get by multiplying with the float32 reciprocal
// of a scalar divisor. The one exception: 39 F16 inputs whose quotient by
// 448 is an exact tie in F16's subnormal range (scales below 2^-14), which
// the reciprocal's error breaks the other way; heft divides, as torch does
// on CPU. TestScaleRoundingPaths checks all this on every input.
//
// A scale that overflows S is an error (ErrUnsupported: choose a wider
// scale dtype), and so is a cell whose codes could dequantize beyond the
// weight dtype's range (values within a few percent of its largest finite
// number: the symmetric INT scales put −absmax at qmin·s, up to 8/7.5 of
// absmax).
//
// Codes use the stored scale s exactly as saved and heft's deterministic
// rule (§5.4, §12), which is compressed-tensors' Triton path:
//
//	v = f32(x) / s            one float32 division (x widens exactly;
//	                          computed as float32(float64(x)·(1/s)),
//	                          which is the same, see quotients)
//	v = f32(v + zp)           asymmetric only, a float32 add
//	FP8: code = E4M3FN(clamp(v, −448, 448))   (numeric.F32ToE4M3FNSat)
//	INT: q = RNE(clamp(v, qmin, qmax))        (INT4 stored as q + 8)
//
// Clamping first matters: torch's fp8 cast does not saturate (|v| > 464
// would become NaN, §1.2), and ±448 < |v| ≤ 464 would otherwise depend on
// the cast. compressed-tensors' torch path instead rounds x/s to the weight
// dtype before clamping, a double rounding that moves a few percent of the
// codes of a BF16 model by one step (about 3% of FP8 codes, see
// TestQuantizeMatchesModelgenFP8); heft rounds once, like its Triton path.
//
// NaN and ±Inf weights are refused with an error wrapping ErrNonFinite
// that names the tensor and the first such element: they would silently
// turn a whole block's scale into NaN or Inf.
//
// Rows are split over GOMAXPROCS goroutines for large weights; every cell
// and every code is computed on its own, so the bytes never depend on the
// split.
func QuantizeWeight(qs QuantizeScheme, weight safetensors.TensorInfo, data []byte) ([]QuantizedTensor, error) {
	var buf QuantizeBuffers
	return QuantizeWeightInto(&buf, qs, weight, data)
}

// QuantizeBuffers holds the memory QuantizeWeightInto reuses from one call
// to the next: the output tensors and the per-cell scratch. A fresh 16 MiB
// code tensor costs page faults that take about as long as quantizing into
// it. The zero value is ready to use; a QuantizeBuffers must not be used by
// two calls at once.
type QuantizeBuffers struct {
	out   [4][]byte
	cells cellState
}

// cellState is the per-scale-cell scratch of one quantization.
type cellState struct {
	pos, neg []uint32  // largest |x| bits among non-negative / negative elements
	scale    []float32 // stored scales (values of the scale dtype)
	zp       []int32   // zero points (asymmetric)
}

// QuantizeWeightInto is QuantizeWeight with reusable memory: the returned
// tensors' Data alias buf and stay valid until the next call with buf.
func QuantizeWeightInto(buf *QuantizeBuffers, qs QuantizeScheme, weight safetensors.TensorInfo, data []byte) ([]QuantizedTensor, error) {
	k, specs, prefix, err := newQuantKernel(qs, weight, data, &buf.cells)
	if err != nil {
		return nil, err
	}
	res := make([]QuantizedTensor, len(specs))
	dst := make(map[Role][]byte, len(specs))
	for i, sp := range specs {
		buf.out[i] = grow(buf.out[i], sp.bytes())
		res[i] = QuantizedTensor{Name: prefix + "." + sp.suffix, Role: sp.role, DType: sp.dtype, Shape: sp.shape, Data: buf.out[i]}
		dst[sp.role] = buf.out[i]
	}
	if err := k.run(dst); err != nil {
		return nil, err
	}
	return res, nil
}

// QuantizeRoleInto computes only the output tensor of the given role
// (RoleCodes, RoleScale, RoleZeroPoint or RoleShape) into dst, which must
// have exactly its size: what a recipe that stores one output tensor needs.
// The bytes equal that tensor's Data from QuantizeWeight, and the same
// inputs are refused (a NaN weight fails for every role).
func QuantizeRoleInto(dst []byte, qs QuantizeScheme, weight safetensors.TensorInfo, data []byte, role Role) error {
	var cells cellState
	k, specs, prefix, err := newQuantKernel(qs, weight, data, &cells)
	if err != nil {
		return err
	}
	for _, sp := range specs {
		if sp.role != role {
			continue
		}
		if len(dst) != sp.bytes() {
			return invalidf(prefix+"."+sp.suffix, "", "destination of %d bytes, want %d for %s%s", len(dst), sp.bytes(), sp.dtype, fmtShape(sp.shape))
		}
		return k.run(map[Role][]byte{role: dst})
	}
	return invalidf(weight.Name, "role", "%s makes no %s tensor", qs.normalized().Name, role)
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// quantKernel is one weight's quantization, validated.
type quantKernel struct {
	name   string // the weight's name, for errors
	wd, sd safetensors.DType
	es     int // weight element size in bytes
	out    int
	in     int
	w      []byte

	rowDiv, colDiv int // rows and columns per scale cell
	sRows, sCols   int // the scale grid

	fp8        bool
	bits       int
	asym       bool
	qmin, qmax float32
	zeroScale  float32 // what a zero scale becomes

	c *cellState
}

func newQuantKernel(qs QuantizeScheme, weight safetensors.TensorInfo, data []byte, cells *cellState) (*quantKernel, []outSpec, string, error) {
	prefix, out, in, err := qs.checkWeight(weight)
	if err != nil {
		return nil, nil, "", err
	}
	qs = qs.normalized()
	k := &quantKernel{
		name: weight.Name, wd: weight.DType, sd: qs.ScaleDTypeFor(weight.DType),
		es: weight.DType.BitSize() / 8, out: out, in: in, w: data,
		rowDiv: 1, colDiv: in, asym: qs.Asymmetric, c: cells,
	}
	if len(data) != out*in*k.es {
		return nil, nil, "", invalidf(weight.Name, "", "%d bytes of data, but %s%s takes %d", len(data), weight.DType, fmtShape(weight.Shape), out*in*k.es)
	}
	switch qs.Name {
	case QuantFP8Block:
		k.fp8, k.bits = true, 8
		k.rowDiv, k.colDiv = qs.BlockSize[0], qs.BlockSize[1]
		k.qmin, k.qmax = -numeric.E4M3FNMax, numeric.E4M3FNMax
	case QuantInt8:
		k.bits, k.qmin, k.qmax = 8, -128, 127
	case QuantW4A16:
		k.bits, k.qmin, k.qmax = 4, -8, 7
		if qs.GroupSize > 0 {
			k.colDiv = qs.GroupSize
		}
	}
	k.sRows, k.sCols = cdiv(out, k.rowDiv), cdiv(in, k.colDiv)
	switch {
	case qs.Format == OutputFP8:
		k.zeroScale = 1
	case k.sd == safetensors.BF16:
		k.zeroScale = 0x1p-7 // torch.finfo(torch.bfloat16).eps
	case k.sd == safetensors.F16:
		k.zeroScale = 0x1p-10
	default:
		k.zeroScale = 0x1p-23
	}
	return k, qs.outputs(weight.DType, out, in), prefix, nil
}

// run computes the outputs whose roles dst has, into dst.
func (k *quantKernel) run(dst map[Role][]byte) error {
	n := k.sRows * k.sCols
	c := k.c
	c.pos, c.neg = growU32(c.pos, n), growU32(c.neg, n)
	c.scale = growF32(c.scale, n)
	if k.asym {
		c.zp = growI32(c.zp, n)
	}
	clear(c.pos)
	clear(c.neg)
	// Scan and derive each band of cells in the task that scans it: chunks
	// are aligned to whole cell rows. The first bad cell of each kind is
	// the minimum over all chunks, whatever the split.
	var mu sync.Mutex
	nonFinite, badScale := n, n
	k.parallel(k.rowDiv, func(r0, r1 int) {
		k.minMaxRows(r0, r1)
		nf, bs := k.params(r0/k.rowDiv*k.sCols, cdiv(r1, k.rowDiv)*k.sCols)
		if nf < n || bs < n {
			mu.Lock()
			nonFinite, badScale = min(nonFinite, nf), min(badScale, bs)
			mu.Unlock()
		}
	})
	if nonFinite < n {
		return k.nonFiniteError()
	}
	if badScale < n {
		return k.scaleError(badScale)
	}
	if b, ok := dst[RoleScale]; ok {
		k.writeScales(b)
	}
	if b, ok := dst[RoleZeroPoint]; ok {
		k.writeZeroPoints(b)
	}
	if b, ok := dst[RoleShape]; ok {
		binary.LittleEndian.PutUint64(b, uint64(k.out))
		binary.LittleEndian.PutUint64(b[8:], uint64(k.in))
	}
	if b, ok := dst[RoleCodes]; ok {
		k.parallel(1, func(r0, r1 int) { k.codeRows(b, r0, r1) })
	}
	return nil
}

func growU32(b []uint32, n int) []uint32 {
	if cap(b) < n {
		return make([]uint32, n)
	}
	return b[:n]
}

func growF32(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

func growI32(b []int32, n int) []int32 {
	if cap(b) < n {
		return make([]int32, n)
	}
	return b[:n]
}

// parallel calls work on disjoint row ranges covering [0, out), aligned to
// align rows (a block row's cells then belong to one call), in parallel for
// large weights.
func (k *quantKernel) parallel(align int, work func(r0, r1 int)) {
	workers := runtime.GOMAXPROCS(0)
	if workers == 1 || k.out*k.in < parallelMin {
		work(0, k.out)
		return
	}
	rows := cdiv(k.out, 4*workers) // a few chunks per worker balance uneven speeds
	rows = cdiv(rows, align) * align
	var g errgroup.Group
	g.SetLimit(workers)
	for r0 := 0; r0 < k.out; r0 += rows {
		r1 := min(r0+rows, k.out)
		g.Go(func() error {
			work(r0, r1)
			return nil
		})
	}
	_ = g.Wait() // work cannot fail
}

// Sign-magnitude views of the weight dtypes: |x| orders like the bits
// without the sign, and every NaN pattern lies above ±Inf, so integer
// maxima of the magnitude bits are the absolute maxima, and a maximum at or
// above the Inf pattern means the cell holds a non-finite value.
func (k *quantKernel) infBits() uint32 {
	switch k.wd {
	case safetensors.BF16:
		return 0x7F80
	case safetensors.F16:
		return 0x7C00
	}
	return 0x7F800000
}

// magnitude returns the value of magnitude bits a of the weight dtype.
func (k *quantKernel) magnitude(a uint32) float32 {
	switch k.wd {
	case safetensors.BF16:
		return numeric.BF16ToF32(uint16(a))
	case safetensors.F16:
		return numeric.F16ToF32(uint16(a))
	}
	return math.Float32frombits(a)
}

// minMaxRows folds rows [r0, r1) into their cells' magnitude maxima: pos
// over non-negative elements (all elements when symmetric, which only
// needs the absolute maximum), neg over negative ones.
func (k *quantKernel) minMaxRows(r0, r1 int) {
	c, es := k.c, k.es
	rowBytes := k.in * es
	for r := r0; r < r1; r++ {
		row := k.w[r*rowBytes : (r+1)*rowBytes]
		base := (r / k.rowDiv) * k.sCols
		for j := range k.sCols {
			seg := row[j*k.colDiv*es : min((j+1)*k.colDiv, k.in)*es]
			var p, n uint32
			switch {
			case es == 2 && !k.asym:
				p = absMax16(seg)
			case es == 2:
				p, n = signedMax16(seg)
			case !k.asym:
				p = absMax32(seg)
			default:
				p, n = signedMax32(seg)
			}
			c.pos[base+j] = max(c.pos[base+j], p)
			c.neg[base+j] = max(c.neg[base+j], n)
		}
	}
}

func absMax16(b []byte) uint32 {
	var m0, m1, m2, m3 uint16
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i : i+8])
		m0 = max(m0, uint16(v)&0x7FFF)
		m1 = max(m1, uint16(v>>16)&0x7FFF)
		m2 = max(m2, uint16(v>>32)&0x7FFF)
		m3 = max(m3, uint16(v>>48)&0x7FFF)
	}
	for ; i < len(b); i += 2 {
		m0 = max(m0, binary.LittleEndian.Uint16(b[i:])&0x7FFF)
	}
	return uint32(max(m0, m1, m2, m3))
}

// signedMax16 maps each element to an order-preserving int16 key (the
// magnitude bits flipped for negative values, so −0 < +0 and NaNs lie
// beyond ±Inf) and tracks the extreme keys, then turns them back into the
// magnitude of the largest non-negative and of the most negative element.
func signedMax16(b []byte) (pos, neg uint32) {
	key := func(u uint16) int16 { return int16(u ^ uint16(int16(u)>>15)&0x7FFF) }
	var lo0, hi0, lo1, hi1 int16
	i := 0
	for ; i+8 <= len(b); i += 8 {
		v := binary.LittleEndian.Uint64(b[i : i+8])
		k0, k1, k2, k3 := key(uint16(v)), key(uint16(v>>16)), key(uint16(v>>32)), key(uint16(v>>48))
		lo0, hi0 = min(lo0, k0, k2), max(hi0, k0, k2)
		lo1, hi1 = min(lo1, k1, k3), max(hi1, k1, k3)
	}
	for ; i < len(b); i += 2 {
		k := key(binary.LittleEndian.Uint16(b[i:]))
		lo0, hi0 = min(lo0, k), max(hi0, k)
	}
	lo, hi := min(lo0, lo1), max(hi0, hi1) // lo ≤ 0 ≤ hi: both start at +0
	if lo == 0 {
		return uint32(hi), 0
	}
	return uint32(hi), uint32(uint16(lo)^0x7FFF) & 0x7FFF
}

func absMax32(b []byte) uint32 {
	var m uint32
	for i := 0; i+4 <= len(b); i += 4 {
		m = max(m, binary.LittleEndian.Uint32(b[i:])&0x7FFFFFFF)
	}
	return m
}

// signedMax32 is signedMax16 for float32 elements.
func signedMax32(b []byte) (pos, neg uint32) {
	var lo, hi int32
	for i := 0; i+4 <= len(b); i += 4 {
		u := binary.LittleEndian.Uint32(b[i:])
		k := int32(u ^ uint32(int32(u)>>31)&0x7FFFFFFF)
		lo, hi = min(lo, k), max(hi, k)
	}
	if lo == 0 {
		return uint32(hi), 0
	}
	return uint32(hi), (uint32(lo) ^ 0x7FFFFFFF) & 0x7FFFFFFF
}

// nonFiniteError names the first NaN or ±Inf in row-major order (a
// sequential scan, only on this error path, so the message does not depend
// on the parallel split).
func (k *quantKernel) nonFiniteError() error {
	inf := k.infBits()
	signBit := uint32(1) << (8*k.es - 1)
	count, first := 0, -1
	var firstVal float32
	for i := range k.out * k.in {
		var u uint32
		if k.es == 2 {
			u = uint32(binary.LittleEndian.Uint16(k.w[2*i:]))
		} else {
			u = binary.LittleEndian.Uint32(k.w[4*i:])
		}
		if u&^signBit >= inf {
			if first < 0 {
				first, firstVal = i, k.magnitude(u&^signBit)
				if u&signBit != 0 {
					firstVal = -firstVal
				}
			}
			count++
		}
	}
	return &Error{Tensor: k.name, Reason: describeNonFinite(firstVal, first/k.in, first%k.in, count), Err: ErrNonFinite}
}

func describeNonFinite(v float32, r, c, count int) string {
	what := "NaN"
	switch {
	case math.IsInf(float64(v), 1):
		what = "+Inf"
	case math.IsInf(float64(v), -1):
		what = "-Inf"
	}
	s := fmt.Sprintf("%s at [%d, %d]", what, r, c)
	if count > 1 {
		s += fmt.Sprintf(" (%d non-finite values in all)", count)
	}
	return s + ": a NaN or infinite weight cannot be quantized"
}

// toScale rounds a float32 result to the scale dtype (RNE, no flush to
// zero) and widens it back, which is exact: ⟦·⟧ of the arithmetic notes.
func (k *quantKernel) toScale(x float32) float32 {
	switch k.sd {
	case safetensors.BF16:
		return numeric.BF16ToF32(numeric.F32ToBF16(x))
	case safetensors.F16:
		return numeric.F16ToF32(numeric.F32ToF16(x))
	}
	return x
}

// params computes the stored scale (and zero point) of cells [i0, i1) from
// their magnitude maxima, as QuantizeWeight's notes derive. It returns the
// first cell holding a non-finite value and the first whose scale is
// unusable (see scaleError), each n = len(scale) when there is none.
func (k *quantKernel) params(i0, i1 int) (nonFinite, badScale int) {
	c, inf, n := k.c, k.infBits(), len(k.c.scale)
	nonFinite, badScale = n, n
	for i := i0; i < i1; i++ {
		if c.pos[i] >= inf || c.neg[i] >= inf {
			nonFinite = min(nonFinite, i)
			continue
		}
		s, zp := k.cellParams(-k.magnitude(c.neg[i]), k.magnitude(c.pos[i]))
		if math.IsInf(float64(s), 0) || k.overflows(s, zp) {
			badScale = min(badScale, i)
		}
		c.scale[i] = s
		if k.asym {
			c.zp[i] = zp
		}
	}
	return nonFinite, badScale
}

// scaleError explains why cell i's scale is unusable: it overflows the
// scale dtype, or its codes could dequantize to ±Inf (see overflows).
func (k *quantKernel) scaleError(i int) error {
	r, col := i/k.sCols, i%k.sCols
	if s := k.c.scale[i]; math.IsInf(float64(s), 0) {
		return &Error{Tensor: k.name, Field: "scale_dtype",
			Reason: fmt.Sprintf("the scale of cell [%d, %d] overflows %s; choose F32 scales", r, col, k.sd),
			Err:    ErrUnsupported}
	}
	return &Error{Tensor: k.name,
		Reason: fmt.Sprintf("cell [%d, %d] holds values so close to the largest %s number that its codes would dequantize to ±Inf (overflow)", r, col, k.wd),
		Err:    ErrUnsupported}
}

// cellParams is one cell's scale and zero point from lo = min(min, 0) and
// hi = max(max, 0). Every line is one torch op: float32 arithmetic rounded
// to the scale dtype.
func (k *quantKernel) cellParams(lo, hi float32) (s float32, zp int32) {
	if !k.asym {
		half := (k.qmax - k.qmin) / 2 // 448, 127.5, 7.5: exact
		s = k.toScale(max(-lo, hi) / half)
	} else {
		r := k.toScale(hi - lo)
		s = k.toScale(r / (k.qmax - k.qmin))
		t := k.toScale(lo / s)
		z := k.toScale(k.qmin - t)
		switch {
		case z < k.qmin:
			z = k.qmin
		case z > k.qmax:
			z = k.qmax
		}
		if z == z { // NaN (an all-zero cell: 0/0) stays 0
			zp = int32(math.RoundToEven(float64(z)))
		}
	}
	if s == 0 {
		s = k.zeroScale
	}
	return s, zp
}

// overflows reports whether a code of the cell could dequantize, (q − zp)·s
// rounded to the weight's dtype as DequantModule does, to ±Inf. The
// symmetric scales map −absmax to qmin, a little beyond absmax (−128 vs
// −127.5 steps for INT8, −8 vs −7.5 for INT4), and a rounded-up scale can
// push ±448·s past the range, so this happens only to values within a few
// percent of the dtype's largest finite number.
func (k *quantKernel) overflows(s float32, zp int32) bool {
	var q float64 = numeric.E4M3FNMax
	if !k.fp8 {
		z := float64(zp)
		q = max(z-float64(k.qmin), float64(k.qmax)-z)
	}
	worst := float32(q * float64(s)) // exact product rounded once, as in float32
	switch k.wd {
	case safetensors.BF16:
		return numeric.F32ToBF16(worst)&0x7FFF == 0x7F80
	case safetensors.F16:
		return numeric.F32ToF16(worst)&0x7FFF == 0x7C00
	}
	return math.IsInf(float64(worst), 0)
}

// writeScales stores the scale grid, row-major, in the scale dtype (each
// value is exactly representable there).
func (k *quantKernel) writeScales(b []byte) {
	for i, s := range k.c.scale {
		switch k.sd {
		case safetensors.BF16:
			binary.LittleEndian.PutUint16(b[2*i:], numeric.F32ToBF16(s))
		case safetensors.F16:
			binary.LittleEndian.PutUint16(b[2*i:], numeric.F32ToF16(s))
		default:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(s))
		}
	}
}

// writeZeroPoints packs the [out, groups] INT4 zero points along out
// (packed_dim=0, §5.5): word (k, g) holds zp[8k+j, g] + 8 in nibble j;
// rows past out are zero bits.
func (k *quantKernel) writeZeroPoints(b []byte) {
	g := k.sCols
	for kw := range cdiv(k.out, 8) {
		for col := range g {
			var w uint32
			for j := range 8 {
				if r := 8*kw + j; r < k.out {
					w |= uint32(k.c.zp[r*g+col]+8) << (4 * j)
				}
			}
			binary.LittleEndian.PutUint32(b[4*(kw*g+col):], w)
		}
	}
}

// quotients sets v[i] = f32(f32(x_i / s) + z) for the weight elements in
// src (z = 0 when symmetric: adding +0 changes no quotient that matters,
// −0 becoming +0 rounds to the same code).
//
// The float32 quotient x/s is computed as float32(float64(x) · (1/s)),
// with 1/s rounded to float64: a multiply costs a fraction of a division,
// and the result is the same, for every float32 x and s. The float64
// product is within 2^-52 (relative) of x/s; x/s itself is never closer
// than 2^-48 to a float32 rounding boundary t (t has at most 25
// significant bits, x and s at most 24, so a nonzero x − s·t is at least
// one unit of the finer grid of x and s·t, ≥ 2^-48·|x|), and it can never
// be exactly on one (x would need the 25 bits of t's odd part); so both
// round to the same float32. TestReciprocalDivision checks this on every
// BF16 x against many scales.
func (k *quantKernel) quotients(v []float32, src []byte, s, z float32) {
	rcp := 1 / float64(s)
	switch k.wd {
	case safetensors.BF16:
		i := 0
		for ; i+4 <= len(v); i += 4 {
			w := binary.LittleEndian.Uint64(src[2*i : 2*i+8])
			d := v[i : i+4 : i+4]
			d[0] = float32(float64(math.Float32frombits(uint32(w)<<16)) * rcp)
			d[1] = float32(float64(math.Float32frombits(uint32(w>>16)<<16)) * rcp)
			d[2] = float32(float64(math.Float32frombits(uint32(w>>32)<<16)) * rcp)
			d[3] = float32(float64(math.Float32frombits(uint32(w>>48)<<16)) * rcp)
		}
		for ; i < len(v); i++ {
			v[i] = float32(float64(numeric.BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))) * rcp)
		}
	case safetensors.F16:
		for i := range v {
			v[i] = float32(float64(numeric.F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))) * rcp)
		}
	default:
		for i := range v {
			v[i] = float32(float64(math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))) * rcp)
		}
	}
	if z != 0 {
		for i, x := range v {
			v[i] = float32(x + z)
		}
	}
}

// rneMagic is 1.5·2^23: for |v| ≤ 2^22, float32(v + rneMagic) is an integer
// in [2^23, 2^24), where the float32 ulp is 1, so the add rounds v to an
// integer (RNE; rneMagic is even, so ties go to even v), and the low
// mantissa bits hold it, offset by rneMagic's.
const (
	rneMagic     float32 = 12582912
	rneMagicBits         = 0x4B400000
)

// rneClamp returns RNE(clamp(v, lo, hi)) for integer bounds within ±2^22.
func rneClamp(v, lo, hi float32) int32 {
	v = min(max(v, lo), hi)
	return int32(math.Float32bits(float32(v+rneMagic))) - rneMagicBits
}

// codeRows writes the codes of rows [r0, r1) into dst.
func (k *quantKernel) codeRows(dst []byte, r0, r1 int) {
	in, es := k.in, k.es
	v := make([]float32, in)
	var u []uint8
	if k.bits == 4 {
		u = make([]uint8, 8*packedWords(in, 4, Dense))
	}
	words := packedWords(in, 4, Dense)
	for r := r0; r < r1; r++ {
		row := k.w[r*in*es : (r+1)*in*es]
		base := (r / k.rowDiv) * k.sCols
		for j := range k.sCols {
			c0, c1 := j*k.colDiv, min((j+1)*k.colDiv, in)
			var z float32
			if k.asym {
				z = float32(k.c.zp[base+j])
			}
			k.quotients(v[c0:c1], row[c0*es:c1*es], k.c.scale[base+j], z)
		}
		switch {
		case k.fp8:
			numeric.F32ToE4M3FNSatSlice(dst[r*in:(r+1)*in], v)
		case k.bits == 8:
			d := dst[r*in : (r+1)*in]
			for c, x := range v {
				d[c] = byte(int8(rneClamp(x, k.qmin, k.qmax)))
			}
		default:
			for c, x := range v {
				u[c] = uint8(rneClamp(x, k.qmin, k.qmax) + 8)
			}
			clear(u[in:]) // the row's padding codes are zero bits (§5.5)
			d := dst[r*words*4 : (r+1)*words*4]
			for w := range words {
				x := u[8*w : 8*w+8 : 8*w+8]
				binary.LittleEndian.PutUint32(d[4*w:], uint32(x[0])|uint32(x[1])<<4|uint32(x[2])<<8|uint32(x[3])<<12|
					uint32(x[4])<<16|uint32(x[5])<<20|uint32(x[6])<<24|uint32(x[7])<<28)
			}
		}
	}
}
