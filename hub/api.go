package hub

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// hubTime formats a timestamp the way Python's strict parser accepts: UTC
// with a trailing Z (a "+00:00" offset raises ValueError, §1.7).
func hubTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// queryBool parses a boolean query parameter: PY0 sends True/False, PY1 and
// JS true/false, some calls 1 (§1.4).
func queryBool(v string) bool {
	return strings.EqualFold(v, "true") || v == "1"
}

// objectID is an opaque, stable "_id" for a repo (JS returns it as the
// model's id; nothing parses it).
func objectID(repo string) string {
	sum := sha1.Sum([]byte(repo))
	return hex.EncodeToString(sum[:12])
}

type siblingJSON struct {
	RFilename string      `json:"rfilename"`
	Size      *int64      `json:"size,omitempty"`
	BlobID    string      `json:"blobId,omitempty"`
	LFS       *siblingLFS `json:"lfs,omitempty"`
}

// siblingLFS uses "sha256" where tree entries use "oid" (§3.1); Python
// requires all three keys when lfs is present.
type siblingLFS struct {
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	PointerSize int    `json:"pointerSize"`
}

// modelInfoJSON is the body of GET /api/models/{repo}[/revision/{rev}]
// (§3.1). Fields the Hub has but heft cannot know are constant.
type modelInfoJSON struct {
	ObjectID     string        `json:"_id"`
	ID           string        `json:"id"`
	ModelID      string        `json:"modelId"`
	Author       string        `json:"author"`
	SHA          string        `json:"sha,omitempty"`
	LastModified string        `json:"lastModified,omitempty"`
	Private      bool          `json:"private"`
	Gated        bool          `json:"gated"`
	Disabled     bool          `json:"disabled"`
	Downloads    int           `json:"downloads"`
	Likes        int           `json:"likes"`
	Tags         []string      `json:"tags"`
	PipelineTag  *string       `json:"pipeline_tag"`
	LibraryName  *string       `json:"library_name"`
	Siblings     []siblingJSON `json:"siblings,omitempty"`
}

func newModelInfo(repo string) modelInfoJSON {
	author, _, _ := strings.Cut(repo, "/")
	return modelInfoJSON{ObjectID: objectID(repo), ID: repo, ModelID: repo, Author: author, Tags: []string{}}
}

// repoInfo answers GET /api/models/{repo} (revSegs nil: the default branch)
// and GET /api/models/{repo}/revision/{rev}. The whole remainder is the
// revision, so both "%2F"-encoded and raw slashes work. siblings lists every
// file: PY0 and PY ≤ 1.21 snapshot_download download exactly that list.
// expand is ignored; every field is always sent (JS snapshotDownload needs
// sha even though it asks for other fields).
func (h *Handler) repoInfo(w http.ResponseWriter, r *http.Request, repo string, revSegs []string) {
	rev := defaultBranch
	if revSegs != nil {
		segs, ok := unescapeSegments(revSegs)
		if !ok {
			writeError(w, http.StatusBadRequest, "", "", "Malformed revision")
			return
		}
		rev = strings.Join(segs, "/")
	}
	note(r, slog.String("repo", repo), slog.String("revision", rev))
	c, s, ok := h.snapshotAt(w, r, repo, rev)
	if !ok {
		return
	}
	blobs := queryBool(r.URL.Query().Get("blobs"))
	info := newModelInfo(repo)
	info.SHA = c.ID
	if !c.Time.IsZero() {
		info.LastModified = hubTime(c.Time)
	}
	info.Siblings = make([]siblingJSON, 0, len(s.files))
	for _, f := range s.files {
		sib := siblingJSON{RFilename: f.path}
		if blobs {
			size := f.info.Size
			sib.Size = &size
			sib.BlobID = f.oid
			if f.lfs {
				sib.LFS = &siblingLFS{Size: size, SHA256: f.info.SHA256, PointerSize: len(lfsPointer(f.info.SHA256, size))}
			}
		}
		info.Siblings = append(info.Siblings, sib)
	}
	w.Header().Set("X-Repo-Commit", c.ID)
	writeJSON(w, http.StatusOK, info)
}

