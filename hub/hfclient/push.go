package hfclient

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/store"
)

// maxInlineFile bounds a file sent inline (base64, in memory) in a commit.
// The Hub keeps at most 10 MiB in git and asks for LFS above; a server that
// asks for a larger inline file is refused rather than obeyed.
const maxInlineFile = 64 << 20

// PushOptions describe one push.
type PushOptions struct {
	Repo string
	// Revision is the branch to commit to; "" means main. A missing branch
	// other than main is created from main.
	Revision string
	// Ref is the store ref (NAME[:TAG]) or commit to push.
	Ref string
	// Message is the commit summary; empty: "heft push REF".
	Message string
	// Private makes a repo the push creates private.
	Private bool
	// Files bounds the objects uploaded at once (each may use several of the
	// client's connections for its parts). Zero means 4.
	Files int
	// Progress, when set, is called with the LFS bytes uploaded so far (per
	// finished object) and the total to upload.
	Progress func(done, total int64)
}

// PushResult is what a push did.
type PushResult struct {
	Repo     string   `json:"repo"`
	Revision string   `json:"revision"`
	Ref      string   `json:"ref"`
	Source   store.ID `json:"source_commit"`
	// Commit is the remote branch's head after the push (the new commit, or
	// the old head when UpToDate).
	Commit    string `json:"remote_commit"`
	CommitURL string `json:"commit_url,omitempty"`
	Created   bool   `json:"repo_created"`
	UpToDate  bool   `json:"up_to_date"`
	Files     int    `json:"files"`
	// Unchanged files had the same content at the same path remotely.
	Unchanged int `json:"unchanged_files"`
	// PresentObjects were LFS objects the server had already (no upload).
	PresentObjects int `json:"present_objects"`
	// UploadedObjects LFS objects were sent, UploadedBytes in all.
	UploadedObjects int   `json:"uploaded_objects"`
	UploadedBytes   int64 `json:"uploaded_bytes"`
	// InlineFiles were sent inside the commit (InlineBytes before base64).
	InlineFiles  int      `json:"inline_files"`
	InlineBytes  int64    `json:"inline_bytes"`
	Ignored      []string `json:"ignored,omitempty"`
	LogicalBytes int64    `json:"logical_bytes"`
	Seconds      float64  `json:"seconds"`
}

