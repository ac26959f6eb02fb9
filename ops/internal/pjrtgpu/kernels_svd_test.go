//go:build cgo && linux

package pjrtgpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/pjrt"
)

// TestOrthRows: the Newton–Schulz orthonormalization gives orthonormal rows
// spanning the input's rows, for well-conditioned, graded (κ 1e5),
// rank-deficient, and zero inputs.
func TestOrthRows(t *testing.T) {
	d := testDevice(t)
	const l, n = 40, 300
	rng := rand.New(rand.NewPCG(8, 9))
	gauss := func() []float32 {
		x := make([]float32, l*n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	graded := gauss()
	for i := range l {
		s := float32(math.Pow(10, -float64(i)/8))
		for j := range n {
			graded[i*n+j] *= s
		}
	}
	deficient := make([]float32, l*n)
	basis := gauss()
	for i := range l {
		for r := range 5 {
			c := float32(rng.NormFloat64())
			for j := range n {
				deficient[i*n+j] += c * basis[r*n+j]
			}
		}
	}
	for _, noIf := range []bool{false, true} {
		e, err := d.exe(fmt.Sprintf("test_orth/%dx%d/%v", l, n, noIf), func() ([]byte, error) {
			g := newGraph("test_orth")
			g.noIf = noIf
			return g.build(g.orthRows(g.input("x", dtypes.Float32, l, n)))
		})
		if err != nil {
			t.Fatal(err)
		}
		checkOrth(t, d, e, noIf, l, n, gauss(), graded, deficient)
	}
}

func checkOrth(t *testing.T, d *Device, e *pjrt.LoadedExecutable, noIf bool, l, n int, gaussian, graded, deficient []float32) {
	for _, c := range []struct {
		name string
		x    []float32
		zero bool
	}{{"gaussian", gaussian, false}, {"graded", graded, false}, {"rank 5", deficient, false}, {"zero", make([]float32, l*n), true}} {
		in, err := d.uploadSmall(f32bytes(c.x), dtypes.Float32, l, n)
		if err != nil {
			t.Fatal(err)
		}
		out, err := d.run1(e, in)
		destroy(in)
		if err != nil {
			t.Fatal(err)
		}
		q := make([]float32, l*n)
		err = d.download(out, f32bytes(q))
		destroy(out)
		if err != nil {
			t.Fatal(err)
		}
		if c.zero {
			for _, v := range q {
				if v != 0 {
					t.Fatalf("%s: %v", c.name, v)
				}
			}
			continue
		}
		var orth float64
		for i := range l {
			for j := range l {
				var s float64
				for k := range n {
					s += float64(q[i*n+k]) * float64(q[j*n+k])
				}
				if i == j {
					s--
				}
				orth = max(orth, math.Abs(s))
			}
		}
		// Each input row must lie in the span: ‖x − QᵀQx‖ ≤ tol·‖x‖.
		var span float64
		for i := range l {
			x := c.x[i*n : (i+1)*n]
			res := make([]float64, n)
			var nx float64
			for k, v := range x {
				res[k] = float64(v)
				nx += float64(v) * float64(v)
			}
			for j := range l {
				var p float64
				for k := range n {
					p += float64(q[j*n+k]) * float64(x[k])
				}
				for k := range n {
					res[k] -= p * float64(q[j*n+k])
				}
			}
			var nr float64
			for _, v := range res {
				nr += v * v
			}
			span = max(span, math.Sqrt(nr/nx))
		}
		t.Logf("%s (no if: %v): |QQᵀ − I| = %.2g, worst row outside the span %.2g", c.name, noIf, orth, span)
		if orth > 1e-6 || span > 1e-5 {
			t.Errorf("%s: |QQᵀ − I| = %.3g, row outside the span by %.3g", c.name, orth, span)
		}
	}
}
