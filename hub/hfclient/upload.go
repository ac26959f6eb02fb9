package hfclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"
)

// Batch sizes of preupload and LFS batch requests, as huggingface_hub sends
// them (§4.3, §4.4).
const (
	preuploadBatch = 256
	lfsBatch       = 256
)

const lfsContentType = "application/vnd.git-lfs+json"

// CreateRepo creates the model repo (POST /api/repos/create, §4.1). An
// existing repo is not an error (exist_ok): created is false then. A 401 or
// 403 for a repo that exists and the token may read is not an error either
// (Python's exist_ok does the same). It returns the repo's URL as the server
// reports it.
func (c *Client) CreateRepo(ctx context.Context, repo string, private bool) (repoURL string, created bool, err error) {
	if err := checkRepo(repo); err != nil {
		return "", false, err
	}
	ns, name, _ := strings.Cut(repo, "/")
	body, _ := json.Marshal(map[string]any{"name": name, "organization": ns, "private": private})
	resp, err := c.do(ctx, call{
		op: "create repo", repo: repo, method: http.MethodPost, url: c.base + "/api/repos/create",
		header: http.Header{"Content-Type": {"application/json"}}, body: jsonBody(body), length: int64(len(body)),
		auth: true, idempotent: true,
		accept: func(s int) bool { return s == http.StatusOK || s == http.StatusCreated || s == http.StatusConflict },
	})
	var he *Error
	if errors.As(err, &he) && (he.Status == http.StatusUnauthorized || he.Status == http.StatusForbidden) {
		if _, ierr := c.RepoInfo(ctx, repo, "", false); ierr == nil {
			return c.base + "/" + repo, false, nil
		}
	}
	if err != nil {
		return "", false, err
	}
	data, err := readJSON(resp, "create repo", repo)
	if err != nil {
		return "", false, err
	}
	u := parseCreateRepo(data)
	if u == "" {
		u = c.base + "/" + repo
	}
	return u, resp.StatusCode != http.StatusConflict, nil
}

// CreateBranch creates branch at the head of the default branch (POST
// /api/models/{repo}/branch/{branch}, §4.2). An existing branch is not an
// error.
func (c *Client) CreateBranch(ctx context.Context, repo, branch string) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	body := []byte("{}")
	resp, err := c.do(ctx, call{
		op: "create branch", repo: repo, method: http.MethodPost, url: c.apiURL(repo, "branch", escapeRev(branch)),
		header: http.Header{"Content-Type": {"application/json"}}, body: jsonBody(body), length: int64(len(body)),
		auth: true, idempotent: true,
		accept: func(s int) bool { return s >= 200 && s < 300 || s == http.StatusConflict },
	})
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// PreuploadFile describes one file to upload: its path, size and first bytes
// (at most 512 are sent), from which the server picks LFS or inline.
type PreuploadFile struct {
	Path   string
	Size   int64
	Sample []byte
}

// Preupload asks how each file must be uploaded to revision rev (POST
// /api/models/{repo}/preupload/{rev}, §4.3), in batches of 256. Every path
// gets an answer.
func (c *Client) Preupload(ctx context.Context, repo, rev string, files []PreuploadFile) (map[string]UploadMode, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	out := make(map[string]UploadMode, len(files))
	for start := 0; start < len(files); start += preuploadBatch {
		batch := files[start:min(start+preuploadBatch, len(files))]
		type fileJSON struct {
			Path   string `json:"path"`
			Size   int64  `json:"size"`
			Sample string `json:"sample"`
		}
		req := struct {
			Files []fileJSON `json:"files"`
		}{}
		asked := make([]string, len(batch))
		for i, f := range batch {
			sample := f.Sample
			if len(sample) > 512 {
				sample = sample[:512]
			}
			req.Files = append(req.Files, fileJSON{Path: f.Path, Size: f.Size, Sample: base64.StdEncoding.EncodeToString(sample)})
			asked[i] = f.Path
		}
		body, _ := json.Marshal(req)
		u := c.apiURL(repo, "preupload", escapeRev(rev))
		resp, err := c.do(ctx, call{
			op: "preupload", repo: repo, method: http.MethodPost, url: u,
			header: http.Header{"Content-Type": {"application/json"}}, body: jsonBody(body), length: int64(len(body)),
			auth: true, idempotent: true,
		})
		if err != nil {
			return nil, err
		}
		data, err := readJSON(resp, "preupload", repo)
		if err != nil {
			return nil, err
		}
		modes, err := parsePreupload(data, asked)
		if err != nil {
			return nil, &Error{Op: "preupload", Method: http.MethodPost, URL: u, Repo: repo, Err: err}
		}
		for p, m := range modes {
			out[p] = m
		}
	}
	return out, nil
}

// LFSBatch asks where to upload objects (oid → size) for revision rev (POST
// {repo}.git/info/lfs/objects/batch, §4.4), offering only the basic and
// multipart transfers, in batches of 256. Objects the server has come back
// without an Upload action.
func (c *Client) LFSBatch(ctx context.Context, repo, rev string, objects map[string]int64) ([]LFSObject, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	oids := make([]string, 0, len(objects))
	for oid := range objects {
		oids = append(oids, oid)
	}
	sort.Strings(oids)
	var out []LFSObject
	for start := 0; start < len(oids); start += lfsBatch {
		batch := oids[start:min(start+lfsBatch, len(oids))]
		type objJSON struct {
			OID  string `json:"oid"`
			Size int64  `json:"size"`
		}
		req := struct {
			Operation string    `json:"operation"`
			Transfers []string  `json:"transfers"`
			Objects   []objJSON `json:"objects"`
			HashAlgo  string    `json:"hash_algo"`
			Ref       struct {
				Name string `json:"name"`
			} `json:"ref"`
		}{Operation: "upload", Transfers: []string{"basic", "multipart"}, HashAlgo: "sha256"}
		req.Ref.Name = rev
		asked := map[string]int64{}
		for _, oid := range batch {
			req.Objects = append(req.Objects, objJSON{OID: oid, Size: objects[oid]})
			asked[oid] = objects[oid]
		}
		body, _ := json.Marshal(req)
		u := c.base + "/" + repo + ".git/info/lfs/objects/batch"
		resp, err := c.do(ctx, call{
			op: "LFS batch", repo: repo, method: http.MethodPost, url: u,
			header: http.Header{"Content-Type": {lfsContentType}, "Accept": {lfsContentType}},
			body:   jsonBody(body), length: int64(len(body)), auth: true, idempotent: true,
		})
		if err != nil {
			return nil, err
		}
		data, err := readJSON(resp, "LFS batch", repo)
		if err != nil {
			return nil, err
		}
		objs, err := parseBatch(data, asked)
		if err != nil {
			return nil, &Error{Op: "LFS batch", Method: http.MethodPost, URL: u, Repo: repo, Err: err}
		}
		out = append(out, objs...)
	}
	return out, nil
}

// UploadObject sends an object's content, read from r (obj.Size bytes at
// offset 0), where obj.Upload says: one PUT to its href (basic), or, when its
// header has chunk_size, one PUT per part URL ("1".."N", each answering with
// an ETag) run on up to Connections at once, then a completion POST with the
// part ETags to href (multipart). Neither carries the token: the URLs
// authorise themselves (§4.4). Then the verify action, if any, is POSTed (with
// the token, to the endpoint's host only). Nothing is sent for an object
// without an Upload action. label names the file in errors.
func (c *Client) UploadObject(ctx context.Context, repo, label string, obj LFSObject, r io.ReaderAt) error {
	if obj.Upload == nil {
		return nil
	}
	var err error
	if cs, ok := obj.Upload.Header["chunk_size"]; ok {
		err = c.uploadMultipart(ctx, repo, label, obj, cs, r)
	} else {
		err = c.put(ctx, repo, label, obj.Upload.Href, r, 0, obj.Size, nil)
	}
	if err != nil {
		return err
	}
	if obj.Verify == nil {
		return nil
	}
	body, _ := json.Marshal(map[string]any{"oid": obj.OID, "size": obj.Size})
	resp, err := c.do(ctx, call{
		op: "LFS verify", repo: repo, path: label, method: http.MethodPost, url: obj.Verify.Href,
		header: http.Header{"Content-Type": {lfsContentType}, "Accept": {lfsContentType}},
		body:   jsonBody(body), length: int64(len(body)), auth: true, idempotent: true,
	})
	if err != nil {
		var he *Error
		if errors.As(err, &he) && he.Status == http.StatusNotFound {
			he.Err = ErrHashMismatch
		}
		return err
	}
	resp.Body.Close()
	return nil
}

