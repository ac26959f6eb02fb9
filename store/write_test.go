package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/recipe"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
)

// ingestDir stores every file of dir through IngestFile (as the hub and pulls do)
// and commits them to ref.
func ingestDir(t *testing.T, s *Store, dir, ref string, parent ID) ID {
	t.Helper()
	var entries []ManifestEntry
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// A reader without ReadAt or Seek: IngestFile must work on a plain stream.
		res, err := s.IngestFile(ctx, filepath.ToSlash(rel), struct{ io_Reader }{f}, info.Size(), IngestOptions{})
		if err != nil {
			return err
		}
		entries = append(entries, ManifestEntry{Path: filepath.ToSlash(rel), File: res.ID})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Commit(ctx, CommitRequest{Ref: mustRef(t, ref), Parent: parent, Files: entries, Message: "ingest", Provenance: Provenance{Op: "upload"}})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type io_Reader interface{ Read([]byte) (int, error) }

func TestIngestStreamsMatchImport(t *testing.T) {
	s := TestStore(t, smallChunks)
	base, _, _, _ := family(t, testCfg())
	imported := importDir(t, s, base, "org/imported")
	streamed := ingestDir(t, s, base, "org/streamed", ID{})
	assertExportIdentical(t, s, "org/streamed", base)
	// Same content, stored the same way: the manifests are identical objects.
	ci, _ := s.LoadCommit(imported.Commit)
	cs, _ := s.LoadCommit(streamed)
	if ci.Manifest != cs.Manifest {
		t.Fatalf("streamed manifest %s differs from imported %s", cs.Manifest.Short(), ci.Manifest.Short())
	}
	// Every file is found by its sha256.
	want, _ := modelgen.TreeSHA256(base)
	for rel, sha := range want {
		id, f, err := s.FileBySHA256(sha)
		if err != nil {
			t.Fatalf("%s: FileBySHA256: %v", rel, err)
		}
		if f.SHA256 != sha || id.IsZero() {
			t.Fatalf("%s: found %s", rel, f.SHA256)
		}
	}
	if _, _, err := s.FileBySHA256(strings.Repeat("ab", 32)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown sha256: %v", err)
	}
}

func TestIngestRejectsBadStreams(t *testing.T) {
	skipIfShared(t, "gc of a shared store keeps every pack younger than ReceivedGrace")
	s := TestStore(t, smallChunks)
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, []safetensors.Tensor{{TensorSpec: safetensors.TensorSpec{Name: "w", DType: safetensors.F32, Shape: []uint64{4}}, Data: make([]byte, 16)}}, nil); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	sum := sha256.Sum256(good)
	before := physical(t, s)
	cases := []struct {
		name, path string
		data       []byte
		size       int64
		sha        string
		want       string
	}{
		{"short", "m.safetensors", good[:len(good)-3], int64(len(good)), "", "shorter"},
		{"long", "m.safetensors", append(slices.Clone(good), 1, 2), int64(len(good)), "", "more than the declared"},
		{"blob short", "a.bin", []byte("abc"), 10, "", "read 3 of 10"},
		{"sha mismatch", "m.safetensors", good, int64(len(good)), strings.Repeat("00", 32), "expected " + strings.Repeat("00", 32)},
		{"bad sha", "m.safetensors", good, int64(len(good)), "xyz", "not 64 lowercase hex"},
		{"bad header", "m.safetensors", append([]byte{200, 0, 0, 0, 0, 0, 0, 0}, good[8:]...), int64(len(good)), "", "m.safetensors"},
		{"traversal", "../m.safetensors", good, int64(len(good)), "", "invalid path"},
	}
	for _, c := range cases {
		_, err := s.IngestFile(ctx, c.path, bytes.NewReader(c.data), c.size, IngestOptions{ExpectSHA256: c.sha})
		if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrInput mentioning %q", c.name, err, c.want)
		}
	}
	if refs, _ := s.Refs(); len(refs) != 0 {
		t.Fatalf("refs appeared: %v", refs)
	}
	// Rejected streams may leave unreferenced packs (for gc), never references.
	res, err := s.IngestFile(ctx, "m.safetensors", bytes.NewReader(good), int64(len(good)), IngestOptions{ExpectSHA256: hex.EncodeToString(sum[:])})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tensors != 1 || res.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("good ingest: %+v", res)
	}
	if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	if after := physical(t, s); after != before {
		t.Fatalf("gc left %d bytes of unreferenced uploads (before %d)", after, before)
	}
}

