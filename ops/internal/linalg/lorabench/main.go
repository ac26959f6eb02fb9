// Command lorabench times LoRA extraction (linalg.TruncatedSVD plus
// mergekit's split) and sweeps its parameters. It lives under
// ops/internal/linalg because Go's internal-package rule keeps the package
// out of reach of bench/; `go run ./bench/lora` launches it, and
// bench/lora/run.sh runs it next to numpy.
//
//	lorabench gen -out delta.npy                 # write the synthetic delta
//	lorabench [extract] [-in delta.npy] [-ref numpy.json | -exact] [-reps 3] [-p 0] [-q 0]
//	lorabench sweep [-rows 1024 -cols 4096]      # error ratio and time over p×q
//
// The synthetic delta (2048×8192 by default, fixed seed) is a fine-tuning
// look-alike: Σ_{i<256} s_i·x_i·y_iᵀ with s_i = 1.43·(i+1)^−½ and Gaussian
// x_i, y_i of unit expected norm, plus N(0, 5e-4²) noise; rank 128 captures
// about two thirds of its energy. numpy reads the same bits from the .npy
// file, and extract takes the exact rank-128 optimum from numpy's full SVD
// (numpy.json) when given one, or computes it itself with -exact (float64
// Gram matrix and gonum's symmetric eigensolver: about 20 s at 2048×8192).
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/mat"

	"github.com/heft-dev/heft/ops/internal/linalg"
)

func main() {
	mode, args := "extract", os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		mode, args = args[0], args[1:]
	}
	var err error
	switch mode {
	case "gen":
		err = runGen(args)
	case "extract":
		err = runExtract(args)
	case "sweep":
		err = runSweep(args)
	default:
		err = fmt.Errorf("unknown mode %q (gen, extract or sweep)", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lorabench:", err)
		os.Exit(1)
	}
}

// synthDelta builds the synthetic delta described in the package comment.
func synthDelta(rows, cols int, seed uint64) linalg.Matrix {
	const k = 256
	x := gaussian(rows, k, seed)
	y := gaussian(k, cols, seed+1)
	for i := range rows {
		for j := range k {
			s := 1.43 * math.Pow(float64(j+1), -0.5) / math.Sqrt(float64(rows)*float64(cols))
			x.Set(i, j, x.At(i, j)*float32(s))
		}
	}
	d := linalg.Mul(x, y)
	noise := gaussian(rows, cols, seed+2)
	for i := range d.Data {
		d.Data[i] += 5e-4 * noise.Data[i]
	}
	return d
}

// gaussian returns a rows×cols N(0, 1) matrix; row i comes from the PCG
// stream (seed, i).
func gaussian(rows, cols int, seed uint64) linalg.Matrix {
	m := linalg.NewMatrix(rows, cols)
	for i := range rows {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		for j := range m.Row(i) {
			m.Data[i*cols+j] = float32(r.NormFloat64())
		}
	}
	return m
}

func runGen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	out := fs.String("out", "delta.npy", "output .npy file (float32, C order)")
	rows := fs.Int("rows", 2048, "rows (out features)")
	cols := fs.Int("cols", 8192, "columns (in features)")
	seed := fs.Uint64("seed", 1, "seed")
	_ = fs.Parse(args)
	d := synthDelta(*rows, *cols, *seed)
	if err := writeNpy(*out, d); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %d×%d float32, ‖Δ‖_F = %.6g\n", *out, d.Rows, d.Cols, linalg.FrobeniusNorm(d))
	return nil
}

// numpyRef is what bench/lora/numpy_svd.py writes.
type numpyRef struct {
	Rank     int       `json:"rank"`
	Seconds  float64   `json:"seconds"`
	Error    float64   `json:"error"`    // ‖Δ − U_r S_r Vt_r‖_F from numpy's factors
	Optimum  float64   `json:"optimum"`  // sqrt(Σ_{i>r} σ_i²) from numpy's singular values
	Frob     float64   `json:"frob"`     // ‖Δ‖_F
	Singular []float64 `json:"singular"` // head of the spectrum
}

