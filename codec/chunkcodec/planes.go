package chunkcodec

import (
	"encoding/binary"
	"math/bits"
)

// This file splits elements into byte planes and merges them back.
//
// Plane p holds byte p (little-endian significance) of every element after
// the transform. With the sign-rotate transform the top 16 bits of each
// element, s eeeeeeee mmmmmmm for BF16, are rotated left by one bit to
// eeeeeeee mmmmmmms, so that the 8 exponent bits of BF16 and F32 form one
// plane: the exponent of trained weights has an entropy of about 2.6 bits,
// while the mantissa bytes are close to random. Rotating only the top 16
// bits, rather than the whole F32, keeps the sign out of the low mantissa
// planes, which are all zero when an F32 tensor was upcast from BF16 and then
// collapse to a constant plane.
//
// Element order within a plane: elements are taken in groups of eight, and
// within a group the planes of 2-byte elements list them in the order
// 0 4 1 5 2 6 3 7, those of 4-byte elements in the order 0 2 4 6 1 3 5 7 (1-
// and 8-byte elements keep their order). The last n mod 8 elements of a
// chunk keep their order. The entropy coders do not care about the order,
// and this one lets a group be split or merged with a few masks and shifts
// on 64-bit words (a byte interleave of two words) instead of a full byte
// transpose, which Go compiles to about three times as many instructions.

const (
	lo7 = 0x7f7f7f7f7f7f7f7f
	lo1 = 0x0101010101010101
	m8  = 0x00ff00ff00ff00ff
	m16 = 0x0000ffff0000ffff
)

// rotl1 and rotr1 rotate each 16-bit value made of bytes (hi, lo) of eight
// elements by one bit, working on the two planes: the high bit of hi moves
// to the bottom of lo and the high bit of lo to the bottom of hi.
func rotl1(hi, lo uint64) (uint64, uint64) {
	return hi<<1&^lo1 | lo>>7&lo1, lo<<1&^lo1 | hi>>7&lo1
}

func rotr1(hi, lo uint64) (uint64, uint64) {
	return hi>>1&lo7 | (lo&lo1)<<7, lo>>1&lo7 | (hi&lo1)<<7
}

// split2 splits 2-byte elements: lo[i], hi[i] = bytes 0, 1 of element i.
func split2(src, lo, hi []byte, rotate bool) {
	n := len(lo)
	hi = hi[:n]
	i := 0
	if rotate {
		for ; i+8 <= n; i += 8 {
			s := src[2*i : 2*i+16 : 2*i+16]
			a := binary.LittleEndian.Uint64(s)
			b := binary.LittleEndian.Uint64(s[8:])
			h, l := rotl1((a>>8)&m8|b&^m8, a&m8|(b&m8)<<8)
			put64(lo, i, l)
			put64(hi, i, h)
		}
	} else {
		for ; i+8 <= n; i += 8 {
			s := src[2*i : 2*i+16 : 2*i+16]
			a := binary.LittleEndian.Uint64(s)
			b := binary.LittleEndian.Uint64(s[8:])
			put64(lo, i, a&m8|(b&m8)<<8)
			put64(hi, i, (a>>8)&m8|b&^m8)
		}
	}
	for ; i < n; i++ {
		v := binary.LittleEndian.Uint16(src[2*i:])
		if rotate {
			v = bits.RotateLeft16(v, 1)
		}
		lo[i], hi[i] = byte(v), byte(v>>8)
	}
}

// merge2 is the inverse of split2.
func merge2(dst, lo, hi []byte, rotate bool) {
	n := len(lo)
	hi = hi[:n]
	i := 0
	if rotate {
		for ; i+8 <= n; i += 8 {
			h, l := rotr1(le64(hi, i), le64(lo, i))
			d := dst[2*i : 2*i+16 : 2*i+16]
			binary.LittleEndian.PutUint64(d, l&m8|(h&m8)<<8)
			binary.LittleEndian.PutUint64(d[8:], (l>>8)&m8|h&^m8)
		}
	} else {
		for ; i+8 <= n; i += 8 {
			l := le64(lo, i)
			h := le64(hi, i)
			d := dst[2*i : 2*i+16 : 2*i+16]
			binary.LittleEndian.PutUint64(d, l&m8|(h&m8)<<8)
			binary.LittleEndian.PutUint64(d[8:], (l>>8)&m8|h&^m8)
		}
	}
	for ; i < n; i++ {
		v := uint16(lo[i]) | uint16(hi[i])<<8
		if rotate {
			v = bits.RotateLeft16(v, -1)
		}
		binary.LittleEndian.PutUint16(dst[2*i:], v)
	}
}

