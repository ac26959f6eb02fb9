package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/internal/modelgen"
)

// TestExportCrashLeavesNoPartialFiles: an export stopped halfway (the process
// exits at failpoint export-mid-write) leaves no file at its final name in DEST —
// store.Export sizes every file first and fills it in place, so before heft export
// wrote into a temporary directory a crash left full-size safetensors files that
// were partly zeros — and the re-run needs no clean-up and writes identical files,
// whether DEST did not exist or was an empty directory.
func TestExportCrashLeavesNoPartialFiles(t *testing.T) {
	root := t.TempDir()
	model, storeDir := filepath.Join(root, "m"), filepath.Join(root, "store")
	if err := modelgen.WriteBase(model, modelgen.Tiny(), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	mustHeft(t, storeDir, "import", model, "--name", "org/m")
	want := hashTree(t, model)
	for _, existing := range []bool{false, true} {
		dest := filepath.Join(root, "out", "dest")
		os.RemoveAll(filepath.Join(root, "out"))
		if existing {
			os.MkdirAll(dest, 0o755)
		}
		if !heftAt(t, storeDir, failpoint.ExportMidWrite, nil, "export", "org/m", dest) {
			t.Fatal("export never reached export-mid-write")
		}
		entries, _ := os.ReadDir(dest)
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				t.Fatalf("existing dest %v: the interrupted export left %s at its final name", existing, e.Name())
			}
		}
		if _, err := os.Stat(dest); !existing && !os.IsNotExist(err) {
			t.Fatalf("the interrupted export created %s (%v)", dest, err)
		}
		mustHeft(t, storeDir, "export", "org/m", dest)
		if got := hashTree(t, dest); !sameHashes(got, want) {
			t.Fatalf("existing dest %v: the re-run export differs (%d files)", existing, len(got))
		}
		left, _ := filepath.Glob(filepath.Join(root, "out", ".*"))
		inside, _ := filepath.Glob(filepath.Join(dest, ".*"))
		if len(left)+len(inside) != 0 {
			t.Fatalf("existing dest %v: temporary files left: %v %v", existing, left, inside)
		}
	}
	// A destination with files in it is still refused, and kept as it is.
	r := heft(t, storeDir, "export", "org/m", filepath.Join(root, "out", "dest"))
	if r.code != 1 || !strings.Contains(r.stderr, "not empty") {
		t.Fatalf("export into a full directory: exit %d: %s", r.code, r.stderr)
	}
	if got := hashTree(t, filepath.Join(root, "out", "dest")); !sameHashes(got, want) {
		t.Fatal("a refused export changed the destination")
	}
	// An unknown ref creates nothing.
	if r := heft(t, storeDir, "export", "org/none", filepath.Join(root, "new", "dest")); r.code == 0 {
		t.Fatal("export of an unknown ref succeeded")
	}
	if _, err := os.Stat(filepath.Join(root, "new")); !os.IsNotExist(err) {
		t.Fatalf("export of an unknown ref created directories (%v)", err)
	}
}
