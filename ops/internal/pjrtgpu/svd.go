//go:build cgo && linux

package pjrtgpu

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
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
	// final projection B = Qᵀ·A stays float32, the Gram matrices and the
	// orthonormalizations float64. Off by default: the products are a
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

// svdSpeculate is how many power iterations the device may run ahead of
// the stopping rule. The rule needs the eigenvalues of an l×l matrix on the
// host (5 to 20 ms for l = 320, by the number of cores) while an iteration
// takes the device a few milliseconds, so the device computes the next iterations while the host
// decides, and several decisions run at once on the host's cores.
// Iterations past the stopping point are discarded, and their checks
// cancelled: one not yet started skips its work, one under way finishes in
// the background without forming its eigenvectors, and the decomposition
// returns without waiting for either.
const svdSpeculate = 3

// svdChecks is how many stopping-rule checks run at once. Each splits its
// reduction over up to 8 cores (hosttri.go); checks start in iteration
// order, one device iteration (milliseconds) apart, and wait for the
// semaphore in that order, so the one the rule waits for is not slowed by
// speculative ones.
const svdChecks = 2

// TruncatedSVD returns the rank-k truncated SVD of a, k = min(rank, m, n),
// by the randomized range finder of linalg.TruncatedSVD with l = k + p
// sketch directions: the same Gaussian sketch for a seed, the same
// adaptive number of power iterations between PowerIters and
// MaxPowerIters, and the same small problem (the eigendecomposition of
// B·Bᵀ, σ_i = ‖W_i‖), with the same conventions for U, S and Vt (see
// linalg.SVD).
//
// Each power iteration is one device program: both products with A in
// float32 (see SVDOptions.BF16) and both re-orthonormalizations of the
// sketches' rows, by shifted Newton–Schulz passes (matrix products only;
// see nsShift). Only the l×l Gram matrix of each iteration comes back, for
// the stopping rule, whose eigenvalues the host computes in float64 while
// the device runs ahead (svdSpeculate). At the end the host computes the
// top eigenvectors of B·Bᵀ and one more program forms W = Ubᵀ·B and
// U = Q·Ub. The factors are checked for orthogonality before they are
// returned (see selfCheckTol).
//
// The result is not bit-identical to the CPU's (products and
// orthonormalizations round differently) but has the same accuracy: the
// Frobenius error stays within about 1 % of the optimum. It is
// deterministic for a seed on a given device and plugin. Inputs the CPU
// decomposes exactly (k + p ≥ min(m, n)), malformed matrices, matrices
// holding NaN or ±Inf and results that fail the self-check give
// ErrUnsupported: linalg.TruncatedSVD computes them, or returns the error
// naming the element.
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
	r := &svdRun{d: d, m: m, n: n, l: l, k: k, bf16: opts.BF16, bufs: map[*pjrt.Buffer]bool{}, checkSem: make(chan struct{}, svdChecks)}
	defer r.free()
	A, err := d.upload(f32bytes(a.Data), dtypes.Float32, m, n)
	if err != nil {
		return linalg.SVD{}, err
	}
	r.own(A)
	r.a, r.aop = A, A
	if opts.BF16 {
		if r.aop, err = r.exec(fmt.Sprintf("to_bf16/%dx%d", m, n), func() ([]byte, error) { return progToBF16(m, n) }, A); err != nil {
			return linalg.SVD{}, err
		}
	}
	omega, err := d.sketch(l, n, opts.Seed) // owned by the cache
	if err != nil {
		return linalg.SVD{}, err
	}
	first, frob2, bad, err := r.init(omega)
	if err != nil {
		return linalg.SVD{}, err
	}
	if bad > 0 {
		return linalg.SVD{}, unsupportedf("%d non-finite elements", bad)
	}
	if frob2 == 0 {
		return linalg.SVD{U: linalg.NewMatrix(m, k), S: make([]float64, k), Vt: linalg.NewMatrix(k, n)}, nil
	}
	r.frob2 = frob2

	// The power iterations, as linalg: iteration q has the basis Q_q and
	// Zᵀ_q = Q_qᵀ·A; from q = qMin−1 on, the stopping rule estimates the
	// error Q_q gives, √(‖A‖² − Σ_{i≤k} λ_i(Z_qᵀZ_q)), and stops at the
	// first q ≥ qMin where the last iteration improved it by at most tol
	// (or where it is below the float32 resolution), else at qMax.
	needCheck := func(q int) bool { return q >= qMin-1 && q < qMax && (q >= qMin || qMax > qMin) }
	iters := []*svdIter{first}
	if needCheck(0) {
		r.startCheck(first, 0 >= qMin)
	}
	evalQ, decided, prevErr := 0, -1, math.Inf(1)
	for decided < 0 {
		for decided < 0 {
			if evalQ == qMax {
				if len(iters) > qMax {
					decided = qMax
				}
				break
			}
			if evalQ >= len(iters) {
				break
			}
			if !needCheck(evalQ) {
				evalQ++
				continue
			}
			it := iters[evalQ]
			if !it.checked() {
				break
			}
			if it.err != nil {
				return linalg.SVD{}, it.err
			}
			est := math.Sqrt(max(it.e2, 0))
			if evalQ >= qMin && (prevErr-est <= tol*est || it.e2 <= 1e-5*frob2) {
				decided = evalQ
				break
			}
			prevErr = est
			evalQ++
		}
		if decided >= 0 {
			break
		}
		// Buffers of decided iterations whose successor exists are done.
		for q := 0; q < min(evalQ, len(iters)-1); q++ {
			r.release(iters[q].qt, iters[q].z)
		}
		if cur := len(iters) - 1; cur < qMax && cur+1 <= evalQ+svdSpeculate {
			next, err := r.iterate(iters[cur])
			if err != nil {
				return linalg.SVD{}, err
			}
			iters = append(iters, next)
			if needCheck(next.q) {
				r.startCheck(next, next.q >= qMin)
			}
			continue
		}
		start := time.Now()
		<-iters[evalQ].done
		wait := time.Since(start)
		d.addStats(func(s *Stats) { s.HostWait += wait })
	}
	final := iters[decided]
	for _, it := range iters[decided+1:] {
		it.cancel.Store(true)
	}
	d.addStats(func(s *Stats) {
		s.PowerIters += decided
		s.Speculative += len(iters) - 1 - decided
	})
	for _, it := range iters {
		if it != final {
			r.release(it.qt, it.z)
		}
	}
	b := final.z
	var eig *symEig
	if final.done != nil && !opts.BF16 {
		// The stopping rule's check of the final iteration (done when the
		// rule stopped there) has its eigendecomposition under way.
		start := time.Now()
		<-final.done
		wait := time.Since(start)
		d.addStats(func(s *Stats) { s.HostWait += wait })
		eig = final.eig
	}
	if opts.BF16 {
		// B = Qᵀ·A in float32, and its own Gram matrix.
		outs, err := r.execN(fmt.Sprintf("svd_project/%dx%d/%d", m, n, l), func() ([]byte, error) { return progSVDProject(m, n, l) }, 2, A, final.qt)
		if err != nil {
			return linalg.SVD{}, err
		}
		b = outs[0]
		if final.h, err = r.gram(outs[1]); err != nil {
			return linalg.SVD{}, err
		}
	}
	if eig == nil {
		start := time.Now()
		eig, err = eigenSym(final.h, l, false)
		r.hostTime(start)
		if err != nil {
			return linalg.SVD{}, err
		}
	}
	res, err := r.finish(final.qt, b, eig)
	if err != nil {
		return linalg.SVD{}, err
	}
	res.PowerIters = decided
	return res, nil
}

