//go:build linux

package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/heft-dev/heft/internal/modelgen"
)

// TestDiskFull runs heft on a real, small filesystem (a size-limited tmpfs, which
// needs root; skipped otherwise) filled up on purpose: an import that does not fit
// fails with a clear message and exit 2, nothing committed is lost, verify stays
// clean, and once space is freed gc cleans up and the import succeeds.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the disk-full test")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root): %v %s", err, out)
	}
	defer exec.Command("umount", "-l", mnt).Run()
	root := t.TempDir()
	base, tuned := filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := modelgen.WriteBase(base, modelgen.Tiny(), modelgen.Options{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	storeDir := filepath.Join(mnt, "store")
	mustHeft(t, storeDir, "import", base, "--name", "org/base")
	want := hashTree(t, base)
	// Leave about 64 KiB free: less than the fine-tune needs.
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, max(0, free-64<<10)), 0o644); err != nil {
		t.Fatal(err)
	}
	r := heft(t, storeDir, "import", tuned, "--name", "org/tuned", "--no-delta")
	if r.code != 2 || !strings.Contains(r.stderr, "no space left on device") {
		t.Fatalf("import on a full disk: exit %d, stderr %q (want exit 2 and the reason)", r.code, r.stderr)
	}
	t.Logf("full disk: %s", strings.TrimSpace(r.stderr))
	if r := heft(t, storeDir, "show", "org/tuned"); r.code == 0 {
		t.Fatal("the failed import left a ref")
	}
	if r := heft(t, storeDir, "verify", "--read-data"); r.code != 0 {
		t.Fatalf("verify after ENOSPC: exit %d: %s", r.code, r.stdout)
	}
	checkExport(t, storeDir, "org/base", want, "after ENOSPC")
	// Space comes back: gc clears what the failed import left, the import works.
	os.Remove(filler)
	mustHeft(t, storeDir, "gc", "--grace", "0")
	mustHeft(t, storeDir, "import", tuned, "--name", "org/tuned", "--no-delta")
	checkExport(t, storeDir, "org/tuned", hashTree(t, tuned), "after space was freed")
	mustHeft(t, storeDir, "verify", "--read-data")
}