func runExtract(args []string) error {
	fs := flag.NewFlagSet("extract", flag.ExitOnError)
	in := fs.String("in", "", ".npy delta to read (default: generate the synthetic delta)")
	ref := fs.String("ref", "", "numpy.json from numpy_svd.py: report the error ratio against numpy's exact optimum")
	rows := fs.Int("rows", 2048, "rows of the generated delta")
	cols := fs.Int("cols", 8192, "columns of the generated delta")
	rank := fs.Int("rank", 128, "LoRA rank")
	p := fs.Int("p", 0, "oversampling (0: default)")
	q := fs.Int("q", 0, "minimum power iterations (0: default, <0: none)")
	qmax := fs.Int("qmax", 0, "maximum power iterations (0: default)")
	tol := fs.Float64("tol", 0, "adaptive tolerance (0: default, <0: exactly -q iterations)")
	reps := fs.Int("reps", 3, "timed repetitions")
	cpuprof := fs.String("cpuprofile", "", "write a CPU profile of the timed runs")
	exact := fs.Bool("exact", false, "compute the exact optimum in Go (slow: float64 Gram + eigensolver)")
	_ = fs.Parse(args)

	var d linalg.Matrix
	var err error
	src := "generated"
	if *in != "" {
		if d, err = readNpy(*in); err != nil {
			return err
		}
		src = *in
	} else {
		d = synthDelta(*rows, *cols, 1)
	}
	opts := linalg.SVDOptions{Oversample: *p, PowerIters: *q, MaxPowerIters: *qmax, Tol: *tol}
	fmt.Printf("delta %d×%d float32 (%s), rank %d, GOMAXPROCS %d\n", d.Rows, d.Cols, src, *rank, runtime.GOMAXPROCS(0))
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var times []float64
	var svd linalg.SVD
	for range max(*reps, 1) {
		runtime.GC()
		start := time.Now()
		svd, err = linalg.TruncatedSVD(d, *rank, opts)
		if err != nil {
			return err
		}
		times = append(times, time.Since(start).Seconds())
	}
	start := time.Now()
	a, b := svd.Split(true)
	split := time.Since(start).Seconds()
	slices.Sort(times)
	fmt.Printf("go truncated SVD (exact=%v, %d power iterations): best %.3f s, median %.3f s over %d runs; split %.3f s\n",
		svd.Exact, svd.PowerIters, times[0], times[len(times)/2], len(times), split)

	res, err := linalg.ResidualNorm(b, a, d)
	if err != nil {
		return err
	}
	frob := linalg.FrobeniusNorm(d)
	energy := linalg.EnergyCurve(svd.S, frob)
	fmt.Printf("go error ‖B·A − Δ‖_F = %.6g (relative %.6f), energy captured at rank %d: %.4f\n",
		res, res/frob, svd.Rank(), energy[len(energy)-1])
	fmt.Printf("go σ head: %s\n", head(svd.S, 5))
	if *exact {
		start := time.Now()
		s := exactSingularValues(d)
		var tail float64
		for _, v := range s[min(*rank, len(s)):] {
			tail += v * v
		}
		opt := math.Sqrt(tail)
		fmt.Printf("exact optimum (Go, float64 Gram eigenvalues, %.1f s): %.6g; go error / optimum = %.5f\n",
			time.Since(start).Seconds(), opt, res/opt)
	}
	if *ref == "" && !*exact {
		fmt.Println("(for the ratio to the exact optimum pass -ref numpy.json from bench/lora/numpy_svd.py, or -exact)")
	}
	if *ref != "" {
		var r numpyRef
		raw, err := os.ReadFile(*ref)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("%s: %w", *ref, err)
		}
		if r.Rank != *rank {
			return fmt.Errorf("%s is for rank %d, not %d", *ref, r.Rank, *rank)
		}
		fmt.Printf("numpy full SVD: %.3f s, error %.6g; exact optimum %.6g\n", r.Seconds, r.Error, r.Optimum)
		fmt.Printf("go error / exact optimum = %.5f; speed-up over numpy %.1f×\n", res/r.Optimum, r.Seconds/times[0])
		worst := 0.0
		for i := range min(len(r.Singular), len(svd.S)) {
			worst = max(worst, math.Abs(svd.S[i]-r.Singular[i])/r.Singular[i])
		}
		fmt.Printf("largest relative σ difference over the first %d: %.2e\n", min(len(r.Singular), len(svd.S)), worst)
	}
	return nil
}

