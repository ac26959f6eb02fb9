package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// patternBytes returns n deterministic, distinct-looking bytes.
func patternBytes(n uint64, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)*31 + seed
	}
	return b
}

// everyDTypeTensors has one tensor of each dtype (F4 with an even count, F6
// with a multiple of 4), plus scalars, zero-size tensors and names that
// exercise serde_json's escaping.
func everyDTypeTensors(tb testing.TB) []Tensor {
	tb.Helper()
	var tensors []Tensor
	add := func(name string, d DType, shape ...uint64) {
		if shape == nil {
			shape = []uint64{}
		}
		n, err := d.ByteLen(shape)
		if err != nil {
			tb.Fatalf("ByteLen(%s%v): %v", d, shape, err)
		}
		tensors = append(tensors, Tensor{TensorSpec{name, d, shape}, patternBytes(n, byte(len(tensors)))})
	}
	for i, d := range AllDTypes() {
		shape := []uint64{3, uint64(i%3 + 1)}
		switch d.BitSize() {
		case 4:
			shape = []uint64{3, 2}
		case 6:
			shape = []uint64{2, 4}
		}
		add("t."+string(d), d, shape...)
	}
	add("scalar.f64", F64)
	add("scalar.bool", BOOL)
	add("empty.f32", F32, 0, 7)
	add("empty.bf16", BF16, 5, 0)
	add("empty.f4", F4, 0)
	add("quote\"backslash\\slash/", U8, 2)
	add("controls\n\t\r\b\f\x00\x01\x1f\x7f", I16, 2)
	add("html<b>&amp;</b>", F32, 1)
	add("unicode é 名前 🙂 \u2028", BF16, 4)
	add("", I8, 1) // the empty name is a valid key
	return tensors
}

func TestRoundTripEveryDType(t *testing.T) {
	tensors := everyDTypeTensors(t)
	metadata := map[string]string{"format": "pt", "zeta\n": "é\"<>&", "alpha": ""}
	var buf bytes.Buffer
	if err := Write(&buf, tensors, metadata); err != nil {
		t.Fatalf("Write: %v", err)
	}
	file := buf.Bytes()
	h, err := parseFile(t, file)
	if err != nil {
		t.Fatalf("parse written file: %v", err)
	}
	if !reflect.DeepEqual(h.Metadata, metadata) {
		t.Errorf("Metadata = %q, want %q", h.Metadata, metadata)
	}
	if len(h.Tensors) != len(tensors) {
		t.Fatalf("%d tensors, want %d", len(h.Tensors), len(tensors))
	}
	for _, want := range tensors {
		got, ok := h.Lookup(want.Name)
		if !ok {
			t.Errorf("tensor %q missing", want.Name)
			continue
		}
		if got.DType != want.DType || !reflect.DeepEqual(got.Shape, want.Shape) {
			t.Errorf("tensor %q: %s%v, want %s%v", want.Name, got.DType, got.Shape, want.DType, want.Shape)
		}
		data, err := io.ReadAll(h.TensorData(bytes.NewReader(file), got))
		if err != nil || !bytes.Equal(data, want.Data) {
			t.Errorf("tensor %q: data %x (%v), want %x", want.Name, data, err, want.Data)
		}
		if bits := want.DType.BitSize(); bits >= 8 && (h.DataStart()+int64(got.Begin))%int64(bits/8) != 0 {
			t.Errorf("tensor %q at %d is not aligned to %d bytes", want.Name, h.DataStart()+int64(got.Begin), bits/8)
		}
	}

	// serde_json escaping: only quote, backslash and control characters.
	raw := string(h.Raw)
	for _, want := range []string{
		`"quote\"backslash\\slash/"`,
		`"controls\n\t\r\b\f\u0000\u0001\u001f` + "\x7f" + `"`,
		`"html<b>&amp;</b>"`,
		`"unicode é 名前 🙂 ` + "\u2028" + `"`,
		`"__metadata__":{"alpha":"","format":"pt","zeta\n":"é\"<>&"}`,
	} {
		if !strings.Contains(raw, want) {
			t.Errorf("header does not contain %s:\n%s", want, raw)
		}
	}
	if len(h.Raw)%8 != 0 || !strings.HasPrefix(raw[8:], `{"__metadata__":`) {
		t.Errorf("header is %d bytes or does not start with __metadata__", len(h.Raw))
	}
}

