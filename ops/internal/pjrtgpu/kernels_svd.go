//go:build cgo && linux

package pjrtgpu

import (
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/stablehlo"
	"github.com/gomlx/go-xla/types"
	"github.com/gomlx/go-xla/types/shapes"
)

// The programs of the randomized SVD. One power iteration is one program:
// orthonormalize Zᵀ, Yᵀ = Zᵀ·Aᵀ, orthonormalize Yᵀ into Qᵀ, Zᵀ = Qᵀ·A and
// the Gram matrix Zᵀ·Z for the stopping rule, the only thing the host
// downloads (l×l). The orthonormalizations are matrix products only
// (Newton–Schulz, below), so nothing else leaves the device until the
// final projection.

// Rows are orthonormalized in float64 (the float32 rows are exact in
// float64; the result is rounded back) by passes of
//
//	G = X·Xᵀ,  X ← (G/c + s·I)^(-1/2)·X/√c,  c = ‖G‖_∞ (≥ the largest eigenvalue),
//
// the inverse square root from coupled Newton–Schulz steps
//
//	T = (3I − Z·Y)/2,  Y ← Y·T,  Z ← T·Z   (Y₀ = G/c + s·I, Z₀ = I)
//
// (Higham, Functions of Matrices, §6.3): matrix products only, so the
// whole pass stays on the device. An eigenvalue μ of Y₀ grows by 9/4 per
// step while small and converges quadratically near 1: about
// log(1/μ)/log(9/4) + 6 steps to float64 rounding.
//
// A pass on rows far from orthonormal (‖G − I‖_∞ ≥ 1/2) is shifted by
// s = nsShift and takes nsIters steps: directions below the shift, which
// rounding of G may have made zero or negative (they would diverge), come
// out shrunk by √(μ/s) rather than normalized, and the next pass restores
// them. A rank-deficient X's float32 noise (μ ≈ 1e-15) is amplified a
// thousandfold per pass until it becomes an orthonormal completion, as
// with Householder QR. A pass on rows near orthonormal (eigenvalues of G in
// [1/2, 3/2]) is unshifted and takes nsPolishIters steps. Passes stop after
// such a polishing pass, and after nsMaxPasses in any case: a sketch whose
// singular values span less than a factor 1000 takes two passes, a
// rank-deficient one three. The device reads back one predicate per pass
// and one per branch.
//
// Float64 matters: in float32 the noise directions cannot be resolved, the
// completion takes many passes that amplify rounding by 1/√s each, and an
// exactly rank-deficient A came out with a projection error of 2e-6·‖A‖
// (float32 resolution is 6e-8). Float64 products run on the H100's and
// H200's FP64 tensor cores; a pass costs about 4·l²·d flops (d = m or n)
// plus 6·l³ per step.
const (
	nsShift       = 1e-6
	nsIters       = 24 // μ ≥ 1e-6: 17 steps of growth, 6 quadratic ones, one spare
	nsPolishIters = 9  // μ ∈ [1/3, 1]: 3 steps to 0.98, 5 quadratic ones, one spare
	nsMaxPasses   = 6
	nsPolish      = 0.5
)

// eye returns the l×l identity of dt.
func (g *graph) eye(l int, dt dtypes.DType) *value {
	if g.err != nil {
		return nil
	}
	sh := shapes.Make(dtypes.Int32, l, l)
	r := g.keep(g.fn.Iota(sh, 0))
	c := g.keep(g.fn.Iota(sh, 1))
	if !g.ok(r, c) {
		return nil
	}
	eq := g.keep(stablehlo.Compare(r, c, types.CompareEQ, types.CompareSigned))
	return g.convert(eq, dt)
}

// scalarTimes multiplies x by the scalar s of its dtype (broadcast).
func (g *graph) scalarTimes(x, s *value) *value {
	if !g.ok(x, s) {
		return nil
	}
	b := g.keep(stablehlo.BroadcastInDim(s, x.Shape(), nil))
	return g.bin(stablehlo.Multiply, x, b)
}

func (g *graph) mulC(x *value, c any) *value { return g.bin(stablehlo.Multiply, x, g.full(x, c)) }

// dot64 contracts axis lc of a with axis rc of b in float64.
func (g *graph) dot64(a *value, lc int, b *value, rc int) *value {
	if !g.ok(a, b) {
		return nil
	}
	return g.keep(stablehlo.DotGeneral(a, []int{lc}, nil, b, []int{rc}, nil).
		Precision(types.DotGeneralPrecisionHighest, types.DotGeneralPrecisionHighest).OutputDType(dtypes.Float64).Done())
}

// within builds f's operations in fn (a closure) instead of the current
// function.
func (g *graph) within(fn *stablehlo.Function, f func()) {
	outer := g.fn
	g.fn = fn
	f()
	g.fn = outer
}

// rowAbsSumMax returns max_i Σ_j |x_ij| (‖x‖_∞) as a float64 scalar.
func (g *graph) rowAbsSumMax(x *value) *value {
	s := g.reduce(g.un(stablehlo.Abs, x), float64(0), g.addFn(dtypes.Float64), 1)
	return g.reduce(s, float64(0), g.maxFn(dtypes.Float64), 0)
}

