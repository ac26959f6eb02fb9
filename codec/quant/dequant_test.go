package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
)

// Randomised modules of every format, dequantized by the kernels and by an
// independent reference that evaluates the formulas element by element:
// enc(float32(float64(q − zp) × float64(s))). The float64 product is exact
// (at most 9 × 24 significant bits), so its conversion to float32 is the
// single rounding torch's float32 multiply performs (§1.5).

// synth is a generated module: what Detect needs, the tensor data, and the
// logical matrices the reference works from.
type synth struct {
	name    string
	cfg     string
	extra   map[string][]byte
	tensors []safetensors.TensorInfo
	data    map[string][]byte
	out, in int
	q, s, z []float64 // per element [out*in]; z nil when there is no zero point
	// wantErr, when set, is the error class Dequantize must return.
	wantErr error
}

func (sy *synth) add(t safetensors.TensorInfo, b []byte) {
	sy.tensors = append(sy.tensors, t)
	if sy.data == nil {
		sy.data = map[string][]byte{}
	}
	sy.data[t.Name] = b
}

// reference computes the expected output bytes.
func (sy *synth) reference(dtype safetensors.DType) []byte {
	es := dtype.BitSize() / 8
	out := make([]byte, len(sy.q)*es)
	for i, q := range sy.q {
		v := q
		if sy.z != nil {
			v -= sy.z[i]
		}
		f := float32(v * sy.s[i])
		switch dtype {
		case safetensors.BF16:
			binary.LittleEndian.PutUint16(out[2*i:], numeric.F32ToBF16(f))
		case safetensors.F16:
			binary.LittleEndian.PutUint16(out[2*i:], numeric.F32ToF16(f))
		default:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(f))
		}
	}
	return out
}

// scaleGrid makes a rows×cols grid of random scales of dtype: signs, a wide
// exponent range (so BF16 subnormal and F16 overflowing outputs occur) and
// full mantissas.
func scaleGrid(rng *rand.Rand, dtype safetensors.DType, n int) ([]byte, []float64) {
	es := dtype.BitSize() / 8
	b := make([]byte, n*es)
	v := make([]float64, n)
	for i := range n {
		x := float32(math.Ldexp(1+rng.Float64(), rng.IntN(40)-30))
		if rng.IntN(8) == 0 {
			x = -x
		}
		switch dtype {
		case safetensors.BF16:
			u := numeric.F32ToBF16(x)
			binary.LittleEndian.PutUint16(b[2*i:], u)
			v[i] = float64(numeric.BF16ToF32(u))
		case safetensors.F16:
			u := numeric.F32ToF16(x)
			binary.LittleEndian.PutUint16(b[2*i:], u)
			v[i] = float64(numeric.F16ToF32(u))
		case safetensors.F32:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
			v[i] = float64(x)
		case safetensors.F8E8M0:
			e := uint8(100 + rng.IntN(40))
			b[i] = e
			v[i] = math.Ldexp(1, int(e)-127)
		}
	}
	return b, v
}

// gridIndex maps element (r, c) to its scale-grid index.
type gridIndex func(r, c int) int

func strategyGrid(strategy string, out, in, group int, block [2]int) (rows, cols int, idx gridIndex) {
	switch strategy {
	case StrategyTensor:
		return 1, 1, func(r, c int) int { return 0 }
	case StrategyChannel:
		return out, 1, func(r, c int) int { return r }
	case StrategyGroup:
		g := cdiv(in, group)
		return out, g, func(r, c int) int { return r*g + c/group }
	default:
		nc := cdiv(in, block[1])
		return cdiv(out, block[0]), nc, func(r, c int) int { return (r/block[0])*nc + c/block[1] }
	}
}