func TestPlanOrder(t *testing.T) {
	specs := []TensorSpec{
		{"b", BOOL, []uint64{8}},
		{"f4", F4, []uint64{2}},
		{"u64", U64, []uint64{1}},
		{"bf16.b", BF16, []uint64{1}},
		{"bf16.a", BF16, []uint64{1}},
		{"bf16.A", BF16, []uint64{1}}, // byte order: 'A' < 'a'
		{"c64", C64, []uint64{1}},
		{"e4m3fnuz", F8E4M3FNUZ, []uint64{1}},
		{"e8m0", F8E8M0, []uint64{1}},
	}
	h, err := Plan(specs, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, info := range h.Tensors {
		names = append(names, info.Name)
	}
	want := []string{"u64", "c64", "bf16.A", "bf16.a", "bf16.b", "e4m3fnuz", "e8m0", "f4", "b"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("file order %q, want %q", names, want)
	}
	if strings.Contains(string(h.Raw), "__metadata__") {
		t.Errorf("nil metadata must write no __metadata__: %s", h.Raw)
	}
	parsed, err := ParseHeader(h.Raw, h.FileSize(), "planned")
	if err != nil || !reflect.DeepEqual(parsed, h) {
		t.Errorf("ParseHeader(Plan().Raw) = %+v, %v; want %+v", parsed, err, h)
	}
}

func TestPlanZeroSizeTensorsMatchParse(t *testing.T) {
	// The writer places zero-size tensors by dtype and name, the reader sorts
	// equal offsets by name; Plan reports the reader's order so both agree.
	specs := []TensorSpec{
		{"z.f32", F32, []uint64{0}},
		{"a.bf16", BF16, []uint64{0}},
		{"m.f32", F32, []uint64{2}},
		{"b.u8", U8, []uint64{0, 4}},
	}
	h, err := Plan(specs, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseHeader(h.Raw, h.FileSize(), "planned")
	if err != nil || !reflect.DeepEqual(parsed, h) {
		t.Fatalf("ParseHeader(Plan().Raw) = %+v, %v; want %+v", parsed, err, h)
	}
	if !strings.Contains(string(h.Raw), `{"__metadata__":{},"m.f32"`) {
		t.Errorf("empty metadata or order wrong: %s", h.Raw)
	}
}

func TestWriterRejects(t *testing.T) {
	ok := func() Tensor { return Tensor{TensorSpec{"ok", F32, []uint64{1}}, make([]byte, 4)} }
	tests := []struct {
		name     string
		tensors  []Tensor
		metadata map[string]string
		class    error
		tensor   string
	}{
		{"duplicate name", []Tensor{ok(), ok()}, nil, ErrDuplicateTensor, "ok"},
		{"unknown dtype", []Tensor{{TensorSpec{"x", "F128", []uint64{1}}, make([]byte, 16)}}, nil, ErrUnknownDType, "x"},
		{"odd F4 count", []Tensor{{TensorSpec{"x", F4, []uint64{3}}, make([]byte, 2)}}, nil, ErrMisalignedSlice, "x"},
		{"overflowing shape", []Tensor{{TensorSpec{"x", U8, []uint64{1 << 32, 1 << 32}}, nil}}, nil, ErrOverflow, "x"},
		{"short data", []Tensor{{TensorSpec{"x", F32, []uint64{2}}, make([]byte, 7)}}, nil, ErrInvalidTensor, "x"},
		{"long data", []Tensor{{TensorSpec{"x", F32, []uint64{2}}, make([]byte, 9)}}, nil, ErrInvalidTensor, "x"},
		{"reserved name", []Tensor{{TensorSpec{"__metadata__", U8, []uint64{1}}, make([]byte, 1)}}, nil, ErrInvalidTensor, "__metadata__"},
		{"invalid UTF-8 name", []Tensor{{TensorSpec{"\xff", U8, []uint64{1}}, make([]byte, 1)}}, nil, ErrInvalidTensor, "\xff"},
		{"invalid UTF-8 metadata", []Tensor{ok()}, map[string]string{"k": "\xff"}, ErrInvalidMetadata, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, tc.tensors, tc.metadata)
			if !errors.Is(err, tc.class) {
				t.Fatalf("error %v, want %v", err, tc.class)
			}
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Tensor != tc.tensor {
				t.Errorf("error %v does not name tensor %q", err, tc.tensor)
			}
			if buf.Len() != 0 {
				t.Errorf("%d bytes written before the error", buf.Len())
			}
		})
	}
}

