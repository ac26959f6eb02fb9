//go:build cgo && linux

package pjrtgpu

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/stablehlo"
	"github.com/gomlx/go-xla/types"
	"github.com/gomlx/go-xla/types/shapes"

	"github.com/heft-dev/heft/codec/safetensors"
)

// The StableHLO programs. Each builder returns the program text for one
// shape; Device caches the compiled executables by the key that names the
// shape. The bit-exact kernels use float operations only where IEEE 754
// fixes their result and no float32 subnormal can be an operand or a result
// (exact float64 products, conversions of normal values), and integer
// arithmetic for the rest (BF16 rounding, FP8 encoding, subnormal
// results), so that they do not depend on whether a device flushes
// subnormals; the one exception, DequantF32, is probed on each device
// before use (see DequantKernels). The SVD's programs are in kernels_svd.go.

type value = stablehlo.Value

// graph wraps a StableHLO builder with a sticky error, so that programs read
// as formulas: once an operation fails, the others return nil and Build
// reports the first error.
type graph struct {
	b   *stablehlo.Builder
	fn  *stablehlo.Function
	err error
	// noIf builds without stablehlo.if (a fallback for a plugin that
	// cannot compile conditionals whose branches capture values).
	noIf bool
}

var errNilValue = errors.New("pjrtgpu: operation on a failed value")

func newGraph(name string) *graph {
	b := stablehlo.New(name)
	return &graph{b: b, fn: b.Main()}
}

func (g *graph) keep(v *value, err error) *value {
	if g.err != nil {
		return nil
	}
	if err != nil {
		g.err = err
		return nil
	}
	return v
}

func (g *graph) ok(vs ...*value) bool {
	if g.err != nil {
		return false
	}
	for _, v := range vs {
		if v == nil {
			g.err = errNilValue
			return false
		}
	}
	return true
}

func (g *graph) input(name string, dt dtypes.DType, dims ...int) *value {
	if g.err != nil {
		return nil
	}
	return g.keep(g.fn.NamedInput(name, shapes.Make(dt, dims...)))
}

// build returns the program text returning outs.
func (g *graph) build(outs ...*value) ([]byte, error) {
	if !g.ok(outs...) {
		return nil, g.err
	}
	if err := g.fn.Return(outs...); err != nil {
		return nil, err
	}
	return g.b.Build()
}

func (g *graph) bin(f func(a, b *value) (*value, error), a, b *value) *value {
	if !g.ok(a, b) {
		return nil
	}
	return g.keep(f(a, b))
}

func (g *graph) un(f func(a *value) (*value, error), a *value) *value {
	if !g.ok(a) {
		return nil
	}
	return g.keep(f(a))
}

// full is the scalar c (whose Go type must be like's dtype) broadcast to
// like's shape.
func (g *graph) full(like *value, c any) *value {
	if !g.ok(like) {
		return nil
	}
	if dt := dtypes.FromAny(c); dt != like.Shape().DType {
		g.err = fmt.Errorf("pjrtgpu: constant %T for a %s value", c, like.Shape().DType)
		return nil
	}
	s := g.keep(g.fn.ConstantFromScalar(c))
	if s == nil {
		return nil
	}
	return g.keep(stablehlo.BroadcastInDim(s, like.Shape(), nil))
}

func (g *graph) convert(x *value, dt dtypes.DType) *value {
	if !g.ok(x) {
		return nil
	}
	return g.keep(stablehlo.Convert(x, dt))
}

func (g *graph) bitcast(x *value, dt dtypes.DType) *value {
	if !g.ok(x) {
		return nil
	}
	return g.keep(stablehlo.BitcastConvert(x, dt))
}

func (g *graph) cmp(a *value, dir types.ComparisonDirection, c any) *value {
	b := g.full(a, c)
	if !g.ok(a, b) {
		return nil
	}
	ct := types.CompareUnsigned
	switch a.Shape().DType {
	case dtypes.Float32, dtypes.Float64:
		ct = types.CompareFloat
	case dtypes.Int32, dtypes.Int64:
		ct = types.CompareSigned
	}
	return g.keep(stablehlo.Compare(a, b, dir, ct))
}

func (g *graph) sel(pred, onTrue, onFalse *value) *value {
	if !g.ok(pred, onTrue, onFalse) {
		return nil
	}
	return g.keep(stablehlo.Select(pred, onTrue, onFalse))
}

