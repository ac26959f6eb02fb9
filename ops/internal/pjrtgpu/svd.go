//go:build cgo && linux

package pjrtgpu

import (
	"fmt"
	"math"
	"time"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/pjrt"

	"github.com/heft-dev/heft/ops/internal/linalg"
)

// SVDOptions tunes TruncatedSVD: linalg's options (oversampling, power
// iterations, tolerance, seed; the same defaults) plus the precision of
// the power iterations.
type SVDOptions struct {
	linalg.SVDOptions
	// BF16 rounds A and the sketches to BF16 for the products of the power
	// iterations (float32 accumulation: the tensor cores' fast path). The
	// final projection B = Qᵀ·A, every Gram matrix and the
	// orthonormalizations stay float32. Off by default: the products are a
	// small part of the time at the ranks LoRA uses.
	BF16 bool
}

// svdParams resolves linalg.SVDOptions' defaults as linalg does.
func svdParams(o linalg.SVDOptions, rank int) (p, qMin, qMax int, tol float64) {
	p = o.Oversample
	if p == 0 {
		p = linalg.DefaultOversample(rank)
	}
	qMin = o.PowerIters
	if qMin == 0 {
		qMin = linalg.DefaultPowerIters
	}
	p, qMin = max(p, 0), max(qMin, 0)
	qMax = o.MaxPowerIters
	if qMax == 0 {
		qMax = max(qMin, linalg.DefaultMaxPowerIters)
	}
	qMax = max(qMax, qMin)
	tol = o.Tol
	if tol == 0 {
		tol = linalg.DefaultTol
	}
	if tol < 0 {
		qMax = qMin
	}
	return p, qMin, qMax, tol
}

// Cholesky-QR passes stop after one that started within orthoTol of
// orthonormal rows (max |X·Xᵀ − I|), and at maxOrthoPasses in any case.
const (
	orthoTol       = 1e-2
	maxOrthoPasses = 6
)