// split4 splits 4-byte elements into p[0..3]: a byte interleave of word
// pairs, then of 16-bit halves.
func split4(src []byte, p *[8][]byte, rotate bool) {
	p0, p1, p2, p3 := p[0], p[1], p[2], p[3]
	n := len(p0)
	p1, p2, p3 = p1[:n], p2[:n], p3[:n]
	i := 0
	for ; i+8 <= n; i += 8 {
		s := src[4*i : 4*i+32 : 4*i+32]
		w0 := binary.LittleEndian.Uint64(s)
		w1 := binary.LittleEndian.Uint64(s[8:])
		w2 := binary.LittleEndian.Uint64(s[16:])
		w3 := binary.LittleEndian.Uint64(s[24:])
		t0, t1 := w0&m8|(w1&m8)<<8, (w0>>8)&m8|w1&^m8
		t2, t3 := w2&m8|(w3&m8)<<8, (w2>>8)&m8|w3&^m8
		q0, q2 := t0&m16|(t2&m16)<<16, (t0>>16)&m16|t2&^m16
		q1, q3 := t1&m16|(t3&m16)<<16, (t1>>16)&m16|t3&^m16
		if rotate {
			q3, q2 = rotl1(q3, q2)
		}
		put64(p0, i, q0)
		put64(p1, i, q1)
		put64(p2, i, q2)
		put64(p3, i, q3)
	}
	for ; i < n; i++ {
		v := binary.LittleEndian.Uint32(src[4*i:])
		if rotate {
			v = v&0xffff | uint32(bits.RotateLeft16(uint16(v>>16), 1))<<16
		}
		p0[i], p1[i], p2[i], p3[i] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
}

// merge4 is the inverse of split4.
func merge4(dst []byte, p *[8][]byte, rotate bool) {
	p0, p1, p2, p3 := p[0], p[1], p[2], p[3]
	n := len(p0)
	p1, p2, p3 = p1[:n], p2[:n], p3[:n]
	i := 0
	for ; i+8 <= n; i += 8 {
		q0 := le64(p0, i)
		q1 := le64(p1, i)
		q2 := le64(p2, i)
		q3 := le64(p3, i)
		if rotate {
			q3, q2 = rotr1(q3, q2)
		}
		t0, t2 := q0&m16|(q2&m16)<<16, (q0>>16)&m16|q2&^m16
		t1, t3 := q1&m16|(q3&m16)<<16, (q1>>16)&m16|q3&^m16
		d := dst[4*i : 4*i+32 : 4*i+32]
		binary.LittleEndian.PutUint64(d, t0&m8|(t1&m8)<<8)
		binary.LittleEndian.PutUint64(d[8:], (t0>>8)&m8|t1&^m8)
		binary.LittleEndian.PutUint64(d[16:], t2&m8|(t3&m8)<<8)
		binary.LittleEndian.PutUint64(d[24:], (t2>>8)&m8|t3&^m8)
	}
	for ; i < n; i++ {
		v := uint32(p0[i]) | uint32(p1[i])<<8 | uint32(p2[i])<<16 | uint32(p3[i])<<24
		if rotate {
			v = v&0xffff | uint32(bits.RotateLeft16(uint16(v>>16), -1))<<16
		}
		binary.LittleEndian.PutUint32(dst[4*i:], v)
	}
}

// splitN splits e-byte elements for any e (used for 8).
func splitN(src []byte, e int, p *[8][]byte, rotate bool) {
	n := len(p[0])
	for i := 0; i < n; i++ {
		el := src[e*i : e*i+e]
		for j, b := range el {
			p[j][i] = b
		}
		if rotate {
			v := bits.RotateLeft16(uint16(el[e-2])|uint16(el[e-1])<<8, 1)
			p[e-2][i], p[e-1][i] = byte(v), byte(v>>8)
		}
	}
}

// mergeN is the inverse of splitN.
func mergeN(dst []byte, e int, p *[8][]byte, rotate bool) {
	n := len(p[0])
	for i := 0; i < n; i++ {
		el := dst[e*i : e*i+e]
		for j := range el {
			el[j] = p[j][i]
		}
		if rotate {
			v := bits.RotateLeft16(uint16(el[e-2])|uint16(el[e-1])<<8, -1)
			el[e-2], el[e-1] = byte(v), byte(v>>8)
		}
	}
}

// splitPlanes splits the n = len(p[0]) elements of src into p[0..e-1].
func splitPlanes(src []byte, e int, p *[8][]byte, rotate bool) {
	switch e {
	case 1:
		copy(p[0], src)
	case 2:
		split2(src, p[0], p[1], rotate)
	case 4:
		split4(src, p, rotate)
	default:
		splitN(src, e, p, rotate)
	}
}

// mergePlanes is the inverse of splitPlanes.
func mergePlanes(dst []byte, e int, p *[8][]byte, rotate bool) {
	switch e {
	case 1:
		copy(dst, p[0])
	case 2:
		merge2(dst, p[0], p[1], rotate)
	case 4:
		merge4(dst, p, rotate)
	default:
		mergeN(dst, e, p, rotate)
	}
}

// count4 counts the bytes of w, one table each. Shifting one register
// keeps a single value live (extracting each byte from a uint64 directly
// made Go spill the extracted indexes), and four bytes keep it within Go's
// inlining budget.
func count4(t *[4][256]uint32, w uint32) {
	t[0][uint8(w)]++
	w >>= 8
	t[1][uint8(w)]++
	w >>= 8
	t[2][uint8(w)]++
	t[3][uint8(w>>8)]++
}

// histogram adds the byte counts of b to h. Eight tables break the chain
// of increments to the same counter that skewed data (an exponent plane has
// a few very common values) would otherwise serialize on.
func histogram(h *[256]uint32, b []byte) {
	var t [8][256]uint32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := le64(b, i)
		count4((*[4][256]uint32)(t[:4]), uint32(w))
		count4((*[4][256]uint32)(t[4:]), uint32(w>>32))
	}
	for _, v := range b[i:] {
		t[0][v]++
	}
	for s := range h {
		h[s] += t[0][s] + t[1][s] + t[2][s] + t[3][s] + t[4][s] + t[5][s] + t[6][s] + t[7][s]
	}
}
