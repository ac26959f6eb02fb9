package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Middleware wraps the API handler: a hook for authentication schemes other
// than Options.Tokens (a reverse proxy's headers, mTLS). An implementation
// answers 401/403 itself (with X-Error-Code, §1.6) or calls next, attaching
// the caller with WithIdentity; the handler then authorizes the request
// against the identity's Grants, and does not look at the Authorization
// header. It runs after request logging and CORS, so rejected requests are
// logged and browsers can read the rejection. Signed upload URLs bypass it.
type Middleware interface {
	Wrap(next http.Handler) http.Handler
}

// MiddlewareFunc adapts a function to Middleware.
type MiddlewareFunc func(next http.Handler) http.Handler

// Wrap calls f(next).
func (f MiddlewareFunc) Wrap(next http.Handler) http.Handler { return f(next) }

// Options configure NewHandler. The zero value is usable: a read-only
// server without authentication.
type Options struct {
	// Logger receives one record per request (and nothing else). Nil means
	// slog.Default().
	Logger *slog.Logger
	// Auth, if set, wraps every route except the signed upload URLs. It
	// may reject requests itself or attach an Identity (WithIdentity),
	// whose Grants the handler then authorizes against.
	Auth Middleware
	// CachedCommits is how many commits' file lists the handler keeps
	// (see snapshotCache). Zero means 64.
	CachedCommits int

	// Writer enables the write API (create and delete repositories,
	// preupload, LFS uploads, commits, branches, tags). Nil: a read-only
	// server, whose write routes answer 403.
	Writer Writer
	// Tokens authenticates "Authorization: Bearer" tokens on every
	// request, and the handler authorizes each request against the
	// token's grants (reads need read on the repo's namespace, writes
	// write). Nil: no token checks; every repository is readable by
	// anyone and writes need an identity attached by Auth.
	Tokens Authenticator
	// AnonymousRead, with Tokens set, lets requests without a token read
	// (and list) every repository. Off by default.
	AnonymousRead bool
	// PublicURL is the base URL clients use to reach the server
	// (scheme://host[:port], no path: PY0 cannot use a prefix, §1.1). It
	// is used for the url of created repos, commitUrl and the upload URLs.
	// Empty: built from each request's Host header (what Python does
	// expect, §4.1), with https when the connection is TLS.
	PublicURL string
	// UploadKey signs upload URLs (HMAC-SHA256); at least 32 bytes (see
	// LoadOrCreateKey). Nil (or shorter, with a warning): a random key, so
	// that URLs handed out stop working when the process exits.
	UploadKey []byte
	// UploadURLTTL is how long an upload URL stays valid. Zero means 6h.
	UploadURLTTL time.Duration
	// MaxObjectSize is the largest LFS object accepted. Zero means 64 GiB.
	MaxObjectSize int64
	// MultipartThreshold: objects larger than this get the multipart form
	// (when the client offers it). Zero means 128 MiB.
	MultipartThreshold int64
	// MultipartChunkSize is the part size of multipart uploads. Zero
	// means 64 MiB.
	MultipartChunkSize int64
	// StagingDir holds the parts of multipart uploads until completion;
	// best on the file system of the store. Empty: a private temp dir,
	// removed by Close.
	StagingDir string
	// MaxStagingBytes caps the bytes staged by multipart uploads at once.
	// Zero means 4 × MaxObjectSize.
	MaxStagingBytes int64
	// MaxInlineFileSize caps one file sent inline (base64) in a commit.
	// Zero means 16 MiB (the Hub itself refuses non-LFS files over 10 MiB).
	MaxInlineFileSize int64
	// MaxCommitBytes caps a commit request body. Zero means 1 GiB.
	MaxCommitBytes int64
	// InlineUploadsForXetClients makes preupload answer "regular" for
	// every file of at most MaxInlineFileSize bytes when the User-Agent
	// says huggingface_hub 1.20 or later (§5.3, option 2). Those clients
	// upload "lfs" files through Xet without asking the server (§5.2),
	// which a plain server cannot take, unless HF_HUB_DISABLE_XET=1; with
	// this option they send such files inline (base64, in memory, in the
	// commit body) and work unmodified. Larger files still get "lfs" and
	// need the variable. Clients that did set it take the inline path too.
	// Off by default.
	InlineUploadsForXetClients bool
	// Registry receives the server's Prometheus metrics, which GET
	// /metrics serves. Nil: a registry of the handler's own (never the
	// global one), with the Go and process collectors.
	Registry *prometheus.Registry
	// Now is the clock (upload URL expiry). Nil means time.Now.
	Now func() time.Time
}

