package hub

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
)

// Commit bodies (§4.5). The NDJSON form is one JSON object per line:
//
//	{"key":"header","value":{"summary":…,"description":…,"parentCommit":…}}
//	{"key":"file","value":{"path":…,"content":"<base64>","encoding":"base64"}}
//	{"key":"lfsFile","value":{"path":…,"algo":"sha256","oid":…,"size":…}}
//	{"key":"deletedFile","value":{"path":…}}
//	{"key":"deletedFolder","value":{"path":…}}
//
// Python ends every line with "\n", JS joins lines with "\n". A "file" line
// holds a whole file, so lines are read with a bufio.Reader up to a limit
// derived from the largest inline file, never with a 64 KiB Scanner. The
// JSON form (Content-Type application/json), which the Hub also takes and
// older clients sent, is one object with the header fields at the top
// level and the arrays files, lfsFiles, deletedFiles and deletedFolders; it
// is read element by element with a json.Decoder.

// commitHeader is the header line, or the top-level fields of the JSON form.
type commitHeader struct {
	Summary      string `json:"summary"`
	Description  string `json:"description"`
	ParentCommit string `json:"parentCommit"`
}

type commitFileValue struct {
	Path     string  `json:"path"`
	Content  *string `json:"content"`
	Encoding string  `json:"encoding"`
	OldPath  string  `json:"oldPath"`
}

type commitLFSValue struct {
	Path    string `json:"path"`
	Algo    string `json:"algo"`
	OID     string `json:"oid"`
	Size    *int64 `json:"size"`
	OldPath string `json:"oldPath"`
}

type commitPathValue struct {
	Path string `json:"path"`
}

// commitEntry is one parsed operation. For an inline file content holds the
// decoded bytes; for an LFS file size is -1 when the client sent none.
type commitEntry struct {
	kind    OpKind
	path    string
	lfs     bool
	content []byte
	oid     string
	size    int64
}

// commitLimits bound what parseCommit accepts.
type commitLimits struct {
	maxInline int64 // decoded bytes of one inline file
	maxOps    int
}

// maxLine is the longest NDJSON line: a base64 inline file of maxInline
// bytes plus room for the path and JSON punctuation.
func (l commitLimits) maxLine() int {
	return int(base64.StdEncoding.EncodedLen(int(l.maxInline))) + 64<<10
}

// commitSyntaxError is a malformed or invalid commit body (400).
type commitSyntaxError struct{ msg string }

func (e *commitSyntaxError) Error() string { return e.msg }

func syntaxErrorf(format string, args ...any) error {
	return &commitSyntaxError{msg: fmt.Sprintf(format, args...)}
}

// errInlineTooLarge is an inline file over the limit (413).
var errInlineTooLarge = errors.New("inline file too large")

// parseCommit reads a commit body in NDJSON or JSON form (by contentType),
// calls fn for each operation as soon as it is read (so that inline files
// are stored and dropped one at a time), and returns the header. It fails
// with a *commitSyntaxError for a malformed body, an error wrapping
// errInlineTooLarge for an oversized inline file, the reader's error, or
// fn's error.
func parseCommit(r io.Reader, contentType string, lim commitLimits, fn func(commitEntry) error) (commitHeader, error) {
	ct, _, _ := mime.ParseMediaType(contentType)
	p := &commitParser{lim: lim, fn: fn}
	var err error
	if ct == "application/json" {
		err = p.parseJSON(r)
	} else {
		err = p.parseNDJSON(r)
	}
	if err != nil {
		return commitHeader{}, err
	}
	if !p.haveHeader {
		return commitHeader{}, syntaxErrorf("the commit has no header (summary)")
	}
	return p.header, nil
}

type commitParser struct {
	lim        commitLimits
	fn         func(commitEntry) error
	header     commitHeader
	haveHeader bool
	ops        int
}

