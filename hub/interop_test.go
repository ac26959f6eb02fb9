//go:build linux || darwin

package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
	"github.com/heft-dev/heft/internal/pyenv"
)

// pythonClients are the huggingface_hub versions the interop test runs: the
// last 0.x (requests-based, PY0 in hub-protocol.md) and the newest release
// (httpx-based), installed by internal/pyenv (under .venv/test at the module
// root, gitignored; HEFT_PYTHON_VENVS keeps them elsewhere). The "latest" venv is what
// was newest when it was built; delete it to pick up a newer release.
// optional packages are installed if pip can: hf_transfer is what older
// vLLM turns on with 0.x, and it fetches files as parallel ranged GETs
// (§2.3); the 1.x and later clients no longer use it.
var pythonClients = []struct {
	name, requirement string
	optional          []string
}{
	{"0.36.2", "huggingface_hub==0.36.2", []string{"hf_transfer"}},
	{"latest", "huggingface_hub", nil},
}

// TestPythonClient serves a small model to the real Python client:
// snapshot_download (main and a branch with a slash), hf_hub_download (with
// a body cut after 11 MiB by an injected store failure, so the client has
// to resume with Range), list_repo_files, list_repo_tree, model_info,
// get_safetensors_metadata (ranged header read), the not-found errors, the
// `hf download` CLI, and finally a load from the cache with the server gone
// and HF_HUB_OFFLINE=1. Every downloaded file's sha256 is checked. Xet is
// left enabled (hf_xet is installed with both versions): the server sends no
// Xet headers, so the clients must stay on plain HTTP by themselves (§5.1).
// Then runUploadInterop drives the write API with the same client (see
// there for what it covers and where HF_HUB_DISABLE_XET is needed).
func TestPythonClient(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the huggingface_hub interop test")
	}
	for _, c := range pythonClients {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			venv := pyenv.Venv(t, "hf-"+c.name, c.requirement)
			pyenv.InstallOptional(t, venv, c.optional...)
			runInterop(t, venv)
			runUploadInterop(t, venv)
		})
	}
}

// clientEnv is the environment for the Python client: nothing from the
// caller's Hugging Face set-up (token, cache, endpoint) and no proxy for
// the loopback server.
func clientEnv(home string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		uk := strings.ToUpper(k)
		if strings.HasPrefix(uk, "HF_") || strings.HasPrefix(uk, "HUGGINGFACE_") || strings.HasSuffix(uk, "_PROXY") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HF_HOME="+home, "HF_HUB_DISABLE_PROGRESS_BARS=1", "HF_HUB_DISABLE_TELEMETRY=1",
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost", "PYTHONUNBUFFERED=1")
	return append(env, extra...)
}

// clientResult is what testdata/hf_client.py prints.
type clientResult struct {
	Version string `json:"version"`
	Resume  struct {
		SHA256   *string  `json:"sha256"`
		Attempts int      `json:"attempts"`
		Errors   []string `json:"errors"`
	} `json:"resume"`
	InfoSHA         string   `json:"info_sha"`
	InfoSiblings    []string `json:"info_siblings"`
	FeatureSHA      string   `json:"feature_sha"`
	Files           []string `json:"files"`
	TreeA           []string `json:"tree_a"`
	Snapshot        snapJSON `json:"snapshot"`
	SnapshotFeature snapJSON `json:"snapshot_feature"`
	Blobs           []string `json:"blobs"`
	Single          struct {
		Path   string `json:"path"`
		SHA256 string `json:"sha256"`
	} `json:"single"`
	HFTransfer *struct {
		Version string `json:"version"`
		SHA256  string `json:"sha256"`
	} `json:"hf_transfer"`
	SafetensorsTensors []string `json:"safetensors_tensors"`
	ErrMissingFile     string   `json:"err_missing_file"`
	NoExistCached      bool     `json:"no_exist_cached"`
	ErrBadRevision     string   `json:"err_bad_revision"`
	ErrBadRepo         string   `json:"err_bad_repo"`
	ErrBadRepoInfo     string   `json:"err_bad_repo_info"`
}

type snapJSON struct {
	Path  string            `json:"path"`
	Files map[string]string `json:"files"`
}

func runClient(t *testing.T, venv string, env []string, mode string, cfg any) clientResult {
	t.Helper()
	var res clientResult
	runClientInto(t, venv, env, mode, cfg, &res)
	return res
}

// runClientInto runs testdata/hf_client.py MODE and decodes what it prints
// into res.
func runClientInto(t *testing.T, venv string, env []string, mode string, cfg, res any) {
	t.Helper()
	cfgJSON, _ := json.Marshal(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(venv, "bin", "python"), filepath.Join("testdata", "hf_client.py"), mode, string(cfgJSON))
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hf_client.py %s: %v\nstderr:\n%s", mode, err, stderr.String())
	}
	if err := json.Unmarshal(out, res); err != nil {
		t.Fatalf("hf_client.py %s: bad output %q: %v\nstderr:\n%s", mode, out, err, stderr.String())
	}
}

