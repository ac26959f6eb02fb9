package storehub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/store"
)

// Writer presents a store to the hub's write API. Repositories are ref NAMEs,
// branches are their TAGs, and Hub tags are fixed refs (store.RefEntry.Fixed): they
// never move. An uploaded object is stored as a file object (safetensors tensor by
// tensor) and recorded for the uploading repository (store.RecordUpload), which
// both scopes it — a repository may use only objects it uploaded or already has in
// its history — and keeps it from gc for store.UploadGrace.
type Writer struct {
	s *store.Store

	mu      sync.Mutex
	history map[string]repoObjects // +checklocks:mu: per repo, by the heads it was built from
}

// repoObjects is the content of every file in a repo's history, by SHA-256.
type repoObjects struct {
	heads string
	files map[string]fileInfo
}

type fileInfo struct {
	id   store.ID
	size int64
}

var _ hub.Writer = (*Writer)(nil)

// NewWriter returns the write side of the hub API over s.
func NewWriter(s *store.Store) *Writer {
	return &Writer{s: s, history: map[string]repoObjects{}}
}

// NewRepos returns the read side of the hub API over s.
func NewRepos(s *store.Store) Repos { return Repos{s: s} }

// refsOf returns the refs of repo, sorted.
func refsOf(s *store.Store, repo string) ([]store.RefEntry, error) {
	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	var out []store.RefEntry
	for _, r := range refs {
		if r.Ref.Name == repo {
			out = append(out, r)
		}
	}
	return out, nil
}

func refName(repo, tag string) (store.RefName, error) {
	r := store.RefName{Name: repo, Tag: tag}
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("%w: %w", hub.ErrRevisionNotFound, err)
	}
	return r, nil
}

// objects returns the files of repo's history by content hash, cached per set of
// heads.
func (w *Writer) objects(repo string) (map[string]fileInfo, error) {
	refs, err := refsOf(w.s, repo)
	if err != nil {
		return nil, err
	}
	var heads []string
	for _, r := range refs {
		heads = append(heads, r.Commit.String())
	}
	sort.Strings(heads)
	key := strings.Join(heads, ",")
	w.mu.Lock()
	if c, ok := w.history[repo]; ok && c.heads == key {
		w.mu.Unlock()
		return c.files, nil
	}
	w.mu.Unlock()
	files := map[string]fileInfo{}
	seen := map[store.ID]bool{}
	for _, r := range refs {
		log, err := w.s.Log(r.Commit.String(), 0)
		if err != nil {
			return nil, err
		}
		for _, le := range log {
			if seen[le.ID] {
				continue
			}
			seen[le.ID] = true
			cf, err := w.s.CommitFiles(le.ID)
			if err != nil {
				return nil, err
			}
			for _, f := range cf {
				files[f.File.SHA256] = fileInfo{id: f.ID, size: int64(f.File.Size)}
			}
		}
	}
	w.mu.Lock()
	w.history[repo] = repoObjects{heads: key, files: files}
	w.mu.Unlock()
	return files, nil
}

// object returns the file repo may use for oid.
func (w *Writer) object(repo, oid string) (fileInfo, error) {
	if id, ok, err := w.s.Uploaded(repo, oid); err != nil {
		return fileInfo{}, err
	} else if ok {
		f, err := w.s.LoadFile(id)
		if err == nil {
			return fileInfo{id: id, size: int64(f.Size)}, nil
		}
		if !errors.Is(err, store.ErrIntegrity) {
			return fileInfo{}, err
		}
	}
	files, err := w.objects(repo)
	if err != nil {
		return fileInfo{}, err
	}
	if f, ok := files[oid]; ok {
		return f, nil
	}
	return fileInfo{}, fmt.Errorf("%w: %s in %s", hub.ErrObjectNotFound, oid, repo)
}

// StatObject implements hub.Writer.
func (w *Writer) StatObject(ctx context.Context, repo, oid string) (int64, error) {
	f, err := w.object(repo, oid)
	return f.size, err
}

