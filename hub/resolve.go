package hub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
)

// copyBufferSize is the size of each ReadAt the handler makes on a
// FileReader. The standard 32 KiB copy would mean 128 reads per 4 MiB store
// chunk, each a chunk lookup; 1 MiB keeps that overhead small while a
// thousand concurrent downloads still fit in 1 GiB.
const copyBufferSize = 1 << 20

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// serveFile answers GET and HEAD /{ns}/{name}/resolve/{rev}/{path} (raw=false:
// the file content, §2.1, §2.3) and /{ns}/{name}/raw/{rev}/{path} (raw=true:
// the git blob as stored, i.e. the LFS pointer for LFS files, §2.4).
//
// Headers: X-Repo-Commit always (also on EntryNotFound, so Python caches the
// negative answer, §1.6); ETag = SHA-256 for LFS files and git blob SHA-1
// for regular ones (the client names its cache blob after it, §2.2);
// X-Linked-Etag and X-Linked-Size for LFS files as the Hub sends them;
// Content-Length; Accept-Ranges. The answer is always 200/206 with the bytes
// (never a redirect), so the Content-Length of a HEAD is the file size
// every client version accepts.
func (h *Handler) serveFile(w http.ResponseWriter, r *http.Request, repo string, rest []string, raw bool) {
	segs, ok := unescapeSegments(rest)
	if !ok {
		writeError(w, http.StatusBadRequest, "", "", "Malformed path")
		return
	}
	c, rev, p, err := h.resolvePath(repo, segs, true)
	note(r, slog.String("repo", repo), slog.String("revision", rev), slog.String("file", p))
	if err != nil {
		failRepos(w, r, err, repo, rev)
		return
	}
	note(r, slog.String("commit", c.ID))
	hdr := w.Header()
	hdr.Set("X-Repo-Commit", c.ID)
	s, err := h.snaps.get(c.ID)
	if err != nil {
		failRepos(w, r, err, repo, rev)
		return
	}
	n, ok := s.nodes[p]
	if !ok || n.dir {
		writeError(w, http.StatusNotFound, codeEntryNotFound, msgEntryNotFound, "Entry not found: "+p)
		return
	}

	if raw && n.lfs {
		ptr := lfsPointer(n.info.SHA256, n.info.Size)
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
		serveRange(w, r, bytes.NewReader(ptr), int64(len(ptr)), n.oid)
		return
	}
	if n.lfs {
		hdr.Set("X-Linked-Etag", quoteETag(n.etag))
		hdr.Set("X-Linked-Size", strconv.FormatInt(n.info.Size, 10))
	}
	hdr.Set("Content-Type", contentType(p))
	// Nothing is read for a HEAD: snapshot_download makes one per file, and
	// clients give it 10 s (§1.8).
	if r.Method == http.MethodHead {
		serveRange(w, r, nil, n.info.Size, n.etag)
		return
	}
	f, err := h.repos.Open(c.ID, p)
	if err != nil {
		failRepos(w, r, err, repo, rev)
		return
	}
	defer f.Close()
	if f.Size() != n.info.Size {
		failRepos(w, r, fmt.Errorf("hub: %s@%s: reader size %d, listed size %d", p, c.ID, f.Size(), n.info.Size), repo, rev)
		return
	}
	err = serveRange(w, r, f, n.info.Size, n.etag)
	var gone clientGoneError
	switch {
	case err == nil:
	case errors.As(err, &gone):
		// The client hung up (a cancelled download, or PY0's stream
		// opened and dropped before hf_transfer takes over): routine.
		note(r, slog.Bool("client_closed", true))
	default:
		// The store failed mid-body. The status line and Content-Length
		// are gone; the only honest signal left is to cut the connection,
		// so the client sees a short body (and resumes with Range) instead
		// of a clean end.
		noteError(r, err)
		panic(http.ErrAbortHandler)
	}
}

// clientGoneError marks a failure to write the response: the client went
// away, as opposed to a read failure of the store.
type clientGoneError struct{ err error }

func (e clientGoneError) Error() string { return "client gone: " + e.err.Error() }
func (e clientGoneError) Unwrap() error { return e.err }

// responseWriter wraps the body writer so that write errors can be told
// from read errors. Having only Write, it also hides the ResponseWriter's
// ReadFrom, which would copy through its own 32 KiB buffer instead of ours.
type responseWriter struct {
	w   io.Writer
	err error
}

func (rw *responseWriter) Write(p []byte) (int, error) {
	n, err := rw.w.Write(p)
	if err != nil {
		rw.err = clientGoneError{err}
	}
	return n, err
}

func quoteETag(etag string) string { return `"` + etag + `"` }

