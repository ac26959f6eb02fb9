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
//  1. parity: FP8 block dequantization with the kernel the device chose
//     after its probes and with every kernel (pjrtgpu.DequantKernels:
//     f8-f64 and int must match everywhere; f8-f32 only where float32
//     subnormals are kept, which the report says), several modules in one
//     program, INT8 and packed 4-bit (W4A16) dequantization, the general
//     dequantization kernel (AWQ, FP8 per tensor/channel, E5M2, E8M0
//     scales, quanto, F16 output), fp8-block, int8 and w4a16
//     quantization, all bit for bit against codec/quant on random data and
//     edge cases (subnormal codes, scales and products, NaN, ±Inf, partial
//     blocks and words, ties, zero cells); the randomized SVD against the
//     exact optimum of small matrices (pjrtgpu.DequantCases,
//     IntDequantCases, GeneralDequantCases, QuantizeCases,
//     IntQuantizeCases, SVDCases); the LoRA merge and the analysis
//     reductions within their stated bounds (ReduceCases); the SVD twice
//     with one seed for identical bits;
//  2. LoRA extraction at -rank on one synthetic Qwen3-32B layer (q, k, v,
//     o, gate, up, down; BF16 base and a tuned copy differing by a rank-64
//     delta plus noise): the device's time per module (after a warm-up run
//     that compiles) and its relative error, next to torch.linalg.svd on
//     the same deltas (what mergekit does), timed on the same card by the
//     -torch script, which also gives the exact optimum (float64 singular
//     values); the layer time is extrapolated to 64 layers; where the time
//     went (execute, transfers, host eigenproblems and how long the device
//     waited for them, per program); k_proj again for identical bits;
//  3. dequantization to BF16 of device-resident q_proj and gate_proj
//     shapes: the launch-and-wait cost of an empty program; FP8 block 128
//     with the device's kernel and with each kernel, INT8 per channel,
//     W4A16 group 128 and AutoAWQ GEMM group 128, in GB/s against the
//     card's copy bandwidth measured the same way (target for FP8: ≥ 80 %),
//     with and without the launch cost; the end-to-end time with transfers
//     and the CPU's; one layer's seven FP8 modules in one program and in
//     seven;
//  4. quantization of a BF16 weight with every scheme (fp8-block, int8,
//     w4a16 symmetric and asymmetric), the LoRA merge W + s·B·A and the
//     low-rank cosine at rank 64 on the same shapes, end to end, against
//     the CPU kernels (bytes identical for quantize; merge and cosine
//     within their stated bounds).
//
// It prints one report and writes DIR/gpubench.json. The exit status is 1
// when a parity check, an error bound (1.01× the optimum, orthogonality
// 1e-4), a determinism check or a measurement fails, 2 when no device
// opens.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
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

// loraInFlight is how many modules the pipelined LoRA run decomposes at
// once.
const loraInFlight = 2

// dequantShapes are q_proj's and gate_proj's.
var dequantShapes = [][2]int{{8192, 5120}, {25600, 5120}}

type report struct {
	Device *pjrtgpu.Report `json:"device"`
	// FailedPrograms are the programs the plugin could not compile (their
	// callers fell back to a slower kernel or the CPU).
	FailedPrograms []string       `json:"failed_programs"`
	Parity         parity         `json:"parity"`
	Lora           *loraBench     `json:"lora,omitempty"`
	Dequant        *dequantReport `json:"dequant,omitempty"`
	Quantize       *quantReport   `json:"quantize,omitempty"`
	Failures       []string       `json:"failures"`
}

type parity struct {
	DequantCases, DequantOK int
	// DequantKernels counts, per kernel, the cases bit-identical to the
	// CPU; DequantChoices is the kernel each (scale, output) dtype pair
	// uses after the probes, and why faster ones were passed over.
	DequantKernels map[string]int
	DequantChoices map[string]string
	BatchOK        bool
	// PackCases and PackOK: every FP8 case with every exact kernel and the
	// device's choice again with BF16 outputs stored as u32 pairs
	// (Device.SetDequantPack), and a batch.
	PackCases, PackOK int
	IntCases, IntOK   int // INT8 and packed 4-bit
	// GeneralCases: AWQ GEMM, FP8 E4M3/E5M2 per tensor/channel/block,
	// E8M0 scales, quanto, packed 8/2-bit, F16 outputs
	// (pjrtgpu.GeneralDequantCases).
	GeneralCases, GeneralOK   int
	QuantizeCases, QuantizeOK int
	QuantizeRefused           int
	// IntQuantize*: int8 and w4a16 quantization (pjrtgpu.IntQuantizeCases).
	IntQuantizeCases, IntQuantizeOK int
	IntQuantizeRefused              int
	// ReduceCases: merge W + s·B·A, ‖X‖, cos(X, Y), cos(X, B·A) within
	// their stated bounds of the CPU's (pjrtgpu.ReduceCases).
	ReduceCases, ReduceOK int
	SVDCases, SVDOK       int
	SVDWorstRatio         float64
	SVDDeterministic      bool
	Details               []string
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
	// From -cpu: linalg.TruncatedSVD on the same delta and seed.
	CPUSeconds float64 `json:"cpu_s,omitempty"`
	CPUError   float64 `json:"cpu_rel_error,omitempty"`
	Optimum    float64 `json:"optimum_rel_error"`
}

type loraBench struct {
	Rank      int          `json:"rank"`
	Modules   []loraModule `json:"modules"`
	GPULayerS float64      `json:"gpu_layer_s"`
	// GPULayerPipelinedS is the wall time of the same layer with
	// loraInFlight modules decomposed at once (one module's host eigenwork
	// overlapping another's device work), in module order;
	// PipelinedIdentical says its factors were bit-identical to the
	// one-at-a-time run's.
	GPULayerPipelinedS   float64         `json:"gpu_layer_pipelined_s"`
	PipelinedIdentical   bool            `json:"pipelined_identical"`
	TorchLayerS          float64         `json:"torch_layer_s"`
	GPUModelMin          float64         `json:"gpu_64_layers_min"`
	GPUModelPipelinedMin float64         `json:"gpu_64_layers_pipelined_min"`
	TorchModelMin        float64         `json:"torch_64_layers_min"`
	CompileS             float64         `json:"warmup_compile_s"`
	Stats                pjrtgpu.Stats   `json:"timed_run_stats"`
	Deterministic        bool            `json:"deterministic"` // a second run of k_proj gave the same bits
	Torch                json.RawMessage `json:"torch,omitempty"`
	TorchErr             string          `json:"torch_error,omitempty"`
}

