package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/internal/modelgen"
)

// heftAt runs heft with a failpoint armed and returns whether the process
// stopped there (false: the workload never reached it and finished).
func heftAt(t *testing.T, storeDir, fp string, args ...string) bool {
	t.Helper()
	cmd := exec.Command(heftBin, append([]string{"--store", storeDir}, args...)...)
	cmd.Env = append(os.Environ(), "HEFT_FAILPOINT="+fp)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return false
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == failpoint.ExitCode {
		return true
	}
	t.Fatalf("heft %v with failpoint %s: %v\n%s", args, fp, err, out)
	return false
}

// TestFailpoints stops real heft processes at every durable step of every
// workload (import, an op writing recipes, tag, rm + gc) and checks what a restart
// finds: verify --read-data is clean, every committed ref exports exactly as
// before (an oracle kept outside the store), the interrupted ref is either absent
// or complete, the workload re-runs to completion, and gc then reclaims every
// leftover.
func TestFailpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the failpoint matrix")
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
	mustHeft(t, template, "import", base, "--name", "org/doomed")
	mustHeft(t, template, "import", tuned, "--name", "org/doomed", "--no-delta") // org/doomed's history: unique packs for gc
	baseTree := hashTree(t, base)

	type workload struct {
		name string
		args []string
		ref  string // the ref it creates or moves ("" for none)
		src  string // what that ref must export to, when it exists ("" : not checked)
	}
	workloads := []workload{
		{"import", []string{"import", tuned, "--name", "org/tuned"}, "org/tuned", tuned},
		{"quantize", []string{"quantize", "org/base", "--scheme", "fp8-block", "--skip-vllm-checks", "--name", "org/fp8"}, "org/fp8", ""},
		{"tag", []string{"tag", "org/base", "org/base:v1"}, "org/base:v1", base},
		{"rm+gc", nil, "", ""},
	}
	stopped := map[string]bool{}
	for _, w := range workloads {
		for _, fp := range failpoint.All {
			storeDir := filepath.Join(root, "case-"+w.name+"-"+fp)
			if out, err := exec.Command("cp", "-a", template, storeDir).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			if w.name == "rm+gc" {
				mustHeft(t, storeDir, "rm", "org/doomed")
				stopped[w.name+" "+fp] = heftAt(t, storeDir, fp, "gc", "--grace", "0")
			} else {
				stopped[w.name+" "+fp] = heftAt(t, storeDir, fp, w.args...)
			}
			what := w.name + " stopped at " + fp
			// After the crash: structure and data intact, committed refs unchanged.
			if r := heft(t, storeDir, "verify", "--read-data"); r.code != 0 {
				t.Fatalf("%s: verify exit %d: %s%s", what, r.code, r.stdout, r.stderr)
			}
			checkExport(t, storeDir, "org/base", baseTree, what)
			if w.ref != "" {
				if r := heft(t, storeDir, "show", w.ref); r.code == 0 && w.src != "" {
					checkExport(t, storeDir, w.ref, hashTree(t, w.src), what+" (new ref)")
				}
			}
			// The workload re-runs (an import onto a ref it already moved makes a
			// second commit; a tag that exists is reported as such).
			if w.name == "rm+gc" {
				mustHeft(t, storeDir, "gc", "--grace", "0")
			} else if r := heft(t, storeDir, w.args...); r.code != 0 && !(w.name == "tag" && strings.Contains(r.stderr, "exists")) {
				t.Fatalf("%s: re-run exit %d: %s", what, r.code, r.stderr)
			}
			if w.src != "" {
				checkExport(t, storeDir, w.ref, hashTree(t, w.src), what+" (after re-run)")
			}
			// gc reclaims what the crash left: a second gc finds nothing to do.
			mustHeft(t, storeDir, "gc", "--grace", "0")
			var g struct {
				Deleted   int   `json:"packs_deleted"`
				Rewritten int   `json:"packs_rewritten"`
				Orphans   int   `json:"orphan_packs_deleted"`
				Temp      int   `json:"temp_files_deleted"`
				Freed     int64 `json:"bytes_freed"`
			}
			if err := json.Unmarshal([]byte(mustHeft(t, storeDir, "--json", "gc", "--grace", "0").stdout), &g); err != nil {
				t.Fatal(err)
			}
			if g.Deleted+g.Rewritten+g.Orphans+g.Temp != 0 || g.Freed != 0 {
				t.Fatalf("%s: a second gc still found %+v", what, g)
			}
			if r := heft(t, storeDir, "verify", "--read-data"); r.code != 0 || strings.Contains(r.stdout, "not indexed") {
				t.Fatalf("%s: final verify exit %d: %s", what, r.code, r.stdout)
			}
			os.RemoveAll(storeDir)
		}
	}
	// Every durable step must have been reached by the workloads that pass it.
	writes := []string{failpoint.PackBeforeSync, failpoint.PackBeforeRename, failpoint.PackBeforeDirSync,
		failpoint.IndexBeforeCommit, failpoint.IndexAfterCommit, failpoint.RefBeforeUpdate, failpoint.RefAfterUpdate}
	var want []string
	for _, w := range []string{"import", "quantize"} {
		for _, fp := range writes {
			want = append(want, w+" "+fp)
		}
	}
	want = append(want, "tag "+failpoint.RefBeforeUpdate, "tag "+failpoint.RefAfterUpdate,
		"rm+gc "+failpoint.GCBeforeSweep, "rm+gc "+failpoint.GCAfterForgetPack)
	n := 0
	for _, k := range want {
		if !stopped[k] {
			t.Errorf("%s: the process never reached the failpoint", k)
		}
	}
	for _, v := range stopped {
		if v {
			n++
		}
	}
	t.Logf("%d workloads × %d failpoints: %d runs stopped at their failpoint, all checked", len(workloads), len(failpoint.All), n)
}

func checkExport(t *testing.T, storeDir, ref string, want map[string]string, what string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "export")
	if r := heft(t, storeDir, "export", ref, dest); r.code != 0 {
		t.Fatalf("%s: export %s: exit %d: %s", what, ref, r.code, r.stderr)
	}
	got := hashTree(t, dest)
	if len(got) != len(want) {
		t.Fatalf("%s: %s exports %d files, want %d", what, ref, len(got), len(want))
	}
	for p, h := range want {
		if got[p] != h {
			t.Fatalf("%s: %s: %s differs", what, ref, p)
		}
	}
}
