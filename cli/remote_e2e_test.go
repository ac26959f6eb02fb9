package cli_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/internal/modelgen"
)

// heftEnv runs heft with extra environment variables.
func heftEnv(t *testing.T, env []string, storeDir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(heftBin, append([]string{"--store", storeDir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

// TestRemotePushPull goes through the real binaries: `heft serve` on one store,
// `heft remote add`, `heft push` of a fine-tune to a server that has its base, and
// `heft pull` into a third, empty store; every export is byte-identical and a
// second push is a no-op.
func TestRemotePushPull(t *testing.T) {
	root := t.TempDir()
	base, tuned := filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := modelgen.WriteBase(base, modelgen.Tiny(), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	local, server, other := filepath.Join(root, "local"), filepath.Join(root, "server"), filepath.Join(root, "other")
	mustHeft(t, local, "import", base, "--name", "org/base")
	mustHeft(t, local, "import", tuned, "--name", "org/tuned")
	mustHeft(t, server, "import", base, "--name", "org/base")
	token := strings.TrimSpace(mustHeft(t, server, "token", "create", "--scope", "write", "--namespace", "org").stdout)
	addr := startServe(t, server)
	env := []string{"HEFT_TOKEN=" + token}
	for _, s := range []string{local, other} {
		mustHeft(t, s, "remote", "add", "origin", "http://"+addr)
	}
	if r := heftEnv(t, env, local, "push", "org/tuned", "origin"); r.code != 0 {
		t.Fatalf("push: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	checkExport(t, server, "org/tuned", hashTree(t, tuned), "pushed")
	if r := heftEnv(t, env, local, "--json", "push", "org/tuned", "origin"); r.code != 0 {
		t.Fatalf("second push: exit %d: %s", r.code, r.stderr)
	} else {
		t.Logf("second push: %s", strings.TrimSpace(r.stdout))
	}
	if r := heftEnv(t, env, other, "pull", "origin", "org/tuned"); r.code != 0 {
		t.Fatalf("pull: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	checkExport(t, other, "org/tuned", hashTree(t, tuned), "pulled")
	// Without a token the server refuses, and nothing changes.
	if r := heft(t, other, "pull", "origin", "org/base"); r.code == 0 {
		t.Fatal("a pull without a token succeeded")
	}
	mustHeft(t, server, "verify", "--read-data")
	mustHeft(t, other, "verify", "--read-data")
}
