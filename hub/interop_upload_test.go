//go:build linux || darwin

package hub_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
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
)

// uploadResult is what `hf_client.py upload` prints.
type uploadResult struct {
	Version           string `json:"version"`
	Whoami            string `json:"whoami"`
	CreateURL         string `json:"create_url"`
	CreateRepoID      string `json:"create_repo_id"`
	CreateAgainRepoID string `json:"create_again_repo_id"`
	CreateConflict    any    `json:"create_conflict"`
	FolderCommit      string `json:"folder_commit"`
	FolderCommitURL   string `json:"folder_commit_url"`
	FolderAgain       string `json:"folder_again_commit"`
	FileCommit        string `json:"file_commit"`
	StaleParent       any    `json:"stale_parent"`
	BranchConflict    any    `json:"branch_conflict"`
	TagConflict       any    `json:"tag_conflict"`
	DevSHA            string `json:"dev_sha"`
	TagSHA            string `json:"tag_sha"`
	DeleteCommit      string `json:"delete_commit"`
	DeleteMissing     string `json:"delete_missing"`
	DeletedRepoInfo   string `json:"deleted_repo_info"`
	MainSHA           string `json:"main_sha"`
}

type fetchResult struct {
	Version   string                       `json:"version"`
	Revisions map[string]map[string]string `json:"revisions"`
}

// xetDisableNeeded reports whether huggingface_hub version v must run with
// HF_HUB_DISABLE_XET=1 to upload to a plain server. 0.36–1.19 (0.36.2
// here) negotiate in the LFS batch request: they offer "xet", the server
// answers "basic", and they upload over plain LFS. From 1.20 on (the 2.x
// "latest" venv included) the client uploads through Xet whenever hf_xet is
// importable, without asking the server (hub-protocol.md §5.2), so only the
// variable keeps it on the LFS path.
func xetDisableNeeded(v string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
		return true
	}
	return major > 1 || major == 1 && minor >= 20
}

