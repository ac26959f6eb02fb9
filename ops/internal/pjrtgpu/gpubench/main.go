// Command gpubench checks heft's PJRT GPU backend against the CPU kernels
// and times it on Qwen3-32B shapes. It lives under ops/internal/pjrtgpu
// because Go's internal-package rule keeps that package out of reach of
// bench/; bench/gpu/prepare.sh builds it (cgo) and bench/gpu/gpubench.sh
// runs it on the GPU machine.
//
//	gpubench [-plugin PATH] [-out DIR] [-rank 256] [-torch bench/gpu/gpubench.py] [-python python3]
//
// It runs, in order:
//
//  1. parity: FP8 block dequantization and fp8-block quantization bit for
//     bit against codec/quant on random data and edge cases, and the
//     randomized SVD against the exact optimum of small matrices
//     (pjrtgpu.DequantCases, QuantizeCases, SVDCases);
//  2. LoRA extraction at -rank on one synthetic Qwen3-32B layer (q, k, v,
//     o, gate, up, down; BF16 base and a tuned copy differing by a rank-64
//     delta plus noise): the device's time per module (after a warm-up run
//     that compiles) and its relative error, next to torch.linalg.svd on
//     the same deltas (what mergekit does), timed on the same card by the
//     -torch script, which also gives the exact optimum (float64 singular
//     values); the layer time is extrapolated to 64 layers;
//  3. FP8 block dequantization of device-resident q_proj and gate_proj
//     shapes, in GB/s, against the card's copy bandwidth measured the same
//     way (target: ≥ 80 %), and the end-to-end time with transfers.
//
// It prints one table and writes DIR/gpubench.json. The exit status is 1
// when a parity check fails.
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
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops/internal/linalg"
	"github.com/heft-dev/heft/ops/internal/pjrtgpu"
)

// The seven projections of a Qwen3-32B layer (formats.md §4).
var qwen3Layer = []struct {
	Name    string
	Out, In int
}{
	{"q_proj", 8192, 5120}, {"k_proj", 1024, 5120}, {"v_proj", 1024, 5120}, {"o_proj", 5120, 8192},
	{"gate_proj", 25600, 5120}, {"up_proj", 25600, 5120}, {"down_proj", 5120, 25600},
}

const qwen3Layers = 64

// dequantShapes are q_proj's and gate_proj's.
var dequantShapes = [][2]int{{8192, 5120}, {25600, 5120}}

type report struct {
	Device   *pjrtgpu.Report `json:"device"`
	Parity   parity          `json:"parity"`
	Lora     *loraBench      `json:"lora,omitempty"`
	Dequant  []dequantBench  `json:"dequant,omitempty"`
	Failures []string        `json:"failures"`
}

type parity struct {
	DequantCases, DequantOK   int
	QuantizeCases, QuantizeOK int
	QuantizeRefused           int
	SVDCases, SVDOK           int
	SVDWorstRatio             float64
	Details                   []string
}

type loraModule struct {
	Name       string  `json:"name"`
	Out        int     `json:"out"`
	In         int     `json:"in"`
	GPUSeconds float64 `json:"gpu_s"`
	GPUError   float64 `json:"gpu_rel_error"`
	PowerIters int     `json:"power_iters"`
	// From the torch script.
	TorchSeconds float64 `json:"torch_svd_s"`
	TorchError   float64 `json:"torch_rel_error"`
	Optimum      float64 `json:"optimum_rel_error"`
}

type loraBench struct {
	Rank          int             `json:"rank"`
	Modules       []loraModule    `json:"modules"`
	GPULayerS     float64         `json:"gpu_layer_s"`
	TorchLayerS   float64         `json:"torch_layer_s"`
	GPUModelMin   float64         `json:"gpu_64_layers_min"`
	TorchModelMin float64         `json:"torch_64_layers_min"`
	CompileS      float64         `json:"warmup_compile_s"`
	Stats         pjrtgpu.Stats   `json:"timed_run_stats"`
	Torch         json.RawMessage `json:"torch,omitempty"`
	TorchErr      string          `json:"torch_error,omitempty"`
}

type dequantBench struct {
	Shape        string  `json:"shape"`
	DeviceUS     float64 `json:"device_median_us"`
	GBs          float64 `json:"device_gb_s"` // (codes + scales + BF16 out) / time
	CopyGBs      float64 `json:"copy_gb_s"`
	Ratio        float64 `json:"ratio"`
	EndToEndMS   float64 `json:"end_to_end_ms"` // host codes → host BF16
	CPUMS        float64 `json:"cpu_ms"`
	CPUThreads   int     `json:"cpu_threads"`
	BytesPerCall int64   `json:"bytes"`
}

