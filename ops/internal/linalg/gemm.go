package linalg

import (
	"fmt"

	gblas "gonum.org/v1/gonum/blas/gonum"
)

// Blocking of the product kernel. Each task owns a tile of C of at most
// gemmTile×gemmTile elements (a dimension of at most gemmWhole is never
// split, so the 160-row sketches of the SVD are one tile tall) and walks k
// in blocks of gemmKB. Per k-block it packs the op(A) rows and op(B)
// columns of its tile into 64-byte-aligned scratch, contiguous in k, and
// fills the tile with dot products: the dot kernel (gonum's SSE Sdot) reads
// one 4 KiB op(A) row from L1 and streams the op(B) panel (≤ 256 × 4 KiB)
// from L2. On two Sapphire Rapids cores this runs at 31–37 GFLOP/s against
// 14–18 GFLOP/s for gonum's Sgemm, which updates C by short axpys
// (BenchmarkGemm).
const (
	gemmKB    = 1024
	gemmTile  = 128
	gemmWhole = 256
)

// gemmTileLen is the tile length along a dimension of length n.
func gemmTileLen(n int) int {
	if n <= gemmWhole {
		return max(n, 1)
	}
	return gemmTile
}

var dotImpl gblas.Implementation

// Gemm computes C = alpha·op(A)·op(B) + beta·C, where op(X) is X or Xᵀ as
// selected by transA and transB. op(A) must be m×k, op(B) k×n and C m×n;
// otherwise Gemm panics, as it does when C shares memory with A or B.
// When beta is 0, C's previous contents are ignored (NaNs included).
//
// Accumulation is in float32: each element is the sum, in increasing k
// order, of dot products over blocks of 1024 consecutive k, each summed by
// gonum's SSE kernel in eight interleaved lanes; alpha scales every block
// sum. The result is bit-identical for any GOMAXPROCS and any alignment of
// the inputs. Gemm uses all GOMAXPROCS cores and allocates up to 2 MiB of
// scratch per worker.
func Gemm(transA, transB bool, alpha float32, a, b Matrix, beta float32, c Matrix) {
	gemm(transA, transB, alpha, a, b, beta, c, parallelFor)
}

// gemm is Gemm with the loop runner as a parameter: parallelFor, or
// serialFor inside an outer parallel loop. The tiling does not depend on
// the runner, so neither do the result bits.
func gemm(transA, transB bool, alpha float32, a, b Matrix, beta float32, c Matrix, run func(int, func(w, t int))) {
	m, k := a.Rows, a.Cols
	if transA {
		m, k = k, m
	}
	kb, n := b.Rows, b.Cols
	if transB {
		kb, n = n, kb
	}
	for _, x := range []struct {
		name string
		mat  Matrix
	}{{"A", a}, {"B", b}, {"C", c}} {
		if err := x.mat.check("Gemm " + x.name); err != nil {
			panic(err)
		}
	}
	if k != kb || c.Rows != m || c.Cols != n {
		panic(fmt.Sprintf("linalg: Gemm shapes: op(A) %d×%d, op(B) %d×%d, C %d×%d", m, k, kb, n, c.Rows, c.Cols))
	}
	if overlaps(c.Data, a.Data) || overlaps(c.Data, b.Data) {
		panic("linalg: Gemm output aliases an input")
	}
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scale(c.Data, beta)
		return
	}

	tm, tn := gemmTileLen(m), gemmTileLen(n)
	tilesM, tilesN := (m+tm-1)/tm, (n+tn-1)/tn
	ld := (min(k, gemmKB) + 15) &^ 15 // packed row stride: keeps rows 64-byte aligned
	scratch := make([][]float32, numWorkers(tilesM*tilesN))
	run(tilesM*tilesN, func(w, t int) {
		if scratch[w] == nil {
			scratch[w] = alignedFloat32((tm + tn) * ld)
		}
		pa, pb := scratch[w][:tm*ld], scratch[w][tm*ld:]
		i0, j0 := (t/tilesN)*tm, (t%tilesN)*tn
		i1, j1 := min(i0+tm, m), min(j0+tn, n)
		for k0 := 0; k0 < k; k0 += gemmKB {
			k1 := min(k0+gemmKB, k)
			packPanel(pa, ld, a, transA, i0, i1, k0, k1)
			packPanel(pb, ld, b, !transB, j0, j1, k0, k1)
			kk := k1 - k0
			for i := i0; i < i1; i++ {
				x := pa[(i-i0)*ld : (i-i0)*ld+kk]
				crow := c.Data[i*n+j0 : i*n+j1]
				for j := range crow {
					d := alpha * dotImpl.Sdot(kk, x, 1, pb[j*ld:j*ld+kk], 1)
					switch {
					case k0 > 0:
						crow[j] += d
					case beta == 0:
						crow[j] = d
					default:
						crow[j] = beta*crow[j] + d
					}
				}
			}
		}
	})
}

// packPanel copies rows r0..r1 of op(X), columns k0..k1, into dst with row
// stride ld, where op(X) is X, or Xᵀ when trans is set. Row r of the panel
// becomes contiguous in k either way.
func packPanel(dst []float32, ld int, x Matrix, trans bool, r0, r1, k0, k1 int) {
	if !trans {
		for r := r0; r < r1; r++ {
			copy(dst[(r-r0)*ld:(r-r0)*ld+k1-k0], x.Data[r*x.Cols+k0:r*x.Cols+k1])
		}
		return
	}
	// op(X)[r][k] = X[k][r]: gather columns r0..r1 of rows k0..k1 of X in
	// 8×8 blocks, reading each source row segment contiguously.
	const bs = 8
	for kb := k0; kb < k1; kb += bs {
		ke := min(kb+bs, k1)
		for rb := r0; rb < r1; rb += bs {
			re := min(rb+bs, r1)
			for kk := kb; kk < ke; kk++ {
				src := x.Data[kk*x.Cols+rb : kk*x.Cols+re]
				d := dst[(rb-r0)*ld+kk-k0:]
				for i, v := range src {
					d[i*ld] = v
				}
			}
		}
	}
}

// scale multiplies x by s in place; s == 0 clears x (dropping NaNs), as
// BLAS does for beta == 0.
func scale(x []float32, s float32) {
	switch s {
	case 1:
	case 0:
		clear(x)
	default:
		for i := range x {
			x[i] *= s
		}
	}
}

// Mul returns the new matrix A·B. It panics if A.Cols != B.Rows.
func Mul(a, b Matrix) Matrix {
	c := NewMatrix(a.Rows, b.Cols)
	Gemm(false, false, 1, a, b, 0, c)
	return c
}

// MulTA returns the new matrix Aᵀ·B. It panics if A.Rows != B.Rows.
func MulTA(a, b Matrix) Matrix {
	c := NewMatrix(a.Cols, b.Cols)
	Gemm(true, false, 1, a, b, 0, c)
	return c
}

// MulTB returns the new matrix A·Bᵀ. It panics if A.Cols != B.Cols.
func MulTB(a, b Matrix) Matrix {
	c := NewMatrix(a.Rows, b.Rows)
	Gemm(false, true, 1, a, b, 0, c)
	return c
}
