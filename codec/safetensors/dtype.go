package safetensors

import (
	"fmt"
	"math/bits"
)

// DType is a safetensors element type, spelled as in the header ("BF16").
type DType string

// The dtypes of the reference implementation, in the order of its Dtype enum.
// The writer sorts tensors by this order (descending), so it is part of the
// file format: do not reorder.
const (
	BOOL       DType = "BOOL"
	F4         DType = "F4" // MXFP4 E2M1; header shape counts elements, two per byte
	F6E2M3     DType = "F6_E2M3"
	F6E3M2     DType = "F6_E3M2"
	U8         DType = "U8"
	I8         DType = "I8"
	F8E5M2     DType = "F8_E5M2"
	F8E4M3     DType = "F8_E4M3" // torch float8_e4m3fn
	F8E8M0     DType = "F8_E8M0" // torch float8_e8m0fnu
	F8E4M3FNUZ DType = "F8_E4M3FNUZ"
	F8E5M2FNUZ DType = "F8_E5M2FNUZ"
	I16        DType = "I16"
	U16        DType = "U16"
	F16        DType = "F16"
	BF16       DType = "BF16"
	I32        DType = "I32"
	U32        DType = "U32"
	F32        DType = "F32"
	C64        DType = "C64" // complex with two F32 parts
	F64        DType = "F64"
	I64        DType = "I64"
	U64        DType = "U64"
)

// dtypeOrder lists every dtype in the reference enum's declared order; the
// index is the rank the writer sorts by.
var dtypeOrder = [...]DType{
	BOOL, F4, F6E2M3, F6E3M2, U8, I8, F8E5M2, F8E4M3, F8E8M0, F8E4M3FNUZ, F8E5M2FNUZ,
	I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
}

var dtypeRank = func() map[DType]int {
	m := make(map[DType]int, len(dtypeOrder))
	for i, d := range dtypeOrder {
		m[d] = i
	}
	return m
}()

// AllDTypes returns every dtype the format defines, in the reference enum's
// order.
func AllDTypes() []DType {
	out := make([]DType, len(dtypeOrder))
	copy(out[:], dtypeOrder[:])
	return out
}

// ParseDType returns the dtype spelled s. Spellings are case-sensitive, as in
// the reference; an unknown spelling yields an error wrapping ErrUnknownDType.
func ParseDType(s string) (DType, error) {
	d := DType(s)
	if _, ok := dtypeRank[d]; !ok {
		return "", &FormatError{Field: "dtype", Reason: fmt.Sprintf("unknown dtype %s", quoteForMessage(s)), Err: ErrUnknownDType}
	}
	return d, nil
}

// Valid reports whether d is one of the dtypes the format defines.
func (d DType) Valid() bool {
	_, ok := dtypeRank[d]
	return ok
}

func (d DType) String() string { return string(d) }

// rank is d's position in the reference enum, or -1 for an unknown dtype.
func (d DType) rank() int {
	if r, ok := dtypeRank[d]; ok {
		return r
	}
	return -1
}

// BitSize returns the number of bits one element occupies (4, 6, 8, 16, 32
// or 64), or 0 for an unknown dtype.
func (d DType) BitSize() int {
	switch d {
	case F4:
		return 4
	case F6E2M3, F6E3M2:
		return 6
	case BOOL, U8, I8, F8E5M2, F8E4M3, F8E8M0, F8E4M3FNUZ, F8E5M2FNUZ:
		return 8
	case I16, U16, F16, BF16:
		return 16
	case I32, U32, F32:
		return 32
	case C64, F64, I64, U64:
		return 64
	}
	return 0
}

// NumElements returns the product of shape (1 for a scalar), or an error
// wrapping ErrOverflow when it does not fit in a uint64.
func NumElements(shape []uint64) (uint64, error) {
	n := uint64(1)
	for _, dim := range shape {
		hi, lo := bits.Mul64(n, dim)
		if hi != 0 {
			return 0, &FormatError{Field: "shape", Reason: fmt.Sprintf("element count of %s overflows 64 bits", formatShape(shape)), Err: ErrOverflow}
		}
		n = lo
	}
	return n, nil
}

// ByteLen returns the number of data bytes a tensor of this dtype and shape
// occupies, computed as the reference does: numel × bits must not overflow
// (ErrOverflow) and must be a multiple of 8 (ErrMisalignedSlice, e.g. an odd
// number of F4 elements). An unknown dtype yields ErrUnknownDType.
func (d DType) ByteLen(shape []uint64) (uint64, error) {
	bitSize := d.BitSize()
	if bitSize == 0 {
		return 0, &FormatError{Field: "dtype", Reason: fmt.Sprintf("unknown dtype %s", quoteForMessage(string(d))), Err: ErrUnknownDType}
	}
	numel, err := NumElements(shape)
	if err != nil {
		return 0, err
	}
	hi, nbits := bits.Mul64(numel, uint64(bitSize))
	if hi != 0 {
		return 0, &FormatError{Field: "shape", Reason: fmt.Sprintf("%s%s needs more than 2^64 bits", d, formatShape(shape)), Err: ErrOverflow}
	}
	if nbits%8 != 0 {
		return 0, &FormatError{Field: "shape", Reason: fmt.Sprintf("%d %s elements take %d bits, not a whole number of bytes", numel, d, nbits), Err: ErrMisalignedSlice}
	}
	return nbits / 8, nil
}