func main() {
	plugin := flag.String("plugin", os.Getenv("HEFT_PJRT_PLUGIN"), "PJRT plugin (default: the search heft does)")
	outDir := flag.String("out", "gpubench-out", "directory for gpubench.json and the deltas handed to the torch script")
	rank := flag.Int("rank", 256, "LoRA rank")
	script := flag.String("torch", "", "torch baseline script (bench/gpu/gpubench.py); empty: no baseline")
	python := flag.String("python", "python3", "python interpreter for the torch script")
	skipLora := flag.Bool("skip-lora", false, "skip the LoRA extraction benchmark")
	scale := flag.Int("scale", 1, "divide every benchmark dimension by this (a quick run on a small device)")
	flag.Parse()
	if *scale > 1 {
		for i := range qwen3Layer {
			qwen3Layer[i].Out /= *scale
			qwen3Layer[i].In /= *scale
		}
		for i := range dequantShapes {
			dequantShapes[i][0] /= *scale
			dequantShapes[i][1] /= *scale
		}
		*rank = max(1, *rank / *scale)
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		fatal(err)
	}
	rep := &report{Failures: []string{}}
	dev, drep, err := pjrtgpu.Open(pjrtgpu.Options{Plugin: *plugin})
	rep.Device = drep
	if err != nil {
		writeJSON(*outDir, rep)
		fatal(err)
	}
	defer dev.Close()
	fmt.Printf("device: %s (PJRT %s, %s)\nplugin: %s\nXLA_FLAGS: %s\nsmoke: %s\n\n", dev.Name(), drep.PJRTVersion, drep.PlatformVer, drep.Plugin, drep.XLAFlags, drep.Smoke)

	runParity(dev, rep)
	printParity(rep)
	if !*skipLora {
		lb, err := runLora(dev, *rank, *outDir, *python, *script)
		if err != nil {
			rep.Failures = append(rep.Failures, "lora: "+err.Error())
			fmt.Println("lora benchmark failed:", err)
		}
		for _, m := range lb.Modules {
			if m.Optimum > 0 && m.GPUError > 1.01*m.Optimum {
				rep.Failures = append(rep.Failures, fmt.Sprintf("lora %s: relative error %.6f is %.4fx the optimum %.6f (limit 1.01x)", m.Name, m.GPUError, m.GPUError/m.Optimum, m.Optimum))
			}
		}
		rep.Lora = lb
		printLora(lb)
	}
	rep.Dequant = runDequant(dev, rep)
	printDequant(rep.Dequant)
	writeJSON(*outDir, rep)
	if len(rep.Failures) > 0 {
		fmt.Printf("\nFAILURES (%d):\n  %s\n", len(rep.Failures), strings.Join(rep.Failures, "\n  "))
		os.Exit(1)
	}
	fmt.Println("\nall checks passed")
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "gpubench:", err)
	os.Exit(2)
}

func writeJSON(dir string, rep *report) {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "gpubench.json"), b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpubench: write json:", err)
	}
}

func runParity(dev *pjrtgpu.Device, rep *report) {
	p := &rep.Parity
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		p.Details = append(p.Details, msg)
		rep.Failures = append(rep.Failures, msg)
	}
	for _, c := range pjrtgpu.DequantCases(1) {
		p.DequantCases++
		bad, first, err := pjrtgpu.CheckDequant(dev, c)
		switch {
		case err != nil:
			fail("dequant %s: %v", c.Name, err)
		case bad > 0:
			fail("dequant %s: %d elements differ, first %s", c.Name, bad, first)
		default:
			p.DequantOK++
		}
	}
	for _, c := range pjrtgpu.QuantizeCases(1) {
		p.QuantizeCases++
		refused, err := pjrtgpu.CheckQuantize(dev, c)
		if err != nil {
			fail("quantize %s: %v", c.Name, err)
			continue
		}
		p.QuantizeOK++
		if refused {
			p.QuantizeRefused++
		}
	}
	for _, c := range pjrtgpu.SVDCases(7) {
		p.SVDCases++
		res, err := pjrtgpu.CheckSVD(dev, c)
		if err != nil {
			fail("svd %s: %v", c.Name, err)
			continue
		}
		p.SVDWorstRatio = max(p.SVDWorstRatio, res.Ratio)
		p.Details = append(p.Details, fmt.Sprintf("svd %s: error %.6g, optimum %.6g, ratio %.5f, orthogonality %.2g, q %d",
			c.Name, res.Error, res.Optimum, res.Ratio, res.Orthogonality, res.PowerIters))
		if res.Ratio > 1.01 || res.Orthogonality > 1e-4 {
			fail("svd %s: ratio %.5f, orthogonality %.3g", c.Name, res.Ratio, res.Orthogonality)
			continue
		}
		p.SVDOK++
	}
}

