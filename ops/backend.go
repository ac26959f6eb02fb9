package ops

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops/internal/linalg"
	"github.com/heft-dev/heft/ops/internal/pjrtgpu"
)

// Matrix is a dense row-major float32 matrix: element (i, j) is
// Data[i*Cols+j] and len(Data) == Rows*Cols.
type Matrix = linalg.Matrix

// SVD is a truncated SVD A ≈ U·diag(S)·Vt: U m×k with orthonormal columns
// (largest-magnitude entry of each positive), S non-increasing and
// non-negative, Vt k×n with orthonormal rows; components with S = 0 have
// zero vectors.
type SVD = linalg.SVD

// SVDOptions tune the randomized SVD (oversampling, power iterations,
// stopping tolerance, seed); the zero value selects linalg's defaults.
type SVDOptions = linalg.SVDOptions

// Backend computes the numerical kernels of the ops. The CPU backend
// (CPUBackend) runs heft's Go kernels and is the reference: every other
// backend's contract is stated against it.
//
// Contract:
//   - Safe for concurrent use. Inputs are not modified and may be reused as
//     soon as a call returns.
//   - A backend handles every input the CPU kernels handle: an
//     accelerated backend that does not implement a case (another
//     quantization format, an unusual dtype, a malformed input) runs the
//     CPU kernel for it, so results and errors are the CPU's.
//   - Errors of the device itself (out of memory, a lost device) are
//     returned wrapped, as operational errors; they are not hidden by a
//     silent fallback.
type Backend interface {
	// Name describes the backend for reports and logs: "cpu", or e.g.
	// "pjrt (cuda: NVIDIA H100 80GB HBM3)".
	Name() string

	// Dequantize writes the dense weight of a quantized module into dst,
	// which must hold exactly out×in elements of dtype (BF16, F16 or F32):
	// byte for byte what quant.DequantizeInto(dst, mod, tensors, dtype)
	// writes — every element is RNE(float32(float32(q − zp) × scale)) in
	// dtype, whatever the format (FP8 E4M3/E5M2, INT8, packed INT4, AWQ;
	// per tensor, channel, group or block; BF16, F16, F32 or E8M0
	// scales), NaN gives 0x7FC0 in BF16 and 0x7E00 with the CPU's sign in
	// F16 — except that an F32 NaN's payload is unspecified.
	Dequantize(ctx context.Context, dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error

	// QuantizeWeight quantizes one dense Linear weight: the same tensors,
	// bytes and errors as quant.QuantizeWeight(qs, weight, data). For
	// fp8-block that is the scale rounding of codec/quant (s = amax/448
	// rounded once to the scale dtype, zero blocks replaced) and the code
	// rule clamp to ±448, then a single RNE to E4M3 of the float32 quotient;
	// for int8 and w4a16 the scales and zero points of codec/quant (each
	// one float32 op rounded to the scale dtype) and the codes
	// RNE(clamp(f32(f32(x/s) + zp), qmin, qmax)), INT4 packed eight to an
	// int32 word, lowest nibble first; NaN and ±Inf weights are refused
	// (quant.ErrNonFinite).
	QuantizeWeight(ctx context.Context, qs quant.QuantizeScheme, weight safetensors.TensorInfo, data []byte) ([]quant.QuantizedTensor, error)

	// TruncatedSVD returns the rank-min(rank, m, n) truncated SVD of a with
	// linalg.TruncatedSVD's algorithm and conventions: a Gaussian sketch
	// drawn from opts.Seed, adaptive power iterations with
	// re-orthonormalization, and the small problem on the Gram matrix of
	// B = Qᵀ·A. The CPU result is deterministic bit for bit; an accelerated
	// one rounds differently, but its Frobenius error stays within 1 % of
	// the optimum sqrt(Σ_{i>k} σ_i²) where the CPU's does. Errors wrap
	// linalg.ErrShape or linalg.ErrNotFinite as the CPU's do.
	TruncatedSVD(ctx context.Context, a Matrix, rank int, opts SVDOptions) (SVD, error)

	// Merge sets dst = w + scale·(b·a) (w and dst m×n, b m×r, a r×n; dst
	// may be w) as linalg.Merge: the product in float32, the sum rounded
	// once to float32. The CPU's bits are deterministic; an accelerated
	// backend sums the product in another order, which no device can be
	// made to follow, so its elements are not bit-identical but within
	// 2·|scale|·γ_{r+2}·(|b|·|a|)_ij + 2^-23·|result| + 2^-124 of the CPU's
	// (γ_k = k·2^-24/(1 − k·2^-24); pjrtgpu.MergeTolerance): in practice
	// about 70 % of float32 results and all but a few in 10^5 of their BF16
	// roundings are the CPU's. Shape errors wrap linalg.ErrShape as the
	// CPU's do.
	Merge(ctx context.Context, dst, w, b, a Matrix, scale float32) error

	// FrobeniusNorm returns linalg.FrobeniusNorm(a) (squares summed in
	// float64); an accelerated backend sums in another order: relative
	// difference at most 2·γ_n(float64), n = rows·cols
	// (pjrtgpu.NormTolerance).
	FrobeniusNorm(ctx context.Context, a Matrix) (float64, error)

	// Cosine returns linalg.Cosine(x, y) (0 for a zero input, NaN for a
	// NaN, ErrShape for different shapes); an accelerated backend's differs
	// by at most 8·γ_n(float64) (pjrtgpu.CosineTolerance).
	Cosine(ctx context.Context, x, y Matrix) (float64, error)

	// CosineLowRank returns linalg.Cosine(x, linalg.Mul(b, a)), the cosine
	// between x and a low-rank product, without the product leaving an
	// accelerated backend; its float32 product rounds differently, so it
	// differs by at most 4·γ_{r+1}·κ + 8·γ_n(float64), κ = ‖|b|·|a|‖_F /
	// ‖b·a‖_F (pjrtgpu.CosineLowRankTolerance).
	CosineLowRank(ctx context.Context, x, b, a Matrix) (float64, error)

	// LowRankError returns ‖x − b·a‖_F and ‖x‖_F, the error check of a LoRA
	// extraction (linalg.ResidualNorm and linalg.FrobeniusNorm); an
	// accelerated backend forms the float32 product in another order: the
	// residual within pjrtgpu.ResidualTolerance, the norm within
	// pjrtgpu.NormTolerance.
	LowRankError(ctx context.Context, x, b, a Matrix) (residual, norm float64, err error)

	// Close releases the device (a no-op for the CPU).
	Close() error
}

// CPUBackend returns the CPU backend: heft's Go kernels (codec/quant,
// ops/internal/linalg) on all cores. It needs no Close.
func CPUBackend() Backend { return cpuBackend{} }

type cpuBackend struct{}

func (cpuBackend) Name() string { return "cpu" }

func (cpuBackend) Dequantize(ctx context.Context, dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return quant.DequantizeInto(dst, mod, tensors, dtype)
}

func (cpuBackend) QuantizeWeight(ctx context.Context, qs quant.QuantizeScheme, weight safetensors.TensorInfo, data []byte) ([]quant.QuantizedTensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return quant.QuantizeWeight(qs, weight, data)
}

func (cpuBackend) TruncatedSVD(ctx context.Context, a Matrix, rank int, opts SVDOptions) (SVD, error) {
	if err := ctx.Err(); err != nil {
		return SVD{}, err
	}
	return linalg.TruncatedSVD(a, rank, opts)
}

func (cpuBackend) Merge(ctx context.Context, dst, w, b, a Matrix, scale float32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return linalg.Merge(dst, w, b, a, scale)
}

func (cpuBackend) FrobeniusNorm(ctx context.Context, a Matrix) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return linalg.FrobeniusNorm(a), nil
}