func clientVersion(t *testing.T, venv string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(venv, "bin", "python"), "-c", "import huggingface_hub; print(huggingface_hub.__version__)").Output()
	if err != nil {
		t.Fatalf("huggingface_hub version: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// runUploadInterop drives the write API with the real client: whoami,
// create_repo (and its 409 with exist_ok), upload_folder with a 12 MiB
// safetensors file (multipart LFS: parts, completion, verify), a 1 MiB .bin
// (basic LFS PUT), small files inline, a README (validate-yaml) and a
// .gitignore'd file; the same upload_folder again (skipped as unchanged by
// the preupload oids); upload_file; a stale parent_commit (412);
// create_branch and create_tag (and their 409s); delete_file (and a 404 for
// a missing one); delete_repo; `hf upload --revision` to a new branch (repo
// info → RevisionNotFound → create_branch). Then it downloads every
// revision into a fresh cache and compares sha256 with what was written.
func runUploadInterop(t *testing.T, venv string) {
	start := time.Now()
	version := clientVersion(t, venv)
	srv := startUploadServer(t, func(o *hub.Options) {
		// The 12 MiB weights go multipart in 4 MiB parts; the 1 MiB .bin
		// is one basic PUT.
		o.MultipartThreshold, o.MultipartChunkSize = 8<<20, 4<<20
	})
	defer srv.shutdown()
	repos, logs, endpoint, token := srv.repos, srv.logs, srv.endpoint, srv.token

	tmp := t.TempDir()
	folder := filepath.Join(tmp, "model")
	rng := rand.NewChaCha8([32]byte{42})
	weights := make([]byte, 1<<20)
	rng.Read(weights)
	files := map[string][]byte{
		"model.safetensors":        makeSafetensors(t),
		"weights.bin":              weights,
		"config.json":              []byte(`{"model_type":"qwen3","hidden_size":32}` + "\n"),
		"README.md":                []byte("---\nlicense: mit\n---\n# heft interop\n"),
		"tokenizer/tokenizer.json": []byte(`{"version":"1.0"}` + "\n"),
		"empty.txt":                {},
		".gitignore":               []byte("*.log\n"),
	}
	writeTree(t, folder, files)
	writeTree(t, folder, map[string][]byte{"debug.log": []byte("ignored by .gitignore\n")})
	cliFolder := filepath.Join(tmp, "cli")
	cliFiles := map[string][]byte{"cli.txt": []byte("from hf upload\n"), "nested/cli.json": []byte("{}\n")}
	writeTree(t, cliFolder, cliFiles)

	home := filepath.Join(tmp, "hf-home")
	env := clientEnv(home, "HF_ENDPOINT="+endpoint, "HF_TOKEN="+token)
	disableXet := xetDisableNeeded(version)
	if disableXet {
		env = append(env, "HF_HUB_DISABLE_XET=1")
	}
	const repo = "heft-tester/interop"
	var up uploadResult
	runClientInto(t, venv, env, "upload", map[string]string{"repo": repo, "folder": folder}, &up)

	cliCtx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cli := exec.CommandContext(cliCtx, filepath.Join(venv, "bin", "hf"), "upload", repo, cliFolder, ".", "--revision", "cli-branch", "--commit-message", "cli upload")
	cli.Env = env
	if out, err := cli.CombinedOutput(); err != nil {
		t.Errorf("hf upload: %v\n%s", err, out)
	}

	var fetched fetchResult
	runClientInto(t, venv, env, "fetch", map[string]any{"repo": repo, "cache": filepath.Join(tmp, "fetch-cache"),
		"revisions": []string{"main", "dev", "v1.0", "cli-branch"}}, &fetched)
	srv.shutdown()

	check := func(ok bool, format string, args ...any) {
		t.Helper()
		if !ok {
			t.Errorf("huggingface_hub %s: "+format, append([]any{version}, args...)...)
		}
	}
	is40 := func(s string) bool { return len(s) == 40 && strings.Trim(s, "0123456789abcdef") == "" }
	check(up.Whoami == "heft-tester", "whoami %q", up.Whoami)
	check(up.CreateRepoID == repo && up.CreateAgainRepoID == repo && up.CreateURL == endpoint+"/"+repo, "create_repo: %q %q %q", up.CreateURL, up.CreateRepoID, up.CreateAgainRepoID)
	check(fmt.Sprint(up.CreateConflict) == "409", "create_repo on an existing repo: %v", up.CreateConflict)
	check(is40(up.FolderCommit) && up.FolderCommitURL == endpoint+"/"+repo+"/commit/"+up.FolderCommit, "upload_folder: %q %q", up.FolderCommit, up.FolderCommitURL)
	check(up.FolderAgain == up.FolderCommit, "unchanged upload_folder made commit %s (after %s): preupload oids not matched", up.FolderAgain, up.FolderCommit)
	check(is40(up.FileCommit) && up.FileCommit != up.FolderCommit, "upload_file: %q", up.FileCommit)
	check(fmt.Sprint(up.StaleParent) == "412", "stale parent_commit: %v", up.StaleParent)
	check(fmt.Sprint(up.BranchConflict) == "409" && fmt.Sprint(up.TagConflict) == "409", "branch/tag conflicts: %v %v", up.BranchConflict, up.TagConflict)
	check(up.DevSHA == up.FileCommit, "dev at %s, want %s", up.DevSHA, up.FileCommit)
	check(up.TagSHA == up.FolderCommit, "v1.0 at %s, want %s", up.TagSHA, up.FolderCommit)
	check(is40(up.DeleteCommit) && up.MainSHA == up.DeleteCommit, "delete_file %s, main %s", up.DeleteCommit, up.MainSHA)
	check(up.DeleteMissing == "EntryNotFoundError", "deleting a missing file: %s", up.DeleteMissing)
	check(up.DeletedRepoInfo == "RepositoryNotFoundError", "deleted repo: %s", up.DeletedRepoInfo)

	// What each revision must hold, by sha256: what the test wrote, plus
	// the .gitattributes the server put in the initial commit (its
	// content is checked by the handler tests), never debug.log.
	stored := map[string]string{}
	if c, err := repos.Resolve(repo, "main"); err != nil {
		t.Errorf("Resolve(main): %v", err)
	} else if list, err := repos.Files(c.ID); err == nil {
		for _, f := range list {
			stored[f.Path] = f.SHA256
		}
	}
	check(stored[".gitattributes"] != "", "main has no .gitattributes: %v", stored)
	want := hashesOf(files)
	want[".gitattributes"] = stored[".gitattributes"]
	check(sameMap(stored, want), "the server's main: %v, want %v", stored, want)
	withNotes := maps.Clone(want)
	withNotes["extra/notes.txt"] = hubtest.SHA256([]byte("notes\n"))
	withCLI := maps.Clone(want)
	maps.Copy(withCLI, hashesOf(cliFiles))
	for rev, w := range map[string]map[string]string{"main": want, "v1.0": want, "dev": withNotes, "cli-branch": withCLI} {
		got := fetched.Revisions[rev]
		check(sameMap(got, w), "snapshot_download(%s): %v, want %v", rev, got, w)
	}

	// The server's side: the transfers the client used.
	routes := map[string]int{}
	var offered [][]any
	var unknown []string // e.g. GET /api/agent-harnesses from the 2.x CLI: a 404 it tolerates
	for _, rec := range logs.records(t) {
		route, _ := rec["route"].(string)
		routes[route]++
		if path, _ := rec["path"].(string); strings.Contains(strings.ToLower(path), "xet") {
			t.Errorf("client asked for a Xet route: %s", path)
		}
		if tr, ok := rec["transfers"].([]any); ok {
			offered = append(offered, tr)
		}
		if st, _ := rec["status"].(float64); st >= 500 {
			t.Errorf("server error: %v", rec)
		}
		if route == "other" {
			unknown = append(unknown, fmt.Sprint(rec["method"], " ", rec["path"], " → ", rec["status"]))
		}
	}
	for route, min := range map[string]int{
		"api_repos_create": 4, "api_repos_delete": 2, "api_preupload": 4, "lfs_batch": 1, "lfs_part": 4, "lfs_complete": 1,
		"lfs_upload": 1, "lfs_verify": 2, "api_commit": 4, "api_branch": 4, "api_tag": 2, "api_validate_yaml": 1, "api_whoami": 1,
	} {
		check(routes[route] >= min, "route %s used %d times, want at least %d (all: %v)", route, routes[route], min, routes)
	}
	offersXet := slices.ContainsFunc(offered, func(tr []any) bool { return slices.Contains(tr, any("xet")) })
	t.Logf("huggingface_hub %s: HF_HUB_DISABLE_XET=%v, LFS batch transfers offered %v (xet offered: %v, answered basic); routes %v; unrouted requests %q; took %s",
		version, disableXet, offered, offersXet, routes, unknown, time.Since(start).Round(time.Millisecond))
	if disableXet {
		runInlineXetUpload(t, venv, version)
	}
}

// runInlineXetUpload runs `hf upload` from a client that would use Xet,
// without HF_HUB_DISABLE_XET, against a server with
// InlineUploadsForXetClients: every file, the weights included, goes
// inline in the commit, and nothing touches Xet or LFS routes.
func runInlineXetUpload(t *testing.T, venv, version string) {
	srv := startUploadServer(t, func(o *hub.Options) { o.InlineUploadsForXetClients = true })
	defer srv.shutdown()
	tmp := t.TempDir()
	folder := filepath.Join(tmp, "inline")
	weights := make([]byte, 3<<20)
	rand.NewChaCha8([32]byte{43}).Read(weights)
	files := map[string][]byte{"model.safetensors": weights, "config.json": []byte("{}\n")}
	writeTree(t, folder, files)
	env := clientEnv(filepath.Join(tmp, "hf-home"), "HF_ENDPOINT="+srv.endpoint, "HF_TOKEN="+srv.token)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const repo = "heft-tester/inline"
	cli := exec.CommandContext(ctx, filepath.Join(venv, "bin", "hf"), "upload", repo, folder, ".")
	cli.Env = env
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("huggingface_hub %s: hf upload with Xet on and InlineUploadsForXetClients: %v\n%s", version, err, out)
	}
	var fetched fetchResult
	runClientInto(t, venv, env, "fetch", map[string]any{"repo": repo, "cache": filepath.Join(tmp, "cache"), "revisions": []string{"main"}}, &fetched)
	srv.shutdown()
	got := fetched.Revisions["main"]
	delete(got, ".gitattributes")
	if !sameMap(got, hashesOf(files)) {
		t.Errorf("huggingface_hub %s, inline upload: downloaded %v, want %v", version, got, hashesOf(files))
	}
	for _, rec := range srv.logs.records(t) {
		route, _ := rec["route"].(string)
		path, _ := rec["path"].(string)
		if strings.HasPrefix(route, "lfs_") || strings.Contains(path, "xet") {
			t.Errorf("huggingface_hub %s, inline upload: %s %s", version, rec["method"], path)
		}
	}
	t.Logf("huggingface_hub %s: hf upload with hf_xet active, all files inline (InlineUploadsForXetClients): ok", version)
}

// uploadServer is a write-enabled server over a hubtest.Repos with one
// token, for heft-tester:write.
type uploadServer struct {
	repos           *hubtest.Repos
	logs            *logBuffer
	endpoint, token string
	shutdown        func()
}

func startUploadServer(t *testing.T, tweak func(*hub.Options)) *uploadServer {
	t.Helper()
	s := &uploadServer{repos: hubtest.New(), logs: &logBuffer{}}
	tokens, err := hub.OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g, _ := hub.ParseGrant("heft-tester:write")
	if s.token, _, err = tokens.Create("interop", "heft-tester", []hub.Grant{g}, 0); err != nil {
		t.Fatal(err)
	}
	opts := hub.Options{
		Logger: slog.New(slog.NewJSONHandler(s.logs, nil)),
		Writer: s.repos, Tokens: tokens,
		StagingDir: filepath.Join(t.TempDir(), "staging"),
	}
	tweak(&opts)
	handler := hub.NewHandler(s.repos, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- hub.ServeListener(ctx, ln, handler) }()
	var once sync.Once
	s.shutdown = func() {
		once.Do(func() {
			stop()
			if err := <-served; err != nil {
				t.Errorf("ServeListener: %v", err)
			}
			if err := handler.Close(); err != nil {
				t.Errorf("Handler.Close: %v", err)
			}
		})
	}
	s.endpoint = "http://" + ln.Addr().String()
	return s
}

func writeTree(t *testing.T, root string, files map[string][]byte) {
	t.Helper()
	for p, data := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
