package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// errorClasses are the sentinels every rejection must belong to.
var errorClasses = []error{
	ErrHeaderTooSmall, ErrHeaderTooLarge, ErrHeaderLength, ErrInvalidHeader, ErrInvalidMetadata,
	ErrDuplicateTensor, ErrUnknownDType, ErrInvalidTensor, ErrMisalignedSlice, ErrOverflow,
	ErrInvalidOffsets, ErrIncompleteBuffer,
}

// FuzzParseHeader feeds whole files to the reader. Rejections must be
// classified format errors; accepted headers must describe tensors that lie
// inside the file and tile it, and must survive re-planning: the writer,
// given the parsed names, dtypes, shapes and metadata, must lay out the same
// sizes, and its own header must parse back to itself.
func FuzzParseHeader(f *testing.F) {
	golden := goldenFile(f)
	data := golden[280:]
	f.Add(golden)
	f.Add(withHeader("{}", nil))
	f.Add(withHeader(`{"__metadata__":null}`, nil))
	f.Add(withHeader(`{"s":{"dtype":"F4","shape":[2,0],"data_offsets":[0,0]},"t":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[0,3]}}`, make([]byte, 3)))
	f.Add(withHeader(`{"\u00e9\ud83d\ude42\n":{"dtype":"C64","shape":[],"data_offsets":[0,8]}}`, make([]byte, 8)))
	for _, m := range [][2]string{
		{`[30,33]`, `[31,34]`}, // gap
		{`[24,30]`, `[22,28]`}, // overlap
		{`"shape":[3],"data_offsets":[24,30]`, `"shape":[4],"data_offsets":[24,30]`},  // size mismatch
		{`"dtype":"F8_E4M3","shape":[3]`, `"dtype":"F4","shape":[3]`},                 // misaligned F4
		{`{"format":"pt"}`, `{"format":1}`},                                           // non-string metadata
		{`"F8_E4M3"`, `"F8_E4M4"`},                                                    // unknown dtype
		{`"shape":[3],"data_offsets":[24,30]`, `"shape":[-3],"data_offsets":[24,30]`}, // negative dim
		{`"c":`, `"d":`},                // duplicate name
		{`"c":`, `"\ud800":`},           // lone surrogate
		{`[30,33]}`, `[30,33],"x":[]}`}, // unknown field
		{`"shape":[3],"data_offsets":[24,30]`, `"shape":[4294967296,4294967296],"data_offsets":[24,30]`}, // overflow
	} {
		f.Add(withHeader(strings.Replace(goldenJSON, m[0], m[1], 1), data))
	}
	f.Add(append(bytes.Clone(golden), 0))   // trailing bytes
	f.Add(withHeader(" "+goldenJSON, data)) // not starting with '{'
	f.Add(withHeader(goldenJSON+"x", data)) // trailing garbage
	f.Add(golden[:5])                       // shorter than 8 bytes
	tooLarge := bytes.Clone(golden)         // N > 1e8
	binary.LittleEndian.PutUint64(tooLarge, 100_000_001)
	f.Add(tooLarge)
	pastEnd := bytes.Clone(golden) // N > file size
	binary.LittleEndian.PutUint64(pastEnd, 400)
	f.Add(pastEnd)

	f.Fuzz(func(t *testing.T, file []byte) {
		h, err := ReadHeader(bytes.NewReader(file), int64(len(file)), "fuzz.safetensors")
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("rejection is not a *FormatError: %v", err)
			}
			classified := false
			for _, class := range errorClasses {
				classified = classified || errors.Is(err, class)
			}
			if !classified {
				t.Fatalf("rejection has no error class: %v", err)
			}
			return
		}
		checkAccepted(t, file, h)
	})
}

func checkAccepted(t *testing.T, file []byte, h *Header) {
	t.Helper()
	if !bytes.Equal(h.Raw, file[:h.DataStart()]) {
		t.Fatalf("Raw is not the file's prefix")
	}
	if h.FileSize() != int64(len(file)) {
		t.Fatalf("header describes %d bytes, file has %d", h.FileSize(), len(file))
	}
	var end uint64
	specs := make([]TensorSpec, len(h.Tensors))
	for i, info := range h.Tensors {
		if info.Begin != end || info.End < info.Begin || h.DataStart()+int64(info.End) > int64(len(file)) {
			t.Fatalf("tensor %q [%d,%d] does not continue at %d inside the file", info.Name, info.Begin, info.End, end)
		}
		end = info.End
		specs[i] = TensorSpec{info.Name, info.DType, info.Shape}
	}

	planned, err := Plan(specs, h.Metadata)
	if err != nil {
		t.Fatalf("Plan of an accepted header failed: %v", err)
	}
	if planned.DataSize() != h.DataSize() {
		t.Fatalf("re-planned data size %d, parsed %d", planned.DataSize(), h.DataSize())
	}
	for _, p := range planned.Tensors {
		info, ok := h.Lookup(p.Name)
		if !ok || info.Size() != p.Size() {
			t.Fatalf("re-planned tensor %q has %d bytes, parsed %d (found %v)", p.Name, p.Size(), info.Size(), ok)
		}
	}
	reparsed, err := ParseHeader(planned.Raw, planned.FileSize(), "replanned")
	if err != nil {
		t.Fatalf("re-planned header does not parse: %v", err)
	}
	if !reflect.DeepEqual(reparsed, planned) {
		t.Fatalf("re-planned header parses to %+v, want %+v", reparsed, planned)
	}
}