func (cpuBackend) Cosine(ctx context.Context, x, y Matrix) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return linalg.Cosine(x, y)
}

func (cpuBackend) CosineLowRank(ctx context.Context, x, b, a Matrix) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if b.Cols != a.Rows || len(b.Data) != b.Rows*b.Cols || len(a.Data) != a.Rows*a.Cols {
		return 0, fmt.Errorf("%w: CosineLowRank: b %d×%d, a %d×%d", linalg.ErrShape, b.Rows, b.Cols, a.Rows, a.Cols)
	}
	return linalg.Cosine(x, linalg.Mul(b, a))
}

func (cpuBackend) LowRankError(ctx context.Context, x, b, a Matrix) (float64, float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	r, err := linalg.ResidualNorm(b, a, x)
	if err != nil {
		return 0, 0, err
	}
	return r, linalg.FrobeniusNorm(x), nil
}

func (cpuBackend) Close() error { return nil }

// backendOr returns b, or the CPU backend when b is nil.
func backendOr(b Backend) Backend {
	if b == nil {
		return CPUBackend()
	}
	return b
}

// Devices that --device and HEFT_DEVICE name.
const (
	DeviceAuto = "auto"
	DeviceCPU  = "cpu"
	DeviceGPU  = "gpu"
)

// DeviceOptions select a backend (OpenBackend).
type DeviceOptions struct {
	// Device is DeviceAuto (a GPU if one works, else the CPU), DeviceCPU or
	// DeviceGPU (a GPU or an error). Empty means DeviceAuto.
	Device string
	// Plugin is an explicit PJRT plugin path (--pjrt-plugin,
	// HEFT_PJRT_PLUGIN); empty searches PJRT_PLUGIN_LIBRARY_PATH and the
	// jax CUDA wheels.
	Plugin string
	// MemoryFraction caps the GPU memory the PJRT client grows to (0: 0.75).
	MemoryFraction float64
	// Logf, when set, receives the one line explaining a fallback to the
	// CPU under DeviceAuto.
	Logf func(format string, args ...any)
	// Env and Python replace os.Getenv and python3 in the plugin search
	// (tests).
	Env    func(string) string
	Python func(code string) (string, error)
}

