package ops_test

import (
	"path/filepath"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
)

// TestImportDetectsRecipes imports, into a store holding only the BF16 base, the
// FP8 model and the bridge that heft derived elsewhere: both are recognised as
// exact derivations and cost almost nothing, and both export byte-identically. A
// quantization heft's rule does not reproduce is stored as data.
func TestImportDetectsRecipes(t *testing.T) {
	// Elsewhere: derive the FP8 model and its bridge, and export them.
	s1, m1 := testStore(t)
	root := t.TempDir()
	baseDir := filepath.Join(root, "base")
	if err := modelgen.WriteBase(baseDir, modelgen.Tiny(), modelgen.Options{}); err != nil {
		t.Fatal(err)
	}
	importDir(t, s1, baseDir, "org/base")
	if _, err := ops.Quantize(ctx, m1, ops.QuantizeOptions{Source: "org/base", Name: "org/fp8", Scheme: "fp8-block", SkipVLLMChecks: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := ops.Dequant(ctx, m1, ops.DequantOptions{Source: "org/fp8", Name: "org/bridge"}); err != nil {
		t.Fatal(err)
	}
	fp8Dir, bridgeDir := export(t, s1, "org/fp8"), export(t, s1, "org/bridge")

	s2, _ := testStore(t)
	importDir(t, s2, baseDir, "org/base")
	for _, c := range []struct{ ref, dir, op string }{{"org/fp8", fp8Dir, "quantize"}, {"org/bridge", bridgeDir, "dequant"}} {
		before, _ := s2.Stats(nil)
		res, err := s2.Import(ctx, c.dir, store.ImportOptions{Ref: mustRef(t, c.ref)})
		if err != nil {
			t.Fatal(err)
		}
		after, _ := s2.Stats(nil)
		if res.RecipeTensors == 0 {
			t.Fatalf("%s: no recipes detected", c.ref)
		}
		t.Logf("%s: %d tensors as recipes over %s; %d of %d bytes added", c.ref, res.RecipeTensors, res.RecipeSource, after.PhysicalBytes-before.PhysicalBytes, res.LogicalBytes)
		if added := after.PhysicalBytes - before.PhysicalBytes; added*10 > res.LogicalBytes {
			t.Errorf("%s: %d bytes added for %d logical", c.ref, added, res.LogicalBytes)
		}
		assertSameTree(t, c.dir, export(t, s2, c.ref))
		log, _ := s2.Log(c.ref, 1)
		if log[0].Commit.Provenance.Params["derived_op"] != c.op {
			t.Errorf("%s: provenance %v", c.ref, log[0].Commit.Provenance.Params)
		}
	}
	// modelgen's FP8 writer follows compressed-tensors' torch path (BF16 quotient),
	// which heft's rule does not reproduce: stored as data, still byte-identical.
	torchDir := filepath.Join(root, "torch-fp8")
	if err := modelgen.WriteFP8BlockWith(baseDir, torchDir, modelgen.FP8BlockOptions{ScaleDType: safetensors.BF16}); err != nil {
		t.Fatal(err)
	}
	res, err := s2.Import(ctx, torchDir, store.ImportOptions{Ref: mustRef(t, "org/torch-fp8")})
	if err != nil {
		t.Fatal(err)
	}
	if res.RecipeTensors != 0 {
		t.Errorf("torch-path FP8: %d tensors taken as recipes", res.RecipeTensors)
	}
	assertSameTree(t, torchDir, export(t, s2, "org/torch-fp8"))
	// With the base deleted, the recipes keep their inputs.
	base, _ := s2.Ref(mustRef(t, "org/base"))
	if err := s2.UpdateRef(mustRef(t, "org/base"), base, store.ID{}, "rm"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.GC(ctx, store.GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	assertSameTree(t, bridgeDir, export(t, s2, "org/bridge"))
}

func assertSameTree(t *testing.T, a, b string) {
	t.Helper()
	ha, err := modelgen.TreeSHA256(a)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := modelgen.TreeSHA256(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(ha) != len(hb) {
		t.Fatalf("%d files vs %d", len(ha), len(hb))
	}
	for k, v := range ha {
		if hb[k] != v {
			t.Fatalf("%s differs", k)
		}
	}
}
