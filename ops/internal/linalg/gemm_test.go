package linalg

import (
	"fmt"
	"math"
	"testing"

	"gonum.org/v1/gonum/blas"
	gblas "gonum.org/v1/gonum/blas/gonum"
)

// refGemm computes alpha·op(A)·op(B) + beta·C in float64.
func refGemm(transA, transB bool, alpha float64, a, b Matrix, beta float64, c Matrix) []float64 {
	at := func(x Matrix, tr bool, i, j int) float64 {
		if tr {
			return float64(x.At(j, i))
		}
		return float64(x.At(i, j))
	}
	k := a.Cols
	if transA {
		k = a.Rows
	}
	out := make([]float64, c.Rows*c.Cols)
	for i := range c.Rows {
		for j := range c.Cols {
			var s float64
			for l := range k {
				s += at(a, transA, i, l) * at(b, transB, l, j)
			}
			out[i*c.Cols+j] = alpha * s
			if beta != 0 {
				out[i*c.Cols+j] += beta * float64(c.At(i, j))
			}
		}
	}
	return out
}

func TestGemmMatchesReference(t *testing.T) {
	shapes := [][3]int{{1, 1, 1}, {3, 5, 7}, {17, 300, 9}, {130, 70, 1100}, {260, 3, 513}, {5, 270, 40}}
	for _, s := range shapes {
		m, n, k := s[0], s[1], s[2]
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
			for _, ab := range [][2]float32{{1, 0}, {-0.5, 2}} {
				name := fmt.Sprintf("%dx%dx%d/tA=%v/tB=%v/alpha=%v/beta=%v", m, n, k, tr[0], tr[1], ab[0], ab[1])
				t.Run(name, func(t *testing.T) {
					a := randMatrix(m, k, 1)
					if tr[0] {
						a = randMatrix(k, m, 1)
					}
					b := randMatrix(k, n, 2)
					if tr[1] {
						b = randMatrix(n, k, 2)
					}
					c := randMatrix(m, n, 3)
					if ab[1] == 0 {
						c.Data[0] = float32(math.NaN()) // ignored when beta == 0
					}
					want := refGemm(tr[0], tr[1], float64(ab[0]), a, b, float64(ab[1]), c)
					Gemm(tr[0], tr[1], ab[0], a, b, ab[1], c)
					tol := 2e-6 * math.Sqrt(float64(k)) * 4
					for i, w := range want {
						if d := math.Abs(float64(c.Data[i]) - w); d > tol*(1+math.Abs(w)) {
							t.Fatalf("element %d: got %v want %v", i, c.Data[i], w)
						}
					}
				})
			}
		}
	}
}

func TestGemmEdgeCases(t *testing.T) {
	// k == 0 and alpha == 0 only scale C.
	c := randMatrix(3, 4, 1)
	orig := c.Clone()
	Gemm(false, false, 1, NewMatrix(3, 0), NewMatrix(0, 4), 2, c)
	for i := range c.Data {
		if c.Data[i] != 2*orig.Data[i] {
			t.Fatalf("k=0: element %d = %v, want %v", i, c.Data[i], 2*orig.Data[i])
		}
	}
	Gemm(false, false, 0, randMatrix(3, 5, 2), randMatrix(5, 4, 3), 0, c)
	for i, v := range c.Data {
		if v != 0 {
			t.Fatalf("alpha=beta=0: element %d = %v", i, v)
		}
	}
	// Empty output is a no-op.
	Gemm(false, false, 1, NewMatrix(0, 5), randMatrix(5, 4, 3), 0, NewMatrix(0, 4))

	mustPanic(t, "shape", func() { Gemm(false, false, 1, randMatrix(2, 3, 1), randMatrix(4, 2, 1), 0, NewMatrix(2, 2)) })
	mustPanic(t, "bad Data", func() { Gemm(false, false, 1, Matrix{Rows: 2, Cols: 2}, randMatrix(2, 2, 1), 0, NewMatrix(2, 2)) })
	a := randMatrix(4, 4, 1)
	mustPanic(t, "alias", func() { Gemm(false, false, 1, a, randMatrix(4, 4, 2), 0, a) })
	mustPanic(t, "partial alias", func() {
		Gemm(false, false, 1, a, randMatrix(4, 2, 3), 0, Matrix{Rows: 4, Cols: 2, Data: a.Data[4:12]})
	})
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}

