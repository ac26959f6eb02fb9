package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/internal/modelgen"
)

func TestRoundTripFamily(t *testing.T) {
	s := TestStore(t, smallChunks)
	base, reshard, tuned, copyDir := family(t, testCfg())
	for ref, dir := range map[string]string{"org/base": base, "org/reshard": reshard, "org/tuned": tuned, "org/copy": copyDir} {
		importDir(t, s, dir, ref)
		assertExportIdentical(t, s, ref, dir)
	}
}

func TestRoundTripGoldenAndEveryDType(t *testing.T) {
	s := TestStore(t, smallChunks)
	golden := filepath.Join("..", "..", "shared", "testdata", "golden", "st_sample.safetensors")
	if _, err := os.Stat(golden); err != nil {
		t.Fatalf("golden file: %v", err)
	}
	res := importDir(t, s, golden, "golden/sample")
	if res.Tensors != 4 || res.Files != 1 {
		t.Fatalf("golden import: %d files %d tensors", res.Files, res.Tensors)
	}
	dest := filepath.Join(t.TempDir(), "out")
	if _, err := s.Export(ctx, "golden/sample", dest, nil); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(golden)
	got, err := os.ReadFile(filepath.Join(dest, "st_sample.safetensors"))
	if err != nil || string(got) != string(want) {
		t.Fatalf("golden export differs (%v)", err)
	}

	dir := filepath.Join(t.TempDir(), "every")
	if err := modelgen.WriteEveryDType(dir); err != nil {
		t.Fatal(err)
	}
	importDir(t, s, dir, "test/every-dtype")
	assertExportIdentical(t, s, "test/every-dtype", dir)
	sh, err := s.Show("test/every-dtype")
	if err != nil {
		t.Fatal(err)
	}
	sawEmpty, sawBlob := false, false
	for _, f := range sh.Files {
		if f.Size == 0 {
			sawEmpty = true
		}
		if f.Format == FormatBlob && f.Size == 5<<20 {
			sawBlob = true
		}
	}
	if !sawEmpty || !sawBlob {
		t.Fatalf("every-dtype model lacks the empty file or the 5 MiB blob: %+v", sh.Files)
	}
}

// TestDedupAndStats runs the demo-sized family (46 MB per model) with the default
// chunk size, as `heft demo` does.
func TestDedupAndStats(t *testing.T) {
	s := TestStore(t, Options{})
	base, reshard, tuned, copyDir := family(t, modelgen.Demo())
	rb := importDir(t, s, base, "org/base")
	rc := importDir(t, s, copyDir, "org/copy")
	rr := importDir(t, s, reshard, "org/reshard")
	rt := importDir(t, s, tuned, "org/tuned")

	if limit := rc.LogicalBytes / 1000; rc.Stats.PackBytes >= limit {
		t.Errorf("identical copy added %d bytes, want < 0.1%% of %d", rc.Stats.PackBytes, rc.LogicalBytes)
	}
	if limit := rr.LogicalBytes / 100; rr.Stats.PackBytes >= limit {
		t.Errorf("reshard added %d bytes, want < 1%% of %d", rr.Stats.PackBytes, rr.LogicalBytes)
	}
	// The fine-tune's weights changed, so it stores real data even though it is
	// delta-coded against the base (about half the base's size for this generator).
	if rt.Stats.PackBytes < rb.Stats.PackBytes/4 {
		t.Errorf("fine-tune added only %d bytes (base %d): its weights changed", rt.Stats.PackBytes, rb.Stats.PackBytes)
	}

	// The frozen embedding is one tensor object shared by base and tuned.
	sh, err := s.Show("org/tuned")
	if err != nil {
		t.Fatal(err)
	}
	foundEmbed := false
	for _, tv := range sh.Tensors {
		if tv.Name == "model.embed_tokens.weight" {
			foundEmbed = true
			if !strings.Contains(strings.Join(tv.SharedBy, ","), "org/base:main") {
				t.Errorf("embedding not shared with base: %v", tv.SharedBy)
			}
		}
		if strings.HasSuffix(tv.Name, "q_proj.weight") && len(tv.SharedBy) != 0 {
			for _, r := range tv.SharedBy {
				if r == "org/base:main" {
					t.Errorf("tuned %s shared with base", tv.Name)
				}
			}
		}
	}
	if !foundEmbed {
		t.Fatal("no embedding tensor in show output")
	}
	d, err := s.Diff("org/base", "org/tuned")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Changed) == 0 || len(d.Added)+len(d.Removed) != 0 {
		t.Fatalf("diff base→tuned: %d changed %d added %d removed", len(d.Changed), len(d.Added), len(d.Removed))
	}
	for _, ch := range d.Changed {
		if ch.RelL2 <= 0 || ch.RelL2 > 0.5 {
			t.Errorf("diff %s: relative L2 %g", ch.Name, ch.RelL2)
		}
		if ch.SharedBytes != 0 { // every chunk of a changed tensor is new
			t.Errorf("diff %s: changed tensor shares %d bytes with the base", ch.Name, ch.SharedBytes)
		}
	}

	st, err := s.Stats(nil)
	if err != nil {
		t.Fatal(err)
	}
	wantLogical := rb.LogicalBytes + rc.LogicalBytes + rr.LogicalBytes + rt.LogicalBytes
	if st.LogicalBytes != wantLogical {
		t.Errorf("logical_bytes %d, want %d", st.LogicalBytes, wantLogical)
	}
	if onDisk := packBytesOnDisk(t, s); st.PhysicalBytes != onDisk {
		t.Errorf("physical_bytes %d, pack files on disk %d", st.PhysicalBytes, onDisk)
	}
	sumNew := rb.Stats.PackBytes + rc.Stats.PackBytes + rr.Stats.PackBytes + rt.Stats.PackBytes
	if st.PhysicalBytes != sumNew {
		t.Errorf("physical_bytes %d, imports reported %d", st.PhysicalBytes, sumNew)
	}
	if !(st.AfterFileDedup <= st.LogicalBytes && st.AfterTensorDedup <= st.AfterFileDedup && st.AfterChunkDedup <= st.AfterTensorDedup) {
		t.Errorf("stages not monotone: %+v", st)
	}
}

