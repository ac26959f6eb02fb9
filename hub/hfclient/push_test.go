package hfclient

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/store"
)

// TestPushPull pushes a stored model to the hub (creating the repo; the
// large shard goes multipart, the other basic, configs inline), pulls it
// back into another store byte-identically, then pushes again: nothing is
// uploaded and nothing committed.
func TestPushPull(t *testing.T) {
	// Shards of about 150 KB go multipart (parts of 64 KiB), a small binary
	// file basic.
	e := newHubEnv(t, func(o *hub.Options) { o.MultipartThreshold, o.MultipartChunkSize = 100<<10, 64<<10 })
	dir := tinyModel(t, 11)
	extra := make([]byte, 20_000)
	for i := range extra {
		extra[i] = byte(i * i)
	}
	if err := os.WriteFile(filepath.Join(dir, "extra.bin"), extra, 0o644); err != nil {
		t.Fatal(err)
	}
	files := readTree(t, dir)
	src := store.TestStore(t, testStoreOpts)
	if _, err := src.Import(ctx, dir, store.ImportOptions{Ref: store.RefName{Name: "me/tiny", Tag: "main"}}); err != nil {
		t.Fatal(err)
	}
	c := e.client(e.token, nil)
	var progress atomic.Int64
	res, err := Push(ctx, c, src, PushOptions{Repo: "acme/pushed", Ref: "me/tiny", Progress: func(done, total int64) { progress.Store(done) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push: created %v, %d objects uploaded (%d bytes, %d PUTs, %d parts), %d inline, commit %s",
		res.Created, res.UploadedObjects, res.UploadedBytes, e.puts.Load(), e.parts.Load(), res.InlineFiles, res.Commit)
	var lfsBytes int64
	lfsFiles := 0
	for p, b := range files {
		if strings.HasSuffix(p, ".safetensors") || strings.HasSuffix(p, ".bin") {
			lfsBytes += int64(len(b))
			lfsFiles++
		}
	}
	if !res.Created || res.UploadedObjects != lfsFiles || res.UploadedBytes != lfsBytes || res.InlineFiles != len(files)-lfsFiles || progress.Load() != lfsBytes {
		t.Fatalf("push: %+v (progress %d)", res, progress.Load())
	}
	if e.parts.Load() == 0 || e.count("POST complete") == 0 || e.count("PUT object") == 0 || e.count("POST verify") != lfsFiles {
		t.Fatalf("push used parts %d, completions %d, basic PUTs %d, verifies %d; want both transfers and a verify per object",
			e.parts.Load(), e.count("POST complete"), e.count("PUT object"), e.count("POST verify"))
	}

	dst := store.TestStore(t, testStoreOpts)
	back, err := Pull(ctx, e.client(e.reader, nil), dst, PullOptions{Repo: "acme/pushed"})
	if err != nil {
		t.Fatal(err)
	}
	if back.RemoteCommit != res.Commit {
		t.Fatalf("pulled %s, pushed %s", back.RemoteCommit, res.Commit)
	}
	// The repo has the .gitattributes the hub creates it with, plus the model.
	pulled := map[string][]byte{}
	for p, b := range files {
		pulled[p] = b
	}
	dstFiles, err := dst.CommitFiles(back.Commit)
	if err != nil {
		t.Fatal(err)
	}
	if len(dstFiles) != len(files)+1 {
		t.Fatalf("pulled %d files, pushed %d (+ .gitattributes)", len(dstFiles), len(files))
	}
	exportAttrs := readExport(t, dst, "acme/pushed")
	pulled[".gitattributes"] = exportAttrs[".gitattributes"]
	exportEquals(t, dst, "acme/pushed", pulled)
	// Same file objects on both sides.
	srcFiles, err := src.CommitFiles(mustResolve(t, src, "me/tiny"))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]store.ID{}
	for _, f := range dstFiles {
		ids[f.Path] = f.ID
	}
	for _, f := range srcFiles {
		if ids[f.Path] != f.ID {
			t.Fatalf("%s: pulled file %s, pushed %s", f.Path, ids[f.Path].Short(), f.ID.Short())
		}
	}

	// Again: nothing to do.
	e.resetCounts()
	again, err := Push(ctx, c, src, PushOptions{Repo: "acme/pushed", Ref: "me/tiny"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push again: up to date %v, %d unchanged, %d PUTs, %d LFS batches, %d API POSTs (create, preupload)", again.UpToDate, again.Unchanged, e.puts.Load(), e.count("POST batch"), e.count("POST api"))
	if !again.UpToDate || again.Created || again.Unchanged != len(files) || again.UploadedObjects != 0 || e.puts.Load() != 0 || again.Commit != res.Commit {
		t.Fatalf("push again: %+v, %d PUTs", again, e.puts.Load())
	}

	// A changed model on another branch: only its new objects are uploaded;
	// the unchanged configs are not sent.
	dir2 := tinyModel(t, 12)
	if _, err := src.Import(ctx, dir2, store.ImportOptions{Ref: store.RefName{Name: "me/tiny", Tag: "v2"}}); err != nil {
		t.Fatal(err)
	}
	e.resetCounts()
	v2, err := Push(ctx, c, src, PushOptions{Repo: "acme/pushed", Ref: "me/tiny:v2", Revision: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("push v2 to dev: %d uploaded, %d present, %d unchanged, %d inline", v2.UploadedObjects, v2.PresentObjects, v2.Unchanged, v2.InlineFiles)
	if v2.UploadedObjects != 2 || v2.Unchanged == 0 || v2.Commit == res.Commit {
		t.Fatalf("push v2: %+v", v2)
	}
	back2, err := Pull(ctx, e.client(e.reader, nil), dst, PullOptions{Repo: "acme/pushed", Revision: "dev", Ref: store.RefName{Name: "acme/pushed", Tag: "dev"}})
	if err != nil {
		t.Fatal(err)
	}
	var shards2 int64
	for p, b := range readTree(t, dir2) {
		if strings.HasSuffix(p, ".safetensors") {
			shards2 += int64(len(b))
		}
	}
	if back2.FetchedBytes != shards2 {
		t.Fatalf("pull of dev fetched %d bytes, want only the new weights (%d)", back2.FetchedBytes, shards2)
	}
}

// TestPushPresentObjects: objects the repo has already (under other paths)
// get no upload; the commit only names them.
func TestPushPresentObjects(t *testing.T) {
	e := newHubEnv(t, nil)
	dir := tinyModel(t, 13)
	e.publish("acme/has", dir)
	root := t.TempDir()
	if err := modelgen.CopyDir(dir, filepath.Join(root, "copy")); err != nil {
		t.Fatal(err)
	}
	src := store.TestStore(t, testStoreOpts)
	if _, err := src.Import(ctx, root, store.ImportOptions{Ref: store.RefName{Name: "me/m", Tag: "main"}}); err != nil {
		t.Fatal(err)
	}
	res, err := Push(ctx, e.client(e.token, nil), src, PushOptions{Repo: "acme/has", Ref: "me/m"})
	if err != nil {
		t.Fatal(err)
	}
	if res.UploadedObjects != 0 || res.PresentObjects != 2 || e.puts.Load() != 0 || res.UpToDate {
		t.Fatalf("%+v, %d PUTs", res, e.puts.Load())
	}
	got := readExport(t, pullInto(t, e, "acme/has"), "acme/has")
	for p, b := range readTree(t, dir) {
		if string(got["copy/"+p]) != string(b) || string(got[p]) != string(b) {
			t.Fatalf("%s: not at both paths after the push", p)
		}
	}
}

// pullInto pulls repo into a new store.
func pullInto(t testing.TB, e *hubEnv, repo string) *store.Store {
	t.Helper()
	s := store.TestStore(t, testStoreOpts)
	if _, err := Pull(ctx, e.client(e.reader, nil), s, PullOptions{Repo: repo}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPushErrors: a read-only token is refused with a clear error before any
// upload.
func TestPushErrors(t *testing.T) {
	e := newHubEnv(t, nil)
	dir := tinyModel(t, 14)
	e.publish("acme/ro", dir)
	src := store.TestStore(t, testStoreOpts)
	if _, err := src.Import(ctx, dir, store.ImportOptions{Ref: store.RefName{Name: "me/m", Tag: "main"}}); err != nil {
		t.Fatal(err)
	}
	tiny2 := tinyModel(t, 15)
	if _, err := src.Import(ctx, tiny2, store.ImportOptions{Ref: store.RefName{Name: "me/m", Tag: "main"}}); err != nil {
		t.Fatal(err)
	}
	_, err := Push(ctx, e.client(e.reader, nil), src, PushOptions{Repo: "acme/ro", Ref: "me/m"})
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "acme/ro") {
		t.Fatalf("push with a read token: %v", err)
	}
	if e.puts.Load() != 0 {
		t.Fatalf("%d uploads with a read-only token", e.puts.Load())
	}
	// The remote moved between the push's read and its commit: 412.
	e.setFault(func(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, bool) {
		if strings.Contains(r.URL.Path, "/commit/") {
			e.repos.Commit("acme/ro", "main", readTree(t, dir))
		}
		return nil, false
	})
	_, err = Push(ctx, e.client(e.token, nil), src, PushOptions{Repo: "acme/ro", Ref: "me/m"})
	var he *Error
	if !errors.As(err, &he) || he.Status != http.StatusPreconditionFailed || he.Attempts != 1 {
		t.Fatalf("push racing another commit: %v", err)
	}
}

func mustResolve(t testing.TB, s *store.Store, ref string) store.ID {
	t.Helper()
	id, err := s.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func readExport(t testing.TB, s *store.Store, ref string) map[string][]byte {
	t.Helper()
	dst := t.TempDir() + "/x"
	if _, err := s.Export(ctx, ref, dst, nil); err != nil {
		t.Fatal(err)
	}
	return readTree(t, dst)
}