func ctConfig(format, typ string, bits int, strategy string, group int, block [2]int, symmetric, actorder bool, input bool) string {
	w := fmt.Sprintf(`"num_bits": %d, "type": %q, "symmetric": %v, "strategy": %q`, bits, typ, symmetric, strategy)
	switch strategy {
	case StrategyGroup:
		w += fmt.Sprintf(`, "group_size": %d`, group)
	case StrategyBlock:
		w += fmt.Sprintf(`, "block_structure": [%d, %d]`, block[0], block[1])
	}
	if actorder {
		w += `, "actorder": "group"`
	}
	in := "null"
	if input {
		in = fmt.Sprintf(`{"num_bits": 8, "type": %q, "strategy": "token", "dynamic": true}`, typ)
	}
	return fmt.Sprintf(`{"quantization_config": {"quant_method": "compressed-tensors", "format": %q, "quantization_status": "compressed",
		"ignore": ["lm_head"], "config_groups": {"group_0": {"targets": ["Linear"], "weights": {%s}, "input_activations": %s}}}}`, format, w, in)
}

// gIdx returns a random assignment of input columns to groups that keeps
// every group of the right size, as GPTQ's activation order does.
func gIdx(rng *rand.Rand, in, group int) []int32 {
	g := make([]int32, in)
	for c := range g {
		g[c] = int32(c / group)
	}
	rng.Shuffle(in, func(i, j int) { g[i], g[j] = g[j], g[i] })
	return g
}

// ctBytes builds a float-, int- or naive-quantized module (codes stored one
// per byte).
func ctBytes(rng *rand.Rand, format, typ string, bits int, strategy string, out, in, group int, block [2]int, sd safetensors.DType, asym, actorder bool) *synth {
	p := "model.layers.0.mlp.down_proj"
	sy := &synth{out: out, in: in, cfg: ctConfig(format, typ, bits, strategy, group, block, !asym, actorder, format != "naive-quantized")}
	sy.name = fmt.Sprintf("%s %s%d %s g%d b%v %s asym=%v actorder=%v [%d,%d]", format, typ, bits, strategy, group, block, sd, asym, actorder, out, in)
	codes := make([]byte, out*in)
	sy.q = make([]float64, out*in)
	lo, hi := -(1 << (bits - 1)), 1<<(bits-1)-1
	for i := range codes {
		if typ == TypeFloat {
			codes[i] = byte(rng.IntN(256))
			sy.q[i] = float64(numeric.E4M3FNToF32(codes[i]))
		} else {
			v := lo + rng.IntN(hi-lo+1)
			codes[i] = byte(int8(v))
			sy.q[i] = float64(v)
		}
	}
	dt := safetensors.I8
	if typ == TypeFloat {
		dt = safetensors.F8E4M3
	}
	sy.add(ti(p+".weight", dt, uint64(out), uint64(in)), codes)
	rows, cols, idx := strategyGrid(strategy, out, in, group, block)
	var gi []int32
	if actorder {
		gi = gIdx(rng, in, group)
		idx = func(r, c int) int { return r*cols + int(gi[c]) }
		sy.add(ti(p+".weight_g_idx", safetensors.I32, uint64(in)), i32bytes(gi...))
	}
	sb, sv := scaleGrid(rng, sd, rows*cols)
	shape := []uint64{uint64(rows), uint64(cols)}
	if strategy == StrategyTensor {
		shape = []uint64{1}
	}
	sy.add(ti(p+".weight_scale", sd, shape...), sb)
	var zv []float64
	if asym {
		zb := make([]byte, rows*cols)
		zv = make([]float64, rows*cols)
		for i := range zb {
			z := lo + rng.IntN(hi-lo+1)
			zb[i], zv[i] = byte(int8(z)), float64(z)
		}
		sy.add(ti(p+".weight_zero_point", safetensors.I8, shape...), zb)
		sy.z = make([]float64, out*in)
	}
	sy.s = make([]float64, out*in)
	for r := range out {
		for c := range in {
			k := idx(r, c)
			sy.s[r*in+c] = sv[k]
			if asym {
				sy.z[r*in+c] = zv[k]
			}
		}
	}
	return sy
}