func (p *commitParser) parseNDJSON(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	max := p.lim.maxLine()
	var line []byte
	for lineNo := 1; ; lineNo++ {
		line = line[:0]
		var err error
		for {
			var frag []byte
			frag, err = br.ReadSlice('\n')
			if len(line)+len(frag) > max {
				return fmt.Errorf("line %d: %w (more than %d bytes of base64)", lineNo, errInlineTooLarge, max)
			}
			line = append(line, frag...)
			if err != bufio.ErrBufferFull {
				break
			}
		}
		if err != nil && err != io.EOF {
			return err
		}
		if t := bytes.TrimSpace(line); len(t) > 0 {
			if perr := p.line(t); perr != nil {
				var se *commitSyntaxError
				if errors.As(perr, &se) {
					return syntaxErrorf("line %d: %s", lineNo, se.msg)
				}
				return perr
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// line handles one NDJSON line.
func (p *commitParser) line(b []byte) error {
	var l struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return syntaxErrorf("malformed JSON: %v", err)
	}
	if len(l.Value) == 0 || bytes.Equal(l.Value, []byte("null")) {
		return syntaxErrorf("%q line without a value", l.Key)
	}
	if l.Key == "header" {
		var hdr commitHeader
		if err := json.Unmarshal(l.Value, &hdr); err != nil {
			return syntaxErrorf("header: %v", err)
		}
		return p.setHeader(hdr)
	}
	return p.op(l.Key, func(v any) error { return json.Unmarshal(l.Value, v) })
}

func (p *commitParser) setHeader(hdr commitHeader) error {
	if p.haveHeader {
		return syntaxErrorf("a second header")
	}
	p.header, p.haveHeader = hdr, true
	return nil
}

// op decodes one operation of kind key with decode and hands it to fn.
func (p *commitParser) op(key string, decode func(any) error) error {
	if p.ops++; p.ops > p.lim.maxOps {
		return syntaxErrorf("more than %d operations", p.lim.maxOps)
	}
	var e commitEntry
	switch key {
	case "file":
		var v commitFileValue
		if err := decode(&v); err != nil {
			return syntaxErrorf("file: %v", err)
		}
		if v.OldPath != "" {
			return syntaxErrorf("file %q: renames (oldPath) are not supported", v.Path)
		}
		if v.Content == nil {
			return syntaxErrorf("file %q: no content", v.Path)
		}
		if !ValidPath(v.Path) {
			return syntaxErrorf("file: invalid path %q", v.Path)
		}
		// Refuse before decoding what is certainly too large (base64
		// decodes to at least DecodedLen-2 bytes).
		least := int64(len(*v.Content))
		if enc := strings.ToLower(v.Encoding); enc == "" || enc == "base64" {
			least = int64(base64.StdEncoding.DecodedLen(len(*v.Content))) - 2
		}
		if least > p.lim.maxInline {
			return fmt.Errorf("file %q: %w (limit %d bytes)", v.Path, errInlineTooLarge, p.lim.maxInline)
		}
		data, err := decodeContent(*v.Content, v.Encoding)
		if err != nil {
			return syntaxErrorf("file %q: %v", v.Path, err)
		}
		if int64(len(data)) > p.lim.maxInline {
			return fmt.Errorf("file %q: %w (limit %d bytes)", v.Path, errInlineTooLarge, p.lim.maxInline)
		}
		e = commitEntry{kind: OpAdd, path: v.Path, content: data, size: int64(len(data))}
	case "lfsFile":
		var v commitLFSValue
		if err := decode(&v); err != nil {
			return syntaxErrorf("lfsFile: %v", err)
		}
		if v.OldPath != "" {
			return syntaxErrorf("lfsFile %q: renames (oldPath) are not supported", v.Path)
		}
		if !ValidPath(v.Path) {
			return syntaxErrorf("lfsFile: invalid path %q", v.Path)
		}
		if v.Algo != "" && v.Algo != "sha256" {
			return syntaxErrorf("lfsFile %q: unsupported algo %q", v.Path, v.Algo)
		}
		oid := strings.ToLower(v.OID)
		if !isHex(oid, 64) {
			return syntaxErrorf("lfsFile %q: oid must be 64 hex digits", v.Path)
		}
		size := int64(-1)
		if v.Size != nil {
			if *v.Size < 0 {
				return syntaxErrorf("lfsFile %q: negative size", v.Path)
			}
			size = *v.Size
		}
		e = commitEntry{kind: OpAdd, path: v.Path, lfs: true, oid: oid, size: size}
	case "deletedFile", "deletedFolder":
		var v commitPathValue
		if err := decode(&v); err != nil {
			return syntaxErrorf("%s: %v", key, err)
		}
		path, kind := v.Path, OpDeleteFile
		if key == "deletedFolder" {
			path, kind = strings.TrimSuffix(path, "/"), OpDeleteFolder
		}
		if !ValidPath(path) {
			return syntaxErrorf("%s: invalid path %q", key, v.Path)
		}
		e = commitEntry{kind: kind, path: path}
	default:
		return syntaxErrorf("unknown key %q", key)
	}
	return p.fn(e)
}

// jsonArrays maps the arrays of the JSON form to NDJSON keys.
var jsonArrays = map[string]string{
	"files":          "file",
	"lfsFiles":       "lfsFile",
	"deletedFiles":   "deletedFile",
	"deletedFolders": "deletedFolder",
}

func (p *commitParser) parseJSON(r io.Reader) error {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	var hdr commitHeader
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonErr(err)
		}
		key, _ := tok.(string)
		switch key {
		case "summary":
			err = dec.Decode(&hdr.Summary)
		case "description":
			err = dec.Decode(&hdr.Description)
		case "parentCommit":
			err = dec.Decode(&hdr.ParentCommit)
		default:
			kind, ok := jsonArrays[key]
			if !ok {
				var skip json.RawMessage
				err = dec.Decode(&skip)
				break
			}
			if err := expectDelim(dec, '['); err != nil {
				return err
			}
			for dec.More() {
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					return jsonErr(err)
				}
				if err := p.op(kind, func(v any) error { return json.Unmarshal(raw, v) }); err != nil {
					return err
				}
			}
			if err := expectDelim(dec, ']'); err != nil {
				return err
			}
		}
		if err != nil {
			return jsonErr(err)
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return syntaxErrorf("malformed JSON: data after the commit object")
	}
	return p.setHeader(hdr)
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return syntaxErrorf("malformed JSON: want %q, got %v", want, tok)
	}
	return nil
}

