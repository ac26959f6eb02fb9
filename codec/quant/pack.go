package quant

import (
	"encoding/binary"
	"fmt"
)

// Layout is how compressed-tensors packs b-bit codes into int32 words (§5.5).
// The two layouts agree for b ∈ {1, 2, 4, 8}.
type Layout int

const (
	// Dense is pack_to_int32 since mid-2026: each row is a little-endian
	// bitstream (code i at bits [i·b, i·b+b)), so codes may straddle words;
	// a row takes cdiv(n·b, 32) words.
	Dense Layout = iota
	// ElementAligned is the layout before: ⌊32/b⌋ codes per word from the
	// low bits up, the remaining high bits zero; a row takes
	// cdiv(n, ⌊32/b⌋) words.
	ElementAligned
)

func (l Layout) String() string {
	if l == ElementAligned {
		return "element-aligned"
	}
	return "dense"
}

// PackedWords returns how many int32 words n b-bit codes take in layout l.
func PackedWords(n, bits int, l Layout) int { return packedWords(n, bits, l) }

func packedWords(n, bits int, l Layout) int {
	if n <= 0 || bits < 1 || bits > 8 {
		return 0
	}
	if l == ElementAligned {
		return cdiv(n, 32/bits)
	}
	return cdiv(n*bits, 32)
}

// codeBit returns where code i of a row starts: its word and bit offset.
func codeBit(i, bits int, l Layout) (word, off int) {
	if l == ElementAligned {
		per := 32 / bits
		return i / per, (i % per) * bits
	}
	return i * bits >> 5, i * bits & 31
}

// checkPackArgs validates the parameters shared by the packers; dims are
// the matrix dimensions, bounded so that no size computed from them can
// overflow.
func checkPackArgs(bits int, l Layout, dims ...int) error {
	if bits < 1 || bits > 8 {
		return invalidf("", "num_bits", "%d, want 1..8", bits)
	}
	if l != Dense && l != ElementAligned {
		return invalidf("", "layout", "unknown layout %d", l)
	}
	for _, d := range dims {
		if d < 0 || d > maxDim {
			return invalidf("", "shape", "dimension %d is out of range", d)
		}
	}
	return nil
}

// PackInt32 is compressed-tensors' pack_to_int32 along the last dimension
// (packed_dim=1): the signed codes of a [rows, cols] matrix, row-major, each
// in [−2^(b−1), 2^(b−1)−1], become [rows, PackedWords(cols)] int32 words. A
// code is stored unsigned (q + 2^(b−1)); the padding at the end of a row is
// zero bits.
func PackInt32(codes []int8, cols, bits int, l Layout) ([]int32, error) {
	if err := checkPackArgs(bits, l, cols); err != nil {
		return nil, err
	}
	if cols <= 0 {
		if len(codes) != 0 || cols < 0 {
			return nil, invalidf("", "cols", "%d columns for %d codes", cols, len(codes))
		}
		return []int32{}, nil
	}
	if len(codes)%cols != 0 {
		return nil, invalidf("", "cols", "%d codes is not a whole number of %d-column rows", len(codes), cols)
	}
	rows, w := len(codes)/cols, packedWords(cols, bits, l)
	out := make([]uint32, rows*w)
	for r := range rows {
		if err := packRow(out[r*w:(r+1)*w], codes[r*cols:(r+1)*cols], 1, bits, l); err != nil {
			return nil, fmt.Errorf("%w (row %d)", err, r)
		}
	}
	return asInt32(out), nil
}

// packRow packs n = len(codes)/stride codes, taken every stride elements,
// into words.
func packRow(words []uint32, codes []int8, stride, bits int, l Layout) error {
	lo, hi := -1<<(bits-1), 1<<(bits-1)-1
	for i, j := 0, 0; j < len(codes); i, j = i+1, j+stride {
		q := int(codes[j])
		if q < lo || q > hi {
			return invalidf("", "codes", "code %d at index %d is outside the %d-bit range [%d, %d]", q, i, bits, lo, hi)
		}
		u := uint32(q - lo)
		w, off := codeBit(i, bits, l)
		words[w] |= u << off
		if off+bits > 32 {
			words[w+1] |= u >> (32 - off)
		}
	}
	return nil
}