// StoreObject implements hub.Writer.
func (w *Writer) StoreObject(ctx context.Context, repo, oid string, size int64, r io.Reader) error {
	if _, err := w.object(repo, oid); err == nil {
		return nil
	} else if !errors.Is(err, hub.ErrObjectNotFound) {
		return err
	}
	vr := &verifyingReader{r: r, h: sha256.New()}
	var file store.ID
	if id, f, err := w.s.FileBySHA256(oid); err == nil && int64(f.Size) == size {
		// Stored for another repo: this repo proves it has the bytes by
		// uploading them in full; they are not stored twice.
		if _, err := io.Copy(io.Discard, io.LimitReader(vr, size+1)); err != nil {
			return fmt.Errorf("upload %s: %w", oid, err)
		}
		if err := vr.check(oid, size); err != nil {
			return err
		}
		file = id
	} else {
		// Stored and recorded for repo before gc may run: an unreferenced
		// upload is never reclaimed between the two.
		if _, err := w.s.IngestObject(ctx, vr, size, store.IngestOptions{ExpectSHA256: oid, UploadRepo: repo}); err != nil {
			if mErr := vr.check(oid, size); mErr != nil && vr.err == nil {
				return mErr
			}
			return fmt.Errorf("upload %s: %w", oid, err)
		}
		return nil
	}
	return w.s.RecordUpload(repo, oid, file)
}

// verifyingReader counts and hashes what it passes on.
type verifyingReader struct {
	r   io.Reader
	h   hash.Hash
	n   int64
	err error // a read error from r
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if err != nil && err != io.EOF {
		v.err = err
	}
	return n, err
}

// check compares what was read with the announced object. Only meaningful once
// the reader has been read to its end (or past size).
func (v *verifyingReader) check(oid string, size int64) error {
	got := hex.EncodeToString(v.h.Sum(nil))
	if v.n != size || got != oid {
		e := &hub.ObjectMismatchError{OID: oid, Size: size, GotSize: v.n}
		if v.n == size {
			e.GotOID = got
		}
		return e
	}
	return nil
}

// resolveRevision maps a revision of repo (branch, tag or 40-hex commit) to the
// full commit id.
func (w *Writer) resolveRevision(repo, revision string) (store.ID, error) {
	c, err := Repos{s: w.s}.Resolve(repo, revision)
	if err != nil {
		return store.ID{}, err
	}
	return w.s.Resolve(c.ID)
}

func toHubCommit(s *store.Store, id store.ID) (hub.Commit, error) { return hubCommit(s, id) }

// CreateRepo implements hub.Writer.
func (w *Writer) CreateRepo(ctx context.Context, req hub.CreateRepoRequest) (hub.Commit, error) {
	refs, err := refsOf(w.s, req.Repo)
	if err != nil {
		return hub.Commit{}, err
	}
	if len(refs) > 0 {
		return hub.Commit{}, fmt.Errorf("%w: %s", hub.ErrRepoExists, req.Repo)
	}
	main, err := refName(req.Repo, store.DefaultTag)
	if err != nil {
		return hub.Commit{}, fmt.Errorf("%w: repo id %q: %v", hub.ErrRepoNotFound, req.Repo, err)
	}
	tree := map[string]store.ManifestEntry{}
	for _, op := range req.Files {
		if err := w.apply(req.Repo, tree, op); err != nil {
			return hub.Commit{}, err
		}
	}
	id, err := w.commit(ctx, main, store.ID{}, tree, req.Summary, "", req.Author, false)
	if errors.Is(err, store.ErrConflict) {
		return hub.Commit{}, fmt.Errorf("%w: %s", hub.ErrRepoExists, req.Repo)
	}
	if err != nil {
		return hub.Commit{}, err
	}
	return toHubCommit(w.s, id)
}

// DeleteRepo implements hub.Writer.
func (w *Writer) DeleteRepo(ctx context.Context, repo string) error {
	refs, err := refsOf(w.s, repo)
	if err != nil {
		return err
	}
	if len(refs) == 0 {
		return fmt.Errorf("%w: %s", hub.ErrRepoNotFound, repo)
	}
	ups := make([]store.RefUpdate, len(refs))
	for i, r := range refs {
		ups[i] = store.RefUpdate{Ref: r.Ref, Old: r.Commit}
	}
	if err := w.s.UpdateRefs(ups, "hub: delete repo "+repo); err != nil {
		return err
	}
	return w.s.ForgetUploads(repo)
}

