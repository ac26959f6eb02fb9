package hfclient

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTokenFromEnv(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, v := range []string{"HF_TOKEN", "HF_TOKEN_PATH", "HF_HOME", "XDG_CACHE_HOME"} {
		t.Setenv(v, "")
	}
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check := func(want string) {
		t.Helper()
		got, err := TokenFromEnv()
		if err != nil || got != want {
			t.Fatalf("TokenFromEnv = %q, %v; want %q", got, err, want)
		}
	}
	check("")
	write(filepath.Join(home, ".cache", "huggingface", "token"), "hf_default\n")
	check("hf_default")
	xdg := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", xdg)
	write(filepath.Join(xdg, "huggingface", "token"), "hf_xdg")
	check("hf_xdg")
	hfHome := t.TempDir()
	t.Setenv("HF_HOME", hfHome)
	check("") // HF_HOME set, no token there
	write(filepath.Join(hfHome, "token"), " hf_home ")
	check("hf_home")
	p := filepath.Join(t.TempDir(), "tok")
	write(p, "hf_path")
	t.Setenv("HF_TOKEN_PATH", p)
	check("hf_path")
	t.Setenv("HF_TOKEN", "hf_env")
	check("hf_env")

	t.Setenv("HF_ENDPOINT", "http://example.test:8080/")
	if got := EndpointFromEnv(); got != "http://example.test:8080" {
		t.Fatalf("EndpointFromEnv = %q", got)
	}
	t.Setenv("HF_ENDPOINT", "")
	if got := EndpointFromEnv(); got != DefaultEndpoint {
		t.Fatalf("EndpointFromEnv = %q", got)
	}
}

// fakeFile serves one file at /ns/name/resolve/…/f.bin with configurable
// misbehaviour, and a tree API with pages.
type fakeFile struct {
	data      []byte
	ignore    atomic.Bool  // answer 200 with the whole file
	badRange  atomic.Bool  // answer with a Content-Range other than asked
	stallOnce atomic.Bool  // send headers, then nothing, once
	gets      atomic.Int64 // resolve GETs
}

func (f *fakeFile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.Contains(r.URL.Path, "/resolve/"):
		f.gets.Add(1)
		if f.ignore.Load() {
			w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
			w.Write(f.data)
			return
		}
		var a, b int64
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b); err != nil {
			http.Error(w, "want a range", http.StatusBadRequest)
			return
		}
		b = min(b, int64(len(f.data))-1)
		if f.badRange.Load() {
			a++
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(f.data)))
		w.Header().Set("Content-Length", strconv.FormatInt(b-a+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		if f.stallOnce.CompareAndSwap(true, false) {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		w.Write(f.data[a : b+1])
	case strings.Contains(r.URL.Path, "/tree/"):
		// Two pages, the second on a relative Link.
		if r.URL.Query().Get("cursor") == "" {
			w.Header().Set("Link", `</api/models/ns/name/tree/`+sha40()+`?recursive=true&cursor=2>; rel="next"`)
			fmt.Fprint(w, `[{"type":"directory","path":"d","oid":"x","size":0},{"type":"file","path":"d/a.txt","oid":"aa","size":3}]`)
			return
		}
		fmt.Fprintf(w, `[{"type":"file","path":"f.bin","oid":"bb","size":%d,"lfs":{"oid":"%064x","size":%d,"pointerSize":130}}]`, len(f.data), 7, len(f.data))
	default:
		http.NotFound(w, r)
	}
}

func newFake(t *testing.T, n int) (*fakeFile, *Client) {
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(n), 9))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	f := &fakeFile{data: data}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := New(Options{Endpoint: srv.URL, RetryBase: time.Millisecond, RetryMax: 2 * time.Millisecond, RangeSize: 10_000, Connections: 3, StallTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return f, c
}

// TestDownloadRanges reads random spans through the parallel reader and
// checks every byte, and that connections are all released, also after a
// Close in the middle.
func TestDownloadRanges(t *testing.T) {
	f, c := newFake(t, 123_457)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		off := rng.Int64N(int64(len(f.data)))
		n := rng.Int64N(int64(len(f.data)) - off + 1)
		r, err := c.Download(ctx, "ns/name", sha40(), "f.bin", int64(len(f.data)), off, n)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, f.data[off:off+n]) {
			t.Fatalf("[%d, %d): %d bytes, %v", off, off+n, len(got), err)
		}
	}
	r, _ := c.Download(ctx, "ns/name", sha40(), "f.bin", int64(len(f.data)), 0, int64(len(f.data)))
	if _, err := io.ReadFull(r, make([]byte, 15_000)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if !c.conns.TryAcquire(3) {
		t.Fatal("connections left held after Close")
	}
	c.conns.Release(3)
	if _, err := c.Download(ctx, "ns/name", sha40(), "f.bin", 10, 5, 6); err == nil {
		t.Fatal("a range past the end was accepted")
	}
}

