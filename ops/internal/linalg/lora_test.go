package linalg

import (
	"errors"
	"fmt"
	"math"
	"testing"
)

func TestSplit(t *testing.T) {
	delta := lowRankPlusNoise(300, 420, powerLaw(30, 0.7), 0.002, 11)
	d, err := TruncatedSVD(delta, 16, SVDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Residual(delta)
	if err != nil {
		t.Fatal(err)
	}
	frob := FrobeniusNorm(delta)
	for _, dist := range []bool{true, false} {
		a, b := d.Split(dist)
		if a.Rows != 16 || a.Cols != 420 || b.Rows != 300 || b.Cols != 16 {
			t.Fatalf("distribute=%v: A %d×%d, B %d×%d", dist, a.Rows, a.Cols, b.Rows, b.Cols)
		}
		for j, s := range d.S {
			fa, fb := float32(s), float32(1)
			if dist {
				fa = float32(math.Sqrt(float64(float32(s))))
				fb = fa
			}
			for c := range a.Cols {
				if a.At(j, c) != fa*d.Vt.At(j, c) {
					t.Fatalf("distribute=%v: A[%d,%d] = %v, want %v", dist, j, c, a.At(j, c), fa*d.Vt.At(j, c))
				}
			}
			for i := range b.Rows {
				if b.At(i, j) != fb*d.U.At(i, j) {
					t.Fatalf("distribute=%v: B[%d,%d] = %v, want %v", dist, i, j, b.At(i, j), fb*d.U.At(i, j))
				}
			}
		}
		rel, err := RelError(b, a, delta)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(rel-res/frob) > 1e-5 {
			t.Errorf("distribute=%v: RelError %v, SVD residual %v", dist, rel, res/frob)
		}
	}
	if !equalBits(mustSplitB(d, false).Data, d.U.Data) {
		t.Error("without distribute_scale B must be U")
	}
}

func mustSplitB(d SVD, dist bool) Matrix {
	_, b := d.Split(dist)
	return b
}

func TestResidualAndRelError(t *testing.T) {
	b := randMatrix(70, 5, 1)
	a := randMatrix(5, 90, 2)
	delta := randMatrix(70, 90, 3)
	got, err := ResidualNorm(b, a, delta)
	if err != nil {
		t.Fatal(err)
	}
	var want float64
	for i := range 70 {
		for j := range 90 {
			var s float64
			for k := range 5 {
				s += float64(b.At(i, k)) * float64(a.At(k, j))
			}
			d := s - float64(delta.At(i, j))
			want += d * d
		}
	}
	if want = math.Sqrt(want); math.Abs(got-want) > 1e-5*want {
		t.Errorf("ResidualNorm %v, want %v", got, want)
	}
	// An exact factorization has (nearly) zero error.
	if rel, _ := RelError(b, a, Mul(b, a)); rel > 1e-6 {
		t.Errorf("RelError of exact factors %v", rel)
	}
	zero := NewMatrix(70, 90)
	if rel, _ := RelError(NewMatrix(70, 5), a, zero); rel != 0 {
		t.Errorf("zero vs zero: %v", rel)
	}
	if rel, _ := RelError(b, a, zero); !math.IsInf(rel, 1) {
		t.Errorf("nonzero vs zero: %v", rel)
	}
	if _, err := ResidualNorm(b, randMatrix(4, 90, 1), delta); !errors.Is(err, ErrShape) {
		t.Errorf("inner mismatch: %v", err)
	}
}

func TestMerge(t *testing.T) {
	const m, n, r = 150, 230, 8
	w := randMatrix(m, n, 1)
	b := randMatrix(m, r, 2)
	a := randMatrix(r, n, 3)
	const scale = 0.75
	dst := NewMatrix(m, n)
	if err := Merge(dst, w, b, a, scale); err != nil {
		t.Fatal(err)
	}
	// PEFT's order of operations: the float32 product, then w + scale·P.
	p := Mul(b, a)
	for i := range dst.Data {
		if want := w.Data[i] + scale*p.Data[i]; dst.Data[i] != want {
			t.Fatalf("element %d: %v, want %v", i, dst.Data[i], want)
		}
	}
	// In place, and independent of GOMAXPROCS.
	for _, procs := range []int{1, 3} {
		withProcs(procs, func() {
			in := w.Clone()
			if err := Merge(in, in, b, a, scale); err != nil {
				t.Fatal(err)
			}
			if !equalBits(in.Data, dst.Data) {
				t.Fatalf("in-place merge with GOMAXPROCS=%d differs", procs)
			}
		})
	}
	if err := Merge(dst, w, b, randMatrix(r+1, n, 4), scale); !errors.Is(err, ErrShape) {
		t.Errorf("shape mismatch: %v", err)
	}
	if err := Merge(Matrix{Rows: m, Cols: n, Data: b.Data[:0]}, w, b, a, scale); !errors.Is(err, ErrShape) {
		t.Errorf("malformed dst: %v", err)
	}
	shifted := Matrix{Rows: m - 1, Cols: n, Data: w.Data[n:]}
	if err := Merge(shifted, Matrix{Rows: m - 1, Cols: n, Data: w.Data[:(m-1)*n]}, randMatrix(m-1, r, 5), a, scale); !errors.Is(err, ErrShape) {
		t.Errorf("partial overlap with w: %v", err)
	}
	if err := Merge(a, NewMatrix(r, n), NewMatrix(r, r), a, scale); !errors.Is(err, ErrShape) {
		t.Errorf("dst aliasing a: %v", err)
	}
}

// TestExtractMergeRoundTrip: W + B·A from an extraction of Δ = W' − W
// reproduces W' to the extraction error.
func TestExtractMergeRoundTrip(t *testing.T) {
	w := randMatrix(200, 320, 1)
	delta := Mul(randMatrix(200, 6, 2), randMatrix(6, 320, 3))
	tuned := w.Clone()
	for i := range tuned.Data {
		tuned.Data[i] += delta.Data[i]
	}
	diff, err := Sub(tuned, w)
	if err != nil {
		t.Fatal(err)
	}
	d, err := TruncatedSVD(diff, 8, SVDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := d.Split(true)
	merged := NewMatrix(200, 320)
	if err := Merge(merged, w, b, a, 1); err != nil {
		t.Fatal(err)
	}
	back, _ := Sub(merged, tuned)
	if e := FrobeniusNorm(back) / FrobeniusNorm(delta); e > 1e-5 {
		t.Errorf("merge(extract(Δ)) misses W' by %v of ‖Δ‖", e)
	}
}

// BenchmarkMerge times W + B·A for a 2048×8192 weight at LoRA ranks 16
// and 128.
func BenchmarkMerge(b *testing.B) {
	const m, n = 2048, 8192
	w := randMatrix(m, n, 1)
	dst := NewMatrix(m, n)
	for _, r := range []int{16, 128} {
		bb, aa := randMatrix(m, r, 2), randMatrix(r, n, 3)
		b.Run(fmt.Sprintf("r%d", r), func(b *testing.B) {
			for b.Loop() {
				if err := Merge(dst, w, bb, aa, 1); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(m*n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
		})
	}
}
