package remote

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/internal/failpoint"
)

// PathPrefix is where the protocol is served; NewHandler's handler answers only
// paths under it.
const PathPrefix = "/heft/v1/"

// Content types of the protocol's bodies.
const (
	jsonType    = "application/json"
	objectsType = "application/x-heft-objects"
)

// Options configure NewHandler.
type Options struct {
	// Tokens authenticates "Authorization: Bearer" tokens (hub.TokenStore).
	// Pushes need a write grant on the ref's namespace, pulls a read grant. An
	// identity attached to the request context by a middleware
	// (hub.WithIdentity) is used as is. Without Tokens and without such a
	// middleware every request is refused, except pulls with AnonymousRead.
	Tokens hub.Authenticator
	// AnonymousRead lets requests without a token pull.
	AnonymousRead bool
	// Logger receives one record per request that fails (default: discard).
	Logger *slog.Logger
	// BatchBytes is how much a pull/objects answer holds before it stops
	// (default and maximum MaxBatchBytes; the client asks again for the rest).
	BatchBytes int
	// ClosureCacheIDs bounds the object IDs of the closures the handler keeps
	// in memory to authorize pulls and scope pushes (default 2 Mi, about
	// 100 MB).
	ClosureCacheIDs int
}

// NewHandler serves the heft remote protocol over s under PathPrefix (see doc.go).
// Mount it next to the Hub API, e.g. mux.Handle(remote.PathPrefix, h).
func NewHandler(s Store, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.BatchBytes <= 0 || opts.BatchBytes > MaxBatchBytes {
		opts.BatchBytes = MaxBatchBytes
	}
	if opts.ClosureCacheIDs <= 0 {
		opts.ClosureCacheIDs = 2 << 20
	}
	h := &handler{s: s, opts: opts, closures: map[ID]map[ID]Kind{}}
	mux := http.NewServeMux()
	endpoints := map[string]http.HandlerFunc{
		"push/negotiate": h.route(hub.RoleWrite, h.pushNegotiate),
		"push/have":      h.route(hub.RoleWrite, h.pushHave),
		"push/objects":   h.route(hub.RoleWrite, h.pushObjects),
		"push/update":    h.route(hub.RoleWrite, h.pushUpdate),
		"pull/negotiate": h.route(hub.RoleRead, h.pullNegotiate),
		"pull/trees":     h.route(hub.RoleRead, h.pullTrees),
		"pull/chunks":    h.route(hub.RoleRead, h.pullChunks),
		"pull/objects":   h.route(hub.RoleRead, h.pullObjects),
	}
	for path, fn := range endpoints {
		mux.HandleFunc("POST "+PathPrefix+path, fn)
	}
	mux.HandleFunc(PathPrefix, func(w http.ResponseWriter, r *http.Request) {
		if _, ok := endpoints[strings.TrimPrefix(r.URL.Path, PathPrefix)]; ok {
			w.Header().Set("Allow", http.MethodPost)
			writeErrorStatus(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" "+r.URL.Path+": use POST")
			return
		}
		writeError(w, fmt.Errorf("%w: no endpoint %s %s", ErrNotFound, r.Method, r.URL.Path))
	})
	return mux
}

type handler struct {
	s    Store
	opts Options

	mu        sync.Mutex
	closures  map[ID]map[ID]Kind // +checklocks:mu: closure by commit
	cachedIDs int                // +checklocks:mu
}

// call is one authorized request.
type call struct {
	ref  string
	ns   string
	id   hub.Identity
	anon bool // no identity (an anonymous pull)
}

// route authorizes a request for role need on its ref's namespace before any
// body is read, runs fn, and answers its error.
func (h *handler) route(need hub.Role, fn func(w http.ResponseWriter, r *http.Request, c *call) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		c, err := h.authorize(r, need)
		if err == nil {
			err = fn(w, r, c)
		}
		if err != nil {
			status := writeError(w, err)
			user := ""
			if c != nil {
				user = c.id.Name
			}
			h.opts.Logger.Warn("heft remote", "path", r.URL.Path, "ref", r.URL.Query().Get("ref"), "user", user,
				"status", status, "error", err.Error(), "duration", time.Since(start))
		}
	}
}

