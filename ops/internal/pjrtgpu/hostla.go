package pjrtgpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/lapack/gonum"
	"gonum.org/v1/gonum/mat"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops/internal/linalg"
)

// The host side of the device kernels: plain Go, shared by every build, so
// the tests cover it without a device.

// forRows runs f over [0, n) split into contiguous ranges on GOMAXPROCS
// goroutines. f must only write data owned by its rows.
func forRows(n int, f func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		f(0, n)
		return
	}
	var g errgroup.Group
	per := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		g.Go(func() error {
			f(lo, hi)
			return nil
		})
	}
	_ = g.Wait() // f cannot fail
}

// gaussianSketch returns the l×n sketch Ωᵀ that linalg.TruncatedSVD draws
// for a seed: row i holds N(0, 1) values from the PCG stream (seed, i),
// rounded to float32. Same seed, same sketch as the CPU path.
func gaussianSketch(l, n int, seed uint64) []float32 {
	g := make([]float32, l*n)
	forRows(l, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			row := g[i*n : (i+1)*n]
			for j := range row {
				row[j] = float32(r.NormFloat64())
			}
		}
	})
	return g
}

// Pivots of a Cholesky factor below pivotFloor·max(diag G) count as a
// breakdown: the rows are numerically dependent at float32 resolution of
// the device's Gram matrix. A failed factorization is retried on G + s·I
// with s = shiftStart·max(diag G), ten times larger each try.
const (
	pivotFloor = 1e-10
	shiftStart = 1e-6
	shiftTries = 8
)

// cholInverse returns L⁻¹ (row-major, lower triangular, float32) for the
// Cholesky factor L of the symmetric l×l Gram matrix g (float64, only its
// lower triangle is read), so that L⁻¹·X has orthonormal rows when
// g = X·Xᵀ: one pass of Cholesky-QR. When g is not numerically positive
// definite it factors g + s·I instead (shifted Cholesky-QR: rows in
// directions below s shrink rather than blow up) and reports shifted. An
// all-zero g gives the identity.
func cholInverse(g []float64, l int) (linv []float32, shifted bool, err error) {
	maxDiag := 0.0
	for i := range l {
		maxDiag = max(maxDiag, g[i*l+i])
	}
	linv = make([]float32, l*l)
	if !(maxDiag > 0) || math.IsInf(maxDiag, 0) {
		if maxDiag == 0 {
			for i := range l {
				linv[i*l+i] = 1
			}
			return linv, true, nil
		}
		return nil, false, fmt.Errorf("pjrtgpu: Gram matrix has diagonal %v", maxDiag)
	}
	var impl gonum.Implementation
	a := make([]float64, l*l)
	shift := 0.0
	for try := 0; ; try++ {
		copy(a, g)
		for i := range l {
			a[i*l+i] += shift
		}
		if impl.Dpotrf(blas.Lower, l, a, l) && minPivot2(a, l) >= pivotFloor*maxDiag {
			break
		}
		if try == shiftTries {
			return nil, false, errors.New("pjrtgpu: Cholesky-QR: the Gram matrix stays indefinite after shifting")
		}
		if shift == 0 {
			shift = shiftStart * maxDiag
		} else {
			shift *= 10
		}
	}
	if !impl.Dtrtri(blas.Lower, blas.NonUnit, l, a, l) {
		return nil, false, errors.New("pjrtgpu: Cholesky-QR: singular factor")
	}
	for i := range l {
		for j := 0; j <= i; j++ {
			linv[i*l+j] = float32(a[i*l+j])
		}
	}
	return linv, shift > 0, nil
}

func minPivot2(a []float64, l int) float64 {
	m := math.Inf(1)
	for i := range l {
		m = min(m, a[i*l+i]*a[i*l+i])
	}
	return m
}

// identityDeviation returns max |g − I| over the l×l matrix g.
func identityDeviation(g []float64, l int) float64 {
	var dev float64
	for i := range l {
		for j := range l {
			v := g[i*l+j]
			if i == j {
				v--
			}
			dev = max(dev, math.Abs(v))
		}
	}
	return dev
}