type dequantBench struct {
	Shape  string `json:"shape"`
	Kernel string `json:"kernel"` // "auto: f8-f32" for the device's choice
	// DeviceUS is the median wall time of one execution on device-resident
	// data, launch and wait included; NetUS subtracts the launch overhead.
	DeviceUS     float64 `json:"device_median_us"`
	NetUS        float64 `json:"net_us"`
	GBs          float64 `json:"device_gb_s"` // (codes + scales + BF16 out) / time
	CopyGBs      float64 `json:"copy_gb_s"`
	Ratio        float64 `json:"ratio"`     // GBs / CopyGBs
	NetRatio     float64 `json:"net_ratio"` // the same without the launch overhead in either
	EndToEndMS   float64 `json:"end_to_end_ms,omitempty"`
	CPUMS        float64 `json:"cpu_ms,omitempty"`
	CPUThreads   int     `json:"cpu_threads,omitempty"`
	BytesPerCall int64   `json:"bytes"`
	Error        string  `json:"error,omitempty"`
}

type dequantReport struct {
	LaunchUS float64        `json:"launch_us"` // median of an (almost) empty program
	Shapes   []dequantBench `json:"shapes"`
	// Batch: the seven FP8 modules of one Qwen3-32B layer in one program
	// and in seven, device-resident.
	BatchModules int     `json:"batch_modules"`
	BatchBytes   int64   `json:"batch_bytes"`
	BatchedUS    float64 `json:"batched_us"`
	// BatchedPackUS: the same storing BF16 as u32 pairs.
	BatchedPackUS float64 `json:"batched_pack_us"`
	SeparateUS    float64 `json:"separate_us"`
	BatchedGBs    float64 `json:"batched_gb_s"`
	BatchCopyGBs  float64 `json:"batch_copy_gb_s"`
	BatchError    string  `json:"batch_error,omitempty"`
}

