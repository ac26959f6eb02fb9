package hub

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// readBody reads a request body of at most limit bytes, answering 413 for a
// larger one and 400 for a broken one.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		failBody(w, r, err)
		return nil, false
	}
	return body, true
}

// failBody answers a failure to read a request body.
func failBody(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeError(w, http.StatusRequestEntityTooLarge, "", "", fmt.Sprintf("Request body too large (limit %d bytes)", mbe.Limit))
		return
	}
	note(r, slog.String("body_error", err.Error()))
	writeError(w, http.StatusBadRequest, "", "", "Reading the request body failed")
}

// writeJSONType is writeJSON with another Content-Type.
func writeJSONType(w http.ResponseWriter, status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// baseURL is the URL clients reach the server at: Options.PublicURL, or the
// request's scheme and Host (Python requires the repo url it gets back to be
// on its HF_ENDPOINT host, §4.1). A Host with odd characters falls back to
// localhost rather than being echoed.
func (h *Handler) baseURL(r *http.Request) string {
	if h.publicURL != "" {
		return h.publicURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-:[]_", c) >= 0) {
			host = "localhost"
			break
		}
	}
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host
}

// repoExists answers 404 RepoNotFound unless repo exists. A repo without a
// main branch exists.
func (h *Handler) repoExists(w http.ResponseWriter, r *http.Request, repo string) bool {
	_, err := h.repos.Resolve(repo, defaultBranch)
	if err == nil || errors.Is(err, ErrRevisionNotFound) {
		return true
	}
	failRepos(w, r, err, repo, defaultBranch)
	return false
}

// failWrite answers an error of a Writer call (or of storing an upload)
// with the status the Hub uses; see Writer for the mapping.
func (h *Handler) failWrite(w http.ResponseWriter, r *http.Request, err error, repo, rev string) {
	var be *bodyError
	var mbe *http.MaxBytesError
	var mm *ObjectMismatchError
	switch {
	case errors.As(err, &mbe):
		failBody(w, r, mbe)
	case errors.As(err, &be):
		failBody(w, r, be)
	case errors.As(err, &mm):
		writeError(w, http.StatusBadRequest, "", "", "Uploaded content does not match its oid and size: "+strings.TrimPrefix(mm.Error(), "hub: "))
	case errors.Is(err, ErrObjectMismatch):
		writeError(w, http.StatusBadRequest, "", "", "Uploaded content does not match its oid and size")
	case errors.Is(err, ErrRepoExists):
		writeError(w, http.StatusConflict, "", "", "Repository already exists: "+repo)
	case errors.Is(err, ErrRefExists):
		writeError(w, http.StatusConflict, "", "", "Reference already exists: "+rev)
	case errors.Is(err, ErrProtectedRef):
		writeError(w, http.StatusForbidden, "", msgForbidden, "Forbidden: "+rev+" cannot be deleted")
	case errors.Is(err, ErrParentMismatch):
		writeError(w, http.StatusPreconditionFailed, "", "", "The parent commit is not the head of "+rev+" (it moved since): pull and retry")
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, "", "", "Concurrent updates of "+rev+": retry the commit")
	case errors.Is(err, ErrPathConflict):
		writeError(w, http.StatusConflict, "", "", "The commit would make a path both a file and a directory")
	case errors.Is(err, ErrObjectNotFound):
		writeError(w, http.StatusBadRequest, "", "", "An LFS object of the commit was not uploaded")
	case errors.Is(err, ErrEntryNotFound):
		// Python adds a hint when it sees this text (§4.5).
		writeError(w, http.StatusNotFound, codeEntryNotFound, msgEntryNotFound, "A file with this name doesn't exist")
	default:
		failRepos(w, r, err, repo, rev)
	}
}

// requestRevision decodes a revision sent as the rest of the path (one
// %2F-encoded segment, or raw segments) and maps "HEAD" to main.
func requestRevision(segs []string) (string, bool) {
	rev, ok := requestName(segs)
	if rev == "HEAD" {
		rev = defaultBranch
	}
	return rev, ok
}

// requestName decodes a branch or tag name sent as the rest of the path.
func requestName(segs []string) (string, bool) {
	d, ok := unescapeSegments(segs)
	if !ok {
		return "", false
	}
	return strings.Join(d, "/"), true
}

// author is the name to record as a commit's author.
func author(r *http.Request) string {
	if id, ok := IdentityFrom(r.Context()); ok {
		return id.Name
	}
	return ""
}

// createRepoRequest is the body of POST /api/repos/create (§4.1) and
// DELETE /api/repos/delete. Unknown fields (space settings, license,
// region, …) are ignored.
type createRepoRequest struct {
	Name         string  `json:"name"`
	Organization *string `json:"organization"`
	Type         *string `json:"type"`
	// Private (PY ≤ 1.7) and Visibility (later) are accepted and ignored:
	// access is per namespace (token grants), not per repo.
	Private    *bool  `json:"private"`
	Visibility string `json:"visibility"`
	// Files are JS createRepo's initial files.
	Files []inlineFile `json:"files"`
}

type inlineFile struct {
	Path     string `json:"path"`
	Content  string `json:"content"`
	Encoding string `json:"encoding"`
}

// errNoNamespace: a create or delete body without organization, from a
// request without identity.
var errNoNamespace = errors.New("no namespace: set organization, or authenticate to create under your user name")

// parseCreateRepo decodes a create or delete body and returns the repo id,
// with defaultNS (the caller's user name) as namespace when the body names
// no organization.
func parseCreateRepo(body []byte, defaultNS string) (string, createRepoRequest, error) {
	var req createRepoRequest
	if err := decodeJSON(body, &req); err != nil {
		return "", req, err
	}
	if req.Type != nil && *req.Type != "" && *req.Type != "model" {
		return "", req, fmt.Errorf("only model repositories are supported, not %q", *req.Type)
	}
	ns := defaultNS
	if req.Organization != nil && *req.Organization != "" {
		ns = *req.Organization
	}
	name := req.Name
	if o, n, ok := strings.Cut(name, "/"); ok && (req.Organization == nil || *req.Organization == "" || *req.Organization == o) {
		ns, name = o, n // a full id in "name"
	}
	if ns == "" {
		return "", req, errNoNamespace
	}
	repo := ns + "/" + name
	if !ValidRepoID(repo) {
		return "", req, fmt.Errorf("invalid repo id %q: use ns/name of [A-Za-z0-9_.-] (no -- or .., at most 96 characters)", repo)
	}
	if len(req.Files) > maxBatchObjects {
		return "", req, fmt.Errorf("at most %d initial files", maxBatchObjects)
	}
	for _, f := range req.Files {
		if !ValidPath(f.Path) {
			return "", req, fmt.Errorf("invalid file path %q", f.Path)
		}
	}
	return repo, req, nil
}

// decodeContent decodes an inline file's content: base64 (the default) or
// utf-8 text.
func decodeContent(content, encoding string) ([]byte, error) {
	switch strings.ToLower(encoding) {
	case "", "base64":
		b, err := base64.StdEncoding.DecodeString(content)
		if err != nil {
			return nil, fmt.Errorf("invalid base64 content: %w", err)
		}
		return b, nil
	case "utf-8", "utf8":
		return []byte(content), nil
	}
	return nil, fmt.Errorf("unknown encoding %q (base64 or utf-8)", encoding)
}

// storeInline stores inline file content as an object for repo (unless the
// repo may use it already) and returns its oid.
func (h *Handler) storeInline(r *http.Request, repo string, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	oid := hex.EncodeToString(sum[:])
	if size, err := h.writer.StatObject(r.Context(), repo, oid); err == nil && size == int64(len(data)) {
		h.metrics.objects.WithLabelValues("present").Inc()
		return oid, nil
	} else if err != nil && !errors.Is(err, ErrObjectNotFound) {
		return "", fmt.Errorf("stat object %s: %w", oid, err)
	}
	return oid, h.storeObject(r, repo, oid, int64(len(data)), bytes.NewReader(data))
}

// createRepo answers POST /api/repos/create. The new repo's main branch
// starts with a commit holding the default .gitattributes (and JS's initial
// files), as on the Hub. An existing repo is a 409 whose body carries url,
// which Python reads with exist_ok=True (§4.1).
func (h *Handler) createRepo(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxJSONBody+int64(h.maxInlineFile)*4/3)
	if !ok {
		return
	}
	repo, req, err := parseCreateRepo(body, author(r))
	if errors.Is(err, errNoNamespace) {
		if _, ok := IdentityFrom(r.Context()); !ok {
			writeError(w, http.StatusUnauthorized, "", msgAuthRequired, "Authentication required: send Authorization: Bearer <token>")
			return
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "", "", "Invalid create request: "+err.Error())
		return
	}
	note(r, slog.String("repo", repo))
	ns, _, _ := strings.Cut(repo, "/")
	if !h.authorizeNamespace(w, r, ns) {
		return
	}
	url := h.baseURL(r) + "/" + repo
	exists := func() {
		writeJSON(w, http.StatusConflict, map[string]string{"error": "You already created this model repo: " + repo, "url": url})
	}
	if _, err := h.repos.Resolve(repo, defaultBranch); !errors.Is(err, ErrRepoNotFound) {
		if err != nil && !errors.Is(err, ErrRevisionNotFound) {
			failRepos(w, r, err, repo, defaultBranch)
			return
		}
		exists()
		return
	}
	files := map[string][]byte{".gitattributes": []byte(defaultGitAttributes)}
	for _, f := range req.Files {
		data, err := decodeContent(f.Content, f.Encoding)
		if err == nil && int64(len(data)) > h.maxInlineFile {
			err = fmt.Errorf("larger than %d bytes", h.maxInlineFile)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "", "", "Invalid create request: file "+f.Path+": "+err.Error())
			return
		}
		files[f.Path] = data
	}
	ops := make([]Operation, 0, len(files))
	for p, data := range files {
		oid, err := h.storeInline(r, repo, data)
		if err != nil {
			h.failWrite(w, r, err, repo, "")
			return
		}
		ops = append(ops, Operation{Kind: OpAdd, Path: p, OID: oid, Size: int64(len(data))})
	}
	c, err := h.writer.CreateRepo(r.Context(), CreateRepoRequest{Repo: repo, Files: ops, Summary: "initial commit", Author: author(r)})
	if errors.Is(err, ErrRepoExists) {
		exists()
		return
	}
	if err != nil {
		h.failWrite(w, r, err, repo, "")
		return
	}
	note(r, slog.String("commit", c.ID))
	writeJSON(w, http.StatusOK, map[string]string{"url": url, "name": repo, "id": objectID(repo)})
}

// deleteRepo answers DELETE /api/repos/delete (same body as create).
func (h *Handler) deleteRepo(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxJSONBody)
	if !ok {
		return
	}
	repo, _, err := parseCreateRepo(body, author(r))
	if err != nil {
		writeError(w, http.StatusBadRequest, "", "", "Invalid delete request: "+err.Error())
		return
	}
	note(r, slog.String("repo", repo))
	if !h.authorizeRepo(w, r, repo, RoleWrite) {
		return
	}
	if err := h.writer.DeleteRepo(r.Context(), repo); err != nil {
		h.failWrite(w, r, err, repo, "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// branchRequest is the body of POST /api/models/{repo}/branch/{branch}
// (§4.2): Python sends startingPoint, JS also emptyBranch and overwrite.
type branchRequest struct {
	StartingPoint *string `json:"startingPoint"`
	EmptyBranch   bool    `json:"emptyBranch"`
	Overwrite     bool    `json:"overwrite"`
}

// branch answers POST and DELETE /api/models/{repo}/branch/{branch}.
func (h *Handler) branch(w http.ResponseWriter, r *http.Request, repo string, rest []string) {
	name, ok := requestName(rest)
	if !ok || name == "" {
		writeError(w, http.StatusBadRequest, "", "", "Invalid branch name")
		return
	}
	note(r, slog.String("repo", repo), slog.String("revision", name))
	if r.Method == http.MethodDelete {
		if err := h.writer.DeleteBranch(r.Context(), repo, name); err != nil {
			h.failWrite(w, r, err, repo, name)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	if !validRefName(name) {
		writeError(w, http.StatusBadRequest, "", "", "Invalid branch name: "+name)
		return
	}
	body, ok := readBody(w, r, maxJSONBody)
	if !ok {
		return
	}
	var req branchRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeJSON(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, "", "", "Invalid branch request: "+err.Error())
			return
		}
	}
	from := ""
	if req.StartingPoint != nil {
		from = *req.StartingPoint
		if from == "HEAD" {
			from = defaultBranch
		}
	}
	c, err := h.writer.CreateBranch(r.Context(), BranchRequest{Repo: repo, Branch: name, StartingPoint: from, Empty: req.EmptyBranch, Overwrite: req.Overwrite})
	if err != nil {
		h.failWrite(w, r, err, repo, name)
		return
	}
	note(r, slog.String("commit", c.ID))
	writeJSON(w, http.StatusOK, map[string]any{})
}

// tagRequest is the body of POST /api/models/{repo}/tag/{revision}.
type tagRequest struct {
	Tag     string `json:"tag"`
	Message string `json:"message"`
}

// tag answers POST /api/models/{repo}/tag/{revision} (create a tag at the
// revision) and DELETE /api/models/{repo}/tag/{tag}.
func (h *Handler) tag(w http.ResponseWriter, r *http.Request, repo string, rest []string) {
	name, ok := requestName(rest) // a tag to delete, or the revision to tag
	if ok && name == "HEAD" && r.Method == http.MethodPost {
		name = defaultBranch
	}
	if !ok || name == "" {
		writeError(w, http.StatusBadRequest, "", "", "Invalid revision")
		return
	}
	note(r, slog.String("repo", repo), slog.String("revision", name))
	if r.Method == http.MethodDelete {
		if err := h.writer.DeleteTag(r.Context(), repo, name); err != nil {
			h.failWrite(w, r, err, repo, name)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{})
		return
	}
	body, ok := readBody(w, r, maxJSONBody)
	if !ok {
		return
	}
	var req tagRequest
	if err := decodeJSON(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "", "", "Invalid tag request: "+err.Error())
		return
	}
	if !validRefName(req.Tag) {
		writeError(w, http.StatusBadRequest, "", "", "Invalid tag name: "+req.Tag)
		return
	}
	note(r, slog.String("tag", req.Tag))
	c, err := h.writer.CreateTag(r.Context(), repo, req.Tag, name, req.Message)
	if err != nil {
		h.failWrite(w, r, err, repo, req.Tag)
		return
	}
	note(r, slog.String("commit", c.ID))
	writeJSON(w, http.StatusOK, map[string]any{})
}

// preuploadRequest is the body of POST /api/models/{repo}/preupload/{rev}
// (§4.3).
type preuploadRequest struct {
	Files []struct {
		Path   string `json:"path"`
		Size   int64  `json:"size"`
		Sample string `json:"sample"`
	} `json:"files"`
	GitIgnore     *string `json:"gitIgnore"`
	GitAttributes *string `json:"gitAttributes"`
}

type preuploadFile struct {
	Path         string  `json:"path"`
	UploadMode   string  `json:"uploadMode"`
	ShouldIgnore bool    `json:"shouldIgnore"`
	OID          *string `json:"oid"`
}

// parsePreupload decodes and checks a preupload body; the samples are
// returned decoded.
func parsePreupload(body []byte) (preuploadRequest, [][]byte, error) {
	var req preuploadRequest
	if err := decodeJSON(body, &req); err != nil {
		return req, nil, err
	}
	if len(req.Files) > maxBatchObjects {
		return req, nil, fmt.Errorf("at most %d files per request, got %d", maxBatchObjects, len(req.Files))
	}
	samples := make([][]byte, len(req.Files))
	for i, f := range req.Files {
		if !ValidPath(f.Path) {
			return req, nil, fmt.Errorf("invalid path %q", f.Path)
		}
		if f.Size < 0 {
			return req, nil, fmt.Errorf("%s: negative size", f.Path)
		}
		s, err := base64.StdEncoding.DecodeString(f.Sample)
		if err != nil || len(s) > 1024 {
			return req, nil, fmt.Errorf("%s: sample must be base64 of at most 512 bytes", f.Path)
		}
		samples[i] = s
	}
	return req, samples, nil
}

// lfsThreshold: the Hub refuses non-LFS files over 10 MiB (§4.3).
const lfsThreshold = 10 << 20

// uploadMode decides regular or lfs for one file: LFS-tracked by the
// .gitattributes patterns, larger than 10 MiB, or binary (a NUL byte or
// invalid UTF-8 in its first bytes) is lfs; an empty file is regular
// (Python forces that anyway).
func uploadMode(attrs []gitPattern, path string, size int64, sample []byte) string {
	if size == 0 {
		return "regular"
	}
	if size > lfsThreshold || lfsTracked(attrs, path) || bytes.IndexByte(sample, 0) >= 0 {
		return "lfs"
	}
	valid := sample
	if int64(len(sample)) < size {
		// The sample may end inside a multi-byte character.
		for i := 0; i < utf8.UTFMax-1 && len(valid) > 0 && !utf8.Valid(valid); i++ {
			valid = valid[:len(valid)-1]
		}
	}
	if !utf8.Valid(valid) {
		return "lfs"
	}
	return "regular"
}

// uploadsThroughXet reports whether a User-Agent is huggingface_hub 1.20 or
// later ("…; hf_hub/1.20.0; python/…"), which sends every "lfs" file
// through Xet when hf_xet is installed, without asking the server (§5.2).
func uploadsThroughXet(ua string) bool {
	for part := range strings.SplitSeq(ua, ";") {
		v, ok := strings.CutPrefix(strings.TrimSpace(part), "hf_hub/")
		if !ok {
			continue
		}
		var major, minor int
		if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
			return false
		}
		return major > 1 || major == 1 && minor >= 20
	}
	return false
}

// maxPatternFile bounds the .gitattributes and .gitignore read from a
// revision.
const maxPatternFile = 1 << 20

// preupload answers POST /api/models/{repo}/preupload/{rev}: for every file
// (all echoed back, in order, as Python looks each up by path), its upload
// mode, whether .gitignore excludes it, and the oid of the file at that
// path on the revision (SHA-256 for LFS files, git blob SHA-1 otherwise),
// so that Python skips unchanged files.
func (h *Handler) preupload(w http.ResponseWriter, r *http.Request, repo string, rest []string) {
	rev, ok := requestRevision(rest)
	if !ok {
		writeError(w, http.StatusBadRequest, "", "", "Malformed revision")
		return
	}
	note(r, slog.String("repo", repo), slog.String("revision", rev))
	body, ok := readBody(w, r, maxBatchBody)
	if !ok {
		return
	}
	req, samples, err := parsePreupload(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "", "", "Invalid preupload request: "+err.Error())
		return
	}
	c, s, ok := h.snapshotAt(w, r, repo, rev)
	if !ok {
		return
	}
	attrsText, ignoreText := req.GitAttributes, req.GitIgnore
	if attrsText == nil {
		t, err := h.readSmallFile(c.ID, s, ".gitattributes")
		if err != nil {
			failRepos(w, r, err, repo, rev)
			return
		}
		attrsText = &t
	}
	if ignoreText == nil {
		t, err := h.readSmallFile(c.ID, s, ".gitignore")
		if err != nil {
			failRepos(w, r, err, repo, rev)
			return
		}
		ignoreText = &t
	}
	attrs := parseGitPatterns(*attrsText, true)
	ignore := parseGitPatterns(*ignoreText, false)
	inline := h.inlineForXet && uploadsThroughXet(r.UserAgent())
	if inline {
		note(r, slog.Bool("inline_for_xet", true))
	}
	out := make([]preuploadFile, 0, len(req.Files))
	for i, f := range req.Files {
		pf := preuploadFile{
			Path:         f.Path,
			UploadMode:   uploadMode(attrs, f.Path, f.Size, samples[i]),
			ShouldIgnore: gitIgnored(ignore, f.Path),
		}
		if inline && f.Size <= h.maxInlineFile {
			pf.UploadMode = "regular"
		}
		if n, ok := s.nodes[f.Path]; ok && !n.dir {
			oid := n.etag // SHA-256 for LFS files, blob SHA-1 otherwise
			pf.OID = &oid
		}
		out = append(out, pf)
	}
	w.Header().Set("X-Repo-Commit", c.ID)
	writeJSON(w, http.StatusOK, map[string]any{"files": out, "commitOid": c.ID})
}

// readSmallFile returns the content of a small file of a commit, "" if the
// commit has no such file or it is too large to be a pattern file.
func (h *Handler) readSmallFile(commit string, s *snapshot, path string) (string, error) {
	n, ok := s.nodes[path]
	if !ok || n.dir || n.info.Size > maxPatternFile {
		return "", nil
	}
	f, err := h.repos.Open(commit, path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	buf := make([]byte, n.info.Size)
	if _, err := f.ReadAt(buf, 0); err != nil && err != io.EOF {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return string(buf), nil
}

// validateYAML answers POST /api/validate-yaml, which Python calls before
// committing a README.md and whose answer it parses as JSON before looking
// at the status (§3.6). It checks only that a YAML front-matter block that
// opens with "---" is closed; it does not parse YAML.
func (h *Handler) validateYAML(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, maxReadmeBody)
	if !ok {
		return
	}
	var req struct {
		Content  string `json:"content"`
		RepoType string `json:"repoType"`
	}
	if err := decodeJSON(body, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []map[string]string{{"message": err.Error()}}, "warnings": []any{}})
		return
	}
	if msg := frontMatterError(req.Content); msg != "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"errors": []map[string]string{{"message": msg}}, "warnings": []any{}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"errors": []any{}, "warnings": []any{}})
}

// frontMatterError reports an unterminated metadata block of a README.
func frontMatterError(readme string) string {
	lines := strings.Split(strings.ReplaceAll(readme, "\r\n", "\n"), "\n")
	if len(lines) == 0 || strings.TrimRight(lines[0], " \t") != "---" {
		return ""
	}
	for _, l := range lines[1:] {
		if t := strings.TrimRight(l, " \t"); t == "---" || t == "..." {
			return ""
		}
	}
	return "README.md metadata block starts with --- but is never closed"
}
