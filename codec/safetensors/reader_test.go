package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

const testFileName = "model-00001-of-00002.safetensors"

// withHeader builds a file from a header text (used as is, no padding) and a
// data buffer.
func withHeader(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

// mutate returns the golden file with its header text edited by replacing
// old with new (old must occur exactly once), keeping the data buffer.
func mutate(tb testing.TB, golden []byte, old, new string) []byte {
	tb.Helper()
	if strings.Count(goldenJSON, old) != 1 {
		tb.Fatalf("%q occurs %d times in the golden header, want once", old, strings.Count(goldenJSON, old))
	}
	return withHeader(strings.Replace(goldenJSON, old, new, 1), golden[280:])
}

// parseFile runs both entry points on a whole file and checks they agree.
func parseFile(tb testing.TB, file []byte) (*Header, error) {
	tb.Helper()
	hr, errRead := ReadHeader(bytes.NewReader(file), int64(len(file)), testFileName)
	var hp *Header
	errParse := errRead
	if len(file) >= 8 {
		if n := binary.LittleEndian.Uint64(file); n <= uint64(len(file)-8) {
			hp, errParse = ParseHeader(file[:8+n], int64(len(file)), testFileName)
		}
	}
	if (errRead == nil) != (errParse == nil) || (errRead != nil && errRead.Error() != errParse.Error()) {
		tb.Fatalf("ReadHeader and ParseHeader disagree: %v vs %v", errRead, errParse)
	}
	if errRead == nil && !reflect.DeepEqual(hr, hp) {
		tb.Fatalf("ReadHeader and ParseHeader return different headers")
	}
	return hr, errRead
}

func TestRejectsMalformed(t *testing.T) {
	golden := goldenFile(t)
	data := golden[280:]
	setN := func(n uint64) []byte {
		b := bytes.Clone(golden)
		binary.LittleEndian.PutUint64(b, n)
		return b
	}
	tests := []struct {
		name   string
		file   []byte
		class  error
		tensor string // named in the message when set
		reason string // substring of the message
	}{
		// Length prefix.
		{"file shorter than 8 bytes", golden[:5], ErrHeaderTooSmall, "", "shorter than the 8-byte"},
		{"empty file", nil, ErrHeaderTooSmall, "", "0 bytes"},
		{"N above 100,000,000", setN(100_000_001), ErrHeaderTooLarge, "", "100000001"},
		{"N = 2^64-1", setN(^uint64(0)), ErrHeaderTooLarge, "", "exceeds"},
		{"N beyond the file", setN(400), ErrHeaderLength, "", "runs past the end"},
		{"N = file size - 7", setN(goldenSize - 7), ErrHeaderLength, "", "runs past the end"},

		// Header text.
		{"empty header", withHeader("", nil), ErrInvalidHeader, "", "does not start with '{'"},
		{"not starting with {", withHeader(" "+goldenJSON, data), ErrInvalidHeader, "", "does not start with '{'"},
		{"array at top level", withHeader(`[]`, nil), ErrInvalidHeader, "", "does not start with '{'"},
		{"invalid UTF-8", mutate(t, golden, `"format"`, "\"f\xffrmat\""), ErrInvalidHeader, "", "not valid UTF-8"},
		{"truncated JSON", withHeader(goldenJSON[:len(goldenJSON)-1], data), ErrInvalidHeader, "", "header ends"},
		{"trailing garbage", withHeader(goldenJSON+" x", data), ErrInvalidHeader, "", `unexpected 'x'`},
		{"second object", withHeader(goldenJSON+"{}", data), ErrInvalidHeader, "", "after the JSON object"},
		{"NUL padding", withHeader(goldenJSON+"\x00\x00\x00", data), ErrInvalidHeader, "", "byte 0x00"},
		{"missing colon", mutate(t, golden, `"c":{`, `"c"{`), ErrInvalidHeader, "", "expected ':'"},
		{"trailing comma", mutate(t, golden, `[30,33]}}`, `[30,33]},}`), ErrInvalidHeader, "", "an object key"},
		{"raw control character in a name", mutate(t, golden, `"c":`, "\"c\x01\":"), ErrInvalidHeader, "", "control character"},
		{"lone high surrogate", mutate(t, golden, `"c":`, `"\ud800":`), ErrInvalidHeader, "", "lone UTF-16 surrogate"},
		{"lone low surrogate", mutate(t, golden, `"c":`, `"\udc00x":`), ErrInvalidHeader, "", "lone UTF-16 surrogate"},
		{"bad escape", mutate(t, golden, `"c":`, `"\x":`), ErrInvalidHeader, "", "invalid escape"},
		{"invalid number", mutate(t, golden, `"shape":[3],"data_offsets":[30,33]`, `"shape":[03],"data_offsets":[30,33]`), ErrInvalidHeader, "c", "expected ',' or ']'"},

		// __metadata__.
		{"non-string metadata value", mutate(t, golden, `{"format":"pt"}`, `{"format":1}`), ErrInvalidMetadata, "", `value of key "format" is a number`},
		{"null metadata value", mutate(t, golden, `{"format":"pt"}`, `{"format":null}`), ErrInvalidMetadata, "", "is null"},
		{"nested metadata value", mutate(t, golden, `{"format":"pt"}`, `{"format":{"a":"b"}}`), ErrInvalidMetadata, "", "is an object"},
		{"metadata not an object", mutate(t, golden, `{"format":"pt"}`, `["pt"]`), ErrInvalidMetadata, "", "is an array"},
		{"metadata a string", mutate(t, golden, `{"format":"pt"}`, `"pt"`), ErrInvalidMetadata, "", "is a string"},
		{"duplicate metadata key", mutate(t, golden, `{"format":"pt"}`, `{"format":"pt","format":"tf"}`), ErrInvalidMetadata, "", `key "format" appears twice`},
		{"duplicate __metadata__", mutate(t, golden, `{"format":"pt"},`, `{"format":"pt"},"__metadata__":{},`), ErrInvalidMetadata, "", "appears twice"},

		// Tensor entries.
		{"duplicate tensor name", mutate(t, golden, `"c":`, `"d":`), ErrDuplicateTensor, "d", "appears twice"},
		{"entry not an object", mutate(t, golden, `"c":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[30,33]}`, `"c":["F8_E4M3",[3],[30,33]]`), ErrInvalidTensor, "c", "is an array, not an object"},
		{"entry a number", mutate(t, golden, `"c":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[30,33]}`, `"c":3`), ErrInvalidTensor, "c", "is a number, not an object"},
		{"missing dtype", mutate(t, golden, `{"dtype":"F8_E4M3",`, `{`), ErrInvalidTensor, "c", "dtype: missing"},
		{"missing shape", mutate(t, golden, `"shape":[3],"data_offsets":[30,33]`, `"data_offsets":[30,33]`), ErrInvalidTensor, "c", "shape: missing"},
		{"missing data_offsets", mutate(t, golden, `"shape":[3],"data_offsets":[30,33]`, `"shape":[3]`), ErrInvalidTensor, "c", "data_offsets: missing"},
		{"unknown field", mutate(t, golden, `[30,33]}`, `[30,33],"offsets":[30,33]}`), ErrInvalidTensor, "c", `unknown field "offsets"`},
		{"duplicate field", mutate(t, golden, `"shape":[3],"data_offsets":[30,33]`, `"shape":[3],"shape":[3],"data_offsets":[30,33]`), ErrInvalidTensor, "c", "shape: field appears twice"},
		{"unknown dtype", mutate(t, golden, `"F8_E4M3"`, `"F8_E4M4"`), ErrUnknownDType, "c", `dtype: unknown dtype "F8_E4M4"`},
		{"lower-case dtype", mutate(t, golden, `"F8_E4M3"`, `"f8_e4m3"`), ErrUnknownDType, "c", "unknown dtype"},
		{"dtype not a string", mutate(t, golden, `"F8_E4M3"`, `8`), ErrInvalidTensor, "c", "dtype: is a number, not a string"},
		{"dtype enum-object form", mutate(t, golden, `"F8_E4M3"`, `{"F8_E4M3":null}`), ErrInvalidTensor, "c", "dtype: is an object"},
		{"negative dimension", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[-3],"data_offsets":[24,30]`), ErrInvalidTensor, "b.weight", "shape: negative dimension -3"},
		{"negative zero dimension", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[-0],"data_offsets":[24,30]`), ErrInvalidTensor, "b.weight", "negative dimension -0"},
		{"fractional dimension", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[3.0],"data_offsets":[24,30]`), ErrInvalidTensor, "b.weight", "dimension 3.0 is not an integer"},
		{"exponent dimension", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[3e0],"data_offsets":[24,30]`), ErrInvalidTensor, "b.weight", "is not an integer"},
		{"dimension above 2^64-1", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[18446744073709551616],"data_offsets":[24,30]`), ErrInvalidTensor, "b.weight", "does not fit in 64 bits"},
		{"string dimension", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":["3"],"data_offsets":[24,30]`), ErrInvalidTensor, "b.weight", "element 0 is a string"},
		{"shape not an array", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":3,"data_offsets":[24,30]`), ErrInvalidTensor, "b.weight", "shape: is a number"},
		{"nested shape", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[[3]],"data_offsets":[24,30]`), ErrInvalidTensor, "b.weight", "element 0 is an array"},
		{"negative offset", mutate(t, golden, `[30,33]`, `[-30,33]`), ErrInvalidTensor, "c", "data_offsets: negative offset -30"},
		{"one offset", mutate(t, golden, `[30,33]`, `[30]`), ErrInvalidTensor, "c", "has 1 values"},
		{"three offsets", mutate(t, golden, `[30,33]`, `[30,33,33]`), ErrInvalidTensor, "c", "has 3 values"},
		{"offsets an object", mutate(t, golden, `[30,33]`, `{"begin":30}`), ErrInvalidTensor, "c", "data_offsets: is an object"},

		// Sizes.
		{"size mismatch", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[4],"data_offsets":[24,30]`), ErrInvalidTensor, "b.weight", "spans 6 bytes, but BF16[4] needs 8"},
		{"F4 with an odd count", mutate(t, golden, `"dtype":"F8_E4M3","shape":[3]`, `"dtype":"F4","shape":[3]`), ErrMisalignedSlice, "c", "12 bits"},
		{"F6 count not a multiple of 4", mutate(t, golden, `"dtype":"F8_E4M3","shape":[3]`, `"dtype":"F6_E2M3","shape":[3]`), ErrMisalignedSlice, "c", "18 bits"},
		{"element count overflow", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[4294967296,4294967296],"data_offsets":[24,30]`), ErrOverflow, "b.weight", "overflows 64 bits"},
		{"bit count overflow", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[2305843009213693952],"data_offsets":[24,30]`), ErrOverflow, "b.weight", "2^64 bits"},

		// Offsets and coverage.
		{"begin after end", mutate(t, golden, `[30,33]`, `[33,30]`), ErrInvalidOffsets, "c", "begin 33 is after end 30"},
		{"gap between tensors", withHeader(strings.Replace(goldenJSON, `[30,33]`, `[31,34]`, 1), append(bytes.Clone(data), 0)), ErrInvalidOffsets, "c", `1-byte gap after tensor "b.weight"`},
		{"overlapping tensors", mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[3],"data_offsets":[22,28]`), ErrInvalidOffsets, "b.weight", `overlapping tensor "a.weight"`},
		{"first tensor not at 0", mutate(t, golden, `"d":{"dtype":"I64","shape":[],"data_offsets":[0,8]},`, ``), ErrInvalidOffsets, "a.weight", "first tensor begins at 8"},
		{"trailing bytes", append(bytes.Clone(golden), 0), ErrIncompleteBuffer, "", "1 trailing bytes"},
		{"truncated data", golden[:len(golden)-1], ErrIncompleteBuffer, "", "need 33 bytes"},
		{"tensors beyond the file", mutate(t, golden, `"c":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[30,33]}`, `"c":{"dtype":"F8_E4M3","shape":[5],"data_offsets":[30,35]}`), ErrIncompleteBuffer, "", "need 35 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := parseFile(t, tc.file)
			if err == nil {
				t.Fatalf("accepted, want %v; tensors %+v", tc.class, h.Tensors)
			}
			if !errors.Is(err, tc.class) {
				t.Fatalf("error %q is not %v", err, tc.class)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error %q is not a *FormatError", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "safetensors: "+testFileName+": ") {
				t.Errorf("message %q does not name the file", msg)
			}
			if tc.tensor != "" && (fe.Tensor != tc.tensor || !strings.Contains(msg, `tensor "`+tc.tensor+`"`)) {
				t.Errorf("message %q (Tensor %q) does not name tensor %q", msg, fe.Tensor, tc.tensor)
			}
			if !strings.Contains(msg, tc.reason) {
				t.Errorf("message %q does not contain %q", msg, tc.reason)
			}
		})
	}
}

func TestErrorMessageFormat(t *testing.T) {
	golden := goldenFile(t)
	file := mutate(t, golden, `"shape":[3],"data_offsets":[24,30]`, `"shape":[-3],"data_offsets":[24,30]`)
	_, err := ReadHeader(bytes.NewReader(file), int64(len(file)), "model-00001.safetensors")
	want := `safetensors: model-00001.safetensors: tensor "b.weight": shape: negative dimension -3`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %s", err, want)
	}

	long := strings.Repeat("x", 10_000)
	msg := (&FormatError{File: "f", Tensor: long, Reason: "r", Err: ErrInvalidTensor}).Error()
	if len(msg) > 400 || !strings.Contains(msg, "10000 bytes") {
		t.Errorf("message for a 10,000-byte name is %d bytes: %.100q", len(msg), msg)
	}
}

func TestAcceptsValidVariants(t *testing.T) {
	golden := goldenFile(t)
	data := golden[280:]
	reversed := `{"c":{"data_offsets":[30,33],"shape":[3],"dtype":"F8_E4M3"},"b.weight":{"shape":[3],"dtype":"BF16","data_offsets":[24,30]},"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},"d":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}`
	tests := []struct {
		name     string
		file     []byte
		metadata map[string]string
	}{
		{"golden", golden, goldenMetadata},
		{"any key and field order", withHeader(reversed, data), goldenMetadata},
		{"JSON whitespace inside and after", withHeader(strings.ReplaceAll(goldenJSON, ",", " ,\n\t")+"\r\n\t ", data), goldenMetadata},
		{"no padding", withHeader(goldenJSON, data), goldenMetadata},
		{"escaped key", mutate(t, golden, `"c":`, `"\u0063":`), goldenMetadata},
		{"escaped field names and metadata key", mutate(t, golden, `"format"`, `"\u0066ormat"`), goldenMetadata},
		{"null metadata", mutate(t, golden, `{"format":"pt"}`, `null`), nil},
		{"empty metadata", mutate(t, golden, `{"format":"pt"}`, `{}`), map[string]string{}},
		{"no metadata", mutate(t, golden, `"__metadata__":{"format":"pt"},`, ``), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := parseFile(t, tc.file)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if !reflect.DeepEqual(h.Metadata, tc.metadata) {
				t.Errorf("Metadata = %#v, want %#v", h.Metadata, tc.metadata)
			}
			var names []string
			for _, info := range h.Tensors {
				names = append(names, info.Name)
			}
			if want := []string{"d", "a.weight", "b.weight", "c"}; !reflect.DeepEqual(names, want) {
				t.Errorf("tensor order %q, want %q", names, want)
			}
		})
	}

	h, err := parseFile(t, withHeader("{}", nil))
	if err != nil || len(h.Tensors) != 0 || h.Metadata != nil || h.DataSize() != 0 {
		t.Errorf("empty header: %+v, %v", h, err)
	}
}