// listModels answers GET /api/models (HfApi.list_models), honouring the
// search (substring of the id) and author filters and limit; sort and the
// other filters are ignored. One page, no Link header.
func (h *Handler) listModels(w http.ResponseWriter, r *http.Request) {
	repos, err := h.repos.ListRepos()
	if err != nil {
		failRepos(w, r, err, "", "")
		return
	}
	q := r.URL.Query()
	search := strings.ToLower(q.Get("search"))
	author := q.Get("author")
	limit := -1
	if v, err := strconv.Atoi(q.Get("limit")); err == nil && v >= 0 {
		limit = v
	}
	slices.SortFunc(repos, func(a, b RepoInfo) int { return strings.Compare(a.ID, b.ID) })
	out := []modelInfoJSON{}
	for _, ri := range repos {
		if limit >= 0 && len(out) >= limit {
			break
		}
		ns, _, _ := strings.Cut(ri.ID, "/")
		if !h.may(r, ns, RoleRead) {
			continue // not the caller's to see, not even its name
		}
		if search != "" && !strings.Contains(strings.ToLower(ri.ID), search) {
			continue
		}
		if author != "" && !strings.EqualFold(ns, author) {
			continue
		}
		m := newModelInfo(ri.ID)
		if !ri.LastModified.IsZero() {
			m.LastModified = hubTime(ri.LastModified)
		}
		out = append(out, m)
	}
	writeJSON(w, http.StatusOK, out)
}

// treeEntryJSON is one entry of a tree or paths-info answer (§3.2). Python
// needs path, size and oid on files and, when lfs is present, all three lfs
// keys. xetHash is never sent: with it PY ≥ 1.22 would skip the HEAD and go
// to Xet (§5.1). lastCommit and securityFileStatus are optional and omitted.
type treeEntryJSON struct {
	Type string   `json:"type"`
	OID  string   `json:"oid"`
	Size int64    `json:"size"`
	Path string   `json:"path"`
	LFS  *lfsJSON `json:"lfs,omitempty"`
}

type lfsJSON struct {
	OID         string `json:"oid"`
	Size        int64  `json:"size"`
	PointerSize int    `json:"pointerSize"`
}

func treeEntry(n *node) treeEntryJSON {
	if n.dir {
		return treeEntryJSON{Type: "directory", OID: n.oid, Path: n.path}
	}
	e := treeEntryJSON{Type: "file", OID: n.oid, Size: n.info.Size, Path: n.path}
	if n.lfs {
		e.LFS = &lfsJSON{OID: n.info.SHA256, Size: n.info.Size, PointerSize: len(lfsPointer(n.info.SHA256, n.info.Size))}
	}
	return e
}

// tree answers GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=&expand=.
// Python sends rev and path as one %2F-encoded segment each, JS both raw
// (§1.3); resolvePath handles both. A recursive listing includes directory
// entries (pre-order, as the Hub does); clients filter them. expand adds only
// optional fields on the Hub, so it is ignored. One page: every entry at
// once, no Link header.
func (h *Handler) tree(w http.ResponseWriter, r *http.Request, repo string, rest []string) {
	segs, ok := unescapeSegments(rest)
	if !ok {
		writeError(w, http.StatusBadRequest, "", "", "Malformed path")
		return
	}
	c, rev, p, err := h.resolvePath(repo, segs, false)
	note(r, slog.String("repo", repo), slog.String("revision", rev))
	if err != nil {
		failRepos(w, r, err, repo, rev)
		return
	}
	note(r, slog.String("commit", c.ID))
	w.Header().Set("X-Repo-Commit", c.ID)
	s, err := h.snaps.get(c.ID)
	if err != nil {
		failRepos(w, r, err, repo, rev)
		return
	}
	// HfFileSystem relies on EntryNotFound for a missing path and for a
	// path that is a file (§3.2).
	n, ok := s.nodes[strings.TrimSuffix(p, "/")]
	if !ok || !n.dir {
		writeError(w, http.StatusNotFound, codeEntryNotFound, msgEntryNotFound, "Entry not found: "+p)
		return
	}
	recursive := queryBool(r.URL.Query().Get("recursive"))
	out := []treeEntryJSON{}
	var walk func(d *node)
	walk = func(d *node) {
		for _, child := range d.children {
			out = append(out, treeEntry(child))
			if recursive && child.dir {
				walk(child)
			}
		}
	}
	walk(n)
	writeJSON(w, http.StatusOK, out)
}

