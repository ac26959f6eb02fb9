package chunkcodec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"

	"github.com/klauspost/compress/fse"
	"github.com/klauspost/compress/huff0"
)

// This file holds the Huffman layer of ByteGrouped. The bit format is
// huff0's (the zstd literals format, RFC 8878 §4.2.1): a table description
// of Huffman weights, and 4X blocks of four backward bit streams behind a
// 6-byte jump table. Tables are built and serialized by huff0 itself
// (Scratch.BuildCTable, Scratch.AppendTable), and the tests decode every
// block this package writes with huff0's decoder as well.
//
// The bit streams are written and read by our own loops rather than by
// huff0.Compress4X and Decoder.Decompress4X because those measured about
// 0.5 GB/s and 1.0 GB/s per core on the exponent plane of BF16 weights,
// which makes the codec targets (1.1 / 1.7 GB/s of BF16 input) unreachable:
//   - Compress4X always recounts the histogram of its input, which we
//     already have from planning, and builds a table per block; encode4X
//     takes the table of a run of blocks (plan.go) and looks up the codes
//     of two symbols at once (pairTable), 1.6 GB/s.
//   - Decompress4X decodes one symbol per table lookup. decode4X looks up
//     lookupBits at a time in a table that yields every symbol whose code
//     fits in those bits (up to 6; about 4 for an exponent plane with
//     2.6-bit average codes), the technique of zstd's HUF_decompress4X2,
//     2.0 GB/s.

const (
	// maxTableLog is the longest code huff0 builds and accepts.
	maxTableLog = 11

	// lookupBits is the width of a decode-table index. It is at least
	// maxTableLog so the first symbol of every lookup is always complete.
	lookupBits = 11

	// maxSymsPerLookup bounds the symbols one decode-table entry yields; six
	// symbol bytes plus two bytes of lengths fill a uint64.
	maxSymsPerLookup = 6

	// minHuffBlock is the smallest block coded with Huffman; a smaller
	// block is stored raw. It keeps all four streams non-empty.
	minHuffBlock = 64

	// jumpTableSize is the 4X header: three little-endian uint16 stream
	// lengths (the fourth stream takes the rest).
	jumpTableSize = 6
)

// huffTable is a parsed Huffman table description: the code of every
// symbol, in huff0's canonical assignment.
type huffTable struct {
	nbits    [256]uint8  // code length; 0 if the symbol does not occur
	code     [256]uint16 // code value, nbits wide
	tableLog uint8       // longest code length
}

// encTable packs nbits | code<<8 per symbol for the encoder's loop.
type encTable [256]uint32

// pairTable holds the codes of two symbols at once for the encoder, indexed
// by the two bytes as a little-endian uint16, lo | hi<<8: since streams are
// written back to front, hi's code goes first (low bits), then lo's. code
// is the combined code (at most 22 bits) and len its length. Looking up
// pairs halves the table loads and the shifts into the bit container, which
// dominate encoding; separate code and length arrays save the unpacking.
// Only entries of two symbols that occur are filled; the others are never
// read.
type pairTable struct {
	code [1 << 16]uint32
	len  [1 << 16]uint8
}

// minPairRatio: a pair table costs one entry per pair of symbols that
// occur, so it is only built when the plane is at least this many times
// larger.
const minPairRatio = 8

// decTable maps the next lookupBits bits of a stream, most significant bit
// first, to the symbols they start with. Entry layout:
//
//	bits  0-5   total code length of the n symbols (so that e&63 is the
//	            shift, which x86 applies to a register for free)
//	bits  8-10  number of symbols n (1..6)
//	bits 12-15  code length of the first symbol
//	bits 16-63  up to six decoded symbols, first in the low byte
type decTable [1 << lookupBits]uint64

