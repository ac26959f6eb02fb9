package pjrtgpu

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
	"github.com/heft-dev/heft/ops/internal/linalg"
)

// These tests cover the plain-Go half of the package (every build).

func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCandidates(t *testing.T) {
	root := t.TempDir()
	dirPlugin := filepath.Join(root, "lib", "xla_cuda_plugin.so")
	filePlugin := filepath.Join(root, "other", "pjrt_c_api_cuda_plugin.so")
	wheel := filepath.Join(root, "site-packages", "jax_plugins", "xla_cuda13")
	touch(t, dirPlugin)
	touch(t, filePlugin)
	touch(t, filepath.Join(wheel, "xla_cuda_plugin.so"))
	env := map[string]string{"PJRT_PLUGIN_LIBRARY_PATH": filepath.Dir(dirPlugin) + ":" + filePlugin + ":" + filepath.Join(root, "nothing")}
	python := func(code string) (string, error) {
		if strings.Contains(code, "xla_cuda13") {
			return wheel, nil
		}
		return "", errors.New("python3: ModuleNotFoundError: No module named 'jax_plugins.xla_cuda12'")
	}
	o := Options{Env: func(k string) string { return env[k] }, Python: python}
	got := Candidates(o)
	want := []struct {
		path, source string
		exists       bool
	}{
		{dirPlugin, SourceEnvPath, true},
		{filePlugin, SourceEnvPath, true},
		{filepath.Join(root, "nothing"), SourceEnvPath, false},
		{filepath.Join(wheel, "xla_cuda_plugin.so"), SourceJax + "xla_cuda13", true},
		{"jax_plugins/xla_cuda12/xla_cuda_plugin.so", SourceJax + "xla_cuda12", false},
	}
	if len(got) != len(want) {
		t.Fatalf("candidates %+v", got)
	}
	for i, w := range want {
		if got[i].Path != w.path || got[i].Source != w.source || got[i].Exists != w.exists {
			t.Errorf("candidate %d: %+v, want %+v", i, got[i], w)
		}
		if !w.exists && got[i].Error == "" {
			t.Errorf("candidate %d: no reason given", i)
		}
	}
	// An explicit plugin is the only candidate.
	o.Plugin = filePlugin
	if got := Candidates(o); len(got) != 1 || got[0].Path != filePlugin || got[0].Source != SourceExplicit || !got[0].Exists {
		t.Errorf("explicit: %+v", got)
	}
}

func TestFindCUDADataDir(t *testing.T) {
	root := t.TempDir()
	tk := filepath.Join(root, "cuda")
	touch(t, filepath.Join(tk, ptxasRel))
	touch(t, filepath.Join(tk, libdeviceRel))
	env := map[string]string{"CUDA_HOME": tk}
	o := Options{Env: func(k string) string { return env[k] }}
	if dir, from, need := findCUDADataDir(o, ""); dir != tk || from != "$CUDA_HOME" || !need {
		t.Errorf("CUDA_HOME: %q %q %v", dir, from, need)
	}
	env["XLA_FLAGS"] = "--xla_gpu_autotune_level=0 --xla_gpu_cuda_data_dir=/opt/x"
	if dir, from, need := findCUDADataDir(o, ""); dir != "/opt/x" || from != "XLA_FLAGS" || need {
		t.Errorf("XLA_FLAGS: %q %q %v", dir, from, need)
	}
	// The nvidia wheel next to the jax plugin.
	site := filepath.Join(root, "site-packages")
	wheel := filepath.Join(site, "nvidia", "cu13")
	touch(t, filepath.Join(wheel, ptxasRel))
	touch(t, filepath.Join(wheel, libdeviceRel))
	o.Env = func(string) string { return "" }
	if dir, _, _ := findCUDADataDir(o, filepath.Join(site, "jax_plugins", "xla_cuda13", "xla_cuda_plugin.so")); dir != wheel && !isCUDADataDir("/usr/local/cuda") {
		t.Errorf("wheel: %q", dir)
	}
	if got := withCUDADataDir("--a", "/d"); got != "--a --xla_gpu_cuda_data_dir=/d" {
		t.Errorf("withCUDADataDir: %q", got)
	}
}