// apply applies one operation to a tree (path → entry).
func (w *Writer) apply(repo string, tree map[string]store.ManifestEntry, op hub.Operation) error {
	switch op.Kind {
	case hub.OpAdd:
		f, err := w.object(repo, op.OID)
		if err != nil {
			return err
		}
		if f.size != op.Size {
			return fmt.Errorf("%w: %s has %d bytes, not %d", hub.ErrObjectNotFound, op.OID, f.size, op.Size)
		}
		tree[op.Path] = store.ManifestEntry{Path: op.Path, File: f.id, Size: uint64(f.size)}
	case hub.OpDeleteFile:
		if _, ok := tree[op.Path]; !ok {
			return fmt.Errorf("%w: %s", hub.ErrEntryNotFound, op.Path)
		}
		delete(tree, op.Path)
	case hub.OpDeleteFolder:
		prefix := op.Path + "/"
		n := 0
		for p := range tree {
			if strings.HasPrefix(p, prefix) {
				delete(tree, p)
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("%w: folder %s", hub.ErrEntryNotFound, op.Path)
		}
	default:
		return fmt.Errorf("commit: unknown operation %v", op.Kind)
	}
	return nil
}

// commit writes tree as a commit of ref on top of parent.
func (w *Writer) commit(ctx context.Context, ref store.RefName, parent store.ID, tree map[string]store.ManifestEntry, summary, description, author string, orphan bool) (store.ID, error) {
	files := make([]store.ManifestEntry, 0, len(tree))
	paths := map[string]bool{}
	for p, e := range tree {
		files = append(files, e)
		paths[p] = true
	}
	for p := range tree {
		for dir := p; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
			if paths[dir] {
				return store.ID{}, fmt.Errorf("%w: %q is a file and the directory of %q", hub.ErrPathConflict, dir, p)
			}
		}
	}
	msg := summary
	if description != "" {
		msg += "\n\n" + description
	}
	prov := store.Provenance{Op: "upload", Source: "hub"}
	if author != "" {
		prov.Params = map[string]string{"author": author}
	}
	// Every uploaded object the commit names is stored and indexed (apply found
	// each); the commit is not written and the branch has not moved.
	failpoint.Hit(failpoint.ServerBeforeRefMove)
	return w.s.Commit(ctx, store.CommitRequest{Ref: ref, Parent: parent, Files: files, Message: msg, Provenance: prov, Orphan: orphan})
}

// head returns the branch ref of repo and its commit, refusing tags.
func (w *Writer) head(repo, branch string) (store.RefName, store.RefEntry, error) {
	refs, err := refsOf(w.s, repo)
	if err != nil {
		return store.RefName{}, store.RefEntry{}, err
	}
	if len(refs) == 0 {
		return store.RefName{}, store.RefEntry{}, fmt.Errorf("%w: %s", hub.ErrRepoNotFound, repo)
	}
	i := slices.IndexFunc(refs, func(r store.RefEntry) bool { return r.Ref.Tag == branch })
	if i < 0 || refs[i].Fixed {
		return store.RefName{}, store.RefEntry{}, fmt.Errorf("%w: %s has no branch %s", hub.ErrRevisionNotFound, repo, branch)
	}
	return refs[i].Ref, refs[i], nil
}

// CreateCommit implements hub.Writer.
func (w *Writer) CreateCommit(ctx context.Context, req hub.CommitRequest) (hub.Commit, error) {
	for attempt := 0; ; attempt++ {
		ref, cur, err := w.head(req.Repo, req.Branch)
		if err != nil {
			return hub.Commit{}, err
		}
		if req.ParentCommit != "" && !strings.HasPrefix(cur.Commit.String(), req.ParentCommit) {
			return hub.Commit{}, fmt.Errorf("%w: %s is at %s", hub.ErrParentMismatch, req.Branch, cur.Commit.String()[:hubCommitLen])
		}
		files, err := w.s.CommitFiles(cur.Commit)
		if err != nil {
			return hub.Commit{}, err
		}
		tree := map[string]store.ManifestEntry{}
		for _, f := range files {
			tree[f.Path] = store.ManifestEntry{Path: f.Path, File: f.ID, Size: f.File.Size}
		}
		for _, op := range req.Operations {
			if err := w.apply(req.Repo, tree, op); err != nil {
				return hub.Commit{}, err
			}
		}
		id, err := w.commit(ctx, ref, cur.Commit, tree, req.Summary, req.Description, req.Author, false)
		if errors.Is(err, store.ErrConflict) {
			if req.ParentCommit != "" {
				return hub.Commit{}, fmt.Errorf("%w: %v", hub.ErrParentMismatch, err)
			}
			if attempt < 8 {
				continue // someone else committed: apply the operations to the new head
			}
			return hub.Commit{}, fmt.Errorf("%w: %v", hub.ErrConflict, err)
		}
		if err != nil {
			return hub.Commit{}, err
		}
		return toHubCommit(w.s, id)
	}
}

