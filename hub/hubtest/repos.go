// Package hubtest has test helpers for package hub: Repos, an in-memory
// hub.Repos and hub.Writer, and CheckRepos and CheckWriter, conformance
// checks for any implementation of those interfaces (the store adapter runs
// them too).
package hubtest

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/heft-dev/heft/hub"
)

// Repos is an in-memory hub.Repos and hub.Writer. The Commit helper makes a
// full snapshot (the given files, nothing inherited) and moves a branch to
// it; the Writer methods (writer.go) follow the hub.Writer contract. It is
// safe for concurrent use.
type Repos struct {
	mu      sync.Mutex
	repos   map[string]*repo
	commits map[string]*commit
	n       int // commits made, for ids and times
	fails   []failure

	// objects are the stored objects by oid; owned[repo] the oids each
	// repo may use (hub.Writer's object scoping).
	objects map[string][]byte
	owned   map[string]map[string]bool

	open, opened atomic.Int64
}

type repo struct {
	refs    map[string]string // branch or tag → commit id
	tags    map[string]bool   // names in refs that are tags
	commits map[string]bool
	head    string // last commit on main, for ListRepos
}

type commit struct {
	c     hub.Commit
	files map[string]*file
}

type file struct {
	info hub.FileInfo
	data []byte
}

type failure struct {
	path string
	at   int64
	err  error
}

// New returns an empty Repos.
func New() *Repos {
	return &Repos{repos: map[string]*repo{}, commits: map[string]*commit{}, objects: map[string][]byte{}, owned: map[string]map[string]bool{}}
}

// baseTime is the time of the first commit; each later one is a minute on,
// so that tests see deterministic lastModified values.
var baseTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// lfsExtensions are the extensions the Hub's default .gitattributes tracks
// with LFS (weights, archives, arrays), so that the fake presents files the
// way a real repo would.
var lfsExtensions = []string{
	".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gguf", ".gz", ".h5", ".joblib",
	".mlmodel", ".model", ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb",
	".pickle", ".pkl", ".pt", ".pth", ".rar", ".safetensors", ".tar", ".tflite", ".tgz",
	".wasm", ".xz", ".zip", ".zst",
}

// maxGitSHA1 mirrors the store, which records git blob SHA-1s for files up
// to 10 MB (README, Architecture).
const maxGitSHA1 = 10 << 20

// IsLFS is the fake's rule for presenting a file as LFS: an LFS-tracked
// extension, more than 10 MiB, or binary (a NUL byte or invalid UTF-8),
// which is also what the Hub's preupload would decide (§4.3).
func IsLFS(p string, data []byte) bool {
	return slices.Contains(lfsExtensions, strings.ToLower(path.Ext(p))) ||
		len(data) > maxGitSHA1 || bytes.IndexByte(data, 0) >= 0 || !utf8.Valid(data)
}