// TruncatedSVD returns the rank-k truncated SVD of a, k = min(rank, m, n),
// by the randomized range finder of linalg.TruncatedSVD with l = k + p
// sketch directions: the same Gaussian sketch for a seed, the same
// adaptive number of power iterations between PowerIters and
// MaxPowerIters, and the same small problem (the eigendecomposition of
// B·Bᵀ, σ_i = ‖W_i‖), with the same conventions for U, S and Vt (see
// linalg.SVD). Every product with A runs on the device in float32 (see
// SVDOptions.BF16); the sketches' rows are re-orthonormalized after every
// product by Cholesky-QR, each l×l Cholesky factor computed on the host in
// float64. Components found only at rounding level (A of rank below k) are
// returned as zeros.
//
// The result is not bit-identical to the CPU's (products and
// orthonormalizations round differently) but has the same accuracy: the
// Frobenius error stays within about 1 % of the optimum. Inputs the CPU
// decomposes exactly (k + p ≥ min(m, n)), malformed matrices and matrices
// holding NaN or ±Inf give ErrUnsupported: linalg.TruncatedSVD computes
// them, or returns the error naming the element.
func (d *Device) TruncatedSVD(a linalg.Matrix, rank int, opts SVDOptions) (linalg.SVD, error) {
	m, n := a.Rows, a.Cols
	if m <= 0 || n <= 0 || len(a.Data) != m*n || rank < 1 {
		return linalg.SVD{}, unsupportedf("TruncatedSVD of a %d×%d matrix with %d values at rank %d", m, n, len(a.Data), rank)
	}
	k := min(rank, m, n)
	p, qMin, qMax, tol := svdParams(opts.SVDOptions, k)
	l := k + p
	if l >= min(m, n) {
		return linalg.SVD{}, unsupportedf("rank %d with %d oversampling covers min(%d, %d): the CPU decomposes it exactly", k, p, m, n)
	}
	r := &svdRun{d: d, m: m, n: n, l: l, bufs: map[*pjrt.Buffer]bool{}}
	defer r.free()
	A, err := d.upload(f32bytes(a.Data), dtypes.Float32, m, n)
	if err != nil {
		return linalg.SVD{}, err
	}
	r.own(A)
	frob2, bad, err := r.sumSquares(A)
	if err != nil {
		return linalg.SVD{}, err
	}
	if bad > 0 {
		return linalg.SVD{}, unsupportedf("%d non-finite elements", bad)
	}
	if frob2 == 0 {
		return linalg.SVD{U: linalg.NewMatrix(m, k), S: make([]float64, k), Vt: linalg.NewMatrix(k, n)}, nil
	}
	aop := A
	if opts.BF16 {
		if aop, err = r.exec(fmt.Sprintf("to_bf16/%dx%d", m, n), func() ([]byte, error) { return progToBF16(m, n) }, A); err != nil {
			return linalg.SVD{}, err
		}
	}
	omega, err := d.sketch(l, n, opts.Seed) // owned by the cache
	if err != nil {
		return linalg.SVD{}, err
	}
	// Sketches are kept transposed, one direction per row, as in linalg:
	// Yᵀ (l×m) and Zᵀ = Qᵀ·A (l×n).
	yt, err := r.mm(omega, l, n, 1, aop, m, n, 1, opts.BF16) // Yᵀ = Ωᵀ·Aᵀ
	if err != nil {
		return linalg.SVD{}, err
	}
	qt, err := r.orth(yt, m)
	if err != nil {
		return linalg.SVD{}, err
	}
	prevErr := math.Inf(1)
	q := 0
	var zt *pjrt.Buffer
	for {
		// Zᵀ = Qᵀ·A is both B for the current basis and the first half
		// of the next power iteration.
		if zt, err = r.mm(qt, l, m, 1, aop, m, n, 0, opts.BF16); err != nil {
			return linalg.SVD{}, err
		}
		if q >= qMax {
			break
		}
		if q >= qMin-1 {
			h, err := r.gram(zt, n)
			if err != nil {
				return linalg.SVD{}, err
			}
			start := time.Now()
			e2 := frob2 - topEnergy(h, l, k)
			r.hostTime(start)
			est := math.Sqrt(max(e2, 0))
			if q >= qMin && (prevErr-est <= tol*est || e2 <= 1e-5*frob2) {
				break
			}
			prevErr = est
		}
		if zt, err = r.orth(zt, n); err != nil {
			return linalg.SVD{}, err
		}
		if yt, err = r.mm(zt, l, n, 1, aop, m, n, 1, opts.BF16); err != nil { // Yᵀ = Zᵀ·Aᵀ
			return linalg.SVD{}, err
		}
		r.release(zt, qt)
		if qt, err = r.orth(yt, m); err != nil {
			return linalg.SVD{}, err
		}
		q++
	}
	bt := zt // B = Qᵀ·A, l×n
	if opts.BF16 {
		r.release(bt)
		if bt, err = r.mm(qt, l, m, 1, A, m, n, 0, false); err != nil {
			return linalg.SVD{}, err
		}
	}
	// Small SVD of B from its Gram matrix, as linalg: B·Bᵀ = Ub·Λ·Ubᵀ,
	// W = Ubᵀ·B, σ_i = ‖W_i‖, Vt = diag(1/σ)·W, U = Q·Ub.
	h, err := r.gram(bt, n)
	if err != nil {
		return linalg.SVD{}, err
	}
	start := time.Now()
	ubt, err := topVectors(h, l, k)
	r.hostTime(start)
	if err != nil {
		return linalg.SVD{}, err
	}
	ubtBuf, err := r.upload(ubt, k, l)
	if err != nil {
		return linalg.SVD{}, err
	}
	wBuf, err := r.mm(ubtBuf, k, l, 1, bt, l, n, 0, false)
	if err != nil {
		return linalg.SVD{}, err
	}
	w := make([]float32, k*n)
	if err := d.download(wBuf, f32bytes(w)); err != nil {
		return linalg.SVD{}, err
	}
	r.release(wBuf, ubtBuf, bt)
	start = time.Now()
	s, vt, perm := finishSVD(w, k, n)
	ubp := make([]float32, l*k)
	for j, pj := range perm {
		for i := range l {
			ubp[i*k+j] = ubt[pj*l+i]
		}
	}
	r.hostTime(start)
	ubpBuf, err := r.upload(ubp, l, k)
	if err != nil {
		return linalg.SVD{}, err
	}
	uBuf, err := r.mm(qt, l, m, 0, ubpBuf, l, k, 0, false) // U = Q·Ub, m×k
	if err != nil {
		return linalg.SVD{}, err
	}
	u := linalg.NewMatrix(m, k)
	if err := d.download(uBuf, f32bytes(u.Data)); err != nil {
		return linalg.SVD{}, err
	}
	res := linalg.SVD{U: u, S: s, Vt: vt, PowerIters: q}
	normalizeSVD(&res)
	d.addStats(func(st *Stats) { st.PowerIters += q })
	return res, nil
}

// svdRun is one decomposition's device buffers.
type svdRun struct {
	d       *Device
	m, n, l int
	bufs    map[*pjrt.Buffer]bool // owned, destroyed by free
	gbuf    []float32             // reused l×l download buffer
}

func (r *svdRun) own(b *pjrt.Buffer) { r.bufs[b] = true }

func (r *svdRun) release(bs ...*pjrt.Buffer) {
	for _, b := range bs {
		if r.bufs[b] {
			delete(r.bufs, b)
			destroy(b)
		}
	}
}

func (r *svdRun) free() {
	for b := range r.bufs {
		destroy(b)
	}
	r.bufs = nil
}

func (r *svdRun) hostTime(start time.Time) {
	dt := time.Since(start)
	r.d.addStats(func(s *Stats) { s.HostTime += dt })
}

