package safetensors

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// MaxHeaderSize is the largest header length N the reference accepts
// (MAX_HEADER_SIZE in tensor.rs).
const MaxHeaderSize = 100_000_000

// prefixLen is the size of the little-endian u64 that holds N.
const prefixLen = 8

// TensorInfo describes one tensor of a file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []uint64 // never nil; empty for a scalar
	// Begin and End are the header's data_offsets: a half-open byte range
	// relative to the start of the data buffer, i.e. to Header.DataStart().
	Begin, End uint64
}

// Size is the number of data bytes of the tensor.
func (t TensorInfo) Size() uint64 { return t.End - t.Begin }

// Header is the parsed prefix of a safetensors file.
type Header struct {
	// Raw is exactly the first 8+N bytes of the file, verbatim: the length
	// prefix, the JSON text and its padding. Writing Raw followed by the
	// tensors' bytes in Tensors order recreates the file byte for byte.
	Raw []byte
	// Metadata is __metadata__, or nil when the file has none (or null).
	Metadata map[string]string
	// Tensors is in file order: sorted by Begin, then End (a zero-size tensor
	// sorts before a non-empty one at the same offset), then name.
	Tensors []TensorInfo
}

// DataStart is the file offset of the data buffer, 8+N.
func (h *Header) DataStart() int64 { return int64(len(h.Raw)) }

// DataSize is the length of the data buffer: the sum of the tensors' sizes,
// which for a valid header is the file size minus DataStart().
func (h *Header) DataSize() uint64 {
	var n uint64
	for _, t := range h.Tensors {
		n += t.Size()
	}
	return n
}

// FileSize is the size of the file this header describes.
func (h *Header) FileSize() int64 { return h.DataStart() + int64(h.DataSize()) }

// Lookup returns the tensor called name.
func (h *Header) Lookup(name string) (TensorInfo, bool) {
	for _, t := range h.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

// TensorData returns a reader over t's bytes in r, a reader of the whole file
// this header was parsed from.
func (h *Header) TensorData(r io.ReaderAt, t TensorInfo) *io.SectionReader {
	return io.NewSectionReader(r, h.DataStart()+int64(t.Begin), int64(t.Size()))
}

// ReadHeader reads exactly the first 8+N bytes of a safetensors file from r
// and validates them against fileSize, the size of the whole file; fileName
// only labels errors. It never reads tensor data. Validation failures are
// *FormatError values; read failures are wrapped I/O errors.
func ReadHeader(r io.Reader, fileSize int64, fileName string) (*Header, error) {
	if fileSize < prefixLen {
		return nil, tooSmall(fileSize, fileName)
	}
	var prefix [prefixLen]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return nil, fmt.Errorf("safetensors: %s: read header length: %w", fileName, err)
	}
	n, err := checkHeaderLength(binary.LittleEndian.Uint64(prefix[:]), fileSize, fileName)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, prefixLen+n)
	copy(raw, prefix[:])
	if _, err := io.ReadFull(r, raw[prefixLen:]); err != nil {
		return nil, fmt.Errorf("safetensors: %s: read %d-byte header: %w", fileName, n, err)
	}
	return ParseHeader(raw, fileSize, fileName)
}

// ParseHeader validates raw, the whole 8+N-byte prefix of a file of fileSize
// bytes, and describes it; fileName only labels errors. The returned
// Header.Raw is raw itself, not a copy.
func ParseHeader(raw []byte, fileSize int64, fileName string) (*Header, error) {
	if fileSize < prefixLen || len(raw) < prefixLen {
		return nil, tooSmall(min(fileSize, int64(len(raw))), fileName)
	}
	n, err := checkHeaderLength(binary.LittleEndian.Uint64(raw), fileSize, fileName)
	if err != nil {
		return nil, err
	}
	if uint64(len(raw)) != prefixLen+uint64(n) {
		return nil, &FormatError{File: fileName, Reason: fmt.Sprintf("header prefix is %d bytes, but the length field says 8+%d", len(raw), n), Err: ErrHeaderLength}
	}
	p := parser{text: raw[prefixLen:], file: fileName}
	metadata, tensors, err := p.parseHeader()
	if err != nil {
		return nil, err
	}
	h := &Header{Raw: raw, Metadata: metadata, Tensors: tensors}
	if err := validateLayout(h, fileSize, fileName); err != nil {
		return nil, err
	}
	return h, nil
}

// Open opens a safetensors file and reads its header; the caller closes the
// returned file and reads tensor data through Header.TensorData.
func Open(path string) (*os.File, *Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: open: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("safetensors: stat: %w", err)
	}
	h, err := ReadHeader(f, fi.Size(), path)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, h, nil
}

