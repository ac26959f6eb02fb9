package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/internal/modelgen"
)

// TestBitFlipDetected flips one byte inside a chunk that only one model uses: verify
// names the chunk, tensor, file and ref; reading that model fails; the other still
// exports.
func TestBitFlipDetected(t *testing.T) {
	s := TestStore(t, smallChunks)
	s.SkipCleanupCheck()
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	modelgen.WriteBase(a, testCfg(), modelgen.Options{Seed: 1, Shards: 1})
	modelgen.WriteBase(b, testCfg(), modelgen.Options{Seed: 2, Shards: 1})
	importDir(t, s, a, "org/a")
	importDir(t, s, b, "org/b")

	// Find the first chunk of a's q_proj.
	sh, err := s.Show("org/a")
	if err != nil {
		t.Fatal(err)
	}
	var target TensorView
	for _, tv := range sh.Tensors {
		if strings.HasSuffix(tv.Name, "layers.0.self_attn.q_proj.weight") {
			target = tv
		}
	}
	tensor, err := s.LoadTensor(target.ID)
	if err != nil {
		t.Fatal(err)
	}
	chunk := tensor.Chunks[0].ID
	locs, err := s.idx.lookup([]ID{chunk})
	if err != nil {
		t.Fatal(err)
	}
	loc := locs[chunk]
	path := s.packPath(loc.Pack)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	f.ReadAt(one, int64(loc.Offset+loc.StoredLen/2))
	one[0] ^= 0x40
	f.WriteAt(one, int64(loc.Offset+loc.StoredLen/2))
	f.Close()
	s.Close() // drop cached handles

	res, err := s.Verify(ctx, VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || len(res.Damaged) != 1 {
		t.Fatalf("verify: ok=%v damaged=%d", res.OK, len(res.Damaged))
	}
	d := res.Damaged[0]
	if d.ID != chunk || d.Kind != "chunk" || d.Pack != path {
		t.Errorf("damage names %s %s in %s, want chunk %s in %s", d.Kind, d.ID.Short(), d.Pack, chunk.Short(), path)
	}
	if len(d.Refs) != 1 || d.Refs[0] != "org/a:main" {
		t.Errorf("damage refs %v", d.Refs)
	}
	if len(d.Tensors) != 1 || !strings.HasSuffix(d.Tensors[0], "model.safetensors:"+target.Name) {
		t.Errorf("damage tensors %v", d.Tensors)
	}
	if len(d.Files) != 1 || d.Files[0] != "org/a:main:model.safetensors" {
		t.Errorf("damage files %v", d.Files)
	}
	// Structural verify (no data read) does not see inside chunks; read-data does.
	_, err = s.Export(ctx, "org/a", filepath.Join(t.TempDir(), "x"), nil)
	wantErr(t, err, ErrIntegrity)
	assertExportIdentical(t, s, "org/b", b)
}

func TestRepairIndexAfterDelete(t *testing.T) {
	s := TestStore(t, smallChunks)
	base, _, tuned, _ := family(t, testCfg())
	importDir(t, s, base, "org/base")
	importDir(t, s, tuned, "org/tuned")
	s.Close()
	if err := os.Remove(filepath.Join(s.Dir(), "index.db")); err != nil {
		t.Fatal(err)
	}
	_, err := s.Export(ctx, "org/base", filepath.Join(t.TempDir(), "x"), nil)
	wantErr(t, err, ErrIndexCorrupt)
	res, err := s.RepairIndex()
	if err != nil {
		t.Fatal(err)
	}
	if res.Packs == 0 || len(res.DamagedPacks) != 0 {
		t.Fatalf("repair: %+v", res)
	}
	assertExportIdentical(t, s, "org/base", base)
	assertExportIdentical(t, s, "org/tuned", tuned)
}

func TestCorruptIndexFileIsTyped(t *testing.T) {
	skipIfShared(t, "damages the local index file by hand")
	s := TestStore(t, smallChunks)
	base, _, _, _ := family(t, testCfg())
	importDir(t, s, base, "org/base")
	s.Close()
	idx := filepath.Join(s.Dir(), "index.db")
	data, _ := os.ReadFile(idx)
	for i := range data[:8192] { // both meta pages
		data[i] ^= 0xff
	}
	os.WriteFile(idx, data, 0o644)
	_, err := s.Refs() // refs do not need the index
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Show("org/base")
	wantErr(t, err, ErrIndexCorrupt)
	if _, err := s.RepairIndex(); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, s, "org/base", base)
}
