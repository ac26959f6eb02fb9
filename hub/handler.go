package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Middleware wraps the API handler. It is the hook for authentication (a
// later step): an implementation checks the request's Authorization header,
// answers 401/403 itself (with X-Error-Code, §1.6) or calls next, attaching
// the caller with WithIdentity. It runs after request logging and CORS, so
// rejected requests are logged and browsers can read the rejection.
type Middleware interface {
	Wrap(next http.Handler) http.Handler
}

// MiddlewareFunc adapts a function to Middleware.
type MiddlewareFunc func(next http.Handler) http.Handler

// Wrap calls f(next).
func (f MiddlewareFunc) Wrap(next http.Handler) http.Handler { return f(next) }

// Options configure NewHandler. The zero value is usable.
type Options struct {
	// Logger receives one record per request (and nothing else). Nil means
	// slog.Default().
	Logger *slog.Logger
	// Auth, if set, wraps every route. Nil means an open server: every
	// repository is readable and whoami-v2 answers 401.
	Auth Middleware
	// CachedCommits is how many commits' file lists the handler keeps
	// (see snapshotCache). Zero means 64.
	CachedCommits int
}

// defaultBranch is what clients mean by "HEAD" and by no revision (§1.3).
const defaultBranch = "main"

type handler struct {
	repos Repos
	snaps *snapshotCache
}

// NewHandler returns the Hub read API over repos: /api/models listings, repo
// and revision info, tree, paths-info, whoami-v2, and /{ns}/{name}/resolve and
// /raw for file content. See the package documentation.
func NewHandler(repos Repos, opts Options) http.Handler {
	n := opts.CachedCommits
	if n <= 0 {
		n = 64
	}
	h := &handler{repos: repos, snaps: newSnapshotCache(repos, n)}
	var next http.Handler = http.HandlerFunc(h.route)
	if opts.Auth != nil {
		next = opts.Auth.Wrap(next)
	}
	next = cors(next)
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	return logRequests(logger, next)
}

// route dispatches on the escaped path, segment by segment. The standard
// ServeMux cannot express the Hub's layout (a model repo's routes start with
// the user's namespace, so "/api/models/x/y" and "/{ns}/{name}/resolve/…"
// overlap), and revisions arrive both %2F-encoded and raw (§1.3), which only
// the escaped form keeps apart.
func (h *handler) route(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	seg := func(i int) string {
		if i < len(segs) {
			return segs[i]
		}
		return ""
	}
	switch {
	case seg(0) == "api":
		h.routeAPI(w, r, segs[1:])
	case (seg(0) == "datasets" || seg(0) == "spaces") && (seg(3) == "resolve" || seg(3) == "raw"):
		// Only models are stored; answer other repo types the way clients
		// expect for a missing repo.
		writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "")
	case len(segs) >= 4 && (seg(2) == "resolve" || seg(2) == "raw"):
		repo, ok := repoID(segs[0], segs[1])
		if !ok {
			writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "")
			return
		}
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		h.serveFile(w, r, repo, segs[3:], seg(2) == "raw")
	default:
		writeError(w, http.StatusNotFound, "", "", "Not found")
	}
}

// routeAPI handles /api/… (segs without the leading "api").
func (h *handler) routeAPI(w http.ResponseWriter, r *http.Request, segs []string) {
	if len(segs) == 1 && segs[0] == "whoami-v2" {
		if allowMethods(w, r, http.MethodGet, http.MethodHead) {
			h.whoami(w, r)
		}
		return
	}
	if len(segs) == 0 {
		writeError(w, http.StatusNotFound, "", "", "Not found")
		return
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
	switch op {
	case "":
		if allowMethods(w, r, http.MethodGet, http.MethodHead) {
			h.repoInfo(w, r, repo, nil)
		}
	case "revision":
		if allowMethods(w, r, http.MethodGet, http.MethodHead) {
			h.repoInfo(w, r, repo, rest)
		}
	case "tree":
		if allowMethods(w, r, http.MethodGet, http.MethodHead) {
			h.tree(w, r, repo, rest)
		}
	case "paths-info":
		if allowMethods(w, r, http.MethodPost) {
			h.pathsInfo(w, r, repo, rest)
		}
	default:
		// refs, commits, preupload, commit, xet-read-token, … : not served
		// by the read side. A plain 404 is also what keeps Xet-capable
		// clients on plain HTTP (§5.2).
		writeError(w, http.StatusNotFound, "", "", "Not found")
	}
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
func (h *handler) resolve(repo, rev string) (Commit, error) {
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
func (h *handler) resolvePath(repo string, segs []string, needPath bool) (c Commit, rev, path string, err error) {
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
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
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

// reqState collects what handlers learn about a request (repo, commit,
// cause of a failure) for its single log record.
type reqState struct {
	attrs []slog.Attr
	err   error
}

type reqStateKey struct{}

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

// logRequests writes one structured record per request, after it finished
// (also when the handler aborted the connection mid-body), and gives every
// request an id (X-Request-Id, which JS reports in its errors).
func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			var b [8]byte
			rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		state := &reqState{}
		sw := &statusWriter{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), reqStateKey{}, state))
		aborted := true
		defer func() {
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			attrs := []slog.Attr{
				slog.String("method", r.Method),
				slog.String("path", r.URL.EscapedPath()),
				slog.Int("status", status),
				slog.Int64("bytes", sw.bytes),
				slog.Duration("duration", time.Since(start)),
				slog.String("remote", r.RemoteAddr),
				slog.String("request_id", id),
			}
			if q := r.URL.RawQuery; q != "" {
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
