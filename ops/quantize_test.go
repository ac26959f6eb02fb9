package ops_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/ops"
)

// TestQuantizeSchemes quantizes a BF16 model with every scheme and checks each
// exported output against quant.QuantizeWeight on the original weights, that
// Detect recognises the result, and that dequantizing it again works.
func TestQuantizeSchemes(t *testing.T) {
	s, m := testStore(t)
	bf16 := filepath.Join(t.TempDir(), "bf16")
	if err := modelgen.WriteBase(bf16, modelgen.Tiny(), modelgen.Options{}); err != nil {
		t.Fatal(err)
	}
	importDir(t, s, bf16, "org/base")
	src := readTensors(t, bf16)
	cases := []ops.QuantizeOptions{
		{Scheme: "fp8-block"},
		{Scheme: "fp8-block", Format: "fp8"},
		{Scheme: "int8"},
		{Scheme: "w4a16", GroupSize: 32},
		{Scheme: "w4a16", GroupSize: 32, Asymmetric: true},
	}
	for i, o := range cases {
		o.Source, o.SkipVLLMChecks = "org/base", true
		o.Name = "org/q" + string(rune('a'+i))
		res, err := ops.Quantize(ctx, m, o)
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		qs, _ := quant.ParseQuantizeScheme(o.Scheme, o.Format)
		if o.GroupSize != 0 {
			qs.GroupSize = o.GroupSize
		}
		qs.Asymmetric, qs.SkipVLLMChecks = o.Asymmetric, true
		dir := export(t, s, o.Name)
		got := readTensors(t, dir)
		plan, err := quant.PlanQuantize(infosOf(src), qs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(plan.Tensors) || res.Quantized != len(plan.Modules) {
			t.Fatalf("%s: %d tensors (plan %d), %d quantized (plan %d)", o.Name, len(got), len(plan.Tensors), res.Quantized, len(plan.Modules))
		}
		for _, mod := range plan.Modules {
			w := src[mod.Weight.Name]
			outs, err := quant.QuantizeWeight(plan.Scheme, safetensors.TensorInfo{Name: w.Name, DType: w.DType, Shape: w.Shape, End: uint64(len(w.Data))}, w.Data)
			if err != nil {
				t.Fatal(err)
			}
			for _, qt := range outs {
				g, ok := got[qt.Name]
				if !ok || g.DType != qt.DType || !bytes.Equal(g.Data, qt.Data) {
					t.Fatalf("%s: %s differs from QuantizeWeight", o.Name, qt.Name)
				}
			}
		}
		qm, err := quant.Detect(readFile(t, filepath.Join(dir, "config.json")), infosOf(got), nil)
		if err != nil || len(qm.Modules) != len(plan.Modules) {
			t.Fatalf("%s: Detect: %v", o.Name, err)
		}
		t.Logf("%s: %s", o.Name, res.Scheme)
		// The quantized model dequantizes.
		if _, err := ops.Dequant(ctx, m, ops.DequantOptions{Source: o.Name, Name: o.Name + "-bridge"}); err != nil {
			t.Fatalf("dequant %s: %v", o.Name, err)
		}
	}
	// A quantized model is refused.
	if _, err := ops.Quantize(ctx, m, ops.QuantizeOptions{Source: "org/qa", Name: "org/twice", Scheme: "int8", SkipVLLMChecks: true}); err == nil {
		t.Fatal("quantizing a quantized model succeeded")
	}
}

func infosOf(ts map[string]safetensors.Tensor) []safetensors.TensorInfo {
	var out []safetensors.TensorInfo
	for _, t := range ts {
		out = append(out, safetensors.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, End: uint64(len(t.Data))})
	}
	return out
}