// exactSingularValues returns all singular values of d, non-increasing,
// as square roots of the eigenvalues of the float64 Gram matrix of its
// shorter side. Squaring costs relative accuracy only for values below
// ~1e-8·σ_1, far under what matters for the tail energy.
func exactSingularValues(d linalg.Matrix) []float64 {
	x := d
	if x.Rows > x.Cols {
		x = d.T()
	}
	r, c := x.Rows, x.Cols
	x64 := make([]float64, r*c)
	for i, v := range x.Data {
		x64[i] = float64(v)
	}
	g := make([]float64, r*r)
	blas64.Implementation().Dgemm(blas.NoTrans, blas.Trans, r, r, c, 1, x64, c, x64, c, 0, g, r)
	var eig mat.EigenSym
	if !eig.Factorize(mat.NewSymDense(r, g), false) {
		panic("eigendecomposition failed")
	}
	vals := eig.Values(nil)
	s := make([]float64, r)
	for i, v := range vals {
		s[r-1-i] = math.Sqrt(max(v, 0))
	}
	return s
}

func head(s []float64, n int) string {
	out := ""
	for i, v := range s[:min(n, len(s))] {
		if i > 0 {
			out += " "
		}
		out += strconv.FormatFloat(v, 'g', 6, 64)
	}
	return out
}

