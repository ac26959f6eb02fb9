package cli_test

import (
	"context"
	"io"
	"testing"

	"github.com/heft-dev/heft/cli"
)

// TestDemoFamily runs `heft demo` and holds the family to the project's storage
// targets: BF16 base ≤ 0.68 of its logical bytes, the fine-tune stored against its
// base ≤ 0.47, FP8 tensor data ≤ 0.85, the whole family ≤ 40 %.
func TestDemoFamily(t *testing.T) {
	res, err := cli.RunDemo(context.Background(), t.TempDir(), io.Discard, false)
	if err != nil {
		t.Fatal(err)
	}
	if !res.ByteIdentical || !res.VerifyOK {
		t.Fatalf("demo: byte-identical %v, verify %v", res.ByteIdentical, res.VerifyOK)
	}
	ratio := map[string]float64{}
	for _, m := range res.Models {
		ratio[m.Ref] = float64(m.NewBytes) / float64(m.LogicalBytes)
		t.Logf("%-20s %.4f", m.Ref, ratio[m.Ref])
	}
	check := func(what string, got, limit float64) {
		t.Helper()
		if got > limit {
			t.Errorf("%s: ratio %.4f, target ≤ %.2f", what, got, limit)
		}
	}
	check("BF16 base", ratio["demo/qwen3-base"], 0.68)
	check("fine-tune against base", ratio["demo/qwen3-tuned"], 0.47)
	f8 := res.Stats.DTypes["F8_E4M3"]
	if f8 == nil {
		t.Fatal("no F8_E4M3 tensors in the demo family")
	}
	t.Logf("F8_E4M3 tensor data: %.4f; family physical/logical %.4f", f8.Ratio, float64(res.Stats.PhysicalBytes)/float64(res.Stats.LogicalBytes))
	check("FP8 tensor data", f8.Ratio, 0.85)
	check("whole family", float64(res.Stats.PhysicalBytes)/float64(res.Stats.LogicalBytes), 0.40)
	// Derived models are recipes: under 1 % of their size.
	for _, ref := range []string{"demo/qwen3-fp8-heft", "demo/qwen3-bridge"} {
		check(ref+" (recipes)", ratio[ref], 0.01)
	}
	if ratio["demo/qwen3-copy"] > 0.001 || ratio["demo/qwen3-reshard"] > 0.01 {
		t.Errorf("copy %.5f, reshard %.5f: want < 0.1 %% and < 1 %%", ratio["demo/qwen3-copy"], ratio["demo/qwen3-reshard"])
	}
}