func tooSmall(size int64, fileName string) error {
	return &FormatError{File: fileName, Reason: fmt.Sprintf("%d bytes is shorter than the 8-byte header length", size), Err: ErrHeaderTooSmall}
}

// checkHeaderLength applies the reference's checks on N, in its order.
func checkHeaderLength(n uint64, fileSize int64, fileName string) (int, error) {
	if n > MaxHeaderSize {
		return 0, &FormatError{File: fileName, Reason: fmt.Sprintf("header length %d exceeds the limit of %d bytes", n, MaxHeaderSize), Err: ErrHeaderTooLarge}
	}
	if prefixLen+n > uint64(fileSize) {
		return 0, &FormatError{File: fileName, Reason: fmt.Sprintf("header length 8+%d runs past the end of the %d-byte file", n, fileSize), Err: ErrHeaderLength}
	}
	return int(n), nil
}

// compareFileOrder orders tensors as Header.Tensors is ordered.
func compareFileOrder(a, b TensorInfo) int {
	return cmp.Or(cmp.Compare(a.Begin, b.Begin), cmp.Compare(a.End, b.End), strings.Compare(a.Name, b.Name))
}

// validateLayout checks every tensor's size against its dtype and shape, that
// the tensors tile the data buffer exactly, and that the buffer ends at the
// end of the file; it sorts h.Tensors into file order. The reference does the
// same checks (Metadata::validate and read_metadata), so exactly the same
// headers pass.
func validateLayout(h *Header, fileSize int64, fileName string) error {
	for _, t := range h.Tensors {
		if t.Begin > t.End {
			return &FormatError{File: fileName, Tensor: t.Name, Field: "data_offsets", Reason: fmt.Sprintf("begin %d is after end %d", t.Begin, t.End), Err: ErrInvalidOffsets}
		}
		size, err := t.DType.ByteLen(t.Shape)
		if err != nil {
			return withContext(err, fileName, t.Name)
		}
		if t.Size() != size {
			return &FormatError{File: fileName, Tensor: t.Name, Field: "data_offsets",
				Reason: fmt.Sprintf("[%d,%d] spans %d bytes, but %s%s needs %d", t.Begin, t.End, t.Size(), t.DType, formatShape(t.Shape), size),
				Err:    ErrInvalidTensor}
		}
	}
	slices.SortFunc(h.Tensors, compareFileOrder)
	var end uint64
	for i, t := range h.Tensors {
		switch {
		case t.Begin == end:
		case i == 0:
			return &FormatError{File: fileName, Tensor: t.Name, Field: "data_offsets", Reason: fmt.Sprintf("first tensor begins at %d, not 0", t.Begin), Err: ErrInvalidOffsets}
		case t.Begin > end:
			return &FormatError{File: fileName, Tensor: t.Name, Field: "data_offsets",
				Reason: fmt.Sprintf("begins at %d, leaving a %d-byte gap after tensor %s", t.Begin, t.Begin-end, quoteForMessage(h.Tensors[i-1].Name)),
				Err:    ErrInvalidOffsets}
		default:
			return &FormatError{File: fileName, Tensor: t.Name, Field: "data_offsets",
				Reason: fmt.Sprintf("begins at %d, overlapping tensor %s which ends at %d", t.Begin, quoteForMessage(h.Tensors[i-1].Name), end),
				Err:    ErrInvalidOffsets}
		}
		end = t.End
	}
	if have := uint64(fileSize - h.DataStart()); end != have {
		reason := fmt.Sprintf("%d trailing bytes after the last tensor (tensors end at %d, the data buffer holds %d)", have-end, end, have)
		if end > have {
			reason = fmt.Sprintf("tensors need %d bytes of data, but the file holds only %d after the header", end, have)
		}
		return &FormatError{File: fileName, Reason: reason, Err: ErrIncompleteBuffer}
	}
	return nil
}

// withContext fills in the file and tensor of a FormatError from ByteLen.
func withContext(err error, fileName, tensor string) error {
	fe, ok := err.(*FormatError)
	if !ok {
		return err
	}
	c := *fe
	c.File, c.Tensor = fileName, tensor
	return &c
}

// maxDimsInMessage bounds how many dimensions an error message lists; a
// hostile header can declare millions.
const maxDimsInMessage = 16

// formatShape writes a shape as the header spells it, e.g. [2,2].
func formatShape(shape []uint64) string {
	b := make([]byte, 0, 2+min(len(shape), maxDimsInMessage)*4)
	b = append(b, '[')
	for i, d := range shape {
		if i == maxDimsInMessage {
			b = append(b, fmt.Sprintf(",... %d dims", len(shape))...)
			break
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, d, 10)
	}
	return string(append(b, ']'))
}