// exec runs a cached single-output program and owns its result.
func (r *svdRun) exec(key string, build func() ([]byte, error), inputs ...*pjrt.Buffer) (*pjrt.Buffer, error) {
	e, err := r.d.exe(key, build)
	if err != nil {
		return nil, err
	}
	out, err := r.d.run1(e, inputs...)
	if err != nil {
		return nil, err
	}
	r.own(out)
	return out, nil
}

func (r *svdRun) upload(x []float32, rows, cols int) (*pjrt.Buffer, error) {
	b, err := r.d.uploadSmall(f32bytes(x), dtypes.Float32, rows, cols)
	if err != nil {
		return nil, err
	}
	r.own(b)
	return b, nil
}

// mm contracts axis lc of a [a0, a1] with axis rc of b [b0, b1]. A BF16
// operand (the rounded A) is recognized by its buffer's dtype.
func (r *svdRun) mm(a *pjrt.Buffer, a0, a1, lc int, b *pjrt.Buffer, b0, b1, rc int, bf16 bool) (*pjrt.Buffer, error) {
	adt, bdt := bufDType(a), bufDType(b)
	key := fmt.Sprintf("mm/%dx%d%s.%d/%dx%d%s.%d/%v", a0, a1, adt, lc, b0, b1, bdt, rc, bf16)
	return r.exec(key, func() ([]byte, error) { return progMatmul(a0, a1, adt, lc, b0, b1, bdt, rc, bf16) }, a, b)
}

func bufDType(b *pjrt.Buffer) dtypes.DType {
	dt, err := b.DType()
	if err != nil {
		return dtypes.Float32
	}
	return dt
}

// gram returns x·xᵀ for x [l, d] on the host, in float64.
func (r *svdRun) gram(x *pjrt.Buffer, d int) ([]float64, error) {
	l := r.l
	e, err := r.d.exe(fmt.Sprintf("gram/%dx%d", l, d), func() ([]byte, error) { return progGram(l, d) })
	if err != nil {
		return nil, err
	}
	gb, err := r.d.run1(e, x)
	if err != nil {
		return nil, err
	}
	defer destroy(gb)
	if r.gbuf == nil {
		r.gbuf = make([]float32, l*l)
	}
	if err := r.d.download(gb, f32bytes(r.gbuf)); err != nil {
		return nil, err
	}
	return widen(r.gbuf, l), nil
}

// orth re-orthonormalizes the rows of x [l, d] by Cholesky-QR, X ← L⁻¹·X
// for X·Xᵀ = L·Lᵀ, until a pass starts from a Gram matrix within orthoTol
// of the identity (that pass then leaves the rows orthonormal to float32
// rounding): two passes for a well-conditioned X (the second removes the
// first one's loss of orthogonality, about cond(X)²·2⁻²⁴), more when X is
// ill-conditioned or rank-deficient (a shifted first pass shrinks the
// dependent rows, the next ones turn their rounding noise into an
// orthonormal completion, as Householder QR would). It consumes x.
func (r *svdRun) orth(x *pjrt.Buffer, d int) (*pjrt.Buffer, error) {
	l := r.l
	for pass := 0; pass < maxOrthoPasses; pass++ {
		g, err := r.gram(x, d)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		dev := identityDeviation(g, l)
		linv, shifted, err := cholInverse(g, l)
		r.hostTime(start)
		if err != nil {
			return nil, err
		}
		lb, err := r.upload(linv, l, l)
		if err != nil {
			return nil, err
		}
		nx, err := r.mm(lb, l, l, 1, x, l, d, 0, false)
		if err != nil {
			return nil, err
		}
		r.release(lb, x)
		x = nx
		r.d.addStats(func(s *Stats) {
			s.OrthoPasses++
			if shifted {
				s.Shifted++
			}
		})
		if dev <= orthoTol {
			break
		}
	}
	return x, nil
}

// sumSquares returns ‖A‖_F² (float64 accumulation) and the number of
// non-finite elements.
func (r *svdRun) sumSquares(a *pjrt.Buffer) (float64, int, error) {
	m, n := r.m, r.n
	e, err := r.d.exe(fmt.Sprintf("sumsq/%dx%d", m, n), func() ([]byte, error) { return progSumSquares(m, n) })
	if err != nil {
		return 0, 0, err
	}
	outs, err := r.d.run(e, a)
	if err != nil {
		return 0, 0, err
	}
	defer destroy(outs...)
	if len(outs) != 2 {
		return 0, 0, fmt.Errorf("sumsq: %d outputs, want 2", len(outs))
	}
	s := make([]float64, 1)
	c := make([]int32, 1)
	if err := outs[0].ToHost(f64bytes(s)); err != nil {
		return 0, 0, fmt.Errorf("download: %w", err)
	}
	if err := outs[1].ToHost(i32bytes(c)); err != nil {
		return 0, 0, fmt.Errorf("download: %w", err)
	}
	return s[0], int(c[0]), nil
}