func (h *handler) authorize(r *http.Request, need hub.Role) (*call, error) {
	ref := r.URL.Query().Get("ref")
	if err := validRef(ref); err != nil {
		return nil, err
	}
	c := &call{ref: ref, ns: Namespace(ref)}
	id, ok, err := h.identify(r)
	if err != nil {
		return nil, err
	}
	if ok {
		c.id = id
		if id.Can(c.ns, need) {
			return c, nil
		}
		return c, fmt.Errorf("%w: token %q of %s has no %s grant on namespace %q", ErrForbidden, id.TokenName, id.Name, need, c.ns)
	}
	if need == hub.RoleRead && h.opts.AnonymousRead {
		c.anon = true
		return c, nil
	}
	return c, fmt.Errorf("%w: send Authorization: Bearer <token>", ErrUnauthorized)
}

// identify returns the request's identity: one a middleware attached, or the
// one its bearer token stands for. A token that is not accepted is
// ErrUnauthorized, also where anonymous requests would be allowed.
func (h *handler) identify(r *http.Request) (hub.Identity, bool, error) {
	if id, ok := hub.IdentityFrom(r.Context()); ok {
		return id, true, nil
	}
	tok, err := bearerToken(r.Header.Get("Authorization"))
	if err != nil {
		return hub.Identity{}, false, err
	}
	if tok == "" {
		return hub.Identity{}, false, nil
	}
	if h.opts.Tokens == nil {
		return hub.Identity{}, false, fmt.Errorf("%w: this server checks no tokens", ErrUnauthorized)
	}
	id, err := h.opts.Tokens.Authenticate(r.Context(), tok)
	switch {
	case errors.Is(err, hub.ErrInvalidToken):
		return hub.Identity{}, false, fmt.Errorf("%w: invalid token", ErrUnauthorized)
	case err != nil:
		return hub.Identity{}, false, fmt.Errorf("authenticate: %w", err)
	}
	return id, true, nil
}

// maxTokenLen bounds the tokens bearerToken accepts; heft's are 48 bytes.
const maxTokenLen = 1024

