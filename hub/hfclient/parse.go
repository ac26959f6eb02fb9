package hfclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Decoders of every response body the client reads. Each checks what the
// client relies on and fails with an error wrapping ErrProtocol; the fuzz
// targets (fuzz_test.go) hold them to never panicking and to accepting only
// what they document.

// maxJSONResponse bounds a JSON response body (a tree page of a large repo
// is a few MB).
const maxJSONResponse = 64 << 20

var (
	commitIDRe = regexp.MustCompile(`^[0-9a-f]{40}$`)
	sha256Re   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	repoPartRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// ValidRepoID checks a model repo id the way huggingface_hub does (§1.2):
// "namespace/name", each of [A-Za-z0-9_.-], no "--" or "..", not starting or
// ending with "-" or ".", not ending with ".git", at most 96 characters.
func ValidRepoID(id string) bool {
	ns, name, ok := strings.Cut(id, "/")
	if !ok || len(id) > 96 || strings.Contains(id, "--") || strings.Contains(id, "..") || strings.HasSuffix(id, ".git") {
		return false
	}
	for _, p := range []string{ns, name} {
		if !repoPartRe.MatchString(p) || strings.ContainsAny(p[:1]+p[len(p)-1:], "-.") {
			return false
		}
	}
	return true
}

// RepoInfo is what GET /api/models/{repo}/revision/{rev} says (§3.1).
type RepoInfo struct {
	ID           string
	SHA          string // the commit the revision resolved to
	LastModified string
	Private      bool
	// Siblings lists every file; with blobs=true each has Size, BlobID and,
	// for LFS files, SHA256.
	Siblings []RepoFile
}

// RepoFile is one file of a revision.
type RepoFile struct {
	Path string
	Size int64
	// BlobID is the git blob id (SHA-1): of the content for files kept in git,
	// of the LFS pointer for LFS files. May be empty in repo info without
	// blobs.
	BlobID string
	// SHA256 is the LFS oid, the SHA-256 of the content; empty for files kept
	// in git, which are identified by BlobID.
	SHA256 string
}

// LFS reports whether the file is stored with Git LFS.
func (f RepoFile) LFS() bool { return f.SHA256 != "" }

type repoInfoJSON struct {
	ID           string  `json:"id"`
	SHA          *string `json:"sha"`
	LastModified string  `json:"lastModified"`
	Private      bool    `json:"private"`
	Siblings     []struct {
		RFilename string `json:"rfilename"`
		Size      *int64 `json:"size"`
		BlobID    string `json:"blobId"`
		LFS       *struct {
			SHA256 string `json:"sha256"`
			Size   int64  `json:"size"`
		} `json:"lfs"`
	} `json:"siblings"`
}

// parseRepoInfo decodes a repo info body. The sha must be a 40-hex commit
// id; siblings need a path, and sizes and LFS hashes where present must be
// well formed. sized reports whether every sibling has a size.
func parseRepoInfo(body []byte) (info *RepoInfo, sized bool, err error) {
	var j repoInfoJSON
	if err := json.Unmarshal(body, &j); err != nil {
		return nil, false, fmt.Errorf("%w: repo info: %v", ErrProtocol, err)
	}
	if j.SHA == nil || !commitIDRe.MatchString(*j.SHA) {
		return nil, false, fmt.Errorf("%w: repo info has no 40-hex commit sha", ErrProtocol)
	}
	info = &RepoInfo{ID: j.ID, SHA: *j.SHA, LastModified: j.LastModified, Private: j.Private}
	sized = true
	seen := map[string]bool{}
	for _, s := range j.Siblings {
		if s.RFilename == "" || seen[s.RFilename] {
			return nil, false, fmt.Errorf("%w: repo info lists an empty or repeated file name %q", ErrProtocol, s.RFilename)
		}
		seen[s.RFilename] = true
		f := RepoFile{Path: s.RFilename, Size: -1, BlobID: s.BlobID}
		if s.Size != nil {
			if *s.Size < 0 {
				return nil, false, fmt.Errorf("%w: repo info: %s has a negative size", ErrProtocol, s.RFilename)
			}
			f.Size = *s.Size
		} else {
			sized = false
		}
		if s.LFS != nil {
			if !sha256Re.MatchString(s.LFS.SHA256) || (s.Size != nil && s.LFS.Size != *s.Size) {
				return nil, false, fmt.Errorf("%w: repo info: %s has a malformed lfs entry", ErrProtocol, s.RFilename)
			}
			f.SHA256 = s.LFS.SHA256
		}
		info.Siblings = append(info.Siblings, f)
	}
	return info, sized, nil
}

type treeEntryJSON struct {
	Type string `json:"type"`
	Path string `json:"path"`
	OID  string `json:"oid"`
	Size *int64 `json:"size"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size *int64 `json:"size"`
	} `json:"lfs"`
}

// parseTree decodes one page of a tree listing (§3.2): a JSON array of file
// and directory entries. Directories are dropped; files need a path and a
// non-negative size, and an lfs entry with a 64-hex oid and the same size.
func parseTree(body []byte) ([]RepoFile, error) {
	var entries []treeEntryJSON
	if err := json.Unmarshal(body, &entries); err != nil {
		return nil, fmt.Errorf("%w: tree listing: %v", ErrProtocol, err)
	}
	out := make([]RepoFile, 0, len(entries))
	for _, e := range entries {
		switch e.Type {
		case "directory":
			continue
		case "file":
		default:
			return nil, fmt.Errorf("%w: tree entry %q has type %q", ErrProtocol, e.Path, e.Type)
		}
		if e.Path == "" || e.Size == nil || *e.Size < 0 {
			return nil, fmt.Errorf("%w: tree entry %q has no path or size", ErrProtocol, e.Path)
		}
		f := RepoFile{Path: e.Path, Size: *e.Size, BlobID: strings.ToLower(e.OID)}
		if e.LFS != nil {
			oid := strings.ToLower(e.LFS.OID)
			if !sha256Re.MatchString(oid) || (e.LFS.Size != nil && *e.LFS.Size != *e.Size) {
				return nil, fmt.Errorf("%w: tree entry %q has a malformed lfs entry", ErrProtocol, e.Path)
			}
			f.SHA256 = oid
		}
		out = append(out, f)
	}
	return out, nil
}

// parseNextLink returns the URL of a Link header's rel="next" (§3.2), or "".
func parseNextLink(h string) string {
	for _, part := range strings.Split(h, ",") {
		part = strings.TrimSpace(part)
		if !strings.HasPrefix(part, "<") {
			continue
		}
		end := strings.IndexByte(part, '>')
		if end < 0 {
			continue
		}
		u, params := part[1:end], part[end+1:]
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(k, "rel") && strings.Trim(v, `"`) == "next" {
				return u
			}
		}
	}
	return ""
}

