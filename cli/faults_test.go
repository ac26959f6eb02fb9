package cli_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/internal/modelgen"
)

// TestInjectedIOErrors makes the N-th write, fsync, rename or directory fsync of
// an import fail with ENOSPC or EIO (HEFT_FAULT, failpoints build) for several N:
// the import fails with exit 2 and the error's reason, nothing committed is lost,
// the new ref is absent or complete, verify is clean, and the same import then
// succeeds and gc leaves nothing behind.
func TestInjectedIOErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the fault-injection matrix")
	}
	root := t.TempDir()
	base, tuned := filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := modelgen.WriteBase(base, modelgen.Tiny(), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	template := filepath.Join(root, "template")
	mustHeft(t, template, "import", base, "--name", "org/base")
	baseTree, tunedTree := hashTree(t, base), hashTree(t, tuned)
	failed := 0
	for _, op := range failpoint.Faults {
		for _, errName := range []string{"ENOSPC", "EIO"} {
			for _, n := range []int{1, 2, 3, 7} {
				what := fmt.Sprintf("%s@%d:%s", op, n, errName)
				storeDir := filepath.Join(root, "case")
				cpStore(t, template, storeDir)
				r := heftEnv(t, []string{"HEFT_FAULT=" + what}, storeDir, "import", tuned, "--name", "org/tuned", "--no-delta")
				want := map[string]string{"ENOSPC": "no space left on device", "EIO": "input/output error"}[errName]
				switch {
				case r.code == 0:
					// The import made fewer than n such operations.
				case r.code == 2 && strings.Contains(r.stderr, want):
					failed++
					// A fault after the refs file was renamed into place (its
					// directory fsync) leaves the new ref visible though not
					// known durable: it must then be complete.
					if heft(t, storeDir, "show", "org/tuned").code == 0 {
						checkExport(t, storeDir, "org/tuned", tunedTree, what+" (ref left by the failed import)")
					}
				default:
					t.Fatalf("%s: exit %d, stderr %q (want 2 and %q)", what, r.code, r.stderr, want)
				}
				if r := heft(t, storeDir, "verify", "--read-data"); r.code != 0 {
					t.Fatalf("%s: verify exit %d: %s", what, r.code, r.stdout)
				}
				checkExport(t, storeDir, "org/base", baseTree, what)
				if r.code != 0 {
					mustHeft(t, storeDir, "import", tuned, "--name", "org/tuned", "--no-delta")
				}
				checkExport(t, storeDir, "org/tuned", tunedTree, what+" (re-run)")
				mustHeft(t, storeDir, "gc", "--grace", "0")
				if r := mustHeft(t, storeDir, "--json", "gc", "--grace", "0"); !strings.Contains(r.stdout, `"bytes_freed": 0`) {
					t.Fatalf("%s: a second gc still freed bytes: %s", what, r.stdout)
				}
			}
		}
	}
	t.Logf("%d of %d injected faults hit the import", failed, len(failpoint.Faults)*2*4)
	if failed < len(failpoint.Faults)*2 {
		t.Fatalf("only %d injected faults took effect: the fault points are not wired", failed)
	}
}

func cpStore(t *testing.T, from, to string) {
	t.Helper()
	mustRun(t, "rm", "-rf", to)
	mustRun(t, "cp", "-a", from, to)
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v %s", name, args, err, out)
	}
}
