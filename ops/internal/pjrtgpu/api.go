package pjrtgpu

import (
	"errors"
	"fmt"
	"time"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// ErrUnavailable is returned (wrapped, with the reason) by Open when no
// usable PJRT device was found: no plugin, a plugin that does not load, no
// visible device, a failed smoke test, or a build without cgo.
var ErrUnavailable = errors.New("pjrtgpu: no usable PJRT device")

// ErrUnsupported is returned (wrapped) by a Device method for an input it
// does not implement or does not validate itself: another quantization
// format, an unusual dtype, a malformed or non-finite input whose exact
// error message is the CPU kernel's to give. Callers run the CPU kernel
// instead, which returns the same result or the proper error.
var ErrUnsupported = errors.New("pjrtgpu: not supported on the device")

func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, args...))
}

// DefaultMemoryFraction caps the device memory the PJRT client may grow to.
// The client is created with preallocate=false, so it takes memory on
// demand up to this share instead of grabbing 75 % of the card at start.
const DefaultMemoryFraction = 0.75

// Options tell Open where to look and how to set up the client.
type Options struct {
	// Plugin is an explicit plugin path (heft's --pjrt-plugin flag or
	// HEFT_PJRT_PLUGIN). When set, no other location is tried.
	Plugin string
	// MemoryFraction is the PJRT client's memory_fraction (0: the default).
	MemoryFraction float64
	// Env looks up environment variables (nil: os.Getenv); tests inject it.
	Env func(string) string
	// Python runs `python3 -c CODE` and returns its standard output, to find
	// the jax wheels' plugin directories (nil: the real python3, with a
	// 10-second limit). Tests inject a fake.
	Python func(code string) (string, error)
}

// Candidate is one plugin location the probe considered.
type Candidate struct {
	Path   string `json:"path"`
	Source string `json:"source"` // flag/HEFT_PJRT_PLUGIN, PJRT_PLUGIN_LIBRARY_PATH, jax wheel …
	Exists bool   `json:"exists"`
	Error  string `json:"error,omitempty"` // why it was not used
}

// Report says what Open found and why it did or did not give a device. It
// is what `heft doctor` prints.
type Report struct {
	Cgo        bool        `json:"cgo"` // whether this build has the PJRT code
	Candidates []Candidate `json:"candidates"`
	Plugin     string      `json:"plugin,omitempty"` // the plugin that loaded
	// PJRTVersion is the plugin's PJRT C API version, e.g. "0.115"; GoXLA
	// the go-xla module (and so the C API header) heft was built with.
	PJRTVersion string            `json:"pjrt_version,omitempty"`
	GoXLA       string            `json:"go_xla,omitempty"`
	Attributes  map[string]string `json:"plugin_attributes,omitempty"`
	Platform    string            `json:"platform,omitempty"`
	PlatformVer string            `json:"platform_version,omitempty"`
	Devices     []string          `json:"devices,omitempty"`
	// GPUs lists the cards nvidia-smi reports (name, memory), when it runs.
	GPUs           []string `json:"gpus,omitempty"`
	MemoryFraction float64  `json:"memory_fraction,omitempty"`
	XLAFlags       string   `json:"xla_flags"`
	// CUDADataDir is the directory holding bin/ptxas and
	// nvvm/libdevice/libdevice.10.bc that XLA will use, and CUDADataDirFrom
	// where it came from (XLA_FLAGS, the toolkit, a wheel; set into
	// XLA_FLAGS by Open when XLA would not find it by itself).
	CUDADataDir     string `json:"cuda_data_dir,omitempty"`
	CUDADataDirFrom string `json:"cuda_data_dir_from,omitempty"`
	CUDAVisible     string `json:"cuda_visible_devices,omitempty"`
	// Smoke is the result of the smoke program (exp and a small matmul),
	// SmokeTime its compile and run time.
	Smoke     string        `json:"smoke,omitempty"`
	SmokeTime time.Duration `json:"smoke_time_ns,omitempty"`
	// OK is set when a device is ready; Reason otherwise says why not.
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// Stats accumulates where a Device's time went, for benchmarks. Durations
// are wall-clock times of the calls that did the work.
type Stats struct {
	Compiles    int           `json:"compiles"`
	CompileTime time.Duration `json:"compile_ns"`
	// CompileFailures counts programs the plugin could not compile (their
	// callers fell back to the CPU).
	CompileFailures int           `json:"compile_failures"`
	Executes        int           `json:"executes"`
	ExecuteTime     time.Duration `json:"execute_ns"` // includes waiting for the device
	UploadBytes     int64         `json:"upload_bytes"`
	UploadTime      time.Duration `json:"upload_ns"`
	DownBytes       int64         `json:"download_bytes"`
	DownTime        time.Duration `json:"download_ns"`
	// HostTime is the host's l×l work of the SVD (eigenproblems, finishing
	// the factors), summed over the goroutines that ran it; HostWait the
	// part of it the device thread waited for (the rest overlapped device
	// work).
	HostTime   time.Duration `json:"host_ns"`
	HostWait   time.Duration `json:"host_wait_ns"`
	PowerIters int           `json:"power_iters"`
	// Checks counts the stopping-rule eigenproblems started, ChecksCancelled
	// those of them skipped because the rule had stopped before their
	// iteration, Speculative the power iterations the device ran ahead of
	// the stopping rule and discarded.
	Checks          int `json:"checks"`
	ChecksCancelled int `json:"checks_cancelled"`
	Speculative     int `json:"speculative_iters"`
	// SelfCheckFailures counts decompositions whose factors failed the
	// orthogonality self-check and went to the CPU instead.
	SelfCheckFailures int `json:"self_check_failures"`
	// Programs splits Executes and ExecuteTime by program (the cache key's
	// first component: "svd_iter", "dequant_fp8", …).
	Programs map[string]ProgramStats `json:"programs,omitempty"`
}

// ProgramStats is one program's share of Stats.
type ProgramStats struct {
	Executes int           `json:"executes"`
	Time     time.Duration `json:"execute_ns"`
}

// The FP8 block dequantization kernels, fastest first (see
// progDequantFP8). Each is exact on a device that rounds as IEEE 754
// requires for the operations it uses; the first time a (scale dtype,
// output dtype) is dequantized, the device tries them in order on every
// code against edge-case scales (EdgeDequantCase) and keeps the first that
// matches the CPU bit for bit. DequantInt, which uses no float arithmetic
// but exact products, is the fallback. HEFT_PJRT_DEQUANT names a kernel to
// use without probing.
const (
	// DequantF32: codes converted as float8_e4m3fn, float32 multiply by
	// the scale. Needs subnormal float32 inputs and results (no
	// flush-to-zero): XLA's CPU backend flushes them, so there it fails the
	// probe.
	DequantF32 = "f8-f32"
	// DequantF64: codes converted as float8_e4m3fn and scales widened
	// exactly to float64; the exact float64 product is rounded to float32
	// by the conversion when normal and by an integer rounding of p·2^149
	// when subnormal, so no float32 subnormal is ever an operand or a
	// result.
	DequantF64 = "f8-f64"
	// DequantInt: codes decoded with integer operations (heft's first
	// kernel).
	DequantInt = "int"
)

// DequantKernels lists the FP8 block dequantization kernels, fastest first.
var DequantKernels = []string{DequantF32, DequantF64, DequantInt}

// DequantItem is one module of DequantizeBatch: the arguments of
// Dequantize.
type DequantItem struct {
	Dst     []byte
	Module  quant.Module
	Tensors map[quant.Role][]byte
	DType   safetensors.DType
}
