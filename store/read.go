package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/internal/vfs"
	"github.com/heft-dev/heft/store/internal/pack"
)

// Every read is verified: the pack entry's CRC-32C is checked when its stored bytes
// are read, and the decoded bytes are hashed and compared with the object's ID. A
// mismatch is an *IntegrityError naming the object and its pack; wrong bytes are never
// returned.

// packFile returns a cached read handle for a pack.
func (s *Store) packFile(id ID) (vfs.File, error) {
	s.packMu.Lock()
	defer s.packMu.Unlock()
	if f, ok := s.packFiles[id]; ok {
		return f, nil
	}
	f, err := s.fs.Open(s.packPath(id))
	if errors.Is(err, os.ErrNotExist) && s.remote != nil {
		// A shared store's pack this node has no copy of yet.
		s.packMu.Unlock()
		ferr := s.fetchPack(id)
		s.packMu.Lock()
		if ferr != nil {
			return nil, ferr
		}
		if f, ok := s.packFiles[id]; ok {
			return f, nil
		}
		f, err = s.fs.Open(s.packPath(id))
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &IntegrityError{Kind: KindChunk, Pack: s.packPath(id), Reason: "pack file is missing"}
		}
		return nil, fmt.Errorf("open pack %s: %w", id.Short(), err)
	}
	s.packFiles[id] = f
	return f, nil
}

// packMap returns a read-only mapping of a whole pack (mmap on the real
// filesystem), cached for the store's life.
func (s *Store) packMap(id ID) (vfs.Mapping, error) {
	s.packMu.Lock()
	m, ok := s.packMaps[id]
	s.packMu.Unlock()
	if ok {
		return m, nil
	}
	f, err := s.packFile(id)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat pack %s: %w", id.Short(), err)
	}
	if st.Size() == 0 || st.Size() != int64(int(st.Size())) {
		return nil, &IntegrityError{Kind: KindChunk, Pack: s.packPath(id), Reason: fmt.Sprintf("pack file has %d bytes", st.Size())}
	}
	m, err = s.fs.Map(f)
	if err != nil {
		return nil, fmt.Errorf("map pack %s: %w", id.Short(), err)
	}
	s.packMu.Lock()
	defer s.packMu.Unlock()
	if prev, ok := s.packMaps[id]; ok { // another goroutine mapped it first
		_ = m.Close()
		return prev, nil
	}
	s.packMaps[id] = m
	return m, nil
}

// releaseMapped drops the pages of one entry from this process's mapping once it is
// decoded: the data stays in the page cache, but a long export would otherwise count
// every pack page it touched in its resident set.
func releaseMapped(m vfs.Mapping, loc Location) {
	// From the entry header (60 bytes before the stored bytes) to their end; the
	// mapping rounds to whole pages.
	m.DontNeed(int(loc.Offset-min(loc.Offset, 64)), int(loc.Offset+loc.StoredLen))
}

// readLocated reads, decodes and verifies the object id stored at loc, appending the
// decoded bytes to dst[:0]. Stored bytes are read from a mapping of the pack (no
// copy), so dst is the only buffer a caller recycles.
func (s *Store) readLocated(id ID, loc Location, dst []byte) (out []byte, err error) {
	if s.remote != nil && !s.packCached(loc.Pack) {
		// A pack of a shared store this node has no copy of: read just the
		// entry (one ranged read).
		out, err := s.readRemoteEntry(id, loc, dst)
		if err == nil || !errors.Is(err, ErrIntegrity) {
			return out, err
		}
		// Gone from the backend (gc on another node moved the object), or
		// damaged: learn the backend's packs, and follow a moved object once.
		_ = s.refreshIndex(context.Background(), true)
		if now, ok, lerr := s.locate(id); lerr == nil && ok && now.Pack != loc.Pack {
			return s.readLocated(id, now, dst)
		}
		return out, err
	}
	mapping, err := s.packMap(loc.Pack)
	if err != nil && errors.Is(err, ErrIntegrity) {
		// gc in another process may have moved the object to a rewritten pack
		// since loc was looked up: follow the index once. In a shared store the
		// gc may have run on another node: learn its packs first.
		if s.remote != nil {
			_ = s.refreshIndex(context.Background(), true)
		}
		if now, ok, lerr := s.locate(id); lerr == nil && ok && now.Pack != loc.Pack {
			return s.readLocated(id, now, dst)
		}
	}
	if err != nil {
		var ie *IntegrityError
		if errors.As(err, &ie) {
			ie.ID, ie.Kind = id, loc.Kind
		}
		return dst, err
	}
	path := s.packPath(loc.Pack)
	// A pack truncated behind the store's back would fault on access: turn that
	// into an integrity error instead of a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			out, err = dst, &IntegrityError{ID: id, Kind: loc.Kind, Pack: path, Reason: fmt.Sprintf("pack file changed while mapped: %v", r)}
		}
	}()
	e := loc.entry(id)
	defer releaseMapped(mapping, loc)
	stored, err := pack.StoredInMap(mapping.Bytes(), path, e)
	if err != nil {
		return dst, &IntegrityError{ID: id, Kind: loc.Kind, Pack: path, Err: err}
	}
	return s.decodeStored(id, loc, path, stored, dst)
}

