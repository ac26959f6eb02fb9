package cli_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/internal/modelgen"
)

// heftAt runs heft with a failpoint armed and returns whether the process
// stopped there (false: the workload never reached it and finished).
func heftAt(t *testing.T, storeDir, fp string, env []string, args ...string) bool {
	t.Helper()
	cmd := heftCmd(storeDir, append(env, "HEFT_FAILPOINT="+fp), args...)
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

// serveAt runs `heft serve` on srv's store with a failpoint armed while client
// (a heft command against it) runs, and returns whether the server stopped there.
// When it does, the client is killed (it would only retry); when the client
// finishes first, the server is stopped.
func serveAt(t *testing.T, srv *serveProc, fp string, client *exec.Cmd) bool {
	t.Helper()
	srv.start("HEFT_FAILPOINT=" + fp)
	out := &strings.Builder{}
	client.Stdout, client.Stderr = out, out
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- client.Wait() }()
	serverStopped := func() bool {
		if code := exitCode(srv.err); code != failpoint.ExitCode {
			t.Fatalf("heft serve with failpoint %s exited %d: %s", fp, code, srv.log.String())
		}
		srv.cmd = nil
		return true
	}
	select {
	case <-srv.done:
		client.Process.Kill()
		<-done
		return serverStopped()
	case err := <-done:
		if err == nil {
			srv.stop()
			return false
		}
		// The client failed: the server must have stopped at the failpoint.
		select {
		case <-srv.done:
			return serverStopped()
		case <-time.After(10 * time.Second):
			t.Fatalf("heft %v failed with the server running (failpoint %s): %v\n%s", client.Args, fp, err, out)
		}
	}
	return false
}

