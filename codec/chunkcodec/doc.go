// Package chunkcodec compresses the store's chunks, each on its own, with
// one of a few codecs, and names the codec of each chunk with an ID that the
// store records in its index next to the chunk's raw length.
//
//   - Raw (0): the chunk as is.
//   - Zstd (1): one zstd frame (klauspost/compress, SpeedDefault, literal
//     entropy coding forced on; see zstd.go). For opaque file chunks.
//   - ByteGrouped (2): for tensors. Elements are split into byte planes so
//     that the exponent of floating-point values lands in a plane of its own
//     (as ZipNN does, arXiv 2411.05239), and each plane is Huffman coded in
//     the huff0 format, with tables that adapt within the chunk, or stored
//     raw, as a constant, or with zstd when one value dominates it. About
//     0.66 of the size for BF16 weights, against 0.78 for zstd.
//
// [Encode] picks the codec from a sample of the chunk and the element type
// the caller gives in a [Hint], and falls back to Raw unless the encoded
// form saves at least 1/64 of the chunk. [Decode] needs the codec's ID and
// the raw length, both from the index; it never allocates more than that
// length for its output, and rejects malformed input with an error wrapping
// [ErrCorrupt]. Empty chunks encode to nothing under every codec. Encode and
// Decode are deterministic and safe for concurrent use; scratch state is
// pooled.
//
// # ByteGrouped frame
//
// All integers are little-endian. This is version 2 of the frame, which
// Encode writes; version 1 frames decode too (see below).
//
//	header
//	  byte     version, 2
//	  byte     element width e: 1, 2, 4 or 8
//	  byte     flags: bit 0 = sign rotation (only with e >= 2); others 0
//	  byte     0 (the block size is per plane)
//	  uvarint  raw length L, equal to the length given to Decode
//	plane descriptors, for p = 0 .. e-1, 5 bytes each
//	  byte     mode: 0 raw, 1 constant, 2 coded
//	  uint32   raw: 0; constant: the byte value; coded: length of the
//	           plane's data in the coded section
//	raw section: the n = L/e bytes of each raw plane, in plane order
//	coded section: the data of each coded plane, in plane order
//	  byte     block log b, 14..17: the plane's blocks are m = 2^b
//	           symbols, the last one less (the encoder writes 17 or 14)
//	  blocks   one per block:
//	    byte   mode: 0 raw, 1 constant, 2 Huffman, 3 zstd, 4 table
//	    raw:       m bytes
//	    constant:  1 byte, the value of all m
//	    Huffman:   uint24 length, then a huff0 4X block (6-byte jump table
//	               and four streams) of m symbols, 64 <= m, coded with the
//	               plane's current table
//	    table:     uint24 length, then a huff0 table description (RFC 8878
//	               §4.2.1.1), which becomes the plane's current table, and
//	               a huff0 4X block of m symbols coded with it, 64 <= m
//	    zstd:      uint24 length, then one zstd frame of exactly m bytes
//	tail: the last L mod e bytes of the chunk, verbatim
//
// A plane has no current table before its first table block; a Huffman
// block there is an error. The frame must end exactly after the tail, and
// every length is checked against the bytes present before anything is
// read.
//
// Plane p holds byte p of each element after the transform. With sign
// rotation the top 16 bits of each element are rotated left by one bit
// (BF16 s eeeeeeee mmmmmmm becomes eeeeeeee mmmmmmms), so that plane e-1 of
// BF16 and F32 is the exponent. Within each group of eight elements the
// planes list the elements in the order 0 4 1 5 2 6 3 7 (e = 2) or
// 0 2 4 6 1 3 5 7 (e = 4); see planes.go for why. The last n mod 8 elements
// keep their order.
//
// Planes whose sampled entropy is above 7.75 bits per byte (the mantissa
// planes of trained weights) are stored raw without further work. The
// blocks of a coded plane adapt to the data within the chunk (plan.go):
// planned from the histograms of its blocks, runs of consecutive blocks
// share a Huffman table, a new table starting where it saves more than it
// costs (on trained weights, every one or two 128 Ki blocks of the exponent
// plane), blocks of one value are constant and blocks that Huffman coding
// does not shrink are raw; and a plane whose parts differ in kind (rows
// whose low mantissa bytes are zero or take a few values, next to random
// ones) is cut into blocks of 16 Ki symbols instead of 128 Ki. A plane
// dominated by one value has zstd blocks.
//
// Version 1 (written before adaptive tables) differs only in the header and
// the coded planes: header byte 3 is the block log b of every plane
// (8..17), and a coded plane's data starts with a byte 1 if a huff0 table
// description follows, shared by all of the plane's Huffman blocks, or 0 if
// none does, instead of the block log; block mode 4 does not exist.
package chunkcodec
