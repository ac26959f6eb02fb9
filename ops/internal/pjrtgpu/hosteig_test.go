package pjrtgpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// symTestMatrix returns a symmetric l×l matrix with a spectrum of the kind
// the SVD meets: a few large eigenvalues, a flat cluster, exact zeros.
func symTestMatrix(l int, kind string, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 11))
	vals := make([]float64, l)
	for i := range vals {
		switch kind {
		case "random":
			vals[i] = rng.NormFloat64()
		case "clustered": // 16 large, the rest a flat noise cluster
			if i < 16 {
				vals[i] = 100 / float64(i+1)
			} else {
				vals[i] = 0.01 * (1 + 1e-3*rng.Float64())
			}
		case "deficient": // rank 5
			if i < 5 {
				vals[i] = float64(5 - i)
			}
		case "equal":
			vals[i] = 1
		}
	}
	g := mat.NewDense(l, l, nil)
	for i := range l {
		for j := range l {
			g.Set(i, j, rng.NormFloat64())
		}
	}
	var qr mat.QR
	qr.Factorize(g)
	var q mat.Dense
	qr.QTo(&q)
	h := make([]float64, l*l)
	for i := range l {
		for j := 0; j <= i; j++ {
			var s float64
			for t := range l {
				s += q.At(i, t) * vals[t] * q.At(j, t)
			}
			h[i*l+j], h[j*l+i] = s, s
		}
	}
	return h
}

func TestSymTriTopVectors(t *testing.T) {
	for _, kind := range []string{"random", "clustered", "deficient", "equal"} {
		for _, l := range []int{1, 2, 7, 64, 200} {
			h := symTestMatrix(l, kind, uint64(l))
			eig, err := eigenSym(h, l, l%2 == 0)
			if err != nil {
				t.Fatalf("%s %d: %v", kind, l, err)
			}
			vals := eig.ascending()
			var ref mat.EigenSym
			if !ref.Factorize(mat.NewSymDense(l, h), false) {
				t.Fatal("gonum failed")
			}
			want := ref.Values(nil)
			norm := math.Max(math.Abs(want[0]), math.Abs(want[l-1]))
			for i := range vals {
				if math.Abs(vals[i]-want[i]) > 1e-12*norm*float64(l) {
					t.Errorf("%s %d: λ_%d = %v, gonum %v", kind, l, i, vals[i], want[i])
				}
			}
			k := (l*4 + 4) / 5
			vecs, top := eig.topVectors(k)
			for j := range k {
				if math.Abs(top[j]-want[l-1-j]) > 1e-12*norm*float64(l) {
					t.Errorf("%s %d: top λ_%d = %v, want %v", kind, l, j, top[j], want[l-1-j])
				}
				// Residual ‖H v − λ v‖ and orthonormality.
				var res float64
				for r := range l {
					var s float64
					for c := range l {
						s += h[r*l+c] * float64(vecs[j*l+c])
					}
					res = math.Max(res, math.Abs(s-top[j]*float64(vecs[j*l+r])))
				}
				if res > 1e-6*norm {
					t.Errorf("%s %d: vector %d residual %v", kind, l, j, res)
				}
				for i := 0; i <= j; i++ {
					var dot float64
					for c := range l {
						dot += float64(vecs[i*l+c]) * float64(vecs[j*l+c])
					}
					if i == j {
						dot--
					}
					if math.Abs(dot) > 1e-6 {
						t.Errorf("%s %d: vectors %d, %d: dot %v", kind, l, i, j, dot)
					}
				}
			}
		}
	}
}

func TestSymTriDeterministic(t *testing.T) {
	h := symTestMatrix(120, "clustered", 3)
	e1, err := eigenSym(h, 120, false)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := eigenSym(h, 120, true)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := e1.topVectors(100)
	b, _ := e2.topVectors(100)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("element %d: %v then %v", i, a[i], b[i])
		}
	}
}

// BenchmarkEigen times the l = 320 problem of rank-256 LoRA extraction.
func BenchmarkEigen(b *testing.B) {
	const l = 320
	h := symTestMatrix(l, "clustered", 1)
	b.Run("values", func(b *testing.B) {
		for b.Loop() {
			if _, err := eigenSym(h, l, false); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("vectors", func(b *testing.B) {
		for b.Loop() {
			e, err := eigenSym(h, l, true)
			if err != nil {
				b.Fatal(err)
			}
			e.topVectors(256)
		}
	})
	b.Run("gonum", func(b *testing.B) {
		for b.Loop() {
			var e mat.EigenSym
			e.Factorize(mat.NewSymDense(l, h), true)
		}
	})
}

func TestEigenSymNonFinite(t *testing.T) {
	for _, bad := range []float64{math.NaN(), math.Inf(1)} {
		h := symTestMatrix(150, "random", 2)
		h[7*150+3] = bad
		if _, err := eigenSym(h, 150, true); err == nil {
			t.Errorf("%v entry: no error", bad)
		}
	}
}
