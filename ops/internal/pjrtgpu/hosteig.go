package pjrtgpu

import (
	"errors"
	"math"
	"runtime"
	"slices"
	"sync"
)

// The symmetric l×l eigenproblem of the randomized SVD (l = rank +
// oversampling, up to about 330), on the host in float64. gonum's EigenSym
// takes about 95 ms for l = 320 with vectors on one core: 17 ms reducing to
// tridiagonal form, 10 forming Q, 85 in the implicit QL iterations
// rotating the l×l eigenvector matrix one rotation at a time. Here the
// reduction and Q are split over the cores (hosttri.go); the QL iterations
// run on the tridiagonal matrix alone, recording their rotations (2 ms), and
// the rotations are then applied to the eigenvector matrix in parallel (its
// rows are independent; 22 ms on one core). The reduction is kept, so a
// stopping-rule check that needs only eigenvalues can later yield the
// eigenvectors without starting over.

// errEigen is returned when the QL iterations do not converge (not
// expected: LAPACK allows 30 iterations per eigenvalue, they take about 2).
var errEigen = errors.New("pjrtgpu: symmetric eigenproblem: QL iterations did not converge")

// symEig is the eigendecomposition of a symmetric l×l matrix H in two
// steps: eigenSym computes the eigenvalues (Householder reduction
// H = Q·T·Qᵀ, then QL iterations on T that record their rotations), and
// topVectors the eigenvectors (Q, accumulated from the reflectors, rotated).
// With prepare set, eigenSym goes on forming Q in the background after it
// returns (settle waits for it), so that topVectors only has to apply the
// rotations.
type symEig struct {
	l    int
	vals []float64 // eigenvalues, in the order of the columns of Q·G₁·G₂⋯
	rot  rotations

	a, tau []float64 // the reflectors of the reduction
	once   sync.Once // guards q, formed in the background with prepare
	q      []float64 // Q, row-major
}

// eigenSym reduces the symmetric l×l matrix h (row-major; only its lower
// triangle is read, h is not modified) and computes its eigenvalues.
// NaN or ±Inf entries give errEigen.
func eigenSym(h []float64, l int, prepare bool) (*symEig, error) {
	e := &symEig{l: l, a: make([]float64, l*l)}
	for i := range l {
		for j := 0; j <= i; j++ {
			e.a[i*l+j], e.a[j*l+i] = h[i*l+j], h[i*l+j]
		}
	}
	d, sub, tau := tridiagonalize(e.a, l)
	e.tau = tau
	rot, err := qlRotations(d, sub)
	if err != nil {
		return nil, err
	}
	e.vals, e.rot = d, rot
	if prepare {
		go e.formQ()
	}
	return e, nil
}

// formQ forms Q from the reflectors, once; a call while another runs waits
// for it.
func (e *symEig) formQ() { e.once.Do(e.buildQ) }

// settle waits for a background formQ to finish, or keeps it from starting.
func (e *symEig) settle() { e.once.Do(func() {}) }

func (e *symEig) buildQ() { e.q = householderQ(e.a, e.tau, e.l) }

// ascending returns the eigenvalues in ascending order.
func (e *symEig) ascending() []float64 {
	v := slices.Clone(e.vals)
	slices.Sort(v)
	return v
}

// topEnergy returns the sum of the k largest eigenvalues (negative ones,
// rounding noise of a Gram matrix, count as zero): the energy of the best
// rank-k approximation of B when H = B·Bᵀ.
func (e *symEig) topEnergy(k int) float64 {
	v := e.ascending()
	var s float64
	for _, x := range v[len(v)-min(k, len(v)):] {
		s += max(x, 0)
	}
	return s
}

// rotations is the sequence of plane rotations of the QL iterations: the
// j-th acts on columns idx[j] and idx[j]+1 of the eigenvector matrix with
// cosine c[j] and sine s[j].
type rotations struct {
	idx  []int32
	c, s []float64
}

