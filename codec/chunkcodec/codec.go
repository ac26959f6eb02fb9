package chunkcodec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/klauspost/compress/zstd"
)

// ID names the codec of a stored chunk. The values are written to the
// store's index and never change meaning.
type ID uint8

const (
	// Raw stores the chunk as is.
	Raw ID = 0
	// Zstd stores one zstd frame (RFC 8878) of the chunk.
	Zstd ID = 1
	// ByteGrouped stores floating-point or integer elements split into
	// byte planes, each entropy coded; see the package documentation.
	ByteGrouped ID = 2
)

// String returns "raw", "zstd", "bytegrouped", or "ID(n)" for an unknown
// id.
func (id ID) String() string {
	switch id {
	case Raw:
		return "raw"
	case Zstd:
		return "zstd"
	case ByteGrouped:
		return "bytegrouped"
	}
	return "ID(" + strconv.Itoa(int(id)) + ")"
}

// Valid reports whether id is a known codec.
func (id ID) Valid() bool { return id <= ByteGrouped }

// MaxRawLen is the largest chunk the codecs take, 1 GiB. It bounds what a
// damaged index entry can make Decode allocate.
const MaxRawLen = 1 << 30

// Hint describes the elements of a chunk, from the tensor's dtype:
// BF16 and F16 give {2, true}, F32 {4, true}, F64 {8, true}, the F8 types
// {1, true}, integer types {n, false}. ElemBytes is the size of one
// floating-point scalar, so C64 is {4, true}. The zero Hint is for opaque
// file chunks. ElemBytes must be 0, 1, 2, 4 or 8, and Float needs a
// non-zero ElemBytes.
type Hint struct {
	ElemBytes int
	Float     bool
}

func (h Hint) check() error {
	switch h.ElemBytes {
	case 0:
		if h.Float {
			return fmt.Errorf("%w: Float without ElemBytes", ErrHint)
		}
	case 1, 2, 4, 8:
	default:
		return fmt.Errorf("%w: ElemBytes %d", ErrHint, h.ElemBytes)
	}
	return nil
}

var (
	// ErrUnknownCodec is returned for an ID that is not Raw, Zstd or
	// ByteGrouped.
	ErrUnknownCodec = errors.New("chunkcodec: unknown codec")

	// ErrHint is returned when a Hint is not one of the forms Hint
	// documents.
	ErrHint = errors.New("chunkcodec: invalid hint")

	// ErrTooLarge is returned when a chunk, or the raw length given to
	// Decode, exceeds MaxRawLen or is negative.
	ErrTooLarge = errors.New("chunkcodec: chunk too large")

	// ErrCorrupt is returned by Decode when the encoded bytes are
	// malformed or do not decode to exactly the raw length. Errors that
	// wrap it carry the detail.
	ErrCorrupt = errors.New("chunkcodec: corrupt chunk")
)

func corrupt(msg string) error { return fmt.Errorf("%w: %s", ErrCorrupt, msg) }

// keep reports whether an encoding of n bytes is worth storing for a
// chunk of raw bytes: it must save at least 1/64 (1.6 %) of it, since a
// smaller gain does not pay for decoding it on every read (and quantized
// weights, whose ceiling is a few percent, then stay raw).
func keep(n, raw int) bool { return n <= raw-raw/64 && n < raw }

// Encode compresses src with the codec it judges best for h, appends the
// result to dst[:0] and returns it with the codec's id. The choice is made
// from a small sample (see choose) and then checked: if the encoded form is
// not at least 1/64 smaller than src, Encode returns Raw and a copy of src.
// Encode is deterministic: the same src and h give the same bytes with the
// same build. (The choices rest on float64 entropy estimates, which another
// architecture's math library may round differently in the last bit, so a
// chunk exactly at a threshold could be encoded differently there; it
// decodes to the same bytes either way.) It is safe for concurrent use.
func Encode(dst, src []byte, h Hint) (ID, []byte, error) {
	if err := h.check(); err != nil {
		return 0, nil, err
	}
	if len(src) > MaxRawLen {
		return 0, nil, ErrTooLarge
	}
	id, st, dst := choose(dst, src, h)
	var out []byte
	switch id {
	case Zstd:
		out = zstdEncode(dst[:0], src)
	case ByteGrouped:
		var err error
		if out, err = encodeByteGrouped(dst[:0], src, h, &st); err != nil {
			return 0, nil, err
		}
	}
	if id != Raw {
		if keep(len(out), len(src)) {
			return id, out, nil
		}
		dst = out
	}
	return Raw, append(dst[:0], src...), nil
}

// precheck rejects src whose header contradicts rawLen before Decode
// allocates the output, so that garbage costs no allocation.
func precheck(id ID, src []byte, rawLen int) error {
	switch id {
	case Zstd:
		var h zstd.Header
		if err := h.Decode(src); err != nil {
			return corrupt("zstd frame header: " + err.Error())
		}
		if h.Skippable || (h.HasFCS && h.FrameContentSize != uint64(rawLen)) {
			return corrupt("zstd frame does not hold the raw length")
		}
	case ByteGrouped:
		if len(src) < 5 {
			return corrupt("bytegrouped frame too short")
		}
		if rl, k := binary.Uvarint(src[4:]); k <= 0 || rl != uint64(rawLen) {
			return corrupt(fmt.Sprintf("bytegrouped raw length %d, want %d", rl, rawLen))
		}
	}
	return nil
}

