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
//     the huff0 format, or stored raw, as a constant, or with zstd when one
//     value dominates it. About 0.66 of the size for BF16 weights, against
//     0.78 for zstd.
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
// All integers are little-endian.
//
//	header
//	  byte     version, 1
//	  byte     element width e: 1, 2, 4 or 8
//	  byte     flags: bit 0 = sign rotation (only with e >= 2); others 0
//	  byte     block log b, 8..17: a block is 2^b elements (the encoder
//	           writes 17)
//	  uvarint  raw length L, equal to the length given to Decode
//	plane descriptors, for p = 0 .. e-1, 5 bytes each
//	  byte     mode: 0 raw, 1 constant, 2 coded
//	  uint32   raw: 0; constant: the byte value; coded: length of the
//	           plane's data in the coded section
//	raw section: the n = L/e bytes of each raw plane, in plane order
//	coded section: the data of each coded plane, in plane order
//	  byte     1 if a Huffman table follows, 0 if not
//	  table    huff0 table description (RFC 8878 §4.2.1.1), shared by the
//	           plane's Huffman blocks
//	  blocks   one per block of m elements (m = 2^b, the last block less):
//	    byte   mode: 0 raw, 1 constant, 2 Huffman, 3 zstd
//	    raw:       m bytes
//	    constant:  1 byte, the value of all m
//	    Huffman:   uint24 length, then a huff0 4X block (6-byte jump table
//	               and four streams) of m symbols; 64 <= m <= 2^17
//	    zstd:      uint24 length, then one zstd frame of exactly m bytes
//	tail: the last L mod e bytes of the chunk, verbatim
//
// The frame must end exactly after the tail, and every length is checked
// against the bytes present before anything is read.
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
// planes of trained weights) are stored raw without further work. A coded
// plane gets one Huffman table, built from its histogram; its blocks fall
// back to raw when Huffman coding does not shrink them.
package chunkcodec
