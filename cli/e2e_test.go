package cli_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/modelgen"
)

// These tests drive the real heft binary, as users and scripts do.

var heftBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "heft-e2e-")
	if err != nil {
		panic(err)
	}
	heftBin = filepath.Join(dir, "heft")
	// Built with failpoints, so crash tests can stop it at named durable steps;
	// without HEFT_FAILPOINT it behaves as the release build.
	build := exec.Command("go", "build", "-tags", "failpoints", "-o", heftBin, "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building heft:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func heft(t testing.TB, storeDir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(heftBin, append([]string{"--store", storeDir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run heft %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

func mustHeft(t testing.TB, storeDir string, args ...string) result {
	t.Helper()
	r := heft(t, storeDir, args...)
	if r.code != 0 {
		t.Fatalf("heft %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

func hashTree(t testing.TB, root string) map[string]string {
	t.Helper()
	out, err := modelgen.TreeSHA256(root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t testing.TB, a, b string) bool {
	t.Helper()
	ha, hb := hashTree(t, a), hashTree(t, b)
	if len(ha) != len(hb) || len(ha) == 0 {
		return false
	}
	for k, v := range ha {
		if hb[k] != v {
			return false
		}
	}
	return true
}

func packBytes(dir string) int64 {
	var n int64
	filepath.Walk(filepath.Join(dir, "packs"), func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func TestCLIExitCodesAndJSON(t *testing.T) {
	storeDir := filepath.Join(t.TempDir(), "store")
	model := filepath.Join(t.TempDir(), "m")
	if err := modelgen.WriteBase(model, modelgen.Tiny(), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	mustHeft(t, storeDir, "import", model, "--name", "org/m", "-m", "first")
	var st map[string]any
	if err := json.Unmarshal([]byte(mustHeft(t, storeDir, "--json", "stats").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st["logical_bytes"].(float64) <= 0 || int64(st["physical_bytes"].(float64)) != packBytes(storeDir) {
		t.Fatalf("stats --json: %v (packs on disk %d)", st, packBytes(storeDir))
	}
	for _, args := range [][]string{{"ls"}, {"log", "org/m"}, {"show", "org/m"}, {"diff", "org/m", "org/m"}, {"stats", "org/m"}, {"verify"}} {
		r := mustHeft(t, storeDir, append([]string{"--json"}, args...)...)
		if !json.Valid([]byte(r.stdout)) {
			t.Errorf("heft --json %v: not JSON: %s", args, r.stdout)
		}
		mustHeft(t, storeDir, args...)
	}
	// Input errors exit 1.
	for _, args := range [][]string{
		{"export", "org/nope", filepath.Join(t.TempDir(), "x")},
		{"import", model},
		{"import", model, "--name", "bad//name"},
		{"tag", "org/m", "org/m"},
		{"frobnicate"},
	} {
		if r := heft(t, storeDir, args...); r.code != 1 {
			t.Errorf("heft %v: exit %d, want 1 (stderr %s)", args, r.code, r.stderr)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	os.WriteFile(bad, []byte("\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1} "), 0o644)
	r := heft(t, storeDir, "import", bad, "--name", "org/bad")
	if r.code != 1 || !strings.Contains(r.stderr, "bad.safetensors") {
		t.Errorf("malformed import: exit %d, stderr %s", r.code, r.stderr)
	}
	// Damage → verify exits 3.
	var packs []string
	filepath.Walk(filepath.Join(storeDir, "packs"), func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.HasSuffix(p, ".pack") {
			packs = append(packs, p)
		}
		return nil
	})
	data, _ := os.ReadFile(packs[0])
	data[len(data)/3] ^= 1
	os.WriteFile(packs[0], data, 0o644)
	if r := heft(t, storeDir, "verify", "--read-data"); r.code != 3 || !strings.Contains(r.stdout, "DAMAGED") {
		t.Errorf("verify of damaged store: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestCrashDuringImport SIGKILLs `heft import` at random moments and checks after
// each kill that the store verifies, that committed refs export identically, and at
// the end that a re-run completes and gc reclaims the partial data.
func TestCrashDuringImport(t *testing.T) {
	kills := 20
	if testing.Short() {
		kills = 5
	}
	root := t.TempDir()
	storeDir := filepath.Join(root, "store")
	base := filepath.Join(root, "base")
	big := filepath.Join(root, "big")
	cfg := modelgen.Sized(96 << 20)
	if err := modelgen.WriteBase(base, modelgen.Tiny(), modelgen.Options{Seed: 1, Shards: 1}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.WriteBase(big, cfg, modelgen.Options{Seed: 2, Shards: 3}); err != nil {
		t.Fatal(err)
	}
	mustHeft(t, storeDir, "import", base, "--name", "org/base")
	basePhysical := packBytes(storeDir)

	// Calibrate: how long does a full import take (into a scratch store)?
	start := time.Now()
	mustHeft(t, filepath.Join(root, "scratch"), "import", big, "--name", "org/big")
	full := time.Since(start)
	freshPhysical := packBytes(filepath.Join(root, "scratch"))
	os.RemoveAll(filepath.Join(root, "scratch"))

	rng := rand.New(rand.NewPCG(42, 7))
	bigCommitted := false
	for i := 0; i < kills; i++ {
		cmd := exec.Command(heftBin, "--store", storeDir, "import", big, "--name", "org/big-"+fmt.Sprint(i))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.Int64N(int64(full)))
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if err == nil {
			bigCommitted = true
		}
		if r := heft(t, storeDir, "verify", "--read-data"); r.code != 0 {
			t.Fatalf("after kill %d at %v: verify exit %d\n%s%s", i, delay, r.code, r.stdout, r.stderr)
		}
		out := filepath.Join(root, fmt.Sprintf("out-%d", i))
		mustHeft(t, storeDir, "export", "org/base", out)
		if !sameTree(t, base, out) {
			t.Fatalf("after kill %d: org/base no longer exports identically", i)
		}
		os.RemoveAll(out)
		if r := heft(t, storeDir, "export", "org/big-"+fmt.Sprint(i), out); r.code == 0 {
			if !sameTree(t, big, out) {
				t.Fatalf("after kill %d: committed org/big-%d exports wrong bytes", i, i)
			}
			os.RemoveAll(out)
		}
	}
	t.Logf("%d kills over a %v import (%v completed before its kill)", kills, full, bigCommitted)
	// Drop any ref a run committed before its kill; gc must then reclaim every byte
	// the interrupted imports left, down to what org/base needs.
	for i := 0; i < kills; i++ {
		heft(t, storeDir, "rm", "org/big-"+fmt.Sprint(i))
	}
	before := packBytes(storeDir)
	mustHeft(t, storeDir, "gc", "--grace", "0")
	after := packBytes(storeDir)
	mustHeft(t, storeDir, "verify", "--read-data")
	t.Logf("physical before gc %d, after %d, org/base alone %d", before, after, basePhysical)
	if after != basePhysical {
		t.Errorf("gc left %d bytes; org/base alone takes %d", after, basePhysical)
	}
	if entries, _ := filepath.Glob(filepath.Join(storeDir, "packs", "tmp-*")); len(entries) != 0 {
		t.Errorf("temp files left after gc: %v", entries)
	}
	// A re-run import completes and exports identically.
	mustHeft(t, storeDir, "import", big, "--name", "org/big")
	out := filepath.Join(root, "final")
	mustHeft(t, storeDir, "export", "org/big", out)
	if !sameTree(t, big, out) {
		t.Fatal("re-run import does not export identically")
	}
	if got := packBytes(storeDir); got > basePhysical+freshPhysical+freshPhysical/100 {
		t.Errorf("store holds %d bytes; base %d + a fresh import of big %d", got, basePhysical, freshPhysical)
	}
	mustHeft(t, storeDir, "verify", "--read-data")
}
