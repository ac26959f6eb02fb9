package linalg

import (
	"fmt"
	"math"
)

// FrobeniusNorm returns ‖a‖_F = sqrt(Σ a_ij²), accumulated in float64 in
// fixed chunks (deterministic for any GOMAXPROCS).
func FrobeniusNorm(a Matrix) float64 {
	return math.Sqrt(parallelSum(len(a.Data), 1, func(lo, hi int, acc []float64) {
		acc[0] = sumSquares(a.Data[lo:hi])
	})[0])
}

// Cosine returns the cosine similarity ⟨x, y⟩ / (‖x‖·‖y‖) of two matrices of
// equal shape viewed as vectors, accumulated in float64; e.g. quantization
// noise W − dequant(quant(W)) against a LoRA delta. It returns 0 when x or
// y is all zeros (no direction to compare), NaN when an input holds a NaN,
// and fails with ErrShape when the shapes differ. Deterministic.
func Cosine(x, y Matrix) (float64, error) {
	if err := x.check("Cosine x"); err != nil {
		return 0, err
	}
	if err := y.check("Cosine y"); err != nil {
		return 0, err
	}
	if x.Rows != y.Rows || x.Cols != y.Cols {
		return 0, fmt.Errorf("%w: Cosine: %d×%d vs %d×%d", ErrShape, x.Rows, x.Cols, y.Rows, y.Cols)
	}
	s := parallelSum(len(x.Data), 3, func(lo, hi int, acc []float64) {
		acc[0], acc[1], acc[2] = dotNorms(x.Data[lo:hi], y.Data[lo:hi])
	})
	xy, xx, yy := s[0], s[1], s[2]
	if math.IsNaN(xy) || math.IsNaN(xx) || math.IsNaN(yy) {
		return math.NaN(), nil
	}
	if xx == 0 || yy == 0 {
		return 0, nil
	}
	c := xy / (math.Sqrt(xx) * math.Sqrt(yy))
	return max(-1, min(1, c)), nil // rounding can leave |c| a hair above 1
}

// Sub returns the new matrix a − b (e.g. fine-tuned − base, or
// W − dequant(quant(W))), computed in float32. It fails with ErrShape
// when the shapes differ.
func Sub(a, b Matrix) (Matrix, error) {
	if err := a.check("Sub a"); err != nil {
		return Matrix{}, err
	}
	if err := b.check("Sub b"); err != nil {
		return Matrix{}, err
	}
	if a.Rows != b.Rows || a.Cols != b.Cols {
		return Matrix{}, fmt.Errorf("%w: Sub: %d×%d vs %d×%d", ErrShape, a.Rows, a.Cols, b.Rows, b.Cols)
	}
	d := NewMatrix(a.Rows, a.Cols)
	parallelFor((len(d.Data)+reduceChunk-1)/reduceChunk, func(_, c int) {
		lo := c * reduceChunk
		hi := min(lo+reduceChunk, len(d.Data))
		for i := lo; i < hi; i++ {
			d.Data[i] = a.Data[i] - b.Data[i]
		}
	})
	return d, nil
}

// EnergyCurve returns the share of a matrix's energy captured by its best
// rank-r approximation, for r = 1..len(s): E[r-1] = Σ_{i≤r} s_i² / frob²,
// where s are its top singular values (from TruncatedSVD or
// SingularValues, non-increasing) and frob = FrobeniusNorm of the whole
// matrix, computed exactly, so the curve needs only the head of the
// spectrum. Values are clamped to [0, 1] (the randomized values can
// overshoot by rounding). For frob == 0 the curve is all ones: nothing is
// left to capture.
func EnergyCurve(s []float64, frob float64) []float64 {
	e := make([]float64, len(s))
	total := frob * frob
	var acc float64
	for i, v := range s {
		acc += v * v
		if total == 0 {
			e[i] = 1
			continue
		}
		e[i] = min(1, acc/total)
	}
	return e
}

// sumSquares returns Σ x_i² in float64 with four interleaved accumulators.
func sumSquares(x []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		a, b, c, d := float64(x[i]), float64(x[i+1]), float64(x[i+2]), float64(x[i+3])
		s0 += a * a
		s1 += b * b
		s2 += c * c
		s3 += d * d
	}
	for ; i < len(x); i++ {
		v := float64(x[i])
		s0 += v * v
	}
	return (s0 + s1) + (s2 + s3)
}

// sumSquaresDiff returns Σ (x_i − y_i)² in float64, len(x) == len(y).
func sumSquaresDiff(x, y []float32) float64 {
	y = y[:len(x)]
	var s0, s1 float64
	i := 0
	for ; i+2 <= len(x); i += 2 {
		a := float64(x[i]) - float64(y[i])
		b := float64(x[i+1]) - float64(y[i+1])
		s0 += a * a
		s1 += b * b
	}
	for ; i < len(x); i++ {
		a := float64(x[i]) - float64(y[i])
		s0 += a * a
	}
	return s0 + s1
}

// dotNorms returns Σ x_i·y_i, Σ x_i² and Σ y_i² in float64, len(x) == len(y).
func dotNorms(x, y []float32) (xy, xx, yy float64) {
	y = y[:len(x)]
	for i, xv := range x {
		a, b := float64(xv), float64(y[i])
		xy += a * b
		xx += a * a
		yy += b * b
	}
	return xy, xx, yy
}