// maxPathsInfoBody bounds a paths-info request body. The Hub takes about
// 1000 paths per call (§3.3); 8 MiB leaves room for long paths and stops a
// client from making the server buffer an unbounded form.
const maxPathsInfoBody = 8 << 20

// pathsInfo answers POST /api/models/{repo}/paths-info/{rev}: tree entries
// for the requested paths that exist, in request order; missing paths are
// silently left out (§3.3). Python posts a form (paths=a&paths=b), JS JSON
// ({"paths":[…]}); both are accepted.
func (h *Handler) pathsInfo(w http.ResponseWriter, r *http.Request, repo string, revSegs []string) {
	segs, ok := unescapeSegments(revSegs)
	if !ok {
		writeError(w, http.StatusBadRequest, "", "", "Malformed revision")
		return
	}
	rev := strings.Join(segs, "/")
	note(r, slog.String("repo", repo), slog.String("revision", rev))
	r.Body = http.MaxBytesReader(w, r.Body, maxPathsInfoBody)
	var paths []string
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		var body struct {
			Paths []string `json:"paths"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, "", "", "Malformed JSON body: "+err.Error())
			return
		}
		paths = body.Paths
	} else {
		if err := r.ParseForm(); err != nil {
			writeError(w, http.StatusBadRequest, "", "", "Malformed form body: "+err.Error())
			return
		}
		paths = r.PostForm["paths"]
	}
	c, s, ok := h.snapshotAt(w, r, repo, rev)
	if !ok {
		return
	}
	w.Header().Set("X-Repo-Commit", c.ID)
	out := []treeEntryJSON{}
	seen := map[string]bool{}
	for _, p := range paths {
		p = strings.Trim(p, "/")
		n, ok := s.nodes[p]
		if p == "" || !ok || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, treeEntry(n))
	}
	writeJSON(w, http.StatusOK, out)
}

// whoami answers GET /api/whoami-v2 from the identity the auth middleware
// attached. Without one (an open server, or a middleware that let an
// anonymous request through) it is the Hub's 401 for a bad token. The body
// has every field a client reads: PY0 login needs
// auth.accessToken.{role,displayName}, the CLIs name and orgs[].name, JS
// auth.accessToken.createdAt (§3.5).
func (h *Handler) whoami(w http.ResponseWriter, r *http.Request) {
	id, ok := IdentityFrom(r.Context())
	if !ok {
		writeError(w, http.StatusUnauthorized, "", msgInvalidCredentials, "")
		return
	}
	full := id.FullName
	if full == "" {
		full = id.Name
	}
	role := id.role()
	orgs := make([]map[string]string, 0, len(id.Orgs))
	for _, o := range id.Orgs {
		orgs = append(orgs, map[string]string{"type": "org", "id": objectID("org:" + o), "name": o, "fullname": o})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"type":          "user",
		"id":            objectID("user:" + id.Name),
		"name":          id.Name,
		"fullname":      full,
		"email":         nil,
		"emailVerified": false,
		"isPro":         false,
		"canPay":        false,
		"avatarUrl":     "",
		"periodEnd":     nil,
		"orgs":          orgs,
		"auth": map[string]any{
			"type": "access_token",
			"accessToken": map[string]any{
				"displayName": id.TokenName,
				"role":        role,
				"createdAt":   hubTime(time.Unix(0, 0)),
			},
		},
	})
}

// snapshotAt resolves repo at revision rev and loads that commit's file snapshot,
// answering the request with the matching error when either step fails.
func (h *Handler) snapshotAt(w http.ResponseWriter, r *http.Request, repo, rev string) (Commit, *snapshot, bool) {
	if rev == "" {
		failRepos(w, r, ErrRevisionNotFound, repo, rev)
		return Commit{}, nil, false
	}
	c, err := h.resolve(repo, rev)
	if err != nil {
		failRepos(w, r, err, repo, rev)
		return Commit{}, nil, false
	}
	note(r, slog.String("commit", c.ID))
	s, err := h.snaps.get(c.ID)
	if err != nil {
		failRepos(w, r, err, repo, rev)
		return Commit{}, nil, false
	}
	return c, s, true
}
