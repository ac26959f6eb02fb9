package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
)

// The test vectors of shared/docs/formats.md §14.5-§14.9.

// ti builds a TensorInfo (offsets do not matter to this package).
func ti(name string, dtype safetensors.DType, shape ...uint64) safetensors.TensorInfo {
	if shape == nil {
		shape = []uint64{}
	}
	return safetensors.TensorInfo{Name: name, DType: dtype, Shape: shape}
}

func i32bytes(v ...int32) []byte { return int32sToBytes(v) }

func i64bytes(v ...int64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return b
}

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bf16bytes(v ...float32) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], numeric.F32ToBF16(x))
	}
	return b
}

func f16bytes(v ...float32) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], numeric.F32ToF16(x))
	}
	return b
}

// u16s reads little-endian 16-bit output elements.
func u16s(b []byte) []uint16 {
	out := make([]uint16, len(b)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out
}

func bf16Values(b []byte) []float32 {
	out := make([]float32, len(b)/2)
	for i, u := range u16s(b) {
		out[i] = numeric.BF16ToF32(u)
	}
	return out
}

// §14.5: compressed-tensors pack_to_int32.
func TestSection145Pack(t *testing.T) {
	rep := func(v []int8, n int) []int8 {
		var out []int8
		for range n {
			out = append(out, v...)
		}
		return out
	}
	threeBit := rep([]int8{-4, -3, -2, -1, 0, 1, 2, 3}, 4)
	for _, tc := range []struct {
		bits   int
		layout Layout
		codes  []int8
		words  []uint32
	}{
		{4, Dense, []int8{1, 2, 3, 4, 5, 6, 7, 0}, []uint32{0x8FEDCBA9}},
		{4, Dense, []int8{-1, -2, -3, -4, -5, -6, -7, -8}, []uint32{0x01234567}},
		{4, Dense, rep([]int8{-8}, 8), []uint32{0}},
		{4, Dense, rep([]int8{0}, 8), []uint32{0x88888888}},
		{8, Dense, []int8{1, 2}, []uint32{0x00008281}},
		{8, Dense, []int8{1, 2, 3, 4}, []uint32{0x84838281}},
		{3, Dense, threeBit, []uint32{0x88FAC688, 0xC688FAC6, 0xFAC688FA}},
		{3, ElementAligned, threeBit, []uint32{0x08FAC688, 0x1A23EB1A, 0x2C688FAC, 0x0000003E}},
		// Both layouts agree for 4 and 8 bits.
		{4, ElementAligned, []int8{1, 2, 3, 4, 5, 6, 7, 0}, []uint32{0x8FEDCBA9}},
		{8, ElementAligned, []int8{1, 2, 3, 4}, []uint32{0x84838281}},
	} {
		name := fmt.Sprintf("%dbit-%s-%v", tc.bits, tc.layout, tc.codes[:min(8, len(tc.codes))])
		got, err := PackInt32(tc.codes, len(tc.codes), tc.bits, tc.layout)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := make([]int32, len(tc.words))
		for i, w := range tc.words {
			want[i] = int32(w)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: packed %#08x, want %#08x", name, got, tc.words)
		}
		back, err := UnpackInt32(got, len(tc.codes), tc.bits, tc.layout)
		if err != nil || !slices.Equal(back, tc.codes) {
			t.Errorf("%s: unpacked %v, %v", name, back, err)
		}
	}
	// The signed values the table quotes.
	if got, _ := PackInt32([]int8{1, 2, 3, 4, 5, 6, 7, 0}, 8, 4, Dense); got[0] != -1880241239 {
		t.Errorf("int32 value %d, want -1880241239", got[0])
	}
	if got, _ := PackInt32([]int8{-1, -2, -3, -4, -5, -6, -7, -8}, 8, 4, Dense); got[0] != 19088743 {
		t.Errorf("int32 value %d, want 19088743", got[0])
	}
	if got, _ := PackInt32([]int8{0, 0, 0, 0, 0, 0, 0, 0}, 8, 4, Dense); got[0] != -2004318072 {
		t.Errorf("int32 value %d, want -2004318072", got[0])
	}
	if got, _ := PackInt32([]int8{1, 2, 3, 4}, 4, 8, Dense); got[0] != -2071756159 {
		t.Errorf("int32 value %d, want -2071756159", got[0])
	}
	if got, _ := PackInt32([]int8{1, 2}, 2, 8, Dense); got[0] != 33409 {
		t.Errorf("int32 value %d, want 33409", got[0])
	}

	// Zero points pack along out: the column [1, -2] (out = 2) is 0x69.
	zp, err := PackInt32Dim0([]int8{1, -2}, 2, 1, 4, Dense)
	if err != nil || !slices.Equal(zp, []int32{0x69}) {
		t.Errorf("zero point packing %#x, %v; want [0x69]", zp, err)
	}
	back, err := UnpackInt32Dim0(zp, 2, 1, 4, Dense)
	if err != nil || !slices.Equal(back, []int8{1, -2}) {
		t.Errorf("zero point unpacking %v, %v", back, err)
	}
}

// §14.6: the AutoAWQ interleave.
func TestSection146AWQ(t *testing.T) {
	for _, tc := range []struct {
		v    []uint8
		word uint32
		i32  int32
	}{
		{[]uint8{0, 1, 2, 3, 4, 5, 6, 7}, 0x75316420, 1966171168},
		{[]uint8{15, 14, 13, 12, 11, 10, 9, 8}, 0x8ACE9BDF, -1966171169},
	} {
		got, err := PackAWQ(tc.v, 8)
		if err != nil || len(got) != 1 || uint32(got[0]) != tc.word || got[0] != tc.i32 {
			t.Errorf("PackAWQ(%v) = %#x, %v; want %#x (%d)", tc.v, got, err, tc.word, tc.i32)
		}
		back, err := UnpackAWQ([]int32{int32(tc.word)}, 8)
		if err != nil || !slices.Equal(back, tc.v) {
			t.Errorf("UnpackAWQ(%#x) = %v, %v; want %v", tc.word, back, err, tc.v)
		}
		// To compressed-tensors: q_ct = v - 8.
		q := make([]int8, 8)
		for i, v := range back {
			q[i] = int8(v) - 8
		}
		packed, _ := PackInt32(q, 8, 4, Dense)
		ct, _ := UnpackInt32(packed, 8, 4, Dense)
		for i := range ct {
			if int(ct[i])+8 != int(tc.v[i]) {
				t.Errorf("AWQ %v → CT %v: code %d is not v-8", tc.v, ct, i)
			}
		}
	}
}

// w4a16Module builds the §14.7 module (out 2, in 8, group 8) through Detect.
func w4a16Module(t *testing.T, symmetric bool) (Module, map[Role][]byte) {
	t.Helper()
	cfg := fmt.Sprintf(`{"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized",
		"quantization_status": "compressed", "ignore": ["lm_head"],
		"config_groups": {"group_0": {"targets": ["Linear"], "input_activations": null,
			"weights": {"num_bits": 4, "type": "int", "symmetric": %v, "strategy": "group", "group_size": 8}}}}}`, symmetric)
	tensors := []safetensors.TensorInfo{
		ti("m.weight_packed", safetensors.I32, 2, 1),
		ti("m.weight_scale", safetensors.BF16, 2, 1),
		ti("m.weight_shape", safetensors.I64, 2),
	}
	data := map[Role][]byte{
		RoleCodes: i32bytes(-1880241239, 19088743),
		RoleScale: bf16bytes(0.5, 0.25),
		RoleShape: i64bytes(2, 8),
	}
	if !symmetric {
		tensors = append(tensors, ti("m.weight_zero_point", safetensors.I32, 1, 1))
		data[RoleZeroPoint] = i32bytes(105)
	}
	m, err := Detect([]byte(cfg), tensors, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Modules) != 1 {
		t.Fatalf("modules %+v", m.Modules)
	}
	return m.Modules[0], data
}

// §14.7: W4A16 dequantization, symmetric and asymmetric.
func TestSection147W4A16(t *testing.T) {
	for _, tc := range []struct {
		symmetric bool
		want      []float32
	}{
		{true, []float32{0.5, 1, 1.5, 2, 2.5, 3, 3.5, 0, -0.25, -0.5, -0.75, -1, -1.25, -1.5, -1.75, -2}},
		{false, []float32{0, 0.5, 1, 1.5, 2, 2.5, 3, -0.5, 0.25, 0, -0.25, -0.5, -0.75, -1, -1.25, -1.5}},
	} {
		mod, data := w4a16Module(t, tc.symmetric)
		if out, in, err := mod.Dims(data); err != nil || out != 2 || in != 8 {
			t.Errorf("Dims = %d, %d, %v", out, in, err)
		}
		got, err := DequantModule(mod, data)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(bf16Values(got), tc.want) {
			t.Errorf("symmetric=%v: %v, want %v", tc.symmetric, bf16Values(got), tc.want)
		}
		// The value must also be exact in the other output dtypes.
		f32, err := Dequantize(mod, data, safetensors.F32)
		if err != nil {
			t.Fatal(err)
		}
		for i := range tc.want {
			if v := math.Float32frombits(binary.LittleEndian.Uint32(f32[4*i:])); v != tc.want[i] {
				t.Errorf("F32 element %d = %v, want %v", i, v, tc.want[i])
			}
		}
	}
}

// §14.8 inputs.
var (
	s148Codes  = []byte{0x38, 0x40, 0xB8, 0x7E, 0x01, 0x00, 0x3C, 0xC4, 0x30}
	s148Scales = []float32{0.1, 3.0, 0x1p-10, 1.7}
	s148Want   = []uint16{0x3DCD, 0x3E4D, 0xC040, 0x4233, 0x394D, 0x0000, 0x3AC0, 0xBB40, 0x3F5A}
)

// §14.8: FP8 block dequantization with partial edge blocks, native
// (weight_scale_inv) and compressed-tensors (weight_scale), F32 and BF16
// scales.
func TestSection148FP8Block(t *testing.T) {
	native := `{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [2, 2]}}`
	ct := `{"quantization_config": {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
		"config_groups": {"group_0": {"targets": ["Linear"], "format": "float-quantized",
			"weights": {"num_bits": 8, "type": "float", "symmetric": true, "strategy": "block", "block_structure": [2, 2]},
			"input_activations": {"num_bits": 8, "type": "float", "strategy": "group", "group_size": 2, "dynamic": true}}}}}`
	for _, cfg := range []struct{ name, json, scale string }{{"native", native, "w.weight_scale_inv"}, {"compressed-tensors", ct, "w.weight_scale"}} {
		for _, sd := range []safetensors.DType{safetensors.F32, safetensors.BF16} {
			m, err := Detect([]byte(cfg.json), []safetensors.TensorInfo{
				ti("w.weight", safetensors.F8E4M3, 3, 3), ti(cfg.scale, sd, 2, 2), ti("norm.weight", safetensors.BF16, 3),
			}, nil)
			if err != nil {
				t.Fatalf("%s %s: %v", cfg.name, sd, err)
			}
			scales := f32bytes(s148Scales...)
			if sd == safetensors.BF16 {
				scales = bf16bytes(s148Scales...)
			}
			got, err := DequantModule(m.Modules[0], map[Role][]byte{RoleCodes: s148Codes, RoleScale: scales})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(u16s(got), s148Want) {
				t.Errorf("%s %s scales: %#04x, want %#04x", cfg.name, sd, u16s(got), s148Want)
			}
		}
	}
	// The values §14.8 lists.
	want := []float32{0.10009765625, 0.2001953125, -3.0, 44.75, 0, 0.00146484375, -0.0029296875, 0.8515625}
	got := bf16Values(i16to8(s148Want))
	for i, j := range []int{0, 1, 2, 3, 5, 6, 7, 8} {
		if got[j] != want[i] {
			t.Errorf("element %d = %v, want %v", j, got[j], want[i])
		}
	}
	if math.Abs(float64(got[4])-0.000195503) > 1e-9 {
		t.Errorf("element 4 = %v, want 0.000195503…", got[4])
	}
}

func i16to8(v []uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

// §14.8 shape checks: the scale grid uses ceil.
func TestSection148GridShapes(t *testing.T) {
	native := func(block int) string {
		return fmt.Sprintf(`{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [%d, %d]}}`, block, block)
	}
	for _, tc := range []struct {
		block, out, in int
		grid           [2]uint64
	}{
		{2, 3, 3, [2]uint64{2, 2}},
		{128, 200, 300, [2]uint64{2, 3}},
	} {
		ok := []safetensors.TensorInfo{ti("w.weight", safetensors.F8E4M3, uint64(tc.out), uint64(tc.in)), ti("w.weight_scale_inv", safetensors.F32, tc.grid[0], tc.grid[1])}
		if _, err := Detect([]byte(native(tc.block)), ok, nil); err != nil {
			t.Errorf("%dx%d block %d with grid %v: %v", tc.out, tc.in, tc.block, tc.grid, err)
		}
		floor := []safetensors.TensorInfo{ok[0], ti("w.weight_scale_inv", safetensors.F32, uint64(tc.out/tc.block), uint64(tc.in/tc.block))}
		if _, err := Detect([]byte(native(tc.block)), floor, nil); err == nil {
			t.Errorf("%dx%d block %d accepted a floor-sized grid", tc.out, tc.in, tc.block)
		}
	}
}

// qwen3_32B are the Qwen3-32B projection shapes of §4.
var qwen3_32B = map[string][2]int{
	"self_attn.q_proj": {8192, 5120}, "self_attn.k_proj": {1024, 5120}, "self_attn.v_proj": {1024, 5120},
	"self_attn.o_proj": {5120, 8192}, "mlp.gate_proj": {25600, 5120}, "mlp.up_proj": {25600, 5120}, "mlp.down_proj": {5120, 25600},
}

// §14.9 / §4: Detect accepts exactly the quantized shapes of the §4 table
// for Qwen3-32B, for FP8 block, W4A16 (with packed zero points) and AWQ.
func TestSection149Shapes(t *testing.T) {
	fp8Grid := map[string][2]uint64{
		"self_attn.q_proj": {64, 40}, "self_attn.k_proj": {8, 40}, "self_attn.v_proj": {8, 40}, "self_attn.o_proj": {40, 64},
		"mlp.gate_proj": {200, 40}, "mlp.up_proj": {200, 40}, "mlp.down_proj": {40, 200},
	}
	// weight_packed, weight_scale, packed weight_zero_point.
	w4 := map[string][3][2]uint64{
		"self_attn.q_proj": {{8192, 640}, {8192, 40}, {1024, 40}},
		"self_attn.k_proj": {{1024, 640}, {1024, 40}, {128, 40}},
		"self_attn.v_proj": {{1024, 640}, {1024, 40}, {128, 40}},
		"self_attn.o_proj": {{5120, 1024}, {5120, 64}, {640, 64}},
		"mlp.gate_proj":    {{25600, 640}, {25600, 40}, {3200, 40}},
		"mlp.up_proj":      {{25600, 640}, {25600, 40}, {3200, 40}},
		"mlp.down_proj":    {{5120, 3200}, {5120, 200}, {640, 200}},
	}
	// qweight, qzeros, scales.
	awq := map[string][3][2]uint64{
		"self_attn.q_proj": {{5120, 1024}, {40, 1024}, {40, 8192}},
		"self_attn.k_proj": {{5120, 128}, {40, 128}, {40, 1024}},
		"self_attn.v_proj": {{5120, 128}, {40, 128}, {40, 1024}},
		"self_attn.o_proj": {{8192, 640}, {64, 640}, {64, 5120}},
		"mlp.gate_proj":    {{5120, 3200}, {40, 3200}, {40, 25600}},
		"mlp.up_proj":      {{5120, 3200}, {40, 3200}, {40, 25600}},
		"mlp.down_proj":    {{25600, 640}, {200, 640}, {200, 5120}},
	}
	p := "model.layers.0."
	var fp8, packed, aw []safetensors.TensorInfo
	for mod, dims := range qwen3_32B {
		g := fp8Grid[mod]
		fp8 = append(fp8, ti(p+mod+".weight", safetensors.F8E4M3, uint64(dims[0]), uint64(dims[1])), ti(p+mod+".weight_scale_inv", safetensors.BF16, g[0], g[1]))
		w := w4[mod]
		packed = append(packed, ti(p+mod+".weight_packed", safetensors.I32, w[0][0], w[0][1]), ti(p+mod+".weight_scale", safetensors.BF16, w[1][0], w[1][1]),
			ti(p+mod+".weight_zero_point", safetensors.I32, w[2][0], w[2][1]), ti(p+mod+".weight_shape", safetensors.I64, 2))
		a := awq[mod]
		aw = append(aw, ti(p+mod+".qweight", safetensors.I32, a[0][0], a[0][1]), ti(p+mod+".qzeros", safetensors.I32, a[1][0], a[1][1]), ti(p+mod+".scales", safetensors.F16, a[2][0], a[2][1]))
	}
	for _, tc := range []struct {
		name, cfg string
		tensors   []safetensors.TensorInfo
	}{
		{"fp8", `{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128]}}`, fp8},
		{"w4a16-asym", `{"quantization_config": {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
			"config_groups": {"W4A16_ASYM": ["Linear"]}}}`, packed},
		{"awq", `{"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": true, "version": "gemm", "modules_to_not_convert": null}}`, aw},
	} {
		m, err := Detect([]byte(tc.cfg), tc.tensors, nil)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if len(m.Modules) != 7 {
			t.Errorf("%s: %d modules", tc.name, len(m.Modules))
		}
		for _, mod := range m.Modules {
			want := qwen3_32B[mod.Prefix[len(p):]]
			if mod.Out != want[0] || (mod.In != want[1] && mod.In != 0) {
				t.Errorf("%s %s: [%d, %d], want %v", tc.name, mod.Prefix, mod.Out, mod.In, want)
			}
		}
		// Every one-off change of a quantization tensor's shape is refused.
		for i, tensor := range tc.tensors {
			if len(tensor.Shape) != 2 {
				continue
			}
			bad := slices.Clone(tc.tensors)
			bad[i].Shape = []uint64{tensor.Shape[0], tensor.Shape[1] + 1}
			if _, err := Detect([]byte(tc.cfg), bad, nil); err == nil {
				t.Errorf("%s: accepted %s with shape %v", tc.name, tensor.Name, bad[i].Shape)
			}
		}
	}
}