// ctPacked builds a pack-quantized module.
func ctPacked(rng *rand.Rand, bits int, strategy string, out, in, group int, sd safetensors.DType, asym, actorder bool, layout Layout) *synth {
	p := "model.layers.3.self_attn.o_proj"
	sy := &synth{out: out, in: in, cfg: ctConfig("pack-quantized", TypeInt, bits, strategy, group, [2]int{}, !asym, actorder, false)}
	sy.name = fmt.Sprintf("pack-quantized int%d %s g%d %s asym=%v actorder=%v %s [%d,%d]", bits, strategy, group, sd, asym, actorder, layout, out, in)
	lo, hi := -(1 << (bits - 1)), 1<<(bits-1)-1
	q := make([]int8, out*in)
	sy.q = make([]float64, out*in)
	for i := range q {
		v := lo + rng.IntN(hi-lo+1)
		q[i], sy.q[i] = int8(v), float64(v)
	}
	words, err := PackInt32(q, in, bits, layout)
	if err != nil {
		panic(err)
	}
	sy.add(ti(p+".weight_packed", safetensors.I32, uint64(out), uint64(packedWords(in, bits, layout))), i32bytes(words...))
	sy.add(ti(p+".weight_shape", safetensors.I64, 2), i64bytes(int64(out), int64(in)))
	rows, cols, idx := strategyGrid(strategy, out, in, group, [2]int{})
	if actorder {
		gi := gIdx(rng, in, group)
		idx = func(r, c int) int { return r*cols + int(gi[c]) }
		sy.add(ti(p+".weight_g_idx", safetensors.I32, uint64(in)), i32bytes(gi...))
	}
	sb, sv := scaleGrid(rng, sd, rows*cols)
	shape := []uint64{uint64(rows), uint64(cols)}
	if strategy == StrategyTensor {
		shape = []uint64{1}
	}
	sy.add(ti(p+".weight_scale", sd, shape...), sb)
	var zv []float64
	if asym {
		z := make([]int8, rows*cols)
		zv = make([]float64, rows*cols)
		for i := range z {
			v := lo + rng.IntN(hi-lo+1)
			z[i], zv[i] = int8(v), float64(v)
		}
		if strategy == StrategyTensor {
			sy.add(ti(p+".weight_zero_point", safetensors.I8, 1), []byte{byte(z[0])})
		} else {
			pz, err := PackInt32Dim0(z, rows, cols, bits, layout)
			if err != nil {
				panic(err)
			}
			sy.add(ti(p+".weight_zero_point", safetensors.I32, uint64(packedWords(out, bits, layout)), uint64(cols)), i32bytes(pz...))
		}
		sy.z = make([]float64, out*in)
	}
	sy.s = make([]float64, out*in)
	for r := range out {
		for c := range in {
			k := idx(r, c)
			sy.s[r*in+c] = sv[k]
			if asym {
				sy.z[r*in+c] = zv[k]
			}
		}
	}
	return sy
}

// nativeFP8 builds a quant_method "fp8" module, block or per-tensor.
func nativeFP8(rng *rand.Rand, out, in int, block [2]int, sd safetensors.DType, codeType safetensors.DType) *synth {
	p := "model.layers.1.mlp.gate_proj"
	sy := &synth{out: out, in: in}
	strategy := StrategyBlock
	fmtName := "e4m3"
	if codeType == safetensors.F8E5M2 {
		fmtName = "e5m2"
	}
	if block == [2]int{} {
		strategy = StrategyTensor
		sy.cfg = fmt.Sprintf(`{"quantization_config": {"quant_method": "fp8", "activation_scheme": "static", "fmt": %q}}`, fmtName)
	} else {
		sy.cfg = fmt.Sprintf(`{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": %q, "weight_block_size": [%d, %d], "scale_fmt": "ue8m0"}}`, fmtName, block[0], block[1])
	}
	sy.name = fmt.Sprintf("fp8 %s %v %s [%d,%d]", codeType, block, sd, out, in)
	codes := make([]byte, out*in)
	sy.q = make([]float64, out*in)
	for i := range codes {
		codes[i] = byte(rng.IntN(256))
		if codeType == safetensors.F8E5M2 {
			sy.q[i] = float64(numeric.E5M2ToF32(codes[i]))
		} else {
			sy.q[i] = float64(numeric.E4M3FNToF32(codes[i]))
		}
	}
	sy.add(ti(p+".weight", codeType, uint64(out), uint64(in)), codes)
	rows, cols, idx := strategyGrid(strategy, out, in, 0, block)
	sb, sv := scaleGrid(rng, sd, rows*cols)
	if strategy == StrategyTensor {
		sy.add(ti(p+".weight_scale", sd), sb)
		sy.add(ti(p+".input_scale", safetensors.F32), f32bytes(1))
	} else {
		sy.add(ti(p+".weight_scale_inv", sd, uint64(rows), uint64(cols)), sb)
	}
	sy.s = make([]float64, out*in)
	for r := range out {
		for c := range in {
			sy.s[r*in+c] = sv[idx(r, c)]
		}
	}
	return sy
}

