package linalg

import (
	"bytes"
	"errors"
	"image/png"
	"math"
	"strings"
	"testing"
)

func TestFrobeniusNorm(t *testing.T) {
	// Spans several reduction chunks, with a tail chunk.
	a := randMatrix(3, reduceChunk+7, 1)
	var want float64
	for _, v := range a.Data {
		want += float64(v) * float64(v)
	}
	want = math.Sqrt(want)
	var got []float64
	for _, procs := range []int{1, 2, 3} {
		withProcs(procs, func() { got = append(got, FrobeniusNorm(a)) })
	}
	if math.Abs(got[0]-want) > 1e-12*want {
		t.Errorf("FrobeniusNorm %v, want %v", got[0], want)
	}
	if got[1] != got[0] || got[2] != got[0] {
		t.Errorf("depends on GOMAXPROCS: %v", got)
	}
	if FrobeniusNorm(Matrix{}) != 0 {
		t.Error("empty matrix")
	}
}

func TestCosine(t *testing.T) {
	x := randMatrix(40, 50, 1)
	neg := x.Clone()
	scaled := x.Clone()
	for i := range neg.Data {
		neg.Data[i] = -neg.Data[i]
		scaled.Data[i] *= 1e-3
	}
	zero := NewMatrix(40, 50)
	// Orthogonal: disjoint supports.
	e1, e2 := NewMatrix(40, 50), NewMatrix(40, 50)
	e1.Data[0], e2.Data[1] = 3, -2
	nan := x.Clone()
	nan.Data[17] = float32(math.NaN())
	for _, c := range []struct {
		name string
		x, y Matrix
		want float64
	}{
		{"self", x, x, 1},
		{"scaled", x, scaled, 1},
		{"negated", x, neg, -1},
		{"orthogonal", e1, e2, 0},
		{"zero y", x, zero, 0},
		{"zero x", zero, x, 0},
		{"both zero", zero, zero, 0},
		{"nan", x, nan, math.NaN()},
	} {
		got, err := Cosine(c.x, c.y)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if math.IsNaN(c.want) {
			if !math.IsNaN(got) {
				t.Errorf("%s: %v, want NaN", c.name, got)
			}
			continue
		}
		if math.Abs(got-c.want) > 1e-12 {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// float64 accumulation: a long vector of equal values is exactly parallel
	// to itself plus a tiny perturbation in one entry.
	long := NewMatrix(1, 3*reduceChunk)
	for i := range long.Data {
		long.Data[i] = 0.1
	}
	other := long.Clone()
	other.Data[5] = 0.2
	got, _ := Cosine(long, other)
	n := float64(len(long.Data))
	x1, x2 := float64(float32(0.1)), float64(float32(0.2))
	want := ((n-1)*x1*x1 + x1*x2) / (math.Sqrt(n*x1*x1) * math.Sqrt((n-1)*x1*x1+x2*x2))
	if math.Abs(got-want) > 1e-14 {
		t.Errorf("long vectors: %.17g, want %.17g", got, want)
	}
	if _, err := Cosine(x, randMatrix(50, 40, 2)); !errors.Is(err, ErrShape) {
		t.Errorf("shape mismatch: %v", err)
	}
}

func TestSub(t *testing.T) {
	a, b := randMatrix(30, 20, 1), randMatrix(30, 20, 2)
	d, err := Sub(a, b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range d.Data {
		if d.Data[i] != a.Data[i]-b.Data[i] {
			t.Fatalf("element %d", i)
		}
	}
	if _, err := Sub(a, randMatrix(20, 30, 3)); !errors.Is(err, ErrShape) {
		t.Errorf("shape mismatch: %v", err)
	}
}

func TestEnergyCurve(t *testing.T) {
	// Full rank: the exact SVD's energy reaches 1.
	a := randMatrix(40, 25, 1)
	d, err := TruncatedSVD(a, 25, SVDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e := EnergyCurve(d.S, FrobeniusNorm(a))
	for i := 1; i < len(e); i++ {
		if e[i] < e[i-1] {
			t.Fatalf("not monotone at %d", i)
		}
	}
	if math.Abs(e[len(e)-1]-1) > 1e-6 {
		t.Errorf("full-rank energy %v", e[len(e)-1])
	}
	// Head of the spectrum only: the share follows from the exact norm.
	s := []float64{3, 2, 1}
	if got := EnergyCurve(s[:2], math.Sqrt(14)); math.Abs(got[1]-13.0/14) > 1e-15 {
		t.Errorf("EnergyCurve = %v", got)
	}
	if got := EnergyCurve([]float64{1.0000001}, 1); got[0] != 1 {
		t.Errorf("not clamped: %v", got)
	}
	if got := EnergyCurve([]float64{0, 0}, 0); got[0] != 1 || got[1] != 1 {
		t.Errorf("zero matrix: %v", got)
	}
}

func TestPlotEnergy(t *testing.T) {
	series := []EnergySeries{
		{Name: "q_proj", Energy: EnergyCurve([]float64{5, 3, 2, 1, 1, 0.5}, 7)},
		{Name: "down_proj", Energy: EnergyCurve([]float64{4, 4, 3, 2}, 7)},
	}
	var buf bytes.Buffer
	if err := PlotEnergy(&buf, series, PlotOptions{Title: "energy vs rank", MarkRank: 4, Width: 640, Height: 400}); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 640 || b.Dy() != 400 {
		t.Errorf("size %v", b)
	}
	// Many series: no legend, still a PNG; default size.
	many := make([]EnergySeries, 40)
	for i := range many {
		many[i] = EnergySeries{Name: "m", Energy: []float64{0.1, 0.5, 0.9}}
	}
	buf.Reset()
	if err := PlotEnergy(&buf, many, PlotOptions{}); err != nil {
		t.Fatal(err)
	}
	if cfg, err := png.DecodeConfig(&buf); err != nil || cfg.Width != 900 || cfg.Height != 560 {
		t.Errorf("default plot: %v %v", cfg, err)
	}
	if err := PlotEnergy(&buf, nil, PlotOptions{}); err == nil {
		t.Error("no series accepted")
	}
	err = PlotEnergy(&buf, []EnergySeries{{Name: "bad", Energy: []float64{0.5, math.NaN()}}}, PlotOptions{})
	if err == nil || !strings.Contains(err.Error(), "bad") {
		t.Errorf("NaN energy: %v", err)
	}
}
