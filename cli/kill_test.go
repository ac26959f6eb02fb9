package cli_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/modelgen"
)

// killCount is how many SIGKILLs each workload of TestKillWorkloads takes:
// HEFT_KILLS, else 3 (-short: 1). The long run (`.ci/torture`) uses 100.
func killCount() int {
	if v, err := strconv.Atoi(os.Getenv("HEFT_KILLS")); err == nil && v > 0 {
		return v
	}
	if testing.Short() {
		return 1
	}
	return 3
}

// TestKillWorkloads SIGKILLs real heft processes at random moments of every
// workload — import, export, tag/rm, gc, an op writing recipes (quantize), a pull
// from a heft remote and from the Hub API of `heft serve`, a push to a heft remote
// killed on the client side, and `heft serve` itself killed while it receives a
// `heft push` or a Hub upload — and checks after every kill that the store the
// killed process wrote verifies (--read-data), that every ref committed before is
// unchanged and exports exactly as before (an oracle kept outside the stores), that
// the ref the workload moves is either as it was or complete and right, and that an
// export left the store untouched. Finally every interrupted command re-runs to
// completion, and gc leaves nothing behind (a second gc frees nothing).
func TestKillWorkloads(t *testing.T) {
	kills := killCount()
	root := t.TempDir()
	base, tuned, fresh := filepath.Join(root, "base"), filepath.Join(root, "tuned"), filepath.Join(root, "fresh")
	other := filepath.Join(root, "other") // on the server only: what the pulls fetch
	if err := modelgen.WriteBase(base, modelgen.Sized(24<<20), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, other, modelgen.FineTuneOptions{Seed: 3}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.WriteBase(fresh, modelgen.Sized(24<<20), modelgen.Options{Seed: 7, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	baseTree, tunedTree, freshTree, otherTree := hashTree(t, base), hashTree(t, tuned), hashTree(t, fresh), hashTree(t, other)
	server, local := filepath.Join(root, "server"), filepath.Join(root, "local")
	mustHeft(t, server, "import", base, "--name", "org/base")
	mustHeft(t, server, "import", other, "--name", "org/other")
	mustHeft(t, local, "import", base, "--name", "org/base")
	mustHeft(t, local, "import", tuned, "--name", "org/mine") // the server lacks it: pushes store it all
	token := strings.TrimSpace(mustHeft(t, server, "token", "create", "--scope", "write", "--namespace", "org", "--namespace", "team").stdout)
	srv := newServe(t, server)
	srv.start()
	env := []string{"HEFT_TOKEN=" + token, "HF_ENDPOINT=http://" + srv.addr, "HF_TOKEN=" + token,
		"HF_HUB_DISABLE_XET=1", "NO_PROXY=127.0.0.1", "HF_HOME=" + filepath.Join(root, "hf-home")}
	mustHeft(t, local, "remote", "add", "origin", "http://"+srv.addr)
	rng := rand.New(rand.NewPCG(5, 9))
	exportDest := filepath.Join(root, "exported")

	type expect struct {
		store, ref string
		tree       map[string]string // nil: not compared (quantize)
		// orEmpty: the ref may also hold no files (a Hub repo is created, with an
		// empty first commit, before its files are uploaded).
		orEmpty bool
	}
	type workload struct {
		name   string
		store  string // the store the interrupted command writes
		server bool   // the killed process is heft serve; args run as its client on local
		args   func(i int) []string
		setup  func(i int)  // before each run
		expect []expect     // the refs the workload creates or moves
		check  func(string) // extra checks after each kill (nil: none)
	}
	fixed := func(args ...string) func(int) []string { return func(int) []string { return args } }
	var localDigest string
	workloads := []workload{
		{name: "import", store: local, args: fixed("import", fresh, "--name", "org/imp"),
			setup: func(int) {
				// Nothing stored from earlier runs: each run writes everything again.
				heft(t, local, "rm", "org/imp")
				mustHeft(t, local, "gc", "--grace", "0")
			},
			expect: []expect{{store: local, ref: "org/imp", tree: freshTree}}},
		{name: "export", store: local, args: fixed("export", "org/base", exportDest),
			setup: func(int) {
				os.RemoveAll(exportDest)
				localDigest = storeDigest(t, local)
			},
			check: func(what string) {
				if storeDigest(t, local) != localDigest {
					t.Fatalf("%s: export changed the store", what)
				}
				// The destination exists only once complete.
				if _, err := os.Stat(exportDest); err == nil && !sameHashes(hashTree(t, exportDest), baseTree) {
					t.Fatalf("%s: %s exists with other files or bytes", what, exportDest)
				}
			}},
		{name: "tag/rm", store: local,
			args: func(i int) []string {
				if i%2 == 0 {
					return []string{"tag", "org/base", "org/base:v1"}
				}
				return []string{"rm", "org/base:v1"}
			},
			setup: func(i int) {
				if i%2 == 0 {
					heft(t, local, "rm", "org/base:v1")
				} else if !hasRef(t, local, "org/base:v1") {
					mustHeft(t, local, "tag", "org/base", "org/base:v1")
				}
			},
			expect: []expect{{store: local, ref: "org/base:v1", tree: baseTree}}},
		{name: "gc", store: local, args: fixed("gc", "--grace", "0"),
			setup: func(i int) {
				// Something to collect each time: a fresh ref to drop.
				heft(t, local, "rm", "org/scratch")
				mustHeft(t, local, "import", tuned, "--name", "org/scratch", "--no-delta", "-m", fmt.Sprint(i))
				mustHeft(t, local, "rm", "org/scratch")
			}},
		{name: "quantize", store: local, args: fixed("quantize", "org/base", "--scheme", "fp8-block", "--name", "org/fp8"),
			expect: []expect{{store: local, ref: "org/fp8", tree: nil}}},
		// The pulls fetch a model the local store lacks; gc drops what an earlier
		// run fetched (an interrupted hf pull's data stays: it resumes).
		{name: "pull", store: local, args: fixed("pull", "origin", "org/other"),
			setup: func(int) {
				heft(t, local, "rm", "org/other")
				mustHeft(t, local, "gc", "--grace", "0")
			},
			expect: []expect{{store: local, ref: "org/other", tree: otherTree}}},
		{name: "hf-pull", store: local, args: fixed("pull", "hf://org/other", "--name", "org/hfo"),
			setup: func(int) {
				heft(t, local, "rm", "org/hfo")
				heft(t, local, "rm", "org/other") // the pull workload's: its files would cost nothing
				mustHeft(t, local, "gc", "--grace", "0")
			},
			expect: []expect{{store: local, ref: "org/hfo", tree: otherTree}}},
		{name: "push", store: server, args: fixed("push", "org/mine", "origin"),
			setup: func(int) {
				heft(t, server, "rm", "org/mine")
				mustHeft(t, server, "gc", "--grace", "0")
			},
			expect: []expect{{store: server, ref: "org/mine", tree: tunedTree}}},
		{name: "serve receiving push", store: server, server: true, args: fixed("push", "org/mine", "origin"),
			setup: func(int) {
				heft(t, server, "rm", "org/mine")
				mustHeft(t, server, "gc", "--grace", "0")
			},
			expect: []expect{{store: server, ref: "org/mine", tree: tunedTree}}},
		{name: "serve receiving hub upload", store: server, server: true, args: fixed("push", "org/mine", "hf://team/up"),
			setup: func(int) {
				// The Hub API's delete also forgets the repo's uploads, so gc can
				// take them and the next upload stores everything again (org/mine,
				// left by the push workloads, would make it store nothing).
				deleteHubRepo(t, srv.addr, token, "team/up")
				heft(t, server, "rm", "org/mine")
				mustHeft(t, server, "gc", "--grace", "0")
			},
			expect: []expect{{store: server, ref: "team/up", tree: tunedTree, orEmpty: true}}},
	}
	start := time.Now()
	only := os.Getenv("HEFT_KILL_WORKLOADS") // a comma-separated subset, to debug one
	ran := 0
	for _, w := range workloads {
		if only != "" && !strings.Contains(","+only+",", ","+w.name+",") {
			continue
		}
		ran++
		wstart := time.Now()
		if !srv.running() {
			srv.start()
		}
		// Calibrate on a copy: how long does the command take in full?
		scratch := filepath.Join(root, "calibrate")
		srv.stop()
		copyStore(t, w.store, scratch)
		srv.start()
		if w.setup != nil {
			w.setup(0)
		}
		t0 := time.Now()
		if r := heftEnv(t, env, local, w.args(0)...); r.code != 0 {
			t.Fatalf("%s: %s", w.name, r.stderr)
		}
		full := time.Since(t0)
		// Undo the calibration run: restore the store as it was.
		srv.stop()
		os.RemoveAll(w.store)
		os.Rename(scratch, w.store)
		srv.start()
		completed := 0
		for i := 0; i < kills; i++ {
			if !srv.running() {
				srv.start()
			}
			if w.setup != nil {
				w.setup(i)
			}
			before := refState(t, w.store)
			cmd := heftCmd(local, env, w.args(i)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			time.Sleep(time.Duration(rng.Int64N(int64(full) + 1)))
			if w.server {
				srv.kill()
			}
			cmd.Process.Signal(syscall.SIGKILL)
			if <-done == nil {
				completed++
			}
			what := fmt.Sprintf("%s, kill %d", w.name, i)
			if r := heft(t, w.store, "verify", "--read-data"); r.code != 0 {
				t.Fatalf("%s: verify %s exit %d: %s%s", what, filepath.Base(w.store), r.code, r.stdout, r.stderr)
			}
			var moving []string
			for _, e := range w.expect {
				moving = append(moving, e.ref)
			}
			checkRefsKept(t, before, refState(t, w.store), what, moving...)
			checkExport(t, w.store, "org/base", baseTree, what)
			for _, e := range w.expect {
				if e.tree == nil || !hasRef(t, e.store, e.ref) {
					continue
				}
				if e.orEmpty && len(exportTree(t, e.store, e.ref)) == 0 {
					continue
				}
				checkExportOf(t, e.store, e.ref, e.tree, what+" ("+e.ref+")")
			}
			if w.check != nil {
				w.check(what)
			}
		}
		// The command re-runs to completion.
		if !srv.running() {
			srv.start()
		}
		if w.setup != nil {
			w.setup(kills)
		}
		if r := heftEnv(t, env, local, w.args(kills)...); r.code != 0 {
			t.Fatalf("%s: re-run after the kills: exit %d: %s", w.name, r.code, r.stderr)
		}
		for _, e := range w.expect {
			if e.tree != nil && hasRef(t, e.store, e.ref) {
				checkExportOf(t, e.store, e.ref, e.tree, w.name+" re-run")
			}
		}
		if w.name == "export" {
			got := hashTree(t, exportDest)
			if len(got) != len(baseTree) {
				t.Fatalf("export re-run wrote %d files, want %d", len(got), len(baseTree))
			}
			for p, h := range baseTree {
				if got[p] != h {
					t.Fatalf("export re-run: %s differs", p)
				}
			}
		}
		t.Logf("%s: %d kills over a %v run (%d finished first), %v", w.name, kills, full.Round(time.Millisecond), completed, time.Since(wstart).Round(time.Second))
	}
	srv.stop()
	if only == "" {
		checkExport(t, local, "org/hfo", otherTree, "hf-pulled")
		checkExportOf(t, server, "team/up", tunedTree, "uploaded")
	}
	// gc reclaims every leftover: a second gc finds nothing.
	for _, s := range []string{local, server} {
		mustHeft(t, s, "gc", "--grace", "0")
		r := mustHeft(t, s, "--json", "gc", "--grace", "0")
		if !strings.Contains(r.stdout, `"bytes_freed": 0`) {
			t.Errorf("%s: a second gc still freed bytes: %s", filepath.Base(s), r.stdout)
		}
		mustHeft(t, s, "verify", "--read-data")
	}
	// Known leak (reported, not yet fixed: store/ is being refactored): a kill
	// between writing a temp file with fsutil.WriteFileAtomic and renaming it
	// (the refs file, mostly) leaves a ".tmp-NAME-*" file outside packs/, which gc
	// does not sweep. Counted here so the long run reports it.
	for _, s := range []string{local, server} {
		var left []string
		filepath.Walk(s, func(p string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() && strings.HasPrefix(info.Name(), ".tmp-") && !strings.Contains(p, string(filepath.Separator)+"packs"+string(filepath.Separator)) {
				left = append(left, strings.TrimPrefix(p, s+string(filepath.Separator)))
			}
			return nil
		})
		if len(left) > 0 {
			t.Logf("%s: %d temp files outside packs/ that gc does not reclaim: %v", filepath.Base(s), len(left), left)
		}
	}
	t.Logf("%d workloads × %d kills in %v", ran, kills, time.Since(start).Round(time.Second))
}
