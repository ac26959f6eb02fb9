package pjrtgpu

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/heft-dev/heft/ops/internal/linalg"
)

// The merge and the analysis reductions: their contracts against the CPU
// kernels (ops/internal/linalg), the parity cases and their checks.
//
// Bit-identity is not possible here: the CPU sums in its own fixed order
// (float64 chunks for the reductions, linalg's float32 GEMM kernel for
// B·A) and a device in another (XLA's reduction trees and GEMM tiling),
// and rounding depends on the order. So each has a stated bound, derived
// from the standard error bounds of recursive summation (|ŝ − s| ≤
// γ_n·Σ|terms|, γ_n = n·u/(1 − n·u), u the unit roundoff) applied to both
// computations, and the tests check it on every case.

const (
	u64 = 0x1p-53 // float64 unit roundoff
	u32 = 0x1p-24 // float32 unit roundoff
)

func gamma(n int, u float64) float64 { return float64(n) * u / (1 - float64(n)*u) }

// NormTolerance is the bound on |device − cpu| / cpu for the Frobenius
// norm of n elements: both sum n exact float64 squares with relative error
// at most γ_n(float64), and the square root halves it: γ_n·(1 + slack).
func NormTolerance(n int) float64 { return 2 * gamma(n, u64) }

// CosineTolerance is the bound on |device − cpu| for the cosine of two
// n-element matrices: each computation's ⟨x, y⟩ is within γ_n·‖x‖·‖y‖ and
// its norms within γ_n relative, so each cosine is within 3γ_n of the
// exact one (plus the division's rounding).
func CosineTolerance(n int) float64 { return 8 * gamma(n, u64) }

// CosineLowRankTolerance is the bound on |device − cpu| for the cosine
// between x and B·A (B m×r, A r×n): each computes every product element
// with float32 error at most γ_r·(|B|·|A|)_ij, so its cosine is within
// 2·γ_r·κ of the one of the exact product, κ = ‖|B|·|A|‖_F / ‖B·A‖_F;
// twice that, plus CosineTolerance(m·n). (TF32 products would break it:
// the device multiplies in true float32.)
func CosineLowRankTolerance(b, a linalg.Matrix) float64 {
	p := linalg.Mul(b, a)
	q := linalg.Mul(absMatrix(b), absMatrix(a))
	np, nq := linalg.FrobeniusNorm(p), linalg.FrobeniusNorm(q)
	if np == 0 {
		return math.Inf(1)
	}
	return 4*gamma(b.Cols+1, u32)*nq/np + CosineTolerance(p.Rows*p.Cols)
}

// ResidualTolerance is the bound on |device − cpu| for ‖x − B·A‖_F (B m×r,
// A r×n): each computes every product element within γ_r·(|B|·|A|)_ij of
// the exact one, so each residual norm is within γ_r·‖|B|·|A|‖_F of the
// exact product's (triangle inequality), and sums its n float64 squares with
// relative error γ_n: 2·γ_{r+1}·‖|B|·|A|‖_F + 2·NormTolerance(m·n)·residual.
func ResidualTolerance(b, a linalg.Matrix, residual float64) float64 {
	q := linalg.Mul(absMatrix(b), absMatrix(a))
	return 2*gamma(b.Cols+1, u32)*linalg.FrobeniusNorm(q) + 2*NormTolerance(b.Rows*a.Cols)*residual
}

// MergeTolerance is the bound on |device − cpu| for merged element (i, j):
// each computes scale·(B·A)_ij within |scale|·γ_{r+1}·(|B|·|A|)_ij of the
// exact value and rounds the sum with w once (relative u32), so
// |device − cpu| ≤ 2·|scale|·γ_{r+2}·(|B|·|A|)_ij + 2^-23·max(|device|,
// |cpu|), plus 2^-124 for a device that flushes float32 subnormals.
func MergeTolerance(scale float32, absProd float64, r int, dev, cpu float32) float64 {
	return 2*math.Abs(float64(scale))*gamma(r+2, u32)*absProd + 0x1p-23*max(math.Abs(float64(dev)), math.Abs(float64(cpu))) + 0x1p-124
}

func absMatrix(a linalg.Matrix) linalg.Matrix {
	b := linalg.NewMatrix(a.Rows, a.Cols)
	for i, v := range a.Data {
		b.Data[i] = float32(math.Abs(float64(v)))
	}
	return b
}

