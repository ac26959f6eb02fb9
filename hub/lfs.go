package hub

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// lfsContentType is what git-lfs and the Hub use for batch bodies; the
// clients only parse the JSON (§4.4).
const lfsContentType = "application/vnd.git-lfs+json"

// batchRequest is the body of POST {repo}.git/info/lfs/objects/batch
// (§4.4).
type batchRequest struct {
	Operation string        `json:"operation"`
	Transfers []string      `json:"transfers"`
	Ref       *batchRef     `json:"ref"`
	Objects   []batchObject `json:"objects"`
	// HashAlgo is "sha256" (Python), "sha_256" (JS) or absent.
	HashAlgo string `json:"hash_algo"`
}

type batchRef struct {
	Name string `json:"name"`
}

type batchObject struct {
	OID  string `json:"oid"`
	Size int64  `json:"size"`
}

// batchResponse: "actions" is omitted, never null, for objects that are
// present (Python crashes on null and re-uploads on {}); sizes are
// integers; transfer is never "xet" (§5.2).
type batchResponse struct {
	Transfer string          `json:"transfer"`
	Objects  []batchObjReply `json:"objects"`
	HashAlgo string          `json:"hash_algo"`
}

type batchObjReply struct {
	OID           string        `json:"oid"`
	Size          int64         `json:"size"`
	Authenticated bool          `json:"authenticated,omitempty"`
	Actions       *batchActions `json:"actions,omitempty"`
	Error         *batchError   `json:"error,omitempty"`
}

type batchActions struct {
	Upload *batchAction `json:"upload,omitempty"`
	Verify *batchAction `json:"verify,omitempty"`
}

type batchAction struct {
	Href string `json:"href"`
	// Header holds, for a multipart upload, "chunk_size" and the part
	// URLs keyed "1".."N" (§4.4); nothing else is ever read from it.
	Header    map[string]string `json:"header,omitempty"`
	ExpiresIn int64             `json:"expires_in,omitempty"`
}

type batchError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// parseBatch decodes and checks an LFS batch request. Per-object problems
// (bad oid, size) are not errors here: they become per-object errors in
// the reply, as the LFS API wants.
func parseBatch(body []byte) (batchRequest, error) {
	var req batchRequest
	if err := decodeJSON(body, &req); err != nil {
		return req, err
	}
	switch req.Operation {
	case "upload":
	case "download":
		return req, errors.New("the download operation is not served: files are fetched with GET /{repo}/resolve/{revision}/{path}")
	default:
		return req, fmt.Errorf("unknown operation %q", req.Operation)
	}
	switch req.HashAlgo {
	case "", "sha256", "sha_256":
	default:
		return req, fmt.Errorf("unsupported hash_algo %q (only sha256)", req.HashAlgo)
	}
	if len(req.Transfers) > 0 && !slices.Contains(req.Transfers, "basic") && !slices.Contains(req.Transfers, "multipart") {
		return req, fmt.Errorf("none of the transfers %q is supported (basic, multipart)", req.Transfers)
	}
	if len(req.Objects) == 0 || len(req.Objects) > maxBatchObjects {
		return req, fmt.Errorf("a batch holds 1 to %d objects, got %d", maxBatchObjects, len(req.Objects))
	}
	return req, nil
}