// Defaults of Options.
const (
	defaultUploadURLTTL       = 6 * time.Hour
	defaultMaxObjectSize      = 64 << 30
	defaultMultipartThreshold = 128 << 20
	defaultMultipartChunk     = 64 << 20
	defaultMaxInlineFile      = 16 << 20
	defaultMaxCommitBytes     = 1 << 30
	// maxJSONBody bounds the small JSON bodies (create repo, branch, tag,
	// verify, completion of a part list).
	maxJSONBody = 1 << 20
	// maxBatchBody bounds LFS batch and preupload bodies: 1000 entries
	// with 512-byte samples and long paths.
	maxBatchBody = 4 << 20
	// maxBatchObjects bounds the entries of one LFS batch or preupload
	// request (Python sends 256, JS 100).
	maxBatchObjects = 1000
	// maxCommitOps bounds the operations of one commit.
	maxCommitOps = 100_000
	// maxReadmeBody bounds a validate-yaml body.
	maxReadmeBody = 8 << 20
)

// defaultBranch is what clients mean by "HEAD" and by no revision (§1.3).
const defaultBranch = "main"

// Handler is the Hub API server. It is an http.Handler; Close releases what
// it holds (the private staging dir of multipart uploads).
type Handler struct {
	repos         Repos
	writer        Writer
	tokens        Authenticator
	anonymousRead bool
	publicURL     string
	snaps         *snapshotCache
	signer        *uploadSigner
	staging       *staging
	metrics       *metrics
	now           func() time.Time

	maxObjectSize      int64
	multipartThreshold int64
	chunkSize          int64
	maxInlineFile      int64
	maxCommitBytes     int64
	inlineForXet       bool

	serve http.Handler // the middleware chain around route
}

// NewHandler returns the Hub API over repos (and opts.Writer for the write
// side): /api/models listings, repo and revision info, tree, paths-info,
// whoami-v2, /{ns}/{name}/resolve and /raw for file content, and with a
// Writer repo creation and deletion, preupload, the LFS batch API and its
// upload URLs, NDJSON commits, branches and tags, plus GET /metrics. See
// the package documentation.
func NewHandler(repos Repos, opts Options) *Handler {
	n := opts.CachedCommits
	if n <= 0 {
		n = 64
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	orDefault := func(v, d int64) int64 {
		if v <= 0 {
			return d
		}
		return v
	}
	h := &Handler{
		repos:              repos,
		writer:             opts.Writer,
		tokens:             opts.Tokens,
		anonymousRead:      opts.Tokens == nil || opts.AnonymousRead,
		publicURL:          strings.TrimRight(opts.PublicURL, "/"),
		snaps:              newSnapshotCache(repos, n),
		now:                now,
		maxObjectSize:      orDefault(opts.MaxObjectSize, defaultMaxObjectSize),
		multipartThreshold: orDefault(opts.MultipartThreshold, defaultMultipartThreshold),
		chunkSize:          orDefault(opts.MultipartChunkSize, defaultMultipartChunk),
		maxInlineFile:      orDefault(opts.MaxInlineFileSize, defaultMaxInlineFile),
		maxCommitBytes:     orDefault(opts.MaxCommitBytes, defaultMaxCommitBytes),
		inlineForXet:       opts.InlineUploadsForXetClients,
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	key := opts.UploadKey
	if len(key) < 32 {
		// A short key would make signatures guessable; a random one is
		// the safe reading of "none given".
		if len(key) > 0 {
			logger.Warn("hub: upload key shorter than 32 bytes; using a random key (upload URLs will not survive a restart)", "len", len(key))
		}
		key = make([]byte, 32)
		rand.Read(key)
	}
	ttl := opts.UploadURLTTL
	if ttl <= 0 {
		ttl = defaultUploadURLTTL
	}
	h.signer = &uploadSigner{key: key, ttl: ttl, now: now}
	h.staging = newStaging(opts.StagingDir, orDefault(opts.MaxStagingBytes, 4*h.maxObjectSize), ttl)
	h.metrics = newMetrics(opts.Registry, h.staging)

	var next http.Handler = http.HandlerFunc(h.route)
	if opts.Auth != nil {
		next = skipUploads(opts.Auth.Wrap(next), http.HandlerFunc(h.route))
	}
	next = cors(next)
	h.serve = observe(logger, h.metrics, next)
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.serve.ServeHTTP(w, r) }

// Close removes the private staging dir (when Options.StagingDir is empty).
// Call it after the server has stopped.
func (h *Handler) Close() error { return h.staging.close() }

// skipUploads sends requests for signed upload URLs to direct, bypassing
// the Auth middleware: they carry no Authorization (§4.4) and authorize
// themselves.
func skipUploads(wrapped, direct http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.EscapedPath(), "/"+uploadPrefix+"/") {
			direct.ServeHTTP(w, r)
			return
		}
		wrapped.ServeHTTP(w, r)
	})
}

