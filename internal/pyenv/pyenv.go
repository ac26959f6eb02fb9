// Package pyenv builds the Python virtual environments that interop tests run
// real libraries in (safetensors, numpy, ml_dtypes, huggingface_hub…). A venv is
// built once per requirement set and reused: it lives under $HEFT_PYTHON_VENVS, or
// .venv/test at the module root (gitignored). Tests skip, rather than fail, when
// Python or the package index is not available, and fail when pip fails for any
// other reason.
package pyenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Venv returns the directory of a venv with requirements installed (pip
// requirement strings, e.g. "numpy" or "safetensors==0.8.0"), building it on first
// use. name labels the directory. It skips t when python3 is missing or the
// package index is unreachable.
func Venv(t testing.TB, name string, requirements ...string) string {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found; skipping a Python interop test")
	}
	root, err := venvRoot()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(strings.Join(requirements, "\n")))
	venv := filepath.Join(root, name+"-"+hex.EncodeToString(sum[:4]))
	// Two test binaries must not build the same venv together.
	lock, err := os.OpenFile(venv+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	// The stamp is written last, so an interrupted build is redone.
	stamp := filepath.Join(venv, "heft-ready")
	if _, err := os.Stat(stamp); err == nil {
		return venv
	}
	os.RemoveAll(venv)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, python, "-m", "venv", venv).CombinedOutput(); err != nil {
		os.RemoveAll(venv)
		t.Skipf("cannot create a Python venv (%v); skipping: %s", err, LastLines(out, 5))
	}
	t.Logf("installing %s into %s", strings.Join(requirements, " "), venv)
	args := append([]string{"-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "30", "-q"}, requirements...)
	out, err := exec.CommandContext(ctx, Python(venv), args...).CombinedOutput()
	if err != nil {
		os.RemoveAll(venv)
		if ctx.Err() != nil || UnreachableIndex(string(out)) {
			t.Skipf("pip cannot reach the package index; skipping: %s", LastLines(out, 5))
		}
		t.Fatalf("pip install %s: %v\n%s", strings.Join(requirements, " "), err, out)
	}
	if err := os.WriteFile(stamp, []byte(strings.Join(requirements, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return venv
}

// Python is the interpreter of a venv.
func Python(venv string) string { return filepath.Join(venv, "bin", "python") }

func venvRoot() (string, error) {
	if d := os.Getenv("HEFT_PYTHON_VENVS"); d != "" {
		return filepath.Abs(d)
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".venv", "test"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("pyenv: no go.mod above the working directory; set HEFT_PYTHON_VENVS")
		}
		dir = parent
	}
}

// UnreachableIndex reports whether pip's output says the network, not the
// requirement, is the problem.
func UnreachableIndex(out string) bool {
	for _, s := range []string{
		"NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution",
		"Name or service not known", "Network is unreachable", "ConnectTimeout", "ReadTimeoutError",
		"ProxyError", "Connection refused", "SSLError", "timed out",
	} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

// LastLines returns the last n lines of b, for error messages.
func LastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// InstallOptional installs packages into venv when pip can, logging (not failing)
// when it cannot: checks that need them are skipped by their callers.
func InstallOptional(t testing.TB, venv string, packages ...string) {
	t.Helper()
	for _, pkg := range packages {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, err := exec.CommandContext(ctx, Python(venv), "-m", "pip", "install", "--disable-pip-version-check",
			"--no-input", "--retries", "1", "--timeout", "20", "-q", pkg).CombinedOutput()
		cancel()
		if err != nil {
			t.Logf("optional %s not installed (%v); its checks will be skipped: %s", pkg, err, LastLines(out, 3))
		}
	}
}
