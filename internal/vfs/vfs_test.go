package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// forEachFS runs a test against every implementation (style.md pattern 14).
func forEachFS(t *testing.T, fn func(t *testing.T, fsys FS, dir string)) {
	t.Run("os", func(t *testing.T) { fn(t, OS, t.TempDir()) })
	t.Run("mem", func(t *testing.T) {
		m := NewMemFS()
		if err := m.MkdirAll("/data", 0o755); err != nil {
			t.Fatal(err)
		}
		fn(t, m, "/data")
	})
	t.Run("errorfs", func(t *testing.T) { fn(t, NewErrorFS(OS, nil), t.TempDir()) })
}

func TestConformance(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys FS, dir string) {
		p := filepath.Join(dir, "sub", "file")
		if err := fsys.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := fsys.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatalf("MkdirAll of an existing directory: %v", err)
		}
		for _, content := range []string{"first\n", "second, longer\n", ""} {
			if err := WriteFileAtomic(fsys, p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadFile(fsys, p)
			if err != nil || string(got) != content {
				t.Fatalf("read back %q, %v; want %q", got, err, content)
			}
		}
		entries, err := fsys.ReadDir(filepath.Dir(p))
		if err != nil || len(entries) != 1 || entries[0].Name() != "file" {
			t.Fatalf("ReadDir: %v %v (temp files left?)", entries, err)
		}
		if err := WriteFileAtomic(fsys, filepath.Join(dir, "missing", "x"), nil, 0o600); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("write into a missing directory: %v", err)
		}

		// Exclusive create, append, ReadAt, Map.
		q := filepath.Join(dir, "log")
		f, err := fsys.OpenFile(q, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("abc")); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if _, err := fsys.OpenFile(q, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("exclusive create of an existing file: %v", err)
		}
		f, err = fsys.OpenFile(q, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("def")); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		r, err := fsys.Open(q)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		b := make([]byte, 3)
		if n, err := r.ReadAt(b, 2); n != 3 || string(b) != "cde" {
			t.Fatalf("ReadAt: %q %v", b[:n], err)
		}
		m, err := fsys.Map(r)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Bytes()) != "abcdef" {
			t.Fatalf("Map: %q", m.Bytes())
		}
		m.DontNeed(0, 6)
		// A removed file stays readable through its handle and mapping.
		if err := fsys.Remove(q); err != nil {
			t.Fatal(err)
		}
		if _, err := fsys.Stat(q); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Stat after Remove: %v", err)
		}
		if string(m.Bytes()) != "abcdef" {
			t.Fatalf("Map after Remove: %q", m.Bytes())
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}

		// CreateTemp, Rename, Walk.
		tf, err := fsys.CreateTemp(dir, "tmp-*.pack")
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(tf.Name()) != dir || !bytes.HasPrefix([]byte(filepath.Base(tf.Name())), []byte("tmp-")) || filepath.Ext(tf.Name()) != ".pack" {
			t.Fatalf("CreateTemp name %s", tf.Name())
		}
		tf.Close()
		if err := fsys.Rename(tf.Name(), filepath.Join(dir, "sub", "x.pack")); err != nil {
			t.Fatal(err)
		}
		var walked []string
		err = Walk(fsys, dir, func(path string, info fs.FileInfo, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, path)
			walked = append(walked, rel)
			return nil
		})
		if err != nil || len(walked) != 4 || walked[0] != "." || walked[1] != "sub" || walked[2] != "sub/file" || walked[3] != "sub/x.pack" {
			t.Fatalf("Walk: %v %v", walked, err)
		}
		if err := fsys.SyncDir(dir); err != nil {
			t.Fatal(err)
		}
	})
}

