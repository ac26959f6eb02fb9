package pjrtgpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"gonum.org/v1/gonum/mat"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops/internal/linalg"
)

// Parity cases: the device kernels against the CPU kernels on random data
// and edge cases. The package tests run them on any PJRT plugin they are
// given (HEFT_TEST_PJRT_PLUGIN, e.g. the XLA CPU plugin), and gpubench runs
// them on the GPU before timing anything.

// DequantCase is one FP8 block dequantization to compare.
type DequantCase struct {
	Name    string
	Module  quant.Module
	Tensors map[quant.Role][]byte
	DType   safetensors.DType
}

// fp8Module describes an FP8 E4M3 block module [out, in] with scales of sd.
func fp8Module(native bool, out, in, bh, bw int, sd safetensors.DType) quant.Module {
	f := quant.FormatCTFloat
	if native {
		f = quant.FormatFP8
	}
	r, c := cdiv(out, bh), cdiv(in, bw)
	return quant.Module{
		Prefix: "model.layers.0.mlp.up_proj",
		Scheme: quant.Scheme{Format: f, Type: quant.TypeFloat, Bits: 8, CodeDType: safetensors.F8E4M3,
			Strategy: quant.StrategyBlock, BlockSize: [2]int{bh, bw}, Symmetric: true},
		Tensors: map[quant.Role]safetensors.TensorInfo{
			quant.RoleCodes: {Name: "model.layers.0.mlp.up_proj.weight", DType: safetensors.F8E4M3, Shape: []uint64{uint64(out), uint64(in)}, End: uint64(out * in)},
			quant.RoleScale: {Name: "model.layers.0.mlp.up_proj.weight_scale", DType: sd, Shape: []uint64{uint64(r), uint64(c)}, End: uint64(r * c * sd.BitSize() / 8)},
		},
		Out: out, In: in,
	}
}

// scaleBytes encodes float32 scale values in sd (rounded, RNE).
func scaleBytes(vals []float32, sd safetensors.DType) []byte {
	b := make([]byte, len(vals)*sd.BitSize()/8)
	for i, v := range vals {
		switch sd {
		case safetensors.BF16:
			binary.LittleEndian.PutUint16(b[2*i:], numeric.F32ToBF16(v))
		case safetensors.F16:
			binary.LittleEndian.PutUint16(b[2*i:], numeric.F32ToF16(v))
		default:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
	}
	return b
}

// edgeCodes returns 256×256 FP8 codes holding every code in every 64×64
// block (and in every row and column of it).
func edgeCodes() []byte {
	c := make([]byte, 256*256)
	for i := range c {
		c[i] = byte(i + i/256)
	}
	return c
}

// edgeScales are 4×4 block scales that reach every corner of the product:
// zero, negative, subnormal and huge scales, NaN, products that overflow to
// ±Inf and products in the subnormal range (and below it).
var edgeScales = []float32{1, 0.5, 1.0 / 448, 3.1e-3, 0, -2.5e-3, 1e-40, 3e38, float32(math.NaN()), 0x1p-126, 7.7e-41, 1.5e-5, 65504, 1e-8, 2, 0.0078125}

// EdgeDequantCase is the "every code, edge scales" case for scales of sd
// and output dtype: the probe that decides whether a dequantization kernel
// is exact on a device.
func EdgeDequantCase(sd, dtype safetensors.DType) DequantCase {
	mod := fp8Module(sd == safetensors.BF16, 256, 256, 64, 64, sd)
	return DequantCase{
		Name:    fmt.Sprintf("every code, edge scales 256x256 block 64x64 %s scales → %s", sd, dtype),
		Module:  mod,
		Tensors: map[quant.Role][]byte{quant.RoleCodes: edgeCodes(), quant.RoleScale: scaleBytes(edgeScales, sd)},
		DType:   dtype,
	}
}

// DequantCases returns the dequantization cases: every code (NaNs, ±448,
// subnormals, ±0) against ordinary, denormal, zero, negative, huge (overflow
// to ±Inf) and NaN scales; partial edge blocks (200×300 by 128); odd blocks;
// BF16, F16 and F32 scales; BF16 and F32 output; and a 1024×2048 random
// tensor.
func DequantCases(seed uint64) []DequantCase {
	rng := rand.New(rand.NewPCG(seed, 1))
	var cases []DequantCase
	add := func(name string, native bool, out, in, bh, bw int, sd safetensors.DType, codes []byte, scales []float32) {
		for _, dt := range []safetensors.DType{safetensors.BF16, safetensors.F32} {
			mod := fp8Module(native, out, in, bh, bw, sd)
			cases = append(cases, DequantCase{
				Name:    fmt.Sprintf("%s %dx%d block %dx%d %s scales → %s", name, out, in, bh, bw, sd, dt),
				Module:  mod,
				Tensors: map[quant.Role][]byte{quant.RoleCodes: codes, quant.RoleScale: scaleBytes(scales, sd)},
				DType:   dt,
			})
		}
	}
	randCodes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	randScales := func(n int, lo, hi float64) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(math.Exp(lo + (hi-lo)*rng.Float64()))
		}
		return s
	}
	// Every code in every block, against edge-case scales.
	for _, sd := range []safetensors.DType{safetensors.F32, safetensors.BF16, safetensors.F16} {
		add("every code, edge scales", sd == safetensors.BF16, 256, 256, 64, 64, sd, edgeCodes(), edgeScales)
	}
	add("partial edge blocks", false, 200, 300, 128, 128, safetensors.BF16, randCodes(200*300), randScales(2*3, -12, -4))
	add("partial edge blocks", true, 200, 300, 128, 128, safetensors.F32, randCodes(200*300), randScales(2*3, -12, -4))
	add("partial edge blocks", false, 200, 300, 128, 128, safetensors.F16, randCodes(200*300), randScales(2*3, -12, -4))
	add("odd blocks, denormal products", false, 130, 70, 64, 32, safetensors.F32, randCodes(130*70), randScales(3*3, -100, -85))
	add("one block", true, 100, 60, 128, 128, safetensors.BF16, randCodes(100*60), randScales(1, -8, -6))
	add("random", true, 1024, 2048, 128, 128, safetensors.F32, randCodes(1024*2048), randScales(8*16, -12, -4))
	return cases
}