// bearerToken extracts the token of an "Authorization: Bearer <token>" header
// (the scheme case-insensitive; the token 1 to 1024 visible ASCII characters).
// It returns "" and no error for an empty header.
func bearerToken(h string) (string, error) {
	if h == "" {
		return "", nil
	}
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimLeft(tok, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || len(tok) > maxTokenLen {
		return "", fmt.Errorf("%w: malformed Authorization header", ErrUnauthorized)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= 0x20 || c >= 0x7f {
			return "", fmt.Errorf("%w: malformed Authorization header", ErrUnauthorized)
		}
	}
	return tok, nil
}

// canRead reports whether the call's identity may read namespace ns.
func (h *handler) canRead(c *call, ns string) bool {
	return h.opts.AnonymousRead || (!c.anon && c.id.Can(ns, hub.RoleRead))
}

// closure returns a commit's closure, cached.
func (h *handler) closure(ctx context.Context, commit ID) (map[ID]Kind, error) {
	h.mu.Lock()
	cl, ok := h.closures[commit]
	h.mu.Unlock()
	if ok {
		return cl, nil
	}
	cl, err := h.s.Closure(ctx, commit)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(cl) <= h.opts.ClosureCacheIDs {
		if h.cachedIDs+len(cl) > h.opts.ClosureCacheIDs {
			h.closures, h.cachedIDs = map[ID]map[ID]Kind{}, 0
		}
		h.closures[commit] = cl
		h.cachedIDs += len(cl)
	}
	return cl, nil
}

// usable returns what a push into c's namespace may use without sending it:
// objects reachable from the refs its identity may read (it could fetch them
// anyway) and objects received for the namespace (sent earlier, perhaps by an
// interrupted push). Knowing an ID is not enough: anyone who learned a commit ID
// could otherwise point a ref of theirs at a model they may not read.
func (h *handler) usable(ctx context.Context, c *call) (func(ID) (bool, error), error) {
	refs, err := h.s.Refs(ctx)
	if err != nil {
		return nil, err
	}
	var sets []map[ID]Kind
	seen := map[ID]bool{}
	for _, r := range refs {
		if seen[r.Commit] || !h.canRead(c, Namespace(r.Ref)) {
			continue
		}
		seen[r.Commit] = true
		cl, err := h.closure(ctx, r.Commit)
		if err != nil {
			return nil, fmt.Errorf("closure of %s: %w", r.Ref, err)
		}
		sets = append(sets, cl)
	}
	return func(id ID) (bool, error) {
		for _, cl := range sets {
			if _, ok := cl[id]; ok {
				return true, nil
			}
		}
		return h.s.Received(ctx, c.ns, id)
	}, nil
}

// readJSON decodes a request body.
func readJSON(r *http.Request, v any) error {
	return decodeJSON(r.Body, v)
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", jsonType)
	return json.NewEncoder(w).Encode(v)
}

func commitRefs(ids []ID) []ObjectRef {
	out := make([]ObjectRef, len(ids))
	for i, id := range ids {
		out[i] = ObjectRef{ID: id, Kind: KindCommit}
	}
	return out
}

func (h *handler) pushNegotiate(w http.ResponseWriter, r *http.Request, c *call) error {
	var req pushNegotiateRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if len(req.Commits) == 0 || req.Commits[0] != req.New || req.New.IsZero() {
		return fmt.Errorf("%w: commits must start with the new commit", ErrInvalid)
	}
	if len(req.Commits) > MaxHistory {
		return fmt.Errorf("%w: history of more than %d commits", ErrTooLarge, MaxHistory)
	}
	ctx := r.Context()
	usable, err := h.usable(ctx, c)
	if err != nil {
		return err
	}
	st, err := h.s.Presence(ctx, commitRefs(req.Commits), usable)
	if err != nil {
		return err
	}
	cur, err := h.s.Ref(ctx, c.ref)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	resp := pushNegotiateResponse{Current: cur, Status: encodePresence(st)}
	if st[0] == Complete {
		if cur == req.New && (req.Old == nil || *req.Old == cur) {
			resp.Updated = true
		} else {
			old := cur
			if req.Old != nil {
				old = *req.Old
			}
			failpoint.Hit(failpoint.ServerBeforeRefMove)
			err := h.s.UpdateRef(ctx, RefChange{Ref: c.ref, Old: old, New: req.New, Force: req.Force, Message: h.message(c), Usable: usable})
			if err != nil {
				return err
			}
			resp.Updated = true
		}
	}
	return writeJSON(w, resp)
}

func (h *handler) message(c *call) string {
	who := c.id.Name
	if who == "" {
		who = "anonymous"
	}
	return "push by " + who
}

func (h *handler) pushHave(w http.ResponseWriter, r *http.Request, c *call) error {
	var req haveRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	kinds, err := decodeKinds(req.Kinds, len(req.Objects))
	if err != nil {
		return err
	}
	usable, err := h.usable(r.Context(), c)
	if err != nil {
		return err
	}
	objs := make([]ObjectRef, len(req.Objects))
	for i, id := range req.Objects {
		objs[i] = ObjectRef{ID: id, Kind: kinds[i]}
	}
	st, err := h.s.Presence(r.Context(), objs, usable)
	if err != nil {
		return err
	}
	return writeJSON(w, haveResponse{Status: encodePresence(st)})
}

func (h *handler) pushObjects(w http.ResponseWriter, r *http.Request, c *call) error {
	usable, err := h.usable(r.Context(), c)
	if err != nil {
		return err
	}
	body := http.MaxBytesReader(w, r.Body, int64(MaxObjectsBody))
	or := NewObjectReader(body)
	stats, err := h.s.Receive(r.Context(), c.ns, usable, func() (Object, error) {
		o, err := or.Next()
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return o, fmt.Errorf("%w: object stream larger than %d bytes", ErrTooLarge, MaxObjectsBody)
		}
		return o, err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, receiveResponse{Objects: stats.Objects, New: stats.New, StoredBytes: stats.StoredBytes})
}

func (h *handler) pushUpdate(w http.ResponseWriter, r *http.Request, c *call) error {
	var req updateRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if req.New.IsZero() {
		return fmt.Errorf("%w: no new commit", ErrInvalid)
	}
	usable, err := h.usable(r.Context(), c)
	if err != nil {
		return err
	}
	failpoint.Hit(failpoint.ServerBeforeRefMove)
	err = h.s.UpdateRef(r.Context(), RefChange{Ref: c.ref, Old: req.Old, New: req.New, Force: req.Force, Message: h.message(c), Usable: usable})
	if err != nil {
		return err
	}
	return writeJSON(w, updateResponse{Updated: true})
}

// pullClosure returns the closure of the ref's commit: everything a pull of it
// may list or fetch.
func (h *handler) pullClosure(ctx context.Context, c *call) (map[ID]Kind, error) {
	tip, err := h.s.Ref(ctx, c.ref)
	if err != nil {
		return nil, err
	}
	return h.closure(ctx, tip)
}

// inClosure checks that every id is in cl with one of the kinds.
func inClosure(cl map[ID]Kind, ids []ID, kinds ...Kind) error {
	for _, id := range ids {
		k, ok := cl[id]
		if !ok {
			return fmt.Errorf("%w: object %s is not part of the ref (it may have moved: pull again)", ErrNotFound, id.Short())
		}
		okKind := false
		for _, want := range kinds {
			okKind = okKind || k == want
		}
		if !okKind {
			return fmt.Errorf("%w: object %s is a %s", ErrInvalid, id.Short(), k)
		}
	}
	return nil
}

func (h *handler) pullNegotiate(w http.ResponseWriter, r *http.Request, c *call) error {
	tip, err := h.s.Ref(r.Context(), c.ref)
	if err != nil {
		return err
	}
	hist, err := h.s.History(r.Context(), tip, MaxHistory)
	if err != nil {
		return err
	}
	return writeJSON(w, pullNegotiateResponse{Commit: tip, Commits: hist})
}

func (h *handler) pullTrees(w http.ResponseWriter, r *http.Request, c *call) error {
	var req treesRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	cl, err := h.pullClosure(r.Context(), c)
	if err != nil {
		return err
	}
	if err := inClosure(cl, req.Commits, KindCommit); err != nil {
		return err
	}
	trees, err := h.s.TreeObjects(r.Context(), req.Commits)
	if err != nil {
		return err
	}
	if len(trees) > MaxIDs {
		return fmt.Errorf("%w: %d objects under the commits (at most %d per request)", ErrTooLarge, len(trees), MaxIDs)
	}
	resp := treesResponse{Objects: make(IDList, len(trees))}
	kinds := make([]Kind, len(trees))
	for i, o := range trees {
		resp.Objects[i], kinds[i] = o.ID, o.Kind
	}
	resp.Kinds = encodeKinds(kinds)
	return writeJSON(w, resp)
}

func (h *handler) pullChunks(w http.ResponseWriter, r *http.Request, c *call) error {
	var req chunksRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	cl, err := h.pullClosure(r.Context(), c)
	if err != nil {
		return err
	}
	if err := inClosure(cl, req.Objects, KindFile, KindTensor); err != nil {
		return err
	}
	links, err := h.s.ChunkLinks(r.Context(), req.Objects)
	if err != nil {
		return err
	}
	if len(links) > MaxIDs {
		return fmt.Errorf("%w: %d chunks (at most %d per request)", ErrTooLarge, len(links), MaxIDs)
	}
	resp := chunksResponse{Chunks: make(IDList, len(links)), Deltas: IDList{}}
	for i, l := range links {
		resp.Chunks[i] = l.ID
		if !l.Base.IsZero() {
			resp.Deltas = append(resp.Deltas, l.ID, l.Base)
		}
	}
	return writeJSON(w, resp)
}

// pullObjects streams the requested objects, in order, until Options.BatchBytes
// have been sent; the end frame says how many. A failure after the first byte cuts the
// stream (no end frame), which the client treats as an interruption.
func (h *handler) pullObjects(w http.ResponseWriter, r *http.Request, c *call) error {
	var req objectsRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	cl, err := h.pullClosure(r.Context(), c)
	if err != nil {
		return err
	}
	if err := inClosure(cl, req.Objects, KindChunk, KindTensor, KindFile, KindManifest, KindCommit); err != nil {
		return err
	}
	var (
		bw   *bufio.Writer
		ow   *ObjectWriter
		sent int
		buf  []byte
	)
	for _, id := range req.Objects {
		if sent >= h.opts.BatchBytes {
			break
		}
		o, err := h.s.ReadObject(r.Context(), id, buf)
		if err != nil {
			if ow == nil {
				return err
			}
			h.opts.Logger.Error("heft remote: pull stream cut", "ref", c.ref, "object", id.String(), "error", err.Error())
			return nil
		}
		if ow == nil {
			w.Header().Set("Content-Type", objectsType)
			bw = bufio.NewWriterSize(w, 256<<10)
			ow = NewObjectWriter(bw)
		}
		if err := ow.Write(o); err != nil {
			return nil // the client went away
		}
		sent += frameSize(len(o.Data))
		buf = o.Data[:0]
	}
	if ow == nil {
		w.Header().Set("Content-Type", objectsType)
		bw = bufio.NewWriter(w)
		ow = NewObjectWriter(bw)
	}
	if err := ow.Close(); err != nil {
		return nil
	}
	_ = bw.Flush()
	return nil
}

// writeError answers an error with its status and a JSON body, and returns the
// status. Internal errors are not shown to the client.
func writeError(w http.ResponseWriter, err error) int {
	status, code := classify(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "internal server error"
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="heft"`)
	}
	writeErrorStatus(w, status, code, msg)
	return status
}

func writeErrorStatus(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", jsonType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorResponse{Error: msg, Code: code})
}

var classes = []struct {
	err    error
	status int
	code   string
}{
	{ErrUnauthorized, http.StatusUnauthorized, "unauthorized"},
	{ErrForbidden, http.StatusForbidden, "forbidden"},
	{ErrTooLarge, http.StatusRequestEntityTooLarge, "too_large"},
	{ErrIntegrity, http.StatusUnprocessableEntity, "integrity"},
	{ErrInvalid, http.StatusBadRequest, "invalid"},
	{ErrConflict, http.StatusConflict, "conflict"},
	{ErrIncomplete, http.StatusPreconditionFailed, "incomplete"},
	{ErrNotFound, http.StatusNotFound, "not_found"},
	{ErrBusy, http.StatusServiceUnavailable, "busy"},
}

func classify(err error) (int, string) {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.status, c.code
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, "too_large"
	}
	return http.StatusInternalServerError, "internal"
}

// classOf returns the error class of an error response.
func classOf(status int, code string) error {
	for _, c := range classes {
		if c.code == code {
			return c.err
		}
	}
	for _, c := range classes {
		if c.status == status {
			return c.err
		}
	}
	return nil
}
