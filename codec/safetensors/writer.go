package safetensors

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// TensorSpec is what the writer needs to lay a tensor out.
type TensorSpec struct {
	Name  string
	DType DType
	Shape []uint64
}

// Tensor is a tensor with its data: little-endian, C order, exactly
// DType.ByteLen(Shape) bytes.
type Tensor struct {
	TensorSpec
	Data []byte
}

// Plan lays out a file as the reference writer does, without any data: it
// validates the specs and returns the header (Raw, offsets). The order of
// specs does not matter. Header.Tensors is in file order, so Plan's result
// equals ParseHeader of its own Raw. A nil metadata map writes no
// __metadata__; an empty non-nil one writes "__metadata__":{}.
func Plan(specs []TensorSpec, metadata map[string]string) (*Header, error) {
	tensors := make([]TensorInfo, len(specs))
	names := make(map[string]struct{}, len(specs))
	for i, s := range specs {
		switch {
		case !utf8.ValidString(s.Name):
			return nil, &FormatError{Tensor: s.Name, Reason: "name is not valid UTF-8", Err: ErrInvalidTensor}
		case s.Name == metadataKey:
			return nil, &FormatError{Tensor: s.Name, Reason: "name is reserved for the metadata entry", Err: ErrInvalidTensor}
		}
		if _, dup := names[s.Name]; dup {
			return nil, &FormatError{Tensor: s.Name, Reason: "name given twice", Err: ErrDuplicateTensor}
		}
		names[s.Name] = struct{}{}
		size, err := s.DType.ByteLen(s.Shape)
		if err != nil {
			return nil, withContext(err, "", s.Name)
		}
		// End holds the size until the offsets are assigned below.
		tensors[i] = TensorInfo{Name: s.Name, DType: s.DType, Shape: slices.Clone(s.Shape), End: size}
		if tensors[i].Shape == nil {
			tensors[i].Shape = []uint64{}
		}
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, &FormatError{Field: metadataKey, Reason: fmt.Sprintf("entry %s is not valid UTF-8", quoteForMessage(k)), Err: ErrInvalidMetadata}
		}
	}

	// The reference sorts by dtype, largest enum value first, then by name,
	// so each tensor starts at an offset aligned to its element size.
	slices.SortFunc(tensors, func(a, b TensorInfo) int {
		return cmp.Or(cmp.Compare(b.DType.rank(), a.DType.rank()), strings.Compare(a.Name, b.Name))
	})
	var offset uint64
	for i := range tensors {
		size := tensors[i].End
		if size > math.MaxInt64-offset {
			return nil, &FormatError{Tensor: tensors[i].Name, Reason: "total data size overflows a file offset", Err: ErrOverflow}
		}
		tensors[i].Begin, tensors[i].End = offset, offset+size
		offset += size
	}

	raw := appendHeaderJSON(make([]byte, prefixLen, 256), tensors, metadata)
	for len(raw)%8 != 0 {
		raw = append(raw, ' ')
	}
	n := uint64(len(raw) - prefixLen)
	if n > MaxHeaderSize {
		return nil, &FormatError{Reason: fmt.Sprintf("header would be %d bytes, over the limit of %d", n, MaxHeaderSize), Err: ErrHeaderTooLarge}
	}
	if offset > math.MaxInt64-uint64(len(raw)) {
		return nil, &FormatError{Reason: "file size overflows a file offset", Err: ErrOverflow}
	}
	binary.LittleEndian.PutUint64(raw, n)

	slices.SortFunc(tensors, compareFileOrder)
	return &Header{Raw: raw, Metadata: maps.Clone(metadata), Tensors: tensors}, nil
}

// appendHeaderJSON writes the header as serde_json's compact serializer does:
// __metadata__ first (keys sorted), then the tensors in the order given, each
// with fields dtype, shape, data_offsets.
func appendHeaderJSON(b []byte, tensors []TensorInfo, metadata map[string]string) []byte {
	b = append(b, '{')
	first := true
	if metadata != nil {
		b = appendJSONString(b, metadataKey)
		b = append(b, ':', '{')
		for i, k := range slices.Sorted(maps.Keys(metadata)) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, metadata[k])
		}
		b = append(b, '}')
		first = false
	}
	for _, t := range tensors {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, t.Name)
		b = append(b, `:{"dtype":`...)
		b = appendJSONString(b, string(t.DType))
		b = append(b, `,"shape":[`...)
		for i, d := range t.Shape {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, d, 10)
		}
		b = append(b, `],"data_offsets":[`...)
		b = strconv.AppendUint(b, t.Begin, 10)
		b = append(b, ',')
		b = strconv.AppendUint(b, t.End, 10)
		b = append(b, ']', '}')
	}
	return append(b, '}')
}

