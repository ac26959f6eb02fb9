// Package safetensors reads, validates and writes the safetensors container
// exactly as the reference implementation (huggingface/safetensors) does; see
// shared/docs/formats.md §2 and §14.10.
//
// A file is [u64 little-endian N][N bytes of JSON header][data buffer]. The
// reader only ever looks at the first 8+N bytes: it keeps them verbatim in
// [Header.Raw] (so a store can restore the file byte for byte) and describes
// where each tensor's bytes live, so callers read tensor data by offset and a
// multi-gigabyte shard never has to be loaded into memory.
//
// # Agreement with the reference reader
//
// Every file the reference reader rejects is rejected here, with the same
// class of error (see the Err* values). The reader is stricter than the
// reference in a few places where the reference is lenient only because of
// how serde happens to work, or where the format README forbids something the
// reference does not check:
//   - the header must start with '{' (the README requires it; the reference
//     code has the check commented out and accepts leading JSON whitespace);
//   - a tensor entry must be a JSON object with exactly the fields dtype,
//     shape and data_offsets (serde ignores unknown fields and also accepts
//     the positional array form ["F32",[2],[0,8]]);
//   - dtype must be a JSON string (serde also accepts the {"F32":null} form);
//   - duplicate tensor names and duplicate __metadata__ keys are rejected
//     (the README forbids duplicates; serde keeps the last one).
//
// `"__metadata__": null` is accepted and treated as absent, as the reference
// does.
//
// # Writer
//
// [Plan], [Write] and [WriteFile] lay files out byte for byte as the reference
// writer does: tensors sorted by dtype in descending enum order and then by
// name, consecutive offsets, compact JSON with __metadata__ first, serde_json
// string escaping, and the header padded with spaces to a multiple of 8. The
// one deliberate difference is that metadata keys are sorted (the reference
// uses a Rust HashMap, so with two or more keys its order is random).
package safetensors
