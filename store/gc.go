package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/internal/vfs"
	"github.com/heft-dev/heft/store/internal/pack"
)

// Garbage collection. It runs under the exclusive gc lock, so no import is writing
// (writers hold the lock shared for their whole run): an import can therefore never
// reuse a chunk that gc has decided to delete. It never deletes on uncertainty:
//   - it refuses to run when an object reachable from a ref is missing or damaged;
//   - packs and temp files younger than the grace period are kept whatever they hold;
//   - the index forgets a pack (one transaction) before its file is deleted, so a
//     crash in between leaves an unreferenced file that the next gc removes.
// Packs whose live share falls below RepackThreshold are rewritten: live entries are
// copied verbatim (no re-encoding) into a new pack that is published and indexed
// before the old one is forgotten.

// GCOptions tune one gc run.
type GCOptions struct {
	DryRun bool
	// Grace protects packs and temp files modified within this duration. Default
	// DefaultGrace; zero means "use the default", a negative value means none.
	Grace time.Duration
	// RepackThreshold: packs with less than this share of live bytes are
	// rewritten. Default 0.5.
	RepackThreshold float64
}

// DefaultGrace keeps what a crashed or running import wrote for an hour, so that a
// re-run can reuse it.
const DefaultGrace = time.Hour

// GCResult reports what gc removed (or would remove, with DryRun).
type GCResult struct {
	DryRun          bool  `json:"dry_run"`
	LiveObjects     int   `json:"live_objects"`
	DeadObjects     int   `json:"dead_objects"`
	PacksDeleted    int   `json:"packs_deleted"`
	PacksRewritten  int   `json:"packs_rewritten"`
	PacksKept       int   `json:"packs_kept"`
	OrphanPacks     int   `json:"orphan_packs_deleted"`
	TempFiles       int   `json:"temp_files_deleted"`
	BytesFreed      int64 `json:"bytes_freed"`
	PhysicalBefore  int64 `json:"physical_bytes_before"`
	PhysicalAfter   int64 `json:"physical_bytes_after"`
	ProtectedByAge  int   `json:"packs_protected_by_grace"`
	ReclaimableKept int64 `json:"reclaimable_bytes_kept"`
}

type packUsage struct {
	id        ID
	rec       packRecord
	liveBytes uint64
	live      map[ID]Location
	dead      map[ID]Location
}

// hasDead reports whether the pack holds anything gc could reclaim: indexed objects
// no ref reaches, or entries the index does not list at all (a duplicate of an
// object indexed in another pack, or dead objects an interrupted gc already
// forgot).
func (u *packUsage) hasDead() bool {
	return len(u.dead) > 0 || uint64(len(u.live)+len(u.dead)) < u.rec.Entries
}

// gcAction is what gc does with one pack.
type gcAction uint8

const (
	gcKeep    gcAction = iota // nothing to reclaim, or not enough to rewrite it
	gcYoung                   // reclaimable, but within the grace period
	gcDrop                    // nothing live: forget it and delete the file
	gcRewrite                 // copy the live objects to a new pack, then drop it
)