// TestDownloadServerQuirks: a server ignoring Range (200, whole file) still
// gives the right bytes; a wrong Content-Range is a protocol error at once;
// a stalled body is retried.
func TestDownloadServerQuirks(t *testing.T) {
	f, c := newFake(t, 25_000)
	size := int64(len(f.data))
	read := func(off, n int64) ([]byte, error) {
		r, err := c.OpenRange(ctx, "ns/name", sha40(), "f.bin", size, off, n)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	f.ignore.Store(true)
	got, err := read(1234, 5000)
	if err != nil || !bytes.Equal(got, f.data[1234:6234]) {
		t.Fatalf("200 answer: %v", err)
	}
	f.ignore.Store(false)

	f.badRange.Store(true)
	f.gets.Store(0)
	_, err = read(100, 200)
	if !errors.Is(err, ErrProtocol) || f.gets.Load() != 1 {
		t.Fatalf("wrong Content-Range: %v after %d GETs", err, f.gets.Load())
	}
	f.badRange.Store(false)
	// The listed size differs from the server's.
	r, _ := c.OpenRange(ctx, "ns/name", sha40(), "f.bin", size+1, 0, 10)
	if _, err := io.ReadAll(r); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "listed") {
		t.Fatalf("size mismatch: %v", err)
	}
	r.Close()

	f.stallOnce.Store(true)
	start := time.Now()
	got, err = read(0, size)
	if err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("after a stall: %v", err)
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Fatal("the stall was not waited out")
	}
}

// TestListFilesPages follows Link pages (relative here) and drops
// directories.
func TestListFilesPages(t *testing.T) {
	f, c := newFake(t, 1000)
	files, err := c.ListFiles(ctx, "ns/name", sha40())
	if err != nil {
		t.Fatal(err)
	}
	want := []RepoFile{{Path: "d/a.txt", Size: 3, BlobID: "aa"}, {Path: "f.bin", Size: int64(len(f.data)), BlobID: "bb", SHA256: fmt.Sprintf("%064x", 7)}}
	if fmt.Sprint(files) != fmt.Sprint(want) {
		t.Fatalf("ListFiles = %+v, want %+v", files, want)
	}
}