// lfsBatch answers POST /{ns}/{name}.git/info/lfs/objects/batch: for each
// object, nothing if the repo may already use it, else where to PUT it
// (one URL, or part URLs and a completion URL when the client offers
// multipart and the object is large) and where to verify it. Every URL is
// signed (see signing.go).
func (h *Handler) lfsBatch(w http.ResponseWriter, r *http.Request, repo string) {
	note(r, slog.String("repo", repo))
	if !h.writable(w) || !h.authorizeRepo(w, r, repo, RoleWrite) {
		return
	}
	body, ok := readBody(w, r, maxBatchBody)
	if !ok {
		return
	}
	req, err := parseBatch(body)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "", "", "Invalid LFS batch request: "+err.Error())
		return
	}
	note(r, slog.Any("transfers", req.Transfers), slog.Int("objects", len(req.Objects)))
	if !h.repoExists(w, r, repo) {
		return
	}
	multipart := slices.Contains(req.Transfers, "multipart")
	base := h.baseURL(r)
	user := ""
	if id, ok := IdentityFrom(r.Context()); ok {
		user = id.Name
	}
	resp := batchResponse{Transfer: "basic", HashAlgo: "sha256", Objects: make([]batchObjReply, 0, len(req.Objects))}
	for _, o := range req.Objects {
		reply := batchObjReply{OID: o.OID, Size: o.Size}
		switch {
		case !isHex(o.OID, 64):
			reply.Error = &batchError{Code: http.StatusUnprocessableEntity, Message: "oid must be 64 lowercase hex digits (SHA-256)"}
		case o.Size < 0:
			reply.Error = &batchError{Code: http.StatusUnprocessableEntity, Message: "size must not be negative"}
		case o.Size > h.maxObjectSize:
			reply.Error = &batchError{Code: http.StatusUnprocessableEntity, Message: fmt.Sprintf("object is larger than this server accepts (%d bytes)", h.maxObjectSize)}
		default:
			size, err := h.writer.StatObject(r.Context(), repo, o.OID)
			switch {
			case err == nil && size == o.Size:
				h.metrics.objects.WithLabelValues("present").Inc()
				// present: no actions
			case err == nil:
				reply.Error = &batchError{Code: http.StatusUnprocessableEntity, Message: fmt.Sprintf("an object with this oid is stored with size %d", size)}
			case errors.Is(err, ErrObjectNotFound):
				reply.Authenticated = true
				reply.Actions = h.uploadActions(base, repo, o.OID, o.Size, user, multipart)
			default:
				noteError(r, fmt.Errorf("stat object %s: %w", o.OID, err))
				writeError(w, http.StatusInternalServerError, "", "", "Internal server error")
				return
			}
		}
		resp.Objects = append(resp.Objects, reply)
	}
	writeJSONType(w, http.StatusOK, lfsContentType, resp)
}

// uploadActions builds the signed upload and verify actions of one object.
func (h *Handler) uploadActions(base, repo, oid string, size int64, user string, multipart bool) *batchActions {
	obj := repo + "/" + oid + "/" + strconv.FormatInt(size, 10)
	ttl := int64(h.signer.ttl.Seconds())
	acts := &batchActions{
		Verify: &batchAction{
			Href:      h.signer.sign(base, http.MethodPost, "/"+uploadPrefix+"/verify/"+obj, oid, size, user),
			ExpiresIn: ttl,
		},
	}
	if !multipart || size <= h.multipartThreshold {
		acts.Upload = &batchAction{
			Href:      h.signer.sign(base, http.MethodPut, "/"+uploadPrefix+"/object/"+obj, oid, size, user),
			ExpiresIn: ttl,
		}
		return acts
	}
	// Chunks grow past the configured size for objects that would need
	// more than maxParts of them, which bounds the URLs of one object.
	chunk := max(h.chunkSize, ceilDiv(size, maxParts))
	n := ceilDiv(size, chunk)
	withChunk := obj + "/" + strconv.FormatInt(chunk, 10)
	hdr := map[string]string{"chunk_size": strconv.FormatInt(chunk, 10)}
	for i := int64(1); i <= n; i++ {
		hdr[strconv.FormatInt(i, 10)] = h.signer.sign(base, http.MethodPut, "/"+uploadPrefix+"/part/"+withChunk+"/"+strconv.FormatInt(i, 10), oid, size, user)
	}
	acts.Upload = &batchAction{
		Href:      h.signer.sign(base, http.MethodPost, "/"+uploadPrefix+"/complete/"+withChunk, oid, size, user),
		Header:    hdr,
		ExpiresIn: ttl,
	}
	return acts
}

// maxParts bounds the parts of one multipart upload (S3's limit).
const maxParts = 10_000

// ceilDiv is ⌈a/b⌉ for a ≥ 0, b > 0, without overflow.
func ceilDiv(a, b int64) int64 {
	n := a / b
	if a%b != 0 {
		n++
	}
	return n
}

// uploadTarget is what an upload URL's path names.
type uploadTarget struct {
	op          string // object, part, complete, verify
	repo, oid   string
	size, chunk int64
	part        int64
}