// parseTable reads a huff0 table description from the start of in and
// returns the number of bytes it used. It applies every check huff0's
// ReadTable applies, so a table is accepted here exactly when huff0 would
// accept it. fs is scratch for the FSE-compressed form.
func parseTable(t *huffTable, in []byte, fs *fse.Scratch) (int, error) {
	var weights [256]uint8
	var nw int // number of explicit weights; the last symbol's is implied
	if len(in) < 2 {
		return 0, corrupt("huffman table too short")
	}
	used := 0
	if h := in[0]; h >= 128 {
		// Weights stored directly, 4 bits each.
		nw = int(h) - 127
		nb := (nw + 1) / 2
		if 1+nb > len(in) {
			return 0, corrupt("huffman table truncated")
		}
		for i := 0; i < nw; i += 2 {
			v := in[1+i/2]
			weights[i] = v >> 4
			weights[i+1] = v & 15
		}
		used = 1 + nb
	} else {
		n := int(h)
		if 1+n > len(in) || n == 0 {
			return 0, corrupt("huffman table truncated")
		}
		// The low nibble is the weight FSE table log minus 5; the
		// format limits it to 6.
		if in[1]&15+5 > 6 {
			return 0, corrupt("huffman weights table log too big")
		}
		fs.DecompressLimit = 255
		fs.Out = fs.Out[:0]
		w, err := fse.Decompress(in[1:1+n], fs)
		if err != nil {
			return 0, corrupt("huffman weights: " + err.Error())
		}
		if len(w) > 255 {
			return 0, corrupt("huffman table has too many symbols")
		}
		nw = copy(weights[:], w)
		used = 1 + n
	}

	var rankCount [16]uint32
	var total uint32
	for _, w := range weights[:nw] {
		if w > maxTableLog {
			return 0, corrupt("huffman weight too large")
		}
		rankCount[w]++
		if w > 0 {
			total += 1 << (w - 1)
		}
	}
	if total == 0 {
		return 0, corrupt("huffman weights all zero")
	}
	tableLog := uint32(bits.Len32(total))
	if tableLog > maxTableLog {
		return 0, corrupt("huffman table log too big")
	}
	// The implied weight of the last symbol completes the sum to a power
	// of two.
	rest := uint32(1)<<tableLog - total
	if rest&(rest-1) != 0 {
		return 0, corrupt("huffman weights do not form a prefix code")
	}
	last := uint8(bits.Len32(rest))
	weights[nw] = last
	rankCount[last]++
	nsym := nw + 1
	if rankCount[1] < 2 || rankCount[1]&1 != 0 {
		return 0, corrupt("huffman weights do not form a prefix code")
	}

	// Canonical codes as huff0 assigns them: weight w means a code of
	// tableLog+1-w bits; codes of the same length are consecutive in
	// symbol order, and longer codes precede shorter ones.
	var rankStart [maxTableLog + 2]uint32
	next := uint32(0)
	for w := 1; w <= int(tableLog); w++ {
		rankStart[w] = next
		next += rankCount[w] << (w - 1)
	}
	*t = huffTable{tableLog: uint8(tableLog)}
	for s, w := range weights[:nsym] {
		if w == 0 {
			continue
		}
		t.nbits[s] = uint8(tableLog) + 1 - w
		t.code[s] = uint16(rankStart[w] >> (w - 1))
		rankStart[w] += 1 << (w - 1)
	}
	return used, nil
}

// buildTable builds a Huffman table for the histogram with huff0, appends
// its description to dst and parses it back into t, so that the encoder
// uses exactly the codes a decoder will derive. hist must have at least two
// non-zero counts.
func buildTable(dst []byte, t *huffTable, hist *[256]uint32, hs *huff0.Scratch, fs *fse.Scratch) ([]byte, error) {
	hs.TableLog = maxTableLog
	if err := hs.BuildCTable(hist); err != nil {
		return dst, err
	}
	start := len(dst)
	dst, err := hs.AppendTable(dst)
	if err != nil {
		return dst[:start], err
	}
	n, err := parseTable(t, dst[start:], fs)
	if err != nil || n != len(dst)-start {
		// Our parser disagrees with huff0's writer: a bug, not bad input.
		return dst[:start], fmt.Errorf("chunkcodec: internal error: huff0 table does not parse (%v)", err)
	}
	for s, c := range hist {
		if c != 0 && t.nbits[s] == 0 {
			return dst[:start], errors.New("chunkcodec: internal error: huff0 table misses a symbol")
		}
	}
	return dst, nil
}

// encTable fills et for t.
func (t *huffTable) encTable(et *encTable) {
	for s := range et {
		et[s] = uint32(t.nbits[s]) | uint32(t.code[s])<<8
	}
}

// fillPairs fills the entries of pt for every pair of symbols with a code.
func (et *encTable) fillPairs(pt *pairTable) {
	var syms [256]byte
	k := 0
	for s, e := range et {
		if e&0xff != 0 {
			syms[k] = byte(s)
			k++
		}
	}
	for _, hi := range syms[:k] {
		eh := et[hi]
		row := pt.code[int(hi)<<8 : int(hi)<<8+256]
		lrow := pt.len[int(hi)<<8 : int(hi)<<8+256]
		for _, lo := range syms[:k] {
			el := et[lo]
			row[lo] = eh>>8 | (el>>8)<<(eh&0xff)
			lrow[lo] = uint8(eh&0xff + el&0xff)
		}
	}
}

