package hfclient

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/store"
)

// URIScheme prefixes Hub sources and targets on heft's command line.
const URIScheme = "hf://"

// ParseURI parses "hf://NS/NAME[@REV]" into the repo id and the revision
// ("" when none is given).
func ParseURI(s string) (repo, rev string, err error) {
	rest, ok := strings.CutPrefix(s, URIScheme)
	if !ok {
		return "", "", fmt.Errorf("hf: %q does not start with %s", s, URIScheme)
	}
	repo, rev, hasRev := strings.Cut(rest, "@")
	if hasRev && rev == "" {
		return "", "", fmt.Errorf("hf: %q: empty revision after @", s)
	}
	if !ValidRepoID(repo) {
		return "", "", fmt.Errorf("hf: %q: %q is not a repository id (namespace/name of [A-Za-z0-9_.-])", s, repo)
	}
	return repo, rev, nil
}

// PullOptions describe one pull.
type PullOptions struct {
	Repo string
	// Revision is a branch, tag or commit of the repo; "" means main. It is
	// resolved to a commit once, and everything is read at that commit.
	Revision string
	// Ref is the ref to commit to; the zero value means Repo:main.
	Ref store.RefName
	// Message is the commit message; empty: "pull hf://REPO@REV".
	Message string
	// Files bounds the files fetched at once (each may use several of the
	// client's connections). Zero means 4.
	Files int
	// CheckpointBytes: see store.ResumableOptions. Zero: the store's default.
	CheckpointBytes int64
	// Progress, when set, is called with the bytes handled (stored files
	// count at once) and the repo's total size. It may be called from several
	// goroutines, but never concurrently.
	Progress func(done, total int64)
	// Log, when set, receives one line per file fetched or resumed.
	Log func(format string, args ...any)
}

// PullResult is what a pull did.
type PullResult struct {
	Source       string   `json:"source"` // hf://REPO@COMMIT
	Repo         string   `json:"repo"`
	Revision     string   `json:"revision"`
	RemoteCommit string   `json:"remote_commit"`
	Ref          string   `json:"ref"`
	Commit       store.ID `json:"commit"`
	// UpToDate: the ref already held exactly these files from this source;
	// no commit was made.
	UpToDate bool `json:"up_to_date"`
	Files    int  `json:"files"`
	// SkippedFiles were stored already (found by SHA-256 or git blob id), or
	// have the content of another file of the pull: nothing was fetched for
	// them.
	SkippedFiles int   `json:"skipped_files"`
	SkippedBytes int64 `json:"skipped_bytes"`
	// DownloadedFiles were fetched (whole, or the part an interrupted pull
	// had not stored: ResumedFiles of them, ResumedBytes read back from the
	// store instead).
	DownloadedFiles int   `json:"downloaded_files"`
	ResumedFiles    int   `json:"resumed_files"`
	ResumedBytes    int64 `json:"resumed_bytes"`
	LogicalBytes    int64 `json:"logical_bytes"`
	// FetchedBytes is the content received from the server.
	FetchedBytes int64 `json:"fetched_bytes"`
	// StoredBytes is what the new data took in the store (compressed).
	StoredBytes int64   `json:"stored_bytes"`
	Seconds     float64 `json:"seconds"`
}