// Integer helpers on a value and a constant of its dtype.
func (g *graph) andC(x *value, c any) *value { return g.bin(stablehlo.And, x, g.full(x, c)) }
func (g *graph) orV(x, y *value) *value      { return g.bin(stablehlo.Or, x, y) }
func (g *graph) addC(x *value, c any) *value { return g.bin(stablehlo.Add, x, g.full(x, c)) }
func (g *graph) shr(x *value, c any) *value {
	return g.bin(stablehlo.ShiftRightLogical, x, g.full(x, c))
}
func (g *graph) shl(x *value, c any) *value { return g.bin(stablehlo.ShiftLeft, x, g.full(x, c)) }

// blockGrid broadcasts an [R, C] grid of per-block values to [out, in]:
// element (r, c) takes grid[r/bh, c/bw]; partial edge blocks are cut off.
func (g *graph) blockGrid(s *value, out, in, bh, bw int) *value {
	if !g.ok(s) {
		return nil
	}
	dims := s.Shape().Dimensions
	r, c := dims[0], dims[1]
	dt := s.Shape().DType
	x := g.keep(stablehlo.BroadcastInDim(s, shapes.Make(dt, r, bh, c, bw), []int{0, 2}))
	if !g.ok(x) {
		return nil
	}
	x = g.keep(stablehlo.Reshape(x, shapes.Make(dt, r*bh, c*bw)))
	if r*bh == out && c*bw == in {
		return x
	}
	if !g.ok(x) {
		return nil
	}
	return g.keep(stablehlo.Slice(x, []int{0, 0}, []int{out, in}, []int{1, 1}))
}

// materialize puts an optimization barrier after x: a small grid computed
// once (scales widened to float64) rather than again for every element its
// broadcast reaches, which is what fusion would otherwise do.
func (g *graph) materialize(x *value) *value {
	if !g.ok(x) {
		return nil
	}
	outs, err := stablehlo.OptimizationBarrier(x)
	if err != nil {
		g.err = err
		return nil
	}
	return outs[0]
}

// maxFn returns a scalar max closure for Reduce.
func (g *graph) maxFn(dt dtypes.DType) *stablehlo.Function {
	f := g.fn.Closure()
	a := g.keep(f.Input(shapes.Make(dt)))
	b := g.keep(f.Input(shapes.Make(dt)))
	if g.ok(a, b) {
		m := g.keep(stablehlo.Maximum(a, b))
		if g.ok(m) {
			if err := f.Return(m); err != nil {
				g.err = err
			}
		}
	}
	return f
}

func (g *graph) addFn(dt dtypes.DType) *stablehlo.Function {
	f := g.fn.Closure()
	a := g.keep(f.Input(shapes.Make(dt)))
	b := g.keep(f.Input(shapes.Make(dt)))
	if g.ok(a, b) {
		m := g.keep(stablehlo.Add(a, b))
		if g.ok(m) {
			if err := f.Return(m); err != nil {
				g.err = err
			}
		}
	}
	return f
}

func (g *graph) reduce(x *value, init any, fn *stablehlo.Function, axes ...int) *value {
	if !g.ok(x) {
		return nil
	}
	i := g.keep(g.fn.ConstantFromScalar(init))
	if !g.ok(i) {
		return nil
	}
	return g.keep(stablehlo.Reduce(x, i, fn, axes...))
}

// dot contracts axis lc of a with axis rc of b (2-D operands), in float32
// with Highest precision (true float32 products on GPUs, no TF32), or, when
// bf16 is set, with both operands rounded to BF16 and float32 accumulation.
// BF16 operands are taken as they are.
func (g *graph) dot(a *value, lc int, b *value, rc int, bf16 bool) *value {
	if !g.ok(a, b) {
		return nil
	}
	if bf16 {
		if a.Shape().DType != dtypes.BFloat16 {
			a = g.convert(a, dtypes.BFloat16)
		}
		if b.Shape().DType != dtypes.BFloat16 {
			b = g.convert(b, dtypes.BFloat16)
		}
		if !g.ok(a, b) {
			return nil
		}
		return g.keep(stablehlo.DotGeneral(a, []int{lc}, nil, b, []int{rc}, nil).OutputDType(dtypes.Float32).Done())
	}
	return g.keep(stablehlo.DotGeneral(a, []int{lc}, nil, b, []int{rc}, nil).
		Precision(types.DotGeneralPrecisionHighest, types.DotGeneralPrecisionHighest).OutputDType(dtypes.Float32).Done())
}

