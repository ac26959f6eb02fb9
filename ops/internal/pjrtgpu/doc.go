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
//     quant.DequantizeInto. Three kernels (DequantKernels): the fastest
//     converts the codes as float8_e4m3fn and multiplies in float32, which
//     is exact only where float32 subnormals are kept; the first time a
//     (scale dtype, output dtype) is used, every code against edge-case
//     scales (EdgeDequantCase) is compared with the CPU and the first
//     kernel that matches bit for bit is kept. The next one widens to an
//     exact float64 product and rounds subnormal results with integer
//     arithmetic; the last decodes with integer operations only.
//     DequantizeBatch runs several modules in one program.
//
//   - Every other dequantization codec/quant does, with one general kernel
//     (intdq.go, intplan.go): INT8 per tensor, channel or group
//     (compressed-tensors int-quantized, quanto qint8; act-order g_idx),
//     packed 1/2/4/8-bit codes (W4A16 pack-quantized, with or without zero
//     points), AutoAWQ GEMM (its nibble interleave and K-major scales and
//     qzeros undone; 8 when there are no qzeros), FP8 E4M3 and E5M2 per
//     tensor, channel or block (compressed-tensors, native fp8, quanto),
//     BF16, F16, F32 or E8M0 scales, to BF16, F16 or F32 (FP8 block to
//     F16 included): bit-identical by the exact float64 product of q − z
//     and the scale, rounded once to float32, then to the output dtype
//     with integer arithmetic; an F16 NaN gets the sign the host's float32
//     arithmetic gives it (F16 output of FP8 codes with a NaN scale is
//     left to the CPU).
//
//   - FP8 block quantization (fp8-block, compressed-tensors or native fp8):
//     bit-identical to quant.QuantizeWeight. The device reduces each block to
//     its largest magnitude; the host turns those few numbers into scales with
//     the CPU kernel's arithmetic (so scale rounding, the zero-block scale and
//     every error are the CPU's); the device then computes every code as
//     float32(float64(x)·(1/s)) clamped to ±448 and encoded by the integer
//     rule of formats.md §1.2.
//
//   - INT8 (per-channel RTN) and W4A16 (symmetric or asymmetric, per group
//     or per channel) quantization: bit-identical to quant.QuantizeWeight
//     (codes, scales, zero points, packing). The device reduces each scale
//     cell to its extreme magnitudes, the host derives scales and zero
//     points with codec/quant's float32 arithmetic (intqhost.go), and the
//     device computes RNE(clamp(f32(f32(float64(x)·(1/s)) + zp))) and packs
//     4-bit codes eight to an int32 word (intq.go).
//
//   - The randomized truncated SVD of LoRA extraction and analysis: the
//     algorithm of linalg.TruncatedSVD (same Gaussian sketch for a seed, same
//     adaptive power iterations and stopping rule, same small Gram-matrix
//     eigenproblem and conventions). Each power iteration is one program:
//     the products with A in float32 and the re-orthonormalizations of the
//     sketches by shifted Newton–Schulz passes in float64, matrix products
//     only (kernels_svd.go). The host receives one l×l Gram matrix per
//     iteration and computes the stopping rule's eigenvalues while the
//     device runs ahead; its symmetric eigensolver (hosteig.go, hosttri.go)
//     splits its work over the cores. The factors are checked for
//     orthogonality before they are returned.
//
//   - The LoRA merge W + s·B·A (float32 product with true float32
//     multiplies) and the reductions of `heft analyze` (Frobenius norms and
//     cosines summed in float64 from exactly widened values; the cosine
//     with a low-rank product B·A without moving the product off the
//     device; the LoRA error check ‖X − B·A‖ likewise), reduce.go. They
//     cannot be bit-identical (the CPU's and the
//     device's orders of summation differ, and no device can be made to
//     follow linalg's GEMM); reducehost.go states and the tests check the
//     bounds: MergeTolerance, NormTolerance, CosineTolerance,
//     CosineLowRankTolerance, ResidualTolerance.
//
// Whatever the device cannot take (another format, an unusual dtype, a
// program the plugin cannot compile, a malformed input, a result that
// fails a self-check) gives ErrUnsupported, and ops runs the CPU kernel.
// HEFT_PJRT_DEQUANT=f8-f32|f8-f64|int forces an FP8 dequantization kernel
// without probing; FP8 dequantization to BF16 stores u32 words of two
// values (the same bytes, faster on the H200), HEFT_PJRT_DEQUANT_PACK=0
// stores u16 values instead (gpubench times both).
//
// # Files and builds
//
// The PJRT code needs cgo and Linux (the plugin is dlopen'ed). Other builds
// (CGO_ENABLED=0, other systems) compile stub.go instead, whose Open always
// fails with ErrUnavailable, so `CGO_ENABLED=0 go build ./...` keeps working
// and heft runs on the CPU. Plugin discovery (discover.go), the CUDA data
// directory search (cudadir.go), the host-side linear algebra (hostla.go,
// hosteig.go, hosttri.go), the integer kernel's validation (intplan.go) and
// the parity cases (parity.go) are plain Go, shared by both builds.
//
// # Costs
//
// Every distinct (program, shape, dtype) compiles once per process (0.02 to
// 1 s each on an H100; executables are cached in the Device). Host↔device
// copies run at 8 to 35 GB/s over PCIe, so the kernels pay off for large
// tensors; uploads of more than 32 MiB are split over several goroutines,
// and downloads go into pre-faulted memory (see /work/shared/docs/gpu.md).
package pjrtgpu