// awqSynth builds an AutoAWQ GEMM module (K-major tensors).
func awqSynth(rng *rand.Rand, out, in, group int, sd safetensors.DType, zeros bool) *synth {
	p := "model.layers.0.self_attn.q_proj"
	sy := &synth{out: out, in: in, name: fmt.Sprintf("awq g%d %s zeros=%v [%d,%d]", group, sd, zeros, out, in)}
	zp := "true"
	if !zeros {
		zp = "false"
	}
	sy.cfg = fmt.Sprintf(`{"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": %d, "zero_point": %s, "version": "gemm"}}`, group, zp)
	g := group
	if g == -1 {
		g = in
	}
	groups := in / g
	u := make([]uint8, in*out) // [in, out]
	for i := range u {
		u[i] = uint8(rng.IntN(16))
	}
	qw, _ := PackAWQ(u, out)
	sy.add(ti(p+".qweight", safetensors.I32, uint64(in), uint64(out/8)), i32bytes(qw...))
	sb, sv := scaleGrid(rng, sd, groups*out)
	sy.add(ti(p+".scales", sd, uint64(groups), uint64(out)), sb)
	z := make([]uint8, groups*out)
	for i := range z {
		z[i] = 8
		if zeros {
			z[i] = uint8(rng.IntN(16))
		}
	}
	if zeros {
		qz, _ := PackAWQ(z, out)
		sy.add(ti(p+".qzeros", safetensors.I32, uint64(groups), uint64(out/8)), i32bytes(qz...))
	}
	sy.add(ti(p+".bias", safetensors.F16, uint64(out)), make([]byte, 2*out))
	sy.q, sy.s, sy.z = make([]float64, out*in), make([]float64, out*in), make([]float64, out*in)
	for n := range out {
		for k := range in {
			sy.q[n*in+k] = float64(u[k*out+n])
			sy.s[n*in+k] = sv[(k/g)*out+n]
			sy.z[n*in+k] = float64(z[(k/g)*out+n])
		}
	}
	return sy
}

// quantoSynth builds an optimum-quanto 8-bit module.
func quantoSynth(rng *rand.Rand, out, in int, qtype string, sd safetensors.DType) *synth {
	p := "model.layers.0.mlp.up_proj"
	sy := &synth{out: out, in: in, name: fmt.Sprintf("quanto %s %s [%d,%d]", qtype, sd, out, in)}
	sy.extra = map[string][]byte{QuantoQMapFile: fmt.Appendf(nil, `{%q: {"weights": %q, "activations": "none"}}`, p, qtype)}
	codes := make([]byte, out*in)
	sy.q = make([]float64, out*in)
	dt := quantoCodeDTypes[qtype].dtype
	for i := range codes {
		codes[i] = byte(rng.IntN(256))
		switch dt {
		case safetensors.I8:
			sy.q[i] = float64(int8(codes[i]))
		case safetensors.F8E4M3:
			sy.q[i] = float64(numeric.E4M3FNToF32(codes[i]))
		default:
			sy.q[i] = float64(numeric.E5M2ToF32(codes[i]))
		}
	}
	sy.add(ti(p+".weight._data", dt, uint64(out), uint64(in)), codes)
	sb, sv := scaleGrid(rng, sd, out)
	sy.add(ti(p+".weight._scale", sd, uint64(out), 1), sb)
	sy.add(ti(p+".input_scale", sd), bf16bytes(1))
	sy.add(ti(p+".output_scale", sd), bf16bytes(1))
	sy.s = make([]float64, out*in)
	for r := range out {
		for c := range in {
			sy.s[r*in+c] = sv[r]
		}
	}
	return sy
}

