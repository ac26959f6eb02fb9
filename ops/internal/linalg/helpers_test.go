package linalg

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// randMatrix returns a rows×cols matrix of N(0, 1) entries from seed.
func randMatrix(rows, cols int, seed uint64) Matrix {
	m := NewMatrix(rows, cols)
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	for i := range m.Data {
		m.Data[i] = float32(r.NormFloat64())
	}
	return m
}

// spectralMatrix returns U·diag(s)·Vᵀ for random orthonormal U (rows×k) and
// V (cols×k), k = len(s) ≤ min(rows, cols), built in float64 and rounded
// once to float32; its singular values are s up to that rounding.
func spectralMatrix(rows, cols int, s []float64, seed uint64) Matrix {
	k := len(s)
	u := orthonormalColumns(rows, k, seed)
	v := orthonormalColumns(cols, k, seed+1)
	for j := range k {
		for i := range rows {
			u.Set(i, j, u.At(i, j)*s[j])
		}
	}
	var prod mat.Dense
	prod.Mul(u, v.T())
	return fromDense(&prod)
}

func orthonormalColumns(rows, k int, seed uint64) *mat.Dense {
	r := rand.New(rand.NewPCG(seed, 7))
	g := mat.NewDense(rows, k, nil)
	for i := range rows {
		for j := range k {
			g.Set(i, j, r.NormFloat64())
		}
	}
	var qr mat.QR
	qr.Factorize(g)
	var q mat.Dense
	qr.QTo(&q)
	return mat.DenseCopyOf(q.Slice(0, rows, 0, k))
}

// lowRankPlusNoise returns Σ_i s_i·x_i·y_iᵀ + noise·N(0, 1) with Gaussian
// x_i, y_i normalized by √dim, the shape of a fine-tuning delta.
func lowRankPlusNoise(rows, cols int, s []float64, noise float64, seed uint64) Matrix {
	k := len(s)
	x := randMatrix(rows, k, seed)
	y := randMatrix(k, cols, seed+1)
	for i := range rows {
		for j := range k {
			x.Set(i, j, x.At(i, j)*float32(s[j]/math.Sqrt(float64(rows*cols))))
		}
	}
	a := Mul(x, y)
	n := randMatrix(rows, cols, seed+2)
	for i := range a.Data {
		a.Data[i] += float32(noise) * n.Data[i]
	}
	return a
}

func toDense(m Matrix) *mat.Dense {
	d := mat.NewDense(max(m.Rows, 1), max(m.Cols, 1), nil)
	for i := range m.Rows {
		for j := range m.Cols {
			d.Set(i, j, float64(m.At(i, j)))
		}
	}
	return d
}

func fromDense(d *mat.Dense) Matrix {
	r, c := d.Dims()
	m := NewMatrix(r, c)
	for i := range r {
		for j := range c {
			m.Set(i, j, float32(d.At(i, j)))
		}
	}
	return m
}

// exactSingularValues returns all singular values of m (gonum, float64).
func exactSingularValues(t testing.TB, m Matrix) []float64 {
	t.Helper()
	var svd mat.SVD
	if !svd.Factorize(toDense(m), mat.SVDNone) {
		t.Fatal("gonum SVD failed")
	}
	return svd.Values(nil)
}

// tailNorm is sqrt(Σ_{i≥r} s_i²): the error of the best rank-r approximation.
func tailNorm(s []float64, r int) float64 {
	var t float64
	for _, v := range s[min(r, len(s)):] {
		t += v * v
	}
	return math.Sqrt(t)
}

// withProcs runs f with GOMAXPROCS set to n.
func withProcs(n int, f func()) {
	old := runtime.GOMAXPROCS(n)
	defer runtime.GOMAXPROCS(old)
	f()
}

func equalBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