// CheckDequant runs a case on the device (with the kernel the device
// chose) and on the CPU and returns the number of differing elements (NaN
// equals NaN for F32 output, whose NaN payloads are unspecified) and a
// description of the first.
func CheckDequant(d *Device, c DequantCase) (int, string, error) {
	return CheckDequantKernel(d, c, "")
}

// CheckDequantKernel is CheckDequant with a given kernel (one of
// DequantKernels; "" for the device's choice).
func CheckDequantKernel(d *Device, c DequantCase, kernel string) (int, string, error) {
	es := c.DType.BitSize() / 8
	n := c.Module.Out * c.Module.In
	want := make([]byte, n*es)
	if err := quant.DequantizeInto(want, c.Module, c.Tensors, c.DType); err != nil {
		return 0, "", fmt.Errorf("cpu: %w", err)
	}
	got := make([]byte, n*es)
	var err error
	if kernel == "" {
		err = d.Dequantize(got, c.Module, c.Tensors, c.DType)
	} else {
		err = d.DequantizeKernel(got, c.Module, c.Tensors, c.DType, kernel)
	}
	if err != nil {
		return 0, "", fmt.Errorf("device: %w", err)
	}
	bad, first := compareDequant(c, got, want)
	return bad, first, nil
}

// CompareDequant compares got, a device's dequantization of c, with the
// CPU's, as CheckDequant does.
func CompareDequant(c DequantCase, got []byte) (int, string, error) {
	want := make([]byte, len(got))
	if err := quant.DequantizeInto(want, c.Module, c.Tensors, c.DType); err != nil {
		return 0, "", fmt.Errorf("cpu: %w", err)
	}
	bad, first := compareDequant(c, got, want)
	return bad, first, nil
}

// compareDequant counts the elements of got that differ from want.
func compareDequant(c DequantCase, got, want []byte) (int, string) {
	es := c.DType.BitSize() / 8
	n := c.Module.Out * c.Module.In
	bad, first := 0, ""
	for i := range n {
		var g, w uint32
		var same bool
		if es == 2 {
			g, w = uint32(binary.LittleEndian.Uint16(got[2*i:])), uint32(binary.LittleEndian.Uint16(want[2*i:]))
			same = g == w
		} else {
			g, w = binary.LittleEndian.Uint32(got[4*i:]), binary.LittleEndian.Uint32(want[4*i:])
			same = g == w || (math.IsNaN(float64(math.Float32frombits(g))) && math.IsNaN(float64(math.Float32frombits(w))))
		}
		if !same {
			if bad == 0 {
				code := "packed"
				if cb := c.Tensors[quant.RoleCodes]; len(cb) == n {
					code = fmt.Sprintf("0x%02x", cb[i])
				}
				first = fmt.Sprintf("element [%d, %d] (code %s): device %#x, cpu %#x", i/c.Module.In, i%c.Module.In, code, g, w)
			}
			bad++
		}
	}
	return bad, first
}

// QuantizeCase is one fp8-block quantization to compare.
type QuantizeCase struct {
	Name   string
	Scheme quant.QuantizeScheme
	Weight safetensors.TensorInfo
	Data   []byte
}

// quantizeCases collects QuantizeCases of one weight tensor name.
type quantizeCases struct {
	rng    *rand.Rand
	tensor string
	cases  []QuantizeCase
}

// add adds the case of vals (out×in) stored as wd and quantized with qs.
func (qc *quantizeCases) add(name string, qs quant.QuantizeScheme, wd safetensors.DType, out, in int, vals []float32) {
	data := scaleBytes(vals, wd)
	qc.cases = append(qc.cases, QuantizeCase{
		Name:   fmt.Sprintf("%s: %s %dx%d, %s", name, wd, out, in, qs),
		Scheme: qs,
		Weight: safetensors.TensorInfo{Name: qc.tensor, DType: wd, Shape: []uint64{uint64(out), uint64(in)}, End: uint64(len(data))},
		Data:   data,
	})
}

// normal returns n values drawn from N(0, sigma²).
func (qc *quantizeCases) normal(n int, sigma float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(qc.rng.NormFloat64() * sigma)
	}
	return v
}

// QuantizeCases returns the quantization cases: BF16, F16 and F32 weights
// with partial edge blocks, every scale dtype, compressed-tensors and native
// format, zero blocks, values saturating at ±448 after the scale rounds
// down, denormal scales, and weights the CPU refuses (NaN, ±Inf, scales
// that overflow the weight dtype).
func QuantizeCases(seed uint64) []QuantizeCase {
	qc := &quantizeCases{rng: rand.New(rand.NewPCG(seed, 2)), tensor: "model.layers.3.self_attn.o_proj.weight"}
	add, normal := qc.add, qc.normal
	ct := quant.QuantizeScheme{Name: quant.QuantFP8Block}
	native := quant.QuantizeScheme{Name: quant.QuantFP8Block, Format: quant.OutputFP8}
	withScale := func(qs quant.QuantizeScheme, sd safetensors.DType) quant.QuantizeScheme {
		qs.ScaleDType = sd
		return qs
	}
	withBlock := func(qs quant.QuantizeScheme, bh, bw int) quant.QuantizeScheme {
		qs.BlockSize = [2]int{bh, bw}
		return qs
	}

	add("random, partial blocks", ct, safetensors.BF16, 200, 300, normal(200*300, 0.02))
	add("random, partial blocks", native, safetensors.BF16, 200, 300, normal(200*300, 0.02))
	add("random", withScale(ct, safetensors.F32), safetensors.F32, 256, 384, normal(256*384, 0.05))
	add("random", withScale(native, safetensors.F32), safetensors.BF16, 384, 256, normal(384*256, 1))
	add("random, small blocks", withBlock(ct, 64, 32), safetensors.F16, 130, 250, normal(130*250, 0.1))
	zero := normal(256*256, 0.02)
	for r := range 128 {
		clear(zero[r*256 : r*256+128]) // one all-zero block
	}
	add("zero block", ct, safetensors.BF16, 256, 256, zero)
	add("zero block", native, safetensors.BF16, 256, 256, zero)
	add("zero block", withScale(ct, safetensors.F32), safetensors.F32, 256, 256, zero)
	sat := normal(128*128, 100)
	sat[0], sat[1] = 450, -450 // bf16 scale 450/448 → 1.0: the quotient 450 saturates
	add("saturation at ±448", ct, safetensors.BF16, 128, 128, sat)
	add("saturation at ±448", withScale(ct, safetensors.BF16), safetensors.F32, 128, 128, sat)
	add("denormal F16 scales", ct, safetensors.F16, 128, 256, normal(128*256, 2e-4))
	add("denormal F32 scales", withScale(ct, safetensors.F32), safetensors.F32, 128, 256, normal(128*256, 1e-38))
	add("tiny BF16 values", ct, safetensors.BF16, 130, 260, normal(130*260, 1e-37))
	add("large values", withScale(ct, safetensors.F32), safetensors.F32, 128, 128, normal(128*128, 1e36))
	nan := normal(128*128, 0.02)
	nan[77] = float32(math.NaN())
	add("NaN weight (refused)", ct, safetensors.BF16, 128, 128, nan)
	inf := normal(200*100, 0.02)
	inf[5000] = float32(math.Inf(-1))
	add("-Inf weight (refused)", withScale(ct, safetensors.F32), safetensors.F32, 200, 100, inf)
	big := normal(128*128, 1)
	big[3] = 65504
	add("scale overflow (refused)", withScale(ct, safetensors.F16), safetensors.F16, 128, 128, big)
	return qc.cases
}