func main() {
	plugin := flag.String("plugin", os.Getenv("HEFT_PJRT_PLUGIN"), "PJRT plugin (default: the search heft does)")
	outDir := flag.String("out", "gpubench-out", "directory for gpubench.json and the deltas handed to the torch script")
	rank := flag.Int("rank", 256, "LoRA rank")
	script := flag.String("torch", "", "torch baseline script (bench/gpu/gpubench.py); empty: no baseline")
	python := flag.String("python", "python3", "python interpreter for the torch script")
	skipLora := flag.Bool("skip-lora", false, "skip the LoRA extraction benchmark")
	cpuRef := flag.Bool("cpu", false, "also decompose every LoRA delta on the CPU (linalg.TruncatedSVD), and fail if the device's error exceeds 1.01x the CPU's (slow at full scale)")
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
		lb, err := runLora(dev, *rank, *outDir, *python, *script, *cpuRef)
		if err != nil {
			rep.Failures = append(rep.Failures, "lora: "+err.Error())
			fmt.Println("lora benchmark failed:", err)
		}
		for _, m := range lb.Modules {
			if m.Optimum > 0 && m.GPUError > 1.01*m.Optimum {
				rep.Failures = append(rep.Failures, fmt.Sprintf("lora %s: relative error %.6f is %.4fx the optimum %.6f (limit 1.01x)", m.Name, m.GPUError, m.GPUError/m.Optimum, m.Optimum))
			}
			if m.CPUError > 0 && m.GPUError > 1.01*m.CPUError {
				rep.Failures = append(rep.Failures, fmt.Sprintf("lora %s: relative error %.6f is %.4fx the CPU's %.6f (limit 1.01x)", m.Name, m.GPUError, m.GPUError/m.CPUError, m.CPUError))
			}
		}
		if !lb.Deterministic && err == nil {
			rep.Failures = append(rep.Failures, "lora: two extractions of k_proj with one seed differ")
		}
		if !lb.PipelinedIdentical && err == nil {
			rep.Failures = append(rep.Failures, fmt.Sprintf("lora: the layer with %d modules in flight differs from one at a time", loraInFlight))
		}
		rep.Lora = lb
		printLora(lb)
	}
	rep.Dequant = runDequant(dev, rep)
	rep.Quantize = runQuantize(dev, rep)
	printDequant(rep.Dequant)
	printQuantize(rep.Quantize)
	rep.Parity.DequantChoices = dev.DequantChoices()
	rep.FailedPrograms = dev.FailedPrograms()
	if len(rep.FailedPrograms) > 0 {
		fmt.Printf("\nprograms the plugin could not compile (fallbacks used):\n  %s\n", strings.Join(rep.FailedPrograms, "\n  "))
	}
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
	// dequant checks cases with the device's choice of kernel, after its
	// probes, counting them in *n and those that match (which must be all)
	// in *ok.
	dequant := func(cases []pjrtgpu.DequantCase, n, ok *int) {
		for _, c := range cases {
			*n++
			bad, first, err := pjrtgpu.CheckDequant(dev, c)
			switch {
			case err != nil:
				fail("dequant %s: %v", c.Name, err)
			case bad > 0:
				fail("dequant %s: %d elements differ, first %s", c.Name, bad, first)
			default:
				*ok++
			}
		}
	}
	dequant(pjrtgpu.DequantCases(1), &p.DequantCases, &p.DequantOK)
	p.DequantChoices = dev.DequantChoices()
	// Every kernel on every case: f8-f64 and int are exact on any IEEE
	// device, flush-to-zero or not, so a mismatch is a bug; f8-f32 needs
	// float32 subnormals, and its mismatches only say this device flushes
	// them (its probe then keeps it out of use).
	p.DequantKernels = map[string]int{}
	for _, k := range pjrtgpu.DequantKernels {
		for _, c := range pjrtgpu.DequantCases(1) {
			bad, first, err := pjrtgpu.CheckDequantKernel(dev, c, k)
			switch {
			case errors.Is(err, pjrtgpu.ErrUnsupported) && k != pjrtgpu.DequantInt:
				// A faster kernel this plugin cannot compile: unavailable,
				// not wrong (the device's choice skips it).
				p.Details = append(p.Details, fmt.Sprintf("dequant kernel %s unavailable on this device, %s: %v", k, c.Name, err))
			case err != nil:
				fail("dequant kernel %s, %s: %v", k, c.Name, err)
			case bad > 0 && k != pjrtgpu.DequantF32:
				fail("dequant kernel %s, %s: %d elements differ, first %s", k, c.Name, bad, first)
			case bad > 0:
				p.Details = append(p.Details, fmt.Sprintf("dequant kernel %s (not exact on this device), %s: %d elements differ, first %s", k, c.Name, bad, first))
			default:
				p.DequantKernels[k]++
			}
		}
	}
	// The same with BF16 outputs stored as u32 pairs.
	dev.SetDequantPack(true)
	for _, k := range append([]string{""}, pjrtgpu.DequantKernels...) {
		if k == pjrtgpu.DequantF32 && p.DequantKernels[k] < p.DequantCases {
			continue // not exact here, unpacked either
		}
		for _, c := range pjrtgpu.DequantCases(1) {
			var bad int
			var first string
			var err error
			if k == "" {
				bad, first, err = pjrtgpu.CheckDequant(dev, c)
			} else {
				bad, first, err = pjrtgpu.CheckDequantKernel(dev, c, k)
			}
			p.PackCases++
			switch {
			case errors.Is(err, pjrtgpu.ErrUnsupported) && k != "" && k != pjrtgpu.DequantInt:
				p.PackCases-- // unavailable, as above
			case err != nil:
				fail("dequant packed, kernel %q, %s: %v", k, c.Name, err)
			case bad > 0:
				fail("dequant packed, kernel %q, %s: %d elements differ, first %s", k, c.Name, bad, first)
			default:
				p.PackOK++
			}
		}
	}
	dev.SetDequantPack(false)
	// INT8 and packed 4-bit (W4A16), then the general kernel (AWQ, FP8 per
	// tensor/channel, quanto, …).
	dequant(pjrtgpu.IntDequantCases(1), &p.IntCases, &p.IntOK)
	dequant(pjrtgpu.GeneralDequantCases(1), &p.GeneralCases, &p.GeneralOK)
	// Several modules in one program.
	cases := pjrtgpu.DequantCases(3)
	var items []pjrtgpu.DequantItem
	for _, c := range cases {
		items = append(items, pjrtgpu.DequantItem{Dst: make([]byte, c.Module.Out*c.Module.In*c.DType.BitSize()/8), Module: c.Module, Tensors: c.Tensors, DType: c.DType})
	}
	if err := dev.DequantizeBatch(items); err != nil {
		fail("dequant batch of %d: %v", len(items), err)
	} else {
		p.BatchOK = true
		for i, c := range cases {
			bad, first, err := pjrtgpu.CompareDequant(c, items[i].Dst)
			if err != nil || bad > 0 {
				fail("dequant batch item %d (%s): %d elements differ (first %s) %v", i, c.Name, bad, first, err)
				p.BatchOK = false
			}
		}
	}
	// The batch again with packed BF16 outputs.
	dev.SetDequantPack(true)
	for i := range items {
		clear(items[i].Dst)
	}
	p.PackCases++
	if err := dev.DequantizeBatch(items); err != nil {
		fail("dequant batch of %d, packed: %v", len(items), err)
	} else {
		ok := true
		for i, c := range cases {
			bad, first, err := pjrtgpu.CompareDequant(c, items[i].Dst)
			if err != nil || bad > 0 {
				fail("dequant batch item %d (%s), packed: %d elements differ (first %s) %v", i, c.Name, bad, first, err)
				ok = false
			}
		}
		if ok {
			p.PackOK++
		}
	}
	dev.SetDequantPack(false)
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
	for _, c := range pjrtgpu.IntQuantizeCases(1) {
		p.IntQuantizeCases++
		refused, err := pjrtgpu.CheckQuantize(dev, c)
		if err != nil {
			fail("quantize %s: %v", c.Name, err)
			continue
		}
		p.IntQuantizeOK++
		if refused {
			p.IntQuantizeRefused++
		}
	}
	if p.IntQuantizeRefused != pjrtgpu.IntQuantizeRefused {
		fail("int quantize: %d cases refused, want %d", p.IntQuantizeRefused, pjrtgpu.IntQuantizeRefused)
	}
	for _, c := range pjrtgpu.ReduceCases(1) {
		p.ReduceCases++
		bad, err := pjrtgpu.CheckReduce(dev, c)
		switch {
		case err != nil:
			fail("merge/reduce %s: %v", c.Name, err)
		case len(bad) > 0:
			fail("merge/reduce %s: %s", c.Name, strings.Join(bad, "; "))
		default:
			p.ReduceOK++
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
	// Same seed, same bits.
	c := pjrtgpu.SVDCases(7)[4] // σ_i = i^-0.3: four power iterations
	a, err1 := dev.TruncatedSVD(c.A, c.Rank, c.Opts)
	b, err2 := dev.TruncatedSVD(c.A, c.Rank, c.Opts)
	if err := errors.Join(err1, err2); err != nil {
		fail("svd determinism: %v", err)
	} else if !sameSVD(a, b) {
		fail("svd determinism: two decompositions of %s with one seed differ", c.Name)
	} else {
		p.SVDDeterministic = true
	}
}

func sameSVD(a, b linalg.SVD) bool {
	return slices.Equal(a.S, b.S) && slices.Equal(f32bits(a.U.Data), f32bits(b.U.Data)) && slices.Equal(f32bits(a.Vt.Data), f32bits(b.Vt.Data))
}

func f32bits(x []float32) []uint32 {
	out := make([]uint32, len(x))
	for i, v := range x {
		out[i] = math.Float32bits(v)
	}
	return out
}

func printParity(rep *report) {
	p := rep.Parity
	fmt.Println("== parity: device vs CPU kernels")
	fmt.Printf("  fp8 block dequant   %d/%d cases bit-identical with the device's kernels (every code, NaN, ±448, subnormal codes, scales and products, partial blocks, BF16/F16/F32 scales, BF16/F32 out)\n", p.DequantOK, p.DequantCases)
	for _, k := range pjrtgpu.DequantKernels {
		note := ""
		if k == pjrtgpu.DequantF32 {
			note = " (exact only without flush-to-zero of float32 subnormals)"
		}
		fmt.Printf("    kernel %-7s %d/%d cases bit-identical%s\n", k, p.DequantKernels[k], p.DequantCases, note)
	}
	for _, k := range slices.Sorted(maps.Keys(p.DequantChoices)) {
		fmt.Printf("    %s scales→output: %s\n", k, p.DequantChoices[k])
	}
	fmt.Printf("  fp8 dequant batch   all items of one program bit-identical: %v\n", p.BatchOK)
	fmt.Printf("  fp8 dequant packed  BF16 stored as u32 pairs (every exact kernel, the choice, a batch): %d/%d bit-identical\n", p.PackOK, p.PackCases)
	fmt.Printf("  int8 / w4a16        %d/%d cases bit-identical (every INT8 code, 4-bit codes with partial words, zero points packed along out, edge-case scales, BF16/F16/F32 scales, BF16/F32 out)\n", p.IntOK, p.IntCases)
	fmt.Printf("  general dequant     %d/%d cases bit-identical (AWQ GEMM with/without qzeros, FP8 E4M3/E5M2 per tensor/channel/block, every code vs edge scales, E8M0 scales, quanto qint8/qfloat8, packed 8/2-bit, act-order g_idx, F16 out of every kind)\n", p.GeneralOK, p.GeneralCases)
	fmt.Printf("  fp8 block quantize  %d/%d cases bit-identical (%d refused by both: NaN, -Inf, scale overflow)\n", p.QuantizeOK, p.QuantizeCases, p.QuantizeRefused)
	fmt.Printf("  int8/w4a16 quantize %d/%d cases bit-identical: codes, scales, packed zero points (%d refused by both: NaN, +Inf, near-max values, scale overflow, group not dividing in)\n", p.IntQuantizeOK, p.IntQuantizeCases, p.IntQuantizeRefused)
	fmt.Printf("  merge, reductions   %d/%d cases within the stated bounds (W + s·B·A per element, ‖X‖, cos(X, Y), cos(X, B·A); NaN, ±Inf, subnormal and huge values, zero and parallel vectors)\n", p.ReduceOK, p.ReduceCases)
	fmt.Printf("  randomized SVD      %d/%d cases within 1.01x of the optimum (worst %.5fx); same seed, same bits: %v\n", p.SVDOK, p.SVDCases, p.SVDWorstRatio, p.SVDDeterministic)
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

func runLora(dev *pjrtgpu.Device, rank int, dir, python, script string, cpuRef bool) (*loraBench, error) {
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
	// The same layer with loraInFlight modules at once: workers take the
	// modules in order; every factor must match the run above bit for bit.
	piped := make([]linalg.SVD, len(deltas))
	pipedErr := make([]error, len(deltas))
	next := make(chan int, len(deltas))
	for i := range deltas {
		next <- i
	}
	close(next)
	t0 := time.Now()
	var wg sync.WaitGroup
	for range loraInFlight {
		wg.Go(func() {
			for i := range next {
				d, err := dev.TruncatedSVD(deltas[i], rank, pjrtgpu.SVDOptions{})
				if err == nil {
					d.Split(true)
				}
				piped[i], pipedErr[i] = d, err
			}
		})
	}
	wg.Wait()
	lb.GPULayerPipelinedS = time.Since(t0).Seconds()
	lb.PipelinedIdentical = true
	for i := range deltas {
		if pipedErr[i] != nil {
			return lb, fmt.Errorf("%s, %d in flight: %w", qwen3Layer[i].Name, loraInFlight, pipedErr[i])
		}
		lb.PipelinedIdentical = lb.PipelinedIdentical && sameSVD(piped[i], svds[i])
	}
	// Same seed, same bits: the smallest module again.
	again, err := dev.TruncatedSVD(deltas[1], rank, pjrtgpu.SVDOptions{})
	if err != nil {
		return lb, fmt.Errorf("%s again: %w", qwen3Layer[1].Name, err)
	}
	again.Split(true)
	lb.Deterministic = sameSVD(again, svds[1])
	for i := range deltas {
		res, err := svds[i].Residual(deltas[i])
		if err != nil {
			return lb, err
		}
		lb.Modules[i].GPUError = res / frob(deltas[i])
		if cpuRef {
			t0 := time.Now()
			c, err := linalg.TruncatedSVD(deltas[i], rank, linalg.SVDOptions{})
			if err != nil {
				return lb, fmt.Errorf("%s on the CPU: %w", qwen3Layer[i].Name, err)
			}
			lb.Modules[i].CPUSeconds = time.Since(t0).Seconds()
			cres, err := c.Residual(deltas[i])
			if err != nil {
				return lb, err
			}
			lb.Modules[i].CPUError = cres / frob(deltas[i])
		}
	}
	lb.GPUModelMin = lb.GPULayerS * qwen3Layers / 60
	lb.GPUModelPipelinedMin = lb.GPULayerPipelinedS * qwen3Layers / 60
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
		fmt.Printf("  %-10s %-12s %9.3f %10.6f %6d %11.3f %10.6f %10.6f %9s", m.Name, fmt.Sprintf("%dx%d", m.Out, m.In),
			m.GPUSeconds, m.GPUError, m.PowerIters, m.TorchSeconds, m.TorchError, m.Optimum, ratio)
		if m.CPUError > 0 {
			fmt.Printf("   cpu %.3fs err %.6f (gpu/cpu %.5f)", m.CPUSeconds, m.CPUError, m.GPUError/m.CPUError)
		}
		fmt.Println()
	}
	fmt.Printf("  layer: gpu %.2fs, torch %.2fs; 64 layers: gpu %.1f min, torch %.1f min", lb.GPULayerS, lb.TorchLayerS, lb.GPUModelMin, lb.TorchModelMin)
	if lb.GPULayerS > 0 && lb.TorchLayerS > 0 {
		fmt.Printf(" (%.1fx)", lb.TorchLayerS/lb.GPULayerS)
	}
	fmt.Println()
	fmt.Printf("  layer with %d modules in flight: gpu %.2fs (64 layers %.1f min)", loraInFlight, lb.GPULayerPipelinedS, lb.GPUModelPipelinedMin)
	if lb.GPULayerPipelinedS > 0 && lb.TorchLayerS > 0 {
		fmt.Printf(" (%.1fx)", lb.TorchLayerS/lb.GPULayerPipelinedS)
	}
	fmt.Printf("; factors bit-identical to one at a time: %v\n", lb.PipelinedIdentical)
	s := lb.Stats
	fmt.Printf("  gpu time split (timed run): execute %.2fs in %d calls, upload %.2fs (%.1f GB/s), download %.2fs, host l×l algebra %.2fs (of which the device waited %.2fs), %d power iterations, %d stopping-rule checks (%d cancelled), %d speculative iterations discarded, %d self-check fallbacks\n",
		s.ExecuteTime.Seconds(), s.Executes, s.UploadTime.Seconds(), float64(s.UploadBytes)/max(s.UploadTime.Seconds(), 1e-9)/1e9,
		s.DownTime.Seconds(), s.HostTime.Seconds(), s.HostWait.Seconds(), s.PowerIters, s.Checks, s.ChecksCancelled, s.Speculative, s.SelfCheckFailures)
	fmt.Printf("  device programs:")
	for _, name := range slices.Sorted(maps.Keys(s.Programs)) {
		ps := s.Programs[name]
		fmt.Printf(" %s %d× %.1f ms;", name, ps.Executes, ps.Time.Seconds()*1e3/float64(max(ps.Executes, 1)))
	}
	fmt.Printf("\n  k_proj again with the same seed: bit-identical %v\n", lb.Deterministic)
	if lb.TorchErr != "" {
		fmt.Println("  torch baseline:", lb.TorchErr)
	}
	fmt.Println()
}

// runDequant times FP8 block dequantization on device-resident data.
// fp8BlockModule describes an FP8 block-128 module with BF16 scales and
// returns it with random codes (no NaNs; every sign and magnitude) and
// scales.
func fp8BlockModule(name string, out, in int, rng *rand.Rand) (quant.Module, map[quant.Role][]byte) {
	r, c := (out+127)/128, (in+127)/128
	codes := make([]byte, out*in)
	for i := range codes {
		codes[i] = byte(rng.Uint32()) &^ 0x40
	}
	scales := make([]byte, 2*r*c)
	for i := range r * c {
		binary.LittleEndian.PutUint16(scales[2*i:], numeric.F32ToBF16(float32(math.Exp(-8+4*rng.Float64()))))
	}
	mod := quant.Module{Prefix: name, Scheme: quant.Scheme{Format: quant.FormatFP8, Type: quant.TypeFloat, Bits: 8, CodeDType: safetensors.F8E4M3,
		Strategy: quant.StrategyBlock, BlockSize: [2]int{128, 128}, Symmetric: true},
		Tensors: map[quant.Role]safetensors.TensorInfo{
			quant.RoleCodes: {Name: name + ".weight", DType: safetensors.F8E4M3, Shape: []uint64{uint64(out), uint64(in)}, End: uint64(out * in)},
			quant.RoleScale: {Name: name + ".weight_scale_inv", DType: safetensors.BF16, Shape: []uint64{uint64(r), uint64(c)}, End: uint64(2 * r * c)},
		}, Out: out, In: in}
	return mod, map[quant.Role][]byte{quant.RoleCodes: codes, quant.RoleScale: scales}
}

// intBenchModule returns an INT8 per-channel (packed false) or packed
// 4-bit per-group module with random codes, BF16 scales, symmetric.
func intBenchModule(packed bool, out, in, group int, rng *rand.Rand) (quant.Module, map[quant.Role][]byte) {
	s := quant.Scheme{Type: quant.TypeInt, Strategy: quant.StrategyChannel, Symmetric: true}
	cols := 1
	if group > 0 {
		s.Strategy, s.GroupSize, cols = quant.StrategyGroup, group, (in+group-1)/group
	}
	ti := func(name string, dt safetensors.DType, shape ...uint64) safetensors.TensorInfo {
		n, _ := dt.ByteLen(shape)
		return safetensors.TensorInfo{Name: "m." + name, DType: dt, Shape: shape, End: n}
	}
	t := map[quant.Role]safetensors.TensorInfo{quant.RoleScale: ti("weight_scale", safetensors.BF16, uint64(out), uint64(cols))}
	data := map[quant.Role][]byte{}
	if packed {
		s.Format, s.Bits, s.CodeDType = quant.FormatCTPacked, 4, safetensors.I32
		words := (in + 7) / 8
		t[quant.RoleCodes] = ti("weight_packed", safetensors.I32, uint64(out), uint64(words))
		t[quant.RoleShape] = ti("weight_shape", safetensors.I64, 2)
		codes := make([]byte, 4*out*words)
		for i := range codes {
			codes[i] = byte(rng.Uint32())
		}
		data[quant.RoleCodes] = codes
		shape := make([]byte, 16)
		binary.LittleEndian.PutUint64(shape, uint64(out))
		binary.LittleEndian.PutUint64(shape[8:], uint64(in))
		data[quant.RoleShape] = shape
	} else {
		s.Format, s.Bits, s.CodeDType = quant.FormatCTInt, 8, safetensors.I8
		t[quant.RoleCodes] = ti("weight", safetensors.I8, uint64(out), uint64(in))
		codes := make([]byte, out*in)
		for i := range codes {
			codes[i] = byte(rng.Uint32())
		}
		data[quant.RoleCodes] = codes
	}
	scales := make([]byte, 2*out*cols)
	for i := range out * cols {
		binary.LittleEndian.PutUint16(scales[2*i:], numeric.F32ToBF16(float32(math.Exp(-8+4*rng.Float64()))))
	}
	data[quant.RoleScale] = scales
	return quant.Module{Prefix: "m", Scheme: s, Tensors: t, Out: out, In: in}, data
}

// awqBenchModule returns an AutoAWQ GEMM module (qweight [in, out/8],
// F16 scales [in/group, out], qzeros) with random codes.
func awqBenchModule(out, in, group int, rng *rand.Rand) (quant.Module, map[quant.Role][]byte) {
	groups := in / group
	ti := func(name string, dt safetensors.DType, shape ...uint64) safetensors.TensorInfo {
		n, _ := dt.ByteLen(shape)
		return safetensors.TensorInfo{Name: "m." + name, DType: dt, Shape: shape, End: n}
	}
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	scales := make([]byte, 2*groups*out)
	for i := range groups * out {
		binary.LittleEndian.PutUint16(scales[2*i:], numeric.F32ToF16(float32(math.Exp(-8+4*rng.Float64()))))
	}
	mod := quant.Module{Prefix: "m", Out: out, In: in,
		Scheme: quant.Scheme{Format: quant.FormatAWQ, Type: quant.TypeInt, Bits: 4, CodeDType: safetensors.I32, Strategy: quant.StrategyGroup, GroupSize: group},
		Tensors: map[quant.Role]safetensors.TensorInfo{
			quant.RoleCodes:     ti("qweight", safetensors.I32, uint64(in), uint64(out/8)),
			quant.RoleScale:     ti("scales", safetensors.F16, uint64(groups), uint64(out)),
			quant.RoleZeroPoint: ti("qzeros", safetensors.I32, uint64(groups), uint64(out/8)),
		}}
	return mod, map[quant.Role][]byte{quant.RoleCodes: rnd(in * out / 2), quant.RoleScale: scales, quant.RoleZeroPoint: rnd(groups * out / 2)}
}

// quantReport times quantization, the LoRA merge and the low-rank cosine
// end to end (upload, device, download) against the CPU kernels.
type quantReport struct {
	Rows []quantBench `json:"rows"`
}

type quantBench struct {
	Op    string  `json:"op"` // "quantize fp8-block", "merge r64", …
	Shape string  `json:"shape"`
	GPUMS float64 `json:"gpu_ms"` // end to end, median
	CPUMS float64 `json:"cpu_ms"`
	// Identical: the device's output is the CPU's byte for byte (quantize);
	// for the merge and the cosine, Note gives the largest difference
	// relative to its stated bound.
	Identical bool   `json:"identical"`
	Note      string `json:"note,omitempty"`
	Error     string `json:"error,omitempty"`
}

// runQuantize times every quantize scheme, the merge and the low-rank
// cosine on the dequant shapes.
func runQuantize(dev *pjrtgpu.Device, rep *report) *quantReport {
	const reps = 5
	qr := &quantReport{}
	rng := rand.New(rand.NewPCG(6, 6))
	timeIt := func(f func() error) (float64, error) {
		if err := f(); err != nil { // warm up (compile)
			return 0, err
		}
		var ts []time.Duration
		for range reps {
			t0 := time.Now()
			if err := f(); err != nil {
				return 0, err
			}
			ts = append(ts, time.Since(t0))
		}
		return median(ts).Seconds() * 1e3, nil
	}
	for _, shape := range dequantShapes {
		out, in := shape[0], shape[1]
		data := make([]byte, 2*out*in)
		for i := range out * in {
			binary.LittleEndian.PutUint16(data[2*i:], numeric.F32ToBF16(float32(rng.NormFloat64()*0.02)))
		}
		w := safetensors.TensorInfo{Name: "m.weight", DType: safetensors.BF16, Shape: []uint64{uint64(out), uint64(in)}, End: uint64(len(data))}
		for _, qs := range []quant.QuantizeScheme{{Name: quant.QuantFP8Block}, {Name: quant.QuantInt8}, {Name: quant.QuantW4A16}, {Name: quant.QuantW4A16, Asymmetric: true}} {
			b := quantBench{Op: "quantize " + qs.String(), Shape: fmt.Sprintf("%dx%d", out, in)}
			var got, want []quant.QuantizedTensor
			var err error
			b.GPUMS, err = timeIt(func() (e error) { got, e = dev.QuantizeWeight(qs, w, data); return e })
			if err == nil {
				b.CPUMS, err = timeIt(func() (e error) { want, e = quant.QuantizeWeight(qs, w, data); return e })
			}
			if err != nil {
				b.Error = err.Error()
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s: %v", b.Op, b.Shape, err))
			} else {
				b.Identical = len(got) == len(want)
				for i := range want {
					b.Identical = b.Identical && i < len(got) && bytes.Equal(got[i].Data, want[i].Data)
				}
				if !b.Identical {
					rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s: the device's tensors differ from the CPU's", b.Op, b.Shape))
				}
			}
			qr.Rows = append(qr.Rows, b)
		}
		// The merge W + s·B·A and cos(X, B·A) at rank 64.
		const r = 64
		mk := func(m, n int, sigma float64) linalg.Matrix {
			a := linalg.NewMatrix(m, n)
			for i := range a.Data {
				a.Data[i] = float32(rng.NormFloat64() * sigma)
			}
			return a
		}
		wm, bm, am := mk(out, in, 0.02), mk(out, r, 0.01), mk(r, in, 0.05)
		got, want := linalg.NewMatrix(out, in), linalg.NewMatrix(out, in)
		b := quantBench{Op: fmt.Sprintf("merge r%d", r), Shape: fmt.Sprintf("%dx%d", out, in)}
		var err error
		b.GPUMS, err = timeIt(func() error { return dev.Merge(got, wm, bm, am, 2) })
		if err == nil {
			b.CPUMS, err = timeIt(func() error { return linalg.Merge(want, wm, bm, am, 2) })
		}
		if err != nil {
			b.Error = err.Error()
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s: %v", b.Op, b.Shape, err))
		} else {
			abs := linalg.Mul(absM(bm), absM(am))
			worst, same := 0.0, 0
			for i, v := range want.Data {
				if got.Data[i] == v {
					same++
					continue
				}
				tol := pjrtgpu.MergeTolerance(2, float64(abs.Data[i]), r, got.Data[i], v)
				worst = max(worst, math.Abs(float64(got.Data[i])-float64(v))/tol)
			}
			b.Identical = same == len(want.Data)
			b.Note = fmt.Sprintf("%.1f%% of float32 elements identical, worst difference %.3g of the bound", 100*float64(same)/float64(len(want.Data)), worst)
			if worst > 1 {
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s: a difference exceeds the bound (%.3g×)", b.Op, b.Shape, worst))
			}
		}
		qr.Rows = append(qr.Rows, b)
		x := mk(out, in, 1)
		b = quantBench{Op: fmt.Sprintf("cos(X, B·A) r%d", r), Shape: fmt.Sprintf("%dx%d", out, in)}
		var dc, cc float64
		b.GPUMS, err = timeIt(func() (e error) { dc, e = dev.CosineLowRank(x, bm, am); return e })
		if err == nil {
			b.CPUMS, err = timeIt(func() (e error) { cc, e = linalg.Cosine(x, linalg.Mul(bm, am)); return e })
		}
		if err != nil {
			b.Error = err.Error()
			rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s: %v", b.Op, b.Shape, err))
		} else {
			tol := pjrtgpu.CosineLowRankTolerance(bm, am)
			b.Identical = dc == cc
			b.Note = fmt.Sprintf("device %.9g, cpu %.9g, difference %.3g of the bound", dc, cc, math.Abs(dc-cc)/tol)
			if math.Abs(dc-cc) > tol {
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s %s: %s", b.Op, b.Shape, b.Note))
			}
		}
		qr.Rows = append(qr.Rows, b)
	}
	return qr
}

func absM(a linalg.Matrix) linalg.Matrix {
	b := linalg.NewMatrix(a.Rows, a.Cols)
	for i, v := range a.Data {
		b.Data[i] = float32(math.Abs(float64(v)))
	}
	return b
}

func printQuantize(qr *quantReport) {
	if qr == nil {
		return
	}
	fmt.Println("== quantize (BF16 weight), merge and low-rank cosine, end to end with transfers, against the CPU kernels")
	fmt.Printf("  %-58s %-11s %10s %10s %9s  %s\n", "op", "shape", "gpu ms", "cpu ms", "identical", "note")
	for _, b := range qr.Rows {
		if b.Error != "" {
			fmt.Printf("  %-58s %-11s failed: %s\n", b.Op, b.Shape, b.Error)
			continue
		}
		fmt.Printf("  %-58s %-11s %10.1f %10.1f %9v  %s\n", b.Op, b.Shape, b.GPUMS, b.CPUMS, b.Identical, b.Note)
	}
	fmt.Println()
}

// runDequant times FP8 block dequantization on device-resident data: the
// launch overhead, a copy of the same bytes, every kernel, one layer's
// modules batched.
func runDequant(dev *pjrtgpu.Device, rep *report) *dequantReport {
	const reps = 30
	dr := &dequantReport{}
	if lt, err := dev.MeasureLaunch(reps); err == nil {
		dr.LaunchUS = median(lt).Seconds() * 1e6
	} else {
		rep.Failures = append(rep.Failures, "launch bench: "+err.Error())
	}
	launch := dr.LaunchUS / 1e6
	rng := rand.New(rand.NewPCG(5, 5))
	copyGBs := func(bytes int64) (gbs, netGBs float64, err error) {
		rows := int(bytes / 2 / 4 / 1024) // read + write the same bytes
		ct, err := dev.MeasureCopy(rows, reps)
		if err != nil {
			return 0, 0, err
		}
		t := median(ct).Seconds()
		b := float64(rows * 1024 * 4 * 2)
		return b / t / 1e9, b / max(t-launch, 1e-9) / 1e9, nil
	}
	// rates sets b's times and rates from the median of times (b's
	// BytesPerCall moved per call; cg and cgNet the copy's GB/s, 0 if unknown).
	rates := func(b *dequantBench, times []time.Duration, cg, cgNet float64) {
		med := median(times).Seconds()
		b.DeviceUS, b.NetUS = med*1e6, max(med-launch, 0)*1e6
		b.GBs = float64(b.BytesPerCall) / med / 1e9
		if cg > 0 {
			b.Ratio = b.GBs / cg
			b.NetRatio = float64(b.BytesPerCall) / max(med-launch, 1e-9) / 1e9 / cgNet
		}
	}
	// endToEnd times one dequantization of the module to BF16 with its
	// transfers on the device (after a warm-up) and one on the CPU.
	endToEnd := func(b *dequantBench, mod quant.Module, tensors map[quant.Role][]byte) {
		dst := make([]byte, 2*mod.Out*mod.In)
		if err := dev.Dequantize(dst, mod, tensors, safetensors.BF16); err == nil { // warm
			t0 := time.Now()
			if err := dev.Dequantize(dst, mod, tensors, safetensors.BF16); err == nil {
				b.EndToEndMS = time.Since(t0).Seconds() * 1e3
			}
		}
		t0 := time.Now()
		if err := quant.DequantizeInto(dst, mod, tensors, safetensors.BF16); err == nil {
			b.CPUMS = time.Since(t0).Seconds() * 1e3
			b.CPUThreads = runtime.GOMAXPROCS(0)
		}
	}
	for _, shape := range dequantShapes {
		out, in := shape[0], shape[1]
		mod, tensors := fp8BlockModule("m", out, in, rng)
		r, c := (out+127)/128, (in+127)/128
		bytesPerCall := int64(out*in*3 + 2*r*c)
		cg, cgNet, err := copyGBs(bytesPerCall)
		if err != nil {
			rep.Failures = append(rep.Failures, "copy bench: "+err.Error())
		}
		for _, k := range append([]string{"", "+pack"}, pjrtgpu.DequantKernels...) {
			b := dequantBench{Shape: fmt.Sprintf("%dx%d", out, in), Kernel: k, BytesPerCall: bytesPerCall, CopyGBs: cg}
			switch {
			case k == "" || k == "+pack":
				b.Kernel = "auto: " + strings.Split(dev.DequantChoices()["BF16→BF16"], " ")[0] + k
			case rep.Parity.DequantKernels[k] < rep.Parity.DequantCases:
				b.Kernel += " (inexact)"
			}
			// +pack: the device's kernel storing u32 pairs (parity checked
			// the same bytes).
			dev.SetDequantPack(k == "+pack")
			times, err := dev.MeasureDequantFP8(mod, tensors, safetensors.BF16, strings.TrimPrefix(k, "+pack"), reps)
			dev.SetDequantPack(false)
			if err != nil {
				b.Error = err.Error()
				if !errors.Is(err, pjrtgpu.ErrUnsupported) || k == "" || k == pjrtgpu.DequantInt {
					rep.Failures = append(rep.Failures, fmt.Sprintf("dequant bench %s %s: %v", b.Shape, b.Kernel, err))
				}
				dr.Shapes = append(dr.Shapes, b)
				continue
			}
			rates(&b, times, cg, cgNet)
			if k == "" {
				endToEnd(&b, mod, tensors)
			}
			dr.Shapes = append(dr.Shapes, b)
		}
	}
	// INT8 per channel, W4A16 (4-bit, group 128) and AutoAWQ GEMM (group
	// 128, qzeros, F16 scales; the general kernel) on the same shapes.
	for _, shape := range dequantShapes {
		out, in := shape[0], shape[1]
		for _, ic := range []struct {
			name  string
			build func() (quant.Module, map[quant.Role][]byte)
		}{
			{"int8 channel", func() (quant.Module, map[quant.Role][]byte) { return intBenchModule(false, out, in, 0, rng) }},
			{"w4a16 g128", func() (quant.Module, map[quant.Role][]byte) { return intBenchModule(true, out, in, 128, rng) }},
			{"awq gemm g128", func() (quant.Module, map[quant.Role][]byte) { return awqBenchModule(out, in, 128, rng) }},
		} {
			mod, tensors := ic.build()
			var bytesPerCall int64
			for _, t := range tensors {
				bytesPerCall += int64(len(t))
			}
			bytesPerCall += int64(2 * out * in)
			b := dequantBench{Shape: fmt.Sprintf("%dx%d", out, in), Kernel: ic.name, BytesPerCall: bytesPerCall}
			cg, cgNet, err := copyGBs(bytesPerCall)
			if err == nil {
				b.CopyGBs = cg
			}
			times, err := dev.MeasureDequant(mod, tensors, safetensors.BF16, reps)
			if err != nil {
				b.Error = err.Error()
				rep.Failures = append(rep.Failures, fmt.Sprintf("dequant bench %s %s: %v", b.Shape, b.Kernel, err))
				dr.Shapes = append(dr.Shapes, b)
				continue
			}
			rates(&b, times, cg, cgNet)
			endToEnd(&b, mod, tensors)
			dr.Shapes = append(dr.Shapes, b)
		}
	}
	// One Qwen3-32B layer's seven modules, batched.
	var items []pjrtgpu.DequantItem
	for _, m := range qwen3Layer {
		mod, tensors := fp8BlockModule(m.Name, m.Out, m.In, rng)
		// Dst only sizes the output: the measurement downloads nothing.
		items = append(items, pjrtgpu.DequantItem{Dst: make([]byte, 2*m.Out*m.In), Module: mod, Tensors: tensors, DType: safetensors.BF16})
		r, c := (m.Out+127)/128, (m.In+127)/128
		dr.BatchBytes += int64(m.Out*m.In*3 + 2*r*c)
	}
	dr.BatchModules = len(items)
	batched, separate, err := dev.MeasureDequantBatch(items, reps)
	if err != nil {
		dr.BatchError = err.Error()
		rep.Failures = append(rep.Failures, "dequant batch bench: "+err.Error())
		return dr
	}
	dr.BatchedUS = median(batched).Seconds() * 1e6
	dev.SetDequantPack(true)
	if packed, _, err := dev.MeasureDequantBatch(items, reps); err == nil {
		dr.BatchedPackUS = median(packed).Seconds() * 1e6
	} else {
		rep.Failures = append(rep.Failures, "dequant batch bench, packed: "+err.Error())
	}
	dev.SetDequantPack(false)
	dr.SeparateUS = median(separate).Seconds() * 1e6
	dr.BatchedGBs = float64(dr.BatchBytes) / median(batched).Seconds() / 1e9
	dr.BatchCopyGBs, _, _ = copyGBs(dr.BatchBytes)
	return dr
}

func printDequant(dr *dequantReport) {
	if dr == nil {
		return
	}
	fmt.Println("== dequant to BF16 on device-resident data: FP8 block 128 (BF16 scales) with each kernel, INT8 per channel, W4A16 group 128, AWQ GEMM group 128")
	fmt.Printf("  launch + wait of an empty program: %.1f µs (included in every time below; \"net\" columns subtract it from both the dequant and the copy)\n", dr.LaunchUS)
	fmt.Printf("  %-11s %-16s %10s %10s %8s %10s %7s %9s %11s %14s\n", "shape", "kernel", "device µs", "net µs", "GB/s", "copy GB/s", "ratio", "net ratio", "end-to-end", "cpu")
	for _, b := range dr.Shapes {
		if b.Error != "" {
			fmt.Printf("  %-11s %-16s failed: %s\n", b.Shape, b.Kernel, b.Error)
			continue
		}
		e2e, cpu := "", ""
		if b.EndToEndMS > 0 {
			e2e = fmt.Sprintf("%.1fms", b.EndToEndMS)
		}
		if b.CPUMS > 0 {
			cpu = fmt.Sprintf("%.1fms (%d thr)", b.CPUMS, b.CPUThreads)
		}
		fmt.Printf("  %-11s %-16s %10.1f %10.1f %8.0f %10.0f %6.0f%% %8.0f%% %11s %14s\n", b.Shape, b.Kernel, b.DeviceUS, b.NetUS, b.GBs, b.CopyGBs, 100*b.Ratio, 100*b.NetRatio, e2e, cpu)
	}
	fmt.Println("  (GB/s counts codes read + scales read + BF16 written; the copy reads and writes the same number of bytes; target for FP8 ≥ 80 %)")
	if dr.BatchError == "" {
		fmt.Printf("  one layer's %d modules (%.0f MB): one program %.1f µs (%.0f GB/s; copy %.0f GB/s), seven programs %.1f µs\n",
			dr.BatchModules, float64(dr.BatchBytes)/1e6, dr.BatchedUS, dr.BatchedGBs, dr.BatchCopyGBs, dr.SeparateUS)
		if dr.BatchedPackUS > 0 {
			fmt.Printf("  the same batch storing BF16 as u32 pairs: %.1f µs (%.0f GB/s)\n", dr.BatchedPackUS, float64(dr.BatchBytes)/dr.BatchedPackUS/1e3)
		}
	} else {
		fmt.Println("  batch:", dr.BatchError)
	}
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
