package hub_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
)

// fixture is a small model repo "acme/tiny" in a hubtest.Repos:
//
//	main (also tag v1.0 → the first commit, with an older config.json)
//	  config.json, generation_config.json, empty.txt (0 bytes),
//	  model.safetensors (12 MiB, LFS), tokenizer/tokenizer.json,
//	  a/b/c.txt, a/b.txt
//	feature/x: main's files with another config.json
//
// plus "acme/other" with one file, so listings have more than one repo.
type fixture struct {
	repos               *hubtest.Repos
	v1, main, feature   hub.Commit
	files, featureFiles map[string][]byte
}

// makeSafetensors writes a real safetensors file with the codec, so clients
// that parse headers (get_safetensors_metadata) see a valid one. The F32
// tensor makes the file 12 MiB: Python writes what it receives in 10 MiB
// pieces (DOWNLOAD_CHUNK_SIZE) and resumes from what it wrote, so only a
// body cut after 10 MiB makes it send a Range request.
func makeSafetensors(t testing.TB) []byte {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{1, 2})
	data := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	var buf bytes.Buffer
	err := safetensors.Write(&buf, []safetensors.Tensor{
		{TensorSpec: safetensors.TensorSpec{Name: "model.embed_tokens.weight", DType: "BF16", Shape: []uint64{64, 32}}, Data: data(64 * 32 * 2)},
		{TensorSpec: safetensors.TensorSpec{Name: "lm_head.weight", DType: "F32", Shape: []uint64{768, 4096}}, Data: data(768 * 4096 * 4)},
	}, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{repos: hubtest.New()}
	f.files = map[string][]byte{
		"config.json":              []byte(`{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","hidden_size":32}` + "\n"),
		"generation_config.json":   []byte(`{"do_sample":false}` + "\n"),
		"empty.txt":                {},
		"model.safetensors":        makeSafetensors(t),
		"tokenizer/tokenizer.json": []byte(`{"version":"1.0","model":{"type":"BPE"}}` + "\n"),
		"a/b/c.txt":                []byte("deep\n"),
		// git sorts "b.txt" before the directory "b" (compared as "b/"), the
		// listings put "b" first: directory oids must use git's order.
		"a/b.txt": []byte("beside\n"),
	}
	old := clone(f.files)
	old["config.json"] = []byte(`{"model_type":"qwen3","old":true}` + "\n")
	f.v1 = f.repos.Commit("acme/tiny", "main", old)
	f.repos.SetRef("acme/tiny", "v1.0", f.v1.ID)
	f.main = f.repos.Commit("acme/tiny", "main", f.files)
	f.featureFiles = clone(f.files)
	f.featureFiles["config.json"] = []byte(`{"model_type":"qwen3","feature":"x"}` + "\n")
	f.feature = f.repos.Commit("acme/tiny", "feature/x", f.featureFiles)
	f.repos.Commit("acme/other", "main", map[string][]byte{"README.md": []byte("# other\n")})
	return f
}

func clone(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// logBuffer collects the handler's JSON log records for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// records returns the decoded log records so far.
func (l *logBuffer) records(t testing.TB) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// newServer serves the fixture through NewHandler on an httptest server and
// checks, when the test ends, that every reader the handler opened was
// closed.
func newServer(t *testing.T, f *fixture, opts hub.Options) (*httptest.Server, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	srv := httptest.NewServer(hub.NewHandler(f.repos, opts))
	t.Cleanup(func() {
		srv.Close()
		if n := f.repos.OpenReaders(); n != 0 {
			t.Errorf("%d readers left open", n)
		}
	})
	return srv, logs
}

// do sends one request and returns the response with its body read.
func do(t *testing.T, method, url string, hdr map[string]string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, b
}

// serveHandler serves h on an httptest server for the test and returns its
// URL.
func serveHandler(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
