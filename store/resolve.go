package store

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Resolve turns a REF argument into a commit ID: NAME[:TAG] first, then a full or
// unique-prefix (at least 4 hex digits) commit ID.
func (s *Store) Resolve(arg string) (ID, error) {
	if r, err := ParseRef(arg); err == nil {
		id, err := s.Ref(r)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return id, err
		}
	}
	if len(arg) >= 4 && len(arg) <= 64 && isHex(arg) {
		matches, err := s.commitsWithPrefix(strings.ToLower(arg))
		if err != nil {
			return ID{}, err
		}
		switch len(matches) {
		case 1:
			return matches[0], nil
		case 0:
		default:
			return ID{}, inputErrorf("commit prefix %q is ambiguous (%d commits)", arg, len(matches))
		}
	}
	if _, err := ParseRef(arg); err != nil && !isHex(arg) {
		return ID{}, err
	}
	return ID{}, fmt.Errorf("%w: no ref or commit %q", ErrNotFound, arg)
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}

func (s *Store) commitsWithPrefix(prefix string) ([]ID, error) {
	even := prefix[:len(prefix)&^1]
	seek, _ := hex.DecodeString(even)
	var out []ID
	err := s.idx.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketObjects).Cursor()
		for k, v := c.Seek(seek); k != nil && bytes.HasPrefix(k, seek); k, v = c.Next() {
			if !strings.HasPrefix(hex.EncodeToString(k), prefix) {
				continue
			}
			var id ID
			copy(id[:], k)
			loc, err := decodeLocation(id, v)
			if err != nil {
				return err
			}
			if loc.Kind == KindCommit {
				out = append(out, id)
			}
		}
		return nil
	})
	return out, err
}