// progSmoke: exp of a small vector and its dot with itself. exp needs
// libdevice and every fusion needs ptxas, so a CUDA setup missing either
// fails here rather than at the first real compile (gpu.md §6).
func progSmoke() ([]byte, error) {
	g := newGraph("heft_smoke")
	x := g.input("x", dtypes.Float32, 8)
	e := g.un(stablehlo.Exponential, x)
	d := g.dot(x, 0, x, 0, false)
	return g.build(e, d)
}

// progConcat joins row chunks of one matrix (uploaded concurrently).
func progConcat(dt dtypes.DType, rows []int, cols int) ([]byte, error) {
	g := newGraph("heft_concat")
	ins := make([]*value, len(rows))
	for i, r := range rows {
		ins[i] = g.input(fmt.Sprintf("part%d", i), dt, r, cols)
	}
	if !g.ok(ins...) {
		return nil, g.err
	}
	return g.build(g.keep(stablehlo.Concatenate(0, ins...)))
}

// The float conversions below are integer operations on the bits: devices
// may flush subnormal inputs and results of float arithmetic to zero (XLA's
// CPU backend does; GPUs may with --xla_gpu_ftz), and an exact result must
// not depend on that. The only float arithmetic left is exact: float64
// products of values with at most 24 and 28 significant bits, and
// small-integer conversions scaled by powers of two, all far from float64's
// subnormal range.

// f16Bits widens IEEE half bits (u32) to float32 bits as numeric.F16ToF32:
// exact, subnormals included, NaN payloads kept.
func (g *graph) f16Bits(h *value) *value {
	sign := g.shl(g.andC(h, uint32(0x8000)), uint32(16))
	e := g.andC(g.shr(h, uint32(10)), uint32(0x1F))
	m := g.andC(h, uint32(0x3FF))
	normal := g.orV(sign, g.orV(g.shl(g.addC(e, uint32(112)), uint32(23)), g.shl(m, uint32(13))))
	special := g.orV(sign, g.orV(g.full(m, uint32(0x7F800000)), g.shl(m, uint32(13))))
	mf := g.convert(m, dtypes.Float32)
	sub := g.orV(sign, g.bitcast(g.bin(stablehlo.Multiply, mf, g.full(mf, float32(0x1p-24))), dtypes.Uint32))
	return g.sel(g.cmp(e, types.CompareEQ, uint32(0)), sub, g.sel(g.cmp(e, types.CompareEQ, uint32(31)), special, normal))
}

// f32ToF64 widens float32 bits (u32) to a float64 value, exactly.
func (g *graph) f32ToF64(u *value) *value {
	w := g.convert(u, dtypes.Uint64)
	sign := g.shl(g.shr(w, uint64(31)), uint64(63))
	e := g.andC(g.shr(w, uint64(23)), uint64(0xFF))
	m := g.andC(w, uint64(0x7FFFFF))
	normal := g.orV(sign, g.orV(g.shl(g.addC(e, uint64(896)), uint64(52)), g.shl(m, uint64(29))))
	special := g.orV(sign, g.orV(g.full(m, uint64(0x7FF0000000000000)), g.shl(m, uint64(29))))
	mf := g.convert(m, dtypes.Float64)
	sub := g.orV(sign, g.bitcast(g.bin(stablehlo.Multiply, mf, g.full(mf, float64(0x1p-149))), dtypes.Uint64))
	bits := g.sel(g.cmp(e, types.CompareEQ, uint64(0)), sub, g.sel(g.cmp(e, types.CompareEQ, uint64(255)), special, normal))
	return g.bitcast(bits, dtypes.Float64)
}

