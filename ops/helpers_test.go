package ops_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/storeops"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
)

var ctx = context.Background()

// testStore is a store for one test with its ops view.
func testStore(t *testing.T) (*store.Store, ops.Models) {
	t.Helper()
	s := store.TestStore(t, store.Options{ChunkSize: 64 << 10, PackSize: 4 << 20})
	return s, storeops.New(s)
}

func importDir(t *testing.T, s *store.Store, dir, ref string) store.ID {
	t.Helper()
	r, err := store.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Import(ctx, dir, store.ImportOptions{Ref: r, NoDelta: true})
	if err != nil {
		t.Fatalf("import %s: %v", dir, err)
	}
	return res.Commit
}

func export(t *testing.T, s *store.Store, ref string) string {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "export")
	if _, err := s.Export(ctx, ref, dest, nil); err != nil {
		t.Fatalf("export %s: %v", ref, err)
	}
	return dest
}

// readTensors loads every tensor of every safetensors file of dir.
func readTensors(t *testing.T, dir string) map[string]safetensors.Tensor {
	t.Helper()
	out := map[string]safetensors.Tensor{}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	for _, p := range matches {
		f, h, err := safetensors.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range h.Tensors {
			data := make([]byte, ti.Size())
			if _, err := f.ReadAt(data, h.DataStart()+int64(ti.Begin)); err != nil {
				t.Fatal(err)
			}
			out[ti.Name] = safetensors.Tensor{TensorSpec: safetensors.TensorSpec{Name: ti.Name, DType: ti.DType, Shape: ti.Shape}, Data: data}
		}
		f.Close()
	}
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