// synths is the randomised corpus.
func synths(seed uint64) []*synth {
	rng := rand.New(rand.NewPCG(seed, 7))
	var all []*synth
	sds := []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32}
	for _, sd := range sds {
		all = append(all,
			ctBytes(rng, "float-quantized", TypeFloat, 8, StrategyBlock, 67, 45, 0, [2]int{16, 32}, sd, false, false),
			ctBytes(rng, "float-quantized", TypeFloat, 8, StrategyBlock, 300, 260, 0, [2]int{128, 128}, sd, false, false),
			ctBytes(rng, "float-quantized", TypeFloat, 8, StrategyChannel, 33, 17, 0, [2]int{}, sd, false, false),
			ctBytes(rng, "float-quantized", TypeFloat, 8, StrategyTensor, 9, 31, 0, [2]int{}, sd, false, false),
			ctBytes(rng, "naive-quantized", TypeFloat, 8, StrategyGroup, 12, 64, 16, [2]int{}, sd, false, true),
			ctBytes(rng, "int-quantized", TypeInt, 8, StrategyChannel, 40, 70, 0, [2]int{}, sd, false, false),
			ctBytes(rng, "int-quantized", TypeInt, 8, StrategyChannel, 40, 70, 0, [2]int{}, sd, true, false),
			ctBytes(rng, "naive-quantized", TypeInt, 8, StrategyGroup, 20, 256, 32, [2]int{}, sd, true, false), // per-element path
			ctBytes(rng, "naive-quantized", TypeInt, 4, StrategyGroup, 20, 256, 32, [2]int{}, sd, true, true),
			ctPacked(rng, 4, StrategyGroup, 520, 256, 128, sd, false, false, Dense), // large enough to run in parallel
			ctPacked(rng, 4, StrategyGroup, 24, 100, 32, sd, true, false, Dense),    // in not a multiple of the group: refused
			ctPacked(rng, 4, StrategyGroup, 24, 96, 32, sd, true, true, Dense),
			ctPacked(rng, 4, StrategyGroup, 13, 20, 128, sd, true, false, Dense), // in < group: one group
			ctPacked(rng, 4, StrategyChannel, 30, 33, 0, sd, true, false, Dense),
			ctPacked(rng, 8, StrategyGroup, 16, 256, 64, sd, true, false, Dense),
			ctPacked(rng, 8, StrategyChannel, 17, 100, 0, sd, false, false, Dense),
			ctPacked(rng, 4, StrategyTensor, 8, 40, 0, sd, true, false, Dense),
			ctPacked(rng, 2, StrategyGroup, 40, 64, 16, sd, true, false, Dense),
			ctPacked(rng, 3, StrategyGroup, 40, 64, 32, sd, true, false, Dense),
			ctPacked(rng, 3, StrategyGroup, 40, 64, 32, sd, true, false, ElementAligned),
			ctPacked(rng, 5, StrategyChannel, 7, 100, 0, sd, false, false, ElementAligned),
			ctPacked(rng, 3, StrategyChannel, 7, 33, 0, sd, false, false, Dense), // same width in both layouts: refused
			nativeFP8(rng, 3, 3, [2]int{2, 2}, sd, safetensors.F8E4M3),
			nativeFP8(rng, 200, 300, [2]int{128, 128}, sd, safetensors.F8E4M3),
			nativeFP8(rng, 20, 30, [2]int{}, sd, safetensors.F8E4M3),
			nativeFP8(rng, 20, 30, [2]int{8, 8}, sd, safetensors.F8E5M2),
			awqSynth(rng, 64, 256, 128, sd, true),
			awqSynth(rng, 16, 96, 32, sd, false),
			awqSynth(rng, 8, 40, -1, sd, true),
			awqSynth(rng, 512, 256, 64, sd, true),
			quantoSynth(rng, 24, 50, "qint8", sd),
			quantoSynth(rng, 24, 50, "qfloat8_e5m2", sd),
		)
	}
	all = append(all, nativeFP8(rng, 130, 257, [2]int{128, 128}, safetensors.F8E8M0, safetensors.F8E4M3))
	for _, sy := range all {
		if strings.Contains(sy.name, "[24,100]") {
			sy.wantErr = ErrInvalid
		}
		if strings.Contains(sy.name, "int3 channel") && strings.Contains(sy.name, "[7,33]") {
			sy.wantErr = ErrUnsupported
		}
	}
	return all
}