// IntQuantizeCases returns the int8 and w4a16 quantization cases: BF16,
// F16 and F32 weights; int8 per channel; w4a16 symmetric and asymmetric,
// group 128, other groups, per channel, a group wider than in, rows whose
// packed words are partial, zero-point words partial along out; every
// scale dtype; all-zero cells and rows (0/0 zero points); rows of one
// sign (asymmetric scales from one side); values exactly on rounding ties
// (x/s = k + ½); tiny and denormal values and scales; and weights the CPU
// refuses (NaN, ±Inf, a scale overflowing its dtype, values near the
// weight dtype's largest number, a group not dividing in).
func IntQuantizeCases(seed uint64) []QuantizeCase {
	qc := &quantizeCases{rng: rand.New(rand.NewPCG(seed, 6)), tensor: "model.layers.1.mlp.gate_proj.weight"}
	add, normal := qc.add, qc.normal
	int8s := quant.QuantizeScheme{Name: quant.QuantInt8}
	w4 := quant.QuantizeScheme{Name: quant.QuantW4A16}
	w4a := quant.QuantizeScheme{Name: quant.QuantW4A16, Asymmetric: true}
	with := func(qs quant.QuantizeScheme, group int, sd safetensors.DType) quant.QuantizeScheme {
		qs.GroupSize, qs.ScaleDType = group, sd
		return qs
	}
	for _, wd := range []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32} {
		add("random", int8s, wd, 200, 300, normal(200*300, 0.02))
		add("random", w4, wd, 96, 512, normal(96*512, 0.02))
		add("random", w4a, wd, 100, 384, normal(100*384, 0.02))
	}
	add("random", with(int8s, 0, safetensors.F32), safetensors.BF16, 130, 250, normal(130*250, 0.05))
	add("random", with(int8s, 0, safetensors.F16), safetensors.F32, 64, 100, normal(64*100, 1))
	add("group 32, partial words", with(w4, 32, safetensors.F32), safetensors.BF16, 70, 224, normal(70*224, 0.1))
	add("per channel, partial words", with(w4, -1, ""), safetensors.BF16, 33, 203, normal(33*203, 0.1))
	add("per channel, partial words", with(w4a, -1, safetensors.F32), safetensors.F16, 37, 205, normal(37*205, 0.1))
	add("group wider than in", w4a, safetensors.BF16, 20, 100, normal(20*100, 0.1))
	add("group 64, F16 scales", with(w4a, 64, safetensors.F16), safetensors.BF16, 129, 256, normal(129*256, 0.01))
	// Zero rows and cells, rows of one sign, exact ties.
	z := normal(64*256, 0.02)
	clear(z[:256])              // an all-zero row
	clear(z[256*3 : 256*3+128]) // an all-zero group
	for i := 256 * 5; i < 256*6; i++ {
		z[i] = float32(math.Abs(float64(z[i]))) // all non-negative
	}
	for i := 256 * 7; i < 256*8; i++ {
		z[i] = -float32(math.Abs(float64(z[i]))) // all negative
	}
	for i := 256 * 9; i < 256*10; i++ {
		z[i] = float32(i%16) - 7.5 // quotients on ties
	}
	for i := 256 * 11; i < 256*12; i++ {
		z[i] = float32(i%256) * 0.5 // ties for int8 (s = 127.5/127.5)
	}
	z[256*13] = float32(math.Copysign(0, -1))
	for _, qs := range []quant.QuantizeScheme{int8s, w4, w4a, with(w4a, 0, safetensors.F32), with(int8s, 0, safetensors.F32)} {
		add("zero rows and cells, one-sided rows, ties", qs, safetensors.BF16, 64, 256, z)
		add("zero rows and cells, one-sided rows, ties", qs, safetensors.F32, 64, 256, z)
	}
	add("tiny values", int8s, safetensors.BF16, 64, 128, normal(64*128, 1e-37))
	add("tiny values", w4a, safetensors.F16, 64, 128, normal(64*128, 1e-6))
	add("denormal F32 values", with(w4a, 0, safetensors.F32), safetensors.F32, 64, 128, normal(64*128, 1e-40))
	add("denormal F32 values", with(int8s, 0, safetensors.F32), safetensors.F32, 64, 128, normal(64*128, 1e-39))
	add("large values", with(w4, 0, safetensors.F32), safetensors.F32, 64, 128, normal(64*128, 1e36))
	add("random 1024x2048", w4, safetensors.BF16, 1024, 2048, normal(1024*2048, 0.02))
	add("random 1024x2048", w4a, safetensors.BF16, 1024, 2048, normal(1024*2048, 0.02))
	add("random 1024x2048", int8s, safetensors.BF16, 1024, 2048, normal(1024*2048, 0.02))
	// Refused by the CPU.
	nan := normal(64*128, 0.02)
	nan[300] = float32(math.NaN())
	add("NaN weight (refused)", w4a, safetensors.BF16, 64, 128, nan)
	inf := normal(64*128, 0.02)
	inf[77] = float32(math.Inf(1))
	add("+Inf weight (refused)", int8s, safetensors.F32, 64, 128, inf)
	big := normal(64*128, 1)
	big[5] = 65504
	add("values near the F16 maximum (refused)", w4, safetensors.F16, 64, 128, big)
	huge := normal(64*128, 1)
	huge[9] = 3e38
	add("scale overflows BF16 (refused)", with(int8s, 0, safetensors.F16), safetensors.F32, 64, 128, huge)
	add("group does not divide in (refused)", w4, safetensors.BF16, 16, 200, normal(16*200, 0.02))
	return qc.cases
}

