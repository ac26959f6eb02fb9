package safetensors

import (
	"errors"
	"strconv"
	"strings"
)

// Error classes. Every validation error is a *FormatError whose Unwrap returns
// one of these, so callers test the class with errors.Is. The reference
// library's error names are given where they differ.
var (
	// ErrHeaderTooSmall is returned when the file is shorter than the 8-byte
	// length prefix (HeaderTooSmall).
	ErrHeaderTooSmall = errors.New("safetensors: file too small")

	// ErrHeaderTooLarge is returned when the declared header length N exceeds
	// MaxHeaderSize (HeaderTooLarge), and by the writer when the header it
	// would produce does.
	ErrHeaderTooLarge = errors.New("safetensors: header too large")

	// ErrHeaderLength is returned when 8+N runs past the end of the file
	// (InvalidHeaderLength), or when a prefix handed to ParseHeader is not
	// exactly 8+N bytes long.
	ErrHeaderLength = errors.New("safetensors: invalid header length")

	// ErrInvalidHeader is returned when the header text is not valid UTF-8,
	// does not start with '{', is not valid JSON, is not a JSON object, or
	// has anything but JSON whitespace after the object (InvalidHeader,
	// InvalidHeaderStart, InvalidHeaderDeserialization).
	ErrInvalidHeader = errors.New("safetensors: invalid header")

	// ErrInvalidMetadata is returned when __metadata__ is not an object of
	// string values, or repeats a key.
	ErrInvalidMetadata = errors.New("safetensors: invalid __metadata__")

	// ErrDuplicateTensor is returned when a tensor name occurs twice, in a
	// header or in the writer's input.
	ErrDuplicateTensor = errors.New("safetensors: duplicate tensor name")

	// ErrUnknownDType is returned when a dtype string is not one the format
	// defines.
	ErrUnknownDType = errors.New("safetensors: unknown dtype")

	// ErrInvalidTensor is returned when a tensor entry is not an object with
	// exactly dtype, shape and data_offsets of the right JSON types; when its
	// byte range does not match dtype size × element count (TensorInvalidInfo);
	// and by the writer for an invalid name or a data length that does not
	// match the shape.
	ErrInvalidTensor = errors.New("safetensors: invalid tensor")

	// ErrMisalignedSlice is returned when element count × bit size is not a
	// multiple of 8, e.g. an odd number of F4 elements (MisalignedSlice).
	ErrMisalignedSlice = errors.New("safetensors: tensor does not fill whole bytes")

	// ErrOverflow is returned when the element count or byte size of a tensor
	// does not fit in 64 bits, or the writer's total size overflows
	// (ValidationOverflow).
	ErrOverflow = errors.New("safetensors: size overflow")

	// ErrInvalidOffsets is returned when data_offsets have begin > end, or
	// when the tensors sorted by offset do not tile the data buffer from 0
	// without gaps or overlaps (InvalidOffset).
	ErrInvalidOffsets = errors.New("safetensors: invalid data offsets")

	// ErrIncompleteBuffer is returned when the tensors do not end exactly at
	// the end of the file: trailing bytes after the last tensor, or tensors
	// that need more bytes than the file holds (MetadataIncompleteBuffer).
	ErrIncompleteBuffer = errors.New("safetensors: data buffer does not match the header")
)

// FormatError describes why a header (or a writer input) is invalid. File,
// Tensor and Field are empty when they do not apply.
type FormatError struct {
	File   string // file name as given by the caller
	Tensor string // tensor name
	Field  string // "dtype", "shape", "data_offsets", "__metadata__", ...
	Reason string // what is wrong, with the offending value
	Err    error  // one of the Err* classes
}

// maxNameInMessage bounds how much of a (possibly hostile, up to 100 MB) name
// an error message repeats; the full name stays in FormatError.Tensor.
const maxNameInMessage = 200

func (e *FormatError) Error() string {
	var b strings.Builder
	b.WriteString("safetensors: ")
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Tensor != "" {
		b.WriteString("tensor ")
		b.WriteString(quoteForMessage(e.Tensor))
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap returns the error class, for errors.Is.
func (e *FormatError) Unwrap() error { return e.Err }

// quoteForMessage quotes s for an error message, shortening very long input.
func quoteForMessage(s string) string {
	if len(s) <= maxNameInMessage {
		return strconv.Quote(s)
	}
	cut := maxNameInMessage
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
