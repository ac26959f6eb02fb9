package hub

import (
	"container/list"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sync/singleflight"
)

// A snapshot is the handler's view of one commit: its files as a git-like
// tree, with every oid the protocol shows (blob SHA-1s, LFS pointer SHA-1s,
// tree SHA-1s) computed from the hashes Repos.Files returns, without reading
// any content.
type snapshot struct {
	commit string
	root   *node
	nodes  map[string]*node // every file and directory by path; the root is ""
	files  []*node          // files in path order
}

// node is a file or a directory of a snapshot.
type node struct {
	path     string
	name     string
	dir      bool
	children []*node // directories only, sorted by name
	info     FileInfo
	lfs      bool   // served as an LFS file (FileInfo.LFS, or no GitSHA1)
	etag     string // sha256 for LFS files, git blob sha1 for regular ones
	oid      string // git object id: blob (pointer for LFS) or tree SHA-1
}

// lfsPointer is the Git LFS pointer text of an LFS file (LFS spec): what
// /raw serves, and what the tree oid and pointerSize describe.
func lfsPointer(sha256 string, size int64) []byte {
	return []byte("version https://git-lfs.github.com/spec/v1\noid sha256:" + sha256 + "\nsize " + strconv.FormatInt(size, 10) + "\n")
}

// gitBlobSHA1 is git's object id for a blob with this content.
func gitBlobSHA1(content []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(content))
	h.Write(content)
	return hex.EncodeToString(h.Sum(nil))
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validPath reports whether p is a clean relative slash path (FileInfo.Path).
func validPath(p string) bool {
	if p == "" {
		return false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// newSnapshot builds the view of a commit from its file list. It rejects a
// list that breaks the Repos contract, since a tree with a file that is
// also a directory, or a missing hash, cannot be presented consistently.
func newSnapshot(commit string, files []FileInfo) (*snapshot, error) {
	s := &snapshot{
		commit: commit,
		root:   &node{dir: true},
		nodes:  make(map[string]*node, len(files)+1),
	}
	s.nodes[""] = s.root
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b FileInfo) int { return strings.Compare(a.Path, b.Path) })
	for _, f := range sorted {
		if !validPath(f.Path) {
			return nil, fmt.Errorf("hub: commit %s: invalid path %q", commit, f.Path)
		}
		if !isHex(f.SHA256, 64) || f.Size < 0 || (f.GitSHA1 != "" && !isHex(f.GitSHA1, 40)) {
			return nil, fmt.Errorf("hub: commit %s: %s: invalid size or hash", commit, f.Path)
		}
		if _, dup := s.nodes[f.Path]; dup {
			return nil, fmt.Errorf("hub: commit %s: %s listed twice or as a file and a directory", commit, f.Path)
		}
		parent := s.root
		for i := 0; i < len(f.Path); i++ {
			if f.Path[i] != '/' {
				continue
			}
			dir := f.Path[:i]
			n, ok := s.nodes[dir]
			switch {
			case !ok:
				n = &node{path: dir, name: dir[strings.LastIndexByte(dir, '/')+1:], dir: true}
				s.nodes[dir] = n
				parent.children = append(parent.children, n)
			case !n.dir:
				return nil, fmt.Errorf("hub: commit %s: %s is both a file and a directory", commit, dir)
			}
			parent = n
		}
		n := &node{path: f.Path, name: f.Path[strings.LastIndexByte(f.Path, '/')+1:], info: f}
		n.lfs = f.LFS || f.GitSHA1 == ""
		if n.lfs {
			n.etag = f.SHA256
			n.oid = gitBlobSHA1(lfsPointer(f.SHA256, f.Size))
		} else {
			n.etag = f.GitSHA1
			n.oid = f.GitSHA1
		}
		s.nodes[f.Path] = n
		parent.children = append(parent.children, n)
		s.files = append(s.files, n)
	}
	// Paths were added in sorted order, but "a.b" sorts before "a/x" while
	// the directory "a" must come before the file "a.b"; sort each directory.
	for _, n := range s.nodes {
		if n.dir {
			slices.SortFunc(n.children, func(a, b *node) int { return strings.Compare(a.name, b.name) })
		}
	}
	treeOID(s.root)
	return s, nil
}

// treeOID computes git tree ids bottom-up, so that directory oids in tree
// listings are what `git` would report for the same files.
func treeOID(n *node) {
	entries := slices.Clone(n.children)
	for _, c := range entries {
		if c.dir {
			treeOID(c)
		}
	}
	// git orders tree entries by name, comparing a directory as name + "/".
	key := func(c *node) string {
		if c.dir {
			return c.name + "/"
		}
		return c.name
	}
	slices.SortFunc(entries, func(a, b *node) int { return strings.Compare(key(a), key(b)) })
	var body []byte
	for _, c := range entries {
		mode := "100644"
		if c.dir {
			mode = "40000"
		}
		raw, _ := hex.DecodeString(c.oid) // oids are validated hex
		body = append(body, mode+" "+c.name+"\x00"...)
		body = append(body, raw...)
	}
	h := sha1.New()
	fmt.Fprintf(h, "tree %d\x00", len(body))
	h.Write(body)
	n.oid = hex.EncodeToString(h.Sum(nil))
}

// snapshotCache keeps the most recently used snapshots. Commits are immutable
// (Repos contract), so an entry never goes stale; the cache exists because
// snapshot_download makes a HEAD and a GET per file, and each needs the
// file's hashes, which would otherwise cost a Files call (a walk of the
// whole manifest) per request.
type snapshotCache struct {
	repos Repos
	max   int
	group singleflight.Group // one Files call per commit however many requests wait

	mu    sync.Mutex
	order *list.List               // front = most recently used; values are *snapshot
	byID  map[string]*list.Element // guarded by mu
}

func newSnapshotCache(repos Repos, max int) *snapshotCache {
	return &snapshotCache{repos: repos, max: max, order: list.New(), byID: map[string]*list.Element{}}
}

func (c *snapshotCache) get(commit string) (*snapshot, error) {
	c.mu.Lock()
	if e, ok := c.byID[commit]; ok {
		c.order.MoveToFront(e)
		c.mu.Unlock()
		return e.Value.(*snapshot), nil
	}
	c.mu.Unlock()
	v, err, _ := c.group.Do(commit, func() (any, error) {
		files, err := c.repos.Files(commit)
		if err != nil {
			return nil, err
		}
		s, err := newSnapshot(commit, files)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if _, ok := c.byID[commit]; !ok {
			c.byID[commit] = c.order.PushFront(s)
			for c.order.Len() > c.max {
				old := c.order.Back()
				c.order.Remove(old)
				delete(c.byID, old.Value.(*snapshot).commit)
			}
		}
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*snapshot), nil
}
