package backend

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "packs/ab/0123.pack", "refs/org/model_main", "x-y.z_1", "A/B", strings.Repeat("s", MaxSegmentLen)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "/a", "a/", "a//b", ".", "..", "a/..", "./a", ".tmp", "a/.b", "a b", "a\x00", "a\\b", "ä",
		strings.Repeat("s", MaxSegmentLen+1), strings.Repeat("ab/", MaxNameLen/3) + "abc"} {
		if err := CheckName(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CheckName(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
}

func TestCheckPrefix(t *testing.T) {
	for _, ok := range []string{"", "a", "a/", "packs/a", "packs/ab/", "x.y"} {
		if err := CheckPrefix(ok); err != nil {
			t.Errorf("CheckPrefix(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"/", "/a", "a//", "../", "a/.", ".x", "a b/"} {
		if err := CheckPrefix(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CheckPrefix(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
}

func TestParents(t *testing.T) {
	if got := Parents("a/b/c"); !slices.Equal(got, []string{"a", "a/b"}) {
		t.Fatalf("Parents(a/b/c) = %q", got)
	}
	if got := Parents("a"); got != nil {
		t.Fatalf("Parents(a) = %q", got)
	}
}
