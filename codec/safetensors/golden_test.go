package safetensors

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// goldenDir is shared/testdata/golden relative to this package's directory,
// both in a workspace (/work/main beside /work/shared) and in CI (a clone of
// main with a copy of shared/ beside it).
const goldenDir = "../../../shared/testdata/golden"

const (
	goldenName   = "st_sample.safetensors"
	goldenSHA256 = "8e127fa37148ad7985362a22a8a53e32e0a1f8d1c0cfa5448e95a64df8cf158d"
	goldenSize   = 313
	// goldenJSON is the header text of the golden file without its 3 spaces
	// of padding (formats.md §14.10).
	goldenJSON = `{"__metadata__":{"format":"pt"},"d":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},"b.weight":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]},"c":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[30,33]}}`
)

// goldenFile returns the golden file after checking it is the one the golden
// README describes, so a damaged checkout fails loudly instead of silently
// testing against the wrong bytes.
func goldenFile(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, goldenName))
	if err != nil {
		tb.Fatalf("read golden file: %v", err)
	}
	sum := sha256.Sum256(b)
	if len(b) != goldenSize || hex.EncodeToString(sum[:]) != goldenSHA256 {
		tb.Fatalf("golden file is %d bytes with SHA-256 %x, want %d bytes with %s", len(b), sum, goldenSize, goldenSHA256)
	}
	return b
}

// goldenInputs are the tensors of the golden file, in the order the reference
// writer was given them.
func goldenInputs() []Tensor {
	f32One := binary.LittleEndian.AppendUint32(nil, math.Float32bits(1))
	return []Tensor{
		{TensorSpec{"b.weight", BF16, []uint64{3}}, []byte{0x00, 0x00, 0x80, 0x3f, 0x00, 0x40}},
		{TensorSpec{"a.weight", F32, []uint64{2, 2}}, bytes.Repeat(f32One, 4)},
		{TensorSpec{"c", F8E4M3, []uint64{3}}, []byte{0, 0, 0}},
		{TensorSpec{"d", I64, []uint64{}}, binary.LittleEndian.AppendUint64(nil, 7)},
	}
}

var goldenMetadata = map[string]string{"format": "pt"}

func TestWriteReproducesGolden(t *testing.T) {
	want := goldenFile(t)

	var buf bytes.Buffer
	if err := Write(&buf, goldenInputs(), goldenMetadata); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("Write output differs from the golden file\ngot  %q\nwant %q", buf.Bytes(), want)
	}

	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := WriteFile(path, goldenInputs(), goldenMetadata); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != goldenSHA256 {
		t.Fatalf("WriteFile output has SHA-256 %x, want %s", sum, goldenSHA256)
	}
}

func TestPlanGoldenLayout(t *testing.T) {
	want := goldenFile(t)
	var specs []TensorSpec
	for _, tensor := range goldenInputs() {
		specs = append(specs, tensor.TensorSpec)
	}
	h, err := Plan(specs, goldenMetadata)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if !bytes.Equal(h.Raw, want[:280]) {
		t.Fatalf("Plan header differs from the golden file\ngot  %q\nwant %q", h.Raw, want[:280])
	}
	parsed, err := ParseHeader(h.Raw, h.FileSize(), "planned")
	if err != nil {
		t.Fatalf("ParseHeader(Plan().Raw): %v", err)
	}
	if !reflect.DeepEqual(parsed, h) {
		t.Fatalf("Plan and ParseHeader disagree:\nplan  %+v\nparse %+v", h, parsed)
	}
}

func TestReadGolden(t *testing.T) {
	file := goldenFile(t)
	h, err := ReadHeader(bytes.NewReader(file), int64(len(file)), goldenName)
	if err != nil {
		t.Fatalf("ReadHeader: %v", err)
	}
	if got := binary.LittleEndian.Uint64(file); got != 272 {
		t.Fatalf("golden N = %d, want 272", got)
	}
	if h.DataStart() != 280 || h.DataSize() != 33 || h.FileSize() != goldenSize {
		t.Fatalf("DataStart %d, DataSize %d, FileSize %d; want 280, 33, 313", h.DataStart(), h.DataSize(), h.FileSize())
	}
	if !bytes.Equal(h.Raw, file[:280]) {
		t.Fatalf("Raw is not the file's first 280 bytes")
	}
	if string(h.Raw[8:8+len(goldenJSON)]) != goldenJSON || string(h.Raw[8+len(goldenJSON):]) != "   " {
		t.Fatalf("Raw JSON = %q", h.Raw[8:])
	}
	if !reflect.DeepEqual(h.Metadata, goldenMetadata) {
		t.Fatalf("Metadata = %v, want %v", h.Metadata, goldenMetadata)
	}
	wantTensors := []TensorInfo{
		{Name: "d", DType: I64, Shape: []uint64{}, Begin: 0, End: 8},
		{Name: "a.weight", DType: F32, Shape: []uint64{2, 2}, Begin: 8, End: 24},
		{Name: "b.weight", DType: BF16, Shape: []uint64{3}, Begin: 24, End: 30},
		{Name: "c", DType: F8E4M3, Shape: []uint64{3}, Begin: 30, End: 33},
	}
	if !reflect.DeepEqual(h.Tensors, wantTensors) {
		t.Fatalf("Tensors =\n%+v\nwant\n%+v", h.Tensors, wantTensors)
	}

	r := bytes.NewReader(file)
	data := func(name string) []byte {
		info, ok := h.Lookup(name)
		if !ok {
			t.Fatalf("Lookup(%q) failed", name)
		}
		if elem := int64(info.DType.BitSize() / 8); (h.DataStart()+int64(info.Begin))%elem != 0 {
			t.Errorf("tensor %q at file offset %d is not aligned to its %d-byte elements", name, h.DataStart()+int64(info.Begin), elem)
		}
		b := make([]byte, info.Size())
		if _, err := h.TensorData(r, info).ReadAt(b, 0); err != nil {
			t.Fatalf("read %q: %v", name, err)
		}
		return b
	}
	if v := int64(binary.LittleEndian.Uint64(data("d"))); v != 7 {
		t.Errorf("d = %d, want 7", v)
	}
	a := data("a.weight")
	for i := 0; i < 4; i++ {
		if v := math.Float32frombits(binary.LittleEndian.Uint32(a[4*i:])); v != 1 {
			t.Errorf("a.weight[%d] = %v, want 1", i, v)
		}
	}
	b := data("b.weight")
	for i, want := range []float32{0, 1, 2} {
		if v := math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16); v != want {
			t.Errorf("b.weight[%d] = %v, want %v", i, v, want)
		}
	}
	if c := data("c"); !bytes.Equal(c, []byte{0, 0, 0}) {
		t.Errorf("c = %x, want 000000", c)
	}
}