// symbols returns how many symbols have a code.
func (et *encTable) symbols() int {
	k := 0
	for _, e := range et {
		if e&0xff != 0 {
			k++
		}
	}
	return k
}

// cost returns the encoded size in bits of data with the histogram hist.
func (t *huffTable) cost(hist *[256]uint32) uint64 {
	var n uint64
	for s, c := range hist {
		n += uint64(c) * uint64(t.nbits[s])
	}
	return n
}

// decTable fills dt for t. It costs about 6 µs, once per table.
//
// An entry of dt lists the symbols that the lookupBits-bit window starts
// with. It is built from the shorter windows up: let w_k[j] be the entry for
// the k-bit window j (k <= lookupBits, j's bits the most significant ones).
// Its first symbol is the one whose code of length l <= k is a prefix of j,
// and what follows is w_{k-l}[j mod 2^(k-l)], the entry of the bits after
// that code, less its sixth symbol if it has six (an entry holds at most
// maxSymsPerLookup). Going over the symbols' codes rather than over the
// windows, w_k for a symbol of length l is 2^(k-l) consecutive entries
// derived from w_{k-l} in order, with no dependent loads; windows that no
// code of length <= k starts (the prefix of a longer code) are empty.
func (t *huffTable) decTable(dt *decTable) {
	// w holds w_0 .. w_{lookupBits-1}, w_k at offset 2^k - 1; w_0 and
	// every window nothing decodes in stay 0 (no symbols, length 0).
	var w [1<<lookupBits - 1]uint64
	var syms [256]uint8
	ns := 0
	for s := range 256 {
		if t.nbits[s] != 0 {
			syms[ns] = uint8(s)
			ns++
		}
	}
	for k := 1; k <= lookupBits; k++ {
		var out []uint64
		if k == lookupBits {
			out = dt[:]
		} else {
			out = w[1<<k-1 : 1<<(k+1)-1]
		}
		for _, s := range syms[:ns] {
			l := int(t.nbits[s])
			if l > k {
				continue
			}
			r := k - l
			rest := w[1<<r-1 : 1<<(r+1)-1]
			dst := out[int(t.code[s])<<r:]
			dst = dst[:len(rest)]
			first := uint64(l) | 1<<8 | uint64(l)<<12 | uint64(s)<<16
			for i, x := range rest {
				if x>>8&7 == maxSymsPerLookup {
					// Drop the sixth symbol.
					x = x&^(0xff<<56|7<<8|63) | (x&63 - uint64(t.nbits[x>>56])) | (maxSymsPerLookup-1)<<8
				}
				dst[i] = first + (x&63 | x&(7<<8)) + (x>>16)<<24
			}
		}
	}
}

// maxStreamBytes bounds one encoded stream of n symbols: maxTableLog bits
// per symbol, the end mark, and 8 bytes of slack for the last 8-byte store.
func maxStreamBytes(n int) int { return (n*maxTableLog+8)/8 + 8 }

// maxHuffBlock is the largest block encode4X takes: each of the four
// streams then holds at most 32 Ki symbols of at most 11 bits, which keeps
// its length inside the uint16 jump table.
const maxHuffBlock = 1 << 17