// Push uploads the files of a store ref to a branch of repo in one commit:
//
//  1. the repo is created if it does not exist (and the branch, if it is not
//     main), and the branch's head is read, to commit with it as parent;
//  2. preupload says, per file, LFS or inline, whether .gitignore excludes it,
//     and what is at its path now: a file whose content is there already is
//     left out;
//  3. the LFS batch API says which objects the server lacks; only those are
//     uploaded (basic or multipart, as it asks), streamed from the store;
//  4. one NDJSON commit names every new or changed file, with the head read
//     in step 1 as parentCommit, so a concurrent change fails it (412).
//
// Files present remotely but not in the ref are kept. Nothing is committed
// when nothing changed (UpToDate).
func Push(ctx context.Context, c *Client, s *store.Store, opts PushOptions) (*PushResult, error) {
	start := time.Now()
	if err := checkRepo(opts.Repo); err != nil {
		return nil, err
	}
	rev := opts.Revision
	if rev == "" {
		rev = "main"
	}
	commitID, err := s.Resolve(opts.Ref)
	if err != nil {
		return nil, err
	}
	files, err := s.CommitFiles(commitID)
	if err != nil {
		return nil, err
	}
	res := &PushResult{Repo: opts.Repo, Revision: rev, Ref: opts.Ref, Source: commitID, Files: len(files)}
	for _, f := range files {
		res.LogicalBytes += int64(f.File.Size)
	}

	if _, res.Created, err = c.CreateRepo(ctx, opts.Repo, opts.Private); err != nil {
		return nil, err
	}
	info, err := c.RepoInfo(ctx, opts.Repo, rev, false)
	if errors.Is(err, ErrRevisionNotFound) && rev != "main" {
		if err = c.CreateBranch(ctx, opts.Repo, rev); err == nil {
			info, err = c.RepoInfo(ctx, opts.Repo, rev, false)
		}
	}
	if err != nil {
		return nil, err
	}
	head := info.SHA

	pre := make([]PreuploadFile, len(files))
	for i, f := range files {
		sample, err := readSample(s, f)
		if err != nil {
			return nil, err
		}
		pre[i] = PreuploadFile{Path: f.Path, Size: int64(f.File.Size), Sample: sample}
	}
	modes, err := c.Preupload(ctx, opts.Repo, rev, pre)
	if err != nil {
		return nil, err
	}

	var ops []CommitOp
	objects := map[string]int64{}       // LFS objects of changed files
	objectFile := map[string]store.ID{} // oid → a file with that content
	for _, f := range files {
		m := modes[f.Path]
		if m.ShouldIgnore {
			res.Ignored = append(res.Ignored, f.Path)
			continue
		}
		lfs := m.LFS && f.File.Size > 0 // Python sends empty files inline whatever the answer
		if lfs {
			if m.OID == f.File.SHA256 {
				res.Unchanged++
				continue
			}
			ops = append(ops, CommitOp{Path: f.Path, LFS: true, OID: f.File.SHA256, Size: int64(f.File.Size)})
			objects[f.File.SHA256] = int64(f.File.Size)
			objectFile[f.File.SHA256] = f.ID
			continue
		}
		if m.OID != "" && m.OID == f.File.GitSHA {
			res.Unchanged++
			continue
		}
		if f.File.Size > maxInlineFile {
			return nil, &Error{Op: "push", Repo: opts.Repo, Path: f.Path, Err: fmt.Errorf("%w: the server wants %d bytes inline in the commit (at most %d)", ErrProtocol, f.File.Size, maxInlineFile)}
		}
		content, err := readAll(s, f)
		if err != nil {
			return nil, err
		}
		h := gitBlobHasher(int64(len(content)))
		h.Write(content)
		if m.OID != "" && m.OID == hex.EncodeToString(h.Sum(nil)) {
			res.Unchanged++
			continue
		}
		ops = append(ops, CommitOp{Path: f.Path, Content: content})
		res.InlineFiles++
		res.InlineBytes += int64(len(content))
	}
	if len(ops) == 0 {
		res.UpToDate, res.Commit = true, head
		res.Seconds = time.Since(start).Seconds()
		return res, nil
	}

	if len(objects) > 0 {
		if err := push(ctx, c, s, opts, rev, objects, objectFile, res); err != nil {
			return nil, err
		}
	}
	msg := opts.Message
	if msg == "" {
		msg = "heft push " + opts.Ref
	}
	ci, err := c.Commit(ctx, opts.Repo, rev, CommitRequest{
		Summary:      msg,
		Description:  fmt.Sprintf("Pushed by heft %s from commit %s.", store.Version, commitID),
		ParentCommit: head,
		Ops:          ops,
	})
	if err != nil {
		return nil, err
	}
	res.Commit, res.CommitURL = ci.OID, ci.URL
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// push uploads the LFS objects the server lacks.
func push(ctx context.Context, c *Client, s *store.Store, opts PushOptions, rev string, objects map[string]int64, objectFile map[string]store.ID, res *PushResult) error {
	batch, err := c.LFSBatch(ctx, opts.Repo, rev, objects)
	if err != nil {
		return err
	}
	var todo []LFSObject
	var total int64
	for _, o := range batch {
		if o.Upload == nil {
			res.PresentObjects++
			continue
		}
		todo = append(todo, o)
		total += o.Size
	}
	limit := opts.Files
	if limit <= 0 {
		limit = 4
	}
	var mu sync.Mutex
	var done int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, o := range todo {
		g.Go(func() error {
			fr, err := s.OpenFile(objectFile[o.OID])
			if err != nil {
				return fmt.Errorf("push %s: object %s: %w", opts.Repo, o.OID, err)
			}
			defer fr.Close()
			if fr.Size() != o.Size {
				return fmt.Errorf("push %s: object %s: stored file has %d bytes, not %d", opts.Repo, o.OID, fr.Size(), o.Size)
			}
			if err := c.UploadObject(gctx, opts.Repo, o.OID, o, fr); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			res.UploadedObjects++
			res.UploadedBytes += o.Size
			done += o.Size
			if opts.Progress != nil {
				opts.Progress(done, total)
			}
			return nil
		})
	}
	return g.Wait()
}

// readSample returns the first 512 bytes of a stored file.
func readSample(s *store.Store, f store.CommitFile) ([]byte, error) {
	n := min(int64(f.File.Size), 512)
	if n == 0 {
		return nil, nil
	}
	fr, err := s.OpenFile(f.ID)
	if err != nil {
		return nil, fmt.Errorf("push: %s: %w", f.Path, err)
	}
	defer fr.Close()
	buf := make([]byte, n)
	if _, err := fr.ReadAt(buf, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("push: %s: %w", f.Path, err)
	}
	return buf, nil
}

// readAll reads a (small) stored file whole.
func readAll(s *store.Store, f store.CommitFile) ([]byte, error) {
	fr, err := s.OpenFile(f.ID)
	if err != nil {
		return nil, fmt.Errorf("push: %s: %w", f.Path, err)
	}
	defer fr.Close()
	buf := make([]byte, fr.Size())
	if _, err := fr.ReadAt(buf, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("push: %s: %w", f.Path, err)
	}
	return buf, nil
}
