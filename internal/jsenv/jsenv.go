// Package jsenv installs npm packages that interop tests run real JavaScript
// clients with (@huggingface/hub). Packages are installed once per requirement set
// under $HEFT_NODE_MODULES, or .venv/node at the module root (gitignored). Tests skip
// when node or npm is missing or the registry cannot be reached.
package jsenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Dir returns a directory whose node_modules holds packages (npm specs such as
// "@huggingface/hub@2"); node scripts run with it as their working directory (or
// NODE_PATH) find them.
func Dir(t testing.TB, name string, packages ...string) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not found; skipping a JavaScript interop test")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm not found; skipping a JavaScript interop test")
	}
	root := os.Getenv("HEFT_NODE_MODULES")
	if root == "" {
		dir, _ := os.Getwd()
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				root = filepath.Join(dir, ".venv", "node")
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				t.Fatal("jsenv: no go.mod above the working directory; set HEFT_NODE_MODULES")
			}
			dir = parent
		}
	}
	sum := sha256.Sum256([]byte(strings.Join(packages, "\n")))
	dir := filepath.Join(root, name+"-"+hex.EncodeToString(sum[:4]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	stamp := filepath.Join(dir, "heft-ready")
	if _, err := os.Stat(stamp); err == nil {
		return dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"name":"heft-interop","private":true,"type":"module"}`), 0o644)
	cmd := exec.CommandContext(ctx, npm, append([]string{"install", "--no-audit", "--no-fund", "--silent"}, packages...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		s := string(out)
		if ctx.Err() != nil || strings.Contains(s, "ENOTFOUND") || strings.Contains(s, "ECONNREFUSED") || strings.Contains(s, "ETIMEDOUT") || strings.Contains(s, "EAI_AGAIN") {
			t.Skipf("npm cannot reach the registry; skipping: %s", s)
		}
		t.Fatalf("npm install %v: %v\n%s", packages, err, out)
	}
	if err := os.WriteFile(stamp, []byte(strings.Join(packages, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