// svdRun is one decomposition's device buffers and host checks.
type svdRun struct {
	d          *Device
	m, n, l, k int
	bf16       bool
	a, aop     *pjrt.Buffer // A, and the operand of the power iterations
	frob2      float64
	bufs       map[*pjrt.Buffer]bool // owned, destroyed by free
	checkSem   chan struct{}         // at most svdChecks checks at once (see there)
	stop       atomic.Bool           // set by free: checks not started skip their work
}

// svdIter is one power iteration's state: the basis Qᵀ [l, m] and
// Zᵀ = Qᵀ·A [l, n] on the device, the Gram matrix Zᵀ·Z on the host, and
// the stopping rule's check of it once started.
type svdIter struct {
	q      int
	qt, z  *pjrt.Buffer
	h      []float64
	done   chan struct{} // closed when the check is done
	cancel atomic.Bool   // the rule stopped before this iteration: skip its check
	eig    *symEig
	e2     float64 // ‖A‖² − Σ_{i≤k} λ_i
	err    error
}

func (it *svdIter) checked() bool {
	if it.done == nil {
		return false
	}
	select {
	case <-it.done:
		return true
	default:
		return false
	}
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

// free destroys the buffers. It does not wait for the host checks: they
// read no device memory, only their iteration's Gram matrix, and every
// check the result needed has finished; the speculative ones left are
// cancelled (see svdSpeculate).
func (r *svdRun) free() {
	r.stop.Store(true)
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
	outs, err := r.execN(key, build, 1, inputs...)
	if err != nil {
		return nil, err
	}
	return outs[0], nil
}

// execN runs a cached program with n outputs and owns them.
func (r *svdRun) execN(key string, build func() ([]byte, error), n int, inputs ...*pjrt.Buffer) ([]*pjrt.Buffer, error) {
	e, err := r.d.exe(key, build)
	if err != nil {
		return nil, err
	}
	outs, err := r.d.run(e, inputs...)
	if err != nil {
		return nil, err
	}
	for _, o := range outs {
		r.own(o)
	}
	if len(outs) != n {
		return nil, fmt.Errorf("%s: %d outputs, want %d", key, len(outs), n)
	}
	return outs, nil
}

// execVariants runs the program name built with conditionals, or, where
// the plugin cannot compile those, without (every orthonormalization pass
// then takes the full nsIters steps).
func (r *svdRun) execVariants(name string, build func(noIf bool) ([]byte, error), n int, inputs ...*pjrt.Buffer) ([]*pjrt.Buffer, error) {
	outs, err := r.execN(r.key(name), func() ([]byte, error) { return build(false) }, n, inputs...)
	if errors.Is(err, ErrUnsupported) {
		outs, err = r.execN(r.key(name)+"/noif", func() ([]byte, error) { return build(true) }, n, inputs...)
	}
	return outs, err
}

func (r *svdRun) upload(x []float32, rows, cols int) (*pjrt.Buffer, error) {
	b, err := r.d.uploadSmall(f32bytes(x), dtypes.Float32, rows, cols)
	if err != nil {
		return nil, err
	}
	r.own(b)
	return b, nil
}

func (r *svdRun) key(name string) string {
	return fmt.Sprintf("%s/%dx%d/%d/%v", name, r.m, r.n, r.l, r.bf16)
}

// operands lists A (and its BF16 copy) for the init program.
func (r *svdRun) operands() []*pjrt.Buffer {
	if r.bf16 {
		return []*pjrt.Buffer{r.a, r.aop}
	}
	return []*pjrt.Buffer{r.a}
}

// init runs the first program: ‖A‖², the non-finite count and iteration 0.
func (r *svdRun) init(omega *pjrt.Buffer) (*svdIter, float64, int, error) {
	m, n, l, bf16 := r.m, r.n, r.l, r.bf16
	outs, err := r.execVariants("svd_init", func(noIf bool) ([]byte, error) { return progSVDInit(m, n, l, bf16, noIf) }, 5, append(r.operands(), omega)...)
	if err != nil {
		return nil, 0, 0, err
	}
	s := make([]float64, 1)
	c := make([]int32, 1)
	if err := r.d.download(outs[0], f64bytes(s)); err != nil {
		return nil, 0, 0, err
	}
	if err := r.d.download(outs[1], i32bytes(c)); err != nil {
		return nil, 0, 0, err
	}
	r.release(outs[0], outs[1])
	if c[0] > 0 || s[0] == 0 {
		return nil, s[0], int(c[0]), nil
	}
	h, err := r.gram(outs[4])
	if err != nil {
		return nil, 0, 0, err
	}
	return &svdIter{q: 0, qt: outs[2], z: outs[3], h: h}, s[0], 0, nil
}

// iterate runs one power iteration from it.
func (r *svdRun) iterate(it *svdIter) (*svdIter, error) {
	m, n, l, bf16 := r.m, r.n, r.l, r.bf16
	outs, err := r.execVariants("svd_iter", func(noIf bool) ([]byte, error) { return progSVDIter(m, n, l, bf16, noIf) }, 3, r.aop, it.z)
	if err != nil {
		return nil, err
	}
	h, err := r.gram(outs[2])
	if err != nil {
		return nil, err
	}
	return &svdIter{q: it.q + 1, qt: outs[0], z: outs[1], h: h}, nil
}

// gram downloads an l×l float64 Gram matrix (and frees it), symmetrized
// from its lower triangle.
func (r *svdRun) gram(b *pjrt.Buffer) ([]float64, error) {
	l := r.l
	g := make([]float64, l*l)
	err := r.d.download(b, f64bytes(g))
	r.release(b)
	if err != nil {
		return nil, err
	}
	for i := range l {
		for j := 0; j < i; j++ {
			g[j*l+i] = g[i*l+j]
		}
	}
	return g, nil
}

// startCheck computes the stopping rule's eigenvalues of it.h in the
// background; prepare also forms what the eigenvectors need, for an
// iteration the rule may stop at.
func (r *svdRun) startCheck(it *svdIter, prepare bool) {
	it.done = make(chan struct{})
	r.d.addStats(func(s *Stats) { s.Checks++ })
	go func() {
		defer close(it.done)
		if it.cancel.Load() || r.stop.Load() {
			it.err = errCheckCancelled
			r.d.addStats(func(s *Stats) { s.ChecksCancelled++ })
			return
		}
		r.checkSem <- struct{}{}
		defer func() { <-r.checkSem }()
		if it.cancel.Load() || r.stop.Load() {
			it.err = errCheckCancelled
			r.d.addStats(func(s *Stats) { s.ChecksCancelled++ })
			return
		}
		start := time.Now()
		eig, err := eigenSym(it.h, r.l, false)
		if err == nil {
			it.e2 = r.frob2 - eig.topEnergy(r.k)
			it.eig = eig
			if prepare && !it.cancel.Load() && !r.stop.Load() {
				go eig.formQ()
			}
		}
		it.err = err
		r.hostTime(start)
	}()
}

// errCheckCancelled is the error of a check skipped because the stopping
// rule stopped before its iteration (never returned: nothing reads it).
var errCheckCancelled = errors.New("pjrtgpu: stopping-rule check cancelled")

// finish computes the factors from the final basis Qᵀ, B = Qᵀ·A and the
// eigendecomposition of B·Bᵀ, as linalg: W = Ubᵀ·B, σ_i = ‖W_i‖, components
// sorted by σ, Vt = diag(1/σ)·W, U = Q·Ub, then linalg.SVD's conventions.
func (r *svdRun) finish(qt, b *pjrt.Buffer, eig *symEig) (linalg.SVD, error) {
	m, n, l, k := r.m, r.n, r.l, r.k
	start := time.Now()
	ubt, _ := eig.topVectors(k)
	r.hostTime(start)
	ubtBuf, err := r.upload(ubt, k, l)
	if err != nil {
		return linalg.SVD{}, err
	}
	outs, err := r.execN(fmt.Sprintf("svd_final/%dx%d/%d/%d", m, n, l, k), func() ([]byte, error) { return progSVDFinal(m, n, l, k) }, 4, qt, b, ubtBuf)
	if err != nil {
		return linalg.SVD{}, err
	}
	// U downloads while the host finishes S and Vt from W.
	udev := make([]float32, m*k)
	var uErr error
	var uDone sync.WaitGroup
	uDone.Go(func() { uErr = r.d.download(outs[1], f32bytes(udev)) })
	w := make([]float32, k*n)
	utu := make([]float64, k*k)
	wwt := make([]float64, k*k)
	err = errors.Join(r.d.download(outs[0], f32bytes(w)), r.d.download(outs[2], f64bytes(utu)), r.d.download(outs[3], f64bytes(wwt)))
	start = time.Now()
	var s []float64
	var vt linalg.Matrix
	var perm []int
	if err == nil {
		s, vt, perm = finishSVD(w, k, n)
	}
	r.hostTime(start)
	uDone.Wait()
	if err = errors.Join(err, uErr); err != nil {
		return linalg.SVD{}, err
	}
	if msg := selfCheck(utu, wwt, k); msg != "" {
		r.d.addStats(func(s *Stats) { s.SelfCheckFailures++ })
		return linalg.SVD{}, unsupportedf("the device's factors failed the self-check (%s)", msg)
	}
	start = time.Now()
	res := linalg.SVD{U: linalg.NewMatrix(m, k), S: s, Vt: vt}
	finishU(&res, udev, perm)
	r.hostTime(start)
	return res, nil
}
