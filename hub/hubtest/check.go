package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/heft-dev/heft/hub"
)

// CheckRepos tests r against the hub.Repos contract, reading every file of
// the default branch of every repo (so give it a small store): ids and paths
// well formed, hashes and sizes in Files equal to what Open reads, ReadAt
// semantics at and past EOF, the not-found errors, and concurrent reads.
func CheckRepos(t testing.TB, r hub.Repos) {
	t.Helper()
	repos, err := r.ListRepos()
	if err != nil {
		t.Fatalf("ListRepos: %v", err)
	}
	if len(repos) == 0 {
		t.Fatalf("ListRepos: no repos; CheckRepos needs at least one")
	}
	seen := map[string]bool{}
	for _, ri := range repos {
		ns, name, ok := strings.Cut(ri.ID, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			t.Errorf("ListRepos: id %q is not ns/name", ri.ID)
		}
		if seen[ri.ID] {
			t.Errorf("ListRepos: %q listed twice", ri.ID)
		}
		seen[ri.ID] = true
	}

	if _, err := r.Resolve("heft-no-such-org/no-such-repo", "main"); !errors.Is(err, hub.ErrRepoNotFound) {
		t.Errorf("Resolve(missing repo): got %v, want ErrRepoNotFound", err)
	}
	if _, err := r.Files(strings.Repeat("0", 40)); !errors.Is(err, hub.ErrRevisionNotFound) {
		t.Errorf("Files(unknown commit): got %v, want ErrRevisionNotFound", err)
	}

	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, ri := range repos {
		c, err := r.Resolve(ri.ID, "main")
		if errors.Is(err, hub.ErrRevisionNotFound) {
			continue // a repo without a default branch has nothing to read
		}
		if err != nil {
			t.Errorf("Resolve(%s, main): %v", ri.ID, err)
			continue
		}
		if !isLowerHex(c.ID, 40) {
			t.Errorf("Resolve(%s, main): commit id %q is not 40 lowercase hex digits", ri.ID, c.ID)
		}
		if c2, err := r.Resolve(ri.ID, c.ID); err != nil || c2.ID != c.ID {
			t.Errorf("Resolve(%s, %s) = %v, %v; want the same commit", ri.ID, c.ID, c2.ID, err)
		}
		if _, err := r.Resolve(ri.ID, "heft-no-such-revision/x"); !errors.Is(err, hub.ErrRevisionNotFound) {
			t.Errorf("Resolve(%s, missing revision): got %v, want ErrRevisionNotFound", ri.ID, err)
		}
		files, err := r.Files(c.ID)
		if err != nil {
			t.Errorf("Files(%s): %v", c.ID, err)
			continue
		}
		checkFileList(t, ri.ID, files)
		if _, err := r.Open(c.ID, "heft/no/such/file"); !errors.Is(err, hub.ErrEntryNotFound) {
			t.Errorf("Open(%s, missing path): got %v, want ErrEntryNotFound", ri.ID, err)
		}
		for _, f := range files {
			if i := strings.LastIndexByte(f.Path, '/'); i > 0 {
				if _, err := r.Open(c.ID, f.Path[:i]); !errors.Is(err, hub.ErrEntryNotFound) {
					t.Errorf("Open(%s, directory %s): got %v, want ErrEntryNotFound", ri.ID, f.Path[:i], err)
				}
				break
			}
		}
		for _, f := range files {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := checkFile(r, c.ID, f); err != nil {
					t.Errorf("%s@%s: %v", ri.ID, c.ID, err)
				}
			}()
		}
	}
	wg.Wait()
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func checkFileList(t testing.TB, repo string, files []hub.FileInfo) {
	t.Helper()
	paths := map[string]bool{}
	for _, f := range files {
		paths[f.Path] = true
	}
	for _, f := range files {
		bad := f.Path == ""
		for _, seg := range strings.Split(f.Path, "/") {
			bad = bad || seg == "" || seg == "." || seg == ".."
		}
		if bad {
			t.Errorf("%s: path %q is not a clean relative path", repo, f.Path)
		}
		for i := 0; i < len(f.Path); i++ {
			if f.Path[i] == '/' && paths[f.Path[:i]] {
				t.Errorf("%s: %q is a file and a directory", repo, f.Path[:i])
			}
		}
		if !isLowerHex(f.SHA256, 64) {
			t.Errorf("%s: %s: SHA256 %q is not 64 lowercase hex digits", repo, f.Path, f.SHA256)
		}
		if f.GitSHA1 != "" && !isLowerHex(f.GitSHA1, 40) {
			t.Errorf("%s: %s: GitSHA1 %q is not 40 lowercase hex digits", repo, f.Path, f.GitSHA1)
		}
		if !f.LFS && f.GitSHA1 == "" {
			t.Errorf("%s: %s: a regular (non-LFS) file needs GitSHA1", repo, f.Path)
		}
		if f.Size < 0 {
			t.Errorf("%s: %s: negative size", repo, f.Path)
		}
	}
	if len(paths) != len(files) {
		t.Errorf("%s: Files lists a path twice", repo)
	}
}

// checkFile reads a file sequentially in odd-sized pieces (so reads straddle
// any chunk boundary) and checks its size and hashes, then checks ReadAt at
// and across EOF.
func checkFile(r hub.Repos, commit string, f hub.FileInfo) error {
	fr, err := r.Open(commit, f.Path)
	if err != nil {
		return fmt.Errorf("Open(%s): %w", f.Path, err)
	}
	defer fr.Close()
	if fr.Size() != f.Size {
		return fmt.Errorf("%s: reader Size %d, listed %d", f.Path, fr.Size(), f.Size)
	}
	s256 := sha256.New()
	s1 := sha1.New()
	fmt.Fprintf(s1, "blob %d\x00", f.Size)
	buf := make([]byte, 1<<20+7)
	n, err := io.CopyBuffer(io.MultiWriter(s256, s1), struct{ io.Reader }{io.NewSectionReader(fr, 0, f.Size)}, buf)
	if err != nil {
		return fmt.Errorf("%s: read: %w", f.Path, err)
	}
	if n != f.Size {
		return fmt.Errorf("%s: read %d bytes, listed %d", f.Path, n, f.Size)
	}
	if got := hex.EncodeToString(s256.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("%s: content SHA-256 %s, listed %s", f.Path, got, f.SHA256)
	}
	if got := hex.EncodeToString(s1.Sum(nil)); f.GitSHA1 != "" && got != f.GitSHA1 {
		return fmt.Errorf("%s: content git SHA-1 %s, listed %s", f.Path, got, f.GitSHA1)
	}
	p := make([]byte, 2)
	if n, err := fr.ReadAt(p, f.Size); n != 0 || err != io.EOF {
		return fmt.Errorf("%s: ReadAt(EOF) = %d, %v; want 0, io.EOF", f.Path, n, err)
	}
	if f.Size > 0 {
		if n, err := fr.ReadAt(p, f.Size-1); n != 1 || err != io.EOF {
			return fmt.Errorf("%s: ReadAt across EOF = %d, %v; want 1, io.EOF", f.Path, n, err)
		}
	}
	return nil
}
