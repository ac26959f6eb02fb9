package cli_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/modelgen"
)

// killCount is how many SIGKILLs each workload of TestKillWorkloads takes:
// HEFT_KILLS, else 5 (-short: 2). The long run (`.ci/torture`) uses 100.
func killCount() int {
	if v, err := strconv.Atoi(os.Getenv("HEFT_KILLS")); err == nil && v > 0 {
		return v
	}
	if testing.Short() {
		return 2
	}
	return 5
}

// TestKillWorkloads SIGKILLs real heft processes at random moments of an op
// writing recipes (quantize), gc, a pull from a heft remote and a push to one, and
// checks after every kill that each store verifies and its committed refs export
// exactly as before; finally the interrupted commands re-run to completion and gc
// leaves nothing behind.
func TestKillWorkloads(t *testing.T) {
	kills := killCount()
	root := t.TempDir()
	base, tuned := filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := modelgen.WriteBase(base, modelgen.Sized(24<<20), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	baseTree, tunedTree := hashTree(t, base), hashTree(t, tuned)
	server, local := filepath.Join(root, "server"), filepath.Join(root, "local")
	mustHeft(t, server, "import", base, "--name", "org/base")
	mustHeft(t, server, "import", tuned, "--name", "org/tuned")
	mustHeft(t, local, "import", base, "--name", "org/base")
	mustHeft(t, local, "import", tuned, "--name", "org/mine")
	token := strings.TrimSpace(mustHeft(t, server, "token", "create", "--scope", "write", "--namespace", "org").stdout)
	addr := startServe(t, server)
	env := []string{"HEFT_TOKEN=" + token}
	mustHeft(t, local, "remote", "add", "origin", "http://"+addr)
	rng := rand.New(rand.NewPCG(5, 9))

	type workload struct {
		name  string
		store string
		args  []string
		setup func(i int) // before each run
	}
	workloads := []workload{
		{"quantize", local, []string{"quantize", "org/base", "--scheme", "fp8-block", "--name", "org/fp8"}, nil},
		{"gc", local, []string{"gc", "--grace", "0"}, func(i int) {
			// Something to collect each time: a fresh ref to drop.
			heft(t, local, "rm", "org/scratch")
			mustHeft(t, local, "import", tuned, "--name", "org/scratch", "--no-delta", "-m", fmt.Sprint(i))
			mustHeft(t, local, "rm", "org/scratch")
		}},
		{"pull", local, []string{"pull", "origin", "org/tuned"}, func(int) { heft(t, local, "rm", "org/tuned") }},
		{"push", local, []string{"push", "org/mine", "origin"}, func(int) { heft(t, server, "rm", "org/mine") }},
	}
	for _, w := range workloads {
		// Calibrate on a copy: how long does the command take in full?
		scratch := filepath.Join(root, "calibrate-"+w.name)
		if out, err := exec.Command("cp", "-a", w.store, scratch).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		if w.setup != nil {
			w.setup(-1)
		}
		start := time.Now()
		if r := heftEnv(t, env, w.store, w.args...); r.code != 0 && w.name != "push" {
			t.Fatalf("%s: %s", w.name, r.stderr)
		}
		full := time.Since(start)
		// Undo the calibration run: restore the store as it was.
		os.RemoveAll(w.store)
		os.Rename(scratch, w.store)
		completed := 0
		for i := 0; i < kills; i++ {
			if w.setup != nil {
				w.setup(i)
			}
			cmd := exec.Command(heftBin, append([]string{"--store", w.store}, w.args...)...)
			cmd.Env = append(os.Environ(), env...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Duration(rng.Int64N(int64(full) + 1)))
			cmd.Process.Signal(syscall.SIGKILL)
			if cmd.Wait() == nil {
				completed++
			}
			what := fmt.Sprintf("%s, kill %d", w.name, i)
			for _, s := range []string{local, server} {
				if r := heft(t, s, "verify", "--read-data"); r.code != 0 {
					t.Fatalf("%s: verify %s exit %d: %s%s", what, filepath.Base(s), r.code, r.stdout, r.stderr)
				}
			}
			checkExport(t, local, "org/base", baseTree, what)
			checkExport(t, server, "org/tuned", tunedTree, what)
			for _, c := range []struct{ s, ref string }{{local, "org/tuned"}, {server, "org/mine"}} {
				if heft(t, c.s, "show", c.ref).code == 0 {
					checkExport(t, c.s, c.ref, tunedTree, what+" ("+c.ref+")")
				}
			}
		}
		// The command re-runs to completion.
		if w.setup != nil {
			w.setup(kills)
		}
		if r := heftEnv(t, env, w.store, w.args...); r.code != 0 {
			t.Fatalf("%s: re-run after the kills: exit %d: %s", w.name, r.code, r.stderr)
		}
		t.Logf("%s: %d kills over a %v run (%d finished first)", w.name, kills, full.Round(time.Millisecond), completed)
	}
	checkExport(t, local, "org/tuned", tunedTree, "pulled")
	checkExport(t, server, "org/mine", tunedTree, "pushed")
	// gc reclaims every leftover: a second gc finds nothing.
	for _, s := range []string{local, server} {
		mustHeft(t, s, "gc", "--grace", "0")
		r := mustHeft(t, s, "--json", "gc", "--grace", "0")
		if !strings.Contains(r.stdout, `"bytes_freed": 0`) {
			t.Errorf("%s: a second gc still freed bytes: %s", filepath.Base(s), r.stdout)
		}
		mustHeft(t, s, "verify", "--read-data")
	}
}
