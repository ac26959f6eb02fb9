package hubtest_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
)

func sample() *hubtest.Repos {
	r := hubtest.New()
	r.Commit("acme/tiny", "main", map[string][]byte{
		"config.json":       []byte(`{"a":1}`),
		"model.safetensors": make([]byte, 3<<20),
		"sub/dir/x.txt":     []byte("x\n"),
		"empty":             {},
	})
	r.Commit("acme/tiny", "dev", map[string][]byte{"only.txt": []byte("dev\n")})
	return r
}

func TestFakeConforms(t *testing.T) {
	hubtest.CheckRepos(t, sample())
}

// recorder collects CheckRepos's complaints instead of failing the test.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func check(t *testing.T, repos hub.Repos) []string {
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hubtest.CheckRepos(rec, repos)
	}()
	<-done
	return rec.errs
}

// Each broken Repos breaks one rule of the contract.
type wrongHash struct{ *hubtest.Repos }

func (w wrongHash) Files(c string) ([]hub.FileInfo, error) {
	fs, err := w.Repos.Files(c)
	for i := range fs {
		if fs[i].Path == "config.json" {
			fs[i].GitSHA1 = strings.Repeat("0", 40)
		}
	}
	return fs, err
}

type upperCommit struct{ *hubtest.Repos }

func (u upperCommit) Resolve(repo, rev string) (hub.Commit, error) {
	c, err := u.Repos.Resolve(repo, rev)
	c.ID = strings.ToUpper(c.ID)
	return c, err
}

type plainErrors struct{ *hubtest.Repos }

func (p plainErrors) Open(c, path string) (hub.FileReader, error) {
	f, err := p.Repos.Open(c, path)
	if errors.Is(err, hub.ErrEntryNotFound) {
		return nil, errors.New("no such file")
	}
	return f, err
}

type shortReader struct{ *hubtest.Repos }

func (s shortReader) Open(c, path string) (hub.FileReader, error) {
	f, err := s.Repos.Open(c, path)
	if err != nil {
		return nil, err
	}
	return short{f}, nil
}

type short struct{ hub.FileReader }

func (s short) Size() int64 { return s.FileReader.Size() - 1 }

func TestCheckReposCatches(t *testing.T) {
	for _, tc := range []struct {
		name  string
		repos hub.Repos
		want  string
	}{
		{"wrong git sha1", wrongHash{sample()}, "git SHA-1"},
		{"upper-case commit id", upperCommit{sample()}, "40 lowercase hex"},
		{"untyped not-found error", plainErrors{sample()}, "want ErrEntryNotFound"},
		{"size mismatch", shortReader{sample()}, "reader Size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := check(t, tc.repos)
			for _, e := range errs {
				if strings.Contains(e, tc.want) {
					return
				}
			}
			t.Errorf("CheckRepos did not report %q; it reported %q", tc.want, errs)
		})
	}
}