func printParity(rep *report) {
	p := rep.Parity
	fmt.Println("== parity: device vs CPU kernels")
	fmt.Printf("  fp8 block dequant   %d/%d cases bit-identical (every code, NaN, ±448, subnormals, partial blocks, BF16/F16/F32 scales, BF16/F32 out)\n", p.DequantOK, p.DequantCases)
	fmt.Printf("  fp8 block quantize  %d/%d cases bit-identical (%d refused by both: NaN, -Inf, scale overflow)\n", p.QuantizeOK, p.QuantizeCases, p.QuantizeRefused)
	fmt.Printf("  randomized SVD      %d/%d cases within 1.01x of the optimum (worst %.5fx)\n", p.SVDOK, p.SVDCases, p.SVDWorstRatio)
	for _, d := range p.Details {
		fmt.Println("   ", d)
	}
	fmt.Println()
}

// synthDelta returns tuned − base (float32) for one module: base is BF16
// N(0, 0.02²); tuned is base plus Σ_{i<64} s_i·x_i·y_iᵀ (s_i ∝ (i+1)^-½,
// rms 1e-3 per element) plus N(0, 5e-4²) noise, rounded to BF16.
func synthDelta(out, in int, seed uint64) linalg.Matrix {
	const sig = 64
	rng := rand.New(rand.NewPCG(seed, 99))
	x := linalg.NewMatrix(out, sig)
	y := linalg.NewMatrix(sig, in)
	var h float64
	for i := range sig {
		h += 1 / float64(i+1)
	}
	c := 1e-3 * math.Sqrt(float64(out)*float64(in)/h)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64() / math.Sqrt(float64(out)))
	}
	for j := range sig {
		s := c / math.Sqrt(float64(j+1))
		for k := range in {
			y.Data[j*in+k] = float32(s * rng.NormFloat64() / math.Sqrt(float64(in)))
		}
	}
	d := linalg.Mul(x, y)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	per := (out + workers - 1) / workers
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := w * per; i < min((w+1)*per, out); i++ {
				row := d.Row(i)
				for k := range row {
					base := numeric.BF16ToF32(numeric.F32ToBF16(float32(r.NormFloat64() * 0.02)))
					tuned := numeric.BF16ToF32(numeric.F32ToBF16(base + row[k] + float32(r.NormFloat64()*5e-4)))
					row[k] = tuned - base
				}
			}
		}()
	}
	wg.Wait()
	return d
}

func frob(a linalg.Matrix) float64 {
	var s float64
	for _, v := range a.Data {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s)
}

