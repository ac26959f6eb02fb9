package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
)

// DequantModule returns the dequantized weight [out, in] of one module as
// little-endian BF16 bytes (the "bridge" dtype of §12), given the raw bytes
// of its tensors by role. Only the roles dequantization reads are needed
// (codes, scale, and where the module has them zero point, shape, g_idx).
func DequantModule(mod Module, tensors map[Role][]byte) ([]byte, error) {
	return Dequantize(mod, tensors, safetensors.BF16)
}

// Dequantize is DequantModule with the output dtype chosen: BF16, F16 or
// F32. Each element is the float32 value (q − zp) × s — exact for BF16/F16
// scales, rounded once to float32 for F32 scales (§1.5) — rounded once (RNE)
// to the output dtype. F16 output reproduces AutoAWQ's fp16 dequantization
// and compressed-tensors' output in an F16 scale dtype bit for bit; F32
// output what torch gives in float32.
//
// The work is split by rows over GOMAXPROCS goroutines; every element is
// computed independently, so the result does not depend on the split.
func Dequantize(mod Module, tensors map[Role][]byte, dtype safetensors.DType) ([]byte, error) {
	p, err := prepare(mod, tensors, dtype)
	if err != nil {
		return nil, err
	}
	dst := make([]byte, p.out*p.in*(dtype.BitSize()/8))
	p.dequant(dst, dtype)
	return dst, nil
}

// DequantizeInto is Dequantize into a caller-owned buffer, which must be
// exactly out×in elements of dtype long ([Module.Dims] gives the shape).
// Reusing one buffer across modules saves the allocation and, for large
// weights, the page faults of fresh memory, which cost as much as the
// dequantization itself.
func DequantizeInto(dst []byte, mod Module, tensors map[Role][]byte, dtype safetensors.DType) error {
	p, err := prepare(mod, tensors, dtype)
	if err != nil {
		return err
	}
	if want := p.out * p.in * (dtype.BitSize() / 8); len(dst) != want {
		return invalidf(mod.WeightName(), "", "destination of %d bytes, want %d for [%d, %d] %s", len(dst), want, p.out, p.in, dtype)
	}
	p.dequant(dst, dtype)
	return nil
}

func prepare(mod Module, tensors map[Role][]byte, dtype safetensors.DType) (*plan, error) {
	switch dtype {
	case safetensors.BF16, safetensors.F16, safetensors.F32:
	default:
		return nil, unsupportedf(mod.WeightName(), "dtype", "output dtype %s, want BF16, F16 or F32", dtype)
	}
	return newPlan(mod, tensors)
}

func (p *plan) dequant(dst []byte, dtype safetensors.DType) {
	if len(dst) == 0 {
		return
	}
	switch dtype {
	case safetensors.BF16:
		p.run(func(r0, r1 int) { runRows[uint16](p, dst, r0, r1, encBF16) })
	case safetensors.F16:
		p.run(func(r0, r1 int) { runRows[uint16](p, dst, r0, r1, encF16) })
	case safetensors.F32:
		p.run(func(r0, r1 int) { runRows[uint32](p, dst, r0, r1, encF32) })
	}
}

// Dims returns the module's weight shape [out, in]. Only pack-quantized
// modules need data for it: their in is stated by the weight_shape tensor
// (tensors[RoleShape]); for the others tensors may be nil.
func (m Module) Dims(tensors map[Role][]byte) (out, in int, err error) {
	out, in, _, err = m.dims(tensors)
	return out, in, err
}

