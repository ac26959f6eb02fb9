package linalg

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/mat"
)

// Defaults of SVDOptions, chosen by sweeping p and q on 1024×4096
// matrices with known spectra at ranks 16, 128 and 256 (lorabench sweep;
// numbers in bench/lora/README.md). The hard case for a range finder is a
// slowly decaying spectrum such as σ_i = i^−0.3 — realistic for
// full-fine-tuning deltas, where rank 128 captures well under half the
// energy. There, at rank 128 with p = 32, the Frobenius error is 1.031×
// the optimum after one power iteration, 1.0105× after two, 1.0044× after
// three and about 1.002× after four; at rank 256 two iterations leave
// 1.017×. Faster decay converges in fewer iterations (1.0035× after two
// for σ_i = 1/i), so a fixed q either wastes passes or misses the 1.01×
// target; TruncatedSVD therefore stops adaptively (see SVDOptions.Tol).
const (
	// DefaultPowerIters is the minimum number of power iterations.
	DefaultPowerIters = 2
	// DefaultMaxPowerIters caps the adaptive iterations: 14 passes over A.
	DefaultMaxPowerIters = 6
	// DefaultTol stops the iterations once the last one improved the
	// estimated error by at most 0.5 %. The improvements shrink by a
	// factor of two or more per iteration in every sweep, so the error
	// left above the optimum is at most about this much.
	DefaultTol = 0.005
)

// DefaultOversample returns the oversampling p that TruncatedSVD uses for a
// given rank unless told otherwise: max(10, rank/4), so rank 128 sketches
// 160 directions. Doubling p gains less than one more power iteration on
// slow spectra (σ_i = i^−0.3, rank 128, q = 2: 1.0105× → 1.0073× the
// optimum, against 1.0044× for q = 3) while making every pass 20 % and the
// float64 orthonormalizations 45 % dearer; the floor of 10 keeps small
// ranks reliable (Halko et al. §4.2).
func DefaultOversample(rank int) int { return max(10, rank/4) }

// SVDOptions tunes TruncatedSVD and SingularValues. The zero value selects
// the defaults with seed 0.
type SVDOptions struct {
	// Oversample is p, the sketch directions beyond the rank; 0 selects
	// DefaultOversample(rank), negative values mean none.
	Oversample int
	// PowerIters is the minimum number of power iterations q; 0 selects
	// DefaultPowerIters and a negative value means none.
	PowerIters int
	// MaxPowerIters caps q; 0 selects max(PowerIters, DefaultMaxPowerIters).
	MaxPowerIters int
	// Tol makes the iteration adaptive. From the minimum number of
	// iterations on, each iteration computes the error the current basis
	// Q would give, ‖A − U·diag(S)·Vt‖_F = sqrt(‖A‖_F² − Σ_{i≤k} σ_i(B)²)
	// with B = Qᵀ·A (nearly free: that product is the first half of the
	// next iteration), and iterating stops once the last iteration
	// improved it by at most a relative Tol, or once it is below 0.3 % of
	// ‖A‖_F, where float32 rounding swamps the estimate (and a basis
	// that good has converged). 0 selects DefaultTol; a negative value
	// runs exactly PowerIters iterations.
	Tol float64
	// Seed seeds the Gaussian sketch. Equal seeds give bit-identical
	// results (see the package comment); different seeds give
	// decompositions that agree to within the approximation error.
	Seed uint64
}

// params resolves the defaults: oversampling p, minimum and maximum
// power iterations, and the tolerance (negative: fixed q = qMin).
func (o SVDOptions) params(rank int) (p, qMin, qMax int, tol float64) {
	p = o.Oversample
	if p == 0 {
		p = DefaultOversample(rank)
	}
	qMin = o.PowerIters
	if qMin == 0 {
		qMin = DefaultPowerIters
	}
	p, qMin = max(p, 0), max(qMin, 0)
	qMax = o.MaxPowerIters
	if qMax == 0 {
		qMax = max(qMin, DefaultMaxPowerIters)
	}
	qMax = max(qMax, qMin)
	tol = o.Tol
	if tol == 0 {
		tol = DefaultTol
	}
	if tol < 0 {
		qMax = qMin
	}
	return p, qMin, qMax, tol
}