func runLora(dev *pjrtgpu.Device, rank int, dir, python, script string) (*loraBench, error) {
	lb := &loraBench{Rank: rank}
	fmt.Printf("== LoRA extraction, rank %d, one synthetic Qwen3-32B layer\n", rank)
	start := time.Now()
	deltas := make([]linalg.Matrix, len(qwen3Layer))
	for i, m := range qwen3Layer {
		deltas[i] = synthDelta(m.Out, m.In, uint64(i+1))
		lb.Modules = append(lb.Modules, loraModule{Name: m.Name, Out: m.Out, In: m.In})
	}
	fmt.Printf("  generated the deltas in %.1fs\n", time.Since(start).Seconds())
	if script != "" {
		start = time.Now()
		var paths []string
		for i, m := range qwen3Layer {
			p := filepath.Join(dir, "delta_"+m.Name+".npy")
			if err := writeNpy(p, deltas[i]); err != nil {
				return lb, err
			}
			paths = append(paths, p)
		}
		fmt.Printf("  wrote the deltas for torch in %.1fs; running %s\n", time.Since(start).Seconds(), script)
		out, err := exec.Command(python, append([]string{script, "--rank", fmt.Sprint(rank)}, paths...)...).Output()
		for _, p := range paths {
			_ = os.Remove(p)
		}
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
			}
			lb.TorchErr = err.Error()
			fmt.Println("  torch baseline failed:", err)
		} else {
			lb.Torch = json.RawMessage(out)
			var tr struct {
				Modules []struct {
					SVDSeconds float64 `json:"svd_s"`
					RelError   float64 `json:"rel_error"`
					Optimum    float64 `json:"opt_rel_error"`
				} `json:"modules"`
			}
			if err := json.Unmarshal(out, &tr); err != nil || len(tr.Modules) != len(lb.Modules) {
				lb.TorchErr = fmt.Sprintf("torch output: %v (%d modules)", err, len(tr.Modules))
			} else {
				for i, m := range tr.Modules {
					lb.Modules[i].TorchSeconds, lb.Modules[i].TorchError, lb.Modules[i].Optimum = m.SVDSeconds, m.RelError, m.Optimum
					lb.TorchLayerS += m.SVDSeconds
				}
			}
		}
	}
	// Warm-up: compiles every program of every shape once.
	dev.ResetStats()
	start = time.Now()
	for i := range deltas {
		if _, err := dev.TruncatedSVD(deltas[i], rank, pjrtgpu.SVDOptions{}); err != nil {
			return lb, fmt.Errorf("%s: %w", qwen3Layer[i].Name, err)
		}
	}
	st := dev.Stats()
	lb.CompileS = st.CompileTime.Seconds()
	fmt.Printf("  warm-up (compiles %d programs in %.1fs) took %.1fs\n", st.Compiles, st.CompileTime.Seconds(), time.Since(start).Seconds())
	dev.ResetStats()
	svds := make([]linalg.SVD, len(deltas))
	for i := range deltas {
		t0 := time.Now()
		d, err := dev.TruncatedSVD(deltas[i], rank, pjrtgpu.SVDOptions{})
		if err != nil {
			return lb, fmt.Errorf("%s: %w", qwen3Layer[i].Name, err)
		}
		d.Split(true) // mergekit's factors, as ops computes them
		lb.Modules[i].GPUSeconds = time.Since(t0).Seconds()
		lb.Modules[i].PowerIters = d.PowerIters
		lb.GPULayerS += lb.Modules[i].GPUSeconds
		svds[i] = d
	}
	lb.Stats = dev.Stats()
	for i := range deltas {
		res, err := svds[i].Residual(deltas[i])
		if err != nil {
			return lb, err
		}
		lb.Modules[i].GPUError = res / frob(deltas[i])
	}
	lb.GPUModelMin = lb.GPULayerS * qwen3Layers / 60
	lb.TorchModelMin = lb.TorchLayerS * qwen3Layers / 60
	return lb, nil
}

func printLora(lb *loraBench) {
	if lb == nil {
		return
	}
	fmt.Printf("  %-10s %-12s %9s %10s %6s %11s %10s %10s %9s\n", "module", "shape", "gpu s", "gpu err", "q", "torch svd s", "torch err", "optimum", "gpu/opt")
	for _, m := range lb.Modules {
		ratio := "-"
		if m.Optimum > 0 {
			ratio = fmt.Sprintf("%.5f", m.GPUError/m.Optimum)
		}
		fmt.Printf("  %-10s %-12s %9.3f %10.6f %6d %11.3f %10.6f %10.6f %9s\n", m.Name, fmt.Sprintf("%dx%d", m.Out, m.In),
			m.GPUSeconds, m.GPUError, m.PowerIters, m.TorchSeconds, m.TorchError, m.Optimum, ratio)
	}
	fmt.Printf("  layer: gpu %.2fs, torch %.2fs; 64 layers: gpu %.1f min, torch %.1f min", lb.GPULayerS, lb.TorchLayerS, lb.GPUModelMin, lb.TorchModelMin)
	if lb.GPULayerS > 0 && lb.TorchLayerS > 0 {
		fmt.Printf(" (%.1fx)", lb.TorchLayerS/lb.GPULayerS)
	}
	fmt.Println()
	s := lb.Stats
	fmt.Printf("  gpu time split (timed run): execute %.2fs in %d calls, upload %.2fs (%.1f GB/s), download %.2fs, host l×l algebra %.2fs, %d Cholesky-QR passes (%d shifted)\n",
		s.ExecuteTime.Seconds(), s.Executes, s.UploadTime.Seconds(), float64(s.UploadBytes)/max(s.UploadTime.Seconds(), 1e-9)/1e9,
		s.DownTime.Seconds(), s.HostTime.Seconds(), s.OrthoPasses, s.Shifted)
	if lb.TorchErr != "" {
		fmt.Println("  torch baseline:", lb.TorchErr)
	}
	fmt.Println()
}

