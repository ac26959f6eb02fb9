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
//     already have for the whole plane, and encodes the four streams one
//     after the other; encode4X encodes them in one interleaved loop.
//   - Decompress4X decodes one symbol per table lookup. decode4X looks up
//     lookupBits at a time in a table that yields every symbol whose code
//     fits in those bits (up to 6; about 4 for an exponent plane with
//     2.6-bit average codes), the technique of zstd's HUF_decompress4X2.

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

func (t *huffTable) encTable(et *encTable) {
	for s := range et {
		et[s] = uint32(t.nbits[s]) | uint32(t.code[s])<<8
	}
}

// cost returns the encoded size in bits of data with the histogram hist.
func (t *huffTable) cost(hist *[256]uint32) uint64 {
	var n uint64
	for s, c := range hist {
		n += uint64(c) * uint64(t.nbits[s])
	}
	return n
}

func (t *huffTable) decTable(dt *decTable) {
	// single[i] = symbol | length<<8 for the code that the lookupBits-bit
	// prefix i starts with. A code of length l covers 2^(lookupBits-l)
	// consecutive prefixes starting at code << (lookupBits-l).
	var single [1 << lookupBits]uint16
	for s := 0; s < 256; s++ {
		l := t.nbits[s]
		if l == 0 {
			continue
		}
		lo := int(t.code[s]) << (lookupBits - l)
		hi := lo + 1<<(lookupBits-l)
		v := uint16(s) | uint16(l)<<8
		for i := lo; i < hi; i++ {
			single[i] = v
		}
	}
	const mask = 1<<lookupBits - 1
	for i := range dt {
		first := single[i]
		syms := uint64(first & 0xff)
		used := uint(first >> 8)
		n := uint64(1)
		for n < maxSymsPerLookup {
			next := single[(i<<used)&mask]
			l := uint(next >> 8)
			if used+l > lookupBits {
				break
			}
			syms |= uint64(next&0xff) << (8 * n)
			used += l
			n++
		}
		dt[i] = uint64(used) | n<<8 | uint64(first>>8)<<12 | syms<<16
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
// have a code.
func encode4X(dst, src []byte, et *encTable) []byte {
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
	// Streams 0-2 have seg symbols and stream 3 at most as many, so the
	// pairs are in the order encode2 needs.
	encode2(buf, src, et, &w[0], &w[1], lo[0], hi[0], lo[1], hi[1])
	encode2(buf, src, et, &w[2], &w[3], lo[2], hi[2], lo[3], hi[3])

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

// encode2 encodes two streams in one loop, so that the chains of
// container updates of both overlap: stream a is src[a0:a1], stream b
// src[b0:b1], back to front. Both lengths are multiples of 4 and
// a1-a0 >= b1-b0.
func encode2(buf, src []byte, et *encTable, wa, wb *bitWriter, a0, a1, b0, b1 int) {
	ca, na, pa := wa.c, wa.nb, wa.pos
	cb, nb, pb := wb.c, wb.nb, wb.pos
	for b1 > b0 {
		a1 -= 4
		b1 -= 4
		sa := src[a1 : a1+4 : a1+4]
		sb := src[b1 : b1+4 : b1+4]
		// Four codes of at most 11 bits on top of at most 7 pending bits
		// fit the 64-bit container.
		x, y := et[sa[3]], et[sb[3]]
		ca |= uint64(x>>8) << (na & 63)
		cb |= uint64(y>>8) << (nb & 63)
		na += uint(x & 0xff)
		nb += uint(y & 0xff)
		x, y = et[sa[2]], et[sb[2]]
		ca |= uint64(x>>8) << (na & 63)
		cb |= uint64(y>>8) << (nb & 63)
		na += uint(x & 0xff)
		nb += uint(y & 0xff)
		x, y = et[sa[1]], et[sb[1]]
		ca |= uint64(x>>8) << (na & 63)
		cb |= uint64(y>>8) << (nb & 63)
		na += uint(x & 0xff)
		nb += uint(y & 0xff)
		x, y = et[sa[0]], et[sb[0]]
		ca |= uint64(x>>8) << (na & 63)
		cb |= uint64(y>>8) << (nb & 63)
		na += uint(x & 0xff)
		nb += uint(y & 0xff)
		binary.LittleEndian.PutUint64(buf[pa:], ca)
		binary.LittleEndian.PutUint64(buf[pb:], cb)
		pa += int(na >> 3)
		pb += int(nb >> 3)
		ca >>= (na &^ 7) & 63
		cb >>= (nb &^ 7) & 63
		na &= 7
		nb &= 7
	}
	for a1 > a0 {
		a1 -= 4
		sa := src[a1 : a1+4 : a1+4]
		for i := 3; i >= 0; i-- {
			x := et[sa[i]]
			ca |= uint64(x>>8) << (na & 63)
			na += uint(x & 0xff)
		}
		binary.LittleEndian.PutUint64(buf[pa:], ca)
		pa += int(na >> 3)
		ca >>= (na &^ 7) & 63
		na &= 7
	}
	wa.c, wa.nb, wa.pos = ca, na, pa
	wb.c, wb.nb, wb.pos = cb, nb, pb
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
	decode2(dst, src, dt, &st[0], &st[1])
	decode2(dst, src, dt, &st[2], &st[3])
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

// decode2 decodes two streams in one loop while both have a full 8-byte
// window of input (57+ bits after the refill, at most 4*11 used) and room
// for four 8-byte stores of at most 6 symbols; decodeTail finishes them.
// Two streams rather than four: with four, Go spills the stream state to
// the stack on every lookup.
func decode2(dst, src []byte, dt *decTable, a, b *stream) {
	const room = 4*maxSymsPerLookup + 8
	fa, ba, oa := a.off, a.nb, a.o
	fb, bb, ob := b.off, b.nb, b.o
	sa, sb := a.start+8, b.start+8
	ea, eb := a.end-room, b.end-room
	for {
		fa -= int(ba >> 3)
		ba &= 7
		fb -= int(bb >> 3)
		bb &= 7
		if fa < sa || fb < sb || oa > ea || ob > eb {
			break
		}
		va := binary.LittleEndian.Uint64(src[fa-8:]) << ba
		vb := binary.LittleEndian.Uint64(src[fb-8:]) << bb

		x := dt[va>>(64-lookupBits)]
		y := dt[vb>>(64-lookupBits)]
		binary.LittleEndian.PutUint64(dst[oa:], x>>16)
		binary.LittleEndian.PutUint64(dst[ob:], y>>16)
		oa += int(x >> 8 & 7)
		ob += int(y >> 8 & 7)
		va <<= x & 63
		vb <<= y & 63
		ba += uint(x & 63)
		bb += uint(y & 63)

		x = dt[va>>(64-lookupBits)]
		y = dt[vb>>(64-lookupBits)]
		binary.LittleEndian.PutUint64(dst[oa:], x>>16)
		binary.LittleEndian.PutUint64(dst[ob:], y>>16)
		oa += int(x >> 8 & 7)
		ob += int(y >> 8 & 7)
		va <<= x & 63
		vb <<= y & 63
		ba += uint(x & 63)
		bb += uint(y & 63)

		x = dt[va>>(64-lookupBits)]
		y = dt[vb>>(64-lookupBits)]
		binary.LittleEndian.PutUint64(dst[oa:], x>>16)
		binary.LittleEndian.PutUint64(dst[ob:], y>>16)
		oa += int(x >> 8 & 7)
		ob += int(y >> 8 & 7)
		va <<= x & 63
		vb <<= y & 63
		ba += uint(x & 63)
		bb += uint(y & 63)

		x = dt[va>>(64-lookupBits)]
		y = dt[vb>>(64-lookupBits)]
		binary.LittleEndian.PutUint64(dst[oa:], x>>16)
		binary.LittleEndian.PutUint64(dst[ob:], y>>16)
		oa += int(x >> 8 & 7)
		ob += int(y >> 8 & 7)
		ba += uint(x & 63)
		bb += uint(y & 63)
	}
	a.off, a.nb, a.o = fa, ba, oa
	b.off, b.nb, b.o = fb, bb, ob
}

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
