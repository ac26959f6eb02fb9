package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/internal/storehub"
	"github.com/heft-dev/heft/store"
)

// TestServeStoreOverHubAPI checks the store adapter against the hub's Repos
// conformance suite and downloads through the Hub API, including a delta-stored
// fine-tune and a byte range.
func TestServeStoreOverHubAPI(t *testing.T) {
	s := store.TestStore(t, store.Options{ChunkSize: 64 << 10})
	root := t.TempDir()
	base, tuned := filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := modelgen.WriteBase(base, modelgen.Tiny(), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2, DeltaScale: 0.01}); err != nil {
		t.Fatal(err)
	}
	for ref, dir := range map[string]string{"org/base": base, "org/tuned:feature/x": tuned} {
		r, _ := store.ParseRef(ref)
		if _, err := s.Import(context.Background(), dir, store.ImportOptions{Ref: r}); err != nil {
			t.Fatal(err)
		}
	}
	repos := storehub.NewRepos(s)
	hubtest.CheckRepos(t, repos)

	srv := httptest.NewServer(hub.NewHandler(repos, hub.Options{Logger: slog.New(slog.DiscardHandler)}))
	defer srv.Close()
	get := func(url string, header ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	name := "model-00001-of-00002.safetensors"
	want, _ := os.ReadFile(filepath.Join(tuned, name))
	resp, body := get(srv.URL + "/org/tuned/resolve/feature%2Fx/" + name)
	sum := sha256.Sum256(body)
	if resp.StatusCode != 200 || string(body) != string(want) {
		t.Fatalf("resolve: %d, %d bytes", resp.StatusCode, len(body))
	}
	if etag := resp.Header.Get("X-Linked-Etag"); etag == "" || etag[1:len(etag)-1] != hex.EncodeToString(sum[:]) {
		t.Errorf("X-Linked-Etag %q, sha256 %x", etag, sum)
	}
	resp, body = get(srv.URL+"/org/tuned/resolve/feature%2Fx/"+name, "Range", "bytes=1000-70000")
	if resp.StatusCode != 206 || string(body) != string(want[1000:70001]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, _ = get(srv.URL + "/org/nope/resolve/main/config.json")
	if resp.StatusCode != 404 || resp.Header.Get("X-Error-Code") != "RepoNotFound" {
		t.Errorf("missing repo: %d %q", resp.StatusCode, resp.Header.Get("X-Error-Code"))
	}
}
