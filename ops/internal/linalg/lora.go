package linalg

import (
	"fmt"
	"math"
)

// Split turns d into PEFT LoRA factors the way mergekit-extract-lora does
// (formats.md §11 step 5), with k = d.Rank():
//
//   - distributeScale (mergekit's default): A = diag(√S)·Vt ([k, n],
//     lora_A) and B = U·diag(√S) ([m, k], lora_B);
//   - otherwise: A = diag(S)·Vt and B = U.
//
// Either way B·A = U·diag(S)·Vt up to float32 rounding, and with
// lora_alpha = r the PEFT scaling is 1. The factors are new matrices in
// float32 (√S rounded to float32 first, as torch does); the caller rounds
// them to the adapter dtype.
func (d SVD) Split(distributeScale bool) (a, b Matrix) {
	k := d.Rank()
	a = d.Vt.Clone()
	b = d.U.Clone()
	for j, s := range d.S {
		f := float32(s)
		if distributeScale {
			f = float32(math.Sqrt(float64(f)))
		}
		for c := range a.Row(j) {
			a.Data[j*a.Cols+c] *= f
		}
		if distributeScale {
			for i := range b.Rows {
				b.Data[i*k+j] *= f
			}
		}
	}
	return a, b
}

// mergeRows is the row-block height of Merge and ResidualNorm: B·A is
// formed this many rows at a time in per-worker scratch.
const mergeRows = 64

// Merge computes dst = w + scale·(b·a), the PEFT merge of a LoRA pair into
// a base weight (formats.md §9), in float32: each block of rows of b·a is
// a float32 product, then added to w with one multiply and one add per
// element, as PEFT does on CPU after upcasting bf16 factors. w is m×n, b
// (lora_B) m×r, a (lora_A) r×n and dst m×n. For an embedding, whose delta
// is (B·A)ᵀ (formats.md §9), pass b = lora_embedding_Aᵀ and
// a = lora_embedding_Bᵀ. The caller rounds dst to the model dtype.
//
// dst may be w itself (an in-place merge) but must not otherwise overlap w,
// a or b. The result is deterministic. It fails with ErrShape on
// inconsistent shapes or overlap.
func Merge(dst, w, b, a Matrix, scale float32) error {
	for _, x := range []struct {
		name string
		m    Matrix
	}{{"dst", dst}, {"w", w}, {"b", b}, {"a", a}} {
		if err := x.m.check("Merge " + x.name); err != nil {
			return err
		}
	}
	m, n := w.Rows, w.Cols
	if b.Rows != m || a.Cols != n || b.Cols != a.Rows || dst.Rows != m || dst.Cols != n {
		return fmt.Errorf("%w: Merge: w %d×%d, b %d×%d, a %d×%d, dst %d×%d",
			ErrShape, m, n, b.Rows, b.Cols, a.Rows, a.Cols, dst.Rows, dst.Cols)
	}
	if overlaps(dst.Data, a.Data) || overlaps(dst.Data, b.Data) || (!sameData(dst.Data, w.Data) && overlaps(dst.Data, w.Data)) {
		return fmt.Errorf("%w: Merge: dst overlaps an input other than w", ErrShape)
	}
	forRowBlocks(b, a, func(i0, i1 int, prod Matrix) {
		for i := i0; i < i1; i++ {
			wr, dr, pr := w.Row(i), dst.Row(i), prod.Row(i-i0)
			for j := range dr {
				dr[j] = wr[j] + scale*pr[j]
			}
		}
	})
	return nil
}

// forRowBlocks calls f(i0, i1, P) for consecutive blocks of mergeRows rows
// of b·a, in parallel, where P holds rows i0..i1 of b·a (computed in
// float32 with the Gemm kernel on one goroutine, so P is the same for any
// GOMAXPROCS). P is scratch reused after f returns.
func forRowBlocks(b, a Matrix, f func(i0, i1 int, prod Matrix)) {
	m, n := b.Rows, a.Cols
	blocks := (m + mergeRows - 1) / mergeRows
	scratch := make([]Matrix, numWorkers(blocks))
	parallelFor(blocks, func(w, blk int) {
		i0 := blk * mergeRows
		i1 := min(i0+mergeRows, m)
		if scratch[w].Data == nil {
			scratch[w] = NewMatrix(mergeRows, n)
		}
		prod := Matrix{Rows: i1 - i0, Cols: n, Data: scratch[w].Data[:(i1-i0)*n]}
		bb := Matrix{Rows: i1 - i0, Cols: b.Cols, Data: b.Data[i0*b.Cols : i1*b.Cols]}
		gemmSerial(bb, a, prod)
		f(i0, i1, prod)
	})
}

// gemmSerial sets c = a·b with Gemm's kernel on the calling goroutine;
// the bits equal Gemm's.
func gemmSerial(a, b, c Matrix) {
	gemm(false, false, 1, a, b, 0, c, serialFor)
}

// ResidualNorm returns ‖b·a − delta‖_F, accumulated in float64 from the
// float32 product b·a (formed one block of rows at a time, never whole).
// b is m×r, a r×n and delta m×n, else it fails with ErrShape.
func ResidualNorm(b, a, delta Matrix) (float64, error) {
	for _, x := range []Matrix{b, a, delta} {
		if err := x.check("ResidualNorm"); err != nil {
			return 0, err
		}
	}
	if b.Rows != delta.Rows || a.Cols != delta.Cols || b.Cols != a.Rows {
		return 0, fmt.Errorf("%w: ResidualNorm: b %d×%d, a %d×%d, delta %d×%d",
			ErrShape, b.Rows, b.Cols, a.Rows, a.Cols, delta.Rows, delta.Cols)
	}
	blocks := (b.Rows + mergeRows - 1) / mergeRows
	parts := make([]float64, blocks)
	forRowBlocks(b, a, func(i0, i1 int, prod Matrix) {
		var s float64
		for i := i0; i < i1; i++ {
			s += sumSquaresDiff(prod.Row(i-i0), delta.Row(i))
		}
		parts[i0/mergeRows] = s
	})
	var s float64
	for _, p := range parts {
		s += p
	}
	return math.Sqrt(s), nil
}

// RelError returns ‖b·a − delta‖_F / ‖delta‖_F, the reconstruction error
// by which extraction quality is judged (formats.md §11: compare by error,
// not bits). For a zero delta it returns 0 when b·a is zero too and +Inf
// otherwise.
func RelError(b, a, delta Matrix) (float64, error) {
	r, err := ResidualNorm(b, a, delta)
	if err != nil {
		return 0, err
	}
	d := FrobeniusNorm(delta)
	if d == 0 {
		if r == 0 {
			return 0, nil
		}
		return math.Inf(1), nil
	}
	return r / d, nil
}

// Residual returns ‖a − U·diag(S)·Vt‖_F for the m×n matrix a that d
// approximates.
func (d SVD) Residual(a Matrix) (float64, error) {
	us := d.U.Clone()
	k := d.Rank()
	for i := range us.Rows {
		for j, s := range d.S {
			us.Data[i*k+j] *= float32(s)
		}
	}
	return ResidualNorm(us, d.Vt, a)
}