// Route names label metrics and log records: the pattern a request
// matched, never its repo or file.
const (
	routeResolve      = "resolve"
	routeRaw          = "raw"
	routeModels       = "api_models"
	routeRepoInfo     = "api_model_info"
	routeTree         = "api_tree"
	routePathsInfo    = "api_paths_info"
	routeWhoami       = "api_whoami"
	routeCreateRepo   = "api_repos_create"
	routeDeleteRepo   = "api_repos_delete"
	routeValidateYAML = "api_validate_yaml"
	routePreupload    = "api_preupload"
	routeCommit       = "api_commit"
	routeBranch       = "api_branch"
	routeTag          = "api_tag"
	routeLFSBatch     = "lfs_batch"
	routeLFSObject    = "lfs_upload"
	routeLFSPart      = "lfs_part"
	routeLFSComplete  = "lfs_complete"
	routeLFSVerify    = "lfs_verify"
	routeMetrics      = "metrics"
	routeOther        = "other"
)

// route dispatches on the escaped path, segment by segment. The standard
// ServeMux cannot express the Hub's layout (a model repo's routes start with
// the user's namespace, so "/api/models/x/y" and "/{ns}/{name}/resolve/…"
// overlap), and revisions arrive both %2F-encoded and raw (§1.3), which only
// the escaped form keeps apart.
func (h *Handler) route(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	seg := func(i int) string {
		if i < len(segs) {
			return segs[i]
		}
		return ""
	}
	if seg(0) == uploadPrefix {
		// Signed URLs: no bearer token involved (§4.4).
		h.routeUpload(w, r, segs[1:])
		return
	}
	r, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	switch {
	case seg(0) == "api":
		h.routeAPI(w, r, segs[1:])
	case len(segs) == 1 && seg(0) == "metrics":
		setRoute(r, routeMetrics)
		if allowMethods(w, r, http.MethodGet, http.MethodHead) {
			h.serveMetrics(w, r)
		}
	case len(segs) == 6 && strings.HasSuffix(seg(1), ".git") && seg(2) == "info" && seg(3) == "lfs" && seg(4) == "objects" && seg(5) == "batch":
		setRoute(r, routeLFSBatch)
		repo, ok := repoID(segs[0], strings.TrimSuffix(segs[1], ".git"))
		if !ok || !ValidRepoID(repo) {
			writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "")
			return
		}
		if allowMethods(w, r, http.MethodPost) {
			h.lfsBatch(w, r, repo)
		}
	case (seg(0) == "datasets" || seg(0) == "spaces") && (seg(3) == "resolve" || seg(3) == "raw" || strings.HasSuffix(seg(2), ".git")):
		// Only models are stored; answer other repo types the way clients
		// expect for a missing repo.
		writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "")
	case len(segs) >= 4 && (seg(2) == "resolve" || seg(2) == "raw"):
		if seg(2) == "raw" {
			setRoute(r, routeRaw)
		} else {
			setRoute(r, routeResolve)
		}
		repo, ok := repoID(segs[0], segs[1])
		if !ok {
			writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "")
			return
		}
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		if h.authorizeRepo(w, r, repo, RoleRead) {
			h.serveFile(w, r, repo, segs[3:], seg(2) == "raw")
		}
	default:
		writeError(w, http.StatusNotFound, "", "", "Not found")
	}
}