// dims also returns the packing layout of a pack-quantized module, which
// the width of weight_packed tells once in is known.
func (m Module) dims(tensors map[Role][]byte) (out, in int, l Layout, err error) {
	if m.Scheme.Format != FormatCTPacked {
		return m.Out, m.In, Dense, nil
	}
	if err := checkScheme(m); err != nil {
		return 0, 0, 0, err
	}
	st, codes := m.Tensors[RoleShape], m.Tensors[RoleCodes]
	if err := wantDType(st, "weight_shape", safetensors.I64); err != nil {
		return 0, 0, 0, err
	}
	if err := wantShape(st, []int{2}, "[out, in]"); err != nil {
		return 0, 0, 0, err
	}
	data, err := tensorData(m, tensors, RoleShape)
	if err != nil {
		return 0, 0, 0, err
	}
	o := int64(binary.LittleEndian.Uint64(data[0:8]))
	i := int64(binary.LittleEndian.Uint64(data[8:16]))
	if o != int64(m.Out) {
		return 0, 0, 0, invalidf(st.Name, "", "says out = %d, but %s has %d rows", o, codes.Name, m.Out)
	}
	if i < 0 || i > maxDim || o*i > maxElems {
		return 0, 0, 0, invalidf(st.Name, "", "says in = %d", i)
	}
	if m.In != 0 && i != int64(m.In) {
		return 0, 0, 0, invalidf(st.Name, "", "says in = %d, but the other tensors' shapes say %d", i, m.In)
	}
	in = int(i)
	if len(codes.Shape) != 2 {
		return 0, 0, 0, invalidf(codes.Name, "shape", "%s, want [out, words]", fmtShape(codes.Shape))
	}
	if l, err = packLayoutFor(in, int(codes.Shape[1]), m.Scheme.Bits, codes.Name); err != nil {
		return 0, 0, 0, err
	}
	known := m
	known.In = in
	if err := checkScaleShapes(&known); err != nil {
		return 0, 0, 0, err
	}
	if zp, ok := m.Tensors[RoleZeroPoint]; ok && zeroPointPacked(m.Scheme) && zp.Shape[0] != uint64(packedWords(m.Out, m.Scheme.Bits, l)) {
		return 0, 0, 0, invalidf(zp.Name, "shape", "%s, want %d rows: out = %d packed %s like %s", fmtShape(zp.Shape), packedWords(m.Out, m.Scheme.Bits, l), m.Out, l, codes.Name)
	}
	return m.Out, in, l, nil
}

// packLayoutFor tells which layout a weight_packed row of `words` words for
// `in` codes uses (§5.5 "layout change for 3/5/6/7-bit"). The layouts only
// differ for 3, 5, 6 and 7 bits, and then usually in width; where they have
// the same width but place codes differently, the file does not say which
// one it uses, and guessing could silently corrupt the weight.
func packLayoutFor(in, words, bits int, name string) (Layout, error) {
	dense, aligned := packedWords(in, bits, Dense), packedWords(in, bits, ElementAligned)
	same := 32%bits == 0 || in <= 32/bits
	switch {
	case words == dense && (dense != aligned || same):
		return Dense, nil
	case words == aligned && dense != aligned:
		return ElementAligned, nil
	case words == dense:
		return 0, unsupportedf(name, "shape", "%d %d-bit codes take %d words in both the dense and the element-aligned layout, which place them differently; the file does not tell which it uses", in, bits, words)
	}
	return 0, invalidf(name, "shape", "%d words per row, want %d (cdiv(%d·%d, 32)) for in = %d", words, dense, in, bits, in)
}

// tensorData returns the bytes given for role, checked against the length
// the module's header says the tensor has.
func tensorData(m Module, tensors map[Role][]byte, role Role) ([]byte, error) {
	t := m.Tensors[role]
	data, ok := tensors[role]
	if !ok {
		return nil, invalidf(t.Name, "", "no data given for role %s", role)
	}
	want, err := t.DType.ByteLen(t.Shape)
	if err != nil {
		return nil, invalidf(t.Name, "shape", "%v", err)
	}
	if uint64(len(data)) != want {
		return nil, invalidf(t.Name, "", "%d bytes of data, but %s%s takes %d", len(data), t.DType, fmtShape(t.Shape), want)
	}
	return data, nil
}

// Code sources: how a row's code indices are obtained.
const (
	codesBytes  = iota // one byte per code, row-major [out, in] (F8, I8)
	codesPacked        // compressed-tensors weight_packed rows
	codesAWQ           // AutoAWQ qweight, K-major [in, out/8]
)

// plan is a validated module reduced to what the kernels need. Element (r, c)
// is values[idx(r, c)] − zero[k] times scale[k], with k the scale-grid
// index (r/rowDiv)·sCols + (gidx[c] or c/colDiv).
type plan struct {
	out, in int
	// values maps a code index (the byte, the unsigned packed code, or
	// the AWQ nibble) to the code's value q.
	values [256]float32
	nvals  int
	scale  []float32
	zero   []float32 // nil: no zero point
	sCols  int
	rowDiv int
	colDiv int
	gidx   []int32

	kind   int
	data   []byte
	bits   int
	layout Layout
	words  int // per packed row (codesPacked) or per qweight row (codesAWQ)
	align  int // row-chunk alignment for the parallel split
}

