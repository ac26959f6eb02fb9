package linalg

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

// powerLaw returns k values σ_i = (i+1)^(−alpha).
func powerLaw(k int, alpha float64) []float64 {
	s := make([]float64, k)
	for i := range s {
		s[i] = math.Pow(float64(i+1), -alpha)
	}
	return s
}

// checkOrthonormal fails unless U has orthonormal columns and Vt
// orthonormal rows (to float32 precision), skipping zero components.
func checkOrthonormal(t *testing.T, d SVD) {
	t.Helper()
	k := d.Rank()
	utu := MulTA(d.U, d.U)
	vvt := MulTB(d.Vt, d.Vt)
	for i := range k {
		for j := range k {
			want := 0.0
			if i == j && d.S[i] > 0 {
				want = 1
			}
			if e := math.Abs(float64(utu.At(i, j)) - want); e > 1e-4 {
				t.Fatalf("UᵀU[%d,%d] = %v, want %v", i, j, utu.At(i, j), want)
			}
			if e := math.Abs(float64(vvt.At(i, j)) - want); e > 1e-4 {
				t.Fatalf("Vt·Vtᵀ[%d,%d] = %v, want %v", i, j, vvt.At(i, j), want)
			}
		}
	}
}

// checkSigns fails unless the largest-magnitude entry of each nonzero
// column of U is positive.
func checkSigns(t *testing.T, d SVD) {
	t.Helper()
	k := d.Rank()
	for j := range k {
		best, arg := float32(-1), 0
		for i := range d.U.Rows {
			if v := abs32(d.U.At(i, j)); v > best {
				best, arg = v, i
			}
		}
		if d.U.At(arg, j) < 0 {
			t.Fatalf("column %d of U: largest entry %v is negative", j, d.U.At(arg, j))
		}
	}
}

func TestTruncatedSVDMatchesExact(t *testing.T) {
	// sigmaTol bounds the relative error of the top quarter of the
	// singular values and then of all of them: a range finder
	// underestimates the last ones when the spectrum decays slowly.
	cases := []struct {
		name     string
		a        Matrix
		rank     int
		sigmaTol [2]float64
	}{
		{"tall low-rank+noise", lowRankPlusNoise(400, 250, powerLaw(60, 0.5), 0.002, 1), 20, [2]float64{0.002, 0.02}},
		{"wide low-rank+noise", lowRankPlusNoise(180, 600, powerLaw(40, 1), 0.001, 2), 16, [2]float64{0.002, 0.02}},
		{"wide slow power law", spectralMatrix(200, 500, powerLaw(200, 0.3), 3), 24, [2]float64{0.02, 0.07}},
		{"tall flat tail", spectralMatrix(500, 150, append(powerLaw(10, 1), slices.Repeat([]float64{0.05}, 140)...), 4), 10, [2]float64{1e-4, 0.01}},
		{"square small rank", lowRankPlusNoise(300, 300, powerLaw(30, 0.7), 0.003, 5), 4, [2]float64{1e-4, 1e-3}},
		{"rank 1", lowRankPlusNoise(200, 260, []float64{1, 0.3}, 0.001, 6), 1, [2]float64{1e-4, 1e-4}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exact := exactSingularValues(t, c.a)
			d, err := TruncatedSVD(c.a, c.rank, SVDOptions{Seed: 42})
			if err != nil {
				t.Fatal(err)
			}
			if d.Exact || d.Rank() != c.rank || d.U.Rows != c.a.Rows || d.Vt.Cols != c.a.Cols {
				t.Fatalf("got exact=%v rank %d U %d×%d Vt %d×%d", d.Exact, d.Rank(), d.U.Rows, d.U.Cols, d.Vt.Rows, d.Vt.Cols)
			}
			res, err := d.Residual(c.a)
			if err != nil {
				t.Fatal(err)
			}
			opt := tailNorm(exact, c.rank)
			ratio := res / opt
			t.Logf("error %.6g, optimum %.6g, ratio %.5f", res, opt, ratio)
			if ratio > 1.01 {
				t.Errorf("error ratio %.5f > 1.01", ratio)
			}
			for i, s := range d.S {
				tol := c.sigmaTol[0]
				if i >= (c.rank+3)/4 {
					tol = c.sigmaTol[1]
				}
				if math.Abs(s-exact[i]) > tol*exact[i] {
					t.Errorf("σ_%d = %.6g, exact %.6g", i, s, exact[i])
				}
			}
			if !slices.IsSortedFunc(d.S, func(x, y float64) int { return cmpFloat(y, x) }) {
				t.Error("S not non-increasing")
			}
			checkOrthonormal(t, d)
			checkSigns(t, d)
		})
	}
}

