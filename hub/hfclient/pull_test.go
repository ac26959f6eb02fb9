package hfclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/store"
)

// TestPull pulls a model, exports it byte-identically, pulls it again
// (nothing fetched, no new commit), then pulls a fine-tune: the files the
// store has are skipped, the weights are fetched.
func TestPull(t *testing.T) {
	e := newHubEnv(t, nil)
	dir := tinyModel(t, 1)
	files := readTree(t, dir)
	e.publish("acme/tiny", dir)
	s := store.TestStore(t, testStoreOpts)
	c := e.client(e.reader, nil)

	var last atomic.Int64
	res, err := Pull(ctx, c, s, PullOptions{Repo: "acme/tiny", CheckpointBytes: 64 << 10, Progress: func(done, total int64) {
		if total != totalSize(files) {
			t.Errorf("progress total %d, want %d", total, totalSize(files))
		}
		last.Store(done)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first pull: %d files, fetched %d of %d bytes, stored %d", res.Files, res.FetchedBytes, res.LogicalBytes, res.StoredBytes)
	if res.Files != len(files) || res.DownloadedFiles != len(files) || res.SkippedFiles != 0 ||
		res.FetchedBytes != totalSize(files) || e.served.Load() != totalSize(files) || last.Load() != totalSize(files) {
		t.Fatalf("first pull: %+v (served %d, progress %d, files %d bytes)", res, e.served.Load(), last.Load(), totalSize(files))
	}
	if res.Ref != "acme/tiny:main" || !strings.HasPrefix(res.Source, "hf://acme/tiny@") || len(res.RemoteCommit) != 40 {
		t.Fatalf("first pull: ref %s, source %s", res.Ref, res.Source)
	}
	// Several ranged GETs per shard (RangeSize 64 KiB).
	if n := e.count("GET resolve"); n <= len(files) {
		t.Fatalf("%d resolve GETs for %d files: large files were not split into ranges", n, len(files))
	}
	exportEquals(t, s, "acme/tiny", files)
	log, err := s.Log("acme/tiny", 1)
	if err != nil {
		t.Fatal(err)
	}
	if p := log[0].Commit.Provenance; p.Op != "pull" || p.Source != res.Source {
		t.Fatalf("provenance %+v", p)
	}

	// Again: nothing fetched, nothing committed.
	e.resetCounts()
	again, err := Pull(ctx, c, s, PullOptions{Repo: "acme/tiny"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second pull: fetched %d bytes, skipped %d files", again.FetchedBytes, again.SkippedFiles)
	if again.FetchedBytes != 0 || e.served.Load() != 0 || e.count("GET resolve") != 0 || again.SkippedFiles != len(files) || !again.UpToDate || again.Commit != res.Commit {
		t.Fatalf("second pull: %+v, served %d", again, e.served.Load())
	}

	// A fine-tune: configs are the base's (skipped), weights are new.
	tuned := filepath.Join(t.TempDir(), "tuned")
	if err := modelgen.FineTune(dir, tuned, modelgen.FineTuneOptions{Seed: 7, FreezeEmbeddings: true}); err != nil {
		t.Fatal(err)
	}
	tunedFiles := readTree(t, tuned)
	e.publish("acme/tuned", tuned)
	e.resetCounts()
	ft, err := Pull(ctx, c, s, PullOptions{Repo: "acme/tuned", Ref: store.RefName{Name: "acme/tuned", Tag: "v1"}})
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	skipped := 0
	for p, b := range tunedFiles {
		if string(files[p]) == string(b) {
			skipped++
			continue
		}
		want += int64(len(b))
	}
	t.Logf("fine-tune pull: skipped %d files (%d bytes), fetched %d bytes, stored %d (frozen embeddings dedup)", ft.SkippedFiles, ft.SkippedBytes, ft.FetchedBytes, ft.StoredBytes)
	if skipped == 0 || ft.SkippedFiles != skipped || ft.FetchedBytes != want || e.served.Load() != want {
		t.Fatalf("fine-tune pull: %+v; want %d skipped, %d bytes fetched (served %d)", ft, skipped, want, e.served.Load())
	}
	if ft.StoredBytes >= ft.FetchedBytes {
		t.Fatalf("fine-tune stored %d bytes for %d fetched: nothing shared with the base", ft.StoredBytes, ft.FetchedBytes)
	}
	exportEquals(t, s, "acme/tuned:v1", tunedFiles)
	exportEquals(t, s, "acme/tiny", files)
}

// TestPullRevision pulls a tag and a commit id; a branch that moves after the
// revision was resolved does not leak into the pull.
func TestPullRevision(t *testing.T) {
	e := newHubEnv(t, nil)
	dirA, dirB := tinyModel(t, 1), tinyModel(t, 2)
	first := e.repos.Commit("acme/m", "main", readTree(t, dirA))
	e.repos.SetRef("acme/m", "v1", first.ID)
	s := store.TestStore(t, testStoreOpts)
	c := e.client(e.reader, nil)
	// Move main right after the pull resolved it.
	var once sync.Once
	e.setFault(func(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
		if strings.Contains(r.URL.Path, "/tree/") {
			once.Do(func() { e.repos.Commit("acme/m", "main", readTree(t, dirB)) })
		}
		return nil, false
	})
	res, err := Pull(ctx, c, s, PullOptions{Repo: "acme/m"})
	if err != nil {
		t.Fatal(err)
	}
	if res.RemoteCommit != first.ID {
		t.Fatalf("pulled %s, want the commit main had when resolved (%s)", res.RemoteCommit, first.ID)
	}
	exportEquals(t, s, "acme/m", readTree(t, dirA))
	e.setFault(nil)
	res, err = Pull(ctx, c, s, PullOptions{Repo: "acme/m", Revision: "v1", Ref: store.RefName{Name: "acme/m", Tag: "v1"}})
	if err != nil || res.RemoteCommit != first.ID || res.FetchedBytes != 0 {
		t.Fatalf("tag pull: %+v, %v", res, err)
	}
	res, err = Pull(ctx, c, s, PullOptions{Repo: "acme/m", Ref: store.RefName{Name: "acme/m", Tag: "new"}})
	if err != nil || res.RemoteCommit == first.ID {
		t.Fatalf("pull of the moved main: %+v, %v", res, err)
	}
	exportEquals(t, s, "acme/m:new", readTree(t, dirB))
}

// TestPullInterrupted cuts pulls at random byte offsets, by a server that
// drops the connection and then fails, or by cancelling the pull. The
// restarted pull fetches exactly the bytes the store does not have (the
// resume points of the files in flight, nothing of the files stored) and
// commits the same files as an uninterrupted pull.
func TestPullInterrupted(t *testing.T) {
	e := newHubEnv(t, nil)
	dir := filepath.Join(t.TempDir(), "model")
	// Shards of about 360 KiB: several ranges, chunks and checkpoints each.
	if err := modelgen.WriteBase(dir, modelgen.Tiny(), modelgen.Options{Seed: 5, Shards: 1}); err != nil {
		t.Fatal(err)
	}
	files := readTree(t, dir)
	e.publish("acme/big", dir)
	tuned := filepath.Join(t.TempDir(), "tuned")
	if err := modelgen.FineTune(dir, tuned, modelgen.FineTuneOptions{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	for p, b := range readTree(t, tuned) {
		if strings.HasSuffix(p, ".safetensors") {
			files["tuned/"+p] = b
		}
	}
	e.repos.Commit("acme/big", "main", files)
	total := totalSize(files)

	// The reference: one uninterrupted pull.
	ref := store.TestStore(t, testStoreOpts)
	want, err := Pull(ctx, e.client(e.reader, nil), ref, PullOptions{Repo: "acme/big", CheckpointBytes: 48 << 10})
	if err != nil {
		t.Fatal(err)
	}
	wantFiles, err := ref.CommitFiles(want.Commit)
	if err != nil {
		t.Fatal(err)
	}
	list, err := e.client(e.reader, nil).ListFiles(ctx, "acme/big", want.RemoteCommit)
	if err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(42, 7))
	resumedRuns := 0
	var savedTotal int64
	for run := range 12 {
		s := store.TestStore(t, testStoreOpts)
		cut := 1 + rng.Int64N(total-1)
		cancelMode := run%2 == 1
		pctx, cancel := context.WithCancel(ctx)
		var budget atomic.Int64
		budget.Store(cut)
		var down atomic.Bool
		e.setFault(func(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
			if down.Load() && !cancelMode {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return nil, true
			}
			if !strings.Contains(r.URL.Path, "/resolve/") {
				return nil, false
			}
			return &cutWriter{ResponseWriter: w, budget: &budget, onCut: func() {
				down.Store(true)
				if cancelMode {
					cancel()
				}
			}}, false
		})
		c := e.client(e.reader, func(o *Options) { o.MaxRetries = 2 })
		_, err := Pull(pctx, c, s, PullOptions{Repo: "acme/big", CheckpointBytes: 48 << 10})
		cancel()
		if err == nil {
			t.Fatalf("run %d: cut at %d of %d, but the pull succeeded", run, cut, total)
		}
		if refs, _ := s.Refs(); len(refs) != 0 {
			t.Fatalf("run %d: a failed pull committed %v", run, refs)
		}
		// What the restart must fetch: nothing of stored files, the rest of
		// files in flight.
		var expect, saved int64
		for _, f := range list {
			if _, _, err := s.FileBySHA256(f.SHA256); f.LFS() && err == nil {
				saved += f.Size
				continue
			}
			point := int64(0)
			if f.LFS() {
				if point, err = s.ResumePoint(f.SHA256); err != nil {
					t.Fatal(err)
				}
			}
			saved += point
			expect += f.Size - point
		}
		if saved > 0 {
			resumedRuns++
		}
		savedTotal += saved
		e.setFault(nil)
		e.resetCounts()
		res, err := Pull(ctx, e.client(e.reader, nil), s, PullOptions{Repo: "acme/big", CheckpointBytes: 48 << 10})
		if err != nil {
			t.Fatalf("run %d (cut at %d, cancel %v): restart: %v", run, cut, cancelMode, err)
		}
		if res.FetchedBytes != expect || e.served.Load() != expect {
			t.Fatalf("run %d (cut at %d, cancel %v): restart fetched %d (served %d), want %d of %d", run, cut, cancelMode, res.FetchedBytes, e.served.Load(), expect, total)
		}
		t.Logf("run %2d: cut at %7d of %d (%s): restart fetched %7d, %7d bytes not fetched again (%d files resumed)",
			run, cut, total, map[bool]string{true: "cancel", false: "server"}[cancelMode], res.FetchedBytes, saved, res.ResumedFiles)
		got, err := s.CommitFiles(res.Commit)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(wantFiles) {
			t.Fatalf("run %d: %d files, want %d", run, len(got), len(wantFiles))
		}
		for i := range got {
			if got[i].Path != wantFiles[i].Path || got[i].ID != wantFiles[i].ID {
				t.Fatalf("run %d: %s is file %s, an uninterrupted pull made %s", run, got[i].Path, got[i].ID.Short(), wantFiles[i].ID.Short())
			}
		}
		if run < 2 {
			exportEquals(t, s, "acme/big", files)
		}
	}
	t.Logf("%d of 12 runs resumed; %d bytes not fetched again in all", resumedRuns, savedTotal)
	if resumedRuns < 6 {
		t.Fatalf("only %d of 12 interrupted pulls kept anything", resumedRuns)
	}
}

// cutWriter passes through a shared budget of bytes, then writes what is
// left of it, calls onCut and drops the connection.
type cutWriter struct {
	http.ResponseWriter
	budget *atomic.Int64
	onCut  func()
}

func (c *cutWriter) Write(p []byte) (int, error) {
	left := c.budget.Add(-int64(len(p)))
	if left >= 0 {
		return c.ResponseWriter.Write(p)
	}
	if keep := int64(len(p)) + left; keep > 0 {
		c.ResponseWriter.Write(p[:keep])
	}
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	c.onCut()
	panic(http.ErrAbortHandler)
}

func (c *cutWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// TestPullRetries: 429 with Retry-After, 503 and cut connections are
// retried, and the pull completes with every byte fetched once more only for
// what was cut.
func TestPullRetries(t *testing.T) {
	e := newHubEnv(t, nil)
	dir := tinyModel(t, 3)
	files := readTree(t, dir)
	e.publish("acme/flaky", dir)
	var n atomic.Int64
	var second atomic.Int64 // when the request after the 429 came
	e.setFault(func(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
		k := n.Add(1)
		if k == 2 {
			second.Store(time.Now().UnixNano())
		}
		switch {
		case k == 1:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return nil, true
		case k%4 == 2:
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return nil, true
		case k%4 == 3 && strings.Contains(r.URL.Path, "/resolve/"):
			var budget atomic.Int64
			budget.Store(1000)
			return &cutWriter{ResponseWriter: w, budget: &budget, onCut: func() {}}, false
		}
		return nil, false
	})
	s := store.TestStore(t, testStoreOpts)
	c := e.client(e.reader, func(o *Options) { o.MaxRetryAfter = 30 * time.Millisecond })
	start := time.Now()
	res, err := Pull(ctx, c, s, PullOptions{Repo: "acme/flaky"})
	if err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	t.Logf("flaky pull: %d requests, %d retries, fetched %d bytes for %d, in %v", st.Requests, st.Retries, res.FetchedBytes, totalSize(files), time.Since(start))
	if gap := time.Duration(second.Load() - start.UnixNano()); gap < 30*time.Millisecond {
		t.Fatalf("the request after the 429 came %v after the start: its Retry-After (capped at 30ms) was not honoured", gap)
	}
	if st.Retries < 3 || res.FetchedBytes < totalSize(files) {
		t.Fatalf("stats %+v, result %+v", st, res)
	}
	exportEquals(t, s, "acme/flaky", files)
}

// TestPullPermanentErrors: 401, 404 (repo, revision) and wrong bytes stop at
// once with an error naming the repo (and file), and commit nothing.
func TestPullPermanentErrors(t *testing.T) {
	e := newHubEnv(t, nil)
	dir := tinyModel(t, 4)
	e.publish("acme/m", dir)
	s := store.TestStore(t, testStoreOpts)
	for _, tc := range []struct {
		name, token, repo, rev string
		class                  error
		want                   string
	}{
		{"bad token", "heft_nottoken", "acme/m", "", ErrUnauthorized, "acme/m"},
		{"anonymous", "", "acme/m", "", ErrRepoNotFound, "acme/m"},
		{"missing repo", e.reader, "acme/nope", "", ErrRepoNotFound, "acme/nope"},
		{"missing revision", e.reader, "acme/m", "v9", ErrRevisionNotFound, "acme/m"},
	} {
		e.resetCounts()
		_, err := Pull(ctx, e.client(tc.token, nil), s, PullOptions{Repo: tc.repo, Revision: tc.rev})
		if !errors.Is(err, tc.class) || !IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v, want %v naming %s", tc.name, err, tc.class, tc.want)
		}
		if n := e.requests.Load(); n != 1 {
			t.Fatalf("%s: %d requests, want 1 (no retries)", tc.name, n)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	// Wrong bytes, in an LFS file and in a file kept in git.
	// In tensor data (past the header, so only the SHA-256 can tell), in the
	// safetensors header, and in a file kept in git.
	for _, v := range []struct {
		file string
		at   int
		want string
	}{
		{"model-00002-of-00002.safetensors", 60_000, "sha256"},
		{"model-00001-of-00002.safetensors", 100, "safetensors"},
		{"config.json", 100, "git blob id"},
	} {
		e.setFault(func(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
			if strings.HasSuffix(r.URL.Path, "/"+v.file) {
				return &flipWriter{ResponseWriter: w, at: v.at}, false
			}
			return nil, false
		})
		// A fresh store each time: files an earlier attempt stored are not
		// fetched again.
		s := store.TestStore(t, testStoreOpts)
		_, err := Pull(ctx, e.client(e.reader, nil), s, PullOptions{Repo: "acme/m"})
		if refs, _ := s.Refs(); len(refs) != 0 {
			t.Fatalf("a pull with wrong bytes committed %v", refs)
		}
		victim := v.file
		if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), "acme/m") || !strings.Contains(err.Error(), v.want) {
			t.Fatalf("%s: %v, want a hash mismatch naming the file", victim, err)
		}
		t.Logf("wrong bytes: %v", err)
	}
	if refs, _ := s.Refs(); len(refs) != 0 {
		t.Fatalf("failed pulls committed %v", refs)
	}
}

// flipWriter flips one bit of the response body at offset at (of the body,
// not the file: ranges each get their own).
type flipWriter struct {
	http.ResponseWriter
	at   int
	off  int
	done bool
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if !f.done && f.off+len(p) > f.at {
		q := append([]byte(nil), p...)
		q[max(0, f.at-f.off)] ^= 0x20
		f.done = true
		p = q
	}
	f.off += len(p)
	return f.ResponseWriter.Write(p)
}

func (f *flipWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// TestPullRedirectDropsToken: /resolve redirected to a CDN is fetched there
// without the Authorization header, even when the CDN is a subdomain of the
// hub's host (where Go's own redirect rule would keep it).
func TestPullRedirectDropsToken(t *testing.T) {
	e := newHubEnv(t, nil)
	dir := tinyModel(t, 6)
	files := readTree(t, dir)
	e.publish("acme/cdn", dir)
	var sawAuth, hits atomic.Int64
	cdnHandler := hubHandlerAnon(t, e)
	cdn := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") != "" {
			sawAuth.Add(1)
		}
		cdnHandler.ServeHTTP(w, r)
	}))
	e.setFault(func(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
		if strings.Contains(r.URL.Path, "/resolve/") {
			http.Redirect(w, r, "http://cdn.hub.test"+r.URL.Path, http.StatusFound)
			return nil, true
		}
		return nil, false
	})
	// hub.test and cdn.hub.test resolve to the two test servers.
	addrs := map[string]string{"hub.test:80": strings.TrimPrefix(e.url, "http://"), "cdn.hub.test:80": strings.TrimPrefix(cdn, "http://")}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if a, ok := addrs[addr]; ok {
			addr = a
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	c := e.client(e.reader, func(o *Options) {
		o.Endpoint = "http://hub.test"
		o.HTTPClient = &http.Client{Transport: tr}
	})
	s := store.TestStore(t, testStoreOpts)
	if _, err := Pull(ctx, c, s, PullOptions{Repo: "acme/cdn"}); err != nil {
		t.Fatal(err)
	}
	if hits.Load() == 0 || sawAuth.Load() != 0 {
		t.Fatalf("CDN hits %d, with Authorization %d", hits.Load(), sawAuth.Load())
	}
	exportEquals(t, s, "acme/cdn", files)
}

func TestParseURI(t *testing.T) {
	for in, want := range map[string][2]string{
		"hf://acme/tiny":                 {"acme/tiny", ""},
		"hf://acme/tiny@v1.0":            {"acme/tiny", "v1.0"},
		"hf://acme/tiny@refs/pr/1":       {"acme/tiny", "refs/pr/1"},
		"hf://Org-1/model.v2@" + sha40(): {"Org-1/model.v2", sha40()},
	} {
		repo, rev, err := ParseURI(in)
		if err != nil || repo != want[0] || rev != want[1] {
			t.Errorf("ParseURI(%q) = %q, %q, %v", in, repo, rev, err)
		}
	}
	for _, bad := range []string{"acme/tiny", "hf://tiny", "hf://a/b/c", "hf://acme/tiny@", "hf://acme/-x", "hf://a--b/c"} {
		if _, _, err := ParseURI(bad); err == nil {
			t.Errorf("ParseURI(%q) accepted", bad)
		}
	}
}

func sha40() string { return fmt.Sprintf("%040x", 12345) }

// TestPullDemo pulls the 46 MB demo model with the store's default chunking,
// 4 MiB ranges and a cut in the middle of the first attempt.
func TestPullDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("46 MB model")
	}
	e := newHubEnv(t, nil)
	dir := filepath.Join(t.TempDir(), "demo")
	if err := modelgen.WriteBase(dir, modelgen.Demo(), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	files := readTree(t, dir)
	e.publish("acme/demo", dir)
	s := store.TestStore(t, store.Options{})
	total := totalSize(files)
	var budget atomic.Int64
	budget.Store(total / 2)
	var down atomic.Bool
	e.setFault(func(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return nil, true
		}
		if strings.Contains(r.URL.Path, "/resolve/") {
			return &cutWriter{ResponseWriter: w, budget: &budget, onCut: func() { down.Store(true) }}, false
		}
		return nil, false
	})
	opts := func(o *Options) { o.RangeSize, o.MaxRetries = 4<<20, 1 }
	if _, err := Pull(ctx, e.client(e.reader, opts), s, PullOptions{Repo: "acme/demo", CheckpointBytes: 8 << 20}); err == nil {
		t.Fatal("the cut pull succeeded")
	}
	e.setFault(nil)
	e.resetCounts()
	start := time.Now()
	res, err := Pull(ctx, e.client(e.reader, opts), s, PullOptions{Repo: "acme/demo", CheckpointBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("demo: %d bytes; restart fetched %d (%d resumed from the store, %d files already stored) in %v",
		total, res.FetchedBytes, res.ResumedBytes, res.SkippedFiles, time.Since(start))
	if res.ResumedBytes == 0 || res.FetchedBytes+res.ResumedBytes+res.SkippedBytes != total || res.FetchedBytes != e.served.Load() {
		t.Fatalf("restart fetched %d of %d (served %d)", res.FetchedBytes, total, e.served.Load())
	}
	exportEquals(t, s, "acme/demo", files)
}

// TestPullDuplicateContent: two paths with the same LFS content are fetched
// once.
func TestPullDuplicateContent(t *testing.T) {
	e := newHubEnv(t, nil)
	files := readTree(t, tinyModel(t, 8))
	w := files["model-00001-of-00002.safetensors"]
	files["copy/model-00001-of-00002.safetensors"] = w
	e.repos.Commit("acme/dup", "main", files)
	s := store.TestStore(t, testStoreOpts)
	res, err := Pull(ctx, e.client(e.reader, nil), s, PullOptions{Repo: "acme/dup"})
	if err != nil {
		t.Fatal(err)
	}
	if want := totalSize(files) - int64(len(w)); res.FetchedBytes != want || e.served.Load() != want || res.SkippedFiles != 1 {
		t.Fatalf("%+v, served %d, want %d fetched", res, e.served.Load(), want)
	}
	exportEquals(t, s, "acme/dup", files)
}
