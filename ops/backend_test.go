package ops_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/ops/internal/linalg"
)

// bf16Weight returns a random BF16 weight [out, in] as bytes.
func bf16Weight(out, in int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0))
	b := make([]byte, 2*out*in)
	for i := range out * in {
		binary.LittleEndian.PutUint16(b[2*i:], numeric.F32ToBF16(float32(r.NormFloat64()*0.02)))
	}
	return b
}

// TestCPUBackendIsTheKernels: the CPU backend returns exactly what the
// kernels of codec/quant and ops/internal/linalg return.
func TestCPUBackendIsTheKernels(t *testing.T) {
	be := ops.CPUBackend()
	defer be.Close()
	if be.Name() != "cpu" {
		t.Errorf("name %q", be.Name())
	}
	const out, in = 200, 300 // partial edge blocks
	w := safetensors.TensorInfo{Name: "model.layers.0.mlp.up_proj.weight", DType: safetensors.BF16, Shape: []uint64{out, in}, End: 2 * out * in}
	data := bf16Weight(out, in, 1)
	qs := quant.QuantizeScheme{Name: quant.QuantFP8Block}
	got, err := be.QuantizeWeight(ctx, qs, w, data)
	if err != nil {
		t.Fatal(err)
	}
	want, err := quant.QuantizeWeight(qs, w, data)
	if err != nil {
		t.Fatal(err)
	}
	mod := quant.Module{Prefix: "model.layers.0.mlp.up_proj", Scheme: qs.Scheme(), Tensors: map[quant.Role]safetensors.TensorInfo{}, Out: out, In: in}
	tensors := map[quant.Role][]byte{}
	for i := range want {
		if !bytes.Equal(got[i].Data, want[i].Data) || got[i].Name != want[i].Name {
			t.Fatalf("quantize: tensor %s differs", want[i].Name)
		}
		mod.Tensors[want[i].Role] = safetensors.TensorInfo{Name: want[i].Name, DType: want[i].DType, Shape: want[i].Shape, End: uint64(len(want[i].Data))}
		tensors[want[i].Role] = want[i].Data
	}
	for _, dt := range []safetensors.DType{safetensors.BF16, safetensors.F32} {
		dst := make([]byte, out*in*dt.BitSize()/8)
		if err := be.Dequantize(ctx, dst, mod, tensors, dt); err != nil {
			t.Fatal(err)
		}
		ref, err := quant.Dequantize(mod, tensors, dt)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dst, ref) {
			t.Errorf("dequantize to %s differs", dt)
		}
	}
	nan := bytes.Clone(data)
	binary.LittleEndian.PutUint16(nan[100:], 0x7FC0)
	if _, err := be.QuantizeWeight(ctx, qs, w, nan); !errors.Is(err, quant.ErrNonFinite) {
		t.Errorf("NaN weight: %v", err)
	}
	a := linalg.NewMatrix(120, 90)
	r := rand.New(rand.NewPCG(2, 0))
	for i := range a.Data {
		a.Data[i] = float32(r.NormFloat64())
	}
	d1, err := be.TruncatedSVD(ctx, a, 8, ops.SVDOptions{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	d2, err := linalg.TruncatedSVD(a, 8, linalg.SVDOptions{Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range d2.U.Data {
		if d1.U.Data[i] != d2.U.Data[i] {
			t.Fatal("SVD differs from linalg.TruncatedSVD")
		}
	}
	// Merge, norms and cosines are linalg's, bit for bit.
	bm, am := linalg.NewMatrix(120, 4), linalg.NewMatrix(4, 90)
	for i := range bm.Data {
		bm.Data[i] = float32(r.NormFloat64())
	}
	for i := range am.Data {
		am.Data[i] = float32(r.NormFloat64())
	}
	got1, want1 := linalg.NewMatrix(120, 90), linalg.NewMatrix(120, 90)
	if err := be.Merge(ctx, got1, a, bm, am, 0.5); err != nil {
		t.Fatal(err)
	}
	if err := linalg.Merge(want1, a, bm, am, 0.5); err != nil {
		t.Fatal(err)
	}
	for i := range want1.Data {
		if got1.Data[i] != want1.Data[i] {
			t.Fatal("merge differs from linalg.Merge")
		}
	}
	if n, _ := be.FrobeniusNorm(ctx, a); n != linalg.FrobeniusNorm(a) {
		t.Error("norm differs from linalg.FrobeniusNorm")
	}
	c1, _ := be.Cosine(ctx, a, want1)
	c2, _ := linalg.Cosine(a, want1)
	c3, _ := be.CosineLowRank(ctx, a, bm, am)
	c4, _ := linalg.Cosine(a, linalg.Mul(bm, am))
	if c1 != c2 || c3 != c4 {
		t.Error("cosines differ from linalg.Cosine")
	}
	if _, err := be.CosineLowRank(ctx, a, bm, linalg.NewMatrix(5, 90)); !errors.Is(err, linalg.ErrShape) {
		t.Errorf("low-rank cosine of mismatched factors: %v", err)
	}
	a.Data[5] = float32(math.Inf(1))
	if _, err := be.TruncatedSVD(ctx, a, 8, ops.SVDOptions{}); !errors.Is(err, linalg.ErrNotFinite) {
		t.Errorf("Inf: %v", err)
	}
}

// TestOpenBackend: auto falls back to the CPU with one log line naming the
// reason; gpu fails (ErrNoDevice); cpu does not probe.
func TestOpenBackend(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "plugin.so")
	noPython := func(string) (string, error) { return "", errors.New("python3: not found") }
	var logs []string
	logf := func(format string, args ...any) { logs = append(logs, format) }
	be, rep, err := ops.OpenBackend(ops.DeviceOptions{Device: ops.DeviceAuto, Plugin: missing, Logf: logf, Python: noPython})
	if err != nil {
		t.Fatal(err)
	}
	if be.Name() != "cpu" || rep.Chosen != ops.DeviceCPU || rep.GPU == nil || rep.GPU.OK || len(logs) != 1 {
		t.Fatalf("auto: %s, report %+v, %d log lines", be.Name(), rep, len(logs))
	}
	if rep.GPU.Cgo && !strings.Contains(rep.Reason, missing) {
		t.Errorf("reason %q does not name the missing plugin", rep.Reason)
	}
	// Without an explicit plugin the search covers PJRT_PLUGIN_LIBRARY_PATH
	// and the jax wheels.
	env := func(k string) string {
		if k == "PJRT_PLUGIN_LIBRARY_PATH" {
			return t.TempDir()
		}
		return ""
	}
	be, rep, err = ops.OpenBackend(ops.DeviceOptions{Env: env, Python: noPython})
	if err != nil || be.Name() != "cpu" {
		t.Fatalf("auto without a plugin: %v", err)
	}
	if rep.GPU.Cgo && len(rep.GPU.Candidates) != 3 {
		t.Errorf("candidates %+v, want the directory and two wheels", rep.GPU.Candidates)
	}
	if _, _, err := ops.OpenBackend(ops.DeviceOptions{Device: ops.DeviceGPU, Plugin: missing, Python: noPython}); !errors.Is(err, ops.ErrNoDevice) {
		t.Errorf("gpu: %v, want ErrNoDevice", err)
	}
	be, rep, err = ops.OpenBackend(ops.DeviceOptions{Device: ops.DeviceCPU, Plugin: missing})
	if err != nil || be.Name() != "cpu" || rep.GPU != nil {
		t.Errorf("cpu: %v, %+v", err, rep)
	}
	if _, _, err := ops.OpenBackend(ops.DeviceOptions{Device: "tpu"}); !errors.Is(err, ops.ErrInput) {
		t.Errorf("tpu: %v", err)
	}
}

// TestOpsOnPJRT runs LoRA extraction (methods a and b: SVDs, FP8
// dequantization) and the analysis (quantization noise) through the PJRT
// backend on the plugin HEFT_TEST_PJRT_PLUGIN names (see
// ops/internal/pjrtgpu), against the CPU backend.
func TestOpsOnPJRT(t *testing.T) {
	plugin := os.Getenv("HEFT_TEST_PJRT_PLUGIN")
	if plugin == "" {
		t.Skip("HEFT_TEST_PJRT_PLUGIN is not set")
	}
	be, rep, err := ops.OpenBackend(ops.DeviceOptions{Device: ops.DeviceGPU, Plugin: plugin})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	t.Logf("backend %s (%s)", be.Name(), rep.Reason)
	s, m, _, _ := loraFamily(t)
	for _, method := range []string{"a", "b"} {
		base := "org/base"
		if method == "b" {
			base = "org/base-fp8"
		}
		cpu, err := ops.LoraExtract(ctx, m, ops.LoraExtractOptions{Base: base, Tuned: "org/tuned", Name: "org/lora-cpu-" + method, Rank: 16, Method: method, DType: "F32"})
		if err != nil {
			t.Fatal(err)
		}
		dev, err := ops.LoraExtract(ctx, m, ops.LoraExtractOptions{Base: base, Tuned: "org/tuned", Name: "org/lora-dev-" + method, Rank: 16, Method: method, DType: "F32", Backend: be})
		if err != nil {
			t.Fatal(err)
		}
		for i, mc := range cpu.Modules {
			md := dev.Modules[i]
			if md.Module != mc.Module || md.RelError > mc.RelError*1.01+1e-6 {
				t.Errorf("method %s, %s: device error %.6f, cpu %.6f", method, mc.Module, md.RelError, mc.RelError)
			}
		}
	}
	cpu, err := ops.Analyze(ctx, m, ops.AnalyzeOptions{Base: "org/base", Tuned: "org/tuned", Ranks: []int{8, 16}})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := ops.Analyze(ctx, m, ops.AnalyzeOptions{Base: "org/base", Tuned: "org/tuned", Ranks: []int{8, 16}, Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	for i, mc := range cpu.Modules {
		md := dev.Modules[i]
		// The quantization noise is bit-exact on the device; its norm and
		// cosine are float64 sums in another order (Backend.FrobeniusNorm,
		// Cosine: within a few γ_n(float64), far below 1e-10 here).
		if math.Abs(md.NoiseNorm-mc.NoiseNorm) > 1e-10*mc.NoiseNorm || math.Abs(md.CosNoiseDelta-mc.CosNoiseDelta) > 1e-10 {
			t.Errorf("%s: noise %v / %v, cpu %v / %v", mc.Module, md.NoiseNorm, md.CosNoiseDelta, mc.NoiseNorm, mc.CosNoiseDelta)
		}
		if math.Abs(md.DeltaNorm-mc.DeltaNorm) > 1e-10*mc.DeltaNorm {
			t.Errorf("%s: ‖Δ‖ %v, cpu %v", mc.Module, md.DeltaNorm, mc.DeltaNorm)
		}
		for j := range mc.Energy {
			if math.Abs(md.Energy[j]-mc.Energy[j]) > 1e-3 {
				t.Errorf("%s: energy %v, cpu %v", mc.Module, md.Energy, mc.Energy)
			}
		}
	}
	// Merging the extracted adapter back on the device: W + s·B·A with the
	// device's float32 product, BF16 like the CPU's but for rare one-ulp
	// differences at rounding ties (Backend.Merge).
	if _, err := ops.LoraMerge(ctx, m, ops.LoraMergeOptions{Base: "org/base", Adapter: "org/lora-cpu-a", Name: "org/merged-cpu"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.LoraMerge(ctx, m, ops.LoraMergeOptions{Base: "org/base", Adapter: "org/lora-cpu-a", Name: "org/merged-dev", Backend: be}); err != nil {
		t.Fatal(err)
	}
	mc, md := readTensors(t, export(t, s, "org/merged-cpu")), readTensors(t, export(t, s, "org/merged-dev"))
	diff, total := 0, 0
	for name, tc := range mc {
		td := md[name]
		if tc.DType != safetensors.BF16 || len(td.Data) != len(tc.Data) {
			if string(td.Data) != string(tc.Data) {
				t.Errorf("%s differs", name)
			}
			continue
		}
		for i := 0; i < len(tc.Data); i += 2 {
			total++
			c, d := binary.LittleEndian.Uint16(tc.Data[i:]), binary.LittleEndian.Uint16(td.Data[i:])
			if c == d {
				continue
			}
			diff++
			if cd, dd := int(c&0x7FFF), int(d&0x7FFF); c&0x8000 != d&0x8000 || cd-dd > 1 || dd-cd > 1 {
				t.Errorf("%s element %d: device %#04x, cpu %#04x", name, i/2, d, c)
			}
		}
	}
	t.Logf("merge on the device: %d of %d BF16 values one ulp from the CPU's", diff, total)
	if diff*1000 > total {
		t.Errorf("merge: %d of %d values differ", diff, total)
	}
}