// checkScheme guards the kernels against a hand-made Module whose scheme
// Detect would never produce.
func checkScheme(mod Module) error {
	s := mod.Scheme
	if s.Bits < 1 || s.Bits > 8 {
		return invalidf(mod.Prefix, "bits", "%d, want 1..8", s.Bits)
	}
	switch s.Strategy {
	case StrategyTensor, StrategyChannel:
	case StrategyGroup:
		if s.GroupSize <= 0 {
			return invalidf(mod.Prefix, "group_size", "%d, want a positive group size", s.GroupSize)
		}
	case StrategyBlock:
		if s.BlockSize[0] <= 0 || s.BlockSize[1] <= 0 {
			return invalidf(mod.Prefix, "block_size", "%v, want positive sizes", s.BlockSize)
		}
	default:
		return unsupportedf(mod.Prefix, "strategy", "%q", s.Strategy)
	}
	switch s.Format {
	case FormatCTPacked, FormatAWQ:
		if t := mod.Tensors[RoleCodes]; t.DType != safetensors.I32 {
			return invalidf(t.Name, "dtype", "%s, want I32 packed codes", t.DType)
		}
		if s.Format == FormatAWQ && s.Bits != 4 {
			return invalidf(mod.Prefix, "bits", "%d, AWQ is 4-bit", s.Bits)
		}
	}
	return nil
}