func TestReimportIsNoOpAndHistory(t *testing.T) {
	s := TestStore(t, smallChunks)
	base, _, tuned, _ := family(t, testCfg())
	first := importDir(t, s, base, "org/m")
	again := importDir(t, s, base, "org/m")
	if again.Stats.NewChunks > 1 { // only the new commit object
		t.Errorf("re-import stored %d new objects", again.Stats.NewChunks)
	}
	third := importDir(t, s, tuned, "org/m")
	log, err := s.Log("org/m", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 3 || log[0].ID != third.Commit || log[2].ID != first.Commit {
		t.Fatalf("log: %d entries", len(log))
	}
	if got, err := s.Resolve(first.Commit.String()[:10]); err != nil || got != first.Commit {
		t.Fatalf("resolve prefix: %v %v", got, err)
	}
	// Tag and rm with compare-and-swap semantics.
	if err := s.UpdateRef(mustRef(t, "org/m:v1"), ID{}, first.Commit, "tag"); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRef(mustRef(t, "org/m:v1"), ID{}, third.Commit, "tag"); !errorsIs(err, ErrConflict) {
		t.Fatalf("second tag: %v, want conflict", err)
	}
	assertExportIdentical(t, s, "org/m:v1", base)
	if err := s.UpdateRef(mustRef(t, "org/m:v1"), first.Commit, ID{}, "rm"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve("org/m:v1"); !errorsIs(err, ErrNotFound) {
		t.Fatalf("resolve deleted ref: %v", err)
	}
	reflog, _ := s.Reflog(nil)
	if len(reflog) != 5 {
		t.Fatalf("reflog has %d entries, want 5", len(reflog))
	}
}

func TestRefNames(t *testing.T) {
	good := []string{"m", "org/model", "Qwen/Qwen3-32B:main", "org/m:refs/pr/1", "a.b_c-d:v1.0"}
	bad := []string{"", "/m", "org/", "a/b/c", "../x", "org/..", "m:", "m:..", "m:a//b", "m:/x", "org/m\x00", "a--b", "-x", "m:x.lock"}
	for _, g := range good {
		if _, err := ParseRef(g); err != nil {
			t.Errorf("ParseRef(%q): %v", g, err)
		}
	}
	for _, b := range bad {
		if _, err := ParseRef(b); err == nil {
			t.Errorf("ParseRef(%q) accepted", b)
		}
	}
}

func TestShowNamesQuantization(t *testing.T) {
	s := TestStore(t, smallChunks)
	root := t.TempDir()
	base, fp8 := filepath.Join(root, "base"), filepath.Join(root, "fp8")
	if err := modelgen.WriteBase(base, testCfg(), modelgen.Options{Seed: 1, Shards: 1}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.WriteFP8Block(base, fp8); err != nil {
		t.Fatal(err)
	}
	importDir(t, s, base, "org/base")
	importDir(t, s, fp8, "org/fp8")
	sh, err := s.Show("org/fp8")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sh.Quantization, "FP8 block 128x128") || sh.QuantError != "" {
		t.Fatalf("show fp8: quantization %q, error %q", sh.Quantization, sh.QuantError)
	}
	sh, err = s.Show("org/base")
	if err != nil || sh.Quantization != "" || sh.QuantError != "" {
		t.Fatalf("show base: %q %q %v", sh.Quantization, sh.QuantError, err)
	}
}
