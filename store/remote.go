package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/singleflight"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/internal/pack"
)

// Shared stores. A store created with a backend (`heft init --backend
// s3://BUCKET/PREFIX`, or Options.Backend) keeps its packs and its refs in that
// backend, where every node and CLI user that opens a store over the same bucket
// and prefix sees them. The local directory keeps what belongs to one node:
//
//	index.db   the index, a cache of the backend's pack tables (refreshed, and
//	           rebuilt from the backend alone by `heft repair index`)
//	packs/     a cache of the packs this node wrote or read
//	logs/, ingest/, uploads, received-object records, tokens: this node's own
//	locks/     flock files between this node's processes
//
// Objects in the backend:
//
//	config            the format marker, written once
//	packs/XX/ID.pack  packs, written once (PutIfAbsent) before any index refers to them
//	refs              the refs file, replaced only by CompareAndSwap; a generation
//	                  line makes every version distinct
//	locks/NAME.lock   lock objects: writers hold shared ones, gc an exclusive one
//
// Data before metadata holds across nodes: a pack is in the backend before this
// node's index lists it, and the index commits before the refs object moves; so
// a node that sees a ref can find every object the ref reaches in the backend.
// A node notices what others wrote when it reads the refs object (every Ref and
// Refs call reads it): when its version changed since the last refresh, the node
// lists the backend's packs and indexes the new ones from their tables (two
// ranged reads each). Writers and gc refresh under their locks, so an import
// dedups against everything in the bucket and never against a pack another
// node's gc removed.

// remoteObject names.
const (
	remoteConfigName = "config"
	remoteRefsName   = "refs"
	remotePacksDir   = "packs/"
	remoteLocksDir   = "locks/"
)

// remote is the backend side of a shared store.
type remote struct {
	be backend.Backend
	// fetches deduplicates concurrent downloads of one pack.
	fetches singleflight.Group
	// trimMu serializes trims of the pack cache (packcache.go).
	trimMu sync.Mutex

	// refreshMu serializes index refreshes.
	refreshMu sync.Mutex
	// refsSeen is the refs object's version at the last refresh.
	refsSeen string // +checklocks:refreshMu

	mu sync.Mutex
	// packs are the backend's packs as of the last listing: size and time of
	// creation (the server's clock), which gc's grace period reads.
	packs map[ID]backend.ObjectInfo // +checklocks:mu
	// unreadable are packs in the backend whose table could not be read
	// (damaged, or not packs): left out of the index, reported by verify.
	unreadable map[ID]error // +checklocks:mu
}

func remotePackName(id ID) string {
	h := id.String()
	return remotePacksDir + h[:2] + "/" + h + ".pack"
}

// parseRemotePackName returns the ID of a pack object's name (packs/XX/ID.pack);
// ok is false for any other name.
func parseRemotePackName(name string) (ID, bool) {
	base, ok := strings.CutSuffix(name[strings.LastIndexByte(name, '/')+1:], ".pack")
	if !ok {
		return ID{}, false
	}
	id, err := ParseID(base)
	return id, err == nil && remotePackName(id) == name
}

// Remote reports whether the store keeps its packs and refs in a backend, and
// where.
func (s *Store) Remote() (backend.Properties, bool) {
	if s.remote == nil {
		return backend.Properties{}, false
	}
	return s.remote.be.Properties(), true
}

// openRemote joins the store in the backend: it checks (or, for a new store,
// writes) the backend's config object and refreshes the index.
func (s *Store) openRemote(ctx context.Context, be backend.Backend) error {
	s.remote = &remote{be: be, packs: map[ID]backend.ObjectInfo{}, unreadable: map[ID]error{}}
	want, _ := json.Marshal(storeConfig{Format: storeFormat, Version: 1})
	want = append(want, '\n')
	_, err := be.PutIfAbsent(ctx, remoteConfigName, bytes.NewReader(want), int64(len(want)))
	if errors.Is(err, backend.ErrExists) {
		data, _, rerr := backend.ReadAll(ctx, be, remoteConfigName)
		if rerr != nil {
			return fmt.Errorf("open shared store %s: %w", be.Properties().Location, rerr)
		}
		var cfg storeConfig
		if json.Unmarshal(data, &cfg) != nil || cfg.Format != storeFormat {
			return fmt.Errorf("%w: %s holds objects that are not a heft store (bad config object)", ErrInput, be.Properties().Location)
		}
		if cfg.Version != 1 {
			return fmt.Errorf("%w: the store at %s has format version %d; this heft reads version 1", ErrInput, be.Properties().Location, cfg.Version)
		}
	} else if err != nil {
		return fmt.Errorf("open shared store %s: %w", be.Properties().Location, err)
	}
	return s.refreshIndex(ctx, true)
}