// encode4X appends the huff0 4X encoding of src to dst: the jump table and
// four streams of (len(src)+3)/4 symbols, the last taking the remainder.
// minHuffBlock <= len(src) <= maxHuffBlock, and every symbol of src must
// have a code. pt, if not nil, must have been filled from et.
func encode4X(dst, src []byte, et *encTable, pt *pairTable) []byte {
	seg := (len(src) + 3) / 4
	room := maxStreamBytes(seg)
	base := len(dst)
	need := jumpTableSize + 4*room
	dst = slices.Grow(dst, need)
	buf := dst[:base+need]

	// Stream k is written to buf[base+6+k*room:], then moved down to close
	// the gaps. Streams are encoded back to front, so that the decoder,
	// which reads each stream from its end, gets the symbols in order.
	var w [4]bitWriter
	var lo, hi [4]int
	for k := range w {
		w[k].pos = base + jumpTableSize + k*room
		lo[k], hi[k] = k*seg, min(k*seg+seg, len(src))
		// The odd symbols first, one at a time, so that what remains of
		// every stream is a whole number of 4-symbol groups.
		for (hi[k]-lo[k])&3 != 0 {
			hi[k]--
			e := et[src[hi[k]]]
			w[k].c |= uint64(e>>8) << (w[k].nb & 63)
			w[k].nb += uint(e & 0xff)
		}
		w[k].flush(buf)
	}
	for k := range w {
		if pt != nil {
			encode1p(buf, src[lo[k]:hi[k]], pt, &w[k])
		} else {
			encode1(buf, src[lo[k]:hi[k]], et, &w[k])
		}
	}

	pos := w[0].close(buf)
	for k := 1; k < 4; k++ {
		start := base + jumpTableSize + k*room
		pos += copy(buf[pos:], buf[start:w[k].close(buf)])
	}
	for k := 0; k < 3; k++ {
		n := w[k].pos - (base + jumpTableSize + k*room)
		binary.LittleEndian.PutUint16(buf[base+2*k:], uint16(n))
	}
	return buf[:pos]
}

// encode1 encodes one stream, src back to front; len(src) is a multiple
// of 4. Streams are encoded one at a time: interleaving two or four in one
// loop (so that their dependency chains overlap) measured slower, because
// Go then spills the writer state to the stack on every group.
func encode1(buf, src []byte, et *encTable, w *bitWriter) {
	c, nb, pos := w.c, w.nb, w.pos
	for i := len(src) - 4; i >= 0; i -= 4 {
		s := src[i : i+4 : i+4]
		// Four codes of at most 11 bits on top of at most 7 pending bits
		// fit the 64-bit container.
		x := et[s[3]]
		c |= uint64(x>>8) << (nb & 63)
		nb += uint(x & 0xff)
		x = et[s[2]]
		c |= uint64(x>>8) << (nb & 63)
		nb += uint(x & 0xff)
		x = et[s[1]]
		c |= uint64(x>>8) << (nb & 63)
		nb += uint(x & 0xff)
		x = et[s[0]]
		c |= uint64(x>>8) << (nb & 63)
		nb += uint(x & 0xff)
		put64(buf, pos, c)
		pos += int(nb >> 3)
		c >>= (nb &^ 7) & 63
		nb &= 7
	}
	w.c, w.nb, w.pos = c, nb, pos
}

// encode1p is encode1 with a pair table.
func encode1p(buf, src []byte, pt *pairTable, w *bitWriter) {
	c, nb, pos := w.c, w.nb, w.pos
	for i := len(src) - 4; i >= 0; i -= 4 {
		s := binary.LittleEndian.Uint32(src[i : i+4])
		hi, lo := s>>16, s&0xffff
		c |= uint64(pt.code[hi]) << (nb & 63)
		nb += uint(pt.len[hi])
		c |= uint64(pt.code[lo]) << (nb & 63)
		nb += uint(pt.len[lo])
		put64(buf, pos, c)
		pos += int(nb >> 3)
		c >>= (nb &^ 7) & 63
		nb &= 7
	}
	w.c, w.nb, w.pos = c, nb, pos
}

// bitWriter accumulates codes from the least significant bit up and
// stores whole bytes with one 8-byte write, like huff0's bitState.
type bitWriter struct {
	c   uint64
	nb  uint
	pos int
}

// flush stores the pending bits and keeps the partial byte, at most 7 bits.
func (w *bitWriter) flush(buf []byte) {
	binary.LittleEndian.PutUint64(buf[w.pos:], w.c)
	w.pos += int(w.nb >> 3)
	w.c >>= (w.nb &^ 7) & 63
	w.nb &= 7
}

// close writes the end mark, a single 1 bit above the last code, and the
// last partial byte, and returns the end of the stream.
func (w *bitWriter) close(buf []byte) int {
	if w.nb < 64 {
		w.c |= 1 << w.nb
		w.nb++
		binary.LittleEndian.PutUint64(buf[w.pos:], w.c)
		w.pos += int(w.nb+7) >> 3
		w.c, w.nb = 0, 64 // closed
	}
	return w.pos
}