// checkMatrix refuses (ErrUnsupported) a matrix the CPU kernels would
// refuse or that is empty: the CPU gives the error.
func checkMatrix(a linalg.Matrix) error {
	if a.Rows <= 0 || a.Cols <= 0 || a.Rows > 1<<24 || a.Cols > 1<<24 || len(a.Data) != a.Rows*a.Cols {
		return unsupportedf("matrix %d×%d with %d elements", a.Rows, a.Cols, len(a.Data))
	}
	return nil
}

// cosineOf is linalg.Cosine's ending: NaN for a NaN sum, 0 for a zero
// vector, else ⟨x, y⟩ / (‖x‖·‖y‖) clamped to [−1, 1].
func cosineOf(xy, xx, yy float64) float64 {
	if math.IsNaN(xy) || math.IsNaN(xx) || math.IsNaN(yy) {
		return math.NaN()
	}
	if xx == 0 || yy == 0 {
		return 0
	}
	return max(-1, min(1, xy/(math.Sqrt(xx)*math.Sqrt(yy))))
}

// ReduceCase is one merge and set of reductions to compare: W + scale·B·A
// against linalg.Merge, and ‖X‖, cos(X, Y), cos(X, B·A) against
// linalg.FrobeniusNorm and linalg.Cosine.
type ReduceCase struct {
	Name    string
	W, B, A linalg.Matrix
	Scale   float32
	X, Y    linalg.Matrix
}

// ReduceCases: a LoRA-sized merge (BF16-valued base, rank 16 and 64), odd
// shapes, orthogonal and parallel X and Y (cosines 0 and ±1), values
// spanning float32's range (tiny, subnormal and huge elements whose squares
// only float64 holds), a zero Y, NaN and ±Inf.
func ReduceCases(seed uint64) []ReduceCase {
	rng := rand.New(rand.NewPCG(seed, 8))
	mat := func(m, n int, sigma float64) linalg.Matrix {
		a := linalg.NewMatrix(m, n)
		for i := range a.Data {
			a.Data[i] = float32(rng.NormFloat64() * sigma)
		}
		return a
	}
	scaled := func(a linalg.Matrix, f float32) linalg.Matrix {
		b := linalg.NewMatrix(a.Rows, a.Cols)
		for i, v := range a.Data {
			b.Data[i] = v * f
		}
		return b
	}
	var cases []ReduceCase
	add := func(name string, m, n, r int, scale float32, x, y linalg.Matrix) {
		w := mat(m, n, 0.02)
		for i, v := range w.Data { // a BF16 base, as merges see
			w.Data[i] = math.Float32frombits(math.Float32bits(v) &^ 0xFFFF)
		}
		cases = append(cases, ReduceCase{Name: fmt.Sprintf("%s %dx%d r%d", name, m, n, r), W: w, B: mat(m, r, 0.01), A: mat(r, n, 0.05), Scale: scale, X: x, Y: y})
	}
	x := mat(256, 512, 0.01)
	add("random", 256, 512, 16, 2, x, mat(256, 512, 1))
	add("random, correlated", 256, 512, 64, 0.5, x, linalg.Mul(mat(256, 8, 1), mat(8, 512, 1)))
	add("odd shapes", 130, 77, 5, -1.25, mat(130, 77, 1), mat(130, 77, 1))
	par := mat(64, 96, 1)
	add("parallel", 64, 96, 8, 1, par, scaled(par, -3))
	orth := mat(64, 96, 1)
	orthY := linalg.NewMatrix(64, 96)
	for i := range orthY.Data { // disjoint supports: cosine exactly 0
		if i%2 == 0 {
			orthY.Data[i], orth.Data[i] = orth.Data[i], 0
		}
	}
	add("orthogonal", 64, 96, 8, 1, orth, orthY)
	add("tiny values (subnormal)", 64, 96, 8, 1, mat(64, 96, 1e-40), mat(64, 96, 1e-39))
	add("huge values (squares beyond float32)", 64, 96, 8, 1, mat(64, 96, 1e30), mat(64, 96, 1e35))
	add("zero y", 64, 96, 8, 1, mat(64, 96, 1), linalg.NewMatrix(64, 96))
	nan := mat(64, 96, 1)
	nan.Data[17] = float32(math.NaN())
	add("NaN", 64, 96, 8, 1, nan, mat(64, 96, 1))
	inf := mat(64, 96, 1)
	inf.Data[5] = float32(math.Inf(-1))
	add("-Inf", 64, 96, 8, 1, mat(64, 96, 1), inf)
	return cases
}

