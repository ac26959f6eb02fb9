// Package pack reads and writes heft pack files: write-once files that hold
// many stored objects (compressed tensor chunks and small metadata objects).
//
// A pack is self-describing and checksummed, so the store's bbolt index is a
// cache that `heft repair index` can rebuild from packs alone, and it is made
// durable (fsync, rename, directory fsync) before Finish returns, so the index
// may refer to it as soon as Finish succeeds ("data before metadata",
// docs/reliability.md §3).
//
// This package does not interpret objects: the object ID (BLAKE3-256 of the
// decoded bytes), the kind and the codec are opaque values chosen by the
// caller. It only guarantees that the stored bytes it returns are the bytes
// that were added, or an error that wraps ErrCorrupt.
//
// # File layout (format version 1)
//
// All integers are little-endian. Offsets are from the start of the file.
// CRC-32C is CRC-32 with the Castagnoli polynomial (hardware accelerated on
// amd64 and arm64).
//
//	file    = header entry* table footer
//	entry   = entry-header stored-bytes
//
// Header, 24 bytes, at offset 0:
//
//	off  size  field
//	  0     8  magic "HEFTPACK"
//	  8     4  format version (u32) = 1
//	 12     8  reserved, zero
//	 20     4  CRC-32C of bytes 0..20
//
// The header CRC lets a reader tell a damaged version field (CRC mismatch:
// ErrCorrupt, and Scan still tries version 1) from a genuinely newer format
// (CRC valid: ErrUnsupportedVersion). Later versions must keep the magic,
// the version field and this CRC at these offsets.
//
// Entry header, 60 bytes, immediately followed by the stored bytes:
//
//	off  size  field
//	  0    32  object ID (BLAKE3-256 of the decoded object; opaque here)
//	 32     1  kind (opaque)
//	 33     1  codec (opaque)
//	 34     2  reserved, zero
//	 36     8  raw length (u64): decoded size of the object
//	 44     8  stored length (u64): number of stored bytes that follow
//	 52     4  CRC-32C of the stored bytes (0 for an empty entry)
//	 56     4  CRC-32C of bytes 0..56 of this entry header
//
// The first entry header starts at offset 24; each next one starts right
// after the previous entry's stored bytes. The per-entry headers duplicate
// the table so that Scan can recover the entries of a pack whose table or
// footer is damaged or missing (a torn or truncated file) by walking them.
//
// Table, 64 bytes per entry, in the order the entries appear in the file,
// starting at the trailer offset right after the last entry's stored bytes:
//
//	off  size  field
//	  0    32  object ID
//	 32     1  kind
//	 33     1  codec
//	 34     2  reserved, zero
//	 36     4  CRC-32C of the stored bytes
//	 40     8  offset of the stored bytes (u64); the entry header is the
//	           60 bytes before it
//	 48     8  raw length (u64)
//	 56     8  stored length (u64)
//
// Footer, 32 bytes, the last bytes of the file:
//
//	off  size  field
//	  0     8  trailer offset (u64): offset of the table
//	  8     8  entry count (u64)
//	 16     4  CRC-32C of the table bytes
//	 20     4  CRC-32C of footer bytes 0..20
//	 24     8  magic "HEFTPEND"
//
// # Invariants checked by readers
//
// Open reads only the header, the footer and the table. It requires
//
//	file size = trailer offset + 64 × entry count + 32,
//
// bounds the entry count by what the file size allows (every entry takes at
// least 60 + 64 bytes) before allocating the table, and requires the table to
// describe the file exactly: the first stored bytes start at 24 + 60, each
// next entry's stored bytes start 60 bytes after the previous entry's end,
// the last entry ends at the trailer offset, reserved bytes are zero and no
// stored length exceeds MaxStoredLen. Every byte of the file is therefore
// covered by exactly one checksum (header, entry header, stored bytes, table,
// footer), and Verify detects every single-bit flip.
//
// # Pack ID and name
//
// The pack ID is the BLAKE3-256 of the table bytes: deterministic, cheap to
// compute, and it commits to every entry's ID, lengths, position and
// stored-bytes CRC. A finished pack is published as
//
//	DIR/<first 2 hex digits of the ID>/<64 hex digits>.pack
//
// Two packs with the same ID have the same header, entry headers, table and
// footer; their stored bytes have the same lengths and CRCs and decode to
// the same objects, so Finish keeps an existing pack of that name instead of
// replacing it (a finished pack is never modified). Temporary files are
// DIR/tmp-*.pack, so garbage collection can find leftovers of crashed
// writers by prefix; they are never referenced by the index.
//
// # Publishing order
//
// Writer.Finish: write table and footer → flush → chmod read-only → fsync →
// close → re-open and check size, header, footer and table against what was
// written (verify after write) → mkdir DIR/xx → rename → fsync DIR/xx →
// fsync DIR. Only then does it return, so the caller may commit index
// entries that refer to the pack.
//
// # Concurrency
//
// A Writer is used by one goroutine. A Reader (and ReadStoredAt) may be used
// by many goroutines at once: reads are positioned (pread) and share no
// state.
package pack