// routeAPI handles /api/… (segs without the leading "api").
func (h *Handler) routeAPI(w http.ResponseWriter, r *http.Request, segs []string) {
	if len(segs) == 0 {
		writeError(w, http.StatusNotFound, "", "", "Not found")
		return
	}
	if len(segs) == 1 {
		switch segs[0] {
		case "whoami-v2":
			setRoute(r, routeWhoami)
			if allowMethods(w, r, http.MethodGet, http.MethodHead) {
				h.whoami(w, r)
			}
			return
		case "validate-yaml":
			setRoute(r, routeValidateYAML)
			if allowMethods(w, r, http.MethodPost) {
				h.validateYAML(w, r)
			}
			return
		}
	}
	if len(segs) == 2 && segs[0] == "repos" {
		switch segs[1] {
		case "create":
			setRoute(r, routeCreateRepo)
			if allowMethods(w, r, http.MethodPost) && h.writable(w) {
				h.createRepo(w, r)
			}
			return
		case "delete":
			setRoute(r, routeDeleteRepo)
			if allowMethods(w, r, http.MethodDelete) && h.writable(w) {
				h.deleteRepo(w, r)
			}
			return
		}
	}
	switch segs[0] {
	case "models":
	case "datasets", "spaces", "kernels":
		// Only models are stored: listings are empty and every repo of
		// another type is missing.
		if len(segs) == 1 || (len(segs) == 2 && segs[1] == "") {
			if allowMethods(w, r, http.MethodGet, http.MethodHead) {
				writeJSON(w, http.StatusOK, []any{})
			}
			return
		}
		writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "")
		return
	default:
		writeError(w, http.StatusNotFound, "", "", "Not found")
		return
	}
	if len(segs) == 1 || (len(segs) == 2 && segs[1] == "") {
		setRoute(r, routeModels)
		if allowMethods(w, r, http.MethodGet, http.MethodHead) {
			h.listModels(w, r)
		}
		return
	}
	if len(segs) < 3 {
		writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "")
		return
	}
	repo, ok := repoID(segs[1], segs[2])
	if !ok {
		writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "")
		return
	}
	rest := segs[3:]
	op := ""
	if len(rest) > 0 {
		op, rest = rest[0], rest[1:]
	}
	// methods are what the operation accepts, need the role it needs on
	// the repo's namespace.
	var serve func(http.ResponseWriter, *http.Request, string, []string)
	var methods []string
	need := RoleRead
	switch op {
	case "":
		setRoute(r, routeRepoInfo)
		methods, serve = []string{http.MethodGet, http.MethodHead}, func(w http.ResponseWriter, r *http.Request, repo string, _ []string) {
			h.repoInfo(w, r, repo, nil)
		}
	case "revision":
		setRoute(r, routeRepoInfo)
		methods, serve = []string{http.MethodGet, http.MethodHead}, h.repoInfo
	case "tree":
		setRoute(r, routeTree)
		methods, serve = []string{http.MethodGet, http.MethodHead}, h.tree
	case "paths-info":
		setRoute(r, routePathsInfo)
		methods, serve = []string{http.MethodPost}, h.pathsInfo
	case "preupload":
		setRoute(r, routePreupload)
		methods, serve, need = []string{http.MethodPost}, h.preupload, RoleWrite
	case "commit":
		setRoute(r, routeCommit)
		methods, serve, need = []string{http.MethodPost}, h.commit, RoleWrite
	case "branch":
		setRoute(r, routeBranch)
		methods, serve, need = []string{http.MethodPost, http.MethodDelete}, h.branch, RoleWrite
	case "tag":
		setRoute(r, routeTag)
		methods, serve, need = []string{http.MethodPost, http.MethodDelete}, h.tag, RoleWrite
	case "xet-read-token", "xet-write-token":
		// A 404 keeps Xet-capable clients on plain HTTP for downloads
		// (§5.1); huggingface_hub ≥ 1.20 asks for a write token without
		// negotiating (§5.2), so say what to do about it.
		writeError(w, http.StatusNotFound, "", "", "This server does not speak the Xet protocol: upload with HF_HUB_DISABLE_XET=1 (or without hf_xet installed)")
		return
	default:
		// refs, commits, discussions, … : not served.
		writeError(w, http.StatusNotFound, "", "", "Not found")
		return
	}
	if !allowMethods(w, r, methods...) {
		return
	}
	if need == RoleWrite && !h.writable(w) {
		return
	}
	if need == RoleWrite && !ValidRepoID(repo) {
		// No repo can have this id (CreateRepo checks it), and a Writer
		// is only ever called with valid ones.
		writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "")
		return
	}
	if h.authorizeRepo(w, r, repo, need) {
		serve(w, r, repo, rest)
	}
}