// Choice thresholds.
const (
	// minEncodeLen: below this a chunk is stored raw; framing would eat
	// most of any gain.
	minEncodeLen = 64

	// textBits: opaque bytes whose sampled entropy is at most this are
	// text-like (JSON, vocabularies, configs) and go to zstd directly.
	textBits = 7.0

	// zstdProbeLen is the size of the sample that zstd compresses to judge
	// denser opaque chunks, which can still hold long repeats.
	zstdProbeLen = 32 << 10
)

// choose picks the codec for src from a sample, without encoding all of it:
//   - a typed chunk (ElemBytes > 0) gets ByteGrouped if the sampled
//     entropies of its byte planes promise a saving of at least 1/32,
//     else Raw;
//   - an opaque chunk gets Zstd if its sampled byte entropy is at most
//     textBits, or if zstd saves at least 1/16 on a 32 KiB probe from its
//     middle, else Raw.
//
// It returns the plane statistics for ByteGrouped and dst, which it may
// have used as scratch for the probe.
func choose(dst, src []byte, h Hint) (ID, planeStats, []byte) {
	if len(src) < minEncodeLen {
		return Raw, planeStats{}, dst
	}
	e, rotate := layout(h)
	st := samplePlanes(src, e, rotate)
	if h.ElemBytes == 0 {
		if st.bits[0] <= textBits {
			return Zstd, st, dst
		}
		probe := src
		if len(probe) > zstdProbeLen {
			at := (len(src) - zstdProbeLen) / 2
			probe = src[at : at+zstdProbeLen]
		}
		dst = zstdEncode(dst[:0], probe)
		if len(dst) <= len(probe)-len(probe)/16 {
			return Zstd, st, dst
		}
		return Raw, st, dst
	}
	n := len(src) / e
	if n < minHuffBlock {
		// encodeByteGrouped stores planes this short raw.
		return Raw, st, dst
	}
	est := float64(len(src) - n*e)
	for p := range e {
		if st.bits[p] <= candidateBits {
			// Huffman codes run a little above the entropy.
			est += float64(n) * min(st.bits[p]*1.02/8, 1)
		} else {
			est += float64(n)
		}
	}
	if est <= float64(len(src)-len(src)/32) {
		return ByteGrouped, st, dst
	}
	return Raw, st, dst
}

// EncodeWith compresses src with codec id, appends the result to dst[:0] and
// returns it, even if it is larger than src (ByteGrouped and Zstd add at most
// a few dozen bytes to incompressible input). It is safe for concurrent use.
func EncodeWith(id ID, dst, src []byte, h Hint) ([]byte, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	if len(src) > MaxRawLen {
		return nil, ErrTooLarge
	}
	if !id.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownCodec, uint8(id))
	}
	if len(src) == 0 {
		// Every codec stores an empty chunk as nothing.
		return dst[:0], nil
	}
	switch id {
	case Raw:
		return append(dst[:0], src...), nil
	case Zstd:
		return zstdEncode(dst[:0], src), nil
	case ByteGrouped:
		return encodeByteGrouped(dst[:0], src, h, nil)
	}
	return nil, fmt.Errorf("%w: %d", ErrUnknownCodec, uint8(id))
}

// Decode decodes src, stored with codec id, appends exactly rawLen bytes to
// dst[:0] and returns them. It allocates at most rawLen bytes of output
// (none if cap(dst) >= rawLen) plus bounded scratch, whatever src holds, so
// rawLen must come from a trusted place (the store's index) and is capped at
// MaxRawLen. Malformed input, or input that decodes to any other length,
// gives an error wrapping ErrCorrupt. It is safe for concurrent use.
func Decode(id ID, dst, src []byte, rawLen int) ([]byte, error) {
	if rawLen < 0 || rawLen > MaxRawLen {
		return nil, ErrTooLarge
	}
	if !id.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownCodec, uint8(id))
	}
	if id == Raw {
		if len(src) != rawLen {
			return nil, corrupt(fmt.Sprintf("raw chunk has %d bytes, want %d", len(src), rawLen))
		}
		return append(dst[:0], src...), nil
	}
	if rawLen == 0 {
		if len(src) != 0 {
			return nil, corrupt("data for an empty chunk")
		}
		return dst[:0], nil
	}
	if err := precheck(id, src, rawLen); err != nil {
		return nil, err
	}
	if cap(dst) < rawLen {
		dst = make([]byte, rawLen)
	}
	dst = dst[:rawLen]
	var err error
	switch id {
	case Zstd:
		err = zstdDecode(dst, src)
	case ByteGrouped:
		err = decodeByteGrouped(dst, src)
	}
	if err != nil {
		return nil, err
	}
	return dst, nil
}

// HintFor returns the Hint for a safetensors dtype name ("BF16", "F8_E4M3", ...):
// floating-point types by their scalar width (C64 is two F32), integers by width,
// anything else (BOOL, U8, I8, sub-byte types) as single bytes.
func HintFor(dtype string) Hint {
	switch dtype {
	case "BF16", "F16":
		return Hint{ElemBytes: 2, Float: true}
	case "F32", "C64":
		return Hint{ElemBytes: 4, Float: true}
	case "F64":
		return Hint{ElemBytes: 8, Float: true}
	case "F8_E4M3", "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ":
		return Hint{ElemBytes: 1, Float: true}
	case "I16", "U16":
		return Hint{ElemBytes: 2}
	case "I32", "U32":
		return Hint{ElemBytes: 4}
	case "I64", "U64":
		return Hint{ElemBytes: 8}
	}
	return Hint{ElemBytes: 1}
}
