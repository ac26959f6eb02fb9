// Package quant understands, dequantizes and quantizes checkpoints: it tells
// from config.json and the tensor list which format a model is stored in and
// which modules are quantized ([Detect]), turns one quantized module's
// tensors back into a dense BF16 weight ([DequantModule]), bit for bit as
// shared/docs/formats.md §1.5, §5-§8 and §12 define it, and quantizes dense
// weights ([QuantizeWeight]). Everything is a pure function over byte
// slices, so the ops layer can stream tensors out of the store into it one
// module at a time.
//
// # Formats
//
//   - compressed-tensors (quant_method "compressed-tensors", §5):
//     float-quantized, int-quantized and naive-quantized (codes stored as F8
//     or I8 `weight`), and pack-quantized (INT1-8 codes packed in int32
//     `weight_packed`, with `weight_shape`, packed zero points for asymmetric
//     group and channel schemes, and `weight_g_idx` for activation order);
//     strategies tensor, channel, group and block; mixed-precision configs
//     with per-group formats and the preset shorthand ("W4A16": ["Linear"]).
//   - native block FP8 (quant_method "fp8", §6): F8_E4M3 `weight` with a
//     `weight_scale_inv` multiplier grid in F32 (DeepSeek) or BF16 (Qwen3),
//     partial edge blocks included; without weight_block_size, a per-tensor
//     `weight_scale`.
//   - AutoAWQ GEMM (quant_method "awq", version "gemm", §7): K-major
//     `qweight`/`qzeros`/`scales` with the AWQ nibble interleave.
//   - optimum-quanto 8-bit weights (quanto_qmap.json, §8): qint8 and qfloat8
//     `weight._data` with a per-row `weight._scale`.
//
// NVFP4/MXFP4/MXFP8, sparse and transformed compressed-tensors models, other
// AWQ kernels (GEMV, exllama…), quanto's 2- and 4-bit weights, GPTQ and
// fused 3-D expert tensors are recognised and refused with ErrUnsupported
// rather than decoded wrongly.
//
// # Arithmetic
//
// A dequantized element is (q − zp) × s. Every code this package reads has at
// most 8 significant bits and every BF16/F16 scale at most 11, so that
// product is exact in float32 and the BF16 result is a single RNE rounding of
// the exact value — what torch, vLLM's kernels and compressed-tensors give
// (§1.5). With F32 scales (DeepSeek) the product is first rounded to float32,
// as torch and Triton do, then to BF16. The kernels compute that float32 once
// per (code, scale) pair into a small table and then only look codes up, so
// they are exact by construction and fast; see dequant.go.
//
// The output of a quantizer-specific dequantization (AutoAWQ's fp16
// dequantize_gemm, compressed-tensors' "output in the scale dtype") can be
// reproduced bit for bit with [Dequantize] and that dtype; the BF16 bridge
// rounds the exact value once instead of going through F16 (see §12 "any →
// bf16 dense").
//
// Rows are split over GOMAXPROCS goroutines for large weights; each element
// is computed on its own, so the bytes never depend on the split.
// [DequantizeInto] reuses a caller's buffer: a fresh 32 MiB output costs
// page faults that take longer than the dequantization itself, so a
// streaming caller gets two to four times the throughput.
//
// # Quantizing
//
// [ParseQuantizeScheme] names what `heft quantize` writes: fp8-block
// (FP8_BLOCK, compressed-tensors float-quantized, or native block FP8 with
// --format fp8), int8 (W8A8 int-quantized) and w4a16 (W4A16 or W4A16_ASYM
// pack-quantized), with group size, block size, symmetry and scale dtype as
// options. [PlanQuantize] decides from the tensor list which weights are
// quantized (2-D Linear weights, as llm-compressor's model_free_ptq picks
// them) and lists every output tensor with the one input it is computed
// from; [QuantizeWeight] computes a module's tensors, and [QuantizedConfig]
// and [DequantizedConfig] edit config.json without disturbing the rest of
// it. The arithmetic is compressed-tensors' calculate_qparams evaluated as
// torch evaluates it in the scale dtype, then one float32 division and one
// RNE per code; QuantizeWeight's documentation derives every rounding.
//
// # Packing
//
// [PackInt32]/[UnpackInt32] (and the Dim0 variants for zero points) are
// compressed-tensors' pack_to_int32/unpack_from_int32 in both the current
// dense layout and the older element-aligned one; [PackAWQ]/[UnpackAWQ] are
// AutoAWQ's interleave; [AWQToPacked]/[PackedToAWQ] convert an AutoAWQ GEMM
// module to compressed-tensors W4A16 and back losslessly (§7, §12).
package quant