// DeviceReport says what OpenBackend found and chose; `heft doctor` prints it.
type DeviceReport struct {
	Requested string          `json:"requested"`
	Chosen    string          `json:"chosen"` // "cpu" or "gpu"
	Backend   string          `json:"backend"`
	Reason    string          `json:"reason"`
	GPU       *pjrtgpu.Report `json:"gpu,omitempty"` // the probe (absent for --device cpu)
}

// ErrNoDevice marks a demanded GPU (DeviceGPU) that could not be opened:
// an operational failure.
var ErrNoDevice = errors.New("no usable GPU")

// OpenBackend returns the backend opts.Device asks for, and a report of the
// probe. DeviceCPU returns the CPU backend without probing. DeviceAuto and
// DeviceGPU probe for a PJRT plugin (opts.Plugin, then
// PJRT_PLUGIN_LIBRARY_PATH, then the jax CUDA 13 and 12 wheels found by
// python3), create a client (preallocate=false, opts.MemoryFraction) and
// run a smoke program using exp; under DeviceAuto any failure logs one line
// (opts.Logf) and returns the CPU backend, under DeviceGPU it is an error
// wrapping ErrNoDevice. The caller closes the backend.
func OpenBackend(opts DeviceOptions) (Backend, *DeviceReport, error) {
	dev := opts.Device
	if dev == "" {
		dev = DeviceAuto
	}
	rep := &DeviceReport{Requested: dev}
	switch dev {
	case DeviceCPU:
		rep.Chosen, rep.Backend, rep.Reason = DeviceCPU, "cpu", "--device cpu"
		return CPUBackend(), rep, nil
	case DeviceAuto, DeviceGPU:
	default:
		return nil, rep, inputErrorf("device %q: want auto, cpu or gpu", dev)
	}
	d, grep, err := pjrtgpu.Open(pjrtgpu.Options{Plugin: opts.Plugin, MemoryFraction: opts.MemoryFraction, Env: opts.Env, Python: opts.Python})
	rep.GPU = grep
	if err != nil {
		if dev == DeviceGPU {
			return nil, rep, fmt.Errorf("%w: %w", ErrNoDevice, err)
		}
		rep.Chosen, rep.Backend = DeviceCPU, "cpu"
		rep.Reason = "no GPU: " + grep.Reason
		if opts.Logf != nil {
			opts.Logf("heft: using the CPU (no GPU: %s)", grep.Reason)
		}
		return CPUBackend(), rep, nil
	}
	b := &gpuBackend{dev: d}
	rep.Chosen, rep.Backend, rep.Reason = DeviceGPU, b.Name(), "PJRT device "+d.Name()+" passed the smoke test"
	return b, rep, nil
}

// gpuBackend runs the kernels pjrtgpu implements on the device and the
// others, and the inputs it does not take (pjrtgpu.ErrUnsupported), on the
// CPU.
type gpuBackend struct {
	dev       *pjrtgpu.Device
	cpu       cpuBackend
	closeOnce sync.Once
	closeErr  error
}

