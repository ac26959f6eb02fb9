package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/store"
)

// hfServer serves an in-memory hub with a write token for acme, and points
// HF_ENDPOINT and HF_TOKEN at it.
func hfServer(t *testing.T) *hubtest.Repos {
	t.Helper()
	repos := hubtest.New()
	tokens, err := hub.OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g, _ := hub.ParseGrant("acme:write")
	secret, _, err := tokens.Create("cli", "alice", []hub.Grant{g}, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := hub.NewHandler(repos, hub.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Writer: repos, Tokens: tokens, StagingDir: t.TempDir()})
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); h.Close() })
	t.Setenv("HF_ENDPOINT", srv.URL+"/")
	t.Setenv("HF_TOKEN", secret)
	return repos
}

// hfCall runs fn (hfPull or hfPush) with a context of the real app and returns
// what it printed.
func hfCall(t *testing.T, jsonOut bool, fn func(*cli.Context, *env) error) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	app := NewApp(&out, &errb)
	c := cli.NewContext(app, flag.NewFlagSet("hf", flag.ContinueOnError), nil)
	c.Context = context.Background()
	err := fn(c, &env{stdout: &out, stderr: &errb, json: jsonOut, quiet: true})
	return out.String(), err
}

func TestHFPullPush(t *testing.T) {
	repos := hfServer(t)
	dir := filepath.Join(t.TempDir(), "m")
	if err := modelgen.WriteBase(dir, modelgen.Tiny(), modelgen.Options{Seed: 21}); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		b, err := os.ReadFile(filepath.Join(dir, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[en.Name()] = b
	}
	repos.Commit("acme/tiny", "main", files)
	s := store.TestStore(t, store.Options{ChunkSize: 16 << 10})

	out, err := hfCall(t, true, func(c *cli.Context, e *env) error { return hfPull(c, e, s, "hf://acme/tiny", "") })
	if err != nil {
		t.Fatal(err)
	}
	var pulled struct {
		Ref             string `json:"ref"`
		Source          string `json:"source"`
		Files           int    `json:"files"`
		DownloadedFiles int    `json:"downloaded_files"`
		SkippedFiles    int    `json:"skipped_files"`
		FetchedBytes    int64  `json:"fetched_bytes"`
		LogicalBytes    int64  `json:"logical_bytes"`
		UpToDate        bool   `json:"up_to_date"`
	}
	if err := json.Unmarshal([]byte(out), &pulled); err != nil {
		t.Fatalf("pull --json printed %q: %v", out, err)
	}
	if pulled.Ref != "acme/tiny:main" || pulled.Files != len(files) || pulled.DownloadedFiles != len(files) || pulled.FetchedBytes != pulled.LogicalBytes || !strings.HasPrefix(pulled.Source, "hf://acme/tiny@") {
		t.Fatalf("pull: %+v", pulled)
	}
	export := filepath.Join(t.TempDir(), "x")
	if _, err := s.Export(context.Background(), "acme/tiny", export, nil); err != nil {
		t.Fatal(err)
	}
	for p, b := range files {
		got, err := os.ReadFile(filepath.Join(export, p))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s not exported identically: %v", p, err)
		}
	}

	// Human output, again: nothing fetched.
	out, err = hfCall(t, false, func(c *cli.Context, e *env) error { return hfPull(c, e, s, "hf://acme/tiny@main", "copy:v1") })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pull again:\n%s", out)
	if !strings.Contains(out, "copy:v1") || !strings.Contains(out, "0 downloaded") || !strings.Contains(out, "fetched 0 B") {
		t.Fatalf("second pull printed:\n%s", out)
	}

	// Push the pulled model to a new repo, then again (up to date).
	out, err = hfCall(t, false, func(c *cli.Context, e *env) error { return hfPush(c, e, s, "copy:v1", "hf://acme/copy") })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push:\n%s", out)
	if !strings.Contains(out, "created acme/copy") || !strings.Contains(out, "hf://acme/copy@main") {
		t.Fatalf("push printed:\n%s", out)
	}
	out, err = hfCall(t, true, func(c *cli.Context, e *env) error { return hfPush(c, e, s, "copy:v1", "hf://acme/copy") })
	var pushed struct {
		UpToDate        bool `json:"up_to_date"`
		UploadedObjects int  `json:"uploaded_objects"`
	}
	if err != nil || json.Unmarshal([]byte(out), &pushed) != nil || !pushed.UpToDate || pushed.UploadedObjects != 0 {
		t.Fatalf("push again: %q, %v", out, err)
	}
}

func TestHFErrorsExitCodes(t *testing.T) {
	hfServer(t)
	s := store.TestStore(t, store.Options{})
	for _, tc := range []struct {
		source string
		token  string
		code   int
	}{
		{"hf://acme/missing", "", ExitInput},
		{"hf://acme/missing", "heft_wrong", ExitInput},
		{"acme/missing", "", ExitInput},
		{"hf://acme", "", ExitInput},
	} {
		if tc.token != "" {
			t.Setenv("HF_TOKEN", tc.token)
		}
		_, err := hfCall(t, false, func(c *cli.Context, e *env) error { return hfPull(c, e, s, tc.source, "") })
		if err == nil || ExitCode(err) != tc.code {
			t.Fatalf("pull %s: %v (exit %d), want exit %d", tc.source, err, ExitCode(err), tc.code)
		}
		t.Logf("pull %s: %v", tc.source, err)
	}
	if refs, _ := s.Refs(); len(refs) != 0 {
		t.Fatalf("failed pulls made refs %v", refs)
	}
	// A ref that does not exist is found before any request.
	t.Setenv("HF_ENDPOINT", "http://127.0.0.1:1")
	_, err := hfCall(t, false, func(c *cli.Context, e *env) error {
		return hfPush(c, e, s, "nothing", "hf://acme/x")
	})
	if err == nil || ExitCode(err) != ExitInput {
		t.Fatalf("push of a missing ref: %v", err)
	}
}