// parseUploadPath parses the segments after uploadPrefix (see signing.go).
// It checks form only; the signature check comes next.
func parseUploadPath(segs []string) (uploadTarget, bool) {
	var t uploadTarget
	if len(segs) < 5 {
		return t, false
	}
	t.op = segs[0]
	want := 0 // segments: op, ns, name, oid, size[, chunk[, part]]
	switch t.op {
	case "object", "verify":
		want = 5
	case "complete":
		want = 6
	case "part":
		want = 7
	}
	if want == 0 || len(segs) != want {
		return t, false
	}
	repo, ok := repoID(segs[1], segs[2])
	if !ok || !ValidRepoID(repo) || !isHex(segs[3], 64) {
		return t, false
	}
	t.repo, t.oid = repo, segs[3]
	var err error
	if t.size, err = parseNonNegative(segs[4]); err != nil {
		return t, false
	}
	if want >= 6 {
		if t.chunk, err = parseNonNegative(segs[5]); err != nil || t.chunk == 0 {
			return t, false
		}
	}
	if want == 7 {
		n := ceilDiv(t.size, t.chunk)
		if t.part, err = parseNonNegative(segs[6]); err != nil || t.part < 1 || t.part > n {
			return t, false
		}
	}
	return t, true
}

// routeUpload serves the signed upload URLs.
func (h *Handler) routeUpload(w http.ResponseWriter, r *http.Request, segs []string) {
	t, ok := parseUploadPath(segs)
	if !ok {
		writeError(w, http.StatusNotFound, "", "", "Not found")
		return
	}
	method := http.MethodPost
	switch t.op {
	case "object":
		setRoute(r, routeLFSObject)
		method = http.MethodPut
	case "part":
		setRoute(r, routeLFSPart)
		method = http.MethodPut
	case "complete":
		setRoute(r, routeLFSComplete)
	case "verify":
		setRoute(r, routeLFSVerify)
	}
	note(r, slog.String("repo", t.repo), slog.String("oid", t.oid))
	if !allowMethods(w, r, method) || !h.writable(w) {
		return
	}
	user, err := h.signer.verify(r, t.oid, t.size)
	if err != nil {
		reason := "bad_signature"
		if errors.Is(err, errURLExpired) {
			reason = "expired"
		}
		h.metrics.authFails.WithLabelValues(reason).Inc()
		writeError(w, http.StatusForbidden, "", msgForbidden, "Forbidden: "+err.Error())
		return
	}
	if user != "" {
		note(r, slog.String("user", user))
	}
	if t.size > h.maxObjectSize {
		writeError(w, http.StatusRequestEntityTooLarge, "", "", "Object too large")
		return
	}
	switch t.op {
	case "object":
		h.putObject(w, r, t)
	case "part":
		h.putPart(w, r, t)
	case "complete":
		h.completeMultipart(w, r, t)
	case "verify":
		h.verifyObject(w, r, t)
	}
}

// putObject streams a basic upload straight into Writer.StoreObject,
// through a reader that checks the size and SHA-256.
func (h *Handler) putObject(w http.ResponseWriter, r *http.Request, t uploadTarget) {
	if r.ContentLength >= 0 && r.ContentLength != t.size {
		writeError(w, http.StatusBadRequest, "", "", fmt.Sprintf("Content-Length %d, but the object has %d bytes", r.ContentLength, t.size))
		return
	}
	if err := h.storeObject(r, t.repo, t.oid, t.size, &bodyReader{r.Body}); err != nil {
		h.failWrite(w, r, err, t.repo, "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": "stored"})
}

// storeObject hands one object to the Writer through a verifying reader and
// counts the outcome.
func (h *Handler) storeObject(r *http.Request, repo, oid string, size int64, src io.Reader) error {
	err := h.writer.StoreObject(r.Context(), repo, oid, size, newVerifyingReader(src, oid, size))
	switch {
	case err == nil:
		h.metrics.objects.WithLabelValues("stored").Inc()
		h.metrics.objBytes.Add(float64(size))
		return nil
	case errors.Is(err, ErrObjectMismatch):
		h.metrics.objects.WithLabelValues("mismatch").Inc()
	default:
		h.metrics.objects.WithLabelValues("error").Inc()
	}
	return fmt.Errorf("store object %s (%d bytes): %w", oid, size, err)
}