func (g *gpuBackend) Name() string { return "pjrt (" + g.dev.Name() + ")" }

func (g *gpuBackend) Dequantize(ctx context.Context, dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := g.dev.Dequantize(dst, mod, tensors, dtype)
	if errors.Is(err, pjrtgpu.ErrUnsupported) {
		return g.cpu.Dequantize(ctx, dst, mod, tensors, dtype)
	}
	if err != nil {
		return fmt.Errorf("gpu: dequantize %s: %w", mod.WeightName(), err)
	}
	return nil
}

func (g *gpuBackend) QuantizeWeight(ctx context.Context, qs quant.QuantizeScheme, weight safetensors.TensorInfo, data []byte) ([]quant.QuantizedTensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res, err := g.dev.QuantizeWeight(qs, weight, data)
	if errors.Is(err, pjrtgpu.ErrUnsupported) {
		return g.cpu.QuantizeWeight(ctx, qs, weight, data)
	}
	if err != nil {
		return nil, fmt.Errorf("gpu: quantize %s: %w", weight.Name, err)
	}
	return res, nil
}

func (g *gpuBackend) TruncatedSVD(ctx context.Context, a Matrix, rank int, opts SVDOptions) (SVD, error) {
	if err := ctx.Err(); err != nil {
		return SVD{}, err
	}
	res, err := g.dev.TruncatedSVD(a, rank, pjrtgpu.SVDOptions{SVDOptions: opts})
	if errors.Is(err, pjrtgpu.ErrUnsupported) {
		return g.cpu.TruncatedSVD(ctx, a, rank, opts)
	}
	if err != nil {
		return SVD{}, fmt.Errorf("gpu: truncated SVD of a %d×%d matrix: %w", a.Rows, a.Cols, err)
	}
	return res, nil
}

func (g *gpuBackend) Merge(ctx context.Context, dst, w, b, a Matrix, scale float32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := g.dev.Merge(dst, w, b, a, scale)
	if errors.Is(err, pjrtgpu.ErrUnsupported) {
		return g.cpu.Merge(ctx, dst, w, b, a, scale)
	}
	if err != nil {
		return fmt.Errorf("gpu: merge of a %d×%d weight: %w", w.Rows, w.Cols, err)
	}
	return nil
}

func (g *gpuBackend) FrobeniusNorm(ctx context.Context, a Matrix) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	v, err := g.dev.FrobeniusNorm(a)
	if errors.Is(err, pjrtgpu.ErrUnsupported) {
		return g.cpu.FrobeniusNorm(ctx, a)
	}
	if err != nil {
		return 0, fmt.Errorf("gpu: norm of a %d×%d matrix: %w", a.Rows, a.Cols, err)
	}
	return v, nil
}

func (g *gpuBackend) Cosine(ctx context.Context, x, y Matrix) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	v, err := g.dev.Cosine(x, y)
	if errors.Is(err, pjrtgpu.ErrUnsupported) {
		return g.cpu.Cosine(ctx, x, y)
	}
	if err != nil {
		return 0, fmt.Errorf("gpu: cosine of %d×%d matrices: %w", x.Rows, x.Cols, err)
	}
	return v, nil
}

func (g *gpuBackend) CosineLowRank(ctx context.Context, x, b, a Matrix) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	v, err := g.dev.CosineLowRank(x, b, a)
	if errors.Is(err, pjrtgpu.ErrUnsupported) {
		return g.cpu.CosineLowRank(ctx, x, b, a)
	}
	if err != nil {
		return 0, fmt.Errorf("gpu: cosine with a rank-%d product: %w", b.Cols, err)
	}
	return v, nil
}

func (g *gpuBackend) LowRankError(ctx context.Context, x, b, a Matrix) (float64, float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	r, n, err := g.dev.LowRankError(x, b, a)
	if errors.Is(err, pjrtgpu.ErrUnsupported) {
		return g.cpu.LowRankError(ctx, x, b, a)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("gpu: error of a rank-%d product: %w", b.Cols, err)
	}
	return r, n, nil
}

func (g *gpuBackend) Close() error {
	g.closeOnce.Do(func() { g.closeErr = g.dev.Close() })
	return g.closeErr
}
