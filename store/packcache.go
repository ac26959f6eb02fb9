package store

import (
	"errors"
	"os"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// A shared store's node keeps copies of the packs it wrote (and of the packs gc
// rewrote) in packs/, so that reading what it just imported costs no request.
// They are a cache: every pack is in the backend, and a read of a pack the node
// has no copy of is a ranged read of the backend's object. The cache is trimmed
// to Options.PackCacheBytes after every pack this node uploads, oldest copies
// first; a copy this process has open or mapped, or one the backend does not
// list yet, is never dropped.

// defaultPackCacheShare is the default cache budget: this share of the size of
// the filesystem holding the store's directory.
const defaultPackCacheShare = 4 // a quarter

// packCacheBudget is the byte budget of the pack cache; negative: unlimited.
func (s *Store) packCacheBudget() int64 {
	if s.opts.PackCacheBytes != 0 {
		return s.opts.PackCacheBytes
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return -1
	}
	return int64(st.Blocks) * int64(st.Bsize) / defaultPackCacheShare
}

// trimPackCache drops this node's oldest pack copies until the cache fits its
// budget. It reports how many bytes it dropped. Errors are not the caller's
// concern: a copy that cannot be removed stays, and the next trim tries again.
func (s *Store) trimPackCache() int64 {
	if s.remote == nil {
		return 0
	}
	budget := s.packCacheBudget()
	if budget < 0 {
		return 0
	}
	s.remote.trimMu.Lock()
	defer s.remote.trimMu.Unlock()
	type copyInfo struct {
		id    ID
		path  string
		size  int64
		mtime time.Time
	}
	var copies []copyInfo
	var total int64
	_ = s.walkPackDir(func(path string, info os.FileInfo, id ID, isPack bool) error {
		if isPack {
			copies = append(copies, copyInfo{id, path, info.Size(), info.ModTime()})
			total += info.Size()
		}
		return nil
	})
	if total <= budget {
		return 0
	}
	sort.Slice(copies, func(i, j int) bool { return copies[i].mtime.Before(copies[j].mtime) })
	var dropped int64
	for _, c := range copies {
		if total <= budget {
			break
		}
		if s.packInUse(c.id) || !s.packInBackend(c.id) {
			continue
		}
		if err := s.fs.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			continue
		}
		total -= c.size
		dropped += c.size
	}
	return dropped
}

// packInUse reports whether this process has the pack open or mapped.
func (s *Store) packInUse(id ID) bool {
	s.packMu.Lock()
	defer s.packMu.Unlock()
	_, open := s.packFiles[id]
	_, mapped := s.packMaps[id]
	return open || mapped
}

// packInBackend reports whether the backend listed the pack at the last refresh
// or this node uploaded it since.
func (s *Store) packInBackend(id ID) bool {
	s.remote.mu.Lock()
	defer s.remote.mu.Unlock()
	_, ok := s.remote.packs[id]
	return ok
}