// GC removes data no ref reaches.
func (s *Store) GC(ctx context.Context, opts GCOptions) (*GCResult, error) {
	if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Grace < 0 {
		opts.Grace = 0
	}
	if opts.RepackThreshold == 0 {
		opts.RepackThreshold = 0.5
	}
	lock, err := s.exclusiveLock()
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	if s.remote != nil {
		// Index every pack the other nodes published; forget what their gc
		// removed.
		if err := s.refreshIndex(ctx, true); err != nil {
			return nil, err
		}
	}
	res := &GCResult{DryRun: opts.DryRun}
	if res.PhysicalBefore, err = s.physicalBytes(); err != nil {
		return nil, err
	}

	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	w := newWalker(s)
	if err := w.refs(refs); err != nil {
		return nil, fmt.Errorf("gc refuses to run: %w", err)
	}
	// Files uploaded for a commit that has not happened yet.
	uploads, err := s.uploadRoots(opts.DryRun)
	if err != nil {
		return nil, err
	}
	for _, f := range uploads {
		if _, ok, err := s.locate(f); err != nil {
			return nil, err
		} else if !ok {
			continue // never stored, or already gone: nothing to keep
		}
		if err := w.file(f); err != nil {
			return nil, fmt.Errorf("gc refuses to run: upload %s: %w", f.Short(), err)
		}
	}
	// Chunks of interrupted pulls, so that they resume.
	journal, err := s.journalRoots(opts.DryRun)
	if err != nil {
		return nil, err
	}
	for _, c := range journal {
		if _, ok, err := s.locate(c.ID); err != nil {
			return nil, err
		} else if ok {
			w.seen[c.ID] = KindChunk
		}
	}
	// Objects pushed here for a ref that has not moved yet.
	received, err := s.receivedRoots()
	if err != nil {
		return nil, err
	}
	for _, id := range received {
		if loc, ok, err := s.locate(id); err != nil {
			return nil, err
		} else if ok {
			if _, seen := w.seen[id]; !seen {
				w.seen[id] = loc.Kind
			}
		}
	}
	live := w.seen
	if err := s.addDeltaBases(live); err != nil {
		return nil, fmt.Errorf("gc refuses to run: %w", err)
	}
	usage := map[ID]*packUsage{}
	missingLive := 0
	err = s.idx.view(func(tx *bolt.Tx) error {
		if err := forEachPack(tx, func(id ID, rec packRecord) error {
			usage[id] = &packUsage{id: id, rec: rec, live: map[ID]Location{}, dead: map[ID]Location{}}
			return nil
		}); err != nil {
			return err
		}
		return forEachObject(tx, func(id ID, loc Location) error {
			u := usage[loc.Pack]
			if u == nil {
				if _, ok := live[id]; ok {
					missingLive++
				}
				return nil
			}
			if _, ok := live[id]; ok {
				u.live[id] = loc
				u.liveBytes += loc.StoredLen
			} else {
				u.dead[id] = loc
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if missingLive > 0 {
		return nil, fmt.Errorf("gc refuses to run: %w: %d reachable objects point to packs the index does not list (run `heft verify`)", ErrIntegrity, missingLive)
	}
	// Reachable objects that the index lacks entirely.
	if n, err := s.countUnindexed(live); err != nil {
		return nil, err
	} else if n > 0 {
		return nil, fmt.Errorf("gc refuses to run: %w: %d reachable objects are missing from the index (run `heft verify`)", ErrIntegrity, n)
	}

	// A pack holding live objects must exist before gc changes anything.
	for id, u := range usage {
		if len(u.live) == 0 {
			continue
		}
		if _, err := s.statPack(id); err != nil {
			return nil, fmt.Errorf("gc refuses to run: %w: pack %s holding %d reachable objects: %v (run `heft verify`)", ErrIntegrity, s.packLocation(id), len(u.live), err)
		}
	}

	cutoff := s.now().Add(-opts.Grace)
	if s.remote != nil {
		// What another node received or uploaded for a commit that has not
		// happened yet is recorded only on that node: in a shared store every
		// pack younger than ReceivedGrace is kept whatever it holds.
		if received := s.now().Add(-ReceivedGrace); received.Before(cutoff) {
			cutoff = received
		}
	}
	ids := make([]ID, 0, len(usage))
	for id := range usage {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return string(ids[i][:]) < string(ids[j][:]) })
	if !opts.DryRun {
		failpoint.Hit(failpoint.GCBeforeSweep)
	}
	plan := make(map[ID]gcAction, len(ids))
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if plan[id], err = s.planPack(usage[id], cutoff, opts.RepackThreshold); err != nil {
			return res, err
		}
	}
	if err := s.keepRetainedBases(ids, usage, plan, live, cutoff, opts.RepackThreshold); err != nil {
		return res, fmt.Errorf("gc refuses to run: %w", err)
	}
	res.LiveObjects = len(live)
	for _, id := range ids {
		u := usage[id]
		res.DeadObjects += len(u.dead)
		deadBytes := int64(u.rec.Size) - int64(u.liveBytes)
		switch plan[id] {
		case gcKeep:
			res.PacksKept++
			if u.hasDead() {
				res.ReclaimableKept += deadBytes
			}
		case gcYoung:
			res.ProtectedByAge++
			res.PacksKept++
		case gcDrop:
			res.PacksDeleted++
			res.BytesFreed += int64(u.rec.Size)
		case gcRewrite:
			res.PacksRewritten++
			res.BytesFreed += deadBytes
		}
	}
	if !opts.DryRun {
		if err := s.sweepPacks(ctx, ids, usage, plan); err != nil {
			return res, err
		}
	}
	if err := s.sweepUnindexed(cutoff, opts.DryRun, res); err != nil {
		return res, err
	}
	if s.remote != nil {
		if err := s.sweepRemoteUnindexed(ctx, cutoff, opts.DryRun, res); err != nil {
			return res, err
		}
	}
	if res.PhysicalAfter, err = s.physicalBytes(); err != nil {
		return res, err
	}
	return res, nil
}

// addDeltaBases adds to live the base chunk of every live delta chunk: a base may be
// reachable from no ref at all once its model is deleted, and must stay.
func (s *Store) addDeltaBases(live map[ID]Kind) error {
	deltas := map[ID]Location{}
	err := s.idx.view(func(tx *bolt.Tx) error {
		for id, kind := range live {
			if kind != KindChunk {
				continue
			}
			loc, ok, err := getLocation(tx, id)
			if err != nil {
				return err
			}
			if ok && loc.Codec == codecDelta {
				deltas[id] = loc
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id, loc := range deltas {
		base, err := s.deltaBase(id, loc)
		if err != nil {
			return err
		}
		live[base] = KindChunk
	}
	return nil
}

func (s *Store) countUnindexed(live map[ID]Kind) (int, error) {
	n := 0
	err := s.idx.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketObjects)
		for id := range live {
			if b.Get(id[:]) == nil {
				n++
			}
		}
		return nil
	})
	return n, err
}

func (s *Store) modifiedAfter(id ID, cutoff time.Time) (bool, error) {
	st, err := s.statPack(id)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return st.ModTime.After(cutoff), nil
}

// planPack decides what gc does with one pack.
func (s *Store) planPack(u *packUsage, cutoff time.Time, threshold float64) (gcAction, error) {
	liveShare := float64(u.liveBytes) / float64(max(u.rec.Size, 1))
	if !u.hasDead() || (len(u.live) > 0 && liveShare >= threshold) {
		return gcKeep, nil
	}
	young, err := s.modifiedAfter(u.id, cutoff)
	if err != nil {
		return 0, err
	}
	switch {
	case young:
		return gcYoung, nil
	case len(u.live) == 0:
		return gcDrop, nil
	}
	return gcRewrite, nil
}

// keepRetainedBases keeps the base of every delta chunk that stays indexed. Dead
// objects stay indexed in the packs gc keeps (too little to reclaim, or within the
// grace period); a dead delta chunk among them must still decode, because a later
// import that produces the same chunk reuses it instead of storing it again. So its
// base becomes live, which can turn a pack gc meant to drop into one it rewrites or
// keeps, whose own dead delta chunks then need their bases: repeat until nothing
// changes (objects only ever move from dead to live).
func (s *Store) keepRetainedBases(ids []ID, usage map[ID]*packUsage, plan map[ID]gcAction, live map[ID]Kind, cutoff time.Time, threshold float64) error {
	deadIn := map[ID]*packUsage{}
	for _, u := range usage {
		for id := range u.dead {
			deadIn[id] = u
		}
	}
	checked := map[ID]bool{}
	for changed := true; changed; {
		changed = false
		for _, pid := range ids {
			if a := plan[pid]; a == gcDrop || a == gcRewrite {
				continue
			}
			for id, loc := range usage[pid].dead {
				if loc.Codec != codecDelta || checked[id] {
					continue
				}
				checked[id] = true
				base, err := s.deltaBase(id, loc)
				if err != nil {
					return err
				}
				bu, ok := deadIn[base]
				if !ok {
					continue // live already, or not indexed (verify reports that)
				}
				bloc := bu.dead[base]
				delete(bu.dead, base)
				delete(deadIn, base)
				bu.live[base] = bloc
				bu.liveBytes += bloc.StoredLen
				live[base] = KindChunk
				a, err := s.planPack(bu, cutoff, threshold)
				if err != nil {
					return err
				}
				if a != plan[bu.id] {
					plan[bu.id] = a
					changed = true
				}
			}
		}
	}
	return nil
}

// sweepPacks carries out the plan. One index transaction first forgets every dead
// object of the packs to drop or rewrite, and the packs to drop: an interruption
// at any point after it leaves no indexed delta chunk without its base (both are
// forgotten together), and only files the index does not list or objects it lists
// twice, which the next gc reclaims. Then the dropped packs' files are deleted and
// the other packs rewritten.
func (s *Store) sweepPacks(ctx context.Context, ids []ID, usage map[ID]*packUsage, plan map[ID]gcAction) error {
	var drop, rewrite []ID
	for _, id := range ids {
		switch plan[id] {
		case gcDrop:
			drop = append(drop, id)
		case gcRewrite:
			rewrite = append(rewrite, id)
		}
	}
	if len(drop)+len(rewrite) == 0 {
		return nil
	}
	err := s.idx.update(func(tx *bolt.Tx) error {
		objs, packs := tx.Bucket(bucketObjects), tx.Bucket(bucketPacks)
		for _, id := range append(drop[:len(drop):len(drop)], rewrite...) {
			for oid := range usage[id].dead {
				if err := objs.Delete(oid[:]); err != nil {
					return err
				}
			}
		}
		for _, id := range drop {
			if err := packs.Delete(id[:]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gc: unindex dead objects: %w", err)
	}
	if len(drop) > 0 {
		failpoint.Hit(failpoint.GCAfterForgetPack)
	}
	for _, id := range drop {
		if err := s.removePack(id); err != nil {
			return fmt.Errorf("gc: %w", err)
		}
	}
	for _, id := range rewrite {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.rewritePack(usage[id]); err != nil {
			return err
		}
	}
	return nil
}

// rewritePack copies a pack's live entries into a new pack, publishes and indexes
// it, and only then forgets and deletes the old pack. Its dead objects are already
// forgotten (sweepPacks).
func (s *Store) rewritePack(u *packUsage) (err error) {
	src, err := s.packFile(u.id)
	if err != nil {
		return err
	}
	w, err := pack.NewWriterFS(s.fs, s.packsDir())
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = w.Abort()
		}
	}()
	ids := make([]ID, 0, len(u.live))
	for id := range u.live {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return u.live[ids[i]].Offset < u.live[ids[j]].Offset })
	moved := make(map[ID]Location, len(ids))
	var buf []byte
	for _, id := range ids {
		loc := u.live[id]
		e := loc.entry(id)
		stored, err := pack.ReadStoredAt(src, s.packPath(u.id), e, buf)
		if err != nil {
			return &IntegrityError{ID: id, Kind: loc.Kind, Pack: s.packPath(u.id), Err: err}
		}
		buf = stored
		ne, err := w.Add(pack.ID(id), uint8(loc.Kind), loc.Codec, loc.RawLen, stored)
		if err != nil {
			return err
		}
		moved[id] = Location{Offset: ne.Offset, StoredLen: ne.StoredLen, RawLen: ne.RawLen, Kind: loc.Kind, Codec: loc.Codec, CRC: ne.CRC}
	}
	info, err := w.Finish()
	if err != nil {
		return fmt.Errorf("gc: publish rewritten pack: %w", err)
	}
	failpoint.Hit(failpoint.GCAfterRewritePack)
	newID := ID(info.ID)
	if s.remote != nil {
		if err := s.uploadPack(info); err != nil {
			return fmt.Errorf("gc: %w", err)
		}
	}
	err = s.idx.update(func(tx *bolt.Tx) error {
		objs := tx.Bucket(bucketObjects)
		for id, loc := range moved {
			loc.Pack = newID
			if err := objs.Put(id[:], loc.encode()); err != nil {
				return err
			}
		}
		packs := tx.Bucket(bucketPacks)
		if err := packs.Put(newID[:], packRecord{Size: uint64(info.Size), Entries: uint64(len(info.Entries))}.encode()); err != nil {
			return err
		}
		return packs.Delete(u.id[:])
	})
	if err != nil {
		return fmt.Errorf("gc: index rewritten pack: %w", err)
	}
	if err := s.removePack(u.id); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	return nil
}

func (s *Store) forgetPackFile(id ID) {
	s.packMu.Lock()
	defer s.packMu.Unlock()
	if f, ok := s.packFiles[id]; ok {
		_ = f.Close()
		delete(s.packFiles, id)
	}
}

// sweepUnindexed removes pack files the index does not know (left by a crash between
// publishing and indexing, or between unindexing and deleting) and temp files, once
// they are older than the grace period. It reads the index afresh: packs this run
// wrote while rewriting are indexed by now, and file times are too coarse to tell
// them from older ones.
func (s *Store) sweepUnindexed(cutoff time.Time, dryRun bool, res *GCResult) error {
	indexed, err := s.indexedPacks()
	if err != nil {
		return err
	}
	return s.walkPackDir(func(path string, info os.FileInfo, id ID, isPack bool) error {
		if isPack && indexed[id] {
			return nil
		}
		if info.ModTime().After(cutoff) {
			return nil
		}
		if isPack {
			res.OrphanPacks++
		} else {
			res.TempFiles++
		}
		res.BytesFreed += info.Size()
		if dryRun {
			return nil
		}
		if err := s.fs.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("gc: remove %s: %w", path, err)
		}
		return nil
	})
}

// indexedPacks returns the set of packs the index lists.
func (s *Store) indexedPacks() (map[ID]bool, error) {
	indexed := map[ID]bool{}
	err := s.idx.view(func(tx *bolt.Tx) error {
		return forEachPack(tx, func(id ID, _ packRecord) error {
			indexed[id] = true
			return nil
		})
	})
	return indexed, err
}

// walkPackDir calls fn for every pack file (isPack, with its ID) and every leftover
// temp file (isPack false) under packs/.
func (s *Store) walkPackDir(fn func(path string, info os.FileInfo, id ID, isPack bool) error) error {
	return vfs.Walk(s.fs, s.packsDir(), func(path string, info os.FileInfo, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if info.IsDir() {
			return nil
		}
		name := info.Name()
		if strings.HasPrefix(name, "tmp-") || strings.HasPrefix(name, ".tmp-") {
			return fn(path, info, ID{}, false)
		}
		if strings.HasSuffix(name, ".pack") {
			id, err := ParseID(strings.TrimSuffix(name, ".pack"))
			if err == nil {
				return fn(path, info, id, true)
			}
		}
		return nil
	})
}

// physicalBytes is the size of every file under packs/: what the store costs on disk
// apart from the index (which is a cache).
func (s *Store) physicalBytes() (int64, error) {
	if s.remote != nil {
		return s.remotePhysicalBytes(context.Background())
	}
	var n int64
	err := s.walkPackDir(func(_ string, info os.FileInfo, _ ID, _ bool) error {
		n += info.Size()
		return nil
	})
	return n, err
}
