package hfclient

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/store"
)

var ctx = context.Background()

// testStoreOpts makes tiny models span many chunks, checkpoints and packs.
var testStoreOpts = store.Options{ChunkSize: 16 << 10, PackSize: 1 << 20}

// hubEnv is a write-enabled hub.Handler over an in-memory hubtest.Repos, with
// tokens, behind a middleware that counts what is served and can inject
// faults.
type hubEnv struct {
	t       *testing.T
	repos   *hubtest.Repos
	handler *hub.Handler
	srv     *httptest.Server
	url     string
	token   string // write on acme
	reader  string // read on acme

	served   atomic.Int64 // bytes of /resolve response bodies
	requests atomic.Int64 // every request
	inFlight atomic.Int64 // requests whose handler has not returned
	puts     atomic.Int64 // upload PUTs (objects and parts)
	parts    atomic.Int64 // multipart part PUTs

	mu     sync.Mutex
	routes map[string]int // "METHOD kind" → count
	// fault, when set, may answer a request itself (returning true) or wrap
	// the response writer (returning false and a writer).
	fault func(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool)
}

func newHubEnv(t *testing.T, tweak func(*hub.Options)) *hubEnv {
	t.Helper()
	e := &hubEnv{t: t, repos: hubtest.New(), routes: map[string]int{}}
	tokens, err := hub.OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []struct {
		name  string
		grant string
		dst   *string
	}{{"writer", "acme:write", &e.token}, {"reader", "acme:read", &e.reader}} {
		g, err := hub.ParseGrant(tok.grant)
		if err != nil {
			t.Fatal(err)
		}
		secret, _, err := tokens.Create(tok.name, "alice", []hub.Grant{g}, 0)
		if err != nil {
			t.Fatal(err)
		}
		*tok.dst = secret
	}
	opts := hub.Options{
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
		Writer:             e.repos,
		Tokens:             tokens,
		UploadKey:          bytes.Repeat([]byte{9}, 32),
		MultipartThreshold: 256 << 10,
		MultipartChunkSize: 96 << 10,
		StagingDir:         filepath.Join(t.TempDir(), "staging"),
	}
	if tweak != nil {
		tweak(&opts)
	}
	e.handler = hub.NewHandler(e.repos, opts)
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	e.url = e.srv.URL
	t.Cleanup(func() {
		e.srv.Close()
		if err := e.handler.Close(); err != nil {
			t.Errorf("handler close: %v", err)
		}
		if n := e.repos.OpenReaders(); n != 0 {
			t.Errorf("%d readers left open", n)
		}
	})
	return e
}

func (e *hubEnv) serve(w http.ResponseWriter, r *http.Request) {
	e.requests.Add(1)
	e.inFlight.Add(1)
	defer e.inFlight.Add(-1)
	kind := "api"
	switch p := r.URL.Path; {
	case strings.Contains(p, "/resolve/"):
		kind = "resolve"
	case strings.HasPrefix(p, "/.heft-lfs/part/"):
		kind = "part"
		e.parts.Add(1)
	case strings.HasPrefix(p, "/.heft-lfs/object/"):
		kind = "object"
	case strings.HasPrefix(p, "/.heft-lfs/"):
		kind = strings.Split(p, "/")[2]
	case strings.HasSuffix(p, "/objects/batch"):
		kind = "batch"
	}
	if r.Method == http.MethodPut {
		e.puts.Add(1)
	}
	e.mu.Lock()
	e.routes[r.Method+" "+kind]++
	fault := e.fault
	e.mu.Unlock()
	if fault != nil {
		nw, done := fault(w, r)
		if done {
			return
		}
		if nw != nil {
			w = nw
		}
	}
	if kind == "resolve" && r.Method == http.MethodGet {
		w = &countWriter{ResponseWriter: w, n: &e.served}
	}
	e.handler.ServeHTTP(w, r)
}

func (e *hubEnv) setFault(f func(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool)) {
	e.mu.Lock()
	e.fault = f
	e.mu.Unlock()
}

func (e *hubEnv) count(route string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.routes[route]
}

// resetCounts zeroes the counters once nothing of an earlier, interrupted
// transfer can still be served: a request its client sent just before giving
// up may sit unread in a connection, or its handler may still be writing, and
// those bytes must not count as the next transfer's. So every connection is
// closed first (unread requests are never served) and the running handlers
// are waited for.
func (e *hubEnv) resetCounts() {
	e.t.Helper()
	e.srv.CloseClientConnections()
	for deadline := time.Now().Add(10 * time.Second); e.inFlight.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("%d requests still being served after 10 s", e.inFlight.Load())
		}
	}
	e.mu.Lock()
	e.routes = map[string]int{}
	e.mu.Unlock()
	e.served.Store(0)
	e.requests.Store(0)
	e.puts.Store(0)
	e.parts.Store(0)
}

// client returns a client of the server with token and fast retries.
func (e *hubEnv) client(token string, tweak func(*Options)) *Client {
	e.t.Helper()
	o := Options{Endpoint: e.url, Token: token, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond,
		RangeSize: 64 << 10, Connections: 4, StallTimeout: 5 * time.Second}
	if tweak != nil {
		tweak(&o)
	}
	c, err := New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// publish commits the files of dir to repo's main branch on the fake hub.
func (e *hubEnv) publish(repo, dir string) {
	e.t.Helper()
	e.repos.Commit(repo, "main", readTree(e.t, dir))
}

type countWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// readTree maps every file under dir to its content.
func readTree(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tinyModel writes a Tiny base model in two shards.
func tinyModel(t testing.TB, seed uint64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	if err := modelgen.WriteBase(dir, modelgen.Tiny(), modelgen.Options{Seed: seed, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// exportEquals exports ref and compares it byte for byte with want.
func exportEquals(t testing.TB, s *store.Store, ref string, want map[string][]byte) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "export")
	if _, err := s.Export(ctx, ref, dst, nil); err != nil {
		t.Fatalf("export %s: %v", ref, err)
	}
	got := readTree(t, dst)
	if len(got) != len(want) {
		t.Fatalf("export of %s has %d files, want %d", ref, len(got), len(want))
	}
	for p, b := range want {
		if !bytes.Equal(got[p], b) {
			t.Fatalf("export of %s: %s differs (%d bytes, want %d)", ref, p, len(got[p]), len(b))
		}
	}
}

func totalSize(files map[string][]byte) int64 {
	var n int64
	for _, b := range files {
		n += int64(len(b))
	}
	return n
}

// hubHandlerAnon serves e's repos read-only to anyone (a CDN in front of it).
func hubHandlerAnon(t testing.TB, e *hubEnv) http.Handler {
	h := hub.NewHandler(e.repos, hub.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { h.Close() })
	return h
}

// httptestServer serves h for the test and returns its URL.
func httptestServer(t testing.TB, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
