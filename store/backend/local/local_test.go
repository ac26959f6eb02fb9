package local

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/backendtest"
)

func open(t *testing.T, dir string) *Backend {
	t.Helper()
	b, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// noTempFiles fails t if a write left a temporary file behind in dir.
func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		dir := t.TempDir()
		t.Cleanup(func() { noTempFiles(t, dir) })
		return open(t, dir)
	})
}

// TestConformanceWithoutXattrs runs the suite as on a filesystem without user
// extended attributes, where versions are content hashes.
func TestConformanceWithoutXattrs(t *testing.T) {
	saved := setVersion
	setVersion = func(*os.File, string) error { return unix.ENOTSUP }
	t.Cleanup(func() { setVersion = saved })
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b := open(t, t.TempDir())
		info, err := b.Put(t.Context(), "probe", bytes.NewReader([]byte("x")), 1)
		if err != nil || !strings.HasPrefix(info.Version, "b3-") {
			t.Fatalf("Put without xattrs: version %q, %v; want a content hash", info.Version, err)
		}
		if err := b.Delete(t.Context(), "probe"); err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestVersionSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	b := open(t, dir)
	info, err := b.Put(t.Context(), "a/b", bytes.NewReader([]byte("data")), 4)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Version, "r-") {
		t.Fatalf("version %q: this test expects a filesystem with user xattrs", info.Version)
	}
	st, err := open(t, dir).Stat(t.Context(), "a/b")
	if err != nil || st.Version != info.Version {
		t.Fatalf("Stat from a new handle: %+v, %v; want version %q", st, err, info.Version)
	}
	// A file placed by another tool has no version attribute: its version is
	// its content hash, and CompareAndSwap works from it.
	if err := os.WriteFile(filepath.Join(dir, "foreign"), []byte("by hand"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = b.Stat(t.Context(), "foreign")
	if err != nil || !strings.HasPrefix(st.Version, "b3-") {
		t.Fatalf("Stat of a foreign file: %+v, %v", st, err)
	}
	if _, err := b.CompareAndSwap(t.Context(), "foreign", st.Version, bytes.NewReader([]byte("swapped")), 7); err != nil {
		t.Fatal(err)
	}
}

// TestCrossProcessCompareAndSwap increments one counter from this process and
// two child processes: the flock must make each read-compare-rename atomic
// across processes, so no increment is lost.
func TestCrossProcessCompareAndSwap(t *testing.T) {
	if dir := os.Getenv("HEFT_LOCAL_CAS_WORKER"); dir != "" {
		if err := increment(context.Background(), dir, 15); err != nil {
			t.Fatal(err)
		}
		return
	}
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	b := open(t, dir)
	if _, err := b.Put(t.Context(), "counter", bytes.NewReader([]byte("0")), 1); err != nil {
		t.Fatal(err)
	}
	var cmds []*exec.Cmd
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrossProcessCompareAndSwap$", "-test.count=1")
		cmd.Env = append(os.Environ(), "HEFT_LOCAL_CAS_WORKER="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	if err := increment(t.Context(), dir, 15); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("worker: %v", err)
		}
	}
	data, _, err := backend.ReadAll(t.Context(), b, "counter")
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "45" {
		t.Fatalf("counter = %s after 3 processes × 15 increments: lost updates", data)
	}
}

func increment(ctx context.Context, dir string, n int) error {
	b, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	defer b.Close()
	for done := 0; done < n; {
		data, info, err := backend.ReadAll(ctx, b, "counter")
		if err != nil {
			return err
		}
		v, err := strconv.Atoi(string(data))
		if err != nil {
			return err
		}
		next := []byte(strconv.Itoa(v + 1))
		_, err = b.CompareAndSwap(ctx, "counter", info.Version, bytes.NewReader(next), int64(len(next)))
		switch {
		case err == nil:
			done++
		case !errors.Is(err, backend.ErrPreconditionFailed):
			return err
		}
	}
	return nil
}