// runDequant times FP8 block dequantization on device-resident data.
func runDequant(dev *pjrtgpu.Device, rep *report) []dequantBench {
	fmt.Println("== FP8 block dequant (BF16 scales → BF16), device-resident data")
	var res []dequantBench
	rng := rand.New(rand.NewPCG(5, 5))
	for _, shape := range dequantShapes {
		out, in := shape[0], shape[1]
		r, c := (out+127)/128, (in+127)/128
		codes := make([]byte, out*in)
		for i := range codes {
			codes[i] = byte(rng.Uint32()) &^ 0x40 // no NaN-heavy bytes; values of every sign and scale
		}
		scales := make([]byte, 2*r*c)
		for i := range r * c {
			binary.LittleEndian.PutUint16(scales[2*i:], numeric.F32ToBF16(float32(math.Exp(-8+4*rng.Float64()))))
		}
		mod := quant.Module{Prefix: "m", Scheme: quant.Scheme{Format: quant.FormatFP8, Type: quant.TypeFloat, Bits: 8, CodeDType: safetensors.F8E4M3,
			Strategy: quant.StrategyBlock, BlockSize: [2]int{128, 128}, Symmetric: true},
			Tensors: map[quant.Role]safetensors.TensorInfo{
				quant.RoleCodes: {Name: "m.weight", DType: safetensors.F8E4M3, Shape: []uint64{uint64(out), uint64(in)}, End: uint64(out * in)},
				quant.RoleScale: {Name: "m.weight_scale_inv", DType: safetensors.BF16, Shape: []uint64{uint64(r), uint64(c)}, End: uint64(2 * r * c)},
			}, Out: out, In: in}
		tensors := map[quant.Role][]byte{quant.RoleCodes: codes, quant.RoleScale: scales}
		b := dequantBench{Shape: fmt.Sprintf("%dx%d", out, in), BytesPerCall: int64(out*in*3 + 2*r*c), CPUThreads: runtime.GOMAXPROCS(0)}
		times, err := dev.MeasureDequantFP8(mod, tensors, safetensors.BF16, 20)
		if err != nil {
			rep.Failures = append(rep.Failures, "dequant bench: "+err.Error())
			continue
		}
		med := median(times)
		b.DeviceUS = med.Seconds() * 1e6
		b.GBs = float64(b.BytesPerCall) / med.Seconds() / 1e9
		rows := int(b.BytesPerCall / 2 / 4 / 1024) // read + write the same bytes
		if ct, err := dev.MeasureCopy(rows, 20); err == nil {
			b.CopyGBs = float64(rows*1024*4*2) / median(ct).Seconds() / 1e9
			b.Ratio = b.GBs / b.CopyGBs
		} else {
			rep.Failures = append(rep.Failures, "copy bench: "+err.Error())
		}
		dst := make([]byte, 2*out*in)
		if err := dev.Dequantize(dst, mod, tensors, safetensors.BF16); err == nil { // warm
			t0 := time.Now()
			if err := dev.Dequantize(dst, mod, tensors, safetensors.BF16); err == nil {
				b.EndToEndMS = time.Since(t0).Seconds() * 1e3
			}
		}
		t0 := time.Now()
		if err := quant.DequantizeInto(dst, mod, tensors, safetensors.BF16); err == nil {
			b.CPUMS = time.Since(t0).Seconds() * 1e3
		}
		res = append(res, b)
	}
	return res
}

func printDequant(res []dequantBench) {
	fmt.Printf("  %-11s %11s %10s %10s %7s %12s %10s\n", "shape", "device µs", "GB/s", "copy GB/s", "ratio", "end-to-end", "cpu")
	for _, b := range res {
		fmt.Printf("  %-11s %11.1f %10.0f %10.0f %6.0f%% %10.1fms %8.1fms (%d threads)\n", b.Shape, b.DeviceUS, b.GBs, b.CopyGBs, 100*b.Ratio, b.EndToEndMS, b.CPUMS, b.CPUThreads)
	}
	fmt.Println("  (GB/s counts codes read + scales read + BF16 written; copy reads and writes the same number of bytes; both include launch and sync)")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// writeNpy writes m as a version 1.0 .npy file (little-endian float32, C order).
func writeNpy(path string, m linalg.Matrix) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	header := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", m.Rows, m.Cols)
	pad := 64 - (10+len(header)+1)%64
	header += strings.Repeat(" ", pad%64) + "\n"
	var pre [10]byte
	copy(pre[:], "\x93NUMPY\x01\x00")
	binary.LittleEndian.PutUint16(pre[8:], uint16(len(header)))
	if _, err := w.Write(pre[:]); err != nil {
		f.Close()
		return err
	}
	if _, err := io.WriteString(w, header); err != nil {
		f.Close()
		return err
	}
	buf := make([]byte, 4*m.Cols)
	for i := range m.Rows {
		for j, v := range m.Row(i) {
			binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(v))
		}
		if _, err := w.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
