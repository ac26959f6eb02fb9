package hubtest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/heft-dev/heft/hub"
)

var _ hub.Writer = (*Repos)(nil)

// CreateRepo implements hub.Writer.
func (m *Repos) CreateRepo(_ context.Context, req hub.CreateRepoRequest) (hub.Commit, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.repos[req.Repo] != nil {
		return hub.Commit{}, fmt.Errorf("%s: %w", req.Repo, hub.ErrRepoExists)
	}
	files := map[string]*file{}
	for _, op := range req.Files {
		if op.Kind != hub.OpAdd {
			return hub.Commit{}, fmt.Errorf("hubtest: CreateRepo: %s operation in the initial files", op.Kind)
		}
		data, err := m.usable(req.Repo, op.OID, op.Size)
		if err != nil {
			return hub.Commit{}, fmt.Errorf("%s: %w", op.Path, err)
		}
		files[op.Path] = newFile(op.Path, data, op.LFS)
	}
	if err := pathConflict(files); err != nil {
		return hub.Commit{}, err
	}
	r := newRepo()
	m.repos[req.Repo] = r
	c := m.newCommit(req.Repo, "", files)
	m.setBranch(req.Repo, r, "main", c)
	return c.c, nil
}

// DeleteRepo implements hub.Writer. The repo's objects stay stored (other
// repos may use them); what it owned is forgotten.
func (m *Repos) DeleteRepo(_ context.Context, repoID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.repos[repoID] == nil {
		return fmt.Errorf("%s: %w", repoID, hub.ErrRepoNotFound)
	}
	delete(m.repos, repoID)
	delete(m.owned, repoID)
	return nil
}

// StatObject implements hub.Writer.
func (m *Repos) StatObject(_ context.Context, repoID, oid string) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.owned[repoID][oid] {
		return 0, fmt.Errorf("%s: object %s: %w", repoID, oid, hub.ErrObjectNotFound)
	}
	return int64(len(m.objects[oid])), nil
}

// usable returns the content of an object repoID may use with this size.
// m.mu is held.
func (m *Repos) usable(repoID, oid string, size int64) ([]byte, error) {
	data, ok := m.objects[oid]
	if !ok || !m.owned[repoID][oid] || int64(len(data)) != size {
		return nil, fmt.Errorf("object %s (%d bytes): %w", oid, size, hub.ErrObjectNotFound)
	}
	return data, nil
}

