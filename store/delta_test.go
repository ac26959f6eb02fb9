package store

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/internal/modelgen"
)

// TestDeltaAgainstBase: a fine-tune imported after its base is delta-coded against it
// automatically, costs less than without a base, exports identically, survives the
// deletion of its base and gc, and shows up as a delta in stats and show.
func TestDeltaAgainstBase(t *testing.T) {
	root := t.TempDir()
	base, tuned := filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := modelgen.WriteBase(base, testCfg(), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2, DeltaScale: 0.01}); err != nil {
		t.Fatal(err)
	}

	plain := TestStore(t, smallChunks)
	importDir(t, plain, base, "org/base")
	noDelta, err := plain.Import(ctx, tuned, ImportOptions{Ref: mustRef(t, "org/tuned"), NoDelta: true})
	if err != nil {
		t.Fatal(err)
	}
	if noDelta.Stats.DeltaChunks != 0 || noDelta.DeltaBase != "" {
		t.Fatalf("NoDelta import made deltas: %+v", noDelta.Stats)
	}

	s := TestStore(t, smallChunks)
	importDir(t, s, base, "org/base")
	res := importDir(t, s, tuned, "org/tuned")
	if res.DeltaBase != "org/base:main" || res.Stats.DeltaChunks == 0 {
		t.Fatalf("automatic base not used: base %q, %d delta chunks", res.DeltaBase, res.Stats.DeltaChunks)
	}
	if res.Stats.PackBytes*10 > noDelta.Stats.PackBytes*8 {
		t.Errorf("delta import stored %d bytes, plain %d: want at least 20%% less", res.Stats.PackBytes, noDelta.Stats.PackBytes)
	}
	t.Logf("tuned: %d bytes with delta, %d without (logical %d)", res.Stats.PackBytes, noDelta.Stats.PackBytes, res.LogicalBytes)
	assertExportIdentical(t, s, "org/tuned", tuned)

	c, _ := s.LoadCommit(res.Commit)
	if c.Provenance.Params["delta_base"] != "org/base:main" {
		t.Errorf("provenance does not record the delta base: %+v", c.Provenance)
	}
	sh, err := s.Show("org/tuned")
	if err != nil {
		t.Fatal(err)
	}
	deltas := 0
	for _, tv := range sh.Tensors {
		if strings.HasPrefix(tv.How, "delta") {
			deltas++
		}
	}
	if deltas == 0 {
		t.Error("show reports no delta tensors")
	}
	st, err := s.Stats(nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeltaChunks == 0 || st.AfterDelta >= st.AfterChunkDedup {
		t.Errorf("stats: %d delta chunks, after chunk dedup %d, after delta %d", st.DeltaChunks, st.AfterChunkDedup, st.AfterDelta)
	}

	// Delete the base: the tuned model keeps what its deltas need.
	if err := s.UpdateRef(mustRef(t, "org/base"), mustResolve(t, s, "org/base"), ID{}, "rm"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, s, "org/tuned", tuned)
	st2, err := s.Stats(nil)
	if err != nil {
		t.Fatal(err)
	}
	if onDisk := packBytesOnDisk(t, s); st2.AfterCompression > onDisk {
		t.Errorf("stats count %d stored bytes, packs hold %d", st2.AfterCompression, onDisk)
	}

	// A second fine-tune against the delta-stored one still decodes from one base.
	tuned2 := filepath.Join(root, "tuned2")
	if err := modelgen.FineTune(tuned, tuned2, modelgen.FineTuneOptions{Seed: 3, DeltaScale: 0.01}); err != nil {
		t.Fatal(err)
	}
	r2, err := s.Import(ctx, tuned2, ImportOptions{Ref: mustRef(t, "org/tuned2"), Base: "org/tuned"})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Stats.DeltaChunks == 0 {
		t.Error("second-level fine-tune made no deltas")
	}
	assertExportIdentical(t, s, "org/tuned2", tuned2)
}

// TestUnrelatedModelGetsNoBase: a model of the same architecture but unrelated
// weights matches by name and shape, fails the sample, and is stored plain.
func TestUnrelatedModelGetsNoBase(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	modelgen.WriteBase(a, testCfg(), modelgen.Options{Seed: 1, Shards: 1})
	modelgen.WriteBase(b, testCfg(), modelgen.Options{Seed: 99, Shards: 1})
	s := TestStore(t, smallChunks)
	importDir(t, s, a, "org/a")
	res := importDir(t, s, b, "org/b")
	if res.DeltaBase != "" || res.Stats.DeltaChunks != 0 {
		t.Fatalf("unrelated model delta-coded against %q (%d chunks)", res.DeltaBase, res.Stats.DeltaChunks)
	}
}