// TestFinishU: columns permuted, signs fixed, negligible components
// zeroed, deterministically.
func TestFinishU(t *testing.T) {
	const m, k, n = 1100, 4, 3
	r := rand.New(rand.NewPCG(3, 4))
	udev := make([]float32, m*k)
	for i := range udev {
		udev[i] = float32(r.NormFloat64()) / 33
	}
	// Column 2 has a clear negative extreme; column 3 is tiny noise.
	udev[700*k+2] = -5
	for i := range m {
		udev[i*k+3] *= 1e-3
	}
	w := []float32{1, 2, 3, 9, 9, 9, 0.5, 0, 0, 1e-6, 0, 0}
	s, vt, perm := finishSVD(w, k, n)
	if perm[0] != 1 || perm[1] != 0 || perm[2] != 2 || perm[3] != 3 {
		t.Fatalf("perm %v", perm)
	}
	d := linalg.SVD{U: linalg.NewMatrix(m, k), S: s, Vt: vt}
	finishU(&d, udev, perm)
	for i := range m {
		if d.U.Data[i*k] != udev[i*k+1] || d.U.Data[i*k+1] != udev[i*k] {
			t.Fatalf("row %d: columns not permuted", i)
		}
		if d.U.Data[i*k+2] != -udev[i*k+2] || d.U.Data[i*k+3] != 0 {
			t.Fatalf("row %d: %v", i, d.U.Data[i*k:(i+1)*k])
		}
	}
	if d.Vt.At(2, 0) != -1 || d.S[3] != 0 || d.Vt.At(3, 0) != 0 {
		t.Errorf("Vt %v, S %v", d.Vt.Data, d.S)
	}
}

func TestSelfCheck(t *testing.T) {
	const k = 3
	utu := []float64{1, 0, 0, 0, 1, 0, 0, 0, 1}
	wwt := []float64{4, 0, 0, 0, 1, 0, 0, 0, 1e-14}
	if msg := selfCheck(utu, wwt, k); msg != "" {
		t.Errorf("orthonormal: %s", msg)
	}
	utu[2], utu[6] = 0.5, 0.5 // involves the negligible component only
	if msg := selfCheck(utu, wwt, k); msg != "" {
		t.Errorf("negligible component: %s", msg)
	}
	wwt[1], wwt[3] = 0.01, 0.01 // rows 0 and 1 of Vt at cosine 0.005
	if msg := selfCheck(utu, wwt, k); msg == "" {
		t.Error("non-orthogonal Vt passed")
	}
	wwt[1], wwt[3] = 0, math.NaN()
	if msg := selfCheck(utu, wwt, k); msg == "" {
		t.Error("NaN passed")
	}
}

// TestFP8BlockCells: the host half of the device quantizer gives the CPU
// kernel's scales, from block magnitude maxima computed here.
func TestFP8BlockCells(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const out, in, bh, bw = 200, 300, 128, 128
	for _, c := range []struct {
		wd, sd safetensors.DType
		format string
		sigma  float64
	}{
		{safetensors.BF16, "", "", 0.02},
		{safetensors.BF16, "", quant.OutputFP8, 0.02},
		{safetensors.F16, "", "", 2e-4}, // subnormal F16 scales
		{safetensors.F32, safetensors.F32, "", 1e-38},
		{safetensors.F32, safetensors.BF16, "", 3},
	} {
		vals := make([]float32, out*in)
		for i := range vals {
			vals[i] = float32(r.NormFloat64() * c.sigma)
		}
		for i := range 128 { // an all-zero block
			clear(vals[i*in : i*in+128])
		}
		data := make([]byte, out*in*c.wd.BitSize()/8)
		mags := make([]uint32, 2*3)
		for i, v := range vals {
			var bits, mag uint32
			switch c.wd {
			case safetensors.BF16:
				bits = uint32(numeric.F32ToBF16(v))
				binary.LittleEndian.PutUint16(data[2*i:], uint16(bits))
				mag = bits & 0x7FFF
			case safetensors.F16:
				bits = uint32(numeric.F32ToF16(v))
				binary.LittleEndian.PutUint16(data[2*i:], uint16(bits))
				mag = bits & 0x7FFF
			default:
				bits = math.Float32bits(v)
				binary.LittleEndian.PutUint32(data[4*i:], bits)
				mag = bits & 0x7FFFFFFF
			}
			cell := (i/in/bh)*3 + (i%in)/bw
			mags[cell] = max(mags[cell], mag)
		}
		qs := quant.QuantizeScheme{Name: quant.QuantFP8Block, Format: c.format, ScaleDType: c.sd}
		cells, ok := fp8BlockCells(qs, c.wd, mags)
		if !ok {
			t.Fatalf("%s/%s: refused", c.wd, c.sd)
		}
		want, err := quant.QuantizeWeight(qs, safetensors.TensorInfo{Name: "a.weight", DType: c.wd, Shape: []uint64{out, in}, End: uint64(len(data))}, data)
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeScales(cells.scales, qs.ScaleDTypeFor(c.wd)); !bytes.Equal(got, want[1].Data) {
			t.Errorf("%s weight, %s scales, format %q: scales differ", c.wd, qs.ScaleDTypeFor(c.wd), c.format)
		}
		for i, s := range cells.scales {
			if cells.rcp[i] != 1/float64(s) {
				t.Fatalf("rcp %d", i)
			}
		}
	}
	// A non-finite cell is refused (the CPU gives the error).
	if _, ok := fp8BlockCells(quant.QuantizeScheme{Name: quant.QuantFP8Block}, safetensors.BF16, []uint32{0x7F80}); ok {
		t.Error("Inf cell accepted")
	}
}