// dequantSynth runs Detect and Dequantize on a synth.
func dequantSynth(t *testing.T, sy *synth, dtype safetensors.DType) ([]byte, error) {
	t.Helper()
	m, err := Detect([]byte(sy.cfg), sy.tensors, sy.extra)
	if err != nil {
		if sy.wantErr != nil {
			return nil, err
		}
		t.Fatalf("%s: Detect: %v", sy.name, err)
	}
	if len(m.Modules) != 1 {
		t.Fatalf("%s: %d modules (%s)", sy.name, len(m.Modules), m.Describe())
	}
	mod := m.Modules[0]
	data := map[Role][]byte{}
	for role, info := range mod.Tensors {
		data[role] = sy.data[info.Name]
	}
	return Dequantize(mod, data, dtype)
}

// sameBits compares output elements, any NaN equal to any NaN (NaN sign and
// payload depend on the code path, §1.2).
func sameBits(got, want []byte, dtype safetensors.DType) (int, bool) {
	if len(got) != len(want) {
		return -1, false
	}
	es := dtype.BitSize() / 8
	for i := 0; i < len(got); i += es {
		var g, w float64
		switch dtype {
		case safetensors.BF16:
			g = float64(numeric.BF16ToF32(binary.LittleEndian.Uint16(got[i:])))
			w = float64(numeric.BF16ToF32(binary.LittleEndian.Uint16(want[i:])))
		case safetensors.F16:
			g = float64(numeric.F16ToF32(binary.LittleEndian.Uint16(got[i:])))
			w = float64(numeric.F16ToF32(binary.LittleEndian.Uint16(want[i:])))
		default:
			g = float64(math.Float32frombits(binary.LittleEndian.Uint32(got[i:])))
			w = float64(math.Float32frombits(binary.LittleEndian.Uint32(want[i:])))
		}
		if math.IsNaN(g) && math.IsNaN(w) {
			continue
		}
		if string(got[i:i+es]) != string(want[i:i+es]) {
			return i / es, false
		}
	}
	return 0, true
}

func TestDequantMatchesReference(t *testing.T) {
	for _, sy := range synths(1) {
		for _, dtype := range []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32} {
			got, err := dequantSynth(t, sy, dtype)
			if sy.wantErr != nil {
				if !errors.Is(err, sy.wantErr) {
					t.Errorf("%s: error %v, want %v", sy.name, err, sy.wantErr)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s → %s: %v", sy.name, dtype, err)
				continue
			}
			if i, ok := sameBits(got, sy.reference(dtype), dtype); !ok {
				t.Errorf("%s → %s: element %d differs from the reference", sy.name, dtype, i)
			}
		}
	}
}

// The parallel split must not change a single bit.
func TestDequantDeterministicAcrossWorkers(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, sy := range synths(2) {
		if sy.wantErr != nil || len(sy.q) < parallelMin {
			continue
		}
		var outs [][]byte
		for _, procs := range []int{1, 3, 8} {
			runtime.GOMAXPROCS(procs)
			got, err := dequantSynth(t, sy, safetensors.BF16)
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, got)
		}
		for i := 1; i < len(outs); i++ {
			if string(outs[i]) != string(outs[0]) {
				t.Errorf("%s: output depends on GOMAXPROCS", sy.name)
			}
		}
	}
}