// orthRows returns x [l, d] (float32) with orthonormal rows spanning the
// same space (see nsShift).
func (g *graph) orthRows(x *value) *value {
	if !g.ok(x) {
		return nil
	}
	l := x.Shape().Dimensions[0]
	x = g.convert(x, dtypes.Float64)
	p0 := g.keep(g.fn.ConstantFromScalar(int32(0)))
	done0 := g.keep(g.fn.ConstantFromScalar(int32(0)))
	if !g.ok(x, p0, done0) {
		return nil
	}
	xs := x.Shape()
	cond := g.fn.Closure()
	g.within(cond, func() {
		p := g.keep(cond.Input(p0.Shape()))
		_ = g.keep(cond.Input(xs))
		done := g.keep(cond.Input(done0.Shape()))
		more := g.bin(stablehlo.And, g.cmp(p, types.CompareLT, int32(nsMaxPasses)), g.cmp(done, types.CompareEQ, int32(0)))
		if g.ok(more) {
			if err := cond.Return(more); err != nil {
				g.err = err
			}
		}
	})
	body := g.fn.Closure()
	g.within(body, func() {
		p := g.keep(body.Input(p0.Shape()))
		xb := g.keep(body.Input(xs))
		_ = g.keep(body.Input(done0.Shape()))
		gm := g.dot64(xb, 1, xb, 1)
		eye := g.eye(l, dtypes.Float64)
		dev := g.rowAbsSumMax(g.bin(stablehlo.Subtract, gm, eye))
		// An all-zero X gives c = 0: any positive c leaves it zero.
		c := g.bin(stablehlo.Maximum, g.rowAbsSumMax(gm), g.full(dev, float64(0x1p-1000)))
		far := g.cmp(dev, types.CompareGE, float64(nsPolish))
		shift := g.sel(far, g.full(dev, float64(nsShift)), g.full(dev, float64(0)))
		y0 := g.bin(stablehlo.Add, g.scalarTimes(gm, g.bin(stablehlo.Divide, g.full(c, float64(1)), c)), g.scalarTimes(eye, shift))
		var z *value
		if g.noIf {
			_, z = g.newtonSchulz(y0, nsIters)
		} else {
			z = g.branch(far, func(g *graph, y0 *value) *value {
				_, z := g.newtonSchulz(y0, nsIters)
				return z
			}, func(g *graph, y0 *value) *value {
				_, z := g.newtonSchulz(y0, nsPolishIters)
				return z
			}, y0)
		}
		xn := g.dot64(g.scalarTimes(z, g.un(stablehlo.Rsqrt, c)), 1, xb, 0)
		pn := g.addC(p, int32(1))
		done := g.convert(g.un(stablehlo.Not, far), dtypes.Int32)
		if g.ok(pn, xn, done) {
			if err := body.Return(pn, xn, done); err != nil {
				g.err = err
			}
		}
	})
	if g.err != nil {
		return nil
	}
	outs, err := stablehlo.While(cond, body, p0, x, done0)
	if err != nil {
		g.err = err
		return nil
	}
	return g.convert(outs[1], dtypes.Float32)
}

// branch returns onTrue(x) if pred, else onFalse(x), as a conditional:
// only one branch runs.
func (g *graph) branch(pred *value, onTrue, onFalse func(g *graph, x *value) *value, x *value) *value {
	if !g.ok(pred, x) {
		return nil
	}
	var fns [2]*stablehlo.Function
	for i, f := range []func(*graph, *value) *value{onTrue, onFalse} {
		fn := g.fn.Closure()
		g.within(fn, func() {
			xc := g.keep(fn.UseParentValue(x))
			if !g.ok(xc) {
				return
			}
			if r := f(g, xc); g.ok(r) {
				if err := fn.Return(r); err != nil {
					g.err = err
				}
			}
		})
		fns[i] = fn
	}
	if g.err != nil {
		return nil
	}
	outs, err := stablehlo.If(pred, fns[0], fns[1])
	if err != nil {
		g.err = err
		return nil
	}
	return outs[0]
}

// newtonSchulz runs iters coupled Newton–Schulz steps from Y₀ = y0,
// Z₀ = I (float64) in a counted While loop and returns (Y, Z).
func (g *graph) newtonSchulz(y0 *value, iters int) (y, z *value) {
	if !g.ok(y0) {
		return nil, nil
	}
	l := y0.Shape().Dimensions[0]
	sh := y0.Shape()
	i0 := g.keep(g.fn.ConstantFromScalar(int32(0)))
	z0 := g.eye(l, dtypes.Float64)
	if !g.ok(i0, z0) {
		return nil, nil
	}
	cond := g.fn.Closure()
	g.within(cond, func() {
		i := g.keep(cond.Input(i0.Shape()))
		_ = g.keep(cond.Input(sh))
		_ = g.keep(cond.Input(sh))
		lt := g.cmp(i, types.CompareLT, int32(iters))
		if g.ok(lt) {
			if err := cond.Return(lt); err != nil {
				g.err = err
			}
		}
	})
	body := g.fn.Closure()
	g.within(body, func() {
		i := g.keep(body.Input(i0.Shape()))
		yb := g.keep(body.Input(sh))
		zb := g.keep(body.Input(sh))
		// T = 1.5·I − 0.5·Z·Y
		t := g.bin(stablehlo.Subtract, g.mulC(g.eye(l, dtypes.Float64), float64(1.5)), g.mulC(g.dot64(zb, 1, yb, 0), float64(0.5)))
		yn := g.dot64(yb, 1, t, 0)
		zn := g.dot64(t, 1, zb, 0)
		in := g.addC(i, int32(1))
		if g.ok(in, yn, zn) {
			if err := body.Return(in, yn, zn); err != nil {
				g.err = err
			}
		}
	})
	if g.err != nil {
		return nil, nil
	}
	outs, err := stablehlo.While(cond, body, i0, y0, z0)
	if err != nil {
		g.err = err
		return nil, nil
	}
	return outs[1], outs[2]
}

