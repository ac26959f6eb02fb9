package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/remote"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/internal/storeremote"
	"github.com/heft-dev/heft/store"
)

// runRemoteCLI runs heft with args as Main does, with the remote commands in the
// command tree (whether or not app.go registers them yet).
func runRemoteCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	app := NewApp(&out, &errb)
	for _, cmd := range []func() *cli.Command{cmdRemote, cmdPush, cmdPull} {
		c := cmd()
		if findCommand(app.Commands, c.Name) == nil {
			app.Commands = append(app.Commands, c)
		}
	}
	err := app.RunContext(context.Background(), interspersed(app, append([]string{"heft"}, args...)))
	code := ExitOK
	if err != nil {
		var silent silentExit
		if errors.As(err, &silent) {
			code = silent.code
		} else {
			fmt.Fprintf(&errb, "heft: %v\n", err)
			code = ExitCode(err)
		}
	}
	return code, out.String(), errb.String()
}

func TestRemotePushPullCLI(t *testing.T) {
	// A server store with a token for namespace acme.
	srvStore := store.TestStore(t, store.Options{ChunkSize: 32 << 10})
	tokens, err := hub.OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := tokens.Create("ci", "alice", []hub.Grant{{Namespace: "acme", Role: hub.RoleWrite}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(remote.NewHandler(storeremote.New(srvStore), remote.Options{Tokens: tokens}))
	t.Cleanup(srv.Close)
	t.Setenv("TEST_HEFT_TOKEN", token)

	root := t.TempDir()
	model, tuned := filepath.Join(root, "m"), filepath.Join(root, "t")
	if err := modelgen.WriteBase(model, modelgen.Tiny(), modelgen.Options{Seed: 5}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(model, tuned, modelgen.FineTuneOptions{Seed: 6}); err != nil {
		t.Fatal(err)
	}
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	mustRun := func(args ...string) string {
		t.Helper()
		code, out, errs := runRemoteCLI(t, args...)
		if code != 0 {
			t.Fatalf("heft %v: exit %d: %s", args, code, errs)
		}
		if strings.Contains(out+errs, token) {
			t.Fatalf("heft %v printed the token", args)
		}
		return out
	}
	mustRun("--store", a, "import", model, "--name", "acme/m")
	mustRun("--store", a, "remote", "add", "origin", srv.URL, "--token-env", "TEST_HEFT_TOKEN")
	fi, err := os.Stat(filepath.Join(a, remotesFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("remotes file: %v, %v", fi, err)
	}
	if data, _ := os.ReadFile(filepath.Join(a, remotesFile)); strings.Contains(string(data), token) {
		t.Fatal("remotes file holds the token")
	}
	if code, _, errs := runRemoteCLI(t, "--store", a, "remote", "add", "origin", srv.URL); code != ExitInput {
		t.Fatalf("adding a remote twice: exit %d %s", code, errs)
	}
	if code, _, _ := runRemoteCLI(t, "--store", a, "remote", "add", "x", "http://alice:secret@host"); code != ExitInput {
		t.Fatal("a URL with credentials was accepted")
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(mustRun("--store", a, "remote", "list", "--json")), &list); err != nil || len(list) != 1 || list[0]["token_set"] != true {
		t.Fatalf("remote list: %v %v", list, err)
	}

	out := mustRun("--store", a, "push", "acme/m", "origin")
	if !strings.Contains(out, "-> origin acme/m:main") {
		t.Fatalf("push output: %s", out)
	}
	var rep transferReport
	if err := json.Unmarshal([]byte(mustRun("--store", a, "push", "acme/m", "origin", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.UpToDate || rep.Objects != 0 || rep.Requests != 1 {
		t.Fatalf("second push: %+v", rep)
	}

	// Pull into another store under another name, then a fine-tune on top.
	mustRun("--store", b, "remote", "add", "origin", srv.URL, "--token-env", "TEST_HEFT_TOKEN")
	mustRun("--store", b, "pull", "origin", "acme/m", "--name", "copy")
	dest := filepath.Join(root, "export")
	mustRun("--store", b, "export", "copy", dest)
	want, _ := modelgen.TreeSHA256(model)
	got, _ := modelgen.TreeSHA256(dest)
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("pulled export differs:\n%v\n%v", got, want)
	}
	mustRun("--store", a, "import", tuned, "--name", "acme/m")
	if err := json.Unmarshal([]byte(mustRun("--store", a, "push", "acme/m", "origin", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.UpToDate || rep.Objects == 0 {
		t.Fatalf("push of the fine-tune: %+v", rep)
	}
	mustRun("--store", b, "pull", "origin", "acme/m", "--name", "copy")

	// b commits something else to acme/m and pushes: not a fast-forward.
	mustRun("--store", b, "import", model, "--name", "acme/m", "--message", "diverged")
	code, _, errs := runRemoteCLI(t, "--store", b, "push", "acme/m", "origin")
	if code != ExitInput || !strings.Contains(errs, "does not descend") {
		t.Fatalf("diverged push: exit %d: %s", code, errs)
	}
	// A bad token is the caller's problem (exit 1), and is not printed.
	t.Setenv("TEST_HEFT_TOKEN", "heft_wrong")
	if code, _, errs := runRemoteCLI(t, "--store", b, "pull", "origin", "acme/m"); code != ExitInput || strings.Contains(errs, "heft_wrong") {
		t.Fatalf("pull with a bad token: exit %d: %s", code, errs)
	}
	if code, _, _ := runRemoteCLI(t, "--store", b, "pull", "nowhere", "acme/m"); code != ExitInput {
		t.Fatal("pull from an unknown remote")
	}
	mustRun("--store", b, "remote", "remove", "origin")
	if code, _, _ := runRemoteCLI(t, "--store", b, "remote", "remove", "origin"); code != ExitInput {
		t.Fatal("removing a missing remote")
	}
}
