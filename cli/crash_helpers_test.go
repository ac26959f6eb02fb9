package cli_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helpers shared by the crash tests (TestFailpoints, TestKillWorkloads): real heft
// processes stopped at failpoints or killed, with the oracle kept outside the
// stores under test.

// heftCmd returns an unstarted heft command on storeDir with extra environment.
func heftCmd(storeDir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(heftBin, append([]string{"--store", storeDir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// exitCode is the exit status of a finished command's Wait error (-1: killed).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -2
}

// refState lists a store's refs and their commits (`heft ls --json`).
func refState(t testing.TB, storeDir string) map[string]string {
	t.Helper()
	r := mustHeft(t, storeDir, "--json", "ls")
	var rows []struct {
		Ref    string `json:"ref"`
		Commit string `json:"commit"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("ls --json: %v: %s", err, r.stdout)
	}
	out := map[string]string{}
	for _, row := range rows {
		out[row.Ref] = row.Commit
	}
	return out
}

// checkRefsKept fails unless every ref of before, except those in moving, is in
// after at the same commit.
func checkRefsKept(t testing.TB, before, after map[string]string, what string, moving ...string) {
	t.Helper()
	for ref, c := range before {
		skip := false
		for _, m := range moving {
			if ref == m || ref == m+":main" || strings.TrimSuffix(ref, ":main") == m {
				skip = true
			}
		}
		if skip {
			continue
		}
		if after[ref] != c {
			t.Fatalf("%s: committed ref %s was at %s, now %q", what, ref, c, after[ref])
		}
	}
}

// hasRef reports whether ref exists in storeDir.
func hasRef(t testing.TB, storeDir, ref string) bool {
	t.Helper()
	return heft(t, storeDir, "show", ref).code == 0
}

// checkExportOf is checkExport that ignores a .gitattributes the Hub adds to a
// repo it creates.
func checkExportOf(t testing.TB, storeDir, ref string, want map[string]string, what string) {
	t.Helper()
	dir := t.TempDir()
	defer os.RemoveAll(dir)
	dest := filepath.Join(dir, "export")
	if r := heft(t, storeDir, "export", ref, dest); r.code != 0 {
		t.Fatalf("%s: export %s: exit %d: %s", what, ref, r.code, r.stderr)
	}
	got := hashTree(t, dest)
	delete(got, ".gitattributes")
	if len(got) != len(want) {
		t.Fatalf("%s: %s exports %d files, want %d", what, ref, len(got), len(want))
	}
	for p, h := range want {
		if got[p] != h {
			t.Fatalf("%s: %s: %s differs", what, ref, p)
		}
	}
}

// exportTree exports ref and returns its files' sha256, without the .gitattributes
// the Hub adds to a repo it creates.
func exportTree(t testing.TB, storeDir, ref string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	defer os.RemoveAll(dir)
	dest := filepath.Join(dir, "export")
	if r := heft(t, storeDir, "export", ref, dest); r.code != 0 {
		t.Fatalf("export %s: exit %d: %s", ref, r.code, r.stderr)
	}
	got := hashTree(t, dest)
	delete(got, ".gitattributes")
	return got
}

// storeDigest hashes every file of a store except its lock files, to show that an
// operation left it untouched.
func storeDigest(t testing.TB, storeDir string) string {
	t.Helper()
	var names []string
	sums := map[string]string{}
	err := filepath.Walk(storeDir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(storeDir, p)
		if info.IsDir() || strings.HasPrefix(rel, "locks"+string(filepath.Separator)) {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		names = append(names, rel)
		sums[rel] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%s %s\n", n, sums[n])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// copyStore copies a template store (cp -a) to dst, replacing dst.
func copyStore(t testing.TB, src, dst string) {
	t.Helper()
	os.RemoveAll(dst)
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// serveProc is a `heft serve` process that tests start, stop at a failpoint,
// kill and restart on the same address.
type serveProc struct {
	t     testing.TB
	store string
	addr  string
	cmd   *exec.Cmd
	done  chan struct{}
	err   error // Wait's, once done is closed
	log   bytes.Buffer
}

func newServe(t testing.TB, storeDir string) *serveProc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &serveProc{t: t, store: storeDir, addr: ln.Addr().String()}
	ln.Close()
	t.Cleanup(p.kill)
	return p
}

// start runs the server with extra environment (a failpoint) and waits until it
// listens.
func (p *serveProc) start(env ...string) {
	p.t.Helper()
	p.cmd = heftCmd(p.store, env, "serve", "--addr", p.addr)
	p.log.Reset()
	p.cmd.Stderr = &p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		p.err = cmd.Wait()
		close(done)
	}(p.cmd, p.done)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", p.addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("heft serve exited at start: %v\n%s", p.err, p.log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("heft serve did not listen on %s", p.addr)
}

func (p *serveProc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop ends the server gracefully.
func (p *serveProc) stop() {
	if p.running() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	}
	p.cmd = nil
}

// kill SIGKILLs the server.
func (p *serveProc) kill() {
	if p.running() {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

// deleteHubRepo deletes a repo through the Hub API (which also forgets its
// uploads); a repo that does not exist is not an error.
func deleteHubRepo(t testing.TB, addr, token, repo string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": repo, "type": "model"})
	req, err := http.NewRequest(http.MethodDelete, "http://"+addr+"/api/repos/delete", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 && resp.StatusCode != 404 {
		t.Fatalf("delete %s: HTTP %d", repo, resp.StatusCode)
	}
}