// IntQuantizeRefused is the number of IntQuantizeCases the CPU refuses.
const IntQuantizeRefused = 5

// CheckQuantize runs a case on the device and on the CPU. Where the CPU
// refuses the weight, the device must answer ErrUnsupported (the caller
// then shows the CPU's error); otherwise every tensor must match byte for
// byte. refused reports a refused case.
func CheckQuantize(d *Device, c QuantizeCase) (refused bool, err error) {
	want, cpuErr := quant.QuantizeWeight(c.Scheme, c.Weight, c.Data)
	got, devErr := d.QuantizeWeight(c.Scheme, c.Weight, c.Data)
	if cpuErr != nil {
		if !errors.Is(devErr, ErrUnsupported) {
			return true, fmt.Errorf("cpu refuses (%v) but the device says %v", cpuErr, devErr)
		}
		return true, nil
	}
	if devErr != nil {
		return false, fmt.Errorf("device: %w", devErr)
	}
	if len(got) != len(want) {
		return false, fmt.Errorf("%d tensors, cpu %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Role != w.Role || g.DType != w.DType || fmt.Sprint(g.Shape) != fmt.Sprint(w.Shape) {
			return false, fmt.Errorf("tensor %d: %s %s %s %v, cpu %s %s %s %v", i, g.Name, g.Role, g.DType, g.Shape, w.Name, w.Role, w.DType, w.Shape)
		}
		bad, first := 0, -1
		for j := range w.Data {
			if j >= len(g.Data) || g.Data[j] != w.Data[j] {
				if first < 0 {
					first = j
				}
				bad++
			}
		}
		if bad > 0 || len(g.Data) != len(w.Data) {
			return false, fmt.Errorf("%s: %d of %d bytes differ, first at byte %d", w.Name, bad, len(w.Data), first)
		}
	}
	return false, nil
}

// SVDCase is one decomposition to check against the exact optimum.
type SVDCase struct {
	Name string
	A    linalg.Matrix
	Rank int
	Opts SVDOptions
}

// SVDCases returns small decompositions (exact optimum computable with a
// float64 SVD in a second): a low-rank-plus-noise delta (also scaled to
// the edges of float32's range), a slowly decaying spectrum, a matrix of
// exact rank below k, and the BF16 variant.
func SVDCases(seed uint64) []SVDCase {
	lr := LowRankPlusNoise(384, 640, 40, 0.3, seed)
	slow := PowerLawMatrix(320, 512, 0.3, seed+1)
	deficient := LowRankPlusNoise(300, 500, 5, 0, seed+2)
	scaled := func(a linalg.Matrix, f float32) linalg.Matrix {
		b := linalg.NewMatrix(a.Rows, a.Cols)
		for i, v := range a.Data {
			b.Data[i] = v * f
		}
		return b
	}
	return []SVDCase{
		{Name: "low rank + noise 384×640, r 32", A: lr, Rank: 32},
		{Name: "low rank + noise ×1e-25 (float32 squares underflow), r 32", A: scaled(lr, 1e-25), Rank: 32},
		{Name: "low rank + noise ×1e25 (float32 squares overflow), r 32", A: scaled(lr, 1e25), Rank: 32},
		{Name: "low rank + noise 640×384 (transposed), r 32", A: lr.T(), Rank: 32},
		{Name: "σ_i = i^-0.3, 320×512, r 48", A: slow, Rank: 48},
		{Name: "exact rank 5, 300×500, r 16", A: deficient, Rank: 16},
		{Name: "low rank + noise, BF16 power iterations, r 32", A: lr, Rank: 32, Opts: SVDOptions{BF16: true}},
	}
}

// LowRankPlusNoise returns Σ_{i<r} s_i·x_i·y_iᵀ with s_i = (i+1)^-½ and
// Gaussian x_i, y_i of unit expected norm, plus Gaussian noise whose total
// energy is noise² times the signal's: a fine-tuning delta look-alike.
func LowRankPlusNoise(m, n, r int, noise float64, seed uint64) linalg.Matrix {
	rng := rand.New(rand.NewPCG(seed, 3))
	x := linalg.NewMatrix(m, r)
	y := linalg.NewMatrix(r, n)
	for i := range x.Data {
		x.Data[i] = float32(rng.NormFloat64() / math.Sqrt(float64(m)))
	}
	for j := range r {
		s := 1 / math.Sqrt(float64(j+1))
		for c := range n {
			y.Data[j*n+c] = float32(s * rng.NormFloat64() / math.Sqrt(float64(n)))
		}
	}
	a := linalg.Mul(x, y)
	if noise > 0 {
		var sig float64
		for _, v := range a.Data {
			sig += float64(v) * float64(v)
		}
		sigma := noise * math.Sqrt(sig/float64(m*n))
		for i := range a.Data {
			a.Data[i] += float32(sigma * rng.NormFloat64())
		}
	}
	return a
}