// SVD is a truncated singular value decomposition A ≈ U·diag(S)·Vt of an
// m×n matrix A with k components.
//
//   - U is m×k with orthonormal columns; in each column the entry of
//     largest magnitude (the first one, on ties) is positive, which fixes
//     the sign ambiguity of singular vectors.
//   - S holds k non-negative singular values in non-increasing order.
//   - Vt is k×n with orthonormal rows.
//
// Components with S[i] == 0 (A of rank below k, or zero) have a zero
// column in U and a zero row in Vt rather than an arbitrary null-space
// basis, so the product and the LoRA factors are unaffected and stay
// reproducible.
type SVD struct {
	U  Matrix
	S  []float64
	Vt Matrix
	// Exact is set when the decomposition came from a dense float64 SVD
	// (rank + oversampling ≥ min(m, n)) rather than the range finder.
	Exact bool
	// PowerIters is the number of power iterations the range finder ran
	// (0 for an exact decomposition).
	PowerIters int
}

// Rank returns the number of components k.
func (d SVD) Rank() int { return len(d.S) }

// Truncate returns the first k components of d (all of them if k ≥
// d.Rank()), copied.
func (d SVD) Truncate(k int) SVD {
	k = max(0, min(k, d.Rank()))
	u := NewMatrix(d.U.Rows, k)
	for i := range u.Rows {
		copy(u.Row(i), d.U.Data[i*d.U.Cols:i*d.U.Cols+k])
	}
	vt := NewMatrix(k, d.Vt.Cols)
	copy(vt.Data, d.Vt.Data[:k*d.Vt.Cols])
	return SVD{U: u, S: slices.Clone(d.S[:k]), Vt: vt, Exact: d.Exact, PowerIters: d.PowerIters}
}

// TruncatedSVD returns the rank-k truncated SVD of a, k = min(rank, m, n).
//
// When k plus the oversampling reaches min(m, n), it computes a dense SVD
// in float64 (gonum) and truncates it: exact up to rounding, cheap only
// for small matrices. Otherwise it runs the randomized range finder of
// Halko, Martinsson and Tropp (2011, Algorithm 4.4) with l = k + p
// directions: Y = A·Ω for a Gaussian n×l sketch Ω, then q power iterations
// Z = Aᵀ·Q, Y = A·Z, with Householder re-orthonormalization in float64
// after every product, and finally B = Qᵀ·A, whose small SVD comes from the
// eigendecomposition of the l×l Gram matrix B·Bᵀ accumulated in float64.
// q is chosen adaptively between PowerIters and MaxPowerIters (see
// SVDOptions.Tol). All products with A are float32 [Gemm]s: 2q+2 passes
// over A, about (4q+4)·m·n·l flops. With the defaults the Frobenius error
// ‖A − U·diag(S)·Vt‖ stays within about 0.5 % of the optimum
// sqrt(Σ_{i>k} σ_i²) on every spectrum measured (see DefaultTol).
//
// a is not modified and may be reused at once. The result is deterministic
// for given a, rank and opts. It fails with ErrShape if rank < 1 or a is
// malformed, and with ErrNotFinite if a holds a NaN or infinity.
func TruncatedSVD(a Matrix, rank int, opts SVDOptions) (SVD, error) {
	return decompose(a, rank, opts, true)
}

// SingularValues returns the top min(k, m, n) singular values of a,
// non-increasing, exactly as TruncatedSVD would return them in S for the
// same arguments, without forming U and Vt.
func SingularValues(a Matrix, k int, opts SVDOptions) ([]float64, error) {
	d, err := decompose(a, k, opts, false)
	return d.S, err
}

func decompose(a Matrix, rank int, opts SVDOptions, vectors bool) (SVD, error) {
	if err := a.check("TruncatedSVD"); err != nil {
		return SVD{}, err
	}
	if rank < 1 {
		return SVD{}, fmt.Errorf("%w: TruncatedSVD: rank %d < 1", ErrShape, rank)
	}
	m, n := a.Rows, a.Cols
	k := min(rank, m, n)
	p, qMin, qMax, tol := opts.params(k)
	bad, frob2 := scan(a.Data)
	switch {
	case bad >= 0:
		return SVD{}, fmt.Errorf("%w: TruncatedSVD: element (%d, %d) is %v", ErrNotFinite, bad/n, bad%n, a.Data[bad])
	case frob2 == 0:
		return SVD{U: NewMatrix(m, k), S: make([]float64, k), Vt: NewMatrix(k, n), Exact: k+p >= min(m, n)}, nil
	case k+p >= min(m, n):
		return exactSVD(a, k, vectors)
	}
	return randomizedSVD(a, k, k+p, qMin, qMax, tol, frob2, opts.Seed, vectors)
}