// f64ToF32Bits rounds float64 values to float32 (RNE, subnormals and
// overflow to ±Inf included) and returns the bits (u32); NaN becomes
// 0x7FC00000 with the sign kept.
func (g *graph) f64ToF32Bits(p *value) *value {
	u := g.bitcast(p, dtypes.Uint64)
	sign := g.convert(g.andC(g.shr(u, uint64(32)), uint64(0x80000000)), dtypes.Uint32)
	a := g.andC(u, uint64(0x7FFFFFFFFFFFFFFF))
	e := g.shr(a, uint64(52))
	// Normal float32 results: rebias and round the 29 dropped bits in one
	// integer add; a carry moves into the exponent, past 0x7F800000 is Inf.
	t := g.bin(stablehlo.Subtract, a, g.full(a, uint64(896)<<52))
	odd := g.andC(g.shr(t, uint64(29)), uint64(1))
	nr := g.shr(g.bin(stablehlo.Add, g.addC(t, uint64(0x0FFFFFFF)), odd), uint64(29))
	nr = g.bin(stablehlo.Minimum, nr, g.full(nr, uint64(0x7F800000)))
	// Subnormal results: m·2^-149 with m = RNE(mantissa >> shift).
	mi := g.orV(g.andC(a, uint64(1)<<52-1), g.full(a, uint64(1)<<52))
	shift := g.bin(stablehlo.Minimum, g.bin(stablehlo.Subtract, g.full(e, uint64(926)), e), g.full(e, uint64(63)))
	q := g.bin(stablehlo.ShiftRightLogical, mi, shift)
	one := g.full(q, uint64(1))
	rem := g.bin(stablehlo.And, mi, g.bin(stablehlo.Subtract, g.bin(stablehlo.ShiftLeft, one, shift), one))
	half := g.bin(stablehlo.ShiftLeft, one, g.bin(stablehlo.Subtract, shift, one))
	gt := g.keep(stablehlo.Compare(rem, half, types.CompareGT, types.CompareUnsigned))
	eq := g.keep(stablehlo.Compare(rem, half, types.CompareEQ, types.CompareUnsigned))
	qOdd := g.cmp(g.andC(q, uint64(1)), types.CompareEQ, uint64(1))
	up := g.bin(stablehlo.Or, gt, g.bin(stablehlo.And, eq, qOdd))
	sr := g.sel(up, g.bin(stablehlo.Add, q, one), q)
	mag := g.sel(g.cmp(e, types.CompareGE, uint64(897)), nr, sr)
	mag = g.sel(g.cmp(a, types.CompareEQ, uint64(0)), g.full(a, uint64(0)), mag)
	mag = g.sel(g.cmp(a, types.CompareGT, uint64(0x7FF0000000000000)), g.full(a, uint64(0x7FC00000)), mag)
	return g.orV(g.convert(mag, dtypes.Uint32), sign)
}

// scaleInput declares an [r, c] scale grid of a safetensors dtype (BF16 and
// F16 uploaded as bits) and returns it as float64 (exact).
func (g *graph) scaleInput(name string, sd safetensors.DType, r, c int) *value {
	switch sd {
	case safetensors.F32:
		return g.f32ToF64(g.input(name, dtypes.Uint32, r, c))
	case safetensors.BF16:
		s := g.convert(g.input(name, dtypes.Uint16, r, c), dtypes.Uint32)
		return g.f32ToF64(g.shl(s, uint32(16)))
	case safetensors.F16:
		s := g.convert(g.input(name, dtypes.Uint16, r, c), dtypes.Uint32)
		return g.f32ToF64(g.f16Bits(s))
	}
	g.err = fmt.Errorf("pjrtgpu: scale dtype %s", sd)
	return nil
}

// weightInput declares an [out, in] weight of a safetensors float dtype,
// uploaded as its bits, and returns the bits (u32) and the value as
// float64 (exact).
func (g *graph) weightInput(wd safetensors.DType, out, in int) (bits, val *value) {
	switch wd {
	case safetensors.BF16:
		bits = g.convert(g.input("w", dtypes.Uint16, out, in), dtypes.Uint32)
		val = g.f32ToF64(g.shl(bits, uint32(16)))
	case safetensors.F16:
		bits = g.convert(g.input("w", dtypes.Uint16, out, in), dtypes.Uint32)
		val = g.f32ToF64(g.f16Bits(bits))
	case safetensors.F32:
		bits = g.input("w", dtypes.Uint32, out, in)
		val = g.f32ToF64(bits)
	default:
		g.err = fmt.Errorf("pjrtgpu: weight dtype %s", wd)
	}
	return bits, val
}

