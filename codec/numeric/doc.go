// Package numeric converts scalars between float32 and the narrow float
// formats of model weights (FP8 E4M3FN, FP8 E5M2, BF16, IEEE FP16) bit for
// bit as PyTorch does; see shared/docs/formats.md §1 and §14.1-§14.4.
//
// Bit-exactness with torch matters because quantized checkpoints are
// compared byte for byte: a converter or quantizer that rounds one value
// differently from torch produces a file that dedups against nothing and
// fails golden tests. Every encoder therefore reproduces the exact integer
// algorithm torch uses (c10's fp8e4m3fn_from_fp32_value and friends), and
// the tests check it against the exhaustive bf16 → E4M3FN table torch
// produced (shared/testdata/golden/bf16_to_f8e4m3fn.bin) and against
// independent float64 references.
//
// # Rounding and overflow
//
// All encoders round to nearest, ties to even. Overflow differs per format,
// as in torch:
//   - [F32ToE4M3FN] is torch's unclamped cast: 448 < |x| ≤ 464 rounds to
//     ±448, anything larger (and ±Inf, NaN) becomes NaN with the input's
//     sign. [F32ToE4M3FNSat] clamps to [−448, 448] first, as every quantizer
//     does (formats.md §1.2): use it to quantize.
//   - [F32ToE5M2], [F32ToBF16] and [F32ToF16] overflow to ±Inf.
//
// NaN inputs give a NaN of the target format; which NaN pattern torch
// produces depends on its code path (formats.md §1.2, §1.4), so compare NaNs
// with "is NaN", never by bytes.
//
// # Slices
//
// The *Slice functions convert whole tensors stored as little-endian bytes.
// Where a lookup table is exact (every BF16 and FP8 code decodes exactly;
// BF16 → E4M3FN has only 65,536 inputs) they use one: BF16 → E4M3FN by
// table converts about three times as many elements per second as the
// float32 arithmetic path. They panic if
// dst is shorter than the number of elements in src, like an out-of-range
// index would, because a short destination is always a caller bug.
package numeric