// writable answers 403 on a read-only server (no Writer).
func (h *Handler) writable(w http.ResponseWriter) bool {
	if h.writer == nil {
		writeError(w, http.StatusForbidden, "", msgForbidden, "This server is read-only")
		return false
	}
	return true
}

// repoID decodes the two escaped segments of a repo id. Clients insert the
// id unescaped (§1.2), so a decoded "/" inside either part cannot be a
// valid id.
func repoID(ns, name string) (string, bool) {
	a, err1 := url.PathUnescape(ns)
	b, err2 := url.PathUnescape(name)
	if err1 != nil || err2 != nil || a == "" || b == "" || strings.Contains(a+b, "/") {
		return "", false
	}
	return a + "/" + b, true
}

// unescapeSegments decodes escaped path segments one by one, so that a %2F
// inside a segment stays inside it.
func unescapeSegments(segs []string) ([]string, bool) {
	out := make([]string, len(segs))
	for i, s := range segs {
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, false
		}
		out[i] = d
	}
	return out, true
}

// allowMethods answers 405 unless the request uses one of methods.
func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "", "", "Method not allowed")
	return false
}

// resolve resolves a revision as a client sent it: "HEAD" and "" mean the
// default branch (JS sends HEAD for model info, §1.3).
func (h *Handler) resolve(repo, rev string) (Commit, error) {
	switch rev {
	case "HEAD":
		rev = defaultBranch
	case "":
		// "/resolve//file" and the like: no revision at all. Answered here
		// so that an implementation never has to define Resolve(repo, "").
		if _, err := h.repos.Resolve(repo, defaultBranch); errors.Is(err, ErrRepoNotFound) {
			return Commit{}, err
		}
		return Commit{}, ErrRevisionNotFound
	}
	return h.repos.Resolve(repo, rev)
}

// resolvePath splits decoded segments into a revision and a path inside the
// commit. Python and most JS calls send the revision as one %2F-encoded
// segment, but JS listFiles sends it raw (§1.3), so when the first segment
// is not a revision, longer prefixes are tried, longest first. Git's D/F
// rule (no refs "a" and "a/b" at once) makes the answer unique. needPath
// keeps at least one segment for the path (resolve, raw). rev is the
// revision that resolved, or the first segment when none did.
func (h *Handler) resolvePath(repo string, segs []string, needPath bool) (c Commit, rev, path string, err error) {
	if len(segs) == 0 {
		return Commit{}, "", "", ErrRevisionNotFound
	}
	c, err = h.resolve(repo, segs[0])
	if err == nil {
		return c, segs[0], strings.Join(segs[1:], "/"), nil
	}
	if !isNotFoundRev(err) {
		return Commit{}, segs[0], "", err
	}
	last := len(segs)
	if needPath {
		last--
	}
	for k := last; k >= 2; k-- {
		cand := strings.Join(segs[:k], "/")
		c2, err2 := h.resolve(repo, cand)
		if err2 == nil {
			return c2, cand, strings.Join(segs[k:], "/"), nil
		}
		if !isNotFoundRev(err2) {
			return Commit{}, cand, "", err2
		}
	}
	return Commit{}, segs[0], "", err
}