// progDequantFP8 dequantizes F8_E4M3 codes [out, in] (uploaded as bytes)
// with [bh, bw] block scales of sd into BF16 bits (u16; RNE by integer
// arithmetic, every NaN 0x7FC0, as numeric.F32ToBF16) or float32 values,
// with one of the DequantKernels:
//
//   - DequantF32: the codes are bitcast to float8_e4m3fn and converted to
//     float32 (exact), the scales converted to float32 (exact), and
//     multiplied in float32: the CPU's own operation, exact where the device
//     keeps float32 subnormals.
//   - DequantF64: the same codes converted to float64, the scales widened
//     to float64 exactly (subnormal ones by integer arithmetic), the exact
//     float64 product rounded to float32 by the conversion (normal results)
//     or by rounding p·2^149 to an integer, the subnormal result's bits.
//   - DequantInt: integer decode of the codes into float64 bits, float64
//     product, rounding to float32 by integer arithmetic.
func progDequantFP8(out, in, bh, bw int, sd, dtype safetensors.DType, kernel string) ([]byte, error) {
	return progDequantFP8Batch([]fp8Shape{{out: out, in: in, bh: bh, bw: bw, sd: sd, dtype: dtype, kernel: kernel}})
}

// fp8Shape is one dequantization of a batch program.
type fp8Shape struct {
	out, in, bh, bw int
	sd, dtype       safetensors.DType
	kernel          string
	// pack writes a BF16 output with an even number of columns (and an
	// even block width) as u32 words [out, in/2], two BF16 values each (the
	// even column in the low half): the same bytes as [out, in] u16 on a
	// little-endian device, stored four bytes at a time (see packs and
	// Device.SetDequantPack).
	pack bool
}

// progDequantFP8Batch dequantizes several modules in one program (inputs
// codes0, scale0, codes1, …; one output each), so that many small tensors
// pay one launch.
func progDequantFP8Batch(shapes []fp8Shape) ([]byte, error) {
	g := newGraph("heft_dequant_fp8")
	outs := make([]*value, len(shapes))
	f8 := false
	for i, s := range shapes {
		outs[i] = g.dequantFP8(i, s)
		f8 = f8 || s.kernel != DequantInt
	}
	prog, err := g.build(outs...)
	if err != nil || !f8 {
		return prog, err
	}
	var dims [][2]int
	for _, s := range shapes {
		d := [2]int{s.out, s.in}
		if s.packs() {
			d[1] /= 2
		}
		if s.kernel != DequantInt && !slices.Contains(dims, d) {
			dims = append(dims, d)
		}
	}
	return patchF8(prog, dims)
}

// dequantFP8 declares batch item i's inputs and returns its output.
func (g *graph) dequantFP8(i int, s fp8Shape) *value {
	r, c := cdiv(s.out, s.bh), cdiv(s.in, s.bw)
	codes := g.input(fmt.Sprintf("codes%d", i), dtypes.Uint8, s.out, s.in)
	scaleName := fmt.Sprintf("scale%d", i)
	var scale *value // the [r, c] scales as the kernel multiplies them
	switch s.kernel {
	case DequantF32:
		scale = g.scaleF32(scaleName, s.sd, r, c)
	case DequantF64:
		scale = g.materialize(g.scaleF64(scaleName, s.sd, r, c))
	case DequantInt:
		scale = g.scaleInput(scaleName, s.sd, r, c)
	default:
		g.err = fmt.Errorf("pjrtgpu: dequant kernel %q", s.kernel)
		return nil
	}
	// f32Bits returns the float32 bits of code × scale for codes [out, in]
	// whose scale blocks are bw columns wide.
	f32Bits := func(codes *value, in, bw int) *value {
		grid := g.blockGrid(scale, s.out, in, s.bh, bw)
		switch s.kernel {
		case DequantF32:
			a := g.convert(g.bitcast(codes, dtypes.Int8), dtypes.Float32) // Int8 is patched to f8E4M3FN
			return g.bitcast(g.bin(stablehlo.Multiply, a, grid), dtypes.Uint32)
		case DequantF64:
			a := g.convert(g.bitcast(codes, dtypes.Int8), dtypes.Float64)
			return g.f64ToF32BitsFast(g.bin(stablehlo.Multiply, a, grid))
		default:
			q := g.decodeE4M3(g.convert(codes, dtypes.Uint64))
			return g.f64ToF32Bits(g.bin(stablehlo.Multiply, q, grid))
		}
	}
	if s.packs() {
		// Even and odd columns separately (both in the same scale block,
		// bw being even), each a plain elementwise chain over [out, in/2].
		even := g.keep(stablehlo.Slice(codes, []int{0, 0}, []int{s.out, s.in}, []int{1, 2}))
		odd := g.keep(stablehlo.Slice(codes, []int{0, 1}, []int{s.out, s.in}, []int{1, 2}))
		if !g.ok(even, odd) {
			return nil
		}
		lo := g.toBF16Bits(f32Bits(even, s.in/2, s.bw/2))
		hi := g.toBF16Bits(f32Bits(odd, s.in/2, s.bw/2))
		return g.orV(lo, g.shl(hi, uint32(16)))
	}
	bits := f32Bits(codes, s.in, s.bw)
	switch s.dtype {
	case safetensors.F32:
		return g.bitcast(bits, dtypes.Float32)
	case safetensors.BF16:
		return g.convert(g.toBF16Bits(bits), dtypes.Uint16)
	}
	g.err = fmt.Errorf("pjrtgpu: dequant output dtype %s", s.dtype)
	return nil
}