func hashesOf(files map[string][]byte) map[string]string {
	out := map[string]string{}
	for p, b := range files {
		out[p] = hubtest.SHA256(b)
	}
	return out
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func runInterop(t *testing.T, venv string) {
	start := time.Now()
	f := newFixture(t)
	model := f.files["model.safetensors"]
	// Past the client's first 10 MiB write (see makeSafetensors), so that
	// it has something to resume from.
	cut := int64(11 << 20)
	f.repos.FailReadOnce("model.safetensors", cut, errors.New("injected: chunk damaged"))

	// hf_transfer only takes files over 50 MiB (PY0 http_get); such a file
	// lives on its own branch so that the snapshots stay small.
	big := make([]byte, 50<<20+123457)
	rand.NewChaCha8([32]byte{3}).Read(big)
	f.repos.Commit("acme/tiny", "big", map[string][]byte{"big.safetensors": big})

	logs := &logBuffer{}
	handler := hub.NewHandler(f.repos, hub.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- hub.ServeListener(ctx, ln, handler) }()
	endpoint := "http://" + ln.Addr().String()
	var once sync.Once
	var serveErr error
	shutdown := func() error {
		once.Do(func() { stop(); serveErr = <-served })
		return serveErr
	}
	defer shutdown()

	tmp := t.TempDir()
	cfg := map[string]string{
		"repo":           "acme/tiny",
		"cache":          filepath.Join(tmp, "cache"),
		"cache_resume":   filepath.Join(tmp, "cache-resume"),
		"cache_single":   filepath.Join(tmp, "cache-single"),
		"cache_transfer": filepath.Join(tmp, "cache-transfer"),
	}
	home := filepath.Join(tmp, "hf-home")
	on := runClient(t, venv, clientEnv(home, "HF_ENDPOINT="+endpoint), "online", cfg)
	t.Logf("huggingface_hub %s against %s", on.Version, endpoint)

	// `hf download` (the CLI) into a local directory.
	localDir := filepath.Join(tmp, "local")
	cliCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := exec.CommandContext(cliCtx, filepath.Join(venv, "bin", "hf"), "download", "acme/tiny", "--local-dir", localDir)
	cli.Env = clientEnv(home, "HF_ENDPOINT="+endpoint)
	if out, err := cli.CombinedOutput(); err != nil {
		t.Errorf("hf download: %v\n%s", err, out)
	}
	for p, want := range hashesOf(f.files) {
		b, err := os.ReadFile(filepath.Join(localDir, filepath.FromSlash(p)))
		if err != nil || hubtest.SHA256(b) != want {
			t.Errorf("hf download: %s: %v, sha256 mismatch", p, err)
		}
	}

	// The server goes away before the offline load.
	if err := shutdown(); err != nil {
		t.Errorf("ServeListener: %v", err)
	}
	off := runClient(t, venv, clientEnv(home, "HF_ENDPOINT="+endpoint, "HF_HUB_OFFLINE=1"), "offline", cfg)

	mainHashes, featureHashes := hashesOf(f.files), hashesOf(f.featureFiles)
	mainPaths := slices.Sorted(func(yield func(string) bool) {
		for p := range f.files {
			if !yield(p) {
				return
			}
		}
	})
	check := func(ok bool, format string, args ...any) {
		t.Helper()
		if !ok {
			t.Errorf(format, args...)
		}
	}
	check(on.Resume.SHA256 != nil && *on.Resume.SHA256 == hubtest.SHA256(model),
		"resumed download: sha256 %v after %d attempts (%v)", on.Resume.SHA256, on.Resume.Attempts, on.Resume.Errors)
	check(on.InfoSHA == f.main.ID, "model_info sha %s, want %s", on.InfoSHA, f.main.ID)
	check(on.FeatureSHA == f.feature.ID, "model_info(feature/x) sha %s, want %s", on.FeatureSHA, f.feature.ID)
	check(slices.Equal(on.InfoSiblings, mainPaths), "siblings %v", on.InfoSiblings)
	check(slices.Equal(on.Files, mainPaths), "list_repo_files %v", on.Files)
	check(slices.Equal(on.TreeA, []string{"dir:a/b", "file:a/b.txt", "file:a/b/c.txt"}), "list_repo_tree(a) %v", on.TreeA)
	for _, r := range []struct {
		name   string
		snap   snapJSON
		commit string
		want   map[string]string
	}{
		{"snapshot_download", on.Snapshot, f.main.ID, mainHashes},
		{"snapshot_download(feature/x)", on.SnapshotFeature, f.feature.ID, featureHashes},
		{"offline snapshot_download", off.Snapshot, f.main.ID, mainHashes},
		{"offline snapshot_download(feature/x)", off.SnapshotFeature, f.feature.ID, featureHashes},
	} {
		check(filepath.Base(r.snap.Path) == r.commit, "%s: path %s, want snapshots/%s", r.name, r.snap.Path, r.commit)
		check(sameMap(r.snap.Files, r.want), "%s: files %v, want %v", r.name, r.snap.Files, r.want)
	}
	check(off.Snapshot.Path == on.Snapshot.Path, "offline snapshot %s, online %s", off.Snapshot.Path, on.Snapshot.Path)
	// The cache names blobs by ETag: SHA-256 for LFS files, git SHA-1 for
	// the others (§2.2).
	var wantBlobs []string
	for _, files := range []map[string][]byte{f.files, f.featureFiles} {
		for p, b := range files {
			name := hubtest.GitBlobSHA1(b)
			if hubtest.IsLFS(p, b) {
				name = hubtest.SHA256(b)
			}
			if !slices.Contains(wantBlobs, name) {
				wantBlobs = append(wantBlobs, name)
			}
		}
	}
	slices.Sort(wantBlobs)
	check(slices.Equal(on.Blobs, wantBlobs), "cache blobs %v, want %v", on.Blobs, wantBlobs)
	check(on.Single.SHA256 == featureHashes["tokenizer/tokenizer.json"] && strings.Contains(on.Single.Path, f.feature.ID),
		"hf_hub_download(feature/x): %+v", on.Single)
	check(off.Single.SHA256 == mainHashes["config.json"], "offline hf_hub_download: %+v", off.Single)
	if on.HFTransfer != nil {
		check(on.HFTransfer.SHA256 == hubtest.SHA256(big), "hf_transfer %s download: sha256 %s", on.HFTransfer.Version, on.HFTransfer.SHA256)
	}
	check(slices.Equal(on.SafetensorsTensors, []string{"lm_head.weight", "model.embed_tokens.weight"}), "safetensors metadata %v", on.SafetensorsTensors)
	check(on.ErrMissingFile == "EntryNotFoundError", "missing file: %s", on.ErrMissingFile)
	check(on.NoExistCached, "missing file not cached under .no_exist (X-Repo-Commit on the 404)")
	check(on.ErrBadRevision == "RevisionNotFoundError", "bad revision: %s", on.ErrBadRevision)
	check(on.ErrBadRepo == "RepositoryNotFoundError", "bad repo: %s", on.ErrBadRepo)
	check(on.ErrBadRepoInfo == "RepositoryNotFoundError", "bad repo info: %s", on.ErrBadRepoInfo)

	// The server side of the resume: the cut body, then a 206 for the rest.
	var cutSeen bool
	resumedFrom := int64(-1)
	var ranges, bigRanges []string
	var modelLog []string
	for _, rec := range logs.records(t) {
		path, _ := rec["path"].(string)
		if strings.Contains(strings.ToLower(path), "xet") {
			t.Errorf("client asked for a Xet route: %s", path)
		}
		if strings.HasSuffix(path, "/big.safetensors") && rec["status"] == float64(206) {
			bigRanges = append(bigRanges, fmt.Sprint(rec["range"]))
		}
		if !strings.HasSuffix(path, "/model.safetensors") {
			continue
		}
		modelLog = append(modelLog, fmt.Sprintf("%v %v %v range=%v aborted=%v", rec["method"], path, rec["status"], rec["range"], rec["aborted"]))
		if rec["aborted"] == true {
			cutSeen = true
		}
		if rg, ok := rec["range"].(string); ok && rec["status"] == float64(206) && !slices.Contains(ranges, rg) {
			ranges = append(ranges, rg)
		}
		var from int64
		if rg, _ := rec["range"].(string); rec["status"] == float64(206) {
			if _, err := fmt.Sscanf(rg, "bytes=%d-", &from); err == nil && from > 0 && from <= cut {
				resumedFrom = from
			}
		}
	}
	check(cutSeen && resumedFrom > 0, "server log: cut %v, resumed from %d; requests for the weights:\n%s", cutSeen, resumedFrom, strings.Join(modelLog, "\n"))
	transfer := "not installed"
	if on.HFTransfer != nil {
		transfer = fmt.Sprintf("%s, %d ranged GETs %v", on.HFTransfer.Version, len(bigRanges), bigRanges)
		// 10 MiB pieces (DOWNLOAD_CHUNK_SIZE), fetched in parallel.
		check(len(bigRanges) >= 5, "hf_transfer: ranged GETs %v", bigRanges)
	}
	t.Logf("huggingface_hub %s (hf_transfer %s): body cut at byte %d, resumed from byte %d in %d call(s); ranges served for the weights: %v; all client runs took %s",
		on.Version, transfer, cut, resumedFrom, on.Resume.Attempts, ranges, time.Since(start).Round(time.Millisecond))
}