func write(t *testing.T, fsys FS, path, content string, sync bool) {
	t.Helper()
	f, err := fsys.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, fsys FS, path string) string {
	t.Helper()
	b, err := ReadFile(fsys, path)
	if errors.Is(err, fs.ErrNotExist) {
		return "<absent>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMemFSCrash checks the durability rules of the package contract (pebble's
// memfs_crashable cases).
func TestMemFSCrash(t *testing.T) {
	m := NewMemFS()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(m.MkdirAll("/d/sub", 0o755))
	m.SyncAll()

	// A synced file whose directory was not synced disappears.
	write(t, m, "/d/a", "A", true)
	// A file in a synced directory keeps only its synced content.
	write(t, m, "/d/b", "B1", true)
	must(m.SyncDir("/d"))
	f, _ := m.OpenFile("/d/b", os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("+unsynced"))
	f.Close()
	write(t, m, "/d/c", "C", false) // never synced, entry synced below
	must(m.SyncDir("/d"))
	// A new directory needs its parent synced.
	must(m.Mkdir("/d/newdir", 0o755))
	write(t, m, "/d/newdir/x", "X", true)
	must(m.SyncDir("/d/newdir"))
	m.Crash()
	for path, want := range map[string]string{"/d/b": "B1", "/d/c": ""} {
		if got := content(t, m, path); got != want {
			t.Errorf("%s after crash: %q, want %q", path, got, want)
		}
	}
	// /d/a was created after the first SyncDir of /d, which the second one made
	// durable; /d/newdir was not.
	if got := content(t, m, "/d/a"); got != "A" {
		t.Errorf("/d/a: %q", got)
	}
	if _, err := m.Stat("/d/newdir"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("/d/newdir survived without its parent synced: %v", err)
	}

	// Rename: durable only in the directories synced.
	write(t, m, "/d/sub/tmp", "T", true)
	must(m.SyncDir("/d/sub"))
	must(m.Rename("/d/sub/tmp", "/d/final"))
	m.Crash()
	if content(t, m, "/d/final") != "<absent>" || content(t, m, "/d/sub/tmp") != "T" {
		t.Errorf("rename with no directory synced survived a crash")
	}
	must(m.Rename("/d/sub/tmp", "/d/final"))
	must(m.SyncDir("/d"))
	m.Crash()
	if content(t, m, "/d/final") != "T" || content(t, m, "/d/sub/tmp") != "T" {
		t.Errorf("rename with only the target directory synced: final %q tmp %q, want both", content(t, m, "/d/final"), content(t, m, "/d/sub/tmp"))
	}
	// Remove without SyncDir comes back.
	must(m.Remove("/d/final"))
	m.Crash()
	if content(t, m, "/d/final") != "T" {
		t.Errorf("unsynced remove survived a crash")
	}
	// Handles from before a crash are dead.
	r, err := m.Open("/d/final")
	must(err)
	m.Crash()
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrCrashed) {
		t.Errorf("read through a handle from before the crash: %v", err)
	}
}

func TestMemFSCrashAfter(t *testing.T) {
	m := NewMemFS()
	if err := m.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	m.SyncAll()
	base := m.CrashClone()
	workload := func(fsys FS) error {
		return WriteFileAtomic(fsys, "/d/f", []byte("content"), 0o600)
	}
	start := base.Ops()
	if err := workload(base); err != nil {
		t.Fatal(err)
	}
	n := base.Ops() - start
	if n != 5 { // create, write, sync, rename, dir sync
		t.Fatalf("WriteFileAtomic made %d mutating operations, want 5", n)
	}
	for k := 0; k < n; k++ {
		c := m.CrashClone()
		c.CrashAfter(k)
		err := workload(c)
		if !errors.Is(err, ErrCrashed) || !c.Crashed() {
			t.Fatalf("k=%d: workload returned %v", k, err)
		}
		if _, err := c.Stat("/d"); !errors.Is(err, ErrCrashed) {
			t.Fatalf("k=%d: Stat after the crash point: %v", k, err)
		}
		c.Crash()
		// Until the directory fsync (the last operation) has run, the file
		// is not durable.
		if got := content(t, c, "/d/f"); got != "<absent>" {
			t.Errorf("k=%d: after crash %q, want it absent", k, got)
		}
		entries, _ := c.ReadDir("/d")
		if len(entries) > 1 {
			t.Errorf("k=%d: leftovers %v", k, entries)
		}
	}
	c := m.CrashClone()
	c.CrashAfter(n)
	if err := workload(c); err != nil {
		t.Fatal(err)
	}
	c.Crash()
	if got := content(t, c, "/d/f"); got != "content" {
		t.Errorf("after a completed write and a crash: %q", got)
	}
}

func TestErrorFS(t *testing.T) {
	dir := t.TempDir()
	e := NewErrorFS(OS, FailNth(OpWrite, 2, syscall.ENOSPC))
	p := filepath.Join(dir, "f")
	if err := WriteFileAtomic(e, p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := WriteFileAtomic(e, p, []byte("two"), 0o600)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second write: %v, want ENOSPC", err)
	}
	if got := content(t, OS, p); got != "one" {
		t.Fatalf("after a failed write: %q", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temp file left: %v", entries)
	}

	for _, op := range []Op{OpCreate, OpSync, OpRename} {
		e.SetPolicy(FailNth(op, 1, syscall.EIO))
		if err := WriteFileAtomic(e, p, []byte("three"), 0o600); !errors.Is(err, syscall.EIO) {
			t.Fatalf("%s: %v, want EIO", op, err)
		}
		if got := content(t, OS, p); got != "one" {
			t.Fatalf("%s: after a failed write: %q", op, got)
		}
	}
	e.SetPolicy(FailNth(OpDirSync, 1, syscall.EIO))
	if err := WriteFileAtomic(e, p, []byte("four"), 0o600); !errors.Is(err, ErrNotDurable) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("dir-sync: %v, want ErrNotDurable and EIO", err)
	}

	// A short write stores a prefix and fails.
	e.SetPolicy(ShortWriteNth(1, 2, syscall.ENOSPC))
	f, err := e.OpenFile(filepath.Join(dir, "g"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.Write([]byte("abcdef"))
	f.Close()
	if n != 2 || !errors.Is(err, syscall.ENOSPC) || content(t, OS, filepath.Join(dir, "g")) != "ab" {
		t.Fatalf("short write: n=%d err=%v content %q", n, err, content(t, OS, filepath.Join(dir, "g")))
	}

	// Random faults are reproducible per seed.
	run := func() (fails int) {
		e.SetPolicy(FailRandom(7, 0.3, syscall.EIO, OpWrite, OpSync))
		for i := 0; i < 50; i++ {
			if WriteFileAtomic(e, p, []byte("x"), 0o600) != nil {
				fails++
			}
		}
		return fails
	}
	if a, b := run(), run(); a != b || a == 0 || a == 50 {
		t.Fatalf("random faults: %d then %d failures of 50", a, b)
	}
}

func TestMemFSCrashKeeping(t *testing.T) {
	build := func() *MemFS {
		m := NewMemFS()
		if err := m.MkdirAll("/d", 0o755); err != nil {
			t.Fatal(err)
		}
		m.SyncAll()
		for i := 0; i < 40; i++ {
			write(t, m, filepath.Join("/d", string(rune('a'+i%26))+string(rune('a'+i/26))), "x", false)
		}
		return m
	}
	m := build()
	m.CrashKeeping(rand.New(rand.NewSource(1)), 1)
	if entries, _ := m.ReadDir("/d"); len(entries) != 40 || content(t, m, "/d/aa") != "x" {
		t.Fatalf("keep=1 lost unsynced changes: %d entries, /d/aa %q", len(entries), content(t, m, "/d/aa"))
	}
	counts := map[string]int{}
	for seed := int64(1); seed <= 2; seed++ {
		m := build()
		m.CrashKeeping(rand.New(rand.NewSource(seed)), 0.5)
		entries, _ := m.ReadDir("/d")
		for _, e := range entries {
			counts[fmt.Sprintf("%d %s", seed, content(t, m, filepath.Join("/d", e.Name())))]++
		}
		if len(entries) == 0 || len(entries) == 40 {
			t.Fatalf("keep=0.5, seed %d: %d of 40 unsynced files survived", seed, len(entries))
		}
	}
	if counts["1 x"] == 0 || counts["1 "] == 0 {
		t.Fatalf("keep=0.5: surviving files' unsynced content kept or dropped all alike: %v", counts)
	}
	m = build()
	m.CrashKeeping(rand.New(rand.NewSource(1)), 0)
	if entries, _ := m.ReadDir("/d"); len(entries) != 0 {
		t.Fatalf("keep=0 kept %d unsynced files", len(entries))
	}
}