// Pull copies repo at a revision into the store and commits it to a ref with
// provenance {op: "pull", source: "hf://REPO@COMMIT"}:
//
//  1. the revision is resolved to a commit, and the files are listed at that
//     commit (so a branch moving mid-pull cannot mix versions);
//  2. a file whose content the store has (LFS files by SHA-256, others by git
//     blob id among the files of every ref's head) costs nothing;
//  3. the others are fetched with ranged GETs (Client.Download: several
//     connections per large file, in order, bounded memory) straight into
//     the store, LFS files through store.IngestResumable, so that a pull
//     that was interrupted fetches only what the store lacks, and each is
//     verified: LFS files against their SHA-256, others against their git
//     blob id, all against their size;
//  4. one commit moves the ref, compare-and-swap from the value it had when
//     the pull started.
//
// Nothing is committed unless every file arrived intact. A content mismatch
// is an *Error wrapping ErrHashMismatch that names the file.
func Pull(ctx context.Context, c *Client, s *store.Store, opts PullOptions) (*PullResult, error) {
	start := time.Now()
	if err := checkRepo(opts.Repo); err != nil {
		return nil, err
	}
	rev := opts.Revision
	if rev == "" {
		rev = "main"
	}
	ref := opts.Ref
	if ref == (store.RefName{}) {
		ref = store.RefName{Name: opts.Repo, Tag: store.DefaultTag}
	}
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	parent, err := s.Ref(ref)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	commit, err := c.ResolveRevision(ctx, opts.Repo, rev)
	if err != nil {
		return nil, err
	}
	files, err := c.ListFiles(ctx, opts.Repo, commit)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(files, func(a, b RepoFile) int { return strings.Compare(a.Path, b.Path) })
	res := &PullResult{Source: URIScheme + opts.Repo + "@" + commit, Repo: opts.Repo, Revision: rev, RemoteCommit: commit, Ref: ref.String(), Files: len(files)}
	for _, f := range files {
		if err := store.ValidatePath(f.Path); err != nil {
			return nil, &Error{Op: "pull", Repo: opts.Repo, Path: f.Path, Err: fmt.Errorf("%w: %v", ErrProtocol, err)}
		}
		res.LogicalBytes += f.Size
	}

	p := &puller{c: c, s: s, opts: opts, commit: commit, res: res, prog: &pullProgress{fn: opts.Progress, total: res.LogicalBytes, files: map[string]int64{}}}
	entries := make([]store.ManifestEntry, len(files))
	var fetch []int
	for i, f := range files {
		id, ok, err := p.stored(f)
		if err != nil {
			return nil, err
		}
		if ok {
			entries[i] = store.ManifestEntry{Path: f.Path, File: id, Size: uint64(f.Size)}
			res.SkippedFiles++
			res.SkippedBytes += f.Size
			p.prog.set(f.Path, f.Size)
			continue
		}
		fetch = append(fetch, i)
	}
	fetched0 := c.Stats().BytesDownloaded
	limit := opts.Files
	if limit <= 0 {
		limit = 4
	}
	// Files with the same content are fetched once.
	first := map[string]int{}
	var dups []int
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, i := range fetch {
		if sha := files[i].SHA256; sha != "" {
			if _, ok := first[sha]; ok {
				dups = append(dups, i)
				continue
			}
			first[sha] = i
		}
		g.Go(func() error {
			id, err := p.fetch(gctx, files[i])
			if err != nil {
				return err
			}
			entries[i] = store.ManifestEntry{Path: files[i].Path, File: id, Size: uint64(files[i].Size)}
			return nil
		})
	}
	err = g.Wait()
	res.FetchedBytes = c.Stats().BytesDownloaded - fetched0
	if err != nil {
		return nil, err
	}
	for _, i := range dups {
		entries[i] = store.ManifestEntry{Path: files[i].Path, File: entries[first[files[i].SHA256]].File, Size: uint64(files[i].Size)}
		p.prog.set(files[i].Path, files[i].Size)
	}
	res.DownloadedFiles = len(fetch) - len(dups)
	res.SkippedFiles += len(dups)
	for _, i := range dups {
		res.SkippedBytes += files[i].Size
	}

	if !parent.IsZero() && sameFiles(s, parent, entries, res.Source) {
		res.UpToDate, res.Commit = true, parent
		res.Seconds = time.Since(start).Seconds()
		return res, nil
	}
	msg := opts.Message
	if msg == "" {
		msg = "pull " + URIScheme + opts.Repo + "@" + rev
	}
	failpoint.Hit(failpoint.PullBeforeRefMove)
	res.Commit, err = s.Commit(ctx, store.CommitRequest{
		Ref: ref, Parent: parent, Files: entries, Message: msg,
		Provenance: store.Provenance{Op: "pull", Source: res.Source, Params: map[string]string{"revision": rev, "endpoint": c.Endpoint()}},
	})
	if err != nil {
		return nil, fmt.Errorf("pull %s: commit to %s: %w", opts.Repo, ref, err)
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// sameFiles reports whether commit holds exactly entries and came from source.
func sameFiles(s *store.Store, commit store.ID, entries []store.ManifestEntry, source string) bool {
	c, err := s.LoadCommit(commit)
	if err != nil || c.Provenance.Source != source {
		return false
	}
	have, err := s.CommitFiles(commit)
	if err != nil || len(have) != len(entries) {
		return false
	}
	byPath := map[string]store.ID{}
	for _, f := range have {
		byPath[f.Path] = f.ID
	}
	for _, e := range entries {
		if id, ok := byPath[e.Path]; !ok || id != e.File {
			return false
		}
	}
	return true
}

// puller is one Pull's shared state.
type puller struct {
	c      *Client
	s      *store.Store
	opts   PullOptions
	commit string
	prog   *pullProgress

	mu  sync.Mutex
	res *PullResult // counters guarded by mu once fetches run

	gitOnce  sync.Once
	gitFiles map[string]gitFile // git blob id → stored file
	gitErr   error
}

type gitFile struct {
	id   store.ID
	size uint64
}

// stored finds a stored file with f's content.
func (p *puller) stored(f RepoFile) (store.ID, bool, error) {
	if f.LFS() {
		id, obj, err := p.s.FileBySHA256(f.SHA256)
		if errors.Is(err, store.ErrNotFound) {
			return store.ID{}, false, nil
		}
		if err != nil {
			return store.ID{}, false, err
		}
		return id, int64(obj.Size) == f.Size, nil
	}
	if f.BlobID == "" {
		return store.ID{}, false, nil
	}
	p.gitOnce.Do(p.loadGitFiles)
	if p.gitErr != nil {
		return store.ID{}, false, p.gitErr
	}
	g, ok := p.gitFiles[f.BlobID]
	return g.id, ok && int64(g.size) == f.Size, nil
}

// loadGitFiles indexes the files of every ref's head by git blob id: the
// store records blob ids (for files up to 10 MB) but indexes only SHA-256s,
// and files kept in git (configs, tokenizers) are listed by blob id only.
func (p *puller) loadGitFiles() {
	p.gitFiles = map[string]gitFile{}
	refs, err := p.s.Refs()
	if err != nil {
		p.gitErr = err
		return
	}
	seen := map[store.ID]bool{}
	for _, r := range refs {
		if seen[r.Commit] {
			continue
		}
		seen[r.Commit] = true
		files, err := p.s.CommitFiles(r.Commit)
		if err != nil {
			p.gitErr = fmt.Errorf("listing the files of %s: %w", r.Ref, err)
			return
		}
		for _, f := range files {
			if f.File.GitSHA != "" {
				p.gitFiles[f.File.GitSHA] = gitFile{f.ID, f.File.Size}
			}
		}
	}
}

// fetch downloads one file into the store and returns its file object.
func (p *puller) fetch(ctx context.Context, f RepoFile) (store.ID, error) {
	progress := func(done, _ int64) { p.prog.set(f.Path, done) }
	var (
		id  store.ID
		err error
	)
	if f.LFS() {
		var res *store.ResumableResult
		res, err = p.s.IngestResumable(ctx, f.Path, f.Size, store.ResumableOptions{
			SHA256: f.SHA256,
			Fetch: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
				return p.c.Download(ctx, p.opts.Repo, p.commit, f.Path, f.Size, off, n)
			},
			CheckpointBytes: p.opts.CheckpointBytes,
			Progress:        progress,
		})
		if err == nil {
			id = res.ID
			p.mu.Lock()
			p.res.StoredBytes += res.Stats.StoredBytes
			if res.Resumed > 0 {
				p.res.ResumedFiles++
				p.res.ResumedBytes += res.Resumed
			}
			p.mu.Unlock()
			if res.Resumed > 0 && p.opts.Log != nil {
				p.opts.Log("%s: resumed at byte %d of %d", f.Path, res.Resumed, f.Size)
			}
		}
	} else {
		id, err = p.fetchGit(ctx, f, progress)
	}
	if err != nil {
		if errors.Is(err, store.ErrInput) {
			// The store refused the content: not the size, hash or format
			// the server listed.
			return store.ID{}, &Error{Op: "pull", Repo: p.opts.Repo, Path: f.Path, Err: fmt.Errorf("%w: %v", ErrHashMismatch, err)}
		}
		var he *Error
		if errors.As(err, &he) {
			return store.ID{}, err
		}
		return store.ID{}, fmt.Errorf("pull %s: %s: %w", p.opts.Repo, f.Path, err)
	}
	if p.opts.Log != nil {
		p.opts.Log("%s: %d bytes", f.Path, f.Size)
	}
	return id, nil
}

// fetchGit downloads a file kept in git, checking its git blob id.
func (p *puller) fetchGit(ctx context.Context, f RepoFile, progress func(done, total int64)) (store.ID, error) {
	rc, err := p.c.Download(ctx, p.opts.Repo, p.commit, f.Path, f.Size, 0, f.Size)
	if err != nil {
		return store.ID{}, err
	}
	defer rc.Close()
	h := gitBlobHasher(f.Size)
	sf, err := p.s.IngestFile(ctx, f.Path, io.TeeReader(rc, h), f.Size, store.IngestOptions{Progress: progress})
	if err != nil {
		return store.ID{}, err
	}
	p.mu.Lock()
	p.res.StoredBytes += sf.Stats.StoredBytes
	p.mu.Unlock()
	if got := hex.EncodeToString(h.Sum(nil)); f.BlobID != "" && got != f.BlobID {
		// What was stored stays unreferenced, for gc.
		return store.ID{}, &Error{Op: "pull", Repo: p.opts.Repo, Path: f.Path, Err: fmt.Errorf("%w: git blob id %s, listed %s", ErrHashMismatch, got, f.BlobID)}
	}
	return sf.ID, nil
}

// gitBlobHasher returns a SHA-1 primed with git's blob header.
func gitBlobHasher(size int64) hash.Hash {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", size)
	return h
}

// pullProgress sums per-file progress into one callback.
type pullProgress struct {
	fn    func(done, total int64)
	total int64

	mu    sync.Mutex
	done  int64            // +checklocks:mu
	files map[string]int64 // +checklocks:mu
}

func (p *pullProgress) set(path string, done int64) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += done - p.files[path]
	p.files[path] = done
	p.fn(p.done, p.total)
}