// StoreObject implements hub.Writer. It reads r to the end (unless the repo
// owns the object already) and verifies size and SHA-256 itself.
func (m *Repos) StoreObject(ctx context.Context, repoID, oid string, size int64, r io.Reader) error {
	m.mu.Lock()
	owned := m.owned[repoID][oid]
	m.mu.Unlock()
	if owned {
		return nil
	}
	h := sha256.New()
	data, err := io.ReadAll(io.TeeReader(io.LimitReader(r, size+1), h))
	if err != nil {
		return fmt.Errorf("hubtest: store %s: %w", oid, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hubtest: store %s: %w", oid, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); int64(len(data)) != size || got != oid {
		return &hub.ObjectMismatchError{OID: oid, Size: size, GotOID: got, GotSize: int64(len(data))}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.own(repoID, oid, data)
	return nil
}

// branchHead returns the repo and the head of one of its branches. m.mu is
// held.
func (m *Repos) branchHead(repoID, branch string) (*repo, *commit, error) {
	r := m.repos[repoID]
	if r == nil {
		return nil, nil, fmt.Errorf("%s: %w", repoID, hub.ErrRepoNotFound)
	}
	id, ok := r.refs[branch]
	if !ok || r.tags[branch] {
		return nil, nil, fmt.Errorf("%s: branch %s: %w", repoID, branch, hub.ErrRevisionNotFound)
	}
	return r, m.commits[id], nil
}

// CreateCommit implements hub.Writer. Everything happens under one lock, so
// the compare-and-swap never loses a race.
func (m *Repos) CreateCommit(_ context.Context, req hub.CommitRequest) (hub.Commit, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, head, err := m.branchHead(req.Repo, req.Branch)
	if err != nil {
		return hub.Commit{}, err
	}
	if req.ParentCommit != "" && !strings.HasPrefix(head.c.ID, req.ParentCommit) {
		return hub.Commit{}, fmt.Errorf("%s@%s is %s, not %s: %w", req.Repo, req.Branch, head.c.ID, req.ParentCommit, hub.ErrParentMismatch)
	}
	files := maps.Clone(head.files)
	for _, op := range req.Operations {
		switch op.Kind {
		case hub.OpAdd:
			data, err := m.usable(req.Repo, op.OID, op.Size)
			if err != nil {
				return hub.Commit{}, fmt.Errorf("%s: %w", op.Path, err)
			}
			files[op.Path] = newFile(op.Path, data, op.LFS)
		case hub.OpDeleteFile:
			if files[op.Path] == nil {
				return hub.Commit{}, fmt.Errorf("delete %s: %w", op.Path, hub.ErrEntryNotFound)
			}
			delete(files, op.Path)
		case hub.OpDeleteFolder:
			n := 0
			for p := range files {
				if strings.HasPrefix(p, op.Path+"/") {
					delete(files, p)
					n++
				}
			}
			if n == 0 {
				return hub.Commit{}, fmt.Errorf("delete folder %s: %w", op.Path, hub.ErrEntryNotFound)
			}
		default:
			return hub.Commit{}, fmt.Errorf("hubtest: unknown operation %v", op.Kind)
		}
	}
	if err := pathConflict(files); err != nil {
		return hub.Commit{}, err
	}
	c := m.newCommit(req.Repo, head.c.ID, files)
	m.setBranch(req.Repo, r, req.Branch, c)
	return c.c, nil
}

// pathConflict reports a path that is both a file and a directory.
func pathConflict(files map[string]*file) error {
	for p := range files {
		for i := 0; i < len(p); i++ {
			if p[i] == '/' && files[p[:i]] != nil {
				return fmt.Errorf("%s is a file and a directory: %w", p[:i], hub.ErrPathConflict)
			}
		}
	}
	return nil
}

// resolveLocked is Resolve with m.mu held.
func (m *Repos) resolveLocked(repoID, revision string) (*commit, error) {
	r := m.repos[repoID]
	if r == nil {
		return nil, fmt.Errorf("%s: %w", repoID, hub.ErrRepoNotFound)
	}
	id, ok := r.refs[revision]
	if !ok && r.commits[revision] {
		id, ok = revision, true
	}
	if !ok {
		return nil, fmt.Errorf("%s@%s: %w", repoID, revision, hub.ErrRevisionNotFound)
	}
	return m.commits[id], nil
}

// CreateBranch implements hub.Writer.
func (m *Repos) CreateBranch(_ context.Context, req hub.BranchRequest) (hub.Commit, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.repos[req.Repo]
	if r == nil {
		return hub.Commit{}, fmt.Errorf("%s: %w", req.Repo, hub.ErrRepoNotFound)
	}
	if _, exists := r.refs[req.Branch]; exists && (!req.Overwrite || r.tags[req.Branch]) {
		return hub.Commit{}, fmt.Errorf("%s: %s: %w", req.Repo, req.Branch, hub.ErrRefExists)
	}
	var c *commit
	if req.Empty {
		c = m.newCommit(req.Repo, "", map[string]*file{})
	} else {
		from := req.StartingPoint
		if from == "" {
			from = "main"
		}
		var err error
		if c, err = m.resolveLocked(req.Repo, from); err != nil {
			return hub.Commit{}, err
		}
	}
	m.setBranch(req.Repo, r, req.Branch, c)
	return c.c, nil
}

// DeleteBranch implements hub.Writer.
func (m *Repos) DeleteBranch(_ context.Context, repoID, branch string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, _, err := m.branchHead(repoID, branch)
	if err != nil {
		return err
	}
	if branch == "main" {
		return fmt.Errorf("%s: main: %w", repoID, hub.ErrProtectedRef)
	}
	delete(r.refs, branch)
	return nil
}

// CreateTag implements hub.Writer. The message is not kept.
func (m *Repos) CreateTag(_ context.Context, repoID, tag, revision, _ string) (hub.Commit, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.resolveLocked(repoID, revision)
	if err != nil {
		return hub.Commit{}, err
	}
	r := m.repos[repoID]
	if _, exists := r.refs[tag]; exists {
		return hub.Commit{}, fmt.Errorf("%s: %s: %w", repoID, tag, hub.ErrRefExists)
	}
	r.refs[tag] = c.c.ID
	r.tags[tag] = true
	return c.c, nil
}

// DeleteTag implements hub.Writer.
func (m *Repos) DeleteTag(_ context.Context, repoID, tag string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.repos[repoID]
	if r == nil {
		return fmt.Errorf("%s: %w", repoID, hub.ErrRepoNotFound)
	}
	if !r.tags[tag] {
		return fmt.Errorf("%s: tag %s: %w", repoID, tag, hub.ErrRevisionNotFound)
	}
	delete(r.refs, tag)
	delete(r.tags, tag)
	return nil
}

// Objects returns the oids of every stored object, sorted.
func (m *Repos) Objects() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.objects))
}

// Fingerprint is a digest of everything the fake holds: repos, refs (and
// which are tags), commits and their files, stored objects and what each
// repo owns. A test compares it before and after a request that must not
// change anything.
func (m *Repos) Fingerprint() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := sha256.New()
	for _, id := range slices.Sorted(maps.Keys(m.repos)) {
		r := m.repos[id]
		fmt.Fprintf(h, "repo %s\n", id)
		for _, name := range slices.Sorted(maps.Keys(r.refs)) {
			fmt.Fprintf(h, "ref %s %s %v\n", name, r.refs[name], r.tags[name])
		}
	}
	for _, id := range slices.Sorted(maps.Keys(m.commits)) {
		c := m.commits[id]
		fmt.Fprintf(h, "commit %s\n", id)
		for _, p := range slices.Sorted(maps.Keys(c.files)) {
			fmt.Fprintf(h, "file %s %s %v\n", p, c.files[p].info.SHA256, c.files[p].info.LFS)
		}
	}
	for _, oid := range slices.Sorted(maps.Keys(m.objects)) {
		fmt.Fprintf(h, "object %s\n", oid)
	}
	for _, id := range slices.Sorted(maps.Keys(m.owned)) {
		for _, oid := range slices.Sorted(maps.Keys(m.owned[id])) {
			fmt.Fprintf(h, "owned %s %s\n", id, oid)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