// packs says whether the output is stored as u32 pairs: s.pack, a BF16
// output, and an even number of columns and block width.
func (s fp8Shape) packs() bool {
	return s.pack && s.dtype == safetensors.BF16 && s.in%2 == 0 && s.bw%2 == 0
}

// patchF8 turns the program's int8 tensor types, [out, in] for each of
// dims, into float8_e4m3fn: the go-xla builder has no fp8 type (gpu.md §3),
// so the programs bitcast the code bytes to int8 and convert that, and the
// text then says f8E4M3FN instead.
func patchF8(prog []byte, dims [][2]int) ([]byte, error) {
	text := string(prog)
	for _, d := range dims {
		from := fmt.Sprintf("tensor<%dx%dxi8>", d[0], d[1])
		if !strings.Contains(text, from) {
			return nil, fmt.Errorf("pjrtgpu: fp8 placeholder %s not in the program", from)
		}
		text = strings.ReplaceAll(text, from, fmt.Sprintf("tensor<%dx%dxf8E4M3FN>", d[0], d[1]))
	}
	if strings.Contains(strings.ReplaceAll(text, "xui8>", ""), "xi8>") || strings.Contains(text, "<i8>") {
		return nil, errors.New("pjrtgpu: another int8 tensor in an fp8 program")
	}
	return []byte(text), nil
}

// scaleF32 declares an [r, c] scale grid of a safetensors dtype (BF16 and
// F16 uploaded as bits) and returns it as float32 by conversions.
func (g *graph) scaleF32(name string, sd safetensors.DType, r, c int) *value {
	switch sd {
	case safetensors.F32:
		return g.bitcast(g.input(name, dtypes.Uint32, r, c), dtypes.Float32)
	case safetensors.BF16:
		s := g.convert(g.input(name, dtypes.Uint16, r, c), dtypes.Uint32)
		return g.bitcast(g.shl(s, uint32(16)), dtypes.Float32)
	case safetensors.F16:
		return g.convert(g.bitcast(g.input(name, dtypes.Uint16, r, c), dtypes.Float16), dtypes.Float32)
	}
	g.err = fmt.Errorf("pjrtgpu: scale dtype %s", sd)
	return nil
}

// scaleF64 declares an [r, c] scale grid of a safetensors dtype and returns
// it as float64, exactly, without a float32 subnormal operand (exactF64).
func (g *graph) scaleF64(name string, sd safetensors.DType, r, c int) *value {
	var bits *value // float32 bits
	switch sd {
	case safetensors.F32:
		bits = g.input(name, dtypes.Uint32, r, c)
	case safetensors.BF16:
		bits = g.shl(g.convert(g.input(name, dtypes.Uint16, r, c), dtypes.Uint32), uint32(16))
	case safetensors.F16:
		bits = g.f16Bits(g.convert(g.input(name, dtypes.Uint16, r, c), dtypes.Uint32))
	default:
		g.err = fmt.Errorf("pjrtgpu: scale dtype %s", sd)
		return nil
	}
	return g.exactF64(bits)
}