func isNotFoundRev(err error) bool {
	return err != nil && errors.Is(err, ErrRevisionNotFound)
}

// cors lets browser code (@huggingface/hub in a page) call the server and
// read the headers it needs (§1.9).
func cors(next http.Handler) http.Handler {
	const expose = "X-Repo-Commit, X-Request-Id, X-Error-Code, X-Error-Message, ETag, Link, Accept-Ranges, Content-Range, Content-Length, X-Linked-Size, X-Linked-Etag"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", expose)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			}
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// reqState collects what handlers learn about a request (route, repo,
// commit, user, cause of a failure) for its log record and metrics.
type reqState struct {
	route string
	attrs []slog.Attr
	err   error
}

type reqStateKey struct{}

// setRoute records the route pattern the request matched.
func setRoute(r *http.Request, route string) {
	if s, ok := r.Context().Value(reqStateKey{}).(*reqState); ok {
		s.route = route
	}
}

// note adds attributes to the request's log record.
func note(r *http.Request, attrs ...slog.Attr) {
	if s, ok := r.Context().Value(reqStateKey{}).(*reqState); ok {
		s.attrs = append(s.attrs, attrs...)
	}
}

// noteError records why a request failed; the client only sees a generic
// message.
func noteError(r *http.Request, err error) {
	if s, ok := r.Context().Value(reqStateKey{}).(*reqState); ok {
		s.err = err
	}
}

// statusWriter records the status and body size for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// countingBody counts the request body bytes the handler read.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// observe writes one structured record per request, after it finished
// (also when the handler aborted the connection mid-body), updates the
// metrics, and gives every request an id (X-Request-Id, which JS reports
// in its errors).
func observe(logger *slog.Logger, m *metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Inc()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			var b [8]byte
			rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		state := &reqState{route: routeOther}
		sw := &statusWriter{ResponseWriter: w}
		body := &countingBody{ReadCloser: r.Body}
		r.Body = body
		r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, state))
		aborted := true
		defer func() {
			m.inFlight.Dec()
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			m.observe(state.route, r.Method, status, body.n.Load(), sw.bytes, elapsed)
			attrs := []slog.Attr{
				slog.String("method", r.Method),
				slog.String("path", r.URL.EscapedPath()),
				slog.String("route", state.route),
				slog.Int("status", status),
				slog.Int64("bytes", sw.bytes),
				slog.Duration("duration", elapsed),
				slog.String("remote", r.RemoteAddr),
				slog.String("request_id", id),
			}
			if n := body.n.Load(); n > 0 {
				attrs = append(attrs, slog.Int64("bytes_in", n))
			}
			if q := r.URL.RawQuery; q != "" && !strings.HasPrefix(r.URL.EscapedPath(), "/"+uploadPrefix+"/") {
				// Upload URLs carry their signature in the query: it
				// stays out of logs.
				attrs = append(attrs, slog.String("query", q))
			}
			if rg := r.Header.Get("Range"); rg != "" {
				attrs = append(attrs, slog.String("range", rg))
			}
			if ua := r.UserAgent(); ua != "" {
				attrs = append(attrs, slog.String("user_agent", ua))
			}
			attrs = append(attrs, state.attrs...)
			level := slog.LevelInfo
			if aborted {
				attrs = append(attrs, slog.Bool("aborted", true))
				level = slog.LevelError
			}
			if state.err != nil {
				attrs = append(attrs, slog.String("error", state.err.Error()))
				level = slog.LevelError
			}
			if status >= 500 {
				level = slog.LevelError
			}
			logger.LogAttrs(r.Context(), level, "request", attrs...)
		}()
		next.ServeHTTP(sw, r)
		aborted = false
	})
}

// validRequestID accepts a client's id only if it is short and plain, since
// it is echoed in a header and written to logs.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
