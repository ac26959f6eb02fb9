package cli_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/store/backend/s3/s3test"
)

// sharedS3 starts the S3 server the shared-store tests run over: versitygw, or
// SeaweedFS (the distributed store) with HEFT_TEST_SEAWEEDFS=1.
func sharedS3(t *testing.T) *s3test.Server {
	if os.Getenv("HEFT_TEST_SEAWEEDFS") == "1" {
		return s3test.SeaweedFS(t)
	}
	return s3test.VersityGW(t)
}

// TestSharedStoreNodes runs three `heft serve` nodes, each with its own
// directory, over one bucket (issue 7): what is pushed through one node
// downloads byte-identically from the others; concurrent pushes of one ref
// through different nodes give one winner and a conflict; gc on one node while
// another receives pushes loses nothing; a node SIGKILLed mid-push leaves the
// bucket consistent (verify --read-data clean from another node) and the push
// completes when re-run.
func TestSharedStoreNodes(t *testing.T) {
	srv := sharedS3(t)
	bucket := srv.NewBucket(t)
	url := fmt.Sprintf("s3://%s/heft?endpoint=%s&region=us-east-1&consistent-list=true", bucket, srv.Endpoint)
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)

	root := t.TempDir()
	base, tuned, other := filepath.Join(root, "base"), filepath.Join(root, "tuned"), filepath.Join(root, "other")
	if err := modelgen.WriteBase(base, modelgen.Sized(24<<20), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, other, modelgen.FineTuneOptions{Seed: 3}); err != nil {
		t.Fatal(err)
	}
	baseTree, tunedTree, otherTree := hashTree(t, base), hashTree(t, tuned), hashTree(t, other)

	const n = 3
	var nodes []string
	var serves []*serveProc
	var env []string
	local1, local2 := filepath.Join(root, "local1"), filepath.Join(root, "local2")
	for i := range n {
		dir := filepath.Join(root, fmt.Sprintf("node%d", i))
		out := mustHeft(t, dir, "init", "--backend", url).stdout
		if !strings.Contains(out, "packs and refs in s3://"+bucket) {
			t.Fatalf("init: %s", out)
		}
		// Tokens are each node's own.
		tok := strings.TrimSpace(mustHeft(t, dir, "token", "create", "--scope", "write", "--namespace", "org").stdout)
		env = append(env, fmt.Sprintf("TOK%d=%s", i, tok))
		sp := newServe(t, dir)
		sp.start()
		nodes, serves = append(nodes, dir), append(serves, sp)
		for _, l := range []string{local1, local2} {
			mustHeft(t, l, "remote", "add", fmt.Sprintf("n%d", i), "http://"+sp.addr, "--token-env", fmt.Sprintf("TOK%d", i))
		}
	}
	run := func(store string, args ...string) result {
		t.Helper()
		return heftEnv(t, env, store, args...)
	}
	mustRun := func(store string, args ...string) result {
		t.Helper()
		r := run(store, args...)
		if r.code != 0 {
			t.Fatalf("heft %v on %s: exit %d: %s%s", args, filepath.Base(store), r.code, r.stdout, r.stderr)
		}
		return r
	}
	doctor := mustHeft(t, nodes[0], "doctor")
	if !strings.Contains(doctor.stdout, "compare-and-swap refuses a stale version") || strings.Contains(doctor.stdout, "FAILED") {
		t.Fatalf("doctor: %s", doctor.stdout)
	}

	phase := time.Now()
	lap := func(what string) {
		t.Logf("%s: %s", what, time.Since(phase).Round(time.Millisecond))
		phase = time.Now()
	}
	// 1. Pushed through node 0, downloadable from the others.
	mustRun(local1, "import", base, "--name", "org/base")
	mustRun(local1, "import", tuned, "--name", "org/tuned")
	mustRun(local1, "push", "org/base", "n0")
	mustRun(local1, "push", "org/tuned", "n0")
	for i := 1; i < n; i++ {
		pulled := filepath.Join(root, fmt.Sprintf("pulled%d", i))
		mustRun(pulled, "remote", "add", "src", "http://"+serves[i].addr, "--token-env", fmt.Sprintf("TOK%d", i))
		mustRun(pulled, "pull", "src", "org/tuned")
		checkExportOf(t, pulled, "org/tuned", tunedTree, fmt.Sprintf("pulled from node %d", i))
		checkExportOf(t, nodes[i], "org/base", baseTree, fmt.Sprintf("node %d", i))
	}

	lap("push through node 0, pulls from nodes 1 and 2")
	// Uploaded through node 0's Hub API (preupload, LFS batch, commit), downloaded
	// through node 1's.
	hfEnv := func(i int) []string {
		tok := strings.TrimPrefix(env[i], fmt.Sprintf("TOK%d=", i))
		return append(append([]string{}, env...), "HF_ENDPOINT=http://"+serves[i].addr, "HF_TOKEN="+tok, "HF_HUB_DISABLE_XET=1",
			"NO_PROXY=127.0.0.1", "HF_HOME="+filepath.Join(root, "hf-home"))
	}
	if r := heftEnv(t, hfEnv(0), local1, "push", "org/base", "hf://org/uploaded"); r.code != 0 {
		t.Fatalf("hub upload through node 0: %s", r.stderr)
	}
	hfPulled := filepath.Join(root, "hf-pulled")
	if r := heftEnv(t, hfEnv(1), hfPulled, "pull", "hf://org/uploaded", "--name", "org/uploaded"); r.code != 0 {
		t.Fatalf("hub download through node 1: %s", r.stderr)
	}
	checkExportOf(t, hfPulled, "org/uploaded", baseTree, "uploaded through node 0, downloaded through node 1")

	lap("hub upload and download")
	// 2. Concurrent pushes of one ref through different nodes: one winner.
	mustRun(local1, "import", other, "--name", "org/race")
	mustRun(local2, "import", tuned, "--name", "org/race")
	for round := range 3 {
		to := fmt.Sprintf("org/race%d", round)
		var wg sync.WaitGroup
		res := make([]result, 2)
		for j, l := range []string{local1, local2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[j] = run(l, "push", "org/race", fmt.Sprintf("n%d", j), "--to", to)
			}()
		}
		wg.Wait()
		wins := 0
		for j, r := range res {
			switch {
			case r.code == 0:
				wins++
				want := []map[string]string{otherTree, tunedTree}[j]
				checkExportOf(t, nodes[2], to, want, "race winner on node 2")
			case r.code == 1 && (strings.Contains(r.stderr, "conflict") || strings.Contains(r.stderr, "changed concurrently")):
				t.Logf("round %d, losing push: %s", round, strings.TrimSpace(r.stderr))
			default:
				t.Fatalf("round %d push %d: exit %d: %s", round, j, r.code, r.stderr)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners", round, wins)
		}
	}

	lap("concurrent pushes")
	// 3. gc on node 2, in a loop, while node 1 receives pushes.
	stop := make(chan struct{})
	gcDone := make(chan int)
	go func() {
		runs := 0
		for {
			select {
			case <-stop:
				gcDone <- runs
				return
			default:
			}
			if r := run(nodes[2], "gc", "--grace", "0"); r.code != 0 {
				t.Errorf("gc on node 2: exit %d: %s", r.code, r.stderr)
			}
			runs++
			time.Sleep(200 * time.Millisecond) // room for the writers between runs
		}
	}()
	for k, ref := range []string{"org/base", "org/tuned", "org/race", "org/base", "org/tuned", "org/race"} {
		mustRun(local1, "push", ref, "n1", "--to", fmt.Sprintf("org/during-gc%d", k))
	}
	close(stop)
	if runs := <-gcDone; runs == 0 {
		t.Fatal("gc never ran during the pushes")
	} else {
		t.Logf("gc ran %d times on node 2 during the pushes to node 1", runs)
	}
	for k, tree := range []map[string]string{baseTree, tunedTree, otherTree, baseTree, tunedTree, otherTree} {
		checkExportOf(t, nodes[k%n], fmt.Sprintf("org/during-gc%d", k), tree, "pushed during gc")
	}

	lap("gc during pushes")
	// 4. Node 0 SIGKILLed in the middle of pushes, each of a model the bucket
	// does not have yet (so the kill lands while data moves).
	fresh := func(k int) (string, map[string]string) {
		dir := filepath.Join(root, fmt.Sprintf("fresh%d", k))
		if err := modelgen.FineTune(base, dir, modelgen.FineTuneOptions{Seed: uint64(10 + k)}); err != nil {
			t.Fatal(err)
		}
		mustRun(local2, "import", dir, "--name", fmt.Sprintf("org/fresh%d", k))
		return dir, hashTree(t, dir)
	}
	fresh(0)
	rng := rand.New(rand.NewPCG(3, 4))
	t0 := time.Now()
	mustRun(local2, "push", "org/fresh0", "n0")
	full := time.Since(t0)
	interrupted, kills := 0, killCount()
	for k := 1; k <= kills; k++ {
		_, tree := fresh(k)
		ref := fmt.Sprintf("org/fresh%d", k)
		cmd := heftCmd(local2, env, "push", ref, "n0")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		time.Sleep(time.Duration(rng.Int64N(int64(full) + 1)))
		serves[0].kill()
		pushErr := <-done
		if pushErr != nil {
			interrupted++
		}
		if r := heft(t, nodes[1], "verify", "--read-data"); r.code != 0 {
			t.Fatalf("kill %d: verify from node 1: exit %d: %s%s", k, r.code, r.stdout, r.stderr)
		}
		if hasRef(t, nodes[1], ref) {
			checkExportOf(t, nodes[1], ref, tree, fmt.Sprintf("kill %d", k))
		} else if pushErr == nil {
			t.Fatalf("kill %d: the push succeeded but node 1 lacks %s", k, ref)
		}
		serves[0].start()
		mustRun(local2, "push", ref, "n0")
		checkExportOf(t, nodes[2], ref, tree, fmt.Sprintf("kill %d, re-run", k))
	}
	t.Logf("%d of %d pushes were interrupted by the kill (a push takes %s)", interrupted, kills, full.Round(time.Millisecond))
	lap("kills")
	for i, dir := range nodes {
		if r := heft(t, dir, "verify", "--read-data"); r.code != 0 {
			t.Fatalf("node %d: verify: %s%s", i, r.stdout, r.stderr)
		}
	}
}
