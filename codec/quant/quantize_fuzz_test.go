package quant

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
)

// fuzzSchemes are the schemes FuzzQuantize picks from: small blocks and
// groups, so that a small weight has many cells, partial ones included.
var fuzzSchemes = []QuantizeScheme{
	{Name: QuantFP8Block, BlockSize: [2]int{4, 8}},
	{Name: QuantFP8Block, BlockSize: [2]int{3, 5}, Format: OutputFP8},
	{Name: QuantFP8Block, BlockSize: [2]int{4, 8}, Format: OutputFP8, ScaleDType: safetensors.F32},
	{Name: QuantFP8Block, BlockSize: [2]int{2, 16}, ScaleDType: safetensors.F16},
	{Name: QuantInt8},
	{Name: QuantInt8, ScaleDType: safetensors.BF16},
	{Name: QuantW4A16, GroupSize: 8},
	{Name: QuantW4A16, GroupSize: 16, Asymmetric: true},
	{Name: QuantW4A16, GroupSize: -1, Asymmetric: true},
	{Name: QuantW4A16, GroupSize: 8, Asymmetric: true, ScaleDType: safetensors.F32},
}

// FuzzQuantize quantizes weights made of the fuzzer's bytes with every
// scheme, weight dtype and shape: no panics; a refusal only for a non-finite
// weight (ErrNonFinite) or a scale the scale dtype cannot hold
// (ErrUnsupported); otherwise outputs equal to the float64 reference, and
// the existing Dequantize within the format's error bound of the input.
func FuzzQuantize(f *testing.F) {
	f.Add([]byte{0x80, 0x3F, 0x00, 0xC0, 0x40, 0x3E}, uint8(0), uint8(3), uint8(7), uint8(0))
	f.Add([]byte{0x00, 0x00, 0x80, 0x7F}, uint8(4), uint8(2), uint8(9), uint8(1))
	f.Add([]byte{0x01, 0x00, 0x00, 0x80, 0xFF, 0x7F}, uint8(7), uint8(5), uint8(33), uint8(2))
	f.Add([]byte{0xC0, 0x7F}, uint8(2), uint8(1), uint8(1), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, scheme, rows8, cols8, dt uint8) {
		qs := fuzzSchemes[int(scheme)%len(fuzzSchemes)].normalized()
		wd := []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32}[int(dt)%3]
		out, in := 1+int(rows8)%12, 1+int(cols8)%48
		if g := qs.GroupSize; qs.Name == QuantW4A16 && g > 0 && in >= g {
			in -= in % g
		}
		es := wd.BitSize() / 8
		w := make([]byte, out*in*es)
		if len(data) > 0 {
			for i := range w {
				w[i] = data[i%len(data)]
			}
		}
		x := make([]float64, out*in)
		finite := true
		for i := range x {
			switch wd {
			case safetensors.BF16:
				x[i] = float64(math.Float32frombits(uint32(w[2*i])<<16 | uint32(w[2*i+1])<<24))
			case safetensors.F16:
				x[i] = refF16Value(uint16(w[2*i]) | uint16(w[2*i+1])<<8)
			default:
				x[i] = float64(math.Float32frombits(uint32(w[4*i]) | uint32(w[4*i+1])<<8 | uint32(w[4*i+2])<<16 | uint32(w[4*i+3])<<24))
			}
			finite = finite && !math.IsNaN(x[i]) && !math.IsInf(x[i], 0)
		}
		info := safetensors.TensorInfo{Name: "fuzz.weight", DType: wd, Shape: []uint64{uint64(out), uint64(in)}}
		res, err := QuantizeWeight(qs, info, w)
		switch {
		case !finite:
			if !errors.Is(err, ErrNonFinite) {
				t.Fatalf("non-finite weight: %v", err)
			}
			return
		case errors.Is(err, ErrUnsupported) && strings.Contains(err.Error(), "overflow"):
			return
		case err != nil:
			t.Fatalf("%s %s [%d, %d]: %v", qs, wd, out, in, err)
		}
		ref := refQuantize(qs, wd, out, in, x)
		got := decodeOutputs(t, qs, out, in, res)
		if !slices.Equal(got.codes, ref.codes) || !slices.Equal(got.scales, ref.scales) || qs.Asymmetric && !slices.Equal(got.zps, ref.zps) {
			t.Fatalf("%s %s [%d, %d]: differs from the reference", qs, wd, out, in)
		}
		mod, tensors := quantizedModule(t, qs, res)
		y, err := Dequantize(mod, tensors, safetensors.F32)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range f32s(y) {
			k := ref.cell(i/in, i%in)
			if e, bound := math.Abs(float64(v)-x[i]), errorBound(qs, x[i], ref.scales[k], ref.zps[k]); !(e <= bound) {
				t.Fatalf("%s %s: [%d, %d] x = %v dequantized to %v (scale %v), error %v > %v", qs, wd, i/in, i%in, x[i], v, ref.scales[k], e, bound)
			}
		}
	})
}

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}