// remoteReaderAt reads one backend object through io.ReaderAt.
type remoteReaderAt struct {
	ctx  context.Context
	be   backend.Backend
	name string
}

func (r remoteReaderAt) ReadAt(p []byte, off int64) (int, error) {
	return r.be.ReadAt(r.ctx, r.name, p, off)
}

// refreshIndex brings the index up to date with the backend's packs: it indexes
// every pack it does not know from the pack's table, and forgets packs that are
// gone from the backend (gc on another node removed or rewrote them), with the
// objects they held. Unless force, it does nothing when the refs object has not
// changed since the last refresh (new packs become reachable only through a ref
// move). Callers must not be inside an index transaction.
func (s *Store) refreshIndex(ctx context.Context, force bool) error {
	r := s.remote
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	refsInfo, err := r.be.Stat(ctx, remoteRefsName)
	if err != nil && !errors.Is(err, backend.ErrNotFound) {
		return fmt.Errorf("refresh index: %w", err)
	}
	if !force && refsInfo.Version == r.refsSeen {
		return nil
	}
	listed := map[ID]backend.ObjectInfo{}
	err = r.be.List(ctx, remotePacksDir, func(oi backend.ObjectInfo) error {
		if id, ok := parseRemotePackName(oi.Name); ok {
			listed[id] = oi
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("refresh index: list packs: %w", err)
	}
	indexed, err := s.indexedPacks()
	if err != nil {
		return err
	}
	// Packs the index lists that the backend no longer has: forget them (after
	// asking for each, since a listing may miss a new object on some servers).
	var gone []ID
	for id := range indexed {
		if _, ok := listed[id]; ok {
			continue
		}
		if _, err := r.be.Stat(ctx, remotePackName(id)); errors.Is(err, backend.ErrNotFound) {
			gone = append(gone, id)
		} else if err != nil {
			return fmt.Errorf("refresh index: %w", err)
		}
	}
	if len(gone) > 0 {
		if err := s.forgetPacks(gone); err != nil {
			return err
		}
	}
	for id, oi := range listed {
		if indexed[id] {
			continue
		}
		r.mu.Lock()
		_, bad := r.unreadable[id]
		r.mu.Unlock()
		if bad {
			continue
		}
		entries, err := s.remoteTable(ctx, id, oi.Size)
		if errors.Is(err, pack.ErrCorrupt) || errors.Is(err, pack.ErrNotPack) || errors.Is(err, ErrIntegrity) {
			// A damaged or foreign object must not stop the node from
			// answering: it is left out of the index (what it held reads as
			// missing) and reported by verify.
			r.mu.Lock()
			r.unreadable[id] = err
			r.mu.Unlock()
			continue
		}
		if err != nil {
			return fmt.Errorf("refresh index: pack %s: %w", oi.Name, err)
		}
		locs := make(map[ID]Location, len(entries))
		for _, e := range entries {
			locs[ID(e.ID)] = locationOf(id, e)
		}
		if err := s.idx.addPack(id, packRecord{Size: uint64(oi.Size), Entries: uint64(len(entries))}, locs); err != nil {
			return fmt.Errorf("refresh index: %w", err)
		}
		// Files by sha256, so that Hub uploads and pulls skip what another
		// node stored.
		files := map[string]ID{}
		for oid, loc := range locs {
			if loc.Kind != KindFile {
				continue
			}
			data, err := s.readRemoteEntry(oid, loc, nil)
			if err != nil {
				return fmt.Errorf("refresh index: %w", err)
			}
			var f File
			if decodeObject(KindFile, data, &f) == nil && f.SHA256 != "" {
				files[f.SHA256] = oid
			}
		}
		if len(files) > 0 {
			if err := s.idx.addFileSHAs(files); err != nil {
				return fmt.Errorf("refresh index: %w", err)
			}
		}
	}
	r.mu.Lock()
	r.packs = listed
	r.mu.Unlock()
	r.refsSeen = refsInfo.Version
	return nil
}

// forgetPacks removes packs, and every object the index locates in them, from
// the index, and drops this node's cached copies.
func (s *Store) forgetPacks(ids []ID) error {
	set := make(map[ID]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	err := s.idx.update(func(tx *bolt.Tx) error {
		objs := tx.Bucket(bucketObjects)
		var dead [][]byte
		if err := forEachObject(tx, func(oid ID, loc Location) error {
			if set[loc.Pack] {
				dead = append(dead, append([]byte(nil), oid[:]...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range dead {
			if err := objs.Delete(k); err != nil {
				return err
			}
		}
		for id := range set {
			if err := tx.Bucket(bucketPacks).Delete(id[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("refresh index: forget removed packs: %w", err)
	}
	for id := range set {
		s.forgetPackFile(id)
		if err := s.fs.Remove(s.packPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("refresh index: drop cached pack: %w", err)
		}
	}
	return nil
}

// uploadPack puts a published local pack into the backend; the index may refer
// to it only after this returns. A pack already there (the same objects written
// by another node, or an earlier attempt) is kept: its name is the hash of its
// table.
func (s *Store) uploadPack(info pack.Info) error {
	r := s.remote
	id := ID(info.ID)
	name := remotePackName(id)
	f, err := s.fs.Open(s.packPath(id))
	if err != nil {
		return fmt.Errorf("upload pack %s: %w", id.Short(), err)
	}
	defer f.Close()
	ctx := context.Background()
	oi, err := r.be.PutIfAbsent(ctx, name, f, info.Size)
	if errors.Is(err, backend.ErrExists) {
		oi, err = r.be.Stat(ctx, name)
		if err == nil && oi.Size != info.Size {
			err = fmt.Errorf("%w: %s has %d bytes, this node's copy %d", ErrIntegrity, name, oi.Size, info.Size)
		}
	}
	if err != nil {
		return fmt.Errorf("upload pack %s: %w", id.Short(), err)
	}
	if oi.ModTime.IsZero() {
		oi.ModTime = s.now()
	}
	oi.Name, oi.Size = name, info.Size
	r.mu.Lock()
	r.packs[id] = oi
	r.mu.Unlock()
	return nil
}

// fetchPack downloads a pack this node has no copy of into packs/, checking that
// its table hashes to its name. The copy is a cache: every object read from it
// is verified as from any pack.
func (s *Store) fetchPack(id ID) error {
	_, err, _ := s.remote.fetches.Do(id.String(), func() (any, error) {
		if _, err := s.fs.Stat(s.packPath(id)); err == nil {
			return nil, nil
		}
		return nil, s.downloadPack(id)
	})
	return err
}

func (s *Store) downloadPack(id ID) (err error) {
	r := s.remote
	name := remotePackName(id)
	ctx := context.Background()
	rc, oi, err := r.be.Get(ctx, name, 0, -1)
	if errors.Is(err, backend.ErrNotFound) {
		return &IntegrityError{Kind: KindChunk, Pack: r.be.Properties().Location + "/" + name, Reason: "pack is missing from the backend"}
	}
	if err != nil {
		return fmt.Errorf("fetch pack %s: %w", id.Short(), err)
	}
	defer rc.Close()
	final := s.packPath(id)
	if err := s.fs.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return fmt.Errorf("fetch pack %s: %w", id.Short(), err)
	}
	tmp, err := s.fs.CreateTemp(filepath.Dir(final), "tmp-fetch-*")
	if err != nil {
		return fmt.Errorf("fetch pack %s: %w", id.Short(), err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = s.fs.Remove(tmp.Name())
		}
	}()
	n, err := io.Copy(tmp, rc)
	if err != nil {
		return fmt.Errorf("fetch pack %s: %w", id.Short(), err)
	}
	if n != oi.Size {
		return fmt.Errorf("fetch pack %s: got %d of %d bytes: %w", id.Short(), n, oi.Size, io.ErrUnexpectedEOF)
	}
	got, _, err := pack.ReadTableAt(tmp, name, n)
	if err != nil {
		return &IntegrityError{Kind: KindChunk, Pack: r.be.Properties().Location + "/" + name, Err: err}
	}
	if ID(got) != id {
		return &IntegrityError{Kind: KindChunk, Pack: r.be.Properties().Location + "/" + name, Reason: "its table hashes to " + ID(got).Short()}
	}
	// Synced so that a crash cannot leave a torn copy under the final name.
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fetch pack %s: %w", id.Short(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("fetch pack %s: %w", id.Short(), err)
	}
	if err := s.fs.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("fetch pack %s: %w", id.Short(), err)
	}
	return nil
}

// packStat describes where a pack is kept: its size and creation time, from the
// backend for a shared store and from packs/ otherwise.
type packStat struct {
	Size    int64
	ModTime time.Time
}

// statPack returns the pack's size and creation time, or an error wrapping
// os.ErrNotExist.
func (s *Store) statPack(id ID) (packStat, error) {
	if s.remote == nil {
		st, err := s.fs.Stat(s.packPath(id))
		if err != nil {
			return packStat{}, err
		}
		return packStat{Size: st.Size(), ModTime: st.ModTime()}, nil
	}
	s.remote.mu.Lock()
	oi, ok := s.remote.packs[id]
	s.remote.mu.Unlock()
	if ok && !oi.ModTime.IsZero() {
		return packStat{Size: oi.Size, ModTime: oi.ModTime}, nil
	}
	oi, err := s.remote.be.Stat(context.Background(), remotePackName(id))
	if errors.Is(err, backend.ErrNotFound) {
		return packStat{}, fmt.Errorf("%s: %w", remotePackName(id), os.ErrNotExist)
	}
	if err != nil {
		return packStat{}, err
	}
	return packStat{Size: oi.Size, ModTime: oi.ModTime}, nil
}

// packLocation names a pack for messages: its file, or its object in the
// backend.
func (s *Store) packLocation(id ID) string {
	if s.remote == nil {
		return s.packPath(id)
	}
	return s.remote.be.Properties().Location + "/" + remotePackName(id)
}

// removePack deletes a pack the index no longer lists: this node's copy and,
// in a shared store, the backend's object.
func (s *Store) removePack(id ID) error {
	s.forgetPackFile(id)
	if err := s.fs.Remove(s.packPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete pack %s: %w", id.Short(), err)
	}
	if s.remote == nil {
		return nil
	}
	if err := s.remote.be.Delete(context.Background(), remotePackName(id)); err != nil {
		return fmt.Errorf("delete pack %s: %w", id.Short(), err)
	}
	s.remote.mu.Lock()
	delete(s.remote.packs, id)
	s.remote.mu.Unlock()
	return nil
}

// remotePhysicalBytes is the size of every pack in the backend.
func (s *Store) remotePhysicalBytes(ctx context.Context) (int64, error) {
	var n int64
	err := s.remote.be.List(ctx, remotePacksDir, func(oi backend.ObjectInfo) error {
		n += oi.Size
		return nil
	})
	return n, err
}

// sweepRemoteUnindexed deletes backend packs the index does not list (uploaded
// by a writer that died before indexing them) once they are older than cutoff.
// It runs under the exclusive lock, after a refresh: every pack a live writer
// indexed is listed by then.
func (s *Store) sweepRemoteUnindexed(ctx context.Context, cutoff time.Time, dryRun bool, res *GCResult) error {
	indexed, err := s.indexedPacks()
	if err != nil {
		return err
	}
	var orphans []backend.ObjectInfo
	err = s.remote.be.List(ctx, remotePacksDir, func(oi backend.ObjectInfo) error {
		id, ok := parseRemotePackName(oi.Name)
		if !ok || indexed[id] {
			return nil
		}
		s.remote.mu.Lock()
		_, bad := s.remote.unreadable[id]
		s.remote.mu.Unlock()
		if bad {
			return nil // damaged, not orphaned: kept for a person to look at
		}
		orphans = append(orphans, oi)
		return nil
	})
	if err != nil {
		return fmt.Errorf("gc: list packs: %w", err)
	}
	for _, oi := range orphans {
		st, err := s.remote.be.Stat(ctx, oi.Name)
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("gc: %w", err)
		}
		if st.ModTime.IsZero() || st.ModTime.After(cutoff) {
			continue
		}
		res.OrphanPacks++
		res.BytesFreed += st.Size
		if dryRun {
			continue
		}
		if err := s.remote.be.Delete(ctx, oi.Name); err != nil {
			return fmt.Errorf("gc: %w", err)
		}
	}
	return nil
}

// packTable reads a pack's table: from this node's copy when it has one, else
// (shared stores) from the backend with two ranged reads.
func (s *Store) packTable(id ID, size int64) ([]pack.Entry, error) {
	if s.remote != nil {
		if _, err := s.fs.Stat(s.packPath(id)); errors.Is(err, os.ErrNotExist) {
			return s.remoteTable(context.Background(), id, size)
		}
	}
	r, err := pack.OpenFS(s.fs, s.packPath(id))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Entries(), nil
}

// forEachRemotePackTable calls fn with the table of every pack in the backend
// (read with two ranged reads each), or with the error that stopped it from
// reading one (a damaged or foreign object; fn decides whether that ends the
// walk).
func (s *Store) forEachRemotePackTable(ctx context.Context, fn func(id ID, size int64, entries []pack.Entry, err error) error) error {
	var listed []backend.ObjectInfo
	err := s.remote.be.List(ctx, remotePacksDir, func(oi backend.ObjectInfo) error {
		listed = append(listed, oi)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	for _, oi := range listed {
		id, ok := parseRemotePackName(oi.Name)
		if !ok {
			continue
		}
		entries, terr := s.remoteTable(ctx, id, oi.Size)
		if err := fn(id, oi.Size, entries, terr); err != nil {
			return err
		}
	}
	return nil
}

// remoteTable reads the table of a pack in the backend (two ranged reads)
// and checks that it hashes to the pack's name. Damage is an error matching
// pack.ErrCorrupt, pack.ErrNotPack or ErrIntegrity, naming the object.
func (s *Store) remoteTable(ctx context.Context, id ID, size int64) ([]pack.Entry, error) {
	where := s.packLocation(id)
	got, entries, err := pack.ReadTableAt(remoteReaderAt{ctx, s.remote.be, remotePackName(id)}, where, size)
	if err != nil {
		return nil, err
	}
	if ID(got) != id {
		return nil, fmt.Errorf("%w: pack %s holds the table of pack %s", ErrIntegrity, where, ID(got).Short())
	}
	return entries, nil
}

// packCached reports whether this node holds a copy of the pack (open, mapped,
// or in packs/).
func (s *Store) packCached(id ID) bool {
	if s.packInUse(id) {
		return true
	}
	_, err := s.fs.Stat(s.packPath(id))
	return err == nil
}

// readRemoteEntry reads one object's entry from the backend with one ranged
// read (its header and stored bytes, checked against loc and their CRC) and
// decodes and verifies it like any read.
func (s *Store) readRemoteEntry(id ID, loc Location, dst []byte) ([]byte, error) {
	stored, where, err := s.readRemoteStored(id, loc)
	if err != nil {
		return dst, err
	}
	return s.decodeStored(id, loc, where, stored, dst)
}

// readRemoteStored reads an object's stored bytes from the backend (one ranged
// read, CRC-checked). A pack gone from the backend, or damaged, is an
// *IntegrityError.
func (s *Store) readRemoteStored(id ID, loc Location) ([]byte, string, error) {
	name := remotePackName(loc.Pack)
	where := s.packLocation(loc.Pack)
	e := loc.entry(id)
	stored, err := pack.ReadEntryAt(remoteReaderAt{context.Background(), s.remote.be, name}, where, e)
	if err != nil {
		return nil, where, s.remoteReadError(id, loc.Kind, where, err)
	}
	return stored, where, nil
}

// remoteReadError classifies an error of a ranged read of a pack in the
// backend: a missing object or damaged bytes are integrity errors (the caller
// may refresh and follow a moved object), anything else (the backend is down)
// is not.
func (s *Store) remoteReadError(id ID, kind Kind, where string, err error) error {
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return &IntegrityError{ID: id, Kind: kind, Pack: where, Reason: "pack is missing from the backend"}
	case errors.Is(err, pack.ErrCorrupt), errors.Is(err, io.ErrUnexpectedEOF):
		return &IntegrityError{ID: id, Kind: kind, Pack: where, Err: err}
	}
	return fmt.Errorf("read %s %s from %s: %w", kind, id.Short(), where, err)
}

// packReader reads a pack's bytes: this node's copy when it has one, else (a
// shared store's pack it has not fetched) ranged reads of the backend's object,
// whose errors remoteReadError classifies.
func (s *Store) packReader(id ID) (ra io.ReaderAt, where string, remote bool, err error) {
	if s.remote != nil && !s.packCached(id) {
		return remoteReaderAt{context.Background(), s.remote.be, remotePackName(id)}, s.packLocation(id), true, nil
	}
	f, err := s.packFile(id)
	return f, s.packPath(id), false, err
}
