package pjrtgpu

import (
	"math"
	"runtime"
)

// Householder reduction of a symmetric matrix to tridiagonal form, and the
// accumulation of its reflectors, with the work of each step split by rows
// (or columns) over the cores: gonum's Dsytrd and Dorgtr run on one core
// (about 17 and 10 ms for l = 320), and this reduction is on the critical
// path of every stopping-rule check. The arithmetic of each element does
// not depend on the split, so the results do not depend on the number of
// cores.

// workers runs f(w) for w in [0, n) on n goroutines that live as long as
// the workers value: one reduction has 2·l phases, too many to start
// goroutines for each.
type workers struct {
	n    int
	jobs []chan func(int)
	done chan struct{}
}

func newWorkers(n int) *workers {
	p := &workers{n: n, jobs: make([]chan func(int), n), done: make(chan struct{}, n)}
	for w := range n {
		p.jobs[w] = make(chan func(int))
		go func() {
			for f := range p.jobs[w] {
				f(w)
				p.done <- struct{}{}
			}
		}()
	}
	return p
}

// run runs f on every worker and waits for all.
func (p *workers) run(f func(w int)) {
	for _, c := range p.jobs {
		c <- f
	}
	for range p.n {
		<-p.done
	}
}

// workersFor returns the workers of a reduction of size l: up to 8, or
// nil when l is too small to split (or there is one core).
func workersFor(l int) *workers {
	if nw := min(runtime.GOMAXPROCS(0), 8); nw > 1 && l > parallelFrom {
		return newWorkers(nw)
	}
	return nil
}

// split runs f(lo, hi) over [0, n): on the workers, each a span, when
// there are workers and n is worth splitting, else in one call.
func (p *workers) split(n int, f func(lo, hi int)) {
	if p == nil || n < parallelFrom {
		f(0, n)
		return
	}
	p.run(func(w int) { lo, hi := span(w, p.n, n); f(lo, hi) })
}

// close stops the workers; p may be nil.
func (p *workers) close() {
	if p == nil {
		return
	}
	for _, c := range p.jobs {
		close(c)
	}
}

// parallelFrom is the smallest trailing size worth splitting: below it one
// phase is a few microseconds of work, about the cost of the hand-off.
const parallelFrom = 128

// span returns worker w's share [lo, hi) of [0, n), in blocks of 4.
func span(w, workers, n int) (int, int) {
	per := ((n+workers-1)/workers + 3) &^ 3
	return min(w*per, n), min((w+1)*per, n)
}

// tridiagonalize reduces the symmetric l×l matrix a (row-major, full
// storage) to tridiagonal form T = Qᵀ·A·Q with Q = H₀·H₁⋯H_{l−3},
// H_j = I − τ_j·v_j·v_jᵀ (LAPACK's dsytd2, lower): it returns T's diagonal
// and subdiagonal, and leaves v_j (with an implicit leading 1) below the
// subdiagonal of column j of a and τ_j in tau.
func tridiagonalize(a []float64, l int) (d, e, tau []float64) {
	d, e, tau = make([]float64, l), make([]float64, max(l-1, 0)), make([]float64, max(l-1, 0))
	if l == 0 {
		return
	}
	pool := workersFor(l)
	defer pool.close()
	v := make([]float64, l)
	p := make([]float64, l)
	for j := 0; j < l-2; j++ {
		n := l - j - 1 // trailing size
		// The reflector that zeroes a[j+2:, j] (dlarfg).
		alpha := a[(j+1)*l+j]
		var xn float64
		for i := j + 2; i < l; i++ {
			xn = math.Hypot(xn, a[i*l+j])
		}
		d[j] = a[j*l+j]
		if xn == 0 {
			e[j], tau[j] = alpha, 0
			continue
		}
		beta := -math.Copysign(math.Hypot(alpha, xn), alpha)
		t := (beta - alpha) / beta
		scale := 1 / (alpha - beta)
		vs := v[:n]
		vs[0] = 1
		for i := 1; i < n; i++ {
			vs[i] = a[(j+1+i)*l+j] * scale
		}
		e[j], tau[j] = beta, t
		// p = τ·A₂₂·v, then w = p − (τ/2)(pᵀv)·v, then A₂₂ −= v·wᵀ + w·vᵀ.
		ps := p[:n]
		off := (j + 1) * (l + 1) // A₂₂[0][0]
		symv := func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row := a[off+r*l : off+r*l+n]
				ps[r] = t * dot(row, vs)
			}
		}
		pool.split(n, symv)
		k := -0.5 * t * dot(ps, vs)
		for i := range ps {
			ps[i] += k * vs[i]
		}
		update := func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row := a[off+r*l : off+r*l+n]
				vr, wr := vs[r], ps[r]
				for c := range row {
					row[c] -= vr*ps[c] + wr*vs[c]
				}
			}
		}
		pool.split(n, update)
		for i := 1; i < n; i++ {
			a[(j+1+i)*l+j] = vs[i]
		}
	}
	if l >= 2 {
		d[l-2] = a[(l-2)*l+l-2]
		e[l-2] = a[(l-1)*l+l-2]
	}
	d[l-1] = a[(l-1)*l+l-1]
	return d, e, tau
}

// householderQ returns Q = H₀·H₁⋯H_{l−3} (row-major) from the reflectors
// tridiagonalize left in a and tau (LAPACK's dorgtr, lower), accumulated
// backwards, each step split by columns.
func householderQ(a, tau []float64, l int) []float64 {
	q := make([]float64, l*l)
	for i := range l {
		q[i*l+i] = 1
	}
	pool := workersFor(l)
	defer pool.close()
	v := make([]float64, l)
	for j := l - 3; j >= 0; j-- {
		t := tau[j]
		if t == 0 {
			continue
		}
		n := l - j - 1
		vs := v[:n]
		vs[0] = 1
		for i := 1; i < n; i++ {
			vs[i] = a[(j+1+i)*l+j]
		}
		off := (j + 1) * (l + 1) // Q₂₂[0][0]
		// Q₂₂ ← (I − τ·v·vᵀ)·Q₂₂, column by column: w_c = vᵀ·Q₂₂[:, c].
		apply := func(lo, hi int) {
			var wbuf [64]float64
			for c0 := lo; c0 < hi; c0 += len(wbuf) {
				c1 := min(c0+len(wbuf), hi)
				w := wbuf[:c1-c0]
				clear(w)
				for i, vi := range vs {
					row := q[off+i*l+c0 : off+i*l+c1]
					for c, x := range row {
						w[c] += vi * x
					}
				}
				for c := range w {
					w[c] *= t
				}
				for i, vi := range vs {
					row := q[off+i*l+c0 : off+i*l+c1]
					for c := range row {
						row[c] -= vi * w[c]
					}
				}
			}
		}
		pool.split(n, apply)
	}
	return q
}

// dot is Σ x_i·y_i in order, four partial sums (len(y) ≥ len(x)).
func dot(x, y []float64) float64 {
	y = y[:len(x)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}