// PowerLawMatrix returns U·diag(i^-alpha)·Vᵀ with random orthonormal U, V.
func PowerLawMatrix(m, n int, alpha float64, seed uint64) linalg.Matrix {
	rng := rand.New(rand.NewPCG(seed, 4))
	k := min(m, n)
	orth := func(rows int) *mat.Dense {
		g := mat.NewDense(rows, k, nil)
		for i := range rows {
			for j := range k {
				g.Set(i, j, rng.NormFloat64())
			}
		}
		var qr mat.QR
		qr.Factorize(g)
		var q mat.Dense
		qr.QTo(&q)
		return mat.DenseCopyOf(q.Slice(0, rows, 0, k))
	}
	u, v := orth(m), orth(n)
	for j := range k {
		s := math.Pow(float64(j+1), -alpha)
		for i := range m {
			u.Set(i, j, u.At(i, j)*s)
		}
	}
	var a mat.Dense
	a.Mul(u, v.T())
	out := linalg.NewMatrix(m, n)
	for i := range m {
		for j := range n {
			out.Data[i*n+j] = float32(a.At(i, j))
		}
	}
	return out
}

// SVDCheck is the outcome of one SVD case.
type SVDCheck struct {
	Error, Optimum float64 // Frobenius errors of the result and of the best rank-k approximation
	Ratio          float64 // Error / Optimum (1 when both are at rounding level)
	// Orthogonality is max |UᵀU − I| and |Vt·Vtᵀ − I| over the significant
	// components (σ > 1e-5·σ_1; below, as on the CPU, a component of a
	// matrix of lower rank is rounding noise and its vectors need not be
	// orthogonal).
	Orthogonality float64
	PowerIters    int
}

// CheckSVD decomposes c.A on the device and measures the result against
// the exact optimum from a float64 SVD (gonum), and the conventions: S
// non-increasing, significant components orthonormal, zero components
// zero, the largest entry of each U column positive.
func CheckSVD(d *Device, c SVDCase) (SVDCheck, error) {
	var res SVDCheck
	got, err := d.TruncatedSVD(c.A, c.Rank, c.Opts)
	if err != nil {
		return res, err
	}
	m, n, k := c.A.Rows, c.A.Cols, min(c.Rank, c.A.Rows, c.A.Cols)
	if got.Rank() != k || got.U.Rows != m || got.U.Cols != k || got.Vt.Rows != k || got.Vt.Cols != n {
		return res, fmt.Errorf("shapes: U %d×%d, %d values, Vt %d×%d", got.U.Rows, got.U.Cols, got.Rank(), got.Vt.Rows, got.Vt.Cols)
	}
	res.PowerIters = got.PowerIters
	dense := mat.NewDense(m, n, nil)
	for i, v := range c.A.Data {
		dense.RawMatrix().Data[i] = float64(v)
	}
	var svd mat.SVD
	if !svd.Factorize(dense, mat.SVDNone) {
		return res, errors.New("gonum SVD did not converge")
	}
	var tail, total float64
	for i, s := range svd.Values(nil) {
		total += s * s
		if i >= k {
			tail += s * s
		}
	}
	res.Optimum = math.Sqrt(tail)
	if res.Error, err = got.Residual(c.A); err != nil {
		return res, err
	}
	floor := 1e-6 * math.Sqrt(total)
	res.Ratio = max(res.Error, floor) / max(res.Optimum, floor)
	for i := 1; i < k; i++ {
		if got.S[i] > got.S[i-1] {
			return res, fmt.Errorf("S not non-increasing at %d: %v > %v", i, got.S[i], got.S[i-1])
		}
	}
	for a := range k {
		if got.S[a] == 0 {
			for i := range m {
				if got.U.At(i, a) != 0 {
					return res, fmt.Errorf("component %d: σ = 0 but U is not zero", a)
				}
			}
			continue
		}
		best, arg := -1.0, 0
		for i := range m {
			if v := math.Abs(float64(got.U.At(i, a))); v > best {
				best, arg = v, i
			}
		}
		if got.U.At(arg, a) < 0 {
			return res, fmt.Errorf("component %d: largest U entry is negative", a)
		}
		if got.S[a] <= 1e-5*got.S[0] {
			continue
		}
		for b := 0; b <= a; b++ {
			var uu, vv float64
			for i := range m {
				uu += float64(got.U.At(i, a)) * float64(got.U.At(i, b))
			}
			for j := range n {
				vv += float64(got.Vt.At(a, j)) * float64(got.Vt.At(b, j))
			}
			if a == b {
				uu, vv = uu-1, vv-1
			}
			res.Orthogonality = max(res.Orthogonality, math.Abs(uu), math.Abs(vv))
		}
	}
	return res, nil
}

// intModule describes an INT8 (compressed-tensors int-quantized) or packed
// 4-bit (pack-quantized) module [out, in] with scales of sd per channel
// (group 0) or per group, and zero points when asym.
func intModule(packed bool, out, in, group int, sd safetensors.DType, asym bool) quant.Module {
	s := quant.Scheme{Type: quant.TypeInt, Strategy: quant.StrategyChannel, GroupSize: group, Symmetric: !asym}
	r, c := out, 1
	if group > 0 {
		s.Strategy, c = quant.StrategyGroup, cdiv(in, group)
	}
	p := "model.layers.2.mlp.down_proj"
	ti := func(name string, dt safetensors.DType, shape ...uint64) safetensors.TensorInfo {
		n, _ := dt.ByteLen(shape)
		return safetensors.TensorInfo{Name: p + "." + name, DType: dt, Shape: shape, End: n}
	}
	t := map[quant.Role]safetensors.TensorInfo{quant.RoleScale: ti("weight_scale", sd, uint64(r), uint64(c))}
	if packed {
		s.Format, s.Bits, s.CodeDType = quant.FormatCTPacked, 4, safetensors.I32
		t[quant.RoleCodes] = ti("weight_packed", safetensors.I32, uint64(out), uint64((in+7)/8))
		t[quant.RoleShape] = ti("weight_shape", safetensors.I64, 2)
		if asym {
			t[quant.RoleZeroPoint] = ti("weight_zero_point", safetensors.I32, uint64((out+7)/8), uint64(c))
		}
	} else {
		s.Format, s.Bits, s.CodeDType = quant.FormatCTInt, 8, safetensors.I8
		t[quant.RoleCodes] = ti("weight", safetensors.I8, uint64(out), uint64(in))
		if asym {
			t[quant.RoleZeroPoint] = ti("weight_zero_point", safetensors.I8, uint64(r), uint64(c))
		}
	}
	return quant.Module{Prefix: p, Scheme: s, Tensors: t, Out: out, In: in}
}