// scan returns the index of the first non-finite element of x (or -1) and
// Σ x_i² accumulated in float64 in fixed chunks (deterministic; zero only
// for an all-zero x, since float32 squares cannot underflow in float64).
func scan(x []float32) (bad int, sumsq float64) {
	chunks := (len(x) + reduceChunk - 1) / reduceChunk
	bads := make([]int, chunks)
	sums := make([]float64, chunks)
	parallelFor(chunks, func(_, c int) {
		lo := c * reduceChunk
		chunk := x[lo:min(lo+reduceChunk, len(x))]
		bads[c] = slices.IndexFunc(chunk, func(v float32) bool {
			return math.Float32bits(v)&0x7f800000 == 0x7f800000
		})
		if bads[c] >= 0 {
			bads[c] += lo
			return
		}
		sums[c] = sumSquares(chunk)
	})
	for c := range chunks {
		if bads[c] >= 0 {
			return bads[c], 0
		}
		sumsq += sums[c]
	}
	return -1, sumsq
}

// gaussian returns an l×n matrix of N(0, 1) float32 entries whose row i is
// drawn from the PCG stream (seed, i), so it can be filled in parallel and
// does not depend on GOMAXPROCS.
func gaussian(l, n int, seed uint64) Matrix {
	g := NewMatrix(l, n)
	parallelFor(l, func(_, i int) {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		for j := range g.Row(i) {
			g.Data[i*n+j] = float32(r.NormFloat64())
		}
	})
	return g
}

// randomizedSVD runs the range finder with l directions and between qMin
// and qMax power iterations (see SVDOptions.Tol); frob2 is ‖A‖_F².
func randomizedSVD(a Matrix, k, l, qMin, qMax int, tol, frob2 float64, seed uint64, vectors bool) (SVD, error) {
	m, n := a.Rows, a.Cols
	// Sketches are stored transposed (one direction per row, l×m and
	// l×n), so every product is Gemm's fast packed form and the
	// orthonormalization is an LQ of row panels.
	zt := gaussian(l, n, seed) // Ωᵀ, then Zᵀ = Qᵀ·A; finally B
	qt := NewMatrix(l, m)      // Yᵀ, orthonormalized to Qᵀ
	var orthoM, orthoN rowOrtho
	Gemm(false, true, 1, zt, a, 0, qt) // Yᵀ = Ωᵀ·Aᵀ
	orthoM.apply(qt)
	prevErr := math.Inf(1)
	q := 0
	for {
		// Zᵀ = Qᵀ·A is both B for the current basis and the first half
		// of the next power iteration.
		Gemm(false, false, 1, qt, a, 0, zt)
		if q >= qMax {
			break
		}
		if q >= qMin-1 {
			// Error the current basis would give: ‖A‖² − Σ_{i≤k} σ_i(B)².
			e2 := frob2 - topEnergy(zt, k)
			err := math.Sqrt(max(e2, 0))
			// Stop once the last iteration gained at most tol, or when the
			// error is at the float32 resolution of Σσ² (≈1e-7·‖A‖²),
			// where the estimate is noise and the basis is exact anyway.
			if q >= qMin && (prevErr-err <= tol*err || e2 <= 1e-5*frob2) {
				break
			}
			prevErr = err
		}
		orthoN.apply(zt)
		Gemm(false, true, 1, zt, a, 0, qt) // Yᵀ = Zᵀ·Aᵀ
		orthoM.apply(qt)
		q++
	}
	bt := zt // B = Qᵀ·A, l×n

	// Small SVD of B from its Gram matrix: B·Bᵀ = Ub·Λ·Ubᵀ. Then
	// W = Ubᵀ·B has orthogonal rows of norms σ_i, Vt = diag(1/σ)·W and
	// U = Q·Ub. Taking σ_i = ‖W_i‖ rather than √λ_i keeps small singular
	// values accurate to float32 precision instead of ε64·σ_1²/σ_i.
	g := gram(bt)
	var eig mat.EigenSym
	if !eig.Factorize(mat.NewSymDense(l, g), true) {
		return SVD{}, errors.New("linalg: TruncatedSVD: eigendecomposition of the sketch did not converge")
	}
	var vecs mat.Dense
	eig.VectorsTo(&vecs) // columns by ascending eigenvalue
	ub := NewMatrix(l, k)
	for i := range l {
		for j := range k {
			ub.Data[i*k+j] = float32(vecs.At(i, l-1-j))
		}
	}
	w := MulTA(ub, bt) // k×n
	s := rowNorms(w)
	// The norms can invert near-ties of the eigenvalue order; restore a
	// non-increasing S by a stable permutation of the components.
	perm := make([]int, k)
	for i := range perm {
		perm[i] = i
	}
	slices.SortStableFunc(perm, func(x, y int) int { return -cmpFloat(s[x], s[y]) })
	sorted := make([]float64, k)
	for i, p := range perm {
		sorted[i] = s[p]
	}
	if !vectors {
		return SVD{S: sorted, PowerIters: q}, nil
	}
	ubp := NewMatrix(l, k)
	vt := NewMatrix(k, n)
	for j, p := range perm {
		for i := range l {
			ubp.Data[i*k+j] = ub.Data[i*k+p]
		}
		if s[p] > 0 {
			inv := 1 / s[p]
			dst, src := vt.Row(j), w.Row(p)
			for c, v := range src {
				dst[c] = float32(float64(v) * inv)
			}
		}
	}
	u := MulTA(qt, ubp) // m×k
	d := SVD{U: u, S: sorted, Vt: vt, PowerIters: q}
	d.normalize()
	return d, nil
}

