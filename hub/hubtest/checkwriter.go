package hubtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/hub"
)

// CheckWriter tests w against the hub.Writer contract, reading back through
// repos (the same store's hub.Repos). It creates repos in the namespace
// "heft-check" with random names and deletes them at the end, so it can run
// against a store that holds other data. It checks: object storage with
// size and SHA-256 verification (short, long and wrong content, reader
// errors), idempotence, per-repo object scoping (including that an upload
// for a second repo is verified although the bytes are stored), that
// stored objects stay invisible until a commit, commits (inline and LFS
// adds, file and folder deletes, errors leaving the branch unchanged,
// parentCommit compare-and-swap, path conflicts, commits to tags), branches
// and tags, concurrent commits (all path-level commits land; of commits
// with the same parent exactly one wins), repo deletion, and finally
// CheckRepos over the result.
func CheckWriter(t testing.TB, repos hub.Repos, w hub.Writer) {
	t.Helper()
	ctx := context.Background()
	var rnd [4]byte
	rand.Read(rnd[:])
	suffix := hex.EncodeToString(rnd[:])
	repoA := "heft-check/a-" + suffix
	repoB := "heft-check/b-" + suffix

	// wantErr fails the check unless err matches target.
	wantErr := func(what string, err, target error) {
		t.Helper()
		if !errors.Is(err, target) {
			t.Errorf("%s: got error %v, want %v", what, err, target)
		}
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	store := func(repo string, data []byte) (string, int64) {
		t.Helper()
		oid := SHA256(data)
		must("StoreObject("+repo+")", w.StoreObject(ctx, repo, oid, int64(len(data)), bytes.NewReader(data)))
		return oid, int64(len(data))
	}
	add := func(path string, data []byte, lfs bool) hub.Operation {
		return hub.Operation{Kind: hub.OpAdd, Path: path, OID: SHA256(data), Size: int64(len(data)), LFS: lfs}
	}
	// files reads a revision's tree back through repos: path → content.
	files := func(repo, rev string) (hub.Commit, map[string][]byte) {
		t.Helper()
		c, err := repos.Resolve(repo, rev)
		must(fmt.Sprintf("Resolve(%s, %s)", repo, rev), err)
		list, err := repos.Files(c.ID)
		must("Files("+c.ID+")", err)
		out := map[string][]byte{}
		for _, f := range list {
			fr, err := repos.Open(c.ID, f.Path)
			must("Open("+f.Path+")", err)
			b, err := io.ReadAll(io.NewSectionReader(fr, 0, fr.Size()))
			fr.Close()
			must("read "+f.Path, err)
			if SHA256(b) != f.SHA256 || int64(len(b)) != f.Size {
				t.Errorf("%s@%s: %s: Files says %d bytes %s, content is %d bytes %s", repo, rev, f.Path, f.Size, f.SHA256, len(b), SHA256(b))
			}
			out[f.Path] = b
		}
		return c, out
	}
	sameFiles := func(what string, got map[string][]byte, want map[string][]byte) {
		t.Helper()
		if !maps.EqualFunc(got, want, bytes.Equal) {
			t.Errorf("%s: files %v, want %v", what, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
	}

	// Objects: verification.
	weights := bytes.Repeat([]byte("heft weights \x00\x01"), 4096)
	oidW := SHA256(weights)
	sizeW := int64(len(weights))
	for _, bad := range []struct {
		name string
		data []byte
	}{
		{"short", weights[:len(weights)-1]},
		{"long", append(slices.Clone(weights), 'x')},
		{"wrong bytes", append(slices.Clone(weights[:len(weights)-1]), 'x')},
		{"empty", nil},
	} {
		err := w.StoreObject(ctx, repoA, oidW, sizeW, bytes.NewReader(bad.data))
		wantErr("StoreObject("+bad.name+" content)", err, hub.ErrObjectMismatch)
	}
	readErr := errors.New("heft-check: connection reset")
	err := w.StoreObject(ctx, repoA, oidW, sizeW, io.MultiReader(bytes.NewReader(weights[:100]), &failingReader{readErr}))
	if err == nil || !errors.Is(err, readErr) {
		t.Errorf("StoreObject(reader error): got %v, want an error wrapping the reader's", err)
	}
	if _, err := w.StatObject(ctx, repoA, oidW); !errors.Is(err, hub.ErrObjectNotFound) {
		t.Errorf("StatObject after failed stores: got %v, want ErrObjectNotFound", err)
	}

	// Objects: a good store, idempotence, scoping.
	store(repoA, weights)
	store(repoA, weights)
	if size, err := w.StatObject(ctx, repoA, oidW); err != nil || size != sizeW {
		t.Errorf("StatObject(stored) = %d, %v; want %d", size, err, sizeW)
	}
	if _, err := w.StatObject(ctx, repoB, oidW); !errors.Is(err, hub.ErrObjectNotFound) {
		t.Errorf("StatObject(another repo's object) = %v, want ErrObjectNotFound: a repo must not use another's object without uploading it", err)
	}
	err = w.StoreObject(ctx, repoB, oidW, sizeW, bytes.NewReader(append(slices.Clone(weights[:len(weights)-1]), 'x')))
	wantErr("StoreObject(oid stored for another repo, wrong bytes): the upload is the proof of possession and must be verified", err, hub.ErrObjectMismatch)
	if _, err := w.StatObject(ctx, repoB, oidW); !errors.Is(err, hub.ErrObjectNotFound) {
		t.Errorf("StatObject after a wrong upload for another repo = %v, want ErrObjectNotFound", err)
	}
	if _, err := w.StatObject(ctx, repoA, strings.Repeat("0", 64)); !errors.Is(err, hub.ErrObjectNotFound) {
		t.Errorf("StatObject(unknown) = %v, want ErrObjectNotFound", err)
	}
	if _, err := repos.Resolve(repoA, "main"); !errors.Is(err, hub.ErrRepoNotFound) {
		t.Errorf("Resolve before CreateRepo = %v, want ErrRepoNotFound", err)
	}

	// CreateRepo.
	attrs := []byte("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
	store(repoA, attrs)
	unstored := []byte("never uploaded\n")
	_, err = w.CreateRepo(ctx, hub.CreateRepoRequest{Repo: repoA, Files: []hub.Operation{add(".gitattributes", attrs, false), add("x.txt", unstored, false)}, Summary: "initial commit"})
	wantErr("CreateRepo with an object not stored", err, hub.ErrObjectNotFound)
	if _, err := repos.Resolve(repoA, "main"); !errors.Is(err, hub.ErrRepoNotFound) {
		t.Errorf("Resolve after a failed CreateRepo = %v, want ErrRepoNotFound", err)
	}
	c0, err := w.CreateRepo(ctx, hub.CreateRepoRequest{Repo: repoA, Files: []hub.Operation{add(".gitattributes", attrs, false)}, Summary: "initial commit"})
	must("CreateRepo", err)
	if !isLowerHex(c0.ID, 40) {
		t.Errorf("CreateRepo: commit id %q is not 40 lowercase hex digits", c0.ID)
	}
	head, got := files(repoA, "main")
	if head.ID != c0.ID {
		t.Errorf("main after CreateRepo = %s, want %s", head.ID, c0.ID)
	}
	want := map[string][]byte{".gitattributes": attrs}
	sameFiles("after CreateRepo", got, want)
	_, err = w.CreateRepo(ctx, hub.CreateRepoRequest{Repo: repoA, Files: []hub.Operation{add(".gitattributes", attrs, false)}, Summary: "again"})
	wantErr("CreateRepo(existing)", err, hub.ErrRepoExists)

	// Stored objects are invisible until a commit names them.
	if _, got := files(repoA, "main"); len(got) != 1 {
		t.Errorf("a stored object became visible without a commit: %v", slices.Sorted(maps.Keys(got)))
	}

	// Commits.
	config := []byte(`{"model_type":"heft-check"}` + "\n")
	store(repoA, config)
	readme := []byte("# check\n")
	store(repoA, readme)
	c1, err := w.CreateCommit(ctx, hub.CommitRequest{Repo: repoA, Branch: "main", Summary: "add", Operations: []hub.Operation{
		add("model.safetensors", weights, true), add("config.json", config, false), add("docs/README.md", readme, false), add("docs/sub/x.md", readme, false),
	}})
	must("CreateCommit(add)", err)
	want = map[string][]byte{".gitattributes": attrs, "model.safetensors": weights, "config.json": config, "docs/README.md": readme, "docs/sub/x.md": readme}
	head, got = files(repoA, "main")
	if head.ID != c1.ID {
		t.Errorf("main after CreateCommit = %s, want %s", head.ID, c1.ID)
	}
	sameFiles("after adds", got, want)

	// A failing commit changes nothing, even when earlier operations were
	// fine (atomicity).
	for _, tc := range []struct {
		name   string
		req    hub.CommitRequest
		target error
	}{
		{"delete a missing file", hub.CommitRequest{Operations: []hub.Operation{add("new.txt", readme, false), {Kind: hub.OpDeleteFile, Path: "nope.txt"}}}, hub.ErrEntryNotFound},
		{"delete a directory as a file", hub.CommitRequest{Operations: []hub.Operation{{Kind: hub.OpDeleteFile, Path: "docs"}}}, hub.ErrEntryNotFound},
		{"delete a missing folder", hub.CommitRequest{Operations: []hub.Operation{{Kind: hub.OpDeleteFolder, Path: "nope"}}}, hub.ErrEntryNotFound},
		{"add an object not stored", hub.CommitRequest{Operations: []hub.Operation{add("y.txt", unstored, false)}}, hub.ErrObjectNotFound},
		{"add with a wrong size", hub.CommitRequest{Operations: []hub.Operation{{Kind: hub.OpAdd, Path: "y.bin", OID: oidW, Size: sizeW + 1}}}, hub.ErrObjectNotFound},
		{"file under a file", hub.CommitRequest{Operations: []hub.Operation{add("config.json/x", readme, false)}}, hub.ErrPathConflict},
		{"file over a directory", hub.CommitRequest{Operations: []hub.Operation{add("docs", readme, false)}}, hub.ErrPathConflict},
		{"stale parent", hub.CommitRequest{ParentCommit: c0.ID, Operations: []hub.Operation{add("new.txt", readme, false)}}, hub.ErrParentMismatch},
		{"missing branch", hub.CommitRequest{Branch: "heft-check-no-branch", Operations: []hub.Operation{add("new.txt", readme, false)}}, hub.ErrRevisionNotFound},
		{"missing repo", hub.CommitRequest{Repo: "heft-check/missing-" + suffix, Operations: []hub.Operation{add("new.txt", readme, false)}}, hub.ErrRepoNotFound},
	} {
		req := tc.req
		if req.Repo == "" {
			req.Repo = repoA
		}
		if req.Branch == "" {
			req.Branch = "main"
		}
		req.Summary = tc.name
		_, err := w.CreateCommit(ctx, req)
		wantErr("CreateCommit("+tc.name+")", err, tc.target)
		if h, got := files(repoA, "main"); h.ID != c1.ID || !maps.EqualFunc(got, want, bytes.Equal) {
			t.Errorf("CreateCommit(%s) failed but moved main to %s or changed its files", tc.name, h.ID)
		}
	}

	// Deletes, and a parent given as a 7-digit prefix.
	c2, err := w.CreateCommit(ctx, hub.CommitRequest{Repo: repoA, Branch: "main", ParentCommit: c1.ID[:7], Summary: "delete", Operations: []hub.Operation{
		{Kind: hub.OpDeleteFile, Path: "config.json"}, {Kind: hub.OpDeleteFolder, Path: "docs"},
	}})
	must("CreateCommit(deletes, parent prefix)", err)
	want = map[string][]byte{".gitattributes": attrs, "model.safetensors": weights}
	head, got = files(repoA, "main")
	if head.ID != c2.ID {
		t.Errorf("main = %s, want %s", head.ID, c2.ID)
	}
	sameFiles("after deletes", got, want)
	// An unchanged tree still makes a commit.
	c3, err := w.CreateCommit(ctx, hub.CommitRequest{Repo: repoA, Branch: "main", ParentCommit: c2.ID, Summary: "same", Operations: []hub.Operation{add("model.safetensors", weights, true)}})
	must("CreateCommit(unchanged tree)", err)
	if c3.ID == c2.ID {
		t.Errorf("CreateCommit of an unchanged tree returned the parent %s", c2.ID)
	}

	// Branches.
	cb, err := w.CreateBranch(ctx, hub.BranchRequest{Repo: repoA, Branch: "dev/x"})
	must("CreateBranch(from main)", err)
	if cb.ID != c3.ID {
		t.Errorf("CreateBranch from main = %s, want %s", cb.ID, c3.ID)
	}
	_, err = w.CreateBranch(ctx, hub.BranchRequest{Repo: repoA, Branch: "dev/x"})
	wantErr("CreateBranch(existing)", err, hub.ErrRefExists)
	if cb, err := w.CreateBranch(ctx, hub.BranchRequest{Repo: repoA, Branch: "dev/x", StartingPoint: c1.ID, Overwrite: true}); err != nil || cb.ID != c1.ID {
		t.Errorf("CreateBranch(overwrite to %s) = %s, %v", c1.ID, cb.ID, err)
	}
	if h, _ := repos.Resolve(repoA, "dev/x"); h.ID != c1.ID {
		t.Errorf("dev/x after overwrite = %s, want %s", h.ID, c1.ID)
	}
	_, err = w.CreateBranch(ctx, hub.BranchRequest{Repo: repoA, Branch: "other", StartingPoint: "heft-check-nope"})
	wantErr("CreateBranch(unknown starting point)", err, hub.ErrRevisionNotFound)
	_, err = w.CreateBranch(ctx, hub.BranchRequest{Repo: "heft-check/missing-" + suffix, Branch: "x"})
	wantErr("CreateBranch(missing repo)", err, hub.ErrRepoNotFound)
	ce, err := w.CreateBranch(ctx, hub.BranchRequest{Repo: repoA, Branch: "empty", Empty: true})
	must("CreateBranch(empty)", err)
	if _, got := files(repoA, "empty"); len(got) != 0 || ce.ID == c3.ID {
		t.Errorf("empty branch: commit %s with files %v", ce.ID, slices.Sorted(maps.Keys(got)))
	}
	// A commit on the branch leaves main alone.
	cd, err := w.CreateCommit(ctx, hub.CommitRequest{Repo: repoA, Branch: "dev/x", Summary: "on dev", Operations: []hub.Operation{{Kind: hub.OpDeleteFile, Path: "config.json"}}})
	must("CreateCommit(dev/x)", err)
	if h, _ := repos.Resolve(repoA, "main"); h.ID != c3.ID {
		t.Errorf("a commit on dev/x moved main to %s", h.ID)
	}
	if h, _ := repos.Resolve(repoA, "dev/x"); h.ID != cd.ID {
		t.Errorf("dev/x = %s, want %s", h.ID, cd.ID)
	}
	wantErr("DeleteBranch(main)", w.DeleteBranch(ctx, repoA, "main"), hub.ErrProtectedRef)
	wantErr("DeleteBranch(missing)", w.DeleteBranch(ctx, repoA, "heft-check-nope"), hub.ErrRevisionNotFound)
	must("DeleteBranch(empty)", w.DeleteBranch(ctx, repoA, "empty"))
	if _, err := repos.Resolve(repoA, "empty"); !errors.Is(err, hub.ErrRevisionNotFound) {
		t.Errorf("Resolve(deleted branch) = %v, want ErrRevisionNotFound", err)
	}

	// Tags.
	ct, err := w.CreateTag(ctx, repoA, "v1.0", "main", "first release")
	must("CreateTag", err)
	if ct.ID != c3.ID {
		t.Errorf("CreateTag at main = %s, want %s", ct.ID, c3.ID)
	}
	if ct2, err := w.CreateTag(ctx, repoA, "at-commit", c1.ID, ""); err != nil || ct2.ID != c1.ID {
		t.Errorf("CreateTag at a commit id = %s, %v; want %s", ct2.ID, err, c1.ID)
	}
	_, err = w.CreateTag(ctx, repoA, "v1.0", "main", "")
	wantErr("CreateTag(existing tag)", err, hub.ErrRefExists)
	_, err = w.CreateTag(ctx, repoA, "dev/x", "main", "")
	wantErr("CreateTag(name of a branch)", err, hub.ErrRefExists)
	_, err = w.CreateTag(ctx, repoA, "v2", "heft-check-nope", "")
	wantErr("CreateTag(unknown revision)", err, hub.ErrRevisionNotFound)
	_, err = w.CreateBranch(ctx, hub.BranchRequest{Repo: repoA, Branch: "v1.0", Overwrite: true})
	wantErr("CreateBranch(overwrite a tag)", err, hub.ErrRefExists)
	_, err = w.CreateCommit(ctx, hub.CommitRequest{Repo: repoA, Branch: "v1.0", Summary: "on a tag", Operations: []hub.Operation{add("t.txt", readme, false)}})
	wantErr("CreateCommit(to a tag)", err, hub.ErrRevisionNotFound)
	_, err = w.CreateCommit(ctx, hub.CommitRequest{Repo: repoA, Branch: c3.ID, Summary: "on a commit id", Operations: []hub.Operation{add("t.txt", readme, false)}})
	wantErr("CreateCommit(to a commit id)", err, hub.ErrRevisionNotFound)
	wantErr("DeleteBranch(a tag)", w.DeleteBranch(ctx, repoA, "v1.0"), hub.ErrRevisionNotFound)
	wantErr("DeleteTag(a branch)", w.DeleteTag(ctx, repoA, "dev/x"), hub.ErrRevisionNotFound)
	must("DeleteTag", w.DeleteTag(ctx, repoA, "at-commit"))
	if _, err := repos.Resolve(repoA, "at-commit"); !errors.Is(err, hub.ErrRevisionNotFound) {
		t.Errorf("Resolve(deleted tag) = %v, want ErrRevisionNotFound", err)
	}
	wantErr("DeleteTag(missing)", w.DeleteTag(ctx, repoA, "at-commit"), hub.ErrRevisionNotFound)

	// Concurrent commits without a parent are path-level edits: all land.
	const writers = 8
	var g errgroup.Group
	extra := map[string][]byte{}
	for i := range writers {
		data := fmt.Appendf(nil, "writer %d\n", i)
		extra[fmt.Sprintf("concurrent/%d.txt", i)] = data
		store(repoA, data)
	}
	for p, data := range extra {
		g.Go(func() error {
			_, err := w.CreateCommit(ctx, hub.CommitRequest{Repo: repoA, Branch: "main", Summary: "concurrent " + p, Operations: []hub.Operation{add(p, data, false)}})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Errorf("concurrent commits without parentCommit: %v (a lost compare-and-swap must be retried)", err)
	}
	head, got = files(repoA, "main")
	for p, data := range extra {
		want[p] = data
	}
	sameFiles("after concurrent commits", got, want)
	// Concurrent commits with the same parent: exactly one wins.
	var wins, mismatches int
	results := make(chan error, writers)
	var race errgroup.Group
	for i := range writers {
		race.Go(func() error {
			_, err := w.CreateCommit(ctx, hub.CommitRequest{Repo: repoA, Branch: "main", ParentCommit: head.ID, Summary: fmt.Sprint("race ", i),
				Operations: []hub.Operation{{Kind: hub.OpDeleteFile, Path: fmt.Sprintf("concurrent/%d.txt", i)}}})
			results <- err
			return nil
		})
	}
	race.Wait()
	close(results)
	for err := range results {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, hub.ErrParentMismatch):
			mismatches++
		default:
			t.Errorf("CreateCommit racing on one parent: %v", err)
		}
	}
	if wins != 1 || mismatches != writers-1 {
		t.Errorf("commits racing on one parent: %d succeeded, %d got ErrParentMismatch; want 1 and %d", wins, mismatches, writers-1)
	}

	// The Repos side of the result conforms too.
	CheckRepos(t, repos)

	// DeleteRepo.
	must("DeleteRepo", w.DeleteRepo(ctx, repoA))
	if _, err := repos.Resolve(repoA, "main"); !errors.Is(err, hub.ErrRepoNotFound) {
		t.Errorf("Resolve after DeleteRepo = %v, want ErrRepoNotFound", err)
	}
	wantErr("DeleteRepo(again)", w.DeleteRepo(ctx, repoA), hub.ErrRepoNotFound)
	for _, ri := range mustList(t, repos) {
		if ri.ID == repoA {
			t.Errorf("ListRepos still lists %s after DeleteRepo", repoA)
		}
	}
	_, err = w.CreateCommit(ctx, hub.CommitRequest{Repo: repoA, Branch: "main", Summary: "after delete", Operations: []hub.Operation{add("t.txt", readme, false)}})
	wantErr("CreateCommit(deleted repo)", err, hub.ErrRepoNotFound)
}

func mustList(t testing.TB, repos hub.Repos) []hub.RepoInfo {
	t.Helper()
	list, err := repos.ListRepos()
	if err != nil {
		t.Fatalf("ListRepos: %v", err)
	}
	return list
}

// failingReader fails every read with err.
type failingReader struct{ err error }

func (f *failingReader) Read([]byte) (int, error) { return 0, f.err }