func newPlan(mod Module, tensors map[Role][]byte) (*plan, error) {
	s := mod.Scheme
	if err := checkScheme(mod); err != nil {
		return nil, err
	}
	for _, role := range dequantRoles {
		if _, ok := mod.Tensors[role]; ok {
			if _, err := tensorData(mod, tensors, role); err != nil {
				return nil, err
			}
		}
	}
	for _, role := range []Role{RoleCodes, RoleScale} {
		if _, ok := mod.Tensors[role]; !ok {
			return nil, invalidf(mod.Prefix, "", "module has no %s tensor", role)
		}
	}
	out, in, layout, err := mod.dims(tensors)
	if err != nil {
		return nil, err
	}
	if out < 0 || in < 0 || out > maxDim || in > maxDim || out*in > maxElems {
		return nil, invalidf(mod.Prefix, "", "weight shape [%d, %d] is out of range", out, in)
	}
	p := &plan{out: out, in: in, layout: layout, bits: s.Bits, align: 1}
	codes := mod.Tensors[RoleCodes]
	p.data = tensors[RoleCodes]

	// Codes: check the tensor against [out, in] (a hand-made Module may not
	// have gone through Detect) and fill the value table.
	switch s.Format {
	case FormatCTPacked:
		p.kind, p.words, p.nvals = codesPacked, packedWords(in, s.Bits, layout), 1<<s.Bits
		if err := wantShape(codes, []int{out, p.words}, "[out, packed words]"); err != nil {
			return nil, err
		}
		for u := range p.nvals {
			p.values[u] = float32(u - 1<<(s.Bits-1))
		}
	case FormatAWQ:
		p.kind, p.words, p.nvals, p.align = codesAWQ, out/8, 16, 8*awqColumns
		if out%8 != 0 || codes.DType != safetensors.I32 {
			return nil, invalidf(codes.Name, "", "AWQ qweight must be I32 [in, out/8]")
		}
		if err := wantShape(codes, []int{in, out / 8}, "[in, out/8]"); err != nil {
			return nil, err
		}
		for u := range 16 {
			p.values[u] = float32(u)
		}
	default:
		p.kind, p.nvals = codesBytes, 256
		if err := wantShape(codes, []int{out, in}, "[out, in]"); err != nil {
			return nil, err
		}
		for b := range 256 {
			switch codes.DType {
			case safetensors.I8:
				p.values[b] = float32(int8(b))
			case safetensors.F8E4M3:
				p.values[b] = numeric.E4M3FNToF32(uint8(b))
			case safetensors.F8E5M2:
				p.values[b] = numeric.E5M2ToF32(uint8(b))
			default:
				return nil, unsupportedf(codes.Name, "dtype", "%s codes", codes.DType)
			}
		}
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
	if p.rowDiv > 1 && p.rowDiv <= 1024 {
		p.align = p.rowDiv // keep a block row's tables in one worker
	}
	return p, nil
}

// setScales decodes the scale grid and sets how rows and columns map onto
// it. AWQ's K-major [in/g, out] grid is transposed to [out, in/g] so that
// all formats index scales the same way.
func (p *plan) setScales(mod Module, tensors map[Role][]byte) error {
	s, t := mod.Scheme, mod.Tensors[RoleScale]
	vals, err := decodeFloats(t, tensors[RoleScale])
	if err != nil {
		return err
	}
	out, in := p.out, p.in
	p.rowDiv, p.colDiv, p.sCols = max(out, 1), max(in, 1), 1
	strategy := s.Strategy
	if len(vals) == 1 {
		strategy = StrategyTensor // one scale, whatever it is called
	}
	switch strategy {
	case StrategyTensor:
		if len(vals) != 1 {
			return invalidf(t.Name, "shape", "%s, want one per-tensor scale", fmtShape(t.Shape))
		}
	case StrategyChannel:
		if len(vals) != out {
			return invalidf(t.Name, "shape", "%s, want %d per-channel scales", fmtShape(t.Shape), out)
		}
		p.rowDiv = 1
	case StrategyGroup:
		g := s.GroupSize
		if g <= 0 {
			return invalidf(mod.Prefix, "group_size", "%d, want a positive group size", g)
		}
		if in >= g && in%g != 0 {
			return invalidf(mod.Prefix, "group_size", "group size %d does not divide in = %d", g, in)
		}
		groups := cdiv(in, g)
		if len(vals) != out*groups {
			return invalidf(t.Name, "shape", "%s, want [%d, %d] (group %d over [%d, %d])", fmtShape(t.Shape), out, groups, g, out, in)
		}
		if s.Format == FormatAWQ {
			vals = transpose(vals, groups, out)
		}
		p.rowDiv, p.colDiv, p.sCols = 1, g, groups
	case StrategyBlock:
		bh, bw := s.BlockSize[0], s.BlockSize[1]
		if bh <= 0 || bw <= 0 {
			return invalidf(mod.Prefix, "block_size", "%v, want positive sizes", s.BlockSize)
		}
		if err := wantShape(t, []int{cdiv(out, bh), cdiv(in, bw)}, fmt.Sprintf("[cdiv(out, %d), cdiv(in, %d)] over [%d, %d]", bh, bw, out, in)); err != nil {
			return err
		}
		p.rowDiv, p.colDiv, p.sCols = bh, bw, cdiv(in, bw)
	default:
		return unsupportedf(mod.Prefix, "strategy", "%q", s.Strategy)
	}
	p.scale = vals
	return nil
}

// setZeroPoints decodes the zero point, which has the scale's grid once
// unpacked. Values must lie in the code range, as every quantizer clamps
// them: then q − zp is a small integer, exact in any scale dtype, which is
// what makes the result bit-exact (§1.5).
func (p *plan) setZeroPoints(mod Module, tensors map[Role][]byte) error {
	s := mod.Scheme
	t, ok := mod.Tensors[RoleZeroPoint]
	data := tensors[RoleZeroPoint]
	var zp []float32
	lo, hi := -(1 << (s.Bits - 1)), 1<<(s.Bits-1)-1
	switch {
	case s.Format == FormatAWQ && !ok:
		// zero_point=false AutoAWQ models: codes are offset by 8, as
		// vLLM's awq_marlin reads them (uint4b8).
		zp = make([]float32, len(p.scale))
		for i := range zp {
			zp[i] = 8
		}
		p.zero = zp
		return nil
	case !ok:
		return nil
	case s.Format == FormatAWQ:
		groups := p.sCols
		if err := wantShape(t, []int{groups, p.out / 8}, "[in/group, out/8]"); err != nil {
			return err
		}
		u, err := UnpackAWQ(int32sFromBytes(data), p.out)
		if err != nil {
			return invalidf(t.Name, "", "%v", err)
		}
		zp = make([]float32, len(u))
		for i, v := range u {
			zp[i] = float32(v)
		}
		zp = transpose(zp, groups, p.out)
	case zeroPointPacked(s):
		if t.DType != safetensors.I32 || len(t.Shape) != 2 {
			return invalidf(t.Name, "", "%s%s, want I32 [packed out, groups]", t.DType, fmtShape(t.Shape))
		}
		codes, err := UnpackInt32Dim0(int32sFromBytes(data), p.out, int(t.Shape[1]), s.Bits, p.layout)
		if err != nil {
			return invalidf(t.Name, "shape", "%v", err)
		}
		zp = make([]float32, len(codes))
		for i, c := range codes {
			zp[i] = float32(c)
		}
	default:
		vals, err := decodeZeroPoints(t, data)
		if err != nil {
			return err
		}
		for i, v := range vals {
			if v != float32(math.Trunc(float64(v))) || v < float32(lo) || v > float32(hi) {
				return invalidf(t.Name, "", "zero point %v at index %d is not an integer in the INT%d range [%d, %d]", v, i, s.Bits, lo, hi)
			}
		}
		zp = vals
	}
	if len(zp) != len(p.scale) {
		if len(zp) == 1 && len(p.scale) == 1 {
			p.zero = zp
			return nil
		}
		return invalidf(t.Name, "shape", "%d zero points for %d scales", len(zp), len(p.scale))
	}
	p.zero = zp
	return nil
}

// setGIdx reads weight_g_idx: the scale column of every input column.
func (p *plan) setGIdx(mod Module, tensors map[Role][]byte) error {
	t, ok := mod.Tensors[RoleGIdx]
	if !ok {
		return nil
	}
	if mod.Scheme.Strategy != StrategyGroup {
		return invalidf(t.Name, "", "g_idx needs the group strategy, the scheme is %s", mod.Scheme.Strategy)
	}
	if t.DType != safetensors.I32 && t.DType != safetensors.I64 {
		return invalidf(t.Name, "dtype", "%s, want I32", t.DType)
	}
	data := tensors[RoleGIdx]
	n := len(data) / (t.DType.BitSize() / 8)
	if len(t.Shape) != 1 || n != p.in {
		return invalidf(t.Name, "shape", "%s, want [%d]", fmtShape(t.Shape), p.in)
	}
	p.gidx = make([]int32, n)
	for i := range n {
		var v int64
		switch t.DType {
		case safetensors.I32:
			v = int64(int32(binary.LittleEndian.Uint32(data[4*i:])))
		default:
			v = int64(binary.LittleEndian.Uint64(data[8*i:]))
		}
		if v < 0 || v >= int64(p.sCols) {
			return invalidf(t.Name, "", "group %d for input column %d, want 0..%d", v, i, p.sCols-1)
		}
		p.gidx[i] = int32(v)
	}
	return nil
}

// decodeFloats widens a scale tensor to float32, exactly.
func decodeFloats(t safetensors.TensorInfo, data []byte) ([]float32, error) {
	var n int
	switch t.DType {
	case safetensors.BF16, safetensors.F16:
		n = len(data) / 2
	case safetensors.F32:
		n = len(data) / 4
	case safetensors.F8E8M0:
		n = len(data)
	default:
		return nil, invalidf(t.Name, "dtype", "%s, want BF16, F16 or F32", t.DType)
	}
	out := make([]float32, n)
	switch t.DType {
	case safetensors.BF16:
		numeric.BF16ToF32Slice(out, data)
	case safetensors.F16:
		for i := range out {
			out[i] = numeric.F16ToF32(binary.LittleEndian.Uint16(data[2*i:]))
		}
	case safetensors.F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	case safetensors.F8E8M0:
		// E8M0 is a bare biased exponent: 2^(e−127), 0xFF is NaN. Codes
		// 0 and 1 are float32 subnormals' neighbours, still exact.
		for i, e := range data {
			if e == 0xFF {
				out[i] = float32(math.NaN())
			} else {
				out[i] = float32(math.Ldexp(1, int(e)-127))
			}
		}
	}
	return out, nil
}

// decodeZeroPoints reads an unpacked zero point of any integer or float
// dtype as float32 (range-checked by the caller).
func decodeZeroPoints(t safetensors.TensorInfo, data []byte) ([]float32, error) {
	switch t.DType {
	case safetensors.BF16, safetensors.F16, safetensors.F32:
		return decodeFloats(t, data)
	}
	size := t.DType.BitSize() / 8
	if size == 0 {
		return nil, invalidf(t.Name, "dtype", "%s", t.DType)
	}
	out := make([]float32, len(data)/size)
	for i := range out {
		var v float64
		switch t.DType {
		case safetensors.I8:
			v = float64(int8(data[i]))
		case safetensors.U8:
			v = float64(data[i])
		case safetensors.I16:
			v = float64(int16(binary.LittleEndian.Uint16(data[2*i:])))
		case safetensors.I32:
			v = float64(int32(binary.LittleEndian.Uint32(data[4*i:])))
		case safetensors.I64:
			v = float64(int64(binary.LittleEndian.Uint64(data[8*i:])))
		default:
			return nil, invalidf(t.Name, "dtype", "%s, want an integer or float dtype", t.DType)
		}
		out[i] = float32(v)
	}
	return out, nil
}

// transpose returns the [cols, rows] transpose of a row-major [rows, cols].
func transpose(v []float32, rows, cols int) []float32 {
	out := make([]float32, len(v))
	for r := range rows {
		for c := range cols {
			out[c*rows+r] = v[r*cols+c]
		}
	}
	return out
}

// parallelMin is the element count below which splitting rows over
// goroutines costs more than it saves.
const parallelMin = 1 << 16

// run calls work on disjoint row ranges covering [0, out), in parallel for
// large weights. Ranges are aligned to p.align rows so that AWQ's 8-row
// column words and a block row's tables stay within one call.
func (p *plan) run(work func(r0, r1 int)) {
	workers := runtime.GOMAXPROCS(0)
	if workers == 1 || p.out*p.in < parallelMin {
		work(0, p.out)
		return
	}
	rows := cdiv(p.out, 4*workers) // a few chunks per worker balance uneven speeds
	rows = cdiv(rows, p.align) * p.align
	var g errgroup.Group
	g.SetLimit(workers)
	for r0 := 0; r0 < p.out; r0 += rows {
		r1 := min(r0+rows, p.out)
		g.Go(func() error {
			work(r0, r1)
			return nil
		})
	}
	_ = g.Wait() // work cannot fail: everything was validated in newPlan
}

// word is an output element's bit pattern: uint16 for BF16/F16, uint32 for
// F32.
type word interface{ ~uint16 | ~uint32 }

// encoding is the output dtype of a kernel.
type encoding int

const (
	encBF16 encoding = iota
	encF16
	encF32
)

// value is the kernels' one formula: the code's value minus the zero point
// (0 without one: subtracting +0 changes no value, not even −0 or NaN),
// times the scale, rounded once to float32, which is exact unless the scale
// is F32 (§1.5). The conversions keep the compiler from fusing anything.
func value(q, z, s float32) float32 { return float32(float32(q-z) * s) }

func encode(e encoding, x float32) uint32 {
	switch e {
	case encBF16:
		return uint32(numeric.F32ToBF16(x))
	case encF16:
		return uint32(numeric.F32ToF16(x))
	}
	return math.Float32bits(x)
}

// runRows dequantizes rows [r0, r1) into dst. Each (code, scale) pair's
// result is computed exactly once into a table, and rows are then filled by
// lookup, which is both exact by construction and several times faster
// than converting per element. When a table would cost more to build than
// it saves (many tiny groups of 8-bit codes) the same formula is evaluated
// per element instead.
func runRows[T word](p *plan, dst []byte, r0, r1 int, e encoding) {
	es := 2
	if ^T(0) != T(0xFFFF) {
		es = 4
	}
	in := p.in
	var buf []uint8
	switch p.kind {
	case codesPacked:
		buf = make([]uint8, in)
	case codesAWQ:
		buf = make([]uint8, 8*awqColumns*awqRowStride(in))
	}
	useTables := p.sCols*p.nvals <= min(p.rowDiv, p.out)*in
	var tables []T
	if useTables {
		tables = make([]T, p.sCols*256)
	}
	// Whole 8-code words per scale column: the common W4A16 layout.
	fused4 := useTables && p.kind == codesPacked && p.bits == 4 && p.gidx == nil && p.colDiv%8 == 0
	curRow := -1
	for r := r0; r < r1; r++ {
		sr := r / p.rowDiv
		row := dst[r*in*es : (r+1)*in*es]
		if fused4 {
			// 4-bit codes straight from the packed words into the
			// output, without the intermediate code row.
			if sr != curRow {
				buildTables(p, tables, sr, e)
				curRow = sr
			}
			words := p.data[r*p.words*4 : (r+1)*p.words*4]
			for j := range p.sCols {
				c0 := j * p.colDiv
				c1 := min(c0+p.colDiv, in)
				fillPacked4(row[c0*es:c1*es], words[c0/2:], c1-c0, (*[256]T)(tables[j*256:(j+1)*256]))
			}
			continue
		}
		var idx []uint8
		switch p.kind {
		case codesBytes:
			idx = p.data[r*in : (r+1)*in]
		case codesPacked:
			unpackRowBytes(buf, p.data[r*p.words*4:(r+1)*p.words*4], p.bits, p.layout)
			idx = buf
		case codesAWQ:
			// Rows come 8·awqColumns at a time; chunks start on such a
			// boundary (p.align), so r%rows == 0 at the start of each.
			const rows = 8 * awqColumns
			if r%rows == 0 {
				p.unpackAWQColumns(buf, r/8, min(awqColumns, (p.out-r)/8))
			}
			o := (r % rows) * awqRowStride(in)
			idx = buf[o : o+in]
		}
		if !useTables {
			directRow[T](p, row, idx, sr, e)
			continue
		}
		if sr != curRow {
			buildTables(p, tables, sr, e)
			curRow = sr
		}
		if p.gidx != nil {
			for c, u := range idx {
				put(row, c, tables[int(p.gidx[c])*256+int(u)])
			}
			continue
		}
		for j := range p.sCols {
			c0 := j * p.colDiv
			c1 := min(c0+p.colDiv, in)
			fillSeg(row[c0*es:c1*es], idx[c0:c1], (*[256]T)(tables[j*256:(j+1)*256]))
		}
	}
}

// buildTables fills one table of 256 entries per scale column of scale row
// sr (only the first nvals entries are reachable). The encoder is chosen
// outside the loops so that it is inlined: with 4-bit groups of 128 a table
// entry is built for every 8 elements, so its cost matters.
func buildTables[T word](p *plan, tables []T, sr int, e encoding) {
	vals := p.values[:p.nvals]
	for j := range p.sCols {
		k := sr*p.sCols + j
		s, z := p.scale[k], float32(0)
		if p.zero != nil {
			z = p.zero[k]
		}
		tab := tables[j*256 : j*256+len(vals)]
		switch e {
		case encBF16:
			for u, q := range vals {
				tab[u] = T(numeric.F32ToBF16(value(q, z, s)))
			}
		case encF16:
			for u, q := range vals {
				tab[u] = T(numeric.F32ToF16(value(q, z, s)))
			}
		default:
			for u, q := range vals {
				tab[u] = T(math.Float32bits(value(q, z, s)))
			}
		}
	}
}

// directRow evaluates the tables' formula per element.
func directRow[T word](p *plan, row []byte, idx []uint8, sr int, e encoding) {
	for c, u := range idx {
		j := c / p.colDiv
		if p.gidx != nil {
			j = int(p.gidx[c])
		}
		k := sr*p.sCols + j
		z := float32(0)
		if p.zero != nil {
			z = p.zero[k]
		}
		put(row, c, T(encode(e, value(p.values[u], z, p.scale[k]))))
	}
}

// awqColumns is how many qweight columns (8 output rows each) are
// unpacked per pass. qweight is K-major, so an output row's codes are
// strided through memory; taking several adjacent columns per pass uses
// each cache line loaded for more than one word.
const awqColumns = 16

// unpackAWQColumns extracts output rows 8c..8(c+n)−1 (qweight columns
// c..c+n−1) into buf as rows of in unsigned codes, undoing the AWQ
// interleave: output row 8c+j is nibble awqReverse[j] = [0,4,1,5,2,6,3,7][j].
func (p *plan) unpackAWQColumns(buf []uint8, c, n int) {
	in, stride := p.in, 4*p.words
	// Transpose through a small tile: read awqTile input rows of n
	// adjacent words (contiguous), then write each output row's awqTile
	// codes contiguously. Going row by row through qweight instead, or
	// scattering bytes over 8n output rows, thrashes the cache.
	var tile [awqTile][awqColumns]uint32
	for k0 := 0; k0 < in; k0 += awqTile {
		k1 := min(k0+awqTile, in)
		for k := k0; k < k1; k++ {
			words := p.data[k*stride+4*c : k*stride+4*(c+n)]
			t := &tile[k-k0]
			for cc := range n {
				t[cc] = binary.LittleEndian.Uint32(words[4*cc:])
			}
		}
		for cc := range n {
			o := 8 * cc * awqRowStride(in)
			var b [8][]uint8
			for j := range b {
				b[j] = buf[o+j*awqRowStride(in)+k0 : o+j*awqRowStride(in)+k1]
			}
			b0, b1, b2, b3, b4, b5, b6, b7 := b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
			for i := range b0 {
				w := tile[i][cc]
				b0[i], b1[i], b2[i], b3[i] = uint8(w&15), uint8(w>>16&15), uint8(w>>4&15), uint8(w>>20&15)
				b4[i], b5[i], b6[i], b7[i] = uint8(w>>8&15), uint8(w>>24&15), uint8(w>>12&15), uint8(w>>28)
			}
		}
	}
}

// awqTile is the number of input rows per transposition tile.
const awqTile = 64

// awqRowStride spaces the unpacked rows so that they do not all map to the
// same cache sets, as rows a power of two apart would.
func awqRowStride(in int) int { return in + 64 }

// fillPacked4 writes the n codes packed 8 per little-endian word in src
// (lowest nibble first, §5.5) through tab into dst.
func fillPacked4[T word](dst []byte, src []byte, n int, tab *[256]T) {
	i := 0
	if ^T(0) == T(0xFFFF) {
		dst = dst[:2*n]
		for ; i+8 <= n; i += 8 {
			w := binary.LittleEndian.Uint32(src[i/2 : i/2+4])
			d := dst[2*i : 2*i+16 : 2*i+16]
			binary.LittleEndian.PutUint64(d, uint64(tab[w&15])|uint64(tab[w>>4&15])<<16|uint64(tab[w>>8&15])<<32|uint64(tab[w>>12&15])<<48)
			binary.LittleEndian.PutUint64(d[8:], uint64(tab[w>>16&15])|uint64(tab[w>>20&15])<<16|uint64(tab[w>>24&15])<<32|uint64(tab[w>>28])<<48)
		}
	}
	for ; i < n; i++ {
		w := binary.LittleEndian.Uint32(src[i/8*4:])
		put(dst, i, tab[w>>(4*(i%8))&15])
	}
}

// put stores v as output element c of row.
func put[T word](row []byte, c int, v T) {
	if ^T(0) == T(0xFFFF) {
		binary.LittleEndian.PutUint16(row[2*c:], uint16(v))
	} else {
		binary.LittleEndian.PutUint32(row[4*c:], uint32(v))
	}
}

// fillSeg writes tab[idx[i]] for every i; eight 16-bit lookups are merged
// into two 64-bit stores, which is what makes the table path fast.
func fillSeg[T word](dst []byte, idx []uint8, tab *[256]T) {
	n := len(idx)
	i := 0
	if ^T(0) == T(0xFFFF) {
		dst = dst[:2*n]
		for ; i+8 <= n; i += 8 {
			x := idx[i : i+8 : i+8]
			d := dst[2*i : 2*i+16 : 2*i+16]
			binary.LittleEndian.PutUint64(d, uint64(tab[x[0]])|uint64(tab[x[1]])<<16|uint64(tab[x[2]])<<32|uint64(tab[x[3]])<<48)
			binary.LittleEndian.PutUint64(d[8:], uint64(tab[x[4]])|uint64(tab[x[5]])<<16|uint64(tab[x[6]])<<32|uint64(tab[x[7]])<<48)
		}
	}
	for ; i < n; i++ {
		put(dst, i, tab[idx[i]])
	}
}