// parseContentRange parses "bytes a-b/total" ("*" for an unknown total gives
// total -1).
func parseContentRange(v string) (first, last, total int64, err error) {
	bad := fmt.Errorf("%w: Content-Range %q", ErrProtocol, v)
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil || first < 0 {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= last {
			return 0, 0, 0, bad
		}
	}
	return first, last, total, nil
}

// UploadMode is the preupload answer for one file (§4.3).
type UploadMode struct {
	Path string
	// LFS: upload through the LFS batch API; else inline in the commit.
	LFS bool
	// ShouldIgnore: .gitignore excludes the file; it is not uploaded.
	ShouldIgnore bool
	// OID is the remote file at that path on the revision (SHA-256 for LFS
	// files, git blob id otherwise), "" when there is none.
	OID string
}

// parsePreupload decodes a preupload answer and checks that it has exactly
// one entry for each path asked about, in any order.
func parsePreupload(body []byte, asked []string) (map[string]UploadMode, error) {
	var j struct {
		Files []struct {
			Path         string  `json:"path"`
			UploadMode   string  `json:"uploadMode"`
			ShouldIgnore *bool   `json:"shouldIgnore"`
			OID          *string `json:"oid"`
		} `json:"files"`
	}
	if err := json.Unmarshal(body, &j); err != nil {
		return nil, fmt.Errorf("%w: preupload: %v", ErrProtocol, err)
	}
	want := map[string]bool{}
	for _, p := range asked {
		want[p] = true
	}
	out := make(map[string]UploadMode, len(j.Files))
	for _, f := range j.Files {
		if f.UploadMode != "lfs" && f.UploadMode != "regular" {
			return nil, fmt.Errorf("%w: preupload: %s has upload mode %q", ErrProtocol, f.Path, f.UploadMode)
		}
		if !want[f.Path] {
			return nil, fmt.Errorf("%w: preupload answers for %q, which was not asked about", ErrProtocol, f.Path)
		}
		m := UploadMode{Path: f.Path, LFS: f.UploadMode == "lfs"}
		if f.ShouldIgnore != nil {
			m.ShouldIgnore = *f.ShouldIgnore
		}
		if f.OID != nil {
			m.OID = strings.ToLower(*f.OID)
		}
		out[f.Path] = m
	}
	for _, p := range asked {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("%w: preupload does not answer for %q", ErrProtocol, p)
		}
	}
	return out, nil
}