// jsonErr keeps reader errors (a body over its limit, a client gone) apart
// from syntax errors.
func jsonErr(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	if errors.As(err, &se) || errors.As(err, &te) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return syntaxErrorf("malformed JSON: %v", err)
	}
	return err
}

// opError is a commit operation the handler refuses (400) with a message
// naming the file.
type opError struct{ msg string }

func (e *opError) Error() string { return e.msg }

// commit answers POST /api/models/{repo}/commit/{rev}: it stores inline
// files as they are parsed, checks that every LFS file names an object the
// repo may use, then hands the operations to Writer.CreateCommit, which
// makes them visible at once. The answer carries commitOid and commitUrl
// (§4.5).
func (h *Handler) commit(w http.ResponseWriter, r *http.Request, repo string, rest []string) {
	rev, ok := requestRevision(rest)
	if !ok {
		writeError(w, http.StatusBadRequest, "", "", "Malformed revision")
		return
	}
	note(r, slog.String("repo", repo), slog.String("revision", rev))
	if queryBool(r.URL.Query().Get("create_pr")) {
		writeError(w, http.StatusBadRequest, "", "", "Pull requests (create_pr) are not supported by this server: commit to a branch")
		return
	}
	// Fail fast, before reading a large body, when the repo or branch is
	// missing; CreateCommit checks again atomically.
	if _, err := h.repos.Resolve(repo, rev); err != nil || rev == "" {
		if err == nil {
			err = ErrRevisionNotFound
		}
		h.metrics.commits.WithLabelValues("rejected").Inc()
		failRepos(w, r, err, repo, rev)
		return
	}
	lim := commitLimits{maxInline: h.maxInlineFile, maxOps: maxCommitOps}
	limit := h.maxCommitBytes
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		// The JSON form is decoded an array element at a time, but an
		// element is buffered whole, so its body gets the bound of a few
		// NDJSON lines rather than of a whole commit.
		limit = min(limit, 2*int64(lim.maxLine()))
	}
	body := &bodyReader{http.MaxBytesReader(w, r.Body, limit)}
	var ops []Operation
	hdr, err := parseCommit(body, r.Header.Get("Content-Type"), lim, func(e commitEntry) error {
		switch {
		case e.kind == OpAdd && !e.lfs:
			oid, err := h.storeInline(r, repo, e.content)
			if err != nil {
				return err
			}
			ops = append(ops, Operation{Kind: OpAdd, Path: e.path, OID: oid, Size: e.size})
		case e.kind == OpAdd:
			size, err := h.writer.StatObject(r.Context(), repo, e.oid)
			if errors.Is(err, ErrObjectNotFound) {
				return &opError{fmt.Sprintf("lfsFile %s: object %s was not uploaded to this repository (LFS batch and PUT first)", e.path, e.oid)}
			}
			if err != nil {
				return fmt.Errorf("stat object %s: %w", e.oid, err)
			}
			if e.size >= 0 && e.size != size {
				return &opError{fmt.Sprintf("lfsFile %s: object %s has %d bytes, not %d", e.path, e.oid, size, e.size)}
			}
			ops = append(ops, Operation{Kind: OpAdd, Path: e.path, OID: e.oid, Size: size, LFS: true})
		default:
			ops = append(ops, Operation{Kind: e.kind, Path: e.path})
		}
		return nil
	})
	var se *commitSyntaxError
	var oe *opError
	switch {
	case err == nil:
	case errors.As(err, &se):
		writeError(w, http.StatusBadRequest, "", "", "Invalid commit: "+se.msg)
	case errors.As(err, &oe):
		writeError(w, http.StatusBadRequest, "", "", "Invalid commit: "+oe.msg)
	case errors.Is(err, errInlineTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "", "", "Invalid commit: "+err.Error()+"; send large files through LFS (preupload says which)")
	default:
		h.failWrite(w, r, err, repo, rev)
	}
	if err != nil {
		h.metrics.commits.WithLabelValues("rejected").Inc()
		return
	}
	parent := strings.ToLower(hdr.ParentCommit)
	if parent != "" && !validParentCommit(parent) {
		h.metrics.commits.WithLabelValues("rejected").Inc()
		writeError(w, http.StatusBadRequest, "", "", "Invalid commit: parentCommit must be 5 to 40 hex digits")
		return
	}
	if strings.TrimSpace(hdr.Summary) == "" {
		h.metrics.commits.WithLabelValues("rejected").Inc()
		writeError(w, http.StatusBadRequest, "", "", "Invalid commit: the summary (commit message) is empty")
		return
	}
	note(r, slog.Int("operations", len(ops)))
	c, err := h.writer.CreateCommit(r.Context(), CommitRequest{
		Repo: repo, Branch: rev, ParentCommit: parent, Operations: ops,
		Summary: hdr.Summary, Description: hdr.Description, Author: author(r),
	})
	if err != nil {
		result := "error"
		switch {
		case errors.Is(err, ErrParentMismatch), errors.Is(err, ErrConflict):
			result = "conflict"
		case errors.Is(err, ErrEntryNotFound), errors.Is(err, ErrPathConflict), errors.Is(err, ErrObjectNotFound),
			errors.Is(err, ErrRepoNotFound), errors.Is(err, ErrRevisionNotFound):
			result = "rejected"
		}
		h.metrics.commits.WithLabelValues(result).Inc()
		h.failWrite(w, r, err, repo, rev)
		return
	}
	h.metrics.commits.WithLabelValues("ok").Inc()
	note(r, slog.String("commit", c.ID))
	writeJSON(w, http.StatusOK, map[string]any{
		"success":    true,
		"commitOid":  c.ID,
		"commitUrl":  h.baseURL(r) + "/" + repo + "/commit/" + c.ID,
		"hookOutput": "",
	})
}
