package quant_test

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
)

// readModel returns a model directory's config.json, its tensors, and a
// reader of any tensor's bytes by name.
func readModel(t *testing.T, dir string) ([]byte, []safetensors.TensorInfo, func(string) []byte) {
	t.Helper()
	cfg, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	var infos []safetensors.TensorInfo
	where := map[string]string{}
	for _, f := range files {
		fh, h, err := safetensors.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		fh.Close()
		for _, ti := range h.Tensors {
			infos = append(infos, ti)
			where[ti.Name] = f
		}
	}
	read := func(name string) []byte {
		fh, h, err := safetensors.Open(where[name])
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		ti, _ := h.Lookup(name)
		b, err := io.ReadAll(h.TensorData(fh, ti))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return cfg, infos, read
}

// End to end on heft's own FP8 block generator (compressed-tensors
// FP8_BLOCK with partial edge blocks): Detect recognises it, and every
// dequantized weight is within FP8's precision of the BF16 original.
func TestModelgenFP8Block(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, "base")
	if err := modelgen.WriteBase(base, modelgen.Tiny(), modelgen.Options{Seed: 5}); err != nil {
		t.Fatal(err)
	}
	_, _, readBase := readModel(t, base)
	for _, sd := range []safetensors.DType{safetensors.F32, safetensors.BF16} {
		dir := filepath.Join(root, string(sd))
		if err := modelgen.WriteFP8BlockWith(base, dir, modelgen.FP8BlockOptions{ScaleDType: sd}); err != nil {
			t.Fatal(err)
		}
		cfg, infos, read := readModel(t, dir)
		m, err := quant.Detect(cfg, infos, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := m.Describe(), "compressed-tensors FP8 block 128x128 (float-quantized), 14 of 15 Linear weights quantized"; got != want {
			t.Errorf("Describe() = %q, want %q", got, want)
		}
		for _, mod := range m.Modules {
			data := map[quant.Role][]byte{}
			for role, ti := range mod.Tensors {
				data[role] = read(ti.Name)
			}
			got, err := quant.DequantModule(mod, data)
			if err != nil {
				t.Fatal(err)
			}
			orig := readBase(mod.WeightName())
			var num, den float64
			for i := 0; i < len(orig); i += 2 {
				w := float64(numeric.BF16ToF32(uint16(orig[i]) | uint16(orig[i+1])<<8))
				d := float64(numeric.BF16ToF32(uint16(got[i]) | uint16(got[i+1])<<8))
				num += (w - d) * (w - d)
				den += w * w
			}
			// E4M3 keeps 3 mantissa bits: a relative error of at most 2^-4
			// per element, much less in L2.
			if rel := math.Sqrt(num / den); rel > 0.04 || math.IsNaN(rel) {
				t.Errorf("%s scales: %s: relative L2 error %.4f", sd, mod.Prefix, rel)
			}
		}
		if len(m.Dense) != 11 || !strings.HasPrefix(m.Dense[0], "lm_head") {
			t.Errorf("dense %v", m.Dense)
		}
	}
}