// LFSAction is where to send an object (§4.4).
type LFSAction struct {
	Href string
	// Header: for a multipart upload, "chunk_size" and the part URLs keyed
	// "1".."N"; nothing else is used.
	Header map[string]string
}

// LFSObject is the batch answer for one object. Upload is nil when the
// server has the object already.
type LFSObject struct {
	OID    string
	Size   int64
	Upload *LFSAction
	Verify *LFSAction
}

// parseBatch decodes an LFS batch answer: objects need a 64-hex oid and an
// integer size and must have been asked for (asked maps oid → size); an
// object error or a "xet" transfer fails the batch; upload and verify hrefs
// must be strings; header values may be strings or numbers.
func parseBatch(body []byte, asked map[string]int64) ([]LFSObject, error) {
	var j struct {
		Transfer string `json:"transfer"`
		Objects  []struct {
			OID     string          `json:"oid"`
			Size    json.Number     `json:"size"`
			Actions json.RawMessage `json:"actions"`
			Error   *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		} `json:"objects"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: LFS batch: %v", ErrProtocol, err)
	}
	if j.Transfer == "xet" {
		return nil, fmt.Errorf("%w: the server wants a Xet transfer, which this client does not speak (only basic and multipart were offered)", ErrProtocol)
	}
	out := make([]LFSObject, 0, len(j.Objects))
	for _, o := range j.Objects {
		size, err := strconv.ParseInt(string(o.Size), 10, 64)
		if err != nil || size < 0 {
			return nil, fmt.Errorf("%w: LFS batch: object %q has size %q", ErrProtocol, o.OID, o.Size)
		}
		want, ok := asked[o.OID]
		if !ok || want != size {
			return nil, fmt.Errorf("%w: LFS batch answers for object %s (%d bytes), which was not asked for", ErrProtocol, o.OID, size)
		}
		if o.Error != nil {
			return nil, fmt.Errorf("%w: LFS batch: object %s: %d %s", ErrProtocol, o.OID, o.Error.Code, o.Error.Message)
		}
		obj := LFSObject{OID: o.OID, Size: size}
		if len(o.Actions) > 0 && string(o.Actions) != "null" {
			var acts struct {
				Upload, Verify *struct {
					Href   *string                    `json:"href"`
					Header map[string]json.RawMessage `json:"header"`
				}
			}
			if err := json.Unmarshal(o.Actions, &acts); err != nil {
				return nil, fmt.Errorf("%w: LFS batch: object %s: actions: %v", ErrProtocol, o.OID, err)
			}
			for _, a := range []struct {
				src *struct {
					Href   *string                    `json:"href"`
					Header map[string]json.RawMessage `json:"header"`
				}
				dst **LFSAction
			}{{acts.Upload, &obj.Upload}, {acts.Verify, &obj.Verify}} {
				if a.src == nil {
					continue
				}
				if a.src.Href == nil || *a.src.Href == "" {
					return nil, fmt.Errorf("%w: LFS batch: object %s: an action without href", ErrProtocol, o.OID)
				}
				act := &LFSAction{Href: *a.src.Href, Header: map[string]string{}}
				for k, raw := range a.src.Header {
					var s string
					if json.Unmarshal(raw, &s) == nil {
						act.Header[k] = s
						continue
					}
					var n json.Number
					if json.Unmarshal(raw, &n) == nil {
						act.Header[k] = n.String()
						continue
					}
					return nil, fmt.Errorf("%w: LFS batch: object %s: header %q is neither a string nor a number", ErrProtocol, o.OID, k)
				}
				*a.dst = act
			}
		}
		out = append(out, obj)
	}
	return out, nil
}

// CommitInfo is the answer to a commit (§4.5).
type CommitInfo struct {
	OID string // the new commit, 40 hex digits
	URL string
}

// parseCommit decodes a commit answer: commitOid must be a 40-hex id.
func parseCommit(body []byte) (*CommitInfo, error) {
	var j struct {
		CommitOID string `json:"commitOid"`
		CommitURL string `json:"commitUrl"`
	}
	if err := json.Unmarshal(body, &j); err != nil {
		return nil, fmt.Errorf("%w: commit answer: %v", ErrProtocol, err)
	}
	oid := strings.ToLower(j.CommitOID)
	if !commitIDRe.MatchString(oid) {
		return nil, fmt.Errorf("%w: commit answer has no 40-hex commitOid", ErrProtocol)
	}
	return &CommitInfo{OID: oid, URL: j.CommitURL}, nil
}

// parseCreateRepo reads the url of a create-repo answer (200 or 409).
func parseCreateRepo(body []byte) string {
	var j struct {
		URL string `json:"url"`
	}
	_ = json.Unmarshal(body, &j)
	return j.URL
}
