//go:build cgo && linux

package pjrtgpu

import (
	"fmt"
	"math"
	"runtime"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/pjrt"
	"github.com/gomlx/go-xla/stablehlo"
	"github.com/gomlx/go-xla/types/shapes"

	"github.com/heft-dev/heft/ops/internal/linalg"
)

// The LoRA merge and the reductions of `heft analyze` (reducehost.go
// states their contracts and error bounds).

// uploadMatrix copies a float32 matrix to the device, as its bits (u32)
// when bits is set (so that no device flushes a subnormal on the way in:
// the programs widen them to float64 exactly), else as float32.
func (d *Device) uploadMatrix(a linalg.Matrix, bits bool) (*pjrt.Buffer, error) {
	dt := dtypes.Float32
	if bits {
		dt = dtypes.Uint32
	}
	b, err := d.upload(f32bytes(a.Data), dt, a.Rows, a.Cols)
	runtime.KeepAlive(a.Data)
	return b, err
}

// downloadF64 downloads n float64 scalars, one per buffer.
func (d *Device) downloadF64(bufs []*pjrt.Buffer, n int) ([]float64, error) {
	if len(bufs) != n {
		return nil, fmt.Errorf("execute: %d outputs, want %d", len(bufs), n)
	}
	out := make([]float64, n)
	for i, b := range bufs {
		if err := d.download(b, f64bytes(out[i:i+1])); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// matrixArg is one input of a device program: a matrix uploaded as its
// bits or as float32 (see uploadMatrix).
type matrixArg struct {
	m    linalg.Matrix
	bits bool
}

// uploadMatrices uploads the inputs in order; on an error it frees those
// already uploaded.
func (d *Device) uploadMatrices(in ...matrixArg) ([]*pjrt.Buffer, error) {
	bufs := make([]*pjrt.Buffer, 0, len(in))
	for _, a := range in {
		b, err := d.uploadMatrix(a.m, a.bits)
		if err != nil {
			destroy(bufs...)
			return nil, err
		}
		bufs = append(bufs, b)
	}
	return bufs, nil
}

// reduceF64 uploads the inputs, runs the program cached under key (built
// by build the first time) and downloads its n float64 scalar outputs.
func (d *Device) reduceF64(key string, build func() ([]byte, error), n int, in ...matrixArg) ([]float64, error) {
	bufs, err := d.uploadMatrices(in...)
	if err != nil {
		return nil, err
	}
	defer destroy(bufs...)
	e, err := d.exe(key, build)
	if err != nil {
		return nil, err
	}
	outs, err := d.run(e, bufs...)
	defer destroy(outs...)
	if err != nil {
		return nil, err
	}
	return d.downloadF64(outs, n)
}

// FrobeniusNorm returns ‖a‖_F = sqrt(Σ a_ij²), the squares of the exact
// float64 values summed in float64 on the device: within
// NormTolerance(len) (relative) of linalg.FrobeniusNorm, whose order of
// summation differs. A malformed matrix gives ErrUnsupported.
func (d *Device) FrobeniusNorm(a linalg.Matrix) (float64, error) {
	if err := checkMatrix(a); err != nil {
		return 0, err
	}
	s, err := d.reduceF64(fmt.Sprintf("norm/%dx%d", a.Rows, a.Cols), func() ([]byte, error) { return progSumSquares(a.Rows, a.Cols) }, 1,
		matrixArg{a, true})
	if err != nil {
		return 0, err
	}
	return math.Sqrt(s[0]), nil
}

// Cosine returns linalg.Cosine(x, y) (⟨x, y⟩ / (‖x‖·‖y‖), 0 for a zero
// input, NaN for a NaN), the three sums formed in float64 on the device:
// within CosineTolerance(len) (absolute) of the CPU's. Malformed or
// mismatched matrices give ErrUnsupported.
func (d *Device) Cosine(x, y linalg.Matrix) (float64, error) {
	if err := checkMatrix(x); err != nil {
		return 0, err
	}
	if err := checkMatrix(y); err != nil || x.Rows != y.Rows || x.Cols != y.Cols {
		return 0, unsupportedf("cosine of %d×%d and %d×%d", x.Rows, x.Cols, y.Rows, y.Cols)
	}
	s, err := d.reduceF64(fmt.Sprintf("cosine/%dx%d", x.Rows, x.Cols), func() ([]byte, error) { return progDotNorms(x.Rows, x.Cols, 0) }, 3,
		matrixArg{x, true}, matrixArg{y, true})
	if err != nil {
		return 0, err
	}
	return cosineOf(s[0], s[1], s[2]), nil
}

// checkLowRank checks x (m×n), b (m×r) and a (r×n) of a low-rank
// reduction; what names it in the error.
func checkLowRank(what string, x, b, a linalg.Matrix) error {
	for _, m := range []linalg.Matrix{x, b, a} {
		if err := checkMatrix(m); err != nil {
			return err
		}
	}
	if b.Rows != x.Rows || a.Cols != x.Cols || b.Cols != a.Rows {
		return unsupportedf("%s of %d×%d and %d×%d · %d×%d", what, x.Rows, x.Cols, b.Rows, b.Cols, a.Rows, a.Cols)
	}
	return nil
}

// CosineLowRank returns the cosine between x (m×n) and the product b·a
// (b m×r, a r×n) without moving the product off the device: what
// linalg.Cosine(x, linalg.Mul(b, a)) computes, within
// CosineLowRankTolerance (the float32 products round differently).
func (d *Device) CosineLowRank(x, b, a linalg.Matrix) (float64, error) {
	if err := checkLowRank("cosine", x, b, a); err != nil {
		return 0, err
	}
	s, err := d.reduceF64(fmt.Sprintf("cosine_lowrank/%dx%d/%d", x.Rows, x.Cols, b.Cols), func() ([]byte, error) { return progDotNorms(x.Rows, x.Cols, b.Cols) }, 3,
		matrixArg{x, true}, matrixArg{b, false}, matrixArg{a, false})
	if err != nil {
		return 0, err
	}
	return cosineOf(s[0], s[1], s[2]), nil
}

// LowRankError returns ‖x − b·a‖_F and ‖x‖_F (x m×n, b m×r, a r×n), the
// product in float32 and the differences and squares summed in float64 on
// the device: what linalg.ResidualNorm and linalg.FrobeniusNorm compute,
// within ResidualTolerance and NormTolerance (the float32 products round
// differently). It is the error check of a LoRA extraction, without the
// product leaving the device.
func (d *Device) LowRankError(x, b, a linalg.Matrix) (residual, norm float64, err error) {
	if err := checkLowRank("residual", x, b, a); err != nil {
		return 0, 0, err
	}
	s, err := d.reduceF64(fmt.Sprintf("lowrank_error/%dx%d/%d", x.Rows, x.Cols, b.Cols), func() ([]byte, error) { return progResidual(x.Rows, x.Cols, b.Cols) }, 2,
		matrixArg{x, true}, matrixArg{b, false}, matrixArg{a, false})
	if err != nil {
		return 0, 0, err
	}
	return math.Sqrt(s[0]), math.Sqrt(s[1]), nil
}

// Merge sets dst = w + scale·(b·a) (w and dst m×n, b m×r, a r×n), the
// product in float32 with true float32 multiplies (Highest precision, no
// TF32) and float32 accumulation in the device's order: within
// MergeTolerance of linalg.Merge, element by element. dst may be w.
func (d *Device) Merge(dst, w, b, a linalg.Matrix, scale float32) error {
	for _, m := range []linalg.Matrix{dst, w, b, a} {
		if err := checkMatrix(m); err != nil {
			return err
		}
	}
	m, n, r := w.Rows, w.Cols, b.Cols
	if b.Rows != m || a.Cols != n || a.Rows != r || dst.Rows != m || dst.Cols != n {
		return unsupportedf("merge of w %d×%d, b %d×%d, a %d×%d into %d×%d", m, n, b.Rows, b.Cols, a.Rows, a.Cols, dst.Rows, dst.Cols)
	}
	bufs, err := d.uploadMatrices(matrixArg{w, false}, matrixArg{b, false}, matrixArg{a, false})
	if err != nil {
		return err
	}
	defer destroy(bufs...)
	sb, err := d.uploadSmall(f32bytes([]float32{scale}), dtypes.Float32)
	if err != nil {
		return err
	}
	defer destroy(sb)
	e, err := d.exe(fmt.Sprintf("merge/%dx%d/%d", m, n, r), func() ([]byte, error) { return progMerge(m, n, r) })
	if err != nil {
		return err
	}
	out, err := d.run1(e, append(bufs, sb)...)
	if err != nil {
		return err
	}
	defer destroy(out)
	err = d.download(out, f32bytes(dst.Data))
	runtime.KeepAlive(dst.Data)
	return err
}

// progSumSquares: Σ x² in float64 of an [m, n] float32 matrix given as bits.
func progSumSquares(m, n int) ([]byte, error) {
	g := newGraph("heft_sum_squares")
	x := g.exactF64(g.input("x", dtypes.Uint32, m, n))
	return g.build(g.reduce(g.bin(stablehlo.Multiply, x, x), float64(0), g.addFn(dtypes.Float64), 0, 1))
}

// progDotNorms: Σ x·y, Σ x², Σ y² in float64 of [m, n] float32 matrices,
// x given as bits; y as bits too (r = 0) or as the float32 product b·a of
// b [m, r] and a [r, n] (r > 0).
func progDotNorms(m, n, r int) ([]byte, error) {
	g := newGraph("heft_dot_norms")
	x := g.exactF64(g.input("x", dtypes.Uint32, m, n))
	var y *value
	if r == 0 {
		y = g.exactF64(g.input("y", dtypes.Uint32, m, n))
	} else {
		b := g.input("b", dtypes.Float32, m, r)
		a := g.input("a", dtypes.Float32, r, n)
		y = g.exactF64(g.bitcast(g.dot(b, 1, a, 0, false), dtypes.Uint32))
	}
	sum := func(v *value) *value { return g.reduce(v, float64(0), g.addFn(dtypes.Float64), 0, 1) }
	return g.build(sum(g.bin(stablehlo.Multiply, x, y)), sum(g.bin(stablehlo.Multiply, x, x)), sum(g.bin(stablehlo.Multiply, y, y)))
}

// progResidual: Σ (x − b·a)², Σ x² in float64, x given as bits, the product
// of b [m, r] and a [r, n] in float32 and then widened exactly.
func progResidual(m, n, r int) ([]byte, error) {
	g := newGraph("heft_residual")
	x := g.exactF64(g.input("x", dtypes.Uint32, m, n))
	b := g.input("b", dtypes.Float32, m, r)
	a := g.input("a", dtypes.Float32, r, n)
	y := g.exactF64(g.bitcast(g.dot(b, 1, a, 0, false), dtypes.Uint32))
	diff := g.bin(stablehlo.Subtract, x, y)
	sum := func(v *value) *value { return g.reduce(v, float64(0), g.addFn(dtypes.Float64), 0, 1) }
	return g.build(sum(g.bin(stablehlo.Multiply, diff, diff)), sum(g.bin(stablehlo.Multiply, x, x)))
}

// progMerge: w + scale·(b·a), float32.
func progMerge(m, n, r int) ([]byte, error) {
	g := newGraph("heft_merge")
	w := g.input("w", dtypes.Float32, m, n)
	b := g.input("b", dtypes.Float32, m, r)
	a := g.input("a", dtypes.Float32, r, n)
	s := g.input("scale", dtypes.Float32)
	if !g.ok(s) {
		return nil, g.err
	}
	sb := g.keep(stablehlo.BroadcastInDim(s, shapes.Make(dtypes.Float32, m, n), nil))
	return g.build(g.bin(stablehlo.Add, w, g.bin(stablehlo.Multiply, sb, g.dot(b, 1, a, 0, false))))
}