// GitBlobSHA1 is git's object id for a blob with this content.
func GitBlobSHA1(data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256 is the lowercase hex SHA-256 of data.
func SHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Commit records a commit of repo holding exactly files (path → content) and
// points branch at it, creating the repo and the branch as needed. Paths are
// slash-separated and relative.
func (m *Repos) Commit(repoID, branch string, files map[string][]byte) hub.Commit {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.repos[repoID]
	if r == nil {
		r = newRepo()
		m.repos[repoID] = r
	}
	fs := make(map[string]*file, len(files))
	for p, data := range files {
		fs[p] = newFile(p, bytes.Clone(data), false)
		m.own(repoID, fs[p].info.SHA256, fs[p].data)
	}
	c := m.newCommit(repoID, r.refs[branch], fs)
	delete(r.tags, branch)
	m.setBranch(repoID, r, branch, c)
	return c.c
}

func newRepo() *repo {
	return &repo{refs: map[string]string{}, tags: map[string]bool{}, commits: map[string]bool{}}
}

// newFile describes content stored at path. lfs says the client sent it
// through LFS; the fake presents it as LFS then, or when IsLFS says so.
func newFile(p string, data []byte, lfs bool) *file {
	info := hub.FileInfo{Path: p, Size: int64(len(data)), SHA256: SHA256(data), LFS: lfs || IsLFS(p, data)}
	if len(data) <= maxGitSHA1 {
		info.GitSHA1 = GitBlobSHA1(data)
	}
	return &file{info: info, data: data}
}

// newCommit records a commit of repoID with parent holding files. m.mu is
// held.
func (m *Repos) newCommit(repoID, parent string, files map[string]*file) *commit {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	h := sha1.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", repoID, parent, m.n)
	for _, p := range paths {
		fmt.Fprintf(h, "%s\x00%s\x00", p, files[p].info.SHA256)
	}
	c := &commit{files: files, c: hub.Commit{ID: hex.EncodeToString(h.Sum(nil)), Time: baseTime.Add(time.Duration(m.n) * time.Minute)}}
	m.n++
	m.commits[c.c.ID] = c
	m.repos[repoID].commits[c.c.ID] = true
	return c
}

// setBranch points branch at c. m.mu is held.
func (m *Repos) setBranch(repoID string, r *repo, branch string, c *commit) {
	r.refs[branch] = c.c.ID
	if branch == "main" {
		r.head = c.c.ID
	}
}

// own records that repoID may use the object data (with SHA-256 oid),
// storing it if needed. m.mu is held.
func (m *Repos) own(repoID, oid string, data []byte) {
	if _, ok := m.objects[oid]; !ok {
		m.objects[oid] = data
	}
	if m.owned[repoID] == nil {
		m.owned[repoID] = map[string]bool{}
	}
	m.owned[repoID][oid] = true
}

// SetRef points a branch or tag of an existing repo at one of its commits.
// A name that does not exist yet becomes a tag.
func (m *Repos) SetRef(repoID, name, commitID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.repos[repoID]
	if r == nil || !r.commits[commitID] {
		panic("hubtest: SetRef: unknown repo or commit")
	}
	if _, ok := r.refs[name]; !ok {
		r.tags[name] = true
	}
	r.refs[name] = commitID
	if name == "main" {
		r.head = commitID
	}
}

// FailReadOnce makes the next ReadAt of path (in any commit) that reaches
// offset at return the bytes before at and then err, once. It simulates a
// store failing mid-file (an integrity error, a lost disk).
func (m *Repos) FailReadOnce(path string, at int64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fails = append(m.fails, failure{path: path, at: at, err: err})
}

// OpenReaders is how many readers Open returned that are not closed yet; a
// handler that leaks readers leaves it above zero.
func (m *Repos) OpenReaders() int { return int(m.open.Load()) }

// Opened is how many readers Open has returned in all; a HEAD must not
// raise it.
func (m *Repos) Opened() int { return int(m.opened.Load()) }

// Resolve implements hub.Repos.
func (m *Repos) Resolve(repoID, revision string) (hub.Commit, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.repos[repoID]
	if r == nil {
		return hub.Commit{}, fmt.Errorf("%s: %w", repoID, hub.ErrRepoNotFound)
	}
	id, ok := r.refs[revision]
	if !ok && r.commits[revision] {
		id, ok = revision, true
	}
	if !ok {
		return hub.Commit{}, fmt.Errorf("%s@%s: %w", repoID, revision, hub.ErrRevisionNotFound)
	}
	return m.commits[id].c, nil
}

// ListRepos implements hub.Repos.
func (m *Repos) ListRepos() ([]hub.RepoInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []hub.RepoInfo
	for id, r := range m.repos {
		ri := hub.RepoInfo{ID: id}
		if c := m.commits[r.head]; c != nil {
			ri.LastModified = c.c.Time
		}
		out = append(out, ri)
	}
	return out, nil
}

// Files implements hub.Repos.
func (m *Repos) Files(commitID string) ([]hub.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.commits[commitID]
	if c == nil {
		return nil, fmt.Errorf("commit %s: %w", commitID, hub.ErrRevisionNotFound)
	}
	out := make([]hub.FileInfo, 0, len(c.files))
	for _, f := range c.files {
		out = append(out, f.info)
	}
	return out, nil
}

// Open implements hub.Repos.
func (m *Repos) Open(commitID, p string) (hub.FileReader, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.commits[commitID]
	if c == nil {
		return nil, fmt.Errorf("commit %s: %w", commitID, hub.ErrRevisionNotFound)
	}
	f := c.files[p]
	if f == nil {
		return nil, fmt.Errorf("%s: %w", p, hub.ErrEntryNotFound)
	}
	m.open.Add(1)
	m.opened.Add(1)
	return &reader{m: m, path: p, data: f.data}, nil
}

type reader struct {
	m      *Repos
	path   string
	data   []byte
	closed atomic.Bool
}

func (r *reader) Size() int64 { return int64(len(r.data)) }

func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, fmt.Errorf("hubtest: %s: read after Close", r.path)
	}
	if off < 0 {
		return 0, fmt.Errorf("hubtest: %s: negative offset", r.path)
	}
	end := off + int64(len(p))
	r.m.mu.Lock()
	for i, f := range r.m.fails {
		if f.path == r.path && f.at >= off && f.at < end {
			r.m.fails = slices.Delete(r.m.fails, i, i+1)
			r.m.mu.Unlock()
			n := copy(p[:f.at-off], r.data[min(off, int64(len(r.data))):])
			return n, f.err
		}
	}
	r.m.mu.Unlock()
	if off >= int64(len(r.data)) {
		return 0, io.EOF
	}
	n := copy(p, r.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *reader) Close() error {
	if r.closed.Swap(true) {
		return fmt.Errorf("hubtest: %s: closed twice", r.path)
	}
	r.m.open.Add(-1)
	return nil
}