// topEnergy returns the sum of the k largest eigenvalues of x·xᵀ (the
// energy of x's best rank-k approximation), from the float64 Gram matrix.
func topEnergy(x Matrix, k int) float64 {
	r := x.Rows
	var eig mat.EigenSym
	if !eig.Factorize(mat.NewSymDense(r, gram(x)), false) {
		// Not expected; NaN never satisfies the stopping test, so the
		// iteration just runs to its maximum.
		return math.NaN()
	}
	vals := eig.Values(nil) // ascending
	var e float64
	for _, v := range vals[r-min(k, r):] {
		e += max(v, 0)
	}
	return e
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// gram returns x·xᵀ (r×r, row-major, full) accumulated in float64.
func gram(x Matrix) []float64 {
	r, c := x.Rows, x.Cols
	g := make([]float64, r*r)
	parallelFor(r, func(_, i int) {
		xi := x.Row(i)
		for j := 0; j <= i; j++ {
			v := dotImpl.Dsdot(c, xi, 1, x.Row(j), 1)
			g[i*r+j] = v
			g[j*r+i] = v
		}
	})
	return g
}

// rowNorms returns the Euclidean norm of every row of x, accumulated in
// float64 in a fixed order.
func rowNorms(x Matrix) []float64 {
	s := make([]float64, x.Rows)
	parallelFor(x.Rows, func(_, i int) {
		s[i] = math.Sqrt(sumSquares(x.Row(i)))
	})
	return s
}

// exactSVD truncates a dense float64 SVD of a to k components.
func exactSVD(a Matrix, k int, vectors bool) (SVD, error) {
	m, n := a.Rows, a.Cols
	d64 := mat.NewDense(m, n, nil)
	raw := d64.RawMatrix().Data
	for i, v := range a.Data {
		raw[i] = float64(v)
	}
	kind := mat.SVDNone
	if vectors {
		kind = mat.SVDThin
	}
	var f mat.SVD
	if !f.Factorize(d64, kind) {
		return SVD{}, errors.New("linalg: TruncatedSVD: dense SVD did not converge")
	}
	s := f.Values(nil)[:k]
	if !vectors {
		return SVD{S: s, Exact: true}, nil
	}
	var u, v mat.Dense
	f.UTo(&u)
	f.VTo(&v)
	d := SVD{U: NewMatrix(m, k), S: s, Vt: NewMatrix(k, n), Exact: true}
	for i := range m {
		for j := range k {
			d.U.Data[i*k+j] = float32(u.At(i, j))
		}
	}
	for j := range k {
		for c := range n {
			d.Vt.Data[j*n+c] = float32(v.At(c, j))
		}
	}
	d.normalize()
	return d, nil
}

// normalize applies the conventions documented on SVD: zero vectors for
// zero singular values and a positive largest-magnitude entry in each
// column of U (with the matching row of Vt negated along).
func (d SVD) normalize() {
	k := d.Rank()
	parallelFor(k, func(_, j int) {
		vrow := d.Vt.Row(j)
		if d.S[j] == 0 {
			for i := range d.U.Rows {
				d.U.Data[i*k+j] = 0
			}
			clear(vrow)
			return
		}
		best, arg := float32(-1), 0
		for i := range d.U.Rows {
			if v := abs32(d.U.Data[i*k+j]); v > best {
				best, arg = v, i
			}
		}
		if d.U.Data[arg*k+j] >= 0 {
			return
		}
		for i := range d.U.Rows {
			d.U.Data[i*k+j] = -d.U.Data[i*k+j]
		}
		for c := range vrow {
			vrow[c] = -vrow[c]
		}
	})
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }
