package hub

import (
	"strings"
	"unicode/utf8"
)

// Limits on names, from what the clients accept (§1.2) and what git and
// file systems can hold.
const (
	maxRepoIDLen  = 96   // PY validate_repo_id
	maxPathLen    = 1000 // bytes of a file path in a repo
	maxSegmentLen = 255  // bytes of one path segment (a file name)
	maxRefLen     = 200  // bytes of a branch or tag name
)

// reservedNamespaces would make a model repo's URLs collide with the
// server's own routes (/api/…, /datasets/…) or the other repo types.
var reservedNamespaces = []string{"api", "datasets", "spaces", "models", "kernels", "buckets"}

// ValidRepoID reports whether id is a repo id the write API accepts: exactly
// "ns/name" (PY1 and the JS client require the namespace), each part of
// [A-Za-z0-9_.-] not starting or ending with "-" or ".", without "--" or
// "..", the name not ending in ".git", at most 96 bytes in all (PY1
// utils/_validators.py:validate_repo_id), and a namespace that does not
// shadow a server route.
func ValidRepoID(id string) bool {
	ns, name, ok := strings.Cut(id, "/")
	if !ok || len(id) > maxRepoIDLen || !validRepoPart(ns) || !validRepoPart(name) {
		return false
	}
	if strings.HasSuffix(name, ".git") {
		return false
	}
	for _, r := range reservedNamespaces {
		if strings.EqualFold(ns, r) {
			return false
		}
	}
	return true
}

func validRepoPart(s string) bool {
	if s == "" || strings.Contains(s, "--") || strings.Contains(s, "..") {
		return false
	}
	if c := s[0]; c == '-' || c == '.' {
		return false
	}
	if c := s[len(s)-1]; c == '-' || c == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ValidPath reports whether p may be written as a file path of a repo: a
// clean relative slash path (no leading or trailing slash, no empty, "." or
// ".." segment), valid UTF-8 without control characters or backslashes,
// no ".git" segment (git-backed stores and the clients forbid it, PY1
// _commit_api.py:_validate_path_in_repo), at most 1000 bytes with segments
// of at most 255.
func ValidPath(p string) bool {
	if p == "" || len(p) > maxPathLen || !utf8.ValidString(p) {
		return false
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." || len(seg) > maxSegmentLen || strings.EqualFold(seg, ".git") {
			return false
		}
	}
	return true
}

// validRefName reports whether name may be created as a branch or tag. It
// follows git's check-ref-format (no "..", "@{", "//", control characters,
// spaces or any of ~^:?*[\, no segment starting with "." or ending with
// ".lock", no trailing "/" or "."), and also refuses what Hub clients would
// read as something else: "HEAD", a 40-hex name (a commit id, §1.3), and
// names under "refs/" (pull-request and convert refs are the server's).
func validRefName(name string) bool {
	if name == "" || len(name) > maxRefLen || !utf8.ValidString(name) {
		return false
	}
	if name == "HEAD" || name == "@" || isHex(strings.ToLower(name), 40) || strings.HasPrefix(name, "refs/") {
		return false
	}
	if name[0] == '-' || name[0] == '/' || strings.HasSuffix(name, "/") || strings.HasSuffix(name, ".") {
		return false
	}
	if strings.Contains(name, "..") || strings.Contains(name, "@{") || strings.Contains(name, "//") {
		return false
	}
	for _, r := range name {
		if r <= 0x20 || r == 0x7f || strings.ContainsRune("~^:?*[\\", r) {
			return false
		}
	}
	for seg := range strings.SplitSeq(name, "/") {
		if strings.HasPrefix(seg, ".") || strings.HasSuffix(seg, ".lock") {
			return false
		}
	}
	return true
}

// validParentCommit reports whether s is what a parentCommit may be: 5 to 40
// hex digits (PY1 constants.py:REGEX_COMMIT_OID). Callers lower-case it.
func validParentCommit(s string) bool {
	if len(s) < 5 || len(s) > 40 {
		return false
	}
	return isHex(s, len(s))
}
