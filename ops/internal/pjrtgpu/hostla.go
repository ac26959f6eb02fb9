package pjrtgpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"

	"golang.org/x/sync/errgroup"

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
// not of unit norm (|‖u‖ − 1| > 1e-3) come from sketch directions that
// carried only rounding noise (A of rank below k): they are set to exact
// zeros, as linalg does for σ = 0.
const negligibleSigma = 1e-4

// uChunk is the row block of the passes over U: partial sums are formed per
// block and added in block order, so the result does not depend on the
// number of cores.
const uChunk = 512

// finishU fills d.U (m×k) from the device's Q·Ub (udev, m×k, columns in
// eigenvalue order): column j of U is column perm[j] of udev, with
// linalg.SVD's conventions — zero vectors for zero (or negligible, see
// negligibleSigma) singular values, and a positive entry of largest
// magnitude (first on ties) in each column, the matching row of d.Vt
// negated along.
func finishU(d *linalg.SVD, udev []float32, perm []int) {
	k := d.Rank()
	m := d.U.Rows
	chunks := (m + uChunk - 1) / uChunk
	// Per block and column: the largest magnitude, its first row, Σ u².
	best := make([]float32, chunks*k)
	arg := make([]int, chunks*k)
	norm := make([]float64, chunks*k)
	forRows(chunks, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			b, a, nr := best[c*k:(c+1)*k], arg[c*k:(c+1)*k], norm[c*k:(c+1)*k]
			for j := range b {
				b[j] = -1
			}
			for i := c * uChunk; i < min((c+1)*uChunk, m); i++ {
				row := udev[i*k : (i+1)*k]
				for j, v := range row {
					nr[j] += float64(v) * float64(v)
					if av := float32(math.Abs(float64(v))); av > b[j] {
						b[j], a[j] = av, i
					}
				}
			}
		}
	})
	scale := make([]float32, k) // per output column: 1, −1 or 0
	for j := range k {
		p := perm[j]
		bj, aj, nj := float32(-1), 0, 0.0
		for c := range chunks {
			nj += norm[c*k+p]
			if best[c*k+p] > bj {
				bj, aj = best[c*k+p], arg[c*k+p]
			}
		}
		switch {
		case d.S[j] == 0 || (d.S[j] < negligibleSigma*d.S[0] && math.Abs(math.Sqrt(nj)-1) > 1e-3):
			d.S[j] = 0
			clear(d.Vt.Row(j))
		case udev[aj*k+p] < 0:
			scale[j] = -1
			vrow := d.Vt.Row(j)
			for c := range vrow {
				vrow[c] = -vrow[c]
			}
		default:
			scale[j] = 1
		}
	}
	forRows(m, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			src, dst := udev[i*k:(i+1)*k], d.U.Data[i*k:(i+1)*k]
			for j, p := range perm {
				dst[j] = src[p] * scale[j]
			}
		}
	})
}

// Self-check of the factors before they are returned: for components with
// σ above selfCheckSignificant·σ_1, |UᵀU − I| and |Vt·Vtᵀ − I| must stay
// below selfCheckTol (gpubench holds them to 1e-4), else the decomposition
// goes to the CPU.
const (
	selfCheckSignificant = 1e-5
	selfCheckTol         = 1e-3
)

// selfCheck inspects the device's Uᵀ·U and W·Wᵀ (k×k, components in
// eigenvalue order): between the components with ‖W_i‖ = σ_i above
// selfCheckSignificant·max σ, Uᵀ·U must be the identity and W·Wᵀ diagonal
// (so Vt = diag(1/σ)·W has orthonormal rows) within selfCheckTol, and
// everything finite. It returns what failed, or "".
func selfCheck(utu, wwt []float64, k int) string {
	sigma := make([]float64, k)
	var top float64
	for i := range k {
		v := wwt[i*k+i]
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Sprintf("‖W_%d‖² = %v", i, v)
		}
		sigma[i] = math.Sqrt(max(v, 0))
		top = max(top, sigma[i])
	}
	for i := range k {
		for j := range k {
			u, w := utu[i*k+j], wwt[i*k+j]
			if math.IsNaN(u) || math.IsInf(u, 0) || math.IsNaN(w) || math.IsInf(w, 0) {
				return fmt.Sprintf("non-finite product at (%d, %d)", i, j)
			}
			if sigma[i] <= selfCheckSignificant*top || sigma[j] <= selfCheckSignificant*top {
				continue
			}
			if i == j {
				u--
				w = 0
			} else {
				w /= sigma[i] * sigma[j]
			}
			if math.Abs(u) > selfCheckTol || math.Abs(w) > selfCheckTol {
				return fmt.Sprintf("components %d and %d: UᵀU − I = %.3g, rows of Vt at cosine %.3g", i, j, u, w)
			}
		}
	}
	return ""
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

// shapeIs reports whether a tensor shape is exactly dims.
func shapeIs(shape []uint64, dims ...int) bool {
	if len(shape) != len(dims) {
		return false
	}
	for i, d := range dims {
		if shape[i] != uint64(d) {
			return false
		}
	}
	return true
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