// gram64 returns x·xᵀ in float64 for a float32 x: the Gram matrices the
// host reads, free of float32 underflow and overflow for any finite A.
func (g *graph) gram64(x *value) *value {
	x = g.convert(x, dtypes.Float64)
	return g.dot64(x, 1, x, 1)
}

// aInputs declares A [m, n] float32 and, for BF16 power iterations, its
// BF16 copy; it returns A and the operand of the iteration products.
func (g *graph) aInputs(m, n int, bf16 bool) (a, aop *value) {
	a = g.input("a", dtypes.Float32, m, n)
	aop = a
	if bf16 {
		aop = g.input("a_bf16", dtypes.BFloat16, m, n)
	}
	return a, aop
}

// progSVDInit starts a decomposition: ‖A‖_F² (float64 accumulation) and
// the count of non-finite elements; Qᵀ = orth(Ωᵀ·Aᵀ) [l, m];
// Zᵀ = Qᵀ·A [l, n] and its Gram matrix [l, l] (float64).
func progSVDInit(m, n, l int, bf16, noIf bool) ([]byte, error) {
	g := newGraph("heft_svd_init")
	g.noIf = noIf
	a, aop := g.aInputs(m, n, bf16)
	omega := g.input("omega", dtypes.Float32, l, n)
	d := g.convert(a, dtypes.Float64)
	sum := g.reduce(g.bin(stablehlo.Multiply, d, d), float64(0), g.addFn(dtypes.Float64), 0, 1)
	bad := g.convert(g.un(stablehlo.Not, g.un(stablehlo.IsFinite, a)), dtypes.Int32)
	count := g.reduce(bad, int32(0), g.addFn(dtypes.Int32), 0, 1)
	qt := g.orthRows(g.dot(omega, 1, aop, 1, bf16))
	z := g.dot(qt, 1, aop, 0, bf16)
	return g.build(sum, count, qt, z, g.gram64(z))
}

// progSVDIter is one power iteration from Zᵀ [l, n]: Zᵀ ← orth(Zᵀ),
// Qᵀ = orth(Zᵀ·Aᵀ) [l, m], the next Zᵀ = Qᵀ·A and its Gram matrix.
func progSVDIter(m, n, l int, bf16, noIf bool) ([]byte, error) {
	g := newGraph("heft_svd_iter")
	g.noIf = noIf
	adt := dtypes.Float32
	if bf16 {
		adt = dtypes.BFloat16
	}
	aop := g.input("a", adt, m, n)
	z := g.input("z", dtypes.Float32, l, n)
	qt := g.orthRows(g.dot(g.orthRows(z), 1, aop, 1, bf16))
	zn := g.dot(qt, 1, aop, 0, bf16)
	return g.build(qt, zn, g.gram64(zn))
}

// progSVDProject is B = Qᵀ·A in float32 and B·Bᵀ, after BF16 power
// iterations.
func progSVDProject(m, n, l int) ([]byte, error) {
	g := newGraph("heft_svd_project")
	a := g.input("a", dtypes.Float32, m, n)
	qt := g.input("qt", dtypes.Float32, l, m)
	b := g.dot(qt, 1, a, 0, false)
	return g.build(b, g.gram64(b))
}

// progSVDFinal finishes from Qᵀ [l, m], B [l, n] and the top eigenvectors
// Ubᵀ [k, l] of B·Bᵀ: W = Ubᵀ·B [k, n] (rows of norm σ_i, Vt = diag(1/σ)·W),
// U = Q·Ub [m, k], and for the self-check Uᵀ·U and W·Wᵀ [k, k] (float64).
func progSVDFinal(m, n, l, k int) ([]byte, error) {
	g := newGraph("heft_svd_final")
	qt := g.input("qt", dtypes.Float32, l, m)
	b := g.input("b", dtypes.Float32, l, n)
	ubt := g.input("ubt", dtypes.Float32, k, l)
	w := g.dot(ubt, 1, b, 0, false)
	u := g.dot(qt, 0, ubt, 1, false)
	u64 := g.convert(u, dtypes.Float64)
	return g.build(w, u, g.dot64(u64, 0, u64, 0), g.gram64(w))
}