// IntDequantCases returns the integer dequantization cases: INT8 per
// channel and per group, packed 4-bit per group and per channel, symmetric
// and with zero points, partial words and partial packed zero-point words,
// edge-case scales (zero, negative, subnormal, huge, NaN) and BF16, F16 and
// F32 scales, BF16 and F32 output.
func IntDequantCases(seed uint64) []DequantCase {
	rng := rand.New(rand.NewPCG(seed, 5))
	var cases []DequantCase
	add := func(name string, packed bool, out, in, group int, sd safetensors.DType, asym bool, scales []float32) {
		bits := 8
		if packed {
			bits = 4
		}
		lo, hi := -(1 << (bits - 1)), 1<<(bits-1)-1
		q := make([]int8, out*in)
		for i := range q {
			if !packed && in == 256 {
				q[i] = int8(i) // every byte in every row
			} else {
				q[i] = int8(lo + rng.IntN(hi-lo+1))
			}
		}
		mod := intModule(packed, out, in, group, sd, asym)
		r, c := out, 1
		if group > 0 {
			c = cdiv(in, group)
		}
		tensors := map[quant.Role][]byte{}
		if packed {
			w, err := quant.PackInt32(q, in, 4, quant.Dense)
			if err != nil {
				panic(err)
			}
			tensors[quant.RoleCodes] = i32le(w)
			shape := make([]byte, 16)
			binary.LittleEndian.PutUint64(shape, uint64(out))
			binary.LittleEndian.PutUint64(shape[8:], uint64(in))
			tensors[quant.RoleShape] = shape
		} else {
			b := make([]byte, len(q))
			for i, v := range q {
				b[i] = byte(v)
			}
			tensors[quant.RoleCodes] = b
		}
		if scales == nil {
			scales = make([]float32, r*c)
			for i := range scales {
				scales[i] = float32(math.Exp(-9+3*rng.Float64())) * float32(1-2*rng.IntN(2))
			}
		}
		tensors[quant.RoleScale] = scaleBytes(scales[:r*c], sd)
		if asym {
			z := make([]int8, r*c)
			for i := range z {
				z[i] = int8(lo + rng.IntN(hi-lo+1))
			}
			if packed {
				w, err := quant.PackInt32Dim0(z, r, c, 4, quant.Dense)
				if err != nil {
					panic(err)
				}
				tensors[quant.RoleZeroPoint] = i32le(w)
			} else {
				b := make([]byte, len(z))
				for i, v := range z {
					b[i] = byte(v)
				}
				tensors[quant.RoleZeroPoint] = b
			}
		}
		kind := "int8"
		if packed {
			kind = "w4a16"
		}
		strategy := "channel"
		if group > 0 {
			strategy = fmt.Sprintf("group %d", group)
		}
		for _, dt := range []safetensors.DType{safetensors.BF16, safetensors.F32} {
			cases = append(cases, DequantCase{
				Name:    fmt.Sprintf("%s %s, %dx%d per %s, %s scales, asym=%v → %s", kind, name, out, in, strategy, sd, asym, dt),
				Module:  mod,
				Tensors: tensors,
				DType:   dt,
			})
		}
	}
	// 16 rows: one edge scale per channel, every byte in every row.
	add("every code, edge scales", false, 16, 256, 0, safetensors.F32, false, edgeScales)
	add("every code, edge scales", false, 16, 256, 0, safetensors.BF16, true, edgeScales)
	add("random", false, 200, 300, 0, safetensors.BF16, true, nil)
	add("random", false, 130, 256, 64, safetensors.F16, false, nil)
	edge := make([]float32, 100*10)
	for i := range edge {
		edge[i] = edgeScales[i%len(edgeScales)]
	}
	add("edge scales, partial zero-point words", true, 100, 320, 32, safetensors.F32, true, edge)
	add("random", true, 96, 512, 128, safetensors.BF16, false, nil)
	add("partial words", true, 64, 204, 0, safetensors.F16, true, nil)
	add("random", true, 1024, 2048, 128, safetensors.BF16, false, nil)
	add("random", false, 1024, 2048, 0, safetensors.BF16, false, nil)
	return cases
}

func i32le(w []int32) []byte {
	b := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
	}
	return b
}