func TestGemmDeterministic(t *testing.T) {
	// Shapes with several tiles in both directions, k > gemmKB, and inputs
	// at an odd offset so the caller's alignment differs from the packed one.
	m, n, k := 300, 290, 1100
	buf := randMatrix(1, m*k+1, 4).Data
	a := Matrix{Rows: m, Cols: k, Data: buf[1:]}
	b := randMatrix(k, n, 5)
	var outs [][]float32
	for _, procs := range []int{1, 2, 3} {
		withProcs(procs, func() {
			for _, tr := range []bool{false, true} {
				bb := b
				if tr {
					bb = b.T()
				}
				c := NewMatrix(m, n)
				Gemm(false, tr, 1, a, bb, 0, c)
				outs = append(outs, c.Data)
			}
		})
	}
	for i := 1; i < len(outs); i++ {
		if !equalBits(outs[0], outs[i]) {
			t.Fatalf("result %d differs from result 0", i)
		}
	}
	// A copy of A at an aligned address gives the same bits.
	c := NewMatrix(m, n)
	Gemm(false, false, 1, a.Clone(), b, 0, c)
	if !equalBits(outs[0], c.Data) {
		t.Fatal("result depends on the alignment of A")
	}
}

func TestTranspose(t *testing.T) {
	a := randMatrix(37, 70, 1)
	at := a.T()
	for i := range a.Rows {
		for j := range a.Cols {
			if a.At(i, j) != at.At(j, i) {
				t.Fatalf("T mismatch at %d,%d", i, j)
			}
		}
	}
	if _, err := MatrixOf(2, 3, make([]float32, 5)); err == nil {
		t.Fatal("MatrixOf accepted a short slice")
	}
}

// BenchmarkGemm times the products of a rank-128 extraction from a
// 2048×8192 delta (sketch width 160) and a square product.
func BenchmarkGemm(b *testing.B) {
	const m, n, l = 2048, 8192, 160
	a := randMatrix(m, n, 1)
	thinN := randMatrix(l, n, 2)
	thinM := randMatrix(l, m, 3)
	sq, sq2 := randMatrix(1024, 1024, 4), randMatrix(1024, 1024, 5)
	cases := []struct {
		name   string
		flops  float64
		run    func()
		output Matrix
	}{
		{"sketch_NT_160x2048x8192", 2 * m * n * l, nil, NewMatrix(l, m)},
		{"project_NN_160x8192x2048", 2 * m * n * l, nil, NewMatrix(l, n)},
		{"square_NN_1024", 2 * 1024 * 1024 * 1024, nil, NewMatrix(1024, 1024)},
	}
	cases[0].run = func() { Gemm(false, true, 1, thinN, a, 0, cases[0].output) }
	cases[1].run = func() { Gemm(false, false, 1, thinM, a, 0, cases[1].output) }
	cases[2].run = func() { Gemm(false, false, 1, sq, sq2, 0, cases[2].output) }
	// gonum's Sgemm on the same operands, for comparison.
	var impl gblas.Implementation
	gonumCases := []func(){
		func() {
			o := cases[0].output
			impl.Sgemm(blas.NoTrans, blas.Trans, l, m, n, 1, thinN.Data, n, a.Data, n, 0, o.Data, m)
		},
		func() {
			o := cases[1].output
			impl.Sgemm(blas.NoTrans, blas.NoTrans, l, n, m, 1, thinM.Data, m, a.Data, n, 0, o.Data, n)
		},
		func() {
			o := cases[2].output
			impl.Sgemm(blas.NoTrans, blas.NoTrans, 1024, 1024, 1024, 1, sq.Data, 1024, sq2.Data, 1024, 0, o.Data, 1024)
		},
	}
	for i, c := range cases {
		for _, impl := range []string{"heft", "gonum"} {
			run := c.run
			if impl == "gonum" {
				run = gonumCases[i]
			}
			b.Run(c.name+"/"+impl, func(b *testing.B) {
				for b.Loop() {
					run()
				}
				b.ReportMetric(c.flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
