package backend

import (
	"fmt"
	"strings"
)

// Name limits (see the package documentation).
const (
	MaxNameLen    = 900
	MaxSegmentLen = 200
)

// CheckName returns nil if name is a valid object name, or an error wrapping
// ErrInvalidName that says why not.
func CheckName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalidName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: name of %d bytes (at most %d)", ErrInvalidName, len(name), MaxNameLen)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if err := checkSegment(seg); err != nil {
			return fmt.Errorf("%w: %q: %s", ErrInvalidName, name, err.Error())
		}
	}
	return nil
}

// CheckPrefix returns nil if prefix may start valid names: "" (everything), whole
// segments followed by '/', and optionally the start of one more segment.
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if len(prefix) > MaxNameLen {
		return fmt.Errorf("%w: prefix of %d bytes (at most %d)", ErrInvalidName, len(prefix), MaxNameLen)
	}
	segs := strings.Split(prefix, "/")
	for i, seg := range segs {
		if i == len(segs)-1 && seg == "" {
			break // prefix ends with '/'
		}
		if err := checkSegment(seg); err != nil {
			return fmt.Errorf("%w: prefix %q: %s", ErrInvalidName, prefix, err.Error())
		}
	}
	return nil
}

type segmentError string

func (e segmentError) Error() string { return string(e) }

// checkSegment checks one segment, or the start of one at the end of a prefix.
// "." and ".." fall under the leading-dot rule.
func checkSegment(seg string) error {
	switch {
	case seg == "":
		return segmentError("empty segment (leading, trailing or double '/')")
	case len(seg) > MaxSegmentLen:
		return segmentError(fmt.Sprintf("segment of %d bytes (at most %d)", len(seg), MaxSegmentLen))
	case seg[0] == '.':
		return segmentError("segment starts with '.' (reserved for the backend's own files)")
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return segmentError(fmt.Sprintf("byte %q not allowed (letters, digits, '.', '_', '-')", c))
		}
	}
	return nil
}

// Parents returns the names of the directories above name, shortest first:
// "a/b/c" gives "a", "a/b".
func Parents(name string) []string {
	var out []string
	for i := 0; i < len(name); i++ {
		if name[i] == '/' {
			out = append(out, name[:i])
		}
	}
	return out
}