// decodeStored decodes the verified stored bytes of the object id at loc and
// checks the result against id.
func (s *Store) decodeStored(id ID, loc Location, path string, stored, dst []byte) (out []byte, err error) {
	if loc.RawLen > 1<<40 {
		return dst, &IntegrityError{ID: id, Kind: loc.Kind, Pack: path, Reason: "implausible decoded length"}
	}
	if loc.Codec == codecDelta {
		out, err = s.decodeDelta(id, loc, stored, dst)
	} else {
		out, err = chunkcodec.Decode(chunkcodec.ID(loc.Codec), dst, stored, int(loc.RawLen))
	}
	if err != nil {
		return dst, &IntegrityError{ID: id, Kind: loc.Kind, Pack: path, Reason: "cannot decode", Err: err}
	}
	if Sum(out) != id {
		return out, &IntegrityError{ID: id, Kind: loc.Kind, Pack: path, Reason: "content does not match its hash"}
	}
	return out, nil
}

// locate returns the index location of one object.
func (s *Store) locate(id ID) (loc Location, ok bool, err error) {
	err = s.idx.view(func(tx *bolt.Tx) error {
		loc, ok, err = getLocation(tx, id)
		return err
	})
	return loc, ok, err
}

// readObject reads and verifies one object by ID.
func (s *Store) readObject(id ID) ([]byte, Kind, error) {
	loc, ok, err := s.locate(id)
	if err != nil {
		return nil, 0, err
	}
	if !ok {
		return nil, 0, &IntegrityError{ID: id, Kind: KindChunk, Reason: "object is missing from the index"}
	}
	data, err := s.readLocated(id, loc, nil)
	return data, loc.Kind, err
}

// loadObject reads a metadata object of the given kind into v.
func (s *Store) loadObject(id ID, kind Kind, v any) error {
	data, got, err := s.readObject(id)
	if err != nil {
		var ie *IntegrityError
		if errors.As(err, &ie) && ie.Kind == KindChunk {
			ie.Kind = kind
		}
		return err
	}
	if got != kind {
		return &IntegrityError{ID: id, Kind: kind, Reason: fmt.Sprintf("index says it is a %s", got)}
	}
	if err := decodeObject(kind, data, v); err != nil {
		return &IntegrityError{ID: id, Kind: kind, Err: err}
	}
	return nil
}

// LoadCommit returns a commit object.
func (s *Store) LoadCommit(id ID) (*Commit, error) {
	var c Commit
	return &c, s.loadObject(id, KindCommit, &c)
}

// LoadManifest returns a manifest object.
func (s *Store) LoadManifest(id ID) (*Manifest, error) {
	var m Manifest
	return &m, s.loadObject(id, KindManifest, &m)
}

// LoadFile returns a file object.
func (s *Store) LoadFile(id ID) (*File, error) {
	var f File
	return &f, s.loadObject(id, KindFile, &f)
}

// LoadTensor returns a tensor object.
func (s *Store) LoadTensor(id ID) (*Tensor, error) {
	var t Tensor
	return &t, s.loadObject(id, KindTensor, &t)
}

// ReadChunk returns the verified decoded bytes of a chunk.
func (s *Store) ReadChunk(id ID) ([]byte, error) {
	data, _, err := s.readObject(id)
	return data, err
}

// commitManifest loads a commit and its manifest.
func (s *Store) commitManifest(id ID) (*Commit, *Manifest, error) {
	c, err := s.LoadCommit(id)
	if err != nil {
		return nil, nil, err
	}
	m, err := s.LoadManifest(c.Manifest)
	if err != nil {
		return nil, nil, err
	}
	return c, m, nil
}
