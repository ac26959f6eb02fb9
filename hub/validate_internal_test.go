package hub

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestValidRepoID(t *testing.T) {
	for id, want := range map[string]bool{
		"acme/tiny": true, "a/b": true, "Org_1/model-v2.5": true, "a/" + strings.Repeat("x", 94): true,
		"gpt2": false, "a/b/c": false, "/b": false, "a/": false, "a/b--c": false, "a/b..c": false,
		"a/-b": false, "a/b-": false, "a/.b": false, "a/b.": false, "a/b.git": false, "a/b c": false,
		"a/" + strings.Repeat("x", 95): false, "api/x": false, "Datasets/x": false, "a/ü": false, "a/b\x00": false,
	} {
		if got := ValidRepoID(id); got != want {
			t.Errorf("ValidRepoID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestValidPath(t *testing.T) {
	for p, want := range map[string]bool{
		"a.txt": true, "dir/sub/file.bin": true, "ünïcode/日本.txt": true, ".gitattributes": true, "a b/c d": true,
		"": false, "/a": false, "a/": false, "a//b": false, "./a": false, "a/./b": false, "../a": false, "a/..": false,
		`a\b`: false, "a\x00b": false, "a\nb": false, "a\x7fb": false, "a\u0085b": false, ".git/config": false, "x/.GIT/y": false,
		strings.Repeat("a", 256): false, strings.Repeat("a/", 500) + "b": false, "\xff": false,
	} {
		if got := ValidPath(p); got != want {
			t.Errorf("ValidPath(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestValidRefName(t *testing.T) {
	for name, want := range map[string]bool{
		"main": true, "feature/x": true, "v1.0": true, "release-2026_01": true,
		"": false, "HEAD": false, "refs/pr/1": false, "refs/heads/x": false, strings.Repeat("a", 40): false,
		strings.Repeat("A", 40): false, "a..b": false, "a b": false, "a~1": false, "a^": false, "a:b": false,
		"a?": false, "a*": false, "a[": false, `a\b`: false, "-a": false, "/a": false, "a/": false, "a.": false,
		"a.lock": false, "a//b": false, "a/.b": false, "@": false, "a@{1}": false, "a\x01": false,
	} {
		if got := validRefName(name); got != want {
			t.Errorf("validRefName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestGitIgnore(t *testing.T) {
	patterns := parseGitPatterns(strings.Join([]string{
		"# comment", "*.log", "!keep.log", "build/", "/root-only.txt", "docs/*.md", "**/cache/**", "tmp?", "[ab].dat", `\#hash`, "trailing\\ ",
		"日本/*.txt", "ü?.bin",
	}, "\n"), false)
	for path, want := range map[string]bool{
		"x.log": true, "a/b/x.log": true, "keep.log": false, "a/keep.log": false,
		"build/x": true, "a/build/y/z": true, "build": false, // a file named build is not the directory
		"root-only.txt": true, "a/root-only.txt": false,
		"docs/a.md": true, "docs/sub/a.md": false, "x/docs/a.md": false,
		"a/cache/b/c": true, "cache/x": true,
		"tmp1": true, "tmp12": false, "a.dat": true, "c.dat": false, "#hash": true, "trailing ": true,
		"src/main.go": false,
		"日本/a.txt":    true, "日本/a/b.md": false, "üx.bin": true, "u.bin": false,
	} {
		if got := gitIgnored(patterns, path); got != want {
			t.Errorf("gitIgnored(%q) = %v, want %v", path, got, want)
		}
	}
	// A file in an excluded directory cannot be re-included.
	p2 := parseGitPatterns("out/\n!out/keep.txt\n", false)
	if !gitIgnored(p2, "out/keep.txt") {
		t.Error("a file under an excluded directory was re-included")
	}
}

func TestLFSTracked(t *testing.T) {
	attrs := parseGitPatterns(defaultGitAttributes+"\n*.json filter=lfs\nsmall.json -filter\n", true)
	for path, want := range map[string]bool{
		"model.safetensors": true, "sub/x.bin": true, "a.tar.gz": true, "saved_model/v1/x.pb": true, "events.tfevents.123": true,
		"config.json": true, "small.json": false, "README.md": false, "x.py": false,
	} {
		if got := lfsTracked(attrs, path); got != want {
			t.Errorf("lfsTracked(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestUploadMode(t *testing.T) {
	attrs := parseGitPatterns(defaultGitAttributes, true)
	for _, tc := range []struct {
		path   string
		size   int64
		sample []byte
		want   string
	}{
		{"a.txt", 5, []byte("hello"), "regular"},
		{"a.txt", 0, nil, "regular"},
		{"a.bin", 5, []byte("hello"), "lfs"},
		{"a.txt", 10<<20 + 1, []byte("hello"), "lfs"},
		{"a.txt", 10 << 20, []byte("hello"), "regular"},
		{"a.txt", 3, []byte{'a', 0, 'b'}, "lfs"},
		{"a.txt", 2, []byte{0xff, 0xfe}, "lfs"},
		{"a.txt", 600, append(bytes.Repeat([]byte("a"), 510), 0xe6, 0x97), "regular"}, // cut inside 日
		{"a.txt", 512, append(bytes.Repeat([]byte("a"), 510), 0xe6, 0x97), "lfs"},     // the whole file: really invalid
	} {
		if got := uploadMode(attrs, tc.path, tc.size, tc.sample); got != tc.want {
			t.Errorf("uploadMode(%s, %d, %q…) = %s, want %s", tc.path, tc.size, tc.sample[:min(8, len(tc.sample))], got, tc.want)
		}
	}
}

func TestParseAuthorization(t *testing.T) {
	for h, want := range map[string]string{
		"":                           "",
		"Bearer heft_abc":            "heft_abc",
		"bearer heft_abc":            "heft_abc",
		"BEARER   heft_abc":          "heft_abc",
		"Basic dXNlcjpoZWZ0X2FiYw==": "heft_abc", // user:heft_abc
		"Basic aGVmdF9hYmM6":         "heft_abc", // heft_abc: (token as user)
	} {
		if got, err := parseAuthorization(h); err != nil || got != want {
			t.Errorf("parseAuthorization(%q) = %q, %v; want %q", h, got, err, want)
		}
	}
	for _, h := range []string{"Bearer", "Bearer ", "Token abc", "Bearer a b", "Bearer a\x01", "Basic !!", "Basic YWJj", "Bearer " + strings.Repeat("a", 1025)} {
		if got, err := parseAuthorization(h); err == nil {
			t.Errorf("parseAuthorization(%q) = %q, want an error", h, got)
		}
	}
}

func TestVerifyingReader(t *testing.T) {
	data := []byte("some object content")
	oid := sha256Hex(data)
	for _, tc := range []struct {
		name string
		in   io.Reader
		ok   bool
	}{
		{"exact", bytes.NewReader(data), true},
		{"short", bytes.NewReader(data[:5]), false},
		{"long", io.MultiReader(bytes.NewReader(data), strings.NewReader("x")), false},
		{"wrong", bytes.NewReader(bytes.ToUpper(data)), false},
	} {
		out, err := io.ReadAll(newVerifyingReader(tc.in, oid, int64(len(data))))
		if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, ErrObjectMismatch) {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.ok && !bytes.Equal(out, data) {
			t.Errorf("%s: read %q", tc.name, out)
		}
	}
	// A reader error comes through as itself.
	boom := errors.New("boom")
	_, err := io.ReadAll(newVerifyingReader(&bodyReader{errReader{boom}}, oid, int64(len(data))))
	var be *bodyError
	if !errors.As(err, &be) || !errors.Is(err, boom) {
		t.Errorf("reader error: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestUploadsThroughXet(t *testing.T) {
	for ua, want := range map[string]bool{
		"unknown/None; hf_hub/1.20.0; python/3.11.2":                true,
		"huggingface_hub/2.4.0; hf_hub/2.4.0; python/3.11; torch/2": true,
		"hf_hub/1.19.9; python/3.11":                                false,
		"huggingface_hub/0.36.2; hf_hub/0.36.2; python/3.11":        false,
		"huggingface.js/2.15.0":                                     false,
		"":                                                          false,
		"hf_hub/x.y":                                                false,
	} {
		if got := uploadsThroughXet(ua); got != want {
			t.Errorf("uploadsThroughXet(%q) = %v, want %v", ua, got, want)
		}
	}
}