func TestZeroSizeTensorsAtSharedOffsets(t *testing.T) {
	// Zero-size tensors may sit at the same offset as each other and as the
	// start of a non-empty tensor; they sort first there, then by name.
	header := `{"z":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"big":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},"first":{"dtype":"I32","shape":[],"data_offsets":[0,4]}}`
	h, err := parseFile(t, withHeader(header, make([]byte, 8)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, info := range h.Tensors {
		names = append(names, info.Name)
	}
	if want := []string{"first", "a", "z", "big"}; !reflect.DeepEqual(names, want) {
		t.Errorf("order %q, want %q", names, want)
	}
}

func TestReadHeaderReadsOnlyThePrefix(t *testing.T) {
	golden := goldenFile(t)
	r := &countingReader{r: bytes.NewReader(golden)}
	if _, err := ReadHeader(r, int64(len(golden)), goldenName); err != nil {
		t.Fatal(err)
	}
	if r.n != 280 {
		t.Errorf("ReadHeader read %d bytes, want exactly 280", r.n)
	}

	// A reader shorter than the declared file size is an I/O error, not a
	// format error.
	_, err := ReadHeader(bytes.NewReader(golden[:100]), int64(len(golden)), goldenName)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), goldenName) {
		t.Errorf("short reader: %v", err)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestParseHeaderPrefixLength(t *testing.T) {
	golden := goldenFile(t)
	_, err := ParseHeader(golden[:279], goldenSize, goldenName)
	if !errors.Is(err, ErrHeaderLength) {
		t.Errorf("short prefix: %v", err)
	}
	_, err = ParseHeader(golden, goldenSize, goldenName)
	if !errors.Is(err, ErrHeaderLength) {
		t.Errorf("whole file as prefix: %v", err)
	}
}