// decode4X decodes a 4X block into exactly len(dst) symbols.
func decode4X(dst, src []byte, dt *decTable) error {
	n := len(dst)
	if n < minHuffBlock || n > maxHuffBlock {
		return corrupt("huffman block size")
	}
	if len(src) < jumpTableSize+4 {
		return corrupt("huffman block truncated")
	}
	seg := (n + 3) / 4
	var st [4]stream
	pos := jumpTableSize
	for k := range st {
		l := len(src) - pos
		if k < 3 {
			l = int(binary.LittleEndian.Uint16(src[2*k:]))
		}
		if l <= 0 || l > len(src)-pos {
			return corrupt("huffman jump table out of range")
		}
		last := src[pos+l-1]
		if last == 0 {
			return corrupt("huffman stream has no end mark")
		}
		// The first bits of a stream, read from its end, are the zero
		// padding and the 1 end mark of its last byte.
		st[k] = stream{start: pos, off: pos + l, nb: uint(bits.LeadingZeros8(last) + 1), o: k * seg, end: min(k*seg+seg, n)}
		pos += l
	}
	decode4(dst, src, dt, &st)
	for k := range st {
		s := &st[k]
		if err := decodeTail(dst[:s.end], s.o, src[s.start:], s.off-s.start, int(s.nb), dt); err != nil {
			return err
		}
	}
	return nil
}

// stream is the state of one bit stream of a 4X block: the unread part is
// src[start:off], of whose last 8 bytes the top nb bits are consumed, and
// the stream's symbols go to dst[o:end].
type stream struct {
	start, off int
	nb         uint
	o, end     int
}

// decode4 decodes the four streams in one loop, so that the chains of
// table lookups of the four overlap, while all have a full 8-byte window of
// input (57+ bits after a refill) and room for the 8-byte stores;
// decodeTail finishes them. One round makes three lookups per stream, at
// most 3*11 bits and 3*6 symbols; the rounds that are safe are counted up
// front so that the round itself has no checks but Go's bounds checks.
func decode4(dst, src []byte, dt *decTable, st *[4]stream) {
	const (
		inPerRound  = (3*lookupBits + 7) / 8 // bytes of input a round may use
		outPerRound = 3 * maxSymsPerLookup   // symbols a round may write
		outSlack    = 8                      // the last store writes 8 bytes
	)
	f0, b0, o0 := st[0].off, st[0].nb, st[0].o
	f1, b1, o1 := st[1].off, st[1].nb, st[1].o
	f2, b2, o2 := st[2].off, st[2].nb, st[2].o
	f3, b3, o3 := st[3].off, st[3].nb, st[3].o
	for {
		f0 -= int(b0 >> 3)
		b0 &= 7
		f1 -= int(b1 >> 3)
		b1 &= 7
		f2 -= int(b2 >> 3)
		b2 &= 7
		f3 -= int(b3 >> 3)
		b3 &= 7
		rounds := min(
			(f0-st[0].start-8)/inPerRound, (f1-st[1].start-8)/inPerRound,
			(f2-st[2].start-8)/inPerRound, (f3-st[3].start-8)/inPerRound,
			(st[0].end-outSlack-o0)/outPerRound, (st[1].end-outSlack-o1)/outPerRound,
			(st[2].end-outSlack-o2)/outPerRound, (st[3].end-outSlack-o3)/outPerRound)
		if rounds <= 0 {
			break
		}
		for ; rounds > 0; rounds-- {
			v0 := le64(src, f0-8) << (b0 & 7)
			v1 := le64(src, f1-8) << (b1 & 7)
			v2 := le64(src, f2-8) << (b2 & 7)
			v3 := le64(src, f3-8) << (b3 & 7)
			x0 := dt[v0>>(64-lookupBits)]
			x1 := dt[v1>>(64-lookupBits)]
			x2 := dt[v2>>(64-lookupBits)]
			x3 := dt[v3>>(64-lookupBits)]
			put64(dst, o0, bits.RotateLeft64(x0, -16))
			put64(dst, o1, bits.RotateLeft64(x1, -16))
			put64(dst, o2, bits.RotateLeft64(x2, -16))
			put64(dst, o3, bits.RotateLeft64(x3, -16))
			o0 += int(x0 >> 8 & 7)
			o1 += int(x1 >> 8 & 7)
			o2 += int(x2 >> 8 & 7)
			o3 += int(x3 >> 8 & 7)
			v0 <<= x0 & 63
			v1 <<= x1 & 63
			v2 <<= x2 & 63
			v3 <<= x3 & 63
			b0 += uint(x0 & 63)
			b1 += uint(x1 & 63)
			b2 += uint(x2 & 63)
			b3 += uint(x3 & 63)
			x0 = dt[v0>>(64-lookupBits)]
			x1 = dt[v1>>(64-lookupBits)]
			x2 = dt[v2>>(64-lookupBits)]
			x3 = dt[v3>>(64-lookupBits)]
			put64(dst, o0, bits.RotateLeft64(x0, -16))
			put64(dst, o1, bits.RotateLeft64(x1, -16))
			put64(dst, o2, bits.RotateLeft64(x2, -16))
			put64(dst, o3, bits.RotateLeft64(x3, -16))
			o0 += int(x0 >> 8 & 7)
			o1 += int(x1 >> 8 & 7)
			o2 += int(x2 >> 8 & 7)
			o3 += int(x3 >> 8 & 7)
			v0 <<= x0 & 63
			v1 <<= x1 & 63
			v2 <<= x2 & 63
			v3 <<= x3 & 63
			b0 += uint(x0 & 63)
			b1 += uint(x1 & 63)
			b2 += uint(x2 & 63)
			b3 += uint(x3 & 63)
			x0 = dt[v0>>(64-lookupBits)]
			x1 = dt[v1>>(64-lookupBits)]
			x2 = dt[v2>>(64-lookupBits)]
			x3 = dt[v3>>(64-lookupBits)]
			put64(dst, o0, bits.RotateLeft64(x0, -16))
			put64(dst, o1, bits.RotateLeft64(x1, -16))
			put64(dst, o2, bits.RotateLeft64(x2, -16))
			put64(dst, o3, bits.RotateLeft64(x3, -16))
			o0 += int(x0 >> 8 & 7)
			o1 += int(x1 >> 8 & 7)
			o2 += int(x2 >> 8 & 7)
			o3 += int(x3 >> 8 & 7)
			b0 += uint(x0 & 63)
			b1 += uint(x1 & 63)
			b2 += uint(x2 & 63)
			b3 += uint(x3 & 63)
			f0 -= int(b0 >> 3)
			b0 &= 7
			f1 -= int(b1 >> 3)
			b1 &= 7
			f2 -= int(b2 >> 3)
			b2 &= 7
			f3 -= int(b3 >> 3)
			b3 &= 7
		}
	}
	st[0].off, st[0].nb, st[0].o = f0, b0, o0
	st[1].off, st[1].nb, st[1].o = f1, b1, o1
	st[2].off, st[2].nb, st[2].o = f2, b2, o2
	st[3].off, st[3].nb, st[3].o = f3, b3, o3
}