// §1.5: with F32 scales the product is rounded to float32 first; rounding
// the exact product to BF16 directly would differ in rare cases. Find such
// a case and check that the kernels follow torch.
func TestF32ScaleDoubleRounding(t *testing.T) {
	// q = 3 and s = 1 + 2^-8 + k·2^-23: search for an s where
	// bf16(f32(3s)) != bf16(3s exactly).
	var s float32
	for k := uint32(0); k < 1<<22; k++ {
		c := math.Float32frombits(0x3F800000 + 0x8000 + k)
		exact := 3 * float64(c)
		viaF32 := numeric.F32ToBF16(float32(exact))
		// Direct RNE of the exact value to bf16 via float64 rounding.
		direct := uint16(math.Float32bits(float32(math.Float64frombits(rne64to8(math.Float64bits(exact))))) >> 16)
		if viaF32 != direct {
			s = c
			break
		}
	}
	if s == 0 {
		t.Fatal("no double-rounding case found")
	}
	m, err := Detect([]byte(`{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [1, 1]}}`),
		[]safetensors.TensorInfo{ti("w.weight", safetensors.F8E4M3, 1, 1), ti("w.weight_scale_inv", safetensors.F32, 1, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DequantModule(m.Modules[0], map[Role][]byte{RoleCodes: {0x44}, RoleScale: f32bytes(s)}) // 0x44 = 3.0
	if err != nil {
		t.Fatal(err)
	}
	if want := numeric.F32ToBF16(3 * s); u16s(got)[0] != want {
		t.Errorf("3 × %v: %#04x, want %#04x (float32 product, then BF16)", s, u16s(got)[0], want)
	}
}

// rne64to8 rounds a float64 bit pattern to 8 significant bits (BF16's
// precision), ties to even.
func rne64to8(u uint64) uint64 {
	const drop = 52 - 7
	odd := (u >> drop) & 1
	return (u + (1<<(drop-1) - 1) + odd) &^ (1<<drop - 1)
}

// §14.13: for every FP8 code c and a power-of-two scale s,
// encode(decode(c)·s / s) == c; here decode(c)·s is what DequantModule
// (F32 output) returns.
func TestFP8PowerOfTwoRoundTrip(t *testing.T) {
	codes := make([]byte, 256)
	for i := range codes {
		codes[i] = byte(i)
	}
	for _, s := range []float32{1, 0x1p-8, 0x1p7, 0x1p-20} {
		m, err := Detect([]byte(`{"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}}`),
			[]safetensors.TensorInfo{ti("w.weight", safetensors.F8E4M3, 1, 256), ti("w.weight_scale_inv", safetensors.F32, 1, 2)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Dequantize(m.Modules[0], map[Role][]byte{RoleCodes: codes, RoleScale: f32bytes(s, s)}, safetensors.F32)
		if err != nil {
			t.Fatal(err)
		}
		for c := range 256 {
			if c&0x7F == 0x7F {
				continue
			}
			v := math.Float32frombits(binary.LittleEndian.Uint32(got[4*c:]))
			if back := numeric.F32ToE4M3FN(v / s); back != byte(c) {
				t.Errorf("s=%v code %#02x → %v → %#02x", s, c, v, back)
			}
		}
	}
}

// Validation errors name the tensor and the problem.
func TestDequantErrors(t *testing.T) {
	mod, data := w4a16Module(t, false)
	for _, tc := range []struct {
		name   string
		mutate func(m *Module, d map[Role][]byte)
		want   string
	}{
		{"short codes", func(m *Module, d map[Role][]byte) { d[RoleCodes] = d[RoleCodes][:4] }, "m.weight_packed: 4 bytes of data"},
		{"missing zero point data", func(m *Module, d map[Role][]byte) { delete(d, RoleZeroPoint) }, "m.weight_zero_point: no data given"},
		{"weight_shape out", func(m *Module, d map[Role][]byte) { d[RoleShape] = i64bytes(3, 8) }, "m.weight_shape: says out = 3"},
		{"weight_shape in", func(m *Module, d map[Role][]byte) { d[RoleShape] = i64bytes(2, 17) }, "m.weight_packed: shape: 1 words per row, want 3"},
		{"group does not divide", func(m *Module, d map[Role][]byte) { m.Scheme.GroupSize = 3 }, "group size 3 does not divide in = 8"},
		{"output dtype", nil, "output dtype I8"},
	} {
		m := mod
		m.Tensors = map[Role]safetensors.TensorInfo{}
		for k, v := range mod.Tensors {
			m.Tensors[k] = v
		}
		d := map[Role][]byte{}
		for k, v := range data {
			d[k] = v
		}
		dtype := safetensors.BF16
		if tc.mutate != nil {
			tc.mutate(&m, d)
		} else {
			dtype = safetensors.I8
		}
		_, err := Dequantize(m, d, dtype)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}

	// Zero points outside the code range and g_idx out of range.
	sy := ctBytes(rand.New(rand.NewPCG(3, 3)), "int-quantized", TypeInt, 8, StrategyChannel, 4, 8, 0, [2]int{}, safetensors.BF16, true, false)
	sy.data["model.layers.0.mlp.down_proj.weight_zero_point"] = nil
	for _, ti := range sy.tensors {
		if strings.HasSuffix(ti.Name, "zero_point") {
			sy.data[ti.Name] = make([]byte, 4)
		}
	}
	if _, err := dequantSynth(t, sy, safetensors.BF16); err != nil {
		t.Errorf("valid zero points refused: %v", err)
	}
	sy2 := ctPacked(rand.New(rand.NewPCG(4, 4)), 4, StrategyGroup, 8, 64, 16, safetensors.BF16, false, true, Dense)
	sy2.data["model.layers.3.self_attn.o_proj.weight_g_idx"] = i32bytes(make([]int32, 63)...)
	sy2.data["model.layers.3.self_attn.o_proj.weight_g_idx"] = append(sy2.data["model.layers.3.self_attn.o_proj.weight_g_idx"], i32bytes(4)...)
	if _, err := dequantSynth(t, sy2, safetensors.BF16); err == nil || !strings.Contains(err.Error(), "weight_g_idx: group 4 for input column 63") {
		t.Errorf("g_idx out of range: %v", err)
	}
	sy3 := ctBytes(rand.New(rand.NewPCG(5, 5)), "naive-quantized", TypeInt, 4, StrategyTensor, 4, 8, 0, [2]int{}, safetensors.F16, true, false)
	sy3.data["model.layers.0.mlp.down_proj.weight_zero_point"] = []byte{9}
	if _, err := dequantSynth(t, sy3, safetensors.BF16); err == nil || !strings.Contains(err.Error(), "zero point 9 at index 0 is not an integer in the INT4 range") {
		t.Errorf("zero point out of range: %v", err)
	}
}

// A hand-made Module that Detect would never produce gets an error, not a
// panic.
func TestDequantHandMadeModules(t *testing.T) {
	mod, data := w4a16Module(t, false)
	for name, mutate := range map[string]func(m *Module){
		"bits 0":          func(m *Module) { m.Scheme.Bits = 0 },
		"bits 9":          func(m *Module) { m.Scheme.Bits = 9 },
		"codes dtype":     func(m *Module) { m.Tensors[RoleCodes] = ti("m.weight_packed", safetensors.I16, 2, 2) },
		"shape dtype":     func(m *Module) { m.Tensors[RoleShape] = ti("m.weight_shape", safetensors.I8, 2) },
		"g_idx dtype":     func(m *Module) { m.Tensors[RoleGIdx] = ti("m.weight_g_idx", safetensors.F4, 8) },
		"scale dtype":     func(m *Module) { m.Tensors[RoleScale] = ti("m.weight_scale", safetensors.U8, 2, 1) },
		"zero point rank": func(m *Module) { m.Tensors[RoleZeroPoint] = ti("m.weight_zero_point", safetensors.I32) },
		"no scale":        func(m *Module) { delete(m.Tensors, RoleScale) },
		"awq bits":        func(m *Module) { m.Scheme.Format, m.Scheme.Bits = FormatAWQ, 8 },
		"block zero size": func(m *Module) { m.Scheme.Strategy = StrategyBlock },
		"float format":    func(m *Module) { m.Scheme.Format = FormatCTFloat },
	} {
		m := mod
		m.Tensors = map[Role]safetensors.TensorInfo{}
		for k, v := range mod.Tensors {
			m.Tensors[k] = v
		}
		mutate(&m)
		d := map[Role][]byte{}
		for role, info := range m.Tensors {
			n, _ := info.DType.ByteLen(info.Shape)
			d[role] = make([]byte, n)
			if orig, ok := data[role]; ok && len(orig) == int(n) {
				d[role] = orig
			}
		}
		if _, err := DequantModule(m, d); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: unclassified error %v", name, err)
		}
	}
}
