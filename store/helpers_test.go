package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/heft-dev/heft/internal/modelgen"
)

var ctx = context.Background()

// testCfg is a small Qwen3 config: big enough for several chunks per large tensor at
// the test chunk size, small enough to keep the suite fast.
func testCfg() modelgen.Config { return modelgen.Tiny() }

// smallChunks makes tests exercise multi-chunk tensors on tiny models.
var smallChunks = Options{ChunkSize: 16 << 10, PackSize: 1 << 20}

func mustRef(t testing.TB, s string) RefName {
	t.Helper()
	r, err := ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func importDir(t testing.TB, s *Store, dir, ref string) *ImportResult {
	t.Helper()
	res, err := s.Import(ctx, dir, ImportOptions{Ref: mustRef(t, ref)})
	if err != nil {
		t.Fatalf("import %s as %s: %v", dir, ref, err)
	}
	return res
}

// treeHashes maps every file under root to its sha256.
func treeHashes(t testing.TB, root string) map[string]string {
	t.Helper()
	out, err := modelgen.TreeSHA256(root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertExportIdentical exports ref and compares every file's sha256 with src.
func assertExportIdentical(t testing.TB, s *Store, ref, src string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "export")
	if _, err := s.Export(ctx, ref, dest, nil); err != nil {
		t.Fatalf("export %s: %v", ref, err)
	}
	want, got := treeHashes(t, src), treeHashes(t, dest)
	if len(want) != len(got) {
		t.Fatalf("export %s: %d files, source has %d", ref, len(got), len(want))
	}
	var names []string
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if got[n] != want[n] {
			t.Errorf("export %s: %s sha256 %s, source %s", ref, n, got[n], want[n])
		}
	}
}

// packBytesOnDisk sums the sizes of all files under packs/.
func packBytesOnDisk(t testing.TB, s *Store) int64 {
	t.Helper()
	var n int64
	filepath.Walk(filepath.Join(s.Dir(), "packs"), func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// family writes a base (2 shards), a reshard (3), a tuned model with frozen
// embeddings and a copy, and returns their directories.
func family(t testing.TB, cfg modelgen.Config) (base, reshard, tuned, copyDir string) {
	t.Helper()
	root := t.TempDir()
	base = filepath.Join(root, "base")
	reshard = filepath.Join(root, "reshard")
	tuned = filepath.Join(root, "tuned")
	copyDir = filepath.Join(root, "copy")
	if err := modelgen.WriteBase(base, cfg, modelgen.Options{Seed: 7, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.Reshard(base, reshard, 3); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 8, FreezeEmbeddings: true}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.CopyDir(base, copyDir); err != nil {
		t.Fatal(err)
	}
	return
}

func wantErr(t testing.TB, err, class error) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Fatalf("error %v, want %v", err, class)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