// le64 and put64 load and store 8 bytes at b[i:]. A slice of constant
// length 8 needs no pointer masking, unlike b[i:], and both inline.
func le64(b []byte, i int) uint64 { return binary.LittleEndian.Uint64(b[i : i+8]) }

func put64(b []byte, i int, v uint64) { binary.LittleEndian.PutUint64(b[i:i+8], v) }

// decodeTail decodes symbols into dst[o:] until dst is full, reading the
// stream in[:off] whose top nb bits of in[off-8:off] are consumed. Every bit
// of the stream must be used by exactly the last symbol.
func decodeTail(dst []byte, o int, in []byte, off, nb int, dt *decTable) error {
	for {
		off -= nb >> 3
		nb &= 7
		remain := off*8 - nb
		if o == len(dst) {
			if remain != 0 {
				return corrupt("huffman stream longer than its symbols")
			}
			return nil
		}
		if remain <= 0 {
			return corrupt("huffman stream shorter than its symbols")
		}
		var v uint64
		if off >= 8 {
			v = binary.LittleEndian.Uint64(in[off-8:])
		} else {
			// Fewer than 8 bytes left: bits below the start read as
			// zero and are never consumed (checked against remain).
			for i := 0; i < off; i++ {
				v |= uint64(in[i]) << (8 * (8 - off + i))
			}
		}
		v <<= uint(nb)
		e := dt[v>>(64-lookupBits)]
		if cnt, l := int(e>>8&7), int(e&63); cnt <= len(dst)-o && l <= remain {
			for i := 0; i < cnt; i++ {
				dst[o+i] = byte(e >> (16 + 8*i))
			}
			o += cnt
			nb += l
			continue
		}
		l := int(e >> 12 & 15)
		if l > remain {
			return corrupt("huffman stream shorter than its symbols")
		}
		dst[o] = byte(e >> 16)
		o++
		nb += l
	}
}