// exactF64 widens float32 bits (u32) to float64 exactly without a float32
// subnormal operand: bits with a zero exponent field become
// mantissa·2^-149 from an integer conversion, the others are converted.
func (g *graph) exactF64(bits *value) *value {
	mag := g.mulC(g.convert(g.andC(bits, uint32(0x7FFFFF)), dtypes.Float64), float64(0x1p-149))
	sub := g.sel(g.cmp(g.shr(bits, uint32(31)), types.CompareEQ, uint32(1)), g.un(stablehlo.Negate, mag), mag)
	normal := g.convert(g.bitcast(bits, dtypes.Float32), dtypes.Float64)
	return g.sel(g.cmp(g.andC(bits, uint32(0x7F800000)), types.CompareEQ, uint32(0)), sub, normal)
}

// f64ToF32BitsFast rounds float64 values whose products are exact (at most
// 53 significant bits, far from float64's subnormals) to float32 bits,
// RNE, subnormal results included, with float arithmetic that never has a
// float32 subnormal operand or result: normal results come from the
// conversion, subnormal ones are round(|p|·2^149), exact in float64 and at
// most 2^23 (2^23 is the smallest normal's bits, as rounding up requires).
// NaN stays NaN (payload unspecified), overflow gives ±Inf, the sign of
// zero is kept.
func (g *graph) f64ToF32BitsFast(p *value) *value {
	sign := g.andC(g.convert(g.shr(g.bitcast(p, dtypes.Uint64), uint64(32)), dtypes.Uint32), uint32(0x80000000))
	a := g.un(stablehlo.Abs, p)
	tiny := g.cmp(a, types.CompareLT, float64(0x1p-126))
	sub := g.orV(g.convert(g.un(stablehlo.RoundNearestEven, g.mulC(a, float64(0x1p149))), dtypes.Uint32), sign)
	normal := g.bitcast(g.convert(p, dtypes.Float32), dtypes.Uint32)
	return g.sel(tiny, sub, normal)
}

// decodeE4M3 maps FP8 E4M3FN codes (as u64) to their float64 values
// (formats.md §1.1, exact): normal codes by assembling the bits, subnormal
// ones as M·2^-9, 0x7F/0xFF as NaN with the code's sign.
func (g *graph) decodeE4M3(c *value) *value {
	sign := g.shl(g.andC(c, uint64(0x80)), uint64(56))
	e := g.andC(g.shr(c, uint64(3)), uint64(15))
	m := g.andC(c, uint64(7))
	normal := g.orV(sign, g.orV(g.shl(g.addC(e, uint64(1016)), uint64(52)), g.shl(m, uint64(49))))
	mf := g.convert(m, dtypes.Float64)
	sub := g.orV(g.bitcast(g.bin(stablehlo.Multiply, mf, g.full(mf, float64(0x1p-9))), dtypes.Uint64), sign)
	bits := g.sel(g.cmp(e, types.CompareEQ, uint64(0)), sub, normal)
	nan := g.cmp(g.andC(c, uint64(0x7F)), types.CompareEQ, uint64(0x7F))
	bits = g.sel(nan, g.orV(sign, g.full(sign, uint64(0x7FF8000000000000))), bits)
	return g.bitcast(bits, dtypes.Float64)
}

// toBF16Bits rounds float32 bits (u32) to BF16 bits (in u32) as
// numeric.F32ToBF16: (u + 0x7FFF + ((u >> 16) & 1)) >> 16, and 0x7FC0 for
// every NaN.
func (g *graph) toBF16Bits(u *value) *value {
	odd := g.andC(g.shr(u, uint32(16)), uint32(1))
	r := g.shr(g.bin(stablehlo.Add, g.addC(u, uint32(0x7FFF)), odd), uint32(16))
	nan := g.cmp(g.andC(u, uint32(0x7FFFFFFF)), types.CompareGT, uint32(0x7F800000))
	return g.sel(nan, g.full(r, uint32(0x7FC0)), r)
}