// GeneralDequantCases returns the cases of the general dequantization
// kernel beyond FP8 block and compressed-tensors INT8/W4A16 to BF16/F32:
// AutoAWQ GEMM (with qzeros, group 128 and one group per row, and without
// qzeros), FP8 E4M3 and E5M2 per tensor, per channel and per block
// (compressed-tensors, native fp8, quanto qfloat8), every code against
// edge-case scales (zero, negative, subnormal, huge, NaN; ±Inf × 0 giving
// the host's default NaN), E8M0 scales (every exponent, 0xFF NaN), quanto
// qint8, INT8 per tensor, packed 8- and 2-bit codes with zero points,
// act-order g_idx (I32 and I64) on INT8 and packed 4-bit groups, and F16
// output of every kind, FP8 block included.
func GeneralDequantCases(seed uint64) []DequantCase {
	rng := rand.New(rand.NewPCG(seed, 7))
	var cases []DequantCase
	outs := []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32}
	addAll := func(name string, mod quant.Module, tensors map[quant.Role][]byte, dts ...safetensors.DType) {
		if len(dts) == 0 {
			dts = outs
		}
		for _, dt := range dts {
			cases = append(cases, DequantCase{Name: fmt.Sprintf("%s %dx%d → %s", name, mod.Out, mod.In, dt), Module: mod, Tensors: tensors, DType: dt})
		}
	}
	p := "model.layers.4.self_attn.v_proj"
	ti := func(name string, dt safetensors.DType, shape ...uint64) safetensors.TensorInfo {
		n, _ := dt.ByteLen(shape)
		return safetensors.TensorInfo{Name: p + "." + name, DType: dt, Shape: shape, End: n}
	}
	randScales := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(math.Exp(-9+3*rng.Float64())) * float32(1-2*rng.IntN(2))
		}
		return s
	}
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	// Edge scales without NaN: F16 output of FP8 codes with a NaN scale is
	// left to the CPU (which NaN's sign survives is the compiler's choice).
	noNaN := slices.Clone(edgeScales)
	for i, v := range noNaN {
		if v != v {
			noNaN[i] = -65504
		}
	}

	// AutoAWQ GEMM.
	awq := func(name string, out, in, group int, zeros bool, sd safetensors.DType) {
		groups := in / group
		codes := make([]uint8, in*out) // K-major [in, out]
		for i := range codes {
			codes[i] = uint8(rng.IntN(16))
		}
		qw, err := quant.PackAWQ(codes, out)
		if err != nil {
			panic(err)
		}
		mod := quant.Module{Prefix: p, Out: out, In: in,
			Scheme: quant.Scheme{Format: quant.FormatAWQ, Type: quant.TypeInt, Bits: 4, CodeDType: safetensors.I32, Strategy: quant.StrategyGroup, GroupSize: group, Symmetric: !zeros},
			Tensors: map[quant.Role]safetensors.TensorInfo{
				quant.RoleCodes: ti("qweight", safetensors.I32, uint64(in), uint64(out/8)),
				quant.RoleScale: ti("scales", sd, uint64(groups), uint64(out)),
			}}
		tensors := map[quant.Role][]byte{quant.RoleCodes: i32le(qw), quant.RoleScale: scaleBytes(randScales(groups*out), sd)}
		if zeros {
			z := make([]uint8, groups*out)
			for i := range z {
				z[i] = uint8(rng.IntN(16))
			}
			qz, err := quant.PackAWQ(z, out)
			if err != nil {
				panic(err)
			}
			mod.Tensors[quant.RoleZeroPoint] = ti("qzeros", safetensors.I32, uint64(groups), uint64(out/8))
			tensors[quant.RoleZeroPoint] = i32le(qz)
		}
		addAll("awq gemm "+name, mod, tensors)
	}
	awq("qzeros, group 128", 256, 512, 128, true, safetensors.F16)
	awq("qzeros, one group per row", 64, 200, 200, true, safetensors.BF16)
	awq("no qzeros, group 64", 120, 256, 64, false, safetensors.F32)

	// FP8 codes with tensor, channel and block scales.
	fp8 := func(name string, format string, codeDT safetensors.DType, strategy string, out, in int, codes []byte, sd safetensors.DType, scales []float32, block [2]int, dts ...safetensors.DType) {
		var shape []uint64
		switch strategy {
		case quant.StrategyTensor:
			shape = []uint64{1}
		case quant.StrategyChannel:
			shape = []uint64{uint64(out), 1}
		default:
			shape = []uint64{uint64(cdiv(out, block[0])), uint64(cdiv(in, block[1]))}
		}
		mod := quant.Module{Prefix: p, Out: out, In: in,
			Scheme: quant.Scheme{Format: format, Type: quant.TypeFloat, Bits: 8, CodeDType: codeDT, Strategy: strategy, BlockSize: block, Symmetric: true},
			Tensors: map[quant.Role]safetensors.TensorInfo{
				quant.RoleCodes: ti("weight", codeDT, uint64(out), uint64(in)),
				quant.RoleScale: ti("weight_scale", sd, shape...),
			}}
		var sb []byte
		if sd == safetensors.F8E8M0 {
			sb = make([]byte, len(scales))
			for i, v := range scales {
				sb[i] = byte(v)
			}
		} else {
			sb = scaleBytes(scales, sd)
		}
		addAll(fmt.Sprintf("%s %s %s %s scales", name, codeDT, strategy, sd), mod, map[quant.Role][]byte{quant.RoleCodes: codes, quant.RoleScale: sb}, dts...)
	}
	every := make([]byte, 16*256) // every code in every row
	for i := range every {
		every[i] = byte(i)
	}
	bf32 := []safetensors.DType{safetensors.BF16, safetensors.F32}
	f16 := []safetensors.DType{safetensors.F16}
	for _, codeDT := range []safetensors.DType{safetensors.F8E4M3, safetensors.F8E5M2} {
		fp8("every code, edge scales", quant.FormatQuanto, codeDT, quant.StrategyChannel, 16, 256, every, safetensors.F32, edgeScales, [2]int{}, bf32...)
		fp8("every code, edge scales", quant.FormatQuanto, codeDT, quant.StrategyChannel, 16, 256, every, safetensors.BF16, noNaN, [2]int{}, outs...)
		fp8("every code, edge scales", quant.FormatFP8, codeDT, quant.StrategyBlock, 256, 256, edgeCodes(), safetensors.F16, noNaN, [2]int{64, 64}, outs...)
		for _, sc := range []float32{0, 3.1e-3, 7.7e-41, 65504} {
			fp8(fmt.Sprintf("every code, scale %g", sc), quant.FormatFP8, codeDT, quant.StrategyTensor, 16, 256, every, safetensors.F32, []float32{sc}, [2]int{}, outs...)
		}
	}
	fp8("nan scale", quant.FormatFP8, safetensors.F8E4M3, quant.StrategyTensor, 16, 256, every, safetensors.F32, []float32{float32(math.NaN())}, [2]int{}, bf32...)
	fp8("random", quant.FormatCTFloat, safetensors.F8E4M3, quant.StrategyChannel, 300, 200, randBytes(300*200), safetensors.BF16, randScales(300), [2]int{}, outs...)
	fp8("random", quant.FormatCTFloat, safetensors.F8E4M3, quant.StrategyTensor, 300, 200, randBytes(300*200), safetensors.F32, randScales(1), [2]int{}, outs...)
	fp8("random, partial blocks", quant.FormatCTFloat, safetensors.F8E4M3, quant.StrategyBlock, 200, 300, randBytes(200*300), safetensors.BF16, randScales(2*3), [2]int{128, 128}, f16...)
	fp8("random, partial blocks", quant.FormatFP8, safetensors.F8E4M3, quant.StrategyBlock, 200, 300, randBytes(200*300), safetensors.F32, randScales(2*3), [2]int{128, 128}, f16...)
	e8 := make([]float32, 16*16)
	for i := range e8 {
		e8[i] = float32(i) // every E8M0 code: 2^-127 … 2^127 and NaN
	}
	fp8("every exponent", quant.FormatFP8, safetensors.F8E4M3, quant.StrategyBlock, 256, 256, edgeCodes(), safetensors.F8E8M0, e8, [2]int{16, 16}, bf32...)

	// Integer codes: quanto qint8, INT8 per tensor, packed 8- and 2-bit.
	intMod := func(name, format string, codeDT safetensors.DType, bits int, strategy string, group, out, in int, sd safetensors.DType, scales []float32, zeros bool) {
		lo, hi := -(1 << (bits - 1)), 1<<(bits-1)-1
		q := make([]int8, out*in)
		for i := range q {
			q[i] = int8(lo + rng.IntN(hi-lo+1))
		}
		r, c := out, 1
		switch strategy {
		case quant.StrategyTensor:
			r = 1
		case quant.StrategyGroup:
			c = cdiv(in, group)
		}
		mod := quant.Module{Prefix: p, Out: out, In: in,
			Scheme:  quant.Scheme{Format: format, Type: quant.TypeInt, Bits: bits, CodeDType: codeDT, Strategy: strategy, GroupSize: group, Symmetric: !zeros},
			Tensors: map[quant.Role]safetensors.TensorInfo{quant.RoleScale: ti("weight_scale", sd, uint64(r), uint64(c))}}
		tensors := map[quant.Role][]byte{}
		if scales == nil {
			scales = randScales(r * c)
		}
		tensors[quant.RoleScale] = scaleBytes(scales[:r*c], sd)
		if format == quant.FormatCTPacked {
			w, err := quant.PackInt32(q, in, bits, quant.Dense)
			if err != nil {
				panic(err)
			}
			mod.Tensors[quant.RoleCodes] = ti("weight_packed", safetensors.I32, uint64(out), uint64(len(w)/out))
			tensors[quant.RoleCodes] = i32le(w)
			mod.Tensors[quant.RoleShape] = ti("weight_shape", safetensors.I64, 2)
			shape := make([]byte, 16)
			binary.LittleEndian.PutUint64(shape, uint64(out))
			binary.LittleEndian.PutUint64(shape[8:], uint64(in))
			tensors[quant.RoleShape] = shape
		} else {
			mod.Tensors[quant.RoleCodes] = ti("weight", safetensors.I8, uint64(out), uint64(in))
			b := make([]byte, len(q))
			for i, v := range q {
				b[i] = byte(v)
			}
			tensors[quant.RoleCodes] = b
		}
		if zeros {
			z := make([]int8, r*c)
			for i := range z {
				z[i] = int8(lo + rng.IntN(hi-lo+1))
			}
			if format == quant.FormatCTPacked {
				w, err := quant.PackInt32Dim0(z, r, c, bits, quant.Dense)
				if err != nil {
					panic(err)
				}
				mod.Tensors[quant.RoleZeroPoint] = ti("weight_zero_point", safetensors.I32, uint64(len(w)/c), uint64(c))
				tensors[quant.RoleZeroPoint] = i32le(w)
			} else {
				zf := make([]float32, len(z))
				for i, v := range z {
					zf[i] = float32(v)
				}
				mod.Tensors[quant.RoleZeroPoint] = ti("weight_zero_point", safetensors.F32, uint64(r), uint64(c))
				tensors[quant.RoleZeroPoint] = scaleBytes(zf, safetensors.F32)
			}
		}
		addAll(fmt.Sprintf("%s %d-bit %s %s scales zeros=%v", name, bits, strategy, sd, zeros), mod, tensors)
	}
	intMod("quanto qint8", quant.FormatQuanto, safetensors.I8, 8, quant.StrategyChannel, 0, 16, 256, safetensors.F32, edgeScales, false)
	intMod("quanto qint8", quant.FormatQuanto, safetensors.I8, 8, quant.StrategyChannel, 0, 300, 200, safetensors.BF16, nil, false)
	intMod("int8 per tensor, F32 zero point", quant.FormatCTInt, safetensors.I8, 8, quant.StrategyTensor, 0, 100, 300, safetensors.F16, nil, true)
	intMod("packed", quant.FormatCTPacked, safetensors.I32, 8, quant.StrategyGroup, 64, 70, 256, safetensors.BF16, nil, true)
	intMod("packed", quant.FormatCTPacked, safetensors.I32, 2, quant.StrategyChannel, 0, 50, 100, safetensors.F32, nil, true)
	edge := make([]float32, 40*7)
	for i := range edge {
		edge[i] = edgeScales[i%len(edgeScales)]
	}
	intMod("packed, edge scales", quant.FormatCTPacked, safetensors.I32, 4, quant.StrategyGroup, 32, 40, 224, safetensors.F16, edge, false)
	// Act-order: a g_idx (I32 or I64) on every group case, columns assigned
	// to groups in a random order (the sizes of the groups kept).
	for i, c := range IntDequantCases(seed) {
		s := c.Module.Scheme
		if s.Strategy != quant.StrategyGroup || c.Module.In%s.GroupSize != 0 {
			continue
		}
		gdt := safetensors.I32
		if i%4 == 0 {
			gdt = safetensors.I64
		}
		in := c.Module.In
		perm := rng.Perm(in)
		gb := make([]byte, in*gdt.BitSize()/8)
		for col, pc := range perm {
			if gdt == safetensors.I32 {
				binary.LittleEndian.PutUint32(gb[4*col:], uint32(pc/s.GroupSize))
			} else {
				binary.LittleEndian.PutUint64(gb[8*col:], uint64(pc/s.GroupSize))
			}
		}
		m := c.Module
		m.Tensors = maps.Clone(m.Tensors)
		m.Tensors[quant.RoleGIdx] = safetensors.TensorInfo{Name: m.Prefix + ".weight_g_idx", DType: gdt, Shape: []uint64{uint64(in)}, End: uint64(len(gb))}
		ts := maps.Clone(c.Tensors)
		ts[quant.RoleGIdx] = gb
		for _, dt := range outs {
			cases = append(cases, DequantCase{Name: fmt.Sprintf("%s, act-order %s g_idx → %s", c.Name, gdt, dt), Module: m, Tensors: ts, DType: dt})
		}
	}
	// F16 output of the INT8 and W4A16 cases.
	for _, c := range IntDequantCases(seed) {
		if c.DType == safetensors.F32 {
			c.DType = safetensors.F16
			c.Name = strings.TrimSuffix(c.Name, "F32") + "F16"
			cases = append(cases, c)
		}
	}
	return cases
}