// runSweep measures the error ratio against the known optimum and the time
// of TruncatedSVD over a grid of oversampling p and power iterations q, on
// matrices U·diag(s)·Vᵀ with random orthonormal U, V and chosen spectra.
func runSweep(args []string) error {
	fs := flag.NewFlagSet("sweep", flag.ExitOnError)
	rows := fs.Int("rows", 1024, "rows")
	cols := fs.Int("cols", 4096, "columns")
	rank := fs.Int("rank", 128, "rank")
	psFlag := fs.String("ps", "", "comma-separated oversampling values (default rank/8, rank/4, rank/2)")
	qsFlag := fs.String("qs", "0,1,2,3,auto", "comma-separated fixed power iteration counts; auto: the adaptive default")
	_ = fs.Parse(args)
	k := min(*rows, *cols)
	ps, err := intList(*psFlag)
	if err != nil {
		return err
	}
	if len(ps) == 0 {
		ps = []int{*rank / 8, *rank / 4, *rank / 2}
	}
	auto := strings.Contains(*qsFlag, "auto")
	qs, err := intList(strings.ReplaceAll(*qsFlag, "auto", ""))
	if err != nil {
		return err
	}
	spectra := []struct {
		name string
		s    func(i int) float64
	}{
		{"power-law α=0.3", func(i int) float64 { return math.Pow(float64(i+1), -0.3) }},
		{"power-law α=0.5", func(i int) float64 { return math.Pow(float64(i+1), -0.5) }},
		{"power-law α=1", func(i int) float64 { return 1 / float64(i+1) }},
		{"rank-256 α=0.5 + flat floor", func(i int) float64 {
			if i < 256 {
				return math.Pow(float64(i+1), -0.5)
			}
			return 0.04
		}},
	}
	fmt.Printf("sweep %d×%d, rank %d: error / exact optimum (time)\n\n", *rows, *cols, *rank)
	fmt.Printf("| spectrum | p \\ q |")
	for _, q := range qs {
		fmt.Printf(" %d |", q)
	}
	ncol := len(qs)
	if auto {
		fmt.Printf(" auto (q run) |")
		ncol++
	}
	fmt.Printf("\n|---|---|%s\n", strings.Repeat("---|", ncol))
	for si, sp := range spectra {
		s := make([]float64, k)
		for i := range s {
			s[i] = sp.s(i)
		}
		a, err := spectral(*rows, *cols, s, uint64(100+si))
		if err != nil {
			return err
		}
		var tail float64
		for _, v := range s[*rank:] {
			tail += v * v
		}
		opt := math.Sqrt(tail)
		for _, p := range ps {
			fmt.Printf("| %s | %d |", sp.name, p)
			runs := make([]linalg.SVDOptions, 0, len(qs)+1)
			for _, q := range qs {
				if q == 0 {
					q = -1 // SVDOptions: negative means none
				}
				runs = append(runs, linalg.SVDOptions{Oversample: p, PowerIters: q, Tol: -1})
			}
			if auto {
				runs = append(runs, linalg.SVDOptions{Oversample: p})
			}
			for i, o := range runs {
				start := time.Now()
				d, err := linalg.TruncatedSVD(a, *rank, o)
				if err != nil {
					return err
				}
				el := time.Since(start).Seconds()
				res, err := d.Residual(a)
				if err != nil {
					return err
				}
				if i < len(qs) {
					fmt.Printf(" %.5f (%.2f s) |", res/opt, el)
				} else {
					fmt.Printf(" %.5f (%.2f s, q=%d) |", res/opt, el, d.PowerIters)
				}
			}
			fmt.Println()
		}
	}
	return nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("bad list %q: %w", s, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// spectral returns U·diag(s)·Vᵀ (rows×cols) for random orthonormal U, V.
func spectral(rows, cols int, s []float64, seed uint64) (linalg.Matrix, error) {
	k := len(s)
	ut := gaussian(k, rows, seed)
	vt := gaussian(k, cols, seed+1)
	if err := linalg.OrthonormalizeRows(ut); err != nil {
		return linalg.Matrix{}, err
	}
	if err := linalg.OrthonormalizeRows(vt); err != nil {
		return linalg.Matrix{}, err
	}
	for i := range k {
		for j := range ut.Row(i) {
			ut.Data[i*rows+j] *= float32(s[i])
		}
	}
	return linalg.MulTA(ut, vt), nil
}

// writeNpy writes m as a version 1.0 .npy file (little-endian float32, C order).
func writeNpy(path string, m linalg.Matrix) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	hdr := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", m.Rows, m.Cols)
	pad := 64 - (10+len(hdr)+1)%64
	hdr += fmt.Sprintf("%*s\n", pad%64, "")
	w.WriteString("\x93NUMPY\x01\x00")
	binary.Write(w, binary.LittleEndian, uint16(len(hdr)))
	w.WriteString(hdr)
	buf := make([]byte, 4*m.Cols)
	for i := range m.Rows {
		for j, v := range m.Row(i) {
			binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(v))
		}
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var npyShape = regexp.MustCompile(`'shape':\s*\((\d+),\s*(\d+)\)`)

// readNpy reads a 2-D little-endian float32 C-order .npy file.
func readNpy(path string) (linalg.Matrix, error) {
	f, err := os.Open(path)
	if err != nil {
		return linalg.Matrix{}, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var pre [10]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return linalg.Matrix{}, err
	}
	if string(pre[:6]) != "\x93NUMPY" || pre[6] != 1 {
		return linalg.Matrix{}, fmt.Errorf("%s: not a version 1 .npy file", path)
	}
	hdr := make([]byte, binary.LittleEndian.Uint16(pre[8:]))
	if _, err := io.ReadFull(r, hdr); err != nil {
		return linalg.Matrix{}, err
	}
	h := string(hdr)
	sm := npyShape.FindStringSubmatch(h)
	if sm == nil || !regexp.MustCompile(`'descr':\s*'<f4'`).MatchString(h) || !regexp.MustCompile(`'fortran_order':\s*False`).MatchString(h) {
		return linalg.Matrix{}, fmt.Errorf("%s: want a 2-D <f4 C-order array, header %q", path, h)
	}
	rows, _ := strconv.Atoi(sm[1])
	cols, _ := strconv.Atoi(sm[2])
	m := linalg.NewMatrix(rows, cols)
	buf := make([]byte, 4*cols)
	for i := range rows {
		if _, err := io.ReadFull(r, buf); err != nil {
			return linalg.Matrix{}, fmt.Errorf("%s: row %d: %w", path, i, err)
		}
		for j := range cols {
			m.Data[i*cols+j] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*j:]))
		}
	}
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		return linalg.Matrix{}, fmt.Errorf("%s: trailing data after %d×%d floats", path, rows, cols)
	}
	return m, nil
}