// appendJSONString quotes s as serde_json does: only '"', '\\' and control
// characters are escaped (\b \t \n \f \r, else \u00xx in lower-case hex);
// '<', '>', '&', DEL and non-ASCII are written as they are, unlike
// encoding/json.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b = append(b, '\\', '"')
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// DataFunc writes the data of tensor t to w: exactly t.Size() bytes.
type DataFunc func(w io.Writer, t TensorInfo) error

// WriteStream writes h.Raw and then, for each non-empty tensor in file order,
// whatever data writes for it, checking that it writes exactly the tensor's
// size. It lets callers produce a file far larger than memory one tensor at a
// time; h normally comes from Plan.
func WriteStream(w io.Writer, h *Header, data DataFunc) error {
	var offset uint64
	for _, t := range h.Tensors {
		if t.Begin != offset || t.End < t.Begin {
			return &FormatError{Tensor: t.Name, Field: "data_offsets", Reason: fmt.Sprintf("[%d,%d] does not continue at %d", t.Begin, t.End, offset), Err: ErrInvalidOffsets}
		}
		offset = t.End
	}
	if _, err := w.Write(h.Raw); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	for _, t := range h.Tensors {
		if t.Size() == 0 {
			continue
		}
		ew := &exactWriter{w: w, remaining: t.Size()}
		err := data(ew, t)
		if ew.overrun {
			return &FormatError{Tensor: t.Name, Field: "data", Reason: fmt.Sprintf("more than %d bytes written", t.Size()), Err: ErrInvalidTensor}
		}
		if err != nil {
			return fmt.Errorf("safetensors: write tensor %s: %w", quoteForMessage(t.Name), err)
		}
		if ew.remaining != 0 {
			return &FormatError{Tensor: t.Name, Field: "data", Reason: fmt.Sprintf("%d bytes written, want %d", t.Size()-ew.remaining, t.Size()), Err: ErrInvalidTensor}
		}
	}
	return nil
}

// exactWriter passes writes through while refusing to go past remaining
// bytes, so a DataFunc that writes too much cannot shift later tensors.
type exactWriter struct {
	w         io.Writer
	remaining uint64
	overrun   bool
}

var errOverrun = errors.New("write past the end of the tensor")

func (e *exactWriter) Write(p []byte) (int, error) {
	if uint64(len(p)) > e.remaining {
		e.overrun = true
		return 0, errOverrun
	}
	n, err := e.w.Write(p)
	e.remaining -= uint64(n)
	return n, err
}

// Write writes a complete file: Plan's layout followed by each tensor's Data.
// Data lengths are checked before anything is written.
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	h, data, err := planTensors(tensors, metadata)
	if err != nil {
		return err
	}
	return WriteStream(w, h, data)
}

// WriteFile writes a complete file at path atomically; see WriteFileStream.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	h, data, err := planTensors(tensors, metadata)
	if err != nil {
		return err
	}
	return WriteFileStream(path, h, data)
}

func planTensors(tensors []Tensor, metadata map[string]string) (*Header, DataFunc, error) {
	specs := make([]TensorSpec, len(tensors))
	byName := make(map[string][]byte, len(tensors))
	for i, t := range tensors {
		specs[i] = t.TensorSpec
		byName[t.Name] = t.Data
	}
	h, err := Plan(specs, metadata)
	if err != nil {
		return nil, nil, err
	}
	for _, t := range h.Tensors {
		if got := uint64(len(byName[t.Name])); got != t.Size() {
			return nil, nil, &FormatError{Tensor: t.Name, Field: "data",
				Reason: fmt.Sprintf("%d bytes, but %s%s needs %d", got, t.DType, formatShape(t.Shape), t.Size()), Err: ErrInvalidTensor}
		}
	}
	return h, func(w io.Writer, t TensorInfo) error {
		_, err := w.Write(byName[t.Name])
		return err
	}, nil
}

// WriteFileStream writes a file at path as WriteStream does, atomically:
// into a temporary file in the same directory, fsynced, renamed over path,
// then the directory fsynced, so a crash leaves either the old file or the
// complete new one. The file gets mode 0644 (the reference leaves its
// temporary file's 0600, which is a side effect, not a format rule).
func WriteFileStream(path string, h *Header, data DataFunc) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("safetensors: create temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// Large tensor writes bypass the buffer; it only batches small tensors.
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := WriteStream(bw, h, data); err != nil {
		var fe *FormatError
		if errors.As(err, &fe) && fe.File == "" {
			withFile := *fe
			withFile.File = path
			return &withFile
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("safetensors: chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("safetensors: fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("safetensors: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("safetensors: rename %s to %s: %w", tmp, path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("safetensors: open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("safetensors: fsync directory %s: %w", dir, err)
	}
	return nil
}