// UnpackInt32 is unpack_from_int32 along the last dimension: the inverse of
// PackInt32 for rows of cols codes. len(packed) must be a whole number of
// rows of PackedWords(cols) words.
func UnpackInt32(packed []int32, cols, bits int, l Layout) ([]int8, error) {
	if err := checkPackArgs(bits, l, cols); err != nil {
		return nil, err
	}
	if cols <= 0 {
		if len(packed) != 0 || cols < 0 {
			return nil, invalidf("", "cols", "%d columns for %d words", cols, len(packed))
		}
		return []int8{}, nil
	}
	w := packedWords(cols, bits, l)
	if len(packed)%w != 0 {
		return nil, invalidf("", "cols", "%d words is not a whole number of %d-word rows (%d %d-bit codes)", len(packed), w, cols, bits)
	}
	rows := len(packed) / w
	if rows == 0 {
		return []int8{}, nil // no scratch row: cols alone may be huge
	}
	out := make([]int8, rows*cols)
	u := make([]uint8, cols)
	off := int8(1 << (bits - 1))
	for r := range rows {
		unpackRowWords(u, packed[r*w:(r+1)*w], bits, l)
		for i, v := range u {
			out[r*cols+i] = int8(v) - off
		}
	}
	return out, nil
}

// unpackRowWords extracts len(dst) unsigned codes from one packed row.
func unpackRowWords(dst []uint8, words []int32, bits int, l Layout) {
	mask := uint64(1)<<bits - 1
	for i := range dst {
		w, off := codeBit(i, bits, l)
		v := uint64(uint32(words[w]))
		if off+bits > 32 {
			v |= uint64(uint32(words[w+1])) << 32
		}
		dst[i] = uint8(v >> off & mask)
	}
}

// unpackRowBytes is unpackRowWords over little-endian int32 bytes, with
// fast paths for 4 and 8 bits (the same in both layouts).
func unpackRowBytes(dst []uint8, src []byte, bits int, l Layout) {
	n := len(dst)
	switch bits {
	case 4:
		i := 0
		for ; i+8 <= n; i += 8 {
			w := binary.LittleEndian.Uint32(src[i/2 : i/2+4])
			d := dst[i : i+8 : i+8]
			d[0], d[1], d[2], d[3] = uint8(w&15), uint8(w>>4&15), uint8(w>>8&15), uint8(w>>12&15)
			d[4], d[5], d[6], d[7] = uint8(w>>16&15), uint8(w>>20&15), uint8(w>>24&15), uint8(w>>28)
		}
		if i < n {
			w := binary.LittleEndian.Uint32(src[i/2 : i/2+4])
			for ; i < n; i++ {
				dst[i] = uint8(w & 15)
				w >>= 4
			}
		}
		return
	case 8:
		// Byte j of word k holds code 4k+j: the bytes are the codes, in
		// order, on a little-endian machine or not.
		copy(dst, src[:n])
		return
	}
	mask := uint64(1)<<bits - 1
	words := len(src) / 4
	for i := range dst {
		w, off := codeBit(i, bits, l)
		v := uint64(binary.LittleEndian.Uint32(src[4*w:]))
		if off+bits > 32 && w+1 < words {
			v |= uint64(binary.LittleEndian.Uint32(src[4*w+4:])) << 32
		}
		dst[i] = uint8(v >> off & mask)
	}
}

// PackInt32Dim0 packs along the first dimension (packed_dim=0), as
// compressed-tensors packs zero points along out: a [rows, cols] matrix of
// codes becomes [PackedWords(rows), cols] words, column c of the result
// holding column c of the input.
func PackInt32Dim0(codes []int8, rows, cols, bits int, l Layout) ([]int32, error) {
	if err := checkPackArgs(bits, l, rows, cols); err != nil {
		return nil, err
	}
	if len(codes) != rows*cols {
		return nil, invalidf("", "shape", "%d codes for a [%d, %d] matrix", len(codes), rows, cols)
	}
	if len(codes) == 0 {
		return []int32{}, nil // rows or cols is 0, and the other may be huge
	}
	w := packedWords(rows, bits, l)
	out := make([]uint32, w*cols)
	col := make([]uint32, w)
	for c := range cols {
		clear(col)
		if rows > 0 {
			if err := packRow(col, codes[c:], cols, bits, l); err != nil {
				return nil, fmt.Errorf("%w (column %d)", err, c)
			}
		}
		for k, v := range col {
			out[k*cols+c] = v
		}
	}
	return asInt32(out), nil
}

