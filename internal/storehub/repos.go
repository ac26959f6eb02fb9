package storehub

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/store"
)

// hubRepos presents a store to the hub server: a repo is a ref NAME with at least
// one tag, a revision is a TAG (branch or tag, slashes allowed) or a commit id, and
// a commit id is the first 40 hex digits of heft's BLAKE3-256 commit id, since Hub
// clients recognise commits by ^[0-9a-f]{40}$.
type Repos struct {
	s *store.Store
}

var _ hub.Repos = Repos{}

const hubCommitLen = 40

func hubCommit(s *store.Store, id store.ID) (hub.Commit, error) {
	c, err := s.LoadCommit(id)
	if err != nil {
		return hub.Commit{}, err
	}
	t, _ := time.Parse(time.RFC3339Nano, c.Time)
	return hub.Commit{ID: id.String()[:hubCommitLen], Time: t}, nil
}

func (h Repos) Resolve(repo, revision string) (hub.Commit, error) {
	refs, err := h.s.Refs()
	if err != nil {
		return hub.Commit{}, err
	}
	var tags []store.RefEntry
	for _, r := range refs {
		if r.Ref.Name == repo {
			tags = append(tags, r)
		}
	}
	if len(tags) == 0 {
		return hub.Commit{}, fmt.Errorf("%w: %s", hub.ErrRepoNotFound, repo)
	}
	for _, r := range tags {
		if r.Ref.Tag == revision {
			return hubCommit(h.s, r.Commit)
		}
	}
	if len(revision) == hubCommitLen && isLowerHex(revision) {
		// A commit id must belong to the repo: reachable from one of its refs.
		for _, r := range tags {
			log, err := h.s.Log(r.Commit.String(), 0)
			if err != nil {
				return hub.Commit{}, err
			}
			for _, le := range log {
				if strings.HasPrefix(le.ID.String(), revision) {
					return hubCommit(h.s, le.ID)
				}
			}
		}
	}
	return hub.Commit{}, fmt.Errorf("%w: %s@%s", hub.ErrRevisionNotFound, repo, revision)
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (h Repos) ListRepos() ([]hub.RepoInfo, error) {
	refs, err := h.s.Refs()
	if err != nil {
		return nil, err
	}
	seen := map[string]int{}
	var out []hub.RepoInfo
	for _, r := range refs {
		if strings.Count(r.Ref.Name, "/") != 1 { // the Hub's ids are NS/NAME
			continue
		}
		i, ok := seen[r.Ref.Name]
		if !ok {
			i = len(out)
			seen[r.Ref.Name] = i
			out = append(out, hub.RepoInfo{ID: r.Ref.Name})
		}
		if r.Ref.Tag == store.DefaultTag {
			if c, err := hubCommit(h.s, r.Commit); err == nil {
				out[i].LastModified = c.Time
			}
		}
	}
	return out, nil
}

// commitID expands a 40-hex hub commit id back to heft's.
func (h Repos) commitID(commit string) (store.ID, error) {
	id, err := h.s.Resolve(commit)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInput) {
			return store.ID{}, fmt.Errorf("%w: commit %s", hub.ErrRevisionNotFound, commit)
		}
		return store.ID{}, err
	}
	return id, nil
}

func (h Repos) Files(commit string) ([]hub.FileInfo, error) {
	id, err := h.commitID(commit)
	if err != nil {
		return nil, err
	}
	files, err := h.s.CommitFiles(id)
	if err != nil {
		return nil, err
	}
	out := make([]hub.FileInfo, 0, len(files))
	for _, f := range files {
		out = append(out, hub.FileInfo{
			Path: f.Path, Size: int64(f.File.Size), SHA256: f.File.SHA256, GitSHA1: f.File.GitSHA,
			// The Hub keeps weights and anything over 10 MB in LFS.
			LFS: f.File.Format == store.FormatSafetensors || f.File.GitSHA == "",
		})
	}
	return out, nil
}

func (h Repos) Open(commit, path string) (hub.FileReader, error) {
	id, err := h.commitID(commit)
	if err != nil {
		return nil, err
	}
	files, err := h.s.CommitFiles(id)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if f.Path == path {
			return h.s.OpenFile(f.ID)
		}
	}
	return nil, fmt.Errorf("%w: %s", hub.ErrEntryNotFound, path)
}