// progAbsMaxBlocks returns, per [bh, bw] block of an [out, in] weight, the
// largest magnitude as the weight dtype's bits with the sign cleared (u32):
// integer maxima of those bits are the absolute maxima, and NaN or ±Inf
// show as bits at or above the dtype's infinity. Partial edge blocks are
// padded with zeros, which cannot change a maximum magnitude.
func progAbsMaxBlocks(wd safetensors.DType, out, in, bh, bw int) ([]byte, error) {
	g := newGraph("heft_absmax_blocks")
	r, c := cdiv(out, bh), cdiv(in, bw)
	bits, _ := g.weightInput(wd, out, in)
	mask := uint32(0x7FFF)
	if wd == safetensors.F32 {
		mask = 0x7FFFFFFF
	}
	mag := g.andC(bits, mask)
	if r*bh != out || c*bw != in {
		zero := g.keep(g.fn.ConstantFromScalar(uint32(0)))
		if !g.ok(mag, zero) {
			return nil, g.err
		}
		mag = g.keep(stablehlo.Pad(mag, zero, []int{0, 0}, []int{r*bh - out, c*bw - in}, []int{0, 0}))
	}
	if !g.ok(mag) {
		return nil, g.err
	}
	blocks := g.keep(stablehlo.Reshape(mag, shapes.Make(dtypes.Uint32, r, bh, c, bw)))
	return g.build(g.reduce(blocks, uint32(0), g.maxFn(dtypes.Uint32), 1, 3))
}

// progFP8Codes computes the F8_E4M3 codes of an [out, in] weight given the
// float64 reciprocal of each block's scale: v = float32(float64(x)·(1/s))
// (the CPU kernel's quotient, equal to the correctly rounded x/s), clamped
// to ±448 and encoded as numeric.F32ToE4M3FNSat does: |v| > 448 → 0x7E,
// |v| < 2^-6 rounded by a float32 add of 2^14, else the integer RNE of the
// 20 dropped mantissa bits; the sign bit is kept (−0 and tiny negatives
// give 0x80). Non-finite weights never get here: the host refuses them.
func progFP8Codes(wd safetensors.DType, out, in, bh, bw int) ([]byte, error) {
	g := newGraph("heft_fp8_codes")
	r, c := cdiv(out, bh), cdiv(in, bw)
	_, x := g.weightInput(wd, out, in)
	rcp := g.input("rcp", dtypes.Float64, r, c)
	u := g.f64ToF32Bits(g.bin(stablehlo.Multiply, x, g.blockGrid(rcp, out, in, bh, bw)))
	sign := g.andC(g.shr(u, uint32(24)), uint32(0x80))
	b := g.andC(u, uint32(0x7FFFFFFF))
	sat := g.cmp(b, types.CompareGT, uint32(0x43E00000))
	subRange := g.cmp(b, types.CompareLT, uint32(0x3C800000))
	bf := g.bitcast(b, dtypes.Float32)
	sum := g.bin(stablehlo.Add, bf, g.full(bf, float32(16384)))
	sub := g.bin(stablehlo.Subtract, g.bitcast(sum, dtypes.Uint32), g.full(u, uint32(0x46800000)))
	odd := g.andC(g.shr(b, uint32(20)), uint32(1))
	normal := g.shr(g.bin(stablehlo.Add, g.addC(g.bin(stablehlo.Subtract, b, g.full(b, uint32(0x3C000000))), uint32(0x7FFFF)), odd), uint32(20))
	code := g.sel(sat, g.full(u, uint32(0x7E)), g.sel(subRange, sub, normal))
	return g.build(g.convert(g.orV(code, sign), dtypes.Uint8))
}

// progToBF16 rounds a float32 matrix to BF16 (for the BF16 power iterations).
func progToBF16(m, n int) ([]byte, error) {
	g := newGraph("heft_to_bf16")
	return g.build(g.convert(g.input("a", dtypes.Float32, m, n), dtypes.BFloat16))
}

// progLaunch adds one to a float32: a program whose run time is the fixed
// cost of a launch and its wait.
func progLaunch() ([]byte, error) {
	g := newGraph("heft_launch")
	x := g.input("x", dtypes.Float32, 1)
	return g.build(g.addC(x, float32(1)))
}

// progCopy is a device copy of a [rows, cols] u32 array (y = x ^ 1, which
// XLA cannot turn into an alias): the reference bandwidth of the benchmarks.
func progCopy(rows, cols int) ([]byte, error) {
	g := newGraph("heft_copy")
	x := g.input("x", dtypes.Uint32, rows, cols)
	return g.build(g.bin(stablehlo.Xor, x, g.full(x, uint32(1))))
}