// TestListFilesFallback: a server without the tree API is asked for the
// siblings with blobs=true.
func TestListFilesFallback(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/tree/") {
			http.NotFound(w, r)
			return
		}
		if r.URL.Query().Get("blobs") != "true" {
			http.Error(w, "want blobs", http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"id":"ns/name","sha":"%s","siblings":[{"rfilename":"a.json","size":5,"blobId":"cc"},{"rfilename":"w.safetensors","size":9,"blobId":"dd","lfs":{"sha256":"%064x","size":9,"pointerSize":120}}]}`, sha40(), 1)
	}))
	defer srv.Close()
	c, _ := New(Options{Endpoint: srv.URL})
	files, err := c.ListFiles(ctx, "ns/name", sha40())
	if err != nil || len(files) != 2 || files[1].SHA256 != fmt.Sprintf("%064x", 1) || files[0].Size != 5 || files[0].LFS() {
		t.Fatalf("fallback listing: %+v, %v", files, err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"3":                             3 * time.Second,
		"0.5":                           500 * time.Millisecond,
		"-1":                            0,
		"Thu, 01 Jan 2026 00:00:07 GMT": 7 * time.Second,
		"soon":                          0,
	} {
		if got := parseRetryAfter(v, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", v, got, want)
		}
	}
	if got := parseRateLimit(`"api";r=0;t=55`); got != 55*time.Second {
		t.Errorf("parseRateLimit = %v", got)
	}
	c, _ := New(Options{MaxRetryAfter: time.Second})
	if got := c.retryAfter(http.Header{"Retry-After": {"3600"}}); got != time.Second {
		t.Errorf("Retry-After is not capped: %v", got)
	}
	for attempt := 1; attempt < 10; attempt++ {
		d := c.backoff(attempt)
		if d < DefaultRetryBase/2 || d > DefaultRetryMax {
			t.Errorf("backoff(%d) = %v", attempt, d)
		}
	}
}

// TestErrorsNotRetried: permanent statuses are sent once; 5xx are retried up
// to MaxRetries; a commit is not retried after a 500.
func TestErrorsNotRetried(t *testing.T) {
	var hits atomic.Int64
	status := atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("X-Error-Code", map[int64]string{404: "EntryNotFound"}[status.Load()])
		http.Error(w, `{"error":"nope"}`, int(status.Load()))
	}))
	defer srv.Close()
	c, _ := New(Options{Endpoint: srv.URL, MaxRetries: 3, RetryBase: time.Millisecond, RetryMax: time.Millisecond})
	for _, tc := range []struct {
		status int
		hits   int64
		class  error
	}{{401, 1, ErrUnauthorized}, {403, 1, ErrForbidden}, {404, 1, ErrEntryNotFound}, {400, 1, nil}, {500, 4, nil}, {503, 4, nil}} {
		hits.Store(0)
		status.Store(int64(tc.status))
		_, err := c.RepoInfo(ctx, "ns/name", "main", false)
		var he *Error
		if !errors.As(err, &he) || he.Status != tc.status || hits.Load() != tc.hits || (tc.class != nil && !errors.Is(err, tc.class)) {
			t.Fatalf("status %d: %v after %d requests", tc.status, err, hits.Load())
		}
		if IsPermanent(err) != (tc.status < 500) {
			t.Fatalf("status %d: IsPermanent = %v", tc.status, IsPermanent(err))
		}
	}
	hits.Store(0)
	status.Store(500)
	if _, err := c.Commit(ctx, "ns/name", "main", CommitRequest{Summary: "x"}); err == nil || hits.Load() != 1 {
		t.Fatalf("commit after a 500: %v, %d requests", err, hits.Load())
	}
	hits.Store(0)
	status.Store(503)
	if _, err := c.Commit(ctx, "ns/name", "main", CommitRequest{Summary: "x"}); err == nil || hits.Load() != 4 {
		t.Fatalf("commit after 503s: %v, %d requests", err, hits.Load())
	}
}

func TestCommitNDJSON(t *testing.T) {
	body, err := CommitRequest{Summary: "s", ParentCommit: sha40(), Ops: []CommitOp{
		{Path: "w.safetensors", LFS: true, OID: fmt.Sprintf("%064x", 5), Size: 9},
		{Path: "a <b>.json", Content: []byte("{}")},
		{Path: "old", Delete: true},
	}}.ndjson()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"key":"header","value":{"description":"","parentCommit":"` + sha40() + `","summary":"s"}}
{"key":"lfsFile","value":{"algo":"sha256","oid":"` + fmt.Sprintf("%064x", 5) + `","path":"w.safetensors","size":9}}
{"key":"file","value":{"content":"e30=","encoding":"base64","path":"a <b>.json"}}
{"key":"deletedFile","value":{"path":"old"}}
`
	if string(body) != want {
		t.Fatalf("NDJSON:\n%s\nwant:\n%s", body, want)
	}
}