// widen converts an l×l float32 matrix to float64, symmetrized from its
// lower triangle (the device's Gram matrix is symmetric up to rounding).
func widen(g []float32, l int) []float64 {
	out := make([]float64, l*l)
	for i := range l {
		for j := 0; j <= i; j++ {
			v := float64(g[i*l+j])
			out[i*l+j], out[j*l+i] = v, v
		}
	}
	return out
}

// topEnergy returns the sum of the k largest eigenvalues of the symmetric
// l×l matrix h (the energy of the best rank-k approximation of B when
// h = B·Bᵀ), as linalg's stopping rule computes it.
func topEnergy(h []float64, l, k int) float64 {
	var eig mat.EigenSym
	if !eig.Factorize(mat.NewSymDense(l, h), false) {
		return math.NaN() // never satisfies the stopping test
	}
	vals := eig.Values(nil) // ascending
	var e float64
	for _, v := range vals[l-min(k, l):] {
		e += max(v, 0)
	}
	return e
}

// topVectors returns the eigenvectors of the k largest eigenvalues of the
// symmetric l×l matrix h as the rows of a k×l float32 matrix, largest
// first: Ubᵀ of the small SVD.
func topVectors(h []float64, l, k int) ([]float32, error) {
	var eig mat.EigenSym
	if !eig.Factorize(mat.NewSymDense(l, h), true) {
		return nil, errors.New("pjrtgpu: TruncatedSVD: eigendecomposition of the sketch did not converge")
	}
	var vecs mat.Dense
	eig.VectorsTo(&vecs) // columns by ascending eigenvalue
	ubt := make([]float32, k*l)
	for j := range k {
		for i := range l {
			ubt[j*l+i] = float32(vecs.At(i, l-1-j))
		}
	}
	return ubt, nil
}

// finishSVD turns W = Ubᵀ·B (k×n, rows in eigenvalue order) into S and Vt
// exactly as linalg does: σ_i = ‖W_i‖ (float64), components stably sorted
// by decreasing σ, Vt_i = W_i/σ_i. It returns the permutation, to be applied
// to Ub's columns before U = Q·Ub.
func finishSVD(w []float32, k, n int) (s []float64, vt linalg.Matrix, perm []int) {
	norms := make([]float64, k)
	forRows(k, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			var acc float64
			for _, v := range w[i*n : (i+1)*n] {
				acc += float64(v) * float64(v)
			}
			norms[i] = math.Sqrt(acc)
		}
	})
	perm = make([]int, k)
	for i := range perm {
		perm[i] = i
	}
	slices.SortStableFunc(perm, func(x, y int) int {
		switch {
		case norms[x] > norms[y]:
			return -1
		case norms[x] < norms[y]:
			return 1
		}
		return 0
	})
	s = make([]float64, k)
	vt = linalg.NewMatrix(k, n)
	forRows(k, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			p := perm[j]
			s[j] = norms[p]
			if norms[p] > 0 {
				inv := 1 / norms[p]
				dst, src := vt.Row(j), w[p*n:(p+1)*n]
				for c, v := range src {
					dst[c] = float32(float64(v) * inv)
				}
			}
		}
	})
	return s, vt, perm
}

// Components whose σ is below negligibleSigma·σ_1 and whose U column is
// not of unit norm (|‖u‖ − 1| > 1e-3) come from sketch directions the
// shifted Cholesky-QR shrank, i.e. from A having rank below k: they are
// set to exact zeros, as linalg does for σ = 0.
const negligibleSigma = 1e-4

// normalizeSVD applies linalg.SVD's conventions: zero vectors for zero
// (or negligible, see negligibleSigma) singular values, and in each column
// of U a positive entry of largest magnitude (first on ties), with the
// matching row of Vt negated along.
func normalizeSVD(d *linalg.SVD) {
	k := d.Rank()
	m := d.U.Rows
	forRows(k, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			vrow := d.Vt.Row(j)
			var nrm float64
			best, arg := float32(-1), 0
			for i := range m {
				v := d.U.Data[i*k+j]
				nrm += float64(v) * float64(v)
				if a := float32(math.Abs(float64(v))); a > best {
					best, arg = a, i
				}
			}
			if d.S[j] == 0 || (d.S[j] < negligibleSigma*d.S[0] && math.Abs(math.Sqrt(nrm)-1) > 1e-3) {
				d.S[j] = 0
				for i := range m {
					d.U.Data[i*k+j] = 0
				}
				clear(vrow)
				continue
			}
			if d.U.Data[arg*k+j] >= 0 {
				continue
			}
			for i := range m {
				d.U.Data[i*k+j] = -d.U.Data[i*k+j]
			}
			for c := range vrow {
				vrow[c] = -vrow[c]
			}
		}
	})
}