func TestWriteStreamChecksDataLength(t *testing.T) {
	h, err := Plan([]TensorSpec{{"a", F32, []uint64{2}}, {"b", U8, []uint64{3}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{7, 9} {
		err := WriteStream(io.Discard, h, func(w io.Writer, info TensorInfo) error {
			_, err := w.Write(make([]byte, n*int(info.Size())/8))
			return err
		})
		if !errors.Is(err, ErrInvalidTensor) || !strings.Contains(err.Error(), `tensor "a": data`) {
			t.Errorf("writing %d/8 of the data: %v", n, err)
		}
	}
	var buf bytes.Buffer
	err = WriteStream(&buf, h, func(w io.Writer, info TensorInfo) error {
		_, err := w.Write(patternBytes(info.Size(), 1))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseFile(t, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFileIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := []Tensor{{TensorSpec{"x", F32, []uint64{2}}, make([]byte, 3)}}
	if err := WriteFile(path, bad, nil); !errors.Is(err, ErrInvalidTensor) {
		t.Fatalf("WriteFile with bad data: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("failed write replaced the file: %q", b)
	}

	failing := errors.New("generator failed")
	h, err := Plan([]TensorSpec{{"x", F32, []uint64{2}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = WriteFileStream(path, h, func(io.Writer, TensorInfo) error { return failing })
	if !errors.Is(err, failing) || !strings.Contains(err.Error(), path) {
		t.Fatalf("WriteFileStream with a failing DataFunc: %v", err)
	}

	if err := WriteFile(path, goldenInputs(), goldenMetadata); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file (temporary files left behind?)", len(entries))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	f, h2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(h2.Tensors) != 4 {
		t.Errorf("Open: %d tensors", len(h2.Tensors))
	}
}

func TestDTypes(t *testing.T) {
	bitSizes := map[DType]int{
		BOOL: 8, F4: 4, F6E2M3: 6, F6E3M2: 6, U8: 8, I8: 8, F8E5M2: 8, F8E4M3: 8, F8E8M0: 8,
		F8E4M3FNUZ: 8, F8E5M2FNUZ: 8, I16: 16, U16: 16, F16: 16, BF16: 16, I32: 32, U32: 32,
		F32: 32, C64: 64, F64: 64, I64: 64, U64: 64,
	}
	all := AllDTypes()
	if len(all) != len(bitSizes) {
		t.Fatalf("AllDTypes has %d entries, want %d", len(all), len(bitSizes))
	}
	for _, d := range all {
		if d.BitSize() != bitSizes[d] {
			t.Errorf("%s.BitSize() = %d, want %d", d, d.BitSize(), bitSizes[d])
		}
		parsed, err := ParseDType(string(d))
		if err != nil || parsed != d {
			t.Errorf("ParseDType(%q) = %q, %v", d, parsed, err)
		}
	}
	for _, s := range []string{"", "bf16", "F8_E4M3FN", "F128", "BF16 "} {
		if _, err := ParseDType(s); !errors.Is(err, ErrUnknownDType) {
			t.Errorf("ParseDType(%q) error %v, want ErrUnknownDType", s, err)
		}
	}
	byteLens := []struct {
		d     DType
		shape []uint64
		want  uint64
		err   error
	}{
		{F32, nil, 4, nil},
		{BF16, []uint64{3, 0}, 0, nil},
		{F4, []uint64{2, 3}, 3, nil},
		{F4, []uint64{3}, 0, ErrMisalignedSlice},
		{F6E3M2, []uint64{4}, 3, nil},
		{F6E2M3, []uint64{2}, 0, ErrMisalignedSlice},
		{C64, []uint64{2}, 16, nil},
		{U8, []uint64{1 << 63, 2}, 0, ErrOverflow},
		{U64, []uint64{1 << 61}, 0, ErrOverflow},
		{"X", []uint64{1}, 0, ErrUnknownDType},
	}
	for _, tc := range byteLens {
		got, err := tc.d.ByteLen(tc.shape)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s.ByteLen(%v) = %d, %v; want %d, %v", tc.d, tc.shape, got, err, tc.want, tc.err)
		}
	}
}

// TestWriteMatchesReferenceVectors replays byte-exact expectations from the
// reference implementation's own tests (tensor.rs: test_empty,
// test_serialization, test_serialization_forced_alignement).
func TestWriteMatchesReferenceVectors(t *testing.T) {
	f32s := func(vs ...float32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	data := f32s(0, 1, 2, 3, 4, 5)
	tests := []struct {
		name     string
		tensors  []Tensor
		metadata map[string]string
		header   string
	}{
		{"empty", nil, nil, `{}      `},
		{"empty with metadata", nil, map[string]string{"framework": "pt"}, `{"__metadata__":{"framework":"pt"}}     `},
		{"no padding needed", []Tensor{{TensorSpec{"attn.0", F32, []uint64{1, 2, 3}}, data}}, nil,
			`{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}`},
		{"forced alignment", []Tensor{{TensorSpec{"attn0", F32, []uint64{1, 1, 2, 3}}, data}}, nil,
			`{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       `},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, tc.tensors, tc.metadata); err != nil {
				t.Fatal(err)
			}
			want := withHeader(tc.header, nil)
			for _, tensor := range tc.tensors {
				want = append(want, tensor.Data...)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("got  %q\nwant %q", buf.Bytes(), want)
			}
		})
	}
}