// putPart stages one part of a multipart upload and answers with its
// SHA-256 as ETag (both clients require an ETag, §4.4).
func (h *Handler) putPart(w http.ResponseWriter, r *http.Request, t uploadTarget) {
	want := min(t.chunk, t.size-(t.part-1)*t.chunk)
	if r.ContentLength >= 0 && r.ContentLength != want {
		writeError(w, http.StatusBadRequest, "", "", fmt.Sprintf("Content-Length %d, but part %d has %d bytes", r.ContentLength, t.part, want))
		return
	}
	note(r, slog.Int64("part", t.part))
	sha, err := h.staging.putPart(uploadKey(t.repo, t.oid, t.size, t.chunk), int(t.part), want, &bodyReader{r.Body})
	var pse *partSizeError
	var be *bodyError
	switch {
	case err == nil:
	case errors.Is(err, errStagingFull):
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusServiceUnavailable, "", "", "Service unavailable: "+err.Error())
		return
	case errors.As(err, &pse), errors.As(err, &be):
		writeError(w, http.StatusBadRequest, "", "", "Bad request: "+err.Error())
		return
	default:
		noteError(r, err)
		writeError(w, http.StatusInternalServerError, "", "", "Internal server error")
		return
	}
	w.Header().Set("ETag", quoteETag(sha))
	writeJSON(w, http.StatusOK, map[string]string{"etag": sha})
}

// completeRequest is the body of the multipart completion POST (§4.4).
type completeRequest struct {
	OID   string `json:"oid"`
	Parts []struct {
		PartNumber int64  `json:"partNumber"`
		ETag       string `json:"etag"`
	} `json:"parts"`
}

// parseComplete checks a completion body against the upload and returns
// the part SHA-256s in part order.
func parseComplete(body []byte, oid string, n int64) ([]string, error) {
	var req completeRequest
	if err := decodeJSON(body, &req); err != nil {
		return nil, err
	}
	if req.OID != oid {
		return nil, fmt.Errorf("oid %q does not match the upload URL", req.OID)
	}
	if int64(len(req.Parts)) != n {
		return nil, fmt.Errorf("%d parts listed, the upload has %d", len(req.Parts), n)
	}
	shas := make([]string, n)
	for _, p := range req.Parts {
		if p.PartNumber < 1 || p.PartNumber > n || shas[p.PartNumber-1] != "" {
			return nil, fmt.Errorf("part number %d is out of range or repeated", p.PartNumber)
		}
		etag := strings.Trim(strings.TrimPrefix(strings.TrimSpace(p.ETag), "W/"), `"`)
		if !isHex(etag, 64) {
			return nil, fmt.Errorf("part %d: etag %q is not one this server returned", p.PartNumber, p.ETag)
		}
		shas[p.PartNumber-1] = etag
	}
	return shas, nil
}