// fp8Cells is the host half of fp8-block quantization: from each scale
// cell's largest magnitude (the bits of the weight dtype with the sign
// cleared, from the device), the stored scale of quant.QuantizeWeight
// (s = ⟦amax/448⟧ in the scale dtype, a zero cell's scale replaced) and
// the float64 reciprocal the device multiplies by. ok is false when a cell
// holds a NaN or ±Inf or its scale is unusable: the CPU kernel then gives
// the error.
type fp8Cells struct {
	scales []float32 // values of the scale dtype
	rcp    []float64 // 1/s
}

func fp8BlockCells(qs quant.QuantizeScheme, wd safetensors.DType, mags []uint32) (c fp8Cells, ok bool) {
	sd := qs.ScaleDTypeFor(wd)
	var inf uint32
	var magnitude func(uint32) float32
	switch wd {
	case safetensors.BF16:
		inf, magnitude = 0x7F80, func(a uint32) float32 { return numeric.BF16ToF32(uint16(a)) }
	case safetensors.F16:
		inf, magnitude = 0x7C00, func(a uint32) float32 { return numeric.F16ToF32(uint16(a)) }
	case safetensors.F32:
		inf, magnitude = 0x7F800000, math.Float32frombits
	default:
		return c, false
	}
	var toScale func(float32) float32
	var zero float32
	switch sd {
	case safetensors.BF16:
		toScale, zero = func(x float32) float32 { return numeric.BF16ToF32(numeric.F32ToBF16(x)) }, 0x1p-7
	case safetensors.F16:
		toScale, zero = func(x float32) float32 { return numeric.F16ToF32(numeric.F32ToF16(x)) }, 0x1p-10
	case safetensors.F32:
		toScale, zero = func(x float32) float32 { return x }, 0x1p-23
	default:
		return c, false
	}
	if qs.Format == quant.OutputFP8 {
		zero = 1 // transformers' all-zero-block scale (formats.md §6)
	}
	c.scales = make([]float32, len(mags))
	c.rcp = make([]float64, len(mags))
	for i, a := range mags {
		if a >= inf {
			return c, false
		}
		s := toScale(magnitude(a) / numeric.E4M3FNMax)
		if s == 0 {
			s = zero
		}
		if math.IsInf(float64(s), 0) || fp8Overflows(wd, s) {
			return c, false
		}
		c.scales[i], c.rcp[i] = s, 1/float64(s)
	}
	return c, true
}

// fp8Overflows reports whether ±448·s rounds to ±Inf in the weight dtype
// (the CPU kernel refuses such a cell).
func fp8Overflows(wd safetensors.DType, s float32) bool {
	worst := float32(numeric.E4M3FNMax * float64(s))
	switch wd {
	case safetensors.BF16:
		return numeric.F32ToBF16(worst)&0x7FFF == 0x7F80
	case safetensors.F16:
		return numeric.F32ToF16(worst)&0x7FFF == 0x7C00
	}
	return math.IsInf(float64(worst), 0)
}

// encodeScales stores scales (exact values of sd) as sd bytes.
func encodeScales(scales []float32, sd safetensors.DType) []byte {
	b := make([]byte, len(scales)*sd.BitSize()/8)
	for i, s := range scales {
		switch sd {
		case safetensors.BF16:
			binary.LittleEndian.PutUint16(b[2*i:], numeric.F32ToBF16(s))
		case safetensors.F16:
			binary.LittleEndian.PutUint16(b[2*i:], numeric.F32ToF16(s))
		default:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(s))
		}
	}
	return b
}

// cdiv is ⌈a/b⌉ for positive b.
func cdiv(a, b int) int { return (a + b - 1) / b }

// pretouch writes one byte per 4 KiB page of b, so that a download into it
// does not take a page fault per page inside the driver's copy (a fresh Go
// slice downloads at under 1 GB/s, a touched one at 10 to 16; gpu.md §4c).
func pretouch(b []byte) {
	for i := 0; i < len(b); i += 4096 {
		b[i] = 0
	}
}
