package pack

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
)

// ID names a pack: the BLAKE3-256 of its table bytes. The same type carries
// object IDs inside entries, which are opaque to this package.
type ID [32]byte

// String returns the 64 lower-case hex digits of id.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Str returns a short form of id for logs.
func (id ID) Str() string { return hex.EncodeToString(id[:4]) }

// IsZero reports whether id is all zero bytes.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses 64 lower-case hex digits. Upper case is rejected so that
// one ID has exactly one spelling, and therefore one file name.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return ID{}, fmt.Errorf("%w: %q: want %d hex digits, got %d", ErrInvalidID, s, 2*len(id), len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ID{}, fmt.Errorf("%w: %q: byte %d is not a lower-case hex digit", ErrInvalidID, s, i)
		}
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("%w: %q: %w", ErrInvalidID, s, err)
	}
	return id, nil
}

// Ext is the file name extension of packs, published and temporary.
const Ext = ".pack"

// TempPrefix starts the name of every temporary pack file in the store
// directory; a crashed writer leaves DIR/TempPrefix*Ext for gc to remove.
const TempPrefix = "tmp-"

// PathFor returns where the pack id is published under dir:
// dir/<first 2 hex>/<64 hex>.pack.
func PathFor(dir string, id ID) string {
	s := id.String()
	return filepath.Join(dir, s[:2], s+Ext)
}

// ParseName parses the base name of a published pack ("<64 hex>.pack").
func ParseName(base string) (ID, error) {
	s, ok := strings.CutSuffix(base, Ext)
	if !ok {
		return ID{}, fmt.Errorf("%w: %q: missing %s suffix", ErrInvalidID, base, Ext)
	}
	return ParseID(s)
}
