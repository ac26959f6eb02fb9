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

func TestCholInverse(t *testing.T) {
	const l, d = 40, 100
	r := rand.New(rand.NewPCG(1, 2))
	gramOf := func(x []float64, rows int) []float64 {
		g := make([]float64, rows*rows)
		for i := range rows {
			for j := range rows {
				for k := range d {
					g[i*rows+j] += x[i*d+k] * x[j*d+k]
				}
			}
		}
		return g
	}
	check := func(name string, x []float64, wantShift bool) {
		g := gramOf(x, l)
		linv, shifted, err := cholInverse(g, l)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if shifted != wantShift {
			t.Errorf("%s: shifted %v", name, shifted)
		}
		// Q = L⁻¹·X; its rows are orthonormal for a well-conditioned X.
		q := make([]float64, l*d)
		for i := range l {
			for j := 0; j <= i; j++ {
				for k := range d {
					q[i*d+k] += float64(linv[i*l+j]) * x[j*d+k]
				}
			}
			for j := i + 1; j < l; j++ {
				if linv[i*l+j] != 0 {
					t.Fatalf("%s: L⁻¹ is not lower triangular", name)
				}
			}
		}
		if dev := identityDeviation(gramOf(q, l), l); !wantShift && dev > 1e-5 {
			t.Errorf("%s: |QQᵀ − I| = %v", name, dev)
		}
	}
	x := make([]float64, l*d)
	for i := range x {
		x[i] = r.NormFloat64()
	}
	check("random", x, false)
	// Rank 3: dependent rows need a shift.
	for i := 3; i < l; i++ {
		for k := range d {
			x[i*d+k] = x[(i%3)*d+k] * float64(i)
		}
	}
	check("rank 3", x, true)
	linv, shifted, err := cholInverse(make([]float64, l*l), l)
	if err != nil || !shifted || linv[0] != 1 || linv[l+1] != 1 {
		t.Errorf("zero Gram: %v %v", shifted, err)
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