// CreateBranch implements hub.Writer.
func (w *Writer) CreateBranch(ctx context.Context, req hub.BranchRequest) (hub.Commit, error) {
	refs, err := refsOf(w.s, req.Repo)
	if err != nil {
		return hub.Commit{}, err
	}
	if len(refs) == 0 {
		return hub.Commit{}, fmt.Errorf("%w: %s", hub.ErrRepoNotFound, req.Repo)
	}
	ref, err := refName(req.Repo, req.Branch)
	if err != nil {
		return hub.Commit{}, err
	}
	var cur store.RefEntry
	if i := slices.IndexFunc(refs, func(r store.RefEntry) bool { return r.Ref.Tag == req.Branch }); i >= 0 {
		cur = refs[i]
		if cur.Fixed || !req.Overwrite {
			return hub.Commit{}, fmt.Errorf("%w: %s already exists in %s", hub.ErrRefExists, req.Branch, req.Repo)
		}
	}
	if req.Empty {
		id, err := w.commit(ctx, ref, cur.Commit, map[string]store.ManifestEntry{}, "empty branch "+req.Branch, "", "", true)
		if err != nil {
			return hub.Commit{}, mapRefConflict(err, req.Branch)
		}
		return toHubCommit(w.s, id)
	}
	start := req.StartingPoint
	if start == "" {
		start = store.DefaultTag
	}
	target, err := w.resolveRevision(req.Repo, start)
	if err != nil {
		return hub.Commit{}, err
	}
	if err := w.s.UpdateRef(ref, cur.Commit, target, "hub: branch "+req.Branch); err != nil {
		return hub.Commit{}, mapRefConflict(err, req.Branch)
	}
	return toHubCommit(w.s, target)
}

func mapRefConflict(err error, name string) error {
	if errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("%w: %s: %v", hub.ErrRefExists, name, err)
	}
	return err
}

// DeleteBranch implements hub.Writer.
func (w *Writer) DeleteBranch(ctx context.Context, repo, branch string) error {
	ref, cur, err := w.head(repo, branch)
	if err != nil {
		return err
	}
	if branch == store.DefaultTag {
		return fmt.Errorf("%w: %s of %s", hub.ErrProtectedRef, branch, repo)
	}
	return w.s.UpdateRef(ref, cur.Commit, store.ID{}, "hub: delete branch "+branch)
}

// CreateTag implements hub.Writer.
func (w *Writer) CreateTag(ctx context.Context, repo, tag, revision, message string) (hub.Commit, error) {
	refs, err := refsOf(w.s, repo)
	if err != nil {
		return hub.Commit{}, err
	}
	if len(refs) == 0 {
		return hub.Commit{}, fmt.Errorf("%w: %s", hub.ErrRepoNotFound, repo)
	}
	if slices.ContainsFunc(refs, func(r store.RefEntry) bool { return r.Ref.Tag == tag }) {
		return hub.Commit{}, fmt.Errorf("%w: %s already exists in %s", hub.ErrRefExists, tag, repo)
	}
	ref, err := refName(repo, tag)
	if err != nil {
		return hub.Commit{}, err
	}
	target, err := w.resolveRevision(repo, revision)
	if err != nil {
		return hub.Commit{}, err
	}
	msg := "hub: tag " + tag
	if message != "" {
		msg += ": " + message
	}
	if err := w.s.UpdateRefs([]store.RefUpdate{{Ref: ref, New: target, Fixed: true}}, msg); err != nil {
		return hub.Commit{}, mapRefConflict(err, tag)
	}
	return toHubCommit(w.s, target)
}

// DeleteTag implements hub.Writer.
func (w *Writer) DeleteTag(ctx context.Context, repo, tag string) error {
	refs, err := refsOf(w.s, repo)
	if err != nil {
		return err
	}
	if len(refs) == 0 {
		return fmt.Errorf("%w: %s", hub.ErrRepoNotFound, repo)
	}
	i := slices.IndexFunc(refs, func(r store.RefEntry) bool { return r.Ref.Tag == tag && r.Fixed })
	if i < 0 {
		return fmt.Errorf("%w: %s has no tag %s", hub.ErrRevisionNotFound, repo, tag)
	}
	return w.s.UpdateRef(refs[i].Ref, refs[i].Commit, store.ID{}, "hub: delete tag "+tag)
}