func TestTruncatedSVDExactPath(t *testing.T) {
	for _, c := range []struct {
		rows, cols, rank int
		exact            bool
	}{
		{60, 40, 40, true},   // rank = min(m, n): full decomposition
		{40, 60, 100, true},  // rank > min(m, n): clamped to 40
		{50, 300, 40, true},  // rank + oversampling ≥ min(m, n)
		{1, 30, 5, true},     // a single row
		{30, 1, 1, true},     // a single column
		{300, 100, 80, true}, // 80 + 20 ≥ 100
		{300, 100, 70, false},
	} {
		t.Run(fmt.Sprintf("%dx%d_r%d", c.rows, c.cols, c.rank), func(t *testing.T) {
			a := randMatrix(c.rows, c.cols, 9)
			d, err := TruncatedSVD(a, c.rank, SVDOptions{})
			if err != nil {
				t.Fatal(err)
			}
			k := min(c.rank, c.rows, c.cols)
			if d.Exact != c.exact || d.Rank() != k {
				t.Fatalf("exact=%v rank=%d, want %v %d", d.Exact, d.Rank(), c.exact, k)
			}
			exact := exactSingularValues(t, a)
			for i, s := range d.S {
				if d.Exact && math.Abs(s-exact[i]) > 1e-5*exact[0] {
					t.Errorf("σ_%d = %v, exact %v", i, s, exact[i])
				}
			}
			res, _ := d.Residual(a)
			opt := tailNorm(exact, k)
			if res > 1.01*opt+2e-6*FrobeniusNorm(a) {
				t.Errorf("residual %v, optimum %v", res, opt)
			}
			checkOrthonormal(t, d)
			checkSigns(t, d)
		})
	}
}

