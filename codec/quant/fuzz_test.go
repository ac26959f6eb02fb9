package quant

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
)

// parseTensorList reads the fuzzers' tensor list: one "name DTYPE dim dim…"
// per line.
func parseTensorList(s string) []safetensors.TensorInfo {
	var out []safetensors.TensorInfo
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) < 2 || len(out) >= 256 {
			continue
		}
		t := safetensors.TensorInfo{Name: f[0], DType: safetensors.DType(f[1]), Shape: []uint64{}}
		for _, d := range f[2:min(len(f), 6)] {
			v, err := strconv.ParseUint(d, 10, 64)
			if err != nil {
				break
			}
			t.Shape = append(t.Shape, v)
		}
		out = append(out, t)
	}
	return out
}

func formatTensorList(ts []safetensors.TensorInfo) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "%s %s", t.Name, t.DType)
		for _, d := range t.Shape {
			fmt.Fprintf(&b, " %d", d)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// maxFuzzData bounds the tensor data FuzzDetect synthesises for
// DequantModule, so that a header claiming a huge tensor costs nothing.
const maxFuzzData = 1 << 20

// FuzzDetect feeds arbitrary configs, tensor lists and side files to Detect.
// It must not panic, must classify every rejection, and an accepted model
// must account for every tensor exactly once. Each accepted module is then
// dequantized from data filled with the fuzzer's bytes: again no panics,
// classified errors, and an output of exactly out×in BF16 values.
func FuzzDetect(f *testing.F) {
	w4 := tinyQwen3(w4a16Tensors(true))
	f.Add([]byte(ctFP8BlockConfig), formatTensorList(tinyQwen3(fp8BlockTensors(".weight_scale", safetensors.BF16))), []byte(nil), []byte{0x38, 0x3f, 0x80})
	f.Add([]byte(`{"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
		"config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "symmetric": false, "strategy": "group", "group_size": 32, "actorder": "group"}}}}}`),
		formatTensorList(append(w4, ti("model.layers.0.mlp.up_proj.weight_g_idx", safetensors.I32, 64))), []byte(nil), []byte{0, 1, 2, 3})
	f.Add([]byte(`{"quantization_config": {"quant_method": "compressed-tensors", "quantization_status": "compressed", "config_groups": {"W4A16_ASYM": ["re:.*proj$"]}}}`),
		formatTensorList(w4), []byte(nil), []byte{0x88})
	f.Add([]byte(`{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128]}}`),
		formatTensorList(tinyQwen3(fp8BlockTensors(".weight_scale_inv", safetensors.F32))), []byte(nil), []byte{0x7f, 0, 0, 0x3f})
	f.Add([]byte(`{"quantization_config": {"quant_method": "fp8", "activation_scheme": "static"}}`),
		"w.weight F8_E5M2 3 5\nw.weight_scale F32\nw.input_scale F32 1\n", []byte(nil), []byte{1})
	f.Add([]byte(`{"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": true, "version": "gemm"}}`),
		"p.qweight I32 64 2\np.qzeros I32 2 2\np.scales F16 2 16\np.bias F16 16\n", []byte(nil), []byte{0x12, 0x34})
	f.Add([]byte(nil), "p.weight._data I8 4 8\np.weight._scale BF16 4 1\np.input_scale BF16\n",
		[]byte(`{"p": {"weights": "qint8", "activations": "none"}}`), []byte{0xff})
	f.Add([]byte(`{"quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized", "quantization_status": "compressed",
		"config_groups": {"g": {"targets": ["Linear"], "weights": {"num_bits": 8, "symmetric": false, "strategy": "tensor"}, "input_activations": {"num_bits": 8}}}}}`),
		"a.weight I8 2 3\na.weight_scale F32 1\na.weight_zero_point I8 1\nb.k_scale F32\n", []byte(nil), []byte{5})
	f.Add([]byte(`{}`), "x.weight BF16 2 2\n", []byte(nil), []byte(nil))
	f.Add([]byte(`{"quantization_config": {"quant_method": "fp8", "activation_scheme": "static"}}`),
		"p.weight F8_E4M3 2 2\np.weight_scale F32\np.input_scale 0\n", []byte(nil), []byte(nil)) // found by fuzzing: an unknown dtype

	f.Fuzz(func(t *testing.T, config []byte, list string, qmap []byte, fill []byte) {
		tensors := parseTensorList(list)
		var extra map[string][]byte
		if qmap != nil {
			extra = map[string][]byte{QuantoQMapFile: qmap, awqSideConfig: qmap}
		}
		m, err := Detect(config, tensors, extra)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		seen := map[string]int{}
		for _, mod := range m.Modules {
			if _, ok := mod.Tensors[RoleCodes]; !ok {
				t.Fatalf("module %s has no codes", mod.Prefix)
			}
			if _, ok := mod.Tensors[RoleScale]; !ok {
				t.Fatalf("module %s has no scale", mod.Prefix)
			}
			for _, name := range mod.TensorNames() {
				seen[name]++
			}
		}
		for _, name := range slices.Concat(m.Dense, m.Aux) {
			seen[name]++
		}
		for _, ti := range tensors {
			if seen[ti.Name] != 1 {
				t.Fatalf("tensor %s accounted for %d times", ti.Name, seen[ti.Name])
			}
		}
		if len(seen) != len(tensors) {
			t.Fatalf("%d names accounted for, %d tensors", len(seen), len(tensors))
		}
		if m.Describe() == "" {
			t.Fatal("empty description")
		}
		budget := uint64(maxFuzzData) // over all modules, to keep each input fast
		for _, mod := range m.Modules {
			data := map[Role][]byte{}
			total := uint64(0)
			for role, ti := range mod.Tensors {
				n, err := ti.DType.ByteLen(ti.Shape)
				if err != nil {
					t.Fatalf("%s: accepted a tensor with no byte length: %v", ti.Name, err)
				}
				total += n
				if total > maxFuzzData {
					break
				}
				b := make([]byte, n)
				for i := range b {
					if len(fill) > 0 {
						b[i] = fill[i%len(fill)]
					}
				}
				data[role] = b
			}
			if total > budget || (mod.Out > 0 && mod.In > 0 && uint64(mod.Out*mod.In) > budget) {
				continue
			}
			budget -= total
			out, err := DequantModule(mod, data)
			if err != nil {
				if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("%s: unclassified error: %v", mod.Prefix, err)
				}
				continue
			}
			o, i, err := mod.Dims(data)
			if err != nil || len(out) != 2*o*i {
				t.Fatalf("%s: %d output bytes for [%d, %d] (%v)", mod.Prefix, len(out), o, i, err)
			}
		}
	})
}