func physical(t *testing.T, s *Store) int64 {
	t.Helper()
	n, err := s.physicalBytes()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCommitCompareAndSwap(t *testing.T) {
	s := TestStore(t, smallChunks)
	f, err := s.IngestFile(ctx, "README.md", strings.NewReader("hello"), 5, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, "org/m")
	files := []ManifestEntry{{Path: "README.md", File: f.ID}}
	first, err := s.Commit(ctx, CommitRequest{Ref: ref, Files: files, Provenance: Provenance{Op: "upload"}})
	if err != nil {
		t.Fatal(err)
	}
	// A second writer that still believes the ref is new loses.
	if _, err := s.Commit(ctx, CommitRequest{Ref: ref, Files: files, Provenance: Provenance{Op: "upload"}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale commit: %v", err)
	}
	second, err := s.Commit(ctx, CommitRequest{Ref: ref, Parent: first, Files: nil, Message: "delete all", Provenance: Provenance{Op: "upload"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Ref(ref); got != second {
		t.Fatalf("ref at %s, want %s", got.Short(), second.Short())
	}
	log, err := s.Log("org/m", 0)
	if err != nil || len(log) != 2 {
		t.Fatalf("log: %v %v", log, err)
	}
	for _, bad := range []CommitRequest{
		{Ref: ref, Parent: second, Files: []ManifestEntry{{Path: "x", File: Sum([]byte("nope"))}}},
		{Ref: ref, Parent: second, Files: []ManifestEntry{{Path: "a", File: f.ID}, {Path: "a", File: f.ID}}},
		{Ref: ref, Parent: second, Files: []ManifestEntry{{Path: "a", File: f.ID}, {Path: "a/b", File: f.ID}}},
		{Ref: ref, Parent: second, Files: []ManifestEntry{{Path: "a", File: f.ID, Size: 99}}},
	} {
		if _, err := s.Commit(ctx, bad); err == nil {
			t.Fatalf("commit %+v succeeded", bad.Files)
		}
	}
	if got, _ := s.Ref(ref); got != second {
		t.Fatal("a refused commit moved the ref")
	}
}

// TestWriteSafetensorsRecipes builds a BF16 bridge of an FP8 block model from
// recipes, and checks the file is what the reference writer gives for the
// dequantized tensors, that it costs almost nothing, and that gc, verify and
// reads all follow the recipes.
func TestWriteSafetensorsRecipes(t *testing.T) {
	s := TestStore(t, smallChunks)
	root := t.TempDir()
	bf16 := filepath.Join(root, "bf16")
	fp8 := filepath.Join(root, "fp8")
	if err := modelgen.WriteBase(bf16, testCfg(), modelgen.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.WriteFP8Block(bf16, fp8); err != nil {
		t.Fatal(err)
	}
	importDir(t, s, fp8, "org/fp8")
	commit, _ := s.Ref(mustRef(t, "org/fp8"))
	files, err := s.CommitFiles(commit)
	if err != nil {
		t.Fatal(err)
	}
	var st CommitFile
	var config []byte
	for _, f := range files {
		if strings.HasSuffix(f.Path, ".safetensors") {
			st = f
		}
		if f.Path == "config.json" {
			r, _ := s.OpenFile(f.ID)
			config = make([]byte, r.Size())
			r.ReadAt(config, 0)
			r.Close()
		}
	}
	// Describe the stored tensors as a safetensors header for Detect.
	var infos []safetensors.TensorInfo
	ids := map[string]ID{}
	for _, ft := range st.File.Tensor {
		tt, _ := s.LoadTensor(ft.Tensor)
		infos = append(infos, safetensors.TensorInfo{Name: ft.Name, DType: safetensors.DType(tt.DType), Shape: tt.Shape, End: tt.Size})
		ids[ft.Name] = ft.Tensor
	}
	model, err := quant.Detect(config, infos, nil)
	if err != nil || len(model.Modules) == 0 {
		t.Fatalf("detect: %v (%d modules)", err, len(model.Modules))
	}
	var srcs []TensorSource
	var want []safetensors.Tensor
	for _, name := range model.Dense {
		tt, _ := s.LoadTensor(ids[name])
		srcs = append(srcs, TensorSource{Name: name, DType: tt.DType, Shape: tt.Shape, Tensor: ids[name]})
		data, err := s.TensorBytes(ids[name])
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, safetensors.Tensor{TensorSpec: safetensors.TensorSpec{Name: name, DType: safetensors.DType(tt.DType), Shape: tt.Shape}, Data: data})
	}
	for _, mod := range model.Modules {
		roles := []quant.Role{quant.RoleCodes, quant.RoleScale}
		params, err := recipe.DequantParams(mod, roles, safetensors.BF16)
		if err != nil {
			t.Fatal(err)
		}
		inputs := []ID{ids[mod.Tensors[quant.RoleCodes].Name], ids[mod.Tensors[quant.RoleScale].Name]}
		shape := []uint64{uint64(mod.Out), uint64(mod.In)}
		srcs = append(srcs, TensorSource{Name: mod.WeightName(), DType: "BF16", Shape: shape, Recipe: &Recipe{Op: recipe.OpDequant, Params: params, Inputs: inputs}})
		data := map[quant.Role][]byte{}
		for _, r := range roles {
			data[r], _ = s.TensorBytes(ids[mod.Tensors[r].Name])
		}
		dense, err := quant.Dequantize(mod, data, safetensors.BF16)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, safetensors.Tensor{TensorSpec: safetensors.TensorSpec{Name: mod.WeightName(), DType: safetensors.BF16, Shape: shape}, Data: dense})
	}
	meta := map[string]string{"format": "pt"}
	before := physical(t, s)
	res, err := s.WriteSafetensors(ctx, "model.safetensors", meta, srcs, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	added := physical(t, s) - before
	var ref bytes.Buffer
	if err := safetensors.Write(&ref, want, meta); err != nil {
		t.Fatal(err)
	}
	refSum := sha256.Sum256(ref.Bytes())
	if res.SHA256 != hex.EncodeToString(refSum[:]) || res.Size != int64(ref.Len()) {
		t.Fatalf("written file sha256 %s size %d, reference writer gives %x size %d", res.SHA256, res.Size, refSum, ref.Len())
	}
	// A recipe costs a few hundred bytes, whatever the tensor's size (the header
	// chunk and the file object come on top).
	if perRecipe := (added - 4096) / int64(len(model.Modules)); perRecipe > 600 {
		t.Fatalf("the recipe file added %d bytes for %d recipes (%d each, want ≤ 600)", added, len(model.Modules), perRecipe)
	}
	t.Logf("recipe file: %d bytes added for a %d-byte file with %d recipe tensors", added, res.Size, len(model.Modules))
	bridge, err := s.Commit(ctx, CommitRequest{Ref: mustRef(t, "org/bridge"), Files: []ManifestEntry{{Path: "model.safetensors", File: res.ID}}, Provenance: Provenance{Op: "dequant", Inputs: []ID{commit}}})
	if err != nil {
		t.Fatal(err)
	}
	// Export and ranged reads evaluate the recipes.
	dest := filepath.Join(t.TempDir(), "bridge")
	if _, err := s.Export(ctx, "org/bridge", dest, nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dest, "model.safetensors"))
	if !bytes.Equal(got, ref.Bytes()) {
		t.Fatal("exported bridge differs from the reference file")
	}
	r, err := s.OpenFile(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 1000)
	off := int64(len(got) - 1500)
	if _, err := r.ReadAt(part, off); err != nil || !bytes.Equal(part, got[off:off+1000]) {
		t.Fatalf("ranged read of a recipe tensor: %v", err)
	}
	r.Close()
	sh, err := s.Show("org/bridge")
	if err != nil {
		t.Fatal(err)
	}
	recipes := 0
	for _, tv := range sh.Tensors {
		if tv.How == "recipe (dequant)" {
			recipes++
		}
	}
	if recipes != len(model.Modules) {
		t.Fatalf("show lists %d recipe tensors, want %d", recipes, len(model.Modules))
	}
	stats, err := s.Stats(nil)
	if err != nil {
		t.Fatal(err)
	}
	if stats.RecipeTensors != len(model.Modules) || stats.AfterRecipes >= stats.AfterTensorDedup {
		t.Fatalf("stats: %d recipe tensors, after recipes %d, after tensor dedup %d", stats.RecipeTensors, stats.AfterRecipes, stats.AfterTensorDedup)
	}
	// Deleting the FP8 model keeps what the recipes need.
	if err := s.UpdateRef(mustRef(t, "org/fp8"), commit, ID{}, "rm"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	dest2 := filepath.Join(t.TempDir(), "bridge2")
	if _, err := s.Export(ctx, "org/bridge", dest2, nil); err != nil {
		t.Fatalf("export after the input model was deleted: %v", err)
	}
	vr, err := s.Verify(ctx, VerifyOptions{ReadData: true})
	if err != nil || !vr.OK {
		t.Fatalf("verify: %v %+v", err, vr)
	}
	_ = bridge
}

// TestRecipeMismatchIsIntegrityError stores a recipe whose output hash is wrong and
// checks that reads and verify report it instead of serving the bytes.
func TestRecipeMismatchIsIntegrityError(t *testing.T) {
	s := TestStore(t, smallChunks)
	s.SkipCleanupCheck()
	codes := []byte{0x38, 0x40, 0xB8, 0x7E}
	scale := []byte{0x80, 0x3f} // BF16 1.0
	var inIDs []ID
	for i, d := range [][]byte{codes, scale} {
		dt, shape := "F8_E4M3", []uint64{2, 2}
		if i == 1 {
			dt, shape = "BF16", []uint64{1, 1}
		}
		res, err := s.WriteSafetensors(ctx, "in.safetensors", nil, []TensorSource{{Name: "t", DType: dt, Shape: shape, Data: func(dst []byte) ([]byte, error) { return append(dst[:0], d...), nil }}}, WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f, _ := s.LoadFile(res.ID)
		inIDs = append(inIDs, f.Tensor[0].Tensor)
	}
	mod := quant.Module{Scheme: quant.Scheme{Format: quant.FormatFP8, Type: quant.TypeFloat, Bits: 8, CodeDType: safetensors.F8E4M3, Strategy: quant.StrategyBlock, BlockSize: [2]int{2, 2}, Symmetric: true}, Out: 2, In: 2}
	params, err := recipe.DequantParams(mod, []quant.Role{quant.RoleCodes, quant.RoleScale}, safetensors.BF16)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.WriteSafetensors(ctx, "out.safetensors", nil, []TensorSource{{Name: "w", DType: "BF16", Shape: []uint64{2, 2}, Recipe: &Recipe{Op: recipe.OpDequant, Params: params, Inputs: inIDs}}}, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Store a tampered copy of the recipe tensor with a wrong output hash.
	f, _ := s.LoadFile(res.ID)
	tt, _ := s.LoadTensor(f.Tensor[0].Tensor)
	tt.Recipe.Output = Sum([]byte("something else"))
	var badID ID
	if _, err := s.withSession(ctx, func(sess *session) error {
		var err error
		badID, err = sess.put(KindTensor, tt)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TensorBytes(badID); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("reading a recipe with a wrong output hash: %v", err)
	}
	good, err := s.TensorBytes(f.Tensor[0].Tensor)
	if err != nil {
		t.Fatal(err)
	}
	// 1, 2, -1, 448 in BF16.
	if !bytes.Equal(good, []byte{0x80, 0x3f, 0x00, 0x40, 0x80, 0xbf, 0xe0, 0x43}) {
		t.Fatalf("dequantized recipe bytes % x", good)
	}
}
