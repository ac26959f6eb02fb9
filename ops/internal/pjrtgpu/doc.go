// Package pjrtgpu runs heft's numerical kernels on an accelerator through
// XLA's PJRT C API (github.com/gomlx/go-xla), with StableHLO programs built
// in Go. It is the GPU backend behind ops.Backend; ops falls back to the CPU
// kernels whenever this package cannot run (no plugin, no cgo, a failed
// smoke test) or returns ErrUnsupported for an input.
//
// # What runs on the device
//
//   - FP8 E4M3 block dequantization (BF16, F16 or F32 block scales, any
//     block shape, partial edge blocks) to BF16 or F32: bit-identical to
//     quant.DequantizeInto. Codes are uploaded as bytes and decoded with
//     integer operations (the go-xla builder has no fp8 type), multiplied by
//     the scale in float32 and rounded to BF16 with integer RNE, so not even
//     a NaN's bits depend on the device's conversion instructions.
//   - FP8 block quantization (fp8-block, compressed-tensors or native fp8):
//     bit-identical to quant.QuantizeWeight. The device reduces each block to
//     its largest magnitude; the host turns those few numbers into scales with
//     the CPU kernel's arithmetic (so scale rounding, the zero-block scale and
//     every error are the CPU's); the device then computes every code as
//     float32(float64(x)·(1/s)) clamped to ±448 and encoded by the integer
//     rule of formats.md §1.2.
//   - The randomized truncated SVD of LoRA extraction and analysis: the
//     algorithm of linalg.TruncatedSVD (same Gaussian sketch for a seed, same
//     adaptive power iterations and stopping rule, same small Gram-matrix
//     eigenproblem and conventions), with every product over the big matrix
//     on the device and the l×l problems on the host in float64. Rows of the
//     sketches are re-orthonormalized by Cholesky-QR twice (a shifted pass
//     first when the Gram matrix is not numerically positive definite).
//
// # Files and builds
//
// The PJRT code needs cgo and Linux (the plugin is dlopen'ed). Other builds
// (CGO_ENABLED=0, other systems) compile stub.go instead, whose Open always
// fails with ErrUnavailable, so `CGO_ENABLED=0 go build ./...` keeps working
// and heft runs on the CPU. Plugin discovery (discover.go), the CUDA data
// directory search (cudadir.go) and the host-side linear algebra
// (hostla.go) are plain Go, shared by both builds.
//
// # Costs
//
// Every distinct (program, shape, dtype) compiles once per process (0.02 to
// 1 s each on an H100; executables are cached in the Device). Host↔device
// copies run at 8 to 35 GB/s over PCIe, so the kernels pay off for large
// tensors; uploads of more than 32 MiB are split over several goroutines,
// and downloads go into pre-faulted memory (see /work/shared/docs/gpu.md).
package pjrtgpu