// put PUTs n bytes of r at off to href, without the token, and returns the
// response's ETag in etag when it is not nil.
func (c *Client) put(ctx context.Context, repo, label, href string, r io.ReaderAt, off, n int64, etag *string) error {
	if err := c.conns.Acquire(ctx, 1); err != nil {
		return err
	}
	defer c.conns.Release(1)
	resp, err := c.do(ctx, call{
		op: "upload", repo: repo, path: label, method: http.MethodPut, url: href,
		body: func() (io.Reader, error) {
			return &countingSection{r: io.NewSectionReader(r, off, n), n: &c.uploaded}, nil
		},
		length: n, idempotent: true,
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	if etag != nil {
		*etag = resp.Header.Get("ETag")
		if *etag == "" {
			return &Error{Op: "upload", Method: http.MethodPut, URL: redactURL(href), Repo: repo, Path: label, Status: resp.StatusCode,
				Err: fmt.Errorf("%w: a part upload answered without an ETag", ErrProtocol)}
		}
	}
	return nil
}

// countingSection counts the bytes a request body sends.
type countingSection struct {
	r io.Reader
	n interface{ Add(int64) int64 }
}

func (s *countingSection) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n.Add(int64(n))
	return n, err
}

func (c *Client) uploadMultipart(ctx context.Context, repo, label string, obj LFSObject, chunkSize string, r io.ReaderAt) error {
	fail := func(format string, args ...any) error {
		return &Error{Op: "upload", Repo: repo, Path: label, Err: fmt.Errorf("%w: multipart upload: %s", ErrProtocol, fmt.Sprintf(format, args...))}
	}
	cs, err := strconv.ParseInt(strings.TrimSpace(chunkSize), 10, 64)
	if err != nil || cs <= 0 {
		return fail("chunk_size %q", chunkSize)
	}
	type partURL struct {
		n   int
		url string
	}
	var parts []partURL
	for k, v := range obj.Upload.Header {
		if k == "" || strings.Trim(k, "0123456789") != "" {
			continue
		}
		n, err := strconv.Atoi(k)
		if err != nil || n < 1 {
			return fail("part number %q", k)
		}
		parts = append(parts, partURL{n, v})
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].n < parts[j].n })
	want := (obj.Size + cs - 1) / cs
	if int64(len(parts)) != want {
		return fail("%d part URLs for %d bytes in parts of %d (want %d)", len(parts), obj.Size, cs, want)
	}
	for i, p := range parts {
		if p.n != i+1 {
			return fail("part numbers are not 1..%d", want)
		}
	}
	etags := make([]string, len(parts))
	g, gctx := errgroup.WithContext(ctx)
	for i, p := range parts {
		off := int64(i) * cs
		g.Go(func() error {
			return c.put(gctx, repo, label, p.url, r, off, min(cs, obj.Size-off), &etags[i])
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	type partJSON struct {
		PartNumber int    `json:"partNumber"`
		ETag       string `json:"etag"`
	}
	req := struct {
		OID   string     `json:"oid"`
		Parts []partJSON `json:"parts"`
	}{OID: obj.OID}
	for i, e := range etags {
		req.Parts = append(req.Parts, partJSON{PartNumber: i + 1, ETag: e})
	}
	body, _ := json.Marshal(req)
	resp, err := c.do(ctx, call{
		op: "upload completion", repo: repo, path: label, method: http.MethodPost, url: obj.Upload.Href,
		header: http.Header{"Content-Type": {lfsContentType}, "Accept": {lfsContentType}},
		body:   jsonBody(body), length: int64(len(body)), idempotent: true,
	})
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// CommitOp is one operation of a commit: an LFS file (OID, Size), an inline
// file (Content), or a deletion.
type CommitOp struct {
	Path    string
	LFS     bool
	OID     string // SHA-256, for LFS files
	Size    int64
	Content []byte // inline files
	Delete  bool
}

// CommitRequest is one commit.
type CommitRequest struct {
	Summary, Description string
	// ParentCommit, when set, makes the commit fail (412) unless the branch
	// still points to it.
	ParentCommit string
	Ops          []CommitOp
}

// ndjson builds the commit body (§4.5): a header line, then one line per
// operation, each ending with "\n" as Python's do.
func (req CommitRequest) ndjson() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	hdr := map[string]any{"summary": req.Summary, "description": req.Description}
	if req.ParentCommit != "" {
		hdr["parentCommit"] = req.ParentCommit
	}
	if err := enc.Encode(map[string]any{"key": "header", "value": hdr}); err != nil {
		return nil, err
	}
	for _, op := range req.Ops {
		var line map[string]any
		switch {
		case op.Delete:
			line = map[string]any{"key": "deletedFile", "value": map[string]any{"path": op.Path}}
		case op.LFS:
			line = map[string]any{"key": "lfsFile", "value": map[string]any{"path": op.Path, "algo": "sha256", "oid": op.OID, "size": op.Size}}
		default:
			line = map[string]any{"key": "file", "value": map[string]any{"path": op.Path, "content": base64.StdEncoding.EncodeToString(op.Content), "encoding": "base64"}}
		}
		if err := enc.Encode(line); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// Commit makes one commit on branch rev (POST /api/models/{repo}/commit/{rev}
// with an NDJSON body, §4.5). LFS objects must have been uploaded. It is
// retried only when the server says it did not process it (429, 503): a
// commit is not idempotent.
func (c *Client) Commit(ctx context.Context, repo, rev string, req CommitRequest) (*CommitInfo, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	body, err := req.ndjson()
	if err != nil {
		return nil, fmt.Errorf("hf: commit %s: %w", repo, err)
	}
	u := c.apiURL(repo, "commit", escapeRev(rev))
	resp, err := c.do(ctx, call{
		op: "commit", repo: repo, method: http.MethodPost, url: u,
		header: http.Header{"Content-Type": {"application/x-ndjson"}}, body: jsonBody(body), length: int64(len(body)),
		auth: true,
	})
	if err != nil {
		return nil, err
	}
	data, err := readJSON(resp, "commit", repo)
	if err != nil {
		return nil, err
	}
	info, err := parseCommit(data)
	if err != nil {
		return nil, &Error{Op: "commit", Method: http.MethodPost, URL: u, Repo: repo, Err: err}
	}
	return info, nil
}