// completeMultipart feeds the staged parts, in order, to Writer.StoreObject
// and removes them. Completion requests of one upload are serialised; a
// repeated one after success finds the object stored and succeeds.
func (h *Handler) completeMultipart(w http.ResponseWriter, r *http.Request, t uploadTarget) {
	body, ok := readBody(w, r, maxJSONBody)
	if !ok {
		return
	}
	n := ceilDiv(t.size, t.chunk)
	shas, err := parseComplete(body, t.oid, n)
	if err != nil {
		writeError(w, http.StatusBadRequest, "", "", "Invalid completion request: "+err.Error())
		return
	}
	key := uploadKey(t.repo, t.oid, t.size, t.chunk)
	unlock := h.staging.lock(key)
	defer unlock()
	if size, err := h.writer.StatObject(r.Context(), t.repo, t.oid); err == nil && size == t.size {
		h.staging.remove(key)
		writeJSON(w, http.StatusOK, map[string]string{"message": "stored"})
		return
	}
	rc, err := h.staging.openParts(key, shas, t.size, t.chunk)
	var mpe *missingPartError
	var pse *partSizeError
	switch {
	case err == nil:
	case errors.As(err, &mpe), errors.As(err, &pse):
		writeError(w, http.StatusBadRequest, "", "", "Invalid completion request: "+err.Error())
		return
	default:
		noteError(r, err)
		writeError(w, http.StatusInternalServerError, "", "", "Internal server error")
		return
	}
	err = h.storeObject(r, t.repo, t.oid, t.size, rc)
	rc.Close()
	if err == nil || errors.Is(err, ErrObjectMismatch) {
		// Stored, or the parts make another object: either way they are
		// of no further use.
		h.staging.remove(key)
	}
	if err != nil {
		h.failWrite(w, r, err, t.repo, "")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": "stored"})
}

// verifyObject answers the verify action (Python only, §4.4): 200 if the
// repo may use the object with the announced size, else 404.
func (h *Handler) verifyObject(w http.ResponseWriter, r *http.Request, t uploadTarget) {
	body, ok := readBody(w, r, maxJSONBody)
	if !ok {
		return
	}
	if len(body) > 0 {
		var req batchObject
		if err := decodeJSON(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, "", "", "Invalid verify request: "+err.Error())
			return
		}
		if req.OID != t.oid || req.Size != t.size {
			writeError(w, http.StatusBadRequest, "", "", "Invalid verify request: oid or size does not match the URL")
			return
		}
	}
	size, err := h.writer.StatObject(r.Context(), t.repo, t.oid)
	switch {
	case err == nil && size == t.size:
		writeJSON(w, http.StatusOK, map[string]string{"message": "verified"})
	case err == nil || errors.Is(err, ErrObjectNotFound):
		writeError(w, http.StatusNotFound, "", "", "Object not found: it was not uploaded, or not completely")
	default:
		noteError(r, err)
		writeError(w, http.StatusInternalServerError, "", "", "Internal server error")
	}
}

// verifyingReader passes through exactly size bytes whose SHA-256 is oid.
// Instead of io.EOF it returns an *ObjectMismatchError when the content is
// shorter, longer or different, so that a Writer that reads to EOF cannot
// take wrong content for right (perkeep's Receive pattern: verification in
// one place). Errors of the underlying reader come back as *bodyError
// when it is a request body.
type verifyingReader struct {
	r    io.Reader
	oid  string
	size int64
	h    hash.Hash
	n    int64
	err  error // sticky
}

func newVerifyingReader(r io.Reader, oid string, size int64) *verifyingReader {
	return &verifyingReader{r: r, oid: oid, size: size, h: sha256.New()}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	// Never ask for more than one byte past the end: enough to see that
	// there is too much.
	if room := v.size - v.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := v.r.Read(p)
	if v.n+int64(n) > v.size {
		keep := int(v.size - v.n)
		v.h.Write(p[:keep])
		v.n = v.size + 1
		v.err = &ObjectMismatchError{OID: v.oid, Size: v.size, GotSize: v.n}
		return keep, v.err
	}
	v.h.Write(p[:n])
	v.n += int64(n)
	switch {
	case err == io.EOF:
		if got := hex.EncodeToString(v.h.Sum(nil)); v.n != v.size || got != v.oid {
			v.err = &ObjectMismatchError{OID: v.oid, Size: v.size, GotOID: got, GotSize: v.n}
		} else {
			v.err = io.EOF
		}
		return n, v.err
	case err != nil:
		v.err = err
		return n, err
	}
	return n, nil
}

// bodyError marks a failure to read the request body (the client went away
// or sent a broken chunked body): a 400, not a store failure.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// bodyReader wraps a request body so that its errors are *bodyError.
type bodyReader struct{ r io.Reader }

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			err = &bodyError{err}
		}
	}
	return n, err
}

// json helpers shared by the write endpoints.

// decodeJSON decodes exactly one JSON value from body into v.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed JSON: %w", err)
	}
	// Only JSON's own whitespace may follow (bytes.TrimSpace would also let
	// \v, \f and Unicode spaces through: found by FuzzSmallBodies).
	if len(bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n")) != 0 {
		return errors.New("malformed JSON: data after the value")
	}
	return nil
}