// CheckReduce runs a case on the device and the CPU and returns a
// description of every bound violated (none: empty).
func CheckReduce(d *Device, c ReduceCase) ([]string, error) {
	var bad []string
	same := func(what string, dev, cpu, tol float64, relative bool) {
		if math.IsNaN(cpu) || math.IsNaN(dev) {
			if math.IsNaN(cpu) != math.IsNaN(dev) {
				bad = append(bad, fmt.Sprintf("%s: device %v, cpu %v", what, dev, cpu))
			}
			return
		}
		if math.IsInf(cpu, 0) || math.IsInf(dev, 0) {
			if dev != cpu {
				bad = append(bad, fmt.Sprintf("%s: device %v, cpu %v", what, dev, cpu))
			}
			return
		}
		diff := math.Abs(dev - cpu)
		if relative {
			diff /= max(math.Abs(cpu), math.SmallestNonzeroFloat64)
		}
		if diff > tol {
			bad = append(bad, fmt.Sprintf("%s: device %v, cpu %v, difference %.3g > bound %.3g", what, dev, cpu, diff, tol))
		}
	}
	// Merge.
	want := linalg.NewMatrix(c.W.Rows, c.W.Cols)
	if err := linalg.Merge(want, c.W, c.B, c.A, c.Scale); err != nil {
		return nil, fmt.Errorf("cpu merge: %w", err)
	}
	got := linalg.NewMatrix(c.W.Rows, c.W.Cols)
	if err := d.Merge(got, c.W, c.B, c.A, c.Scale); err != nil {
		return nil, fmt.Errorf("device merge: %w", err)
	}
	abs := linalg.Mul(absMatrix(c.B), absMatrix(c.A))
	for i, w := range want.Data {
		g := got.Data[i]
		if g == w {
			continue
		}
		tol := MergeTolerance(c.Scale, float64(abs.Data[i]), c.B.Cols, g, w)
		if diff := math.Abs(float64(g) - float64(w)); !(diff <= tol) {
			bad = append(bad, fmt.Sprintf("merge element %d: device %v, cpu %v, difference %.3g > bound %.3g", i, g, w, diff, tol))
			break
		}
	}
	// Reductions.
	n := len(c.X.Data)
	devNorm, err := d.FrobeniusNorm(c.X)
	if err != nil {
		return nil, fmt.Errorf("device norm: %w", err)
	}
	same("‖x‖", devNorm, linalg.FrobeniusNorm(c.X), NormTolerance(n), true)
	devCos, err := d.Cosine(c.X, c.Y)
	if err != nil {
		return nil, fmt.Errorf("device cosine: %w", err)
	}
	cpuCos, err := linalg.Cosine(c.X, c.Y)
	if err != nil {
		return nil, fmt.Errorf("cpu cosine: %w", err)
	}
	same("cos(x, y)", devCos, cpuCos, CosineTolerance(n), false)
	// cos(X, B·A) with X of W's shape: the merge's own delta against X.
	x := c.X
	if x.Rows != c.W.Rows || x.Cols != c.W.Cols {
		x = c.W
	}
	devLR, err := d.CosineLowRank(x, c.B, c.A)
	if err != nil {
		return nil, fmt.Errorf("device low-rank cosine: %w", err)
	}
	cpuLR, err := linalg.Cosine(x, linalg.Mul(c.B, c.A))
	if err != nil {
		return nil, fmt.Errorf("cpu low-rank cosine: %w", err)
	}
	same("cos(x, B·A)", devLR, cpuLR, CosineLowRankTolerance(c.B, c.A), false)
	// The LoRA error check: ‖x − B·A‖ and ‖x‖.
	devRes, devNorm2, err := d.LowRankError(x, c.B, c.A)
	if err != nil {
		return nil, fmt.Errorf("device low-rank error: %w", err)
	}
	cpuRes, err := linalg.ResidualNorm(c.B, c.A, x)
	if err != nil {
		return nil, fmt.Errorf("cpu residual: %w", err)
	}
	same("‖x − B·A‖", devRes, cpuRes, ResidualTolerance(c.B, c.A, cpuRes), false)
	same("‖x‖ (with the residual)", devNorm2, linalg.FrobeniusNorm(x), NormTolerance(len(x.Data)), true)
	return bad, nil
}