// qlRotations runs the implicit QL iterations with Wilkinson shifts on the
// tridiagonal matrix (d, e) (EISPACK tql2, as in JAMA), leaving the
// eigenvalues in d (unsorted) and returning the rotations that turn Q into
// the eigenvector matrix. e has length len(d)−1 and is destroyed.
func qlRotations(d, sub []float64) (rotations, error) {
	n := len(d)
	var rot rotations
	if n <= 1 {
		return rot, nil
	}
	e := make([]float64, n)
	copy(e, sub)
	// About 2 QL iterations per eigenvalue over half the matrix on average.
	rot.idx = make([]int32, 0, n*n)
	rot.c = make([]float64, 0, n*n)
	rot.s = make([]float64, 0, n*n)
	const eps = 0x1p-52
	var f, tst1 float64
	for l := range n {
		tst1 = max(tst1, math.Abs(d[l])+math.Abs(e[l]))
		m := l
		for m < n-1 && math.Abs(e[m]) > eps*tst1 {
			m++
		}
		if m > l {
			for iter := 0; ; iter++ {
				if iter == 60 {
					return rot, errEigen
				}
				g := d[l]
				p := (d[l+1] - g) / (2 * e[l])
				r := hypot(p, 1)
				if p < 0 {
					r = -r
				}
				d[l] = e[l] / (p + r)
				d[l+1] = e[l] * (p + r)
				dl1 := d[l+1]
				h := g - d[l]
				for i := l + 2; i < n; i++ {
					d[i] -= h
				}
				f += h
				p = d[m]
				c, c2, c3 := 1.0, 1.0, 1.0
				el1 := e[l+1]
				s, s2 := 0.0, 0.0
				for i := m - 1; i >= l; i-- {
					c3, c2, s2 = c2, c, s
					g = c * e[i]
					h = c * p
					r = hypot(p, e[i])
					e[i+1] = s * r
					s = e[i] / r
					c = p / r
					p = c*d[i] - s*g
					d[i+1] = h + s*(c*g+s*d[i])
					rot.idx = append(rot.idx, int32(i))
					rot.c = append(rot.c, c)
					rot.s = append(rot.s, s)
				}
				p = -s * s2 * c3 * el1 * e[l] / dl1
				e[l] = s * p
				d[l] = c * p
				if !(math.Abs(e[l]) > eps*tst1) {
					break
				}
			}
		}
		d[l] += f
		e[l] = 0
	}
	for _, v := range d {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return rot, errEigen
		}
	}
	return rot, nil
}

// hypot is √(x²+y²): the plain formula, which is exact enough and several
// times faster than math.Hypot, unless the squares overflow or underflow.
func hypot(x, y float64) float64 {
	r := math.Sqrt(x*x + y*y)
	if r > 0x1p-400 && r < 0x1p400 {
		return r
	}
	return math.Hypot(x, y)
}

// applyRotations applies rot to the columns of the n×n matrix V, stored
// transposed (vt[i*n+r] = V[r][i], so a rotation of columns i and i+1 of V
// updates rows i and i+1 of vt): V ← V·G₁·G₂⋯. Each row of V is
// independent of the others, so the work is split by rows of V (columns of
// vt) over the cores; every element sees the same operations in the same
// order whatever the split, so the result is deterministic.
func applyRotations(vt []float64, n int, rot rotations) {
	if n == 0 || len(rot.idx) == 0 {
		return
	}
	// One contiguous range of rows of V per core, a multiple of 4 wide: the
	// per-rotation overhead is amortized over as many elements as possible.
	workers := max(1, min(runtime.GOMAXPROCS(0), n/4))
	per := (n/workers + 3) &^ 3
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rotateRange(vt, n, lo, hi, rot)
		}()
	}
	wg.Wait()
}

// rotateRange applies rot to rows [lo, hi) of V (columns of vt).
func rotateRange(vt []float64, n, lo, hi int, rot rotations) {
	w := hi - lo
	w4 := w &^ 3
	cs, sn := rot.c[:len(rot.idx)], rot.s[:len(rot.idx)]
	for j, i32 := range rot.idx {
		i := int(i32)
		c, s := cs[j], sn[j]
		x := vt[i*n+lo : i*n+hi : i*n+hi]
		y := vt[(i+1)*n+lo : (i+1)*n+hi : (i+1)*n+hi]
		y = y[:len(x)]
		r := 0
		for ; r < w4; r += 4 {
			x0, x1, x2, x3 := x[r], x[r+1], x[r+2], x[r+3]
			y0, y1, y2, y3 := y[r], y[r+1], y[r+2], y[r+3]
			y[r], y[r+1], y[r+2], y[r+3] = s*x0+c*y0, s*x1+c*y1, s*x2+c*y2, s*x3+c*y3
			x[r], x[r+1], x[r+2], x[r+3] = c*x0-s*y0, c*x1-s*y1, c*x2-s*y2, c*x3-s*y3
		}
		for ; r < w; r++ {
			h := y[r]
			y[r] = s*x[r] + c*h
			x[r] = c*x[r] - s*h
		}
	}
}

// topVectors returns the eigenvectors of the k largest eigenvalues as the
// rows of a k×l float32 matrix (largest first; ties in column order) and
// those eigenvalues. It may be called once.
func (e *symEig) topVectors(k int) ([]float32, []float64) {
	l := e.l
	k = min(k, l)
	e.formQ()
	if e.q == nil { // settled before it was formed
		e.buildQ()
	}
	// vt = Qᵀ, so that after the rotations row j of vt is the eigenvector
	// of vals[j].
	vt := make([]float64, l*l)
	forRows(l, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			for r := range l {
				vt[c*l+r] = e.q[r*l+c]
			}
		}
	})
	applyRotations(vt, l, e.rot)
	d := e.vals
	order := make([]int, l)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int {
		switch {
		case d[x] > d[y]:
			return -1
		case d[x] < d[y]:
			return 1
		}
		return 0
	})
	vecs := make([]float32, k*l)
	vals := make([]float64, k)
	for j := range k {
		for i, v := range vt[order[j]*l : (order[j]+1)*l] {
			vecs[j*l+i] = float32(v)
		}
		vals[j] = d[order[j]]
	}
	return vecs, vals
}