// FuzzUnpack feeds arbitrary words to the unpackers. They must not panic,
// must allocate no more than the input justifies, and must agree with the
// packers: whatever unpacks re-packs to words that unpack the same (padding
// bits are not preserved), and AWQ words, which have no padding, round-trip
// exactly.
func FuzzUnpack(f *testing.F) {
	f.Add(i32bytes(-1880241239, 19088743), uint16(8), uint8(4), false)
	f.Add(i32bytes(0x69), uint16(2), uint8(4), false)
	f.Add(i32bytes(0x08FAC688, 0x1A23EB1A, 0x2C688FAC, 0x0000003E), uint16(32), uint8(3), true)
	f.Add(i32bytes(-2071756159), uint16(4), uint8(8), false)
	f.Add(i32bytes(0x75316420, -1966171169), uint16(8), uint8(4), false)
	f.Fuzz(func(t *testing.T, data []byte, cols16 uint16, bits8 uint8, aligned bool) {
		words := int32sFromBytes(data)
		cols, bits := int(cols16), int(bits8%9)
		layout := Dense
		if aligned {
			layout = ElementAligned
		}
		q, err := UnpackInt32(words, cols, bits, layout)
		if err == nil {
			if cols > 0 && len(q) != len(words)/PackedWords(cols, bits, layout)*cols {
				t.Fatalf("%d codes from %d words of %d-bit rows of %d", len(q), len(words), bits, cols)
			}
			if len(q) > 32*len(words) {
				t.Fatalf("%d codes from %d words", len(q), len(words))
			}
			p, err := PackInt32(q, cols, bits, layout)
			if err != nil {
				t.Fatalf("re-pack: %v", err)
			}
			q2, err := UnpackInt32(p, cols, bits, layout)
			if err != nil || !slices.Equal(q, q2) {
				t.Fatalf("unpack(pack(unpack(w))) != unpack(w): %v", err)
			}
			// The byte-level row unpacker of the kernels agrees.
			if cols > 0 && len(words) > 0 {
				w := PackedWords(cols, bits, layout)
				u := make([]uint8, cols)
				unpackRowBytes(u, data[:4*w], bits, layout)
				for i, v := range u {
					if int(v)-1<<(bits-1) != int(q[i]) {
						t.Fatalf("unpackRowBytes code %d = %d, want %d", i, int(v)-1<<(bits-1), q[i])
					}
				}
			}
		}
		// Along dim 0: cols of the fuzz input are the packed rows.
		if w := PackedWords(cols, bits, layout); w > 0 && len(words)%w == 0 {
			n := len(words) / w
			z, err := UnpackInt32Dim0(words, cols, n, bits, layout)
			if err != nil {
				t.Fatalf("dim 0: %v", err)
			}
			p, err := PackInt32Dim0(z, cols, n, bits, layout)
			if err != nil {
				t.Fatalf("dim 0 re-pack: %v", err)
			}
			if z2, err := UnpackInt32Dim0(p, cols, n, bits, layout); err != nil || !slices.Equal(z, z2) {
				t.Fatalf("dim 0 round trip: %v", err)
			}
		}
		awqCols := 8 * (cols%16 + 1)
		if v, err := UnpackAWQ(words, awqCols); err == nil {
			p, err := PackAWQ(v, awqCols)
			if err != nil || !slices.Equal(p, words) {
				t.Fatalf("AWQ words do not round-trip: %v", err)
			}
		}
	})
}
