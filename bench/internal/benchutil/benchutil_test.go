package benchutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"4096", 4096},
		{"2KiB", 2 << 10},
		{"1.5MiB", 3 << 19},
		{"2GiB", 2 << 30},
		{"0.5GiB", 1 << 29},
		{"2.2GB", 2200000000},
		{"3MB", 3000000},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "GiB", "GB", "1TB", "x", "-1", "-1MiB", "NaN", "Inf", "1e30GiB"} {
		if n, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, n)
		}
	}
}

func TestDirSize(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"x": 3, "a/y": 5, "a/b/z": 7} {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := DirSize(dir); got != 15 {
		t.Errorf("DirSize = %d, want 15", got)
	}
	if got := DirSize(filepath.Join(dir, "missing")); got != 0 {
		t.Errorf("DirSize of a missing dir = %d, want 0", got)
	}
}