// contentType picks a type from the extension only. Sniffing would read the
// first 512 bytes even for a HEAD, and the exact type matters to no client.
func contentType(p string) string {
	if t := mime.TypeByExtension(path.Ext(p)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// serveRange writes the status and headers for a GET or HEAD of a body of
// size bytes with the given etag, honouring a single-range Range header,
// and streams the selected bytes from src (nil for a HEAD). It returns an
// error only when streaming failed after the headers were sent: a
// clientGoneError when writing failed, else the reader's error.
//
// Range rules (RFC 9110, and what clients need, §2.3):
//   - "bytes=a-b", "bytes=a-", "bytes=-n" give 206 with Content-Range; an end
//     past EOF is clamped (hf_transfer asks for one byte past the end) and a
//     suffix longer than the file means the whole file.
//   - a start at or past EOF, "bytes=-0", or a malformed spec give 416 with
//     Content-Range "bytes */size".
//   - an empty file answers any valid range with 200, an empty body and
//     "Content-Range: bytes */0": JS downloadFile always asks "bytes=0-0"
//     and reads only the size after the slash (a 416 would make it throw).
//   - several ranges, another unit, or an If-Range that does not match the
//     ETag: the Range header is ignored and the whole body sent (200), as
//     RFC 9110 allows. No client sends multi-range requests.
func serveRange(w http.ResponseWriter, r *http.Request, src io.ReaderAt, size int64, etag string) error {
	hdr := w.Header()
	hdr.Set("ETag", quoteETag(etag))
	hdr.Set("Accept-Ranges", "bytes")
	start, length := int64(0), size
	status := http.StatusOK
	spec := r.Header.Get("Range")
	if ir := r.Header.Get("If-Range"); spec != "" && ir != "" && ir != quoteETag(etag) {
		spec = "" // resuming a different version of the file: send it whole
	}
	if spec != "" {
		s, n, res := parseRange(spec, size)
		switch res {
		case rangeOK:
			start, length, status = s, n, http.StatusPartialContent
			hdr.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, s+n-1, size))
		case rangeEmptyFile:
			hdr.Set("Content-Range", "bytes */0")
		case rangeUnsatisfiable:
			hdr.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			writeError(w, http.StatusRequestedRangeNotSatisfiable, "", "", "Requested range not satisfiable: "+spec)
			return nil
		case rangeIgnore:
		}
	}
	hdr.Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(status)
	if src == nil || r.Method == http.MethodHead || length == 0 {
		return nil
	}
	rw := &responseWriter{w: w}
	var n int64
	var err error
	if rt, ok := src.(RangeWriterTo); ok {
		// The reader hands out its decoded pieces directly: one copy fewer.
		n, err = rt.WriteRangeTo(rw, start, length)
	} else {
		bufp := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(bufp)
		n, err = io.CopyBuffer(rw, io.NewSectionReader(src, start, length), *bufp)
	}
	if rw.err != nil {
		return rw.err
	}
	if err == nil && n != length {
		err = io.ErrUnexpectedEOF
	}
	return err
}

type rangeResult int

const (
	rangeIgnore        rangeResult = iota // serve the whole body
	rangeOK                               // serve [start, start+length)
	rangeUnsatisfiable                    // 416
	rangeEmptyFile                        // 200 with an empty body
)

// parseRange interprets a Range header for a body of size bytes; see
// serveRange for the rules.
func parseRange(spec string, size int64) (start, length int64, res rangeResult) {
	unit, set, ok := strings.Cut(spec, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return 0, 0, rangeIgnore
	}
	if strings.Contains(set, ",") {
		return 0, 0, rangeIgnore
	}
	first, last, ok := strings.Cut(strings.TrimSpace(set), "-")
	if !ok {
		return 0, 0, rangeUnsatisfiable
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// Suffix range: the last n bytes.
		n, err := parseNonNegative(last)
		if err != nil || n == 0 {
			return 0, 0, rangeUnsatisfiable
		}
		if size == 0 {
			return 0, 0, rangeEmptyFile
		}
		n = min(n, size)
		return size - n, n, rangeOK
	}
	a, err := parseNonNegative(first)
	if err != nil {
		return 0, 0, rangeUnsatisfiable
	}
	b := int64(-1)
	if last != "" {
		if b, err = parseNonNegative(last); err != nil || b < a {
			return 0, 0, rangeUnsatisfiable
		}
	}
	if size == 0 {
		return 0, 0, rangeEmptyFile
	}
	if a >= size {
		return 0, 0, rangeUnsatisfiable
	}
	if b < 0 || b >= size {
		b = size - 1
	}
	return a, b - a + 1, rangeOK
}

// parseNonNegative parses a run of ASCII digits (no sign, no spaces) that
// fits an int64.
func parseNonNegative(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a number")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}