// UnpackInt32Dim0 is the inverse of PackInt32Dim0.
func UnpackInt32Dim0(packed []int32, rows, cols, bits int, l Layout) ([]int8, error) {
	if err := checkPackArgs(bits, l, rows, cols); err != nil {
		return nil, err
	}
	w := packedWords(rows, bits, l)
	if len(packed) != w*cols {
		return nil, invalidf("", "shape", "%d words, want [%d, %d] for a [%d, %d] matrix of %d-bit codes", len(packed), w, cols, rows, cols, bits)
	}
	if len(packed) == 0 {
		return []int8{}, nil // rows or cols is 0, and the other may be huge
	}
	out := make([]int8, rows*cols)
	col := make([]int32, w)
	u := make([]uint8, rows)
	off := int8(1 << (bits - 1))
	for c := range cols {
		for k := range col {
			col[k] = packed[k*cols+c]
		}
		unpackRowWords(u, col, bits, l)
		for r, v := range u {
			out[r*cols+c] = int8(v) - off
		}
	}
	return out, nil
}

func asInt32(u []uint32) []int32 {
	out := make([]int32, len(u))
	for i, v := range u {
		out[i] = int32(v)
	}
	return out
}

// AutoAWQ's interleave (§7): nibble i of a word holds column 8c+awqOrder[i]
// (AWQ_ORDER, applied when packing); column 8c+j is nibble awqReverse[j]
// (AWQ_REVERSE_ORDER, applied when unpacking).
var (
	awqOrder   = [8]int{0, 2, 4, 6, 1, 3, 5, 7}
	awqReverse = [8]int{0, 4, 1, 5, 2, 6, 3, 7}
)

// PackAWQ packs unsigned 4-bit values (0..15, no offset) of a [rows, cols]
// matrix, cols a multiple of 8, into AutoAWQ words [rows, cols/8] with the
// AWQ interleave. AWQ's qweight is K-major, so rows are input features.
func PackAWQ(vals []uint8, cols int) ([]int32, error) {
	if cols < 0 || cols%8 != 0 || (cols == 0 && len(vals) != 0) || (cols > 0 && len(vals)%cols != 0) {
		return nil, invalidf("", "cols", "%d values in rows of %d columns; AWQ needs a multiple of 8 columns", len(vals), cols)
	}
	out := make([]int32, len(vals)/8)
	for k := range out {
		var w uint32
		for i, col := range awqOrder {
			v := vals[8*k+col]
			if v > 15 {
				return nil, invalidf("", "values", "value %d at index %d does not fit 4 bits", v, 8*k+col)
			}
			w |= uint32(v) << (4 * i)
		}
		out[k] = int32(w)
	}
	return out, nil
}

// UnpackAWQ is the inverse of PackAWQ: words [rows, cols/8] to values
// [rows, cols].
func UnpackAWQ(packed []int32, cols int) ([]uint8, error) {
	if cols < 0 || cols%8 != 0 || (cols == 0 && len(packed) != 0) || (cols > 0 && len(packed)%(cols/8) != 0) {
		return nil, invalidf("", "cols", "%d words in rows of %d columns; AWQ needs a multiple of 8 columns", len(packed), cols)
	}
	out := make([]uint8, 8*len(packed))
	for k, w := range packed {
		for j, nib := range awqReverse {
			out[8*k+j] = uint8(uint32(w) >> (4 * nib) & 15)
		}
	}
	return out, nil
}

// int32sFromBytes decodes little-endian int32s.
func int32sFromBytes(b []byte) []int32 {
	out := make([]int32, len(b)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// int32sToBytes encodes int32s little-endian.
func int32sToBytes(v []int32) []byte {
	out := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(out[4*i:], uint32(x))
	}
	return out
}