func TestTruncatedSVDDegenerate(t *testing.T) {
	t.Run("zero", func(t *testing.T) {
		for _, shape := range [][3]int{{300, 200, 10}, {20, 10, 10}} {
			d, err := TruncatedSVD(NewMatrix(shape[0], shape[1]), shape[2], SVDOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if d.Rank() != shape[2] {
				t.Fatalf("rank %d", d.Rank())
			}
			for _, x := range [][]float32{d.U.Data, d.Vt.Data} {
				if slices.ContainsFunc(x, func(v float32) bool { return v != 0 }) {
					t.Fatal("nonzero singular vectors for a zero matrix")
				}
			}
			if slices.ContainsFunc(d.S, func(v float64) bool { return v != 0 }) {
				t.Fatal("nonzero singular values for a zero matrix")
			}
		}
	})
	t.Run("exact low rank", func(t *testing.T) {
		// Rank 5 (e.g. a LoRA delta re-extracted at a higher rank): the
		// sketch panels are numerically rank-deficient.
		a := Mul(randMatrix(300, 5, 1), randMatrix(5, 200, 2))
		d, err := TruncatedSVD(a, 12, SVDOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, _ := d.Residual(a)
		if f := FrobeniusNorm(a); res > 1e-5*f {
			t.Errorf("residual %v of ‖A‖ %v", res, f)
		}
		for i := 5; i < 12; i++ {
			if d.S[i] > 1e-5*d.S[0] {
				t.Errorf("σ_%d = %v, want ≈ 0", i, d.S[i])
			}
		}
		checkSigns(t, d)
	})
	t.Run("errors", func(t *testing.T) {
		a := randMatrix(30, 20, 1)
		if _, err := TruncatedSVD(a, 0, SVDOptions{}); !errors.Is(err, ErrShape) {
			t.Errorf("rank 0: %v", err)
		}
		if _, err := TruncatedSVD(Matrix{Rows: 3, Cols: 3}, 1, SVDOptions{}); !errors.Is(err, ErrShape) {
			t.Errorf("malformed: %v", err)
		}
		a.Set(7, 3, float32(math.Inf(-1)))
		if _, err := TruncatedSVD(a, 2, SVDOptions{}); !errors.Is(err, ErrNotFinite) {
			t.Errorf("inf: %v", err)
		}
		a.Set(7, 3, float32(math.NaN()))
		if _, err := SingularValues(a, 2, SVDOptions{}); !errors.Is(err, ErrNotFinite) {
			t.Errorf("nan: %v", err)
		}
	})
	t.Run("empty", func(t *testing.T) {
		d, err := TruncatedSVD(NewMatrix(0, 5), 3, SVDOptions{})
		if err != nil || d.Rank() != 0 {
			t.Fatalf("rank %d, %v", d.Rank(), err)
		}
	})
}

func TestTruncatedSVDDeterministic(t *testing.T) {
	// Big enough for several Gemm tiles and k-blocks, gonum's blocked LQ
	// (160-row panels, parallel Dgemm inside) and several reduction chunks.
	a := lowRankPlusNoise(500, 1400, powerLaw(200, 0.5), 0.01, 3)
	var runs []SVD
	for _, procs := range []int{1, 2, 3, 2} {
		withProcs(procs, func() {
			d, err := TruncatedSVD(a, 128, SVDOptions{Seed: 7})
			if err != nil {
				t.Fatal(err)
			}
			runs = append(runs, d)
		})
	}
	for i, d := range runs[1:] {
		if !equalBits(d.U.Data, runs[0].U.Data) || !equalBits(d.Vt.Data, runs[0].Vt.Data) || !slices.Equal(d.S, runs[0].S) {
			t.Fatalf("run %d differs from run 0", i+1)
		}
	}
	// Another seed: different bits, same quality.
	d2, err := TruncatedSVD(a, 128, SVDOptions{Seed: 8})
	if err != nil {
		t.Fatal(err)
	}
	if equalBits(d2.U.Data, runs[0].U.Data) {
		t.Error("seed has no effect")
	}
	r1, _ := runs[0].Residual(a)
	r2, _ := d2.Residual(a)
	if math.Abs(r1-r2) > 1e-3*r1 {
		t.Errorf("residuals %v vs %v across seeds", r1, r2)
	}
	s, err := SingularValues(a, 128, SVDOptions{Seed: 7})
	if err != nil || !slices.Equal(s, runs[0].S) {
		t.Errorf("SingularValues differs from TruncatedSVD's S (%v)", err)
	}
}

func TestTruncateAndOptions(t *testing.T) {
	a := lowRankPlusNoise(300, 200, powerLaw(20, 0.5), 0.01, 4)
	d, err := TruncatedSVD(a, 12, SVDOptions{Oversample: 5, PowerIters: -1, Tol: -1})
	if err != nil {
		t.Fatal(err)
	}
	if d.PowerIters != 0 {
		t.Fatalf("ran %d power iterations, want 0", d.PowerIters)
	}
	tr := d.Truncate(4)
	if tr.Rank() != 4 || tr.U.Cols != 4 || tr.Vt.Rows != 4 {
		t.Fatalf("truncated to %d", tr.Rank())
	}
	for i := range a.Rows {
		for j := range 4 {
			if tr.U.At(i, j) != d.U.At(i, j) {
				t.Fatal("Truncate changed U")
			}
		}
	}
	if d.Truncate(99).Rank() != 12 {
		t.Fatal("Truncate beyond rank")
	}
	if p, qMin, qMax, tol := (SVDOptions{}).params(128); p != 32 || qMin != DefaultPowerIters || qMax != DefaultMaxPowerIters || tol != DefaultTol {
		t.Fatalf("defaults p=%d q=%d..%d tol=%v", p, qMin, qMax, tol)
	}
	if p, qMin, qMax, _ := (SVDOptions{Oversample: -3, PowerIters: -1, Tol: -1}).params(8); p != 0 || qMin != 0 || qMax != 0 {
		t.Fatalf("explicit p=%d q=%d..%d", p, qMin, qMax)
	}
	if _, qMin, qMax, _ := (SVDOptions{PowerIters: 9}).params(8); qMin != 9 || qMax != 9 {
		t.Fatalf("PowerIters above the default maximum: q=%d..%d", qMin, qMax)
	}
}

func TestAdaptivePowerIterations(t *testing.T) {
	// A slowly decaying spectrum needs more than the minimum; the adaptive
	// result is at least as good as two fixed iterations.
	slow := spectralMatrix(200, 600, powerLaw(200, 0.3), 12)
	opt := tailNorm(powerLaw(200, 0.3), 32)
	fixed, err := TruncatedSVD(slow, 32, SVDOptions{Tol: -1})
	if err != nil {
		t.Fatal(err)
	}
	auto, err := TruncatedSVD(slow, 32, SVDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rf, _ := fixed.Residual(slow)
	ra, _ := auto.Residual(slow)
	t.Logf("fixed q=%d: %.5f, adaptive q=%d: %.5f", fixed.PowerIters, rf/opt, auto.PowerIters, ra/opt)
	if fixed.PowerIters != DefaultPowerIters || auto.PowerIters <= DefaultPowerIters || auto.PowerIters > DefaultMaxPowerIters {
		t.Errorf("power iterations: fixed %d, adaptive %d", fixed.PowerIters, auto.PowerIters)
	}
	if ra > rf || ra > 1.006*opt {
		t.Errorf("adaptive error %.5f× optimum, fixed %.5f×", ra/opt, rf/opt)
	}
	capped, _ := TruncatedSVD(slow, 32, SVDOptions{MaxPowerIters: 3, Tol: 1e-9})
	if capped.PowerIters != 3 {
		t.Errorf("MaxPowerIters 3: ran %d", capped.PowerIters)
	}
	// A delta of exact rank: converged at once, no extra passes.
	lowRank := Mul(randMatrix(300, 6, 1), randMatrix(6, 200, 2))
	d, _ := TruncatedSVD(lowRank, 12, SVDOptions{})
	if d.PowerIters != DefaultPowerIters {
		t.Errorf("exact low rank: %d power iterations", d.PowerIters)
	}
}

func TestOrthonormalizeRows(t *testing.T) {
	x := randMatrix(20, 90, 1)
	orig := x.Clone()
	if err := OrthonormalizeRows(x); err != nil {
		t.Fatal(err)
	}
	g := MulTB(x, x)
	for i := range 20 {
		for j := range 20 {
			want := float32(0)
			if i == j {
				want = 1
			}
			if math.Abs(float64(g.At(i, j)-want)) > 1e-5 {
				t.Fatalf("QQᵀ[%d,%d] = %v", i, j, g.At(i, j))
			}
		}
	}
	// Nested spans (Gram–Schmidt order): row 0 is ± the normalized first row.
	n0 := math.Sqrt(sumSquares(orig.Row(0)))
	c := float64(dotImpl.Dsdot(90, x.Row(0), 1, orig.Row(0), 1)) / n0
	if math.Abs(math.Abs(c)-1) > 1e-5 {
		t.Errorf("first row not along the original: cos %v", c)
	}
	if err := OrthonormalizeRows(randMatrix(5, 4, 1)); !errors.Is(err, ErrShape) {
		t.Errorf("rows > cols: %v", err)
	}
	x.Data[3] = float32(math.Inf(1))
	if err := OrthonormalizeRows(x); !errors.Is(err, ErrNotFinite) {
		t.Errorf("inf: %v", err)
	}
}