// TestFailpoints stops real heft processes at every failpoint of every workload —
// import, an op writing recipes (quantize), export, tag, rm, gc, a pull from a heft
// remote and from the Hub API of `heft serve`, and `heft serve` itself while it
// receives a `heft push` and a Hub upload commit — and checks what a restart
// finds: the store verifies (--read-data), every ref committed before is unchanged
// and exports exactly as before (an oracle kept outside the store), the ref the
// workload moves is either as it was or complete, an export left the store
// untouched, the workload re-runs to completion, and gc --grace 0 then brings the
// store's physical bytes to what the uninterrupted run leaves (and a second gc finds
// nothing). Every pair is tried; the test fails if a workload no longer reaches a
// failpoint it is known to pass.
func TestFailpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the failpoint matrix")
	}
	root := t.TempDir()
	models := map[string]string{}
	trees := map[string]map[string]string{}
	for _, m := range []struct {
		name string
		seed uint64
	}{{"base", 1}, {"tuned", 2}, {"other", 3}, {"mine", 4}, {"spare", 5}} {
		dir := filepath.Join(root, m.name)
		var err error
		if m.name == "base" {
			err = modelgen.WriteBase(dir, modelgen.Tiny(), modelgen.Options{Seed: 1, Shards: 2})
		} else {
			err = modelgen.FineTune(models["base"], dir, modelgen.FineTuneOptions{Seed: m.seed})
		}
		if err != nil {
			t.Fatal(err)
		}
		models[m.name], trees[m.name] = dir, hashTree(t, dir)
	}

	// The client store: org/doomed's history holds unique packs for gc.
	localTpl, serverTpl := filepath.Join(root, "local-template"), filepath.Join(root, "server-template")
	mustHeft(t, localTpl, "import", models["base"], "--name", "org/base")
	mustHeft(t, localTpl, "import", models["base"], "--name", "org/doomed")
	mustHeft(t, localTpl, "import", models["tuned"], "--name", "org/doomed", "--no-delta")
	mustHeft(t, localTpl, "import", models["mine"], "--name", "org/mine")
	// org/partial's pack also holds the one file of org/keep: once org/partial
	// is gone, gc rewrites that pack rather than deleting it.
	extra := make([]byte, 64<<10)
	rand.NewChaCha8([32]byte{1}).Read(extra)
	keep := filepath.Join(root, "keep")
	os.MkdirAll(keep, 0o755)
	os.WriteFile(filepath.Join(keep, "extra.bin"), extra, 0o644)
	os.WriteFile(filepath.Join(models["spare"], "extra.bin"), extra, 0o644)
	trees["spare"], trees["keep"] = hashTree(t, models["spare"]), hashTree(t, keep)
	mustHeft(t, localTpl, "import", models["spare"], "--name", "org/partial", "--no-delta")
	mustHeft(t, localTpl, "import", keep, "--name", "org/keep")
	localOracle := map[string]map[string]string{"org/base": trees["base"], "org/doomed": trees["tuned"], "org/mine": trees["mine"],
		"org/partial": trees["spare"], "org/keep": trees["keep"]}
	// The server: a model the client lacks (for the pulls) and a Hub repo the
	// client's upload commits to.
	mustHeft(t, serverTpl, "import", models["base"], "--name", "org/base")
	mustHeft(t, serverTpl, "import", models["other"], "--name", "org/other")
	token := strings.TrimSpace(mustHeft(t, serverTpl, "token", "create", "--scope", "write", "--namespace", "org", "--namespace", "team").stdout)
	serverOracle := map[string]map[string]string{"org/base": trees["base"], "org/other": trees["other"], "team/up": trees["base"]}

	// pullSrv serves the pulls (it is only read); caseSrv is the server under
	// test, restarted on one address for every case.
	pullStore := filepath.Join(root, "pull-server")
	copyStore(t, serverTpl, pullStore)
	pullSrv := newServe(t, pullStore)
	pullSrv.start()
	caseSrv := newServe(t, serverTpl)
	caseSrv.start()
	hubEnv := func(addr string) []string {
		return []string{"HEFT_TOKEN=" + token, "HF_ENDPOINT=http://" + addr, "HF_TOKEN=" + token,
			"HF_HUB_DISABLE_XET=1", "NO_PROXY=127.0.0.1", "HF_HOME=" + filepath.Join(root, "hf-home")}
	}
	mustHeft(t, localTpl, "remote", "add", "origin", "http://"+pullSrv.addr)
	mustHeft(t, localTpl, "remote", "add", "target", "http://"+caseSrv.addr)
	if r := heftEnv(t, hubEnv(caseSrv.addr), localTpl, "push", "org/base", "hf://team/up"); r.code != 0 {
		t.Fatalf("creating team/up: %s", r.stderr)
	}
	caseSrv.stop()
	// The Hub adds a .gitattributes to the repo it creates.
	if got := exportTree(t, serverTpl, "team/up"); len(got) != len(trees["base"]) {
		t.Fatalf("team/up holds %d files", len(got))
	}

	type workload struct {
		name   string
		server bool   // the failpoint is armed in heft serve (the client runs without)
		env    string // the Hub endpoint the client uses: "pull" or "case"
		args   []string
		before func(local string) // runs (without failpoint) before the command
		ref    string             // the ref the command creates or moves ("": none)
		tree   map[string]string  // what ref exports when it exists (nil: not compared)
		alt    map[string]string  // another tree ref may still export (its state before)
		gone   bool               // the command deletes ref
		export string             // the export destination (export workload)
		// recommit: re-running the command once it has moved its ref makes one
		// more commit (import, quantize), so the store then holds what two
		// uninterrupted runs leave.
		recommit bool
	}
	exportDest := filepath.Join(root, "exported")
	workloads := []workload{
		{name: "import", args: []string{"import", models["tuned"], "--name", "org/tuned"}, ref: "org/tuned", tree: trees["tuned"], recommit: true},
		{name: "quantize", args: []string{"quantize", "org/base", "--scheme", "fp8-block", "--skip-vllm-checks", "--name", "org/fp8"}, ref: "org/fp8", recommit: true},
		{name: "export", args: []string{"export", "org/base", exportDest}, export: exportDest},
		{name: "tag", args: []string{"tag", "org/base", "org/base:v1"}, ref: "org/base:v1", tree: trees["base"]},
		{name: "rm", args: []string{"rm", "org/doomed"}, ref: "org/doomed", alt: trees["tuned"], gone: true},
		{name: "gc", args: []string{"gc", "--grace", "0"}, before: func(local string) {
			mustHeft(t, local, "rm", "org/doomed")
			mustHeft(t, local, "rm", "org/partial")
		}},
		{name: "pull", env: "pull", args: []string{"pull", "origin", "org/other"}, ref: "org/other", tree: trees["other"]},
		{name: "hf-pull", env: "pull", args: []string{"pull", "hf://org/other", "--name", "org/hfo"}, ref: "org/hfo", tree: trees["other"]},
		{name: "serve receiving push", server: true, args: []string{"push", "org/mine", "target"}, ref: "org/mine", tree: trees["mine"]},
		{name: "serve receiving hub commit", server: true, env: "case", args: []string{"push", "org/mine", "hf://team/up"}, ref: "team/up", tree: trees["mine"], alt: trees["base"]},
	}

	only := os.Getenv("HEFT_FAILPOINT_WORKLOADS") // a comma-separated subset, to debug one
	// runCase runs w stopped at fp ("": not stopped, a reference run, re-run only
	// if twice) on fresh copies of the stores, checks everything, and returns
	// whether the process stopped, whether the ref had moved when it stopped, and
	// the physical bytes gc leaves.
	runCase := func(w workload, fp string, twice bool) (bool, bool, int64) {
		what := w.name + " stopped at " + fp
		if fp == "" {
			what = w.name + " (uninterrupted)"
		}
		local, srvStore := filepath.Join(root, "local"), filepath.Join(root, "server")
		copyStore(t, localTpl, local)
		copyStore(t, serverTpl, srvStore)
		os.RemoveAll(exportDest)
		if w.before != nil {
			w.before(local)
		}
		env := hubEnv(pullSrv.addr)
		if w.env == "case" {
			env = hubEnv(caseSrv.addr)
		}
		subject, oracle := local, localOracle
		if w.server {
			subject, oracle = srvStore, serverOracle
		}
		refsBefore := refState(t, subject)
		digest := storeDigest(t, subject)
		caseSrv.store = srvStore

		var stopped bool
		if w.server {
			stopped = serveAt(t, caseSrv, fp, heftCmd(local, env, w.args...))
		} else {
			stopped = heftAt(t, local, fp, env, w.args...)
		}

		// After the crash: the store verifies, committed refs are unchanged and
		// export as before, the moving ref is as it was or complete.
		if r := heft(t, subject, "verify", "--read-data"); r.code != 0 {
			t.Fatalf("%s: verify exit %d: %s%s", what, r.code, r.stdout, r.stderr)
		}
		checkRefsKept(t, refsBefore, refState(t, subject), what, w.ref)
		for ref, tree := range oracle {
			if ref != w.ref && refsBefore[ref+":main"] != "" {
				checkExportOf(t, subject, ref, tree, what)
			}
		}
		checkMoving := func(when string) {
			if w.ref == "" || !hasRef(t, subject, w.ref) {
				return
			}
			if w.gone && w.alt == nil {
				t.Fatalf("%s: %s still exists %s", what, w.ref, when)
			}
			got := exportTree(t, subject, w.ref)
			if w.tree == nil || sameHashes(got, w.tree) || (w.alt != nil && sameHashes(got, w.alt)) {
				return
			}
			t.Fatalf("%s: %s exports neither its old nor its new files %s", what, w.ref, when)
		}
		checkMoving("after the crash")
		moved := w.ref != "" && !w.gone && hasRef(t, subject, w.ref) && refsBefore[w.ref] == "" && refsBefore[w.ref+":main"] == ""
		if w.export != "" && storeDigest(t, subject) != digest {
			t.Fatalf("%s: export changed the store", what)
		}

		// The workload re-runs to completion.
		switch {
		case fp == "" && !twice:
		case w.server:
			caseSrv.start()
			if r := heftEnv(t, env, local, w.args...); r.code != 0 {
				t.Fatalf("%s: re-run exit %d: %s", what, r.code, r.stderr)
			}
			caseSrv.stop()
		case w.export != "":
			if stopped {
				// No file with wrong bytes at its final name: the destination
				// does not exist yet, and the re-run needs no clean-up.
				if _, err := os.Stat(exportDest); !os.IsNotExist(err) {
					t.Fatalf("%s: the interrupted export left %s (%v)", what, exportDest, err)
				}
				mustHeft(t, local, w.args...)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(exportDest), ".*heft-export*")); len(left) != 0 {
				t.Fatalf("%s: the export left %v", what, left)
			}
			if !sameHashes(hashTree(t, exportDest), trees["base"]) {
				t.Fatalf("%s: the re-run export differs", what)
			}
			if storeDigest(t, subject) != digest {
				t.Fatalf("%s: export changed the store", what)
			}
		default:
			r := heftEnv(t, env, local, w.args...)
			ok := r.code == 0 ||
				(w.name == "tag" && strings.Contains(r.stderr, "exists")) ||
				(w.gone && !hasRef(t, local, w.ref))
			if !ok {
				t.Fatalf("%s: re-run exit %d: %s", what, r.code, r.stderr)
			}
		}
		if w.ref != "" {
			if w.gone {
				if hasRef(t, subject, w.ref) {
					t.Fatalf("%s: %s still exists after the re-run", what, w.ref)
				}
			} else if !hasRef(t, subject, w.ref) {
				t.Fatalf("%s: %s missing after the re-run", what, w.ref)
			} else if w.tree != nil && !sameHashes(exportTree(t, subject, w.ref), w.tree) {
				t.Fatalf("%s: %s after the re-run exports other files", what, w.ref)
			}
		}

		// gc reclaims what the crash left: a second gc finds nothing to do.
		gcOut := mustHeft(t, subject, "gc", "--grace", "0").stdout
		physical := packBytes(subject)
		if testing.Verbose() && only != "" {
			t.Logf("%s: %d bytes of packs: %s\n%s", what, physical, packList(subject), gcOut)
		}
		var g struct {
			Deleted   int   `json:"packs_deleted"`
			Rewritten int   `json:"packs_rewritten"`
			Orphans   int   `json:"orphan_packs_deleted"`
			Temp      int   `json:"temp_files_deleted"`
			Freed     int64 `json:"bytes_freed"`
		}
		if err := json.Unmarshal([]byte(mustHeft(t, subject, "--json", "gc", "--grace", "0").stdout), &g); err != nil {
			t.Fatal(err)
		}
		if g.Deleted+g.Rewritten+g.Orphans+g.Temp != 0 || g.Freed != 0 {
			t.Fatalf("%s: a second gc still found %+v", what, g)
		}
		if r := heft(t, subject, "verify", "--read-data"); r.code != 0 || strings.Contains(r.stdout, "not indexed") {
			t.Fatalf("%s: final verify exit %d: %s", what, r.code, r.stdout)
		}
		return stopped, moved, physical
	}

	stopped, ran := map[string]bool{}, map[string]bool{}
	pairs, stops := 0, 0
	// HEFT_FAILPOINT_DEPTH (default 1; the long run uses 3) also stops each
	// workload the 2nd, 3rd… time it reaches a step.
	depth := 1
	if v, err := strconv.Atoi(os.Getenv("HEFT_FAILPOINT_DEPTH")); err == nil && v > 1 {
		depth = v
	}
	for _, w := range workloads {
		if only != "" && !strings.Contains(","+only+",", ","+w.name+",") {
			continue
		}
		ran[w.name] = true
		_, _, once := runCase(w, "", false)
		_, _, twice := runCase(w, "", true)
		for _, fp := range failpoint.All {
			// The n-th time the step is reached, for n up to depth, while the
			// workload still reaches it that often.
			for n := 1; n <= depth; n++ {
				spec := fp
				if n > 1 {
					spec = fmt.Sprintf("%s@%d", fp, n)
				}
				hit, moved, physical := runCase(w, spec, false)
				if !hit {
					break
				}
				stops++
				if n == 1 {
					stopped[w.name+" "+fp] = true
					pairs++
				}
				// Commits carry a time, so their compressed size varies by a
				// byte or two; anything gc failed to reclaim is at least a pack
				// (hundreds of bytes).
				want := once
				if w.recommit && moved {
					want = twice
				}
				if d := physical - want; d > 64 || d < -64 {
					t.Errorf("%s stopped at %s: after the re-run and gc the store holds %d bytes of packs, the uninterrupted run leaves %d", w.name, spec, physical, want)
				}
			}
		}
	}
	pullSrv.stop()

	// Every durable step must have been reached by the workloads that pass it.
	writes := []string{failpoint.PackBeforeSync, failpoint.PackBeforeRename, failpoint.PackBeforeDirSync,
		failpoint.IndexBeforeCommit, failpoint.IndexAfterCommit, failpoint.RefBeforeUpdate, failpoint.RefAfterUpdate}
	want := map[string][]string{
		"import":                     writes,
		"quantize":                   writes,
		"export":                     {failpoint.ExportMidWrite},
		"tag":                        {failpoint.RefBeforeUpdate, failpoint.RefAfterUpdate},
		"rm":                         {failpoint.RefBeforeUpdate, failpoint.RefAfterUpdate},
		"gc":                         {failpoint.GCBeforeSweep, failpoint.GCAfterForgetPack, failpoint.GCAfterRewritePack},
		"pull":                       append([]string{failpoint.PullBeforeRefMove}, writes...),
		"hf-pull":                    append([]string{failpoint.PullBeforeRefMove}, writes...),
		"serve receiving push":       append([]string{failpoint.ServerBeforeRefMove}, writes...),
		"serve receiving hub commit": append([]string{failpoint.ServerBeforeRefMove}, writes...),
	}
	for w, fps := range want {
		if !ran[w] {
			continue
		}
		for _, fp := range fps {
			if !stopped[w+" "+fp] {
				t.Errorf("%s: the process never reached failpoint %s", w, fp)
			}
		}
	}
	var reached []string
	for _, w := range workloads {
		var fps []string
		for _, fp := range failpoint.All {
			if stopped[w.name+" "+fp] {
				fps = append(fps, fp)
			}
		}
		sort.Strings(fps)
		reached = append(reached, fmt.Sprintf("%s: %d (%s)", w.name, len(fps), strings.Join(fps, ", ")))
	}
	t.Logf("%d workloads × %d failpoints: %d (workload, failpoint) pairs stopped there (%d stops, up to the %d-th hit) and were checked\n%s",
		len(workloads), len(failpoint.All), pairs, stops, depth, strings.Join(reached, "\n"))
}

func packList(dir string) string {
	var out []string
	filepath.Walk(filepath.Join(dir, "packs"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			out = append(out, fmt.Sprintf("%s:%d", filepath.Base(p)[:8], info.Size()))
		}
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, " ")
}

// sameHashes reports whether two trees (path → sha256) are equal.
func sameHashes(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for p, h := range a {
		if b[p] != h {
			return false
		}
	}
	return true
}

// checkExport exports ref and compares every file with want. The export is
// removed afterwards (kill tests export thousands of times).
func checkExport(t *testing.T, storeDir, ref string, want map[string]string, what string) {
	t.Helper()
	dir := t.TempDir()
	defer os.RemoveAll(dir)
	dest := filepath.Join(dir, "export")
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
