package hubtest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

func TestFakeWriterConforms(t *testing.T) {
	r := hubtest.New()
	hubtest.CheckWriter(t, r, r)
}

// Broken Writers, each breaking one rule of the contract, built on the fake.

// scopeLeak reports any stored object to every repo.
type scopeLeak struct {
	*hubtest.Repos
	mu    sync.Mutex
	sizes map[string]int64
}

func (s *scopeLeak) StoreObject(ctx context.Context, repo, oid string, size int64, r io.Reader) error {
	err := s.Repos.StoreObject(ctx, repo, oid, size, r)
	if err == nil {
		s.mu.Lock()
		s.sizes[oid] = size
		s.mu.Unlock()
	}
	return err
}

func (s *scopeLeak) StatObject(ctx context.Context, repo, oid string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if size, ok := s.sizes[oid]; ok {
		return size, nil
	}
	return s.Repos.StatObject(ctx, repo, oid)
}

// trustingStore grants a repo an object stored for another without
// verifying the upload (the dedup shortcut that leaks private files).
type trustingStore struct {
	*hubtest.Repos
	mu    sync.Mutex
	known map[string][]byte
}

func (s *trustingStore) StoreObject(ctx context.Context, repo, oid string, size int64, r io.Reader) error {
	s.mu.Lock()
	data, ok := s.known[oid]
	s.mu.Unlock()
	if ok {
		return s.Repos.StoreObject(ctx, repo, oid, size, bytes.NewReader(data))
	}
	var buf bytes.Buffer
	err := s.Repos.StoreObject(ctx, repo, oid, size, io.TeeReader(r, &buf))
	if err == nil {
		s.mu.Lock()
		s.known[oid] = buf.Bytes()
		s.mu.Unlock()
	}
	return err
}

// nonAtomic applies a commit's operations as one commit each.
type nonAtomic struct{ *hubtest.Repos }

func (n nonAtomic) CreateCommit(ctx context.Context, req hub.CommitRequest) (hub.Commit, error) {
	var c hub.Commit
	for i, op := range req.Operations {
		one := req
		one.Operations = []hub.Operation{op}
		if i > 0 {
			one.ParentCommit = ""
		}
		var err error
		if c, err = n.Repos.CreateCommit(ctx, one); err != nil {
			return c, err
		}
	}
	return c, nil
}

// noCAS ignores parentCommit.
type noCAS struct{ *hubtest.Repos }

func (n noCAS) CreateCommit(ctx context.Context, req hub.CommitRequest) (hub.Commit, error) {
	req.ParentCommit = ""
	return n.Repos.CreateCommit(ctx, req)
}

func checkWriter(t *testing.T, repos hub.Repos, w hub.Writer) []string {
	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		hubtest.CheckWriter(rec, repos, w)
	}()
	<-done
	return rec.errs
}

func TestCheckWriterCatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(*hubtest.Repos) hub.Writer
		want string
	}{
		{"objects not scoped to repos", func(r *hubtest.Repos) hub.Writer { return &scopeLeak{Repos: r, sizes: map[string]int64{}} }, "must not use another's object"},
		{"uploads for a second repo not verified", func(r *hubtest.Repos) hub.Writer { return &trustingStore{Repos: r, known: map[string][]byte{}} }, "proof of possession"},
		{"commit not atomic", func(r *hubtest.Repos) hub.Writer { return nonAtomic{r} }, "failed but moved main"},
		{"parentCommit ignored", func(r *hubtest.Repos) hub.Writer { return noCAS{r} }, "racing on one parent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := hubtest.New()
			errs := checkWriter(t, r, tc.make(r))
			for _, e := range errs {
				if strings.Contains(e, tc.want) {
					return
				}
			}
			t.Errorf("CheckWriter did not report %q; it reported %q", tc.want, errs)
		})
	}
}
