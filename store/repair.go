package store

import (
	"context"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"

	"github.com/heft-dev/heft/internal/fsutil"
	"github.com/heft-dev/heft/store/internal/pack"
)

// RepairResult reports an index rebuild.
type RepairResult struct {
	Packs        int      `json:"packs"`
	Objects      int      `json:"objects"`
	Duplicates   int      `json:"duplicate_objects"`
	DamagedPacks []string `json:"damaged_packs"`
}

// RepairIndex rebuilds the index from the pack files alone and replaces the old one
// atomically. It runs under the exclusive gc lock, so no writer adds packs meanwhile.
// Entries of a pack whose trailer is damaged are recovered from the per-entry headers
// up to the first damaged one; such packs are reported.
func (s *Store) RepairIndex() (*RepairResult, error) {
	lock, err := s.exclusiveLockRefresh(false)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	tmp := s.idx.path + ".rebuild"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := createIndex(tmp, s.opts.LockTimeout); err != nil {
		return nil, err
	}
	db, err := openBolt(tmp, s.opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	res := &RepairResult{DamagedPacks: []string{}}
	addEntries := func(id ID, size int64, entries []pack.Entry) error {
		res.Packs++
		return db.Update(func(tx *bolt.Tx) error {
			objs := tx.Bucket(bucketObjects)
			for _, e := range entries {
				oid := ID(e.ID)
				if objs.Get(oid[:]) != nil {
					res.Duplicates++
					continue
				}
				loc := locationOf(id, e)
				if err := objs.Put(oid[:], loc.encode()); err != nil {
					return err
				}
				res.Objects++
			}
			return tx.Bucket(bucketPacks).Put(id[:], packRecord{Size: uint64(size), Entries: uint64(len(entries))}.encode())
		})
	}
	if s.remote != nil {
		// A shared store's index is rebuilt from the backend's packs alone.
		err = s.forEachRemotePackTable(context.Background(), func(id ID, size int64, entries []pack.Entry, terr error) error {
			if terr != nil {
				res.DamagedPacks = append(res.DamagedPacks, terr.Error())
				return nil
			}
			if len(entries) == 0 {
				return nil
			}
			return addEntries(id, size, entries)
		})
	} else {
		err = s.walkPackDir(func(path string, info os.FileInfo, id ID, isPack bool) error {
			if !isPack {
				return nil
			}
			scan, err := pack.ScanFS(s.fs, path)
			if err != nil {
				res.DamagedPacks = append(res.DamagedPacks, fmt.Sprintf("%s: %v", path, err))
				return nil
			}
			if len(scan.Damage) > 0 || !scan.Complete {
				res.DamagedPacks = append(res.DamagedPacks, fmt.Sprintf("%s: %d entries recovered (%s mode): %v", path, len(scan.Entries), scan.Mode, errors.Join(scan.Damage...)))
			}
			if len(scan.Entries) == 0 {
				return nil
			}
			return addEntries(id, info.Size(), scan.Entries)
		})
	}
	if err == nil {
		err = s.rebuildFileSHAs(db)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("repair index: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, s.idx.path); err != nil {
		return nil, fmt.Errorf("repair index: %w", err)
	}
	if err := fsutil.SyncDir(s.dir); err != nil {
		return nil, err
	}
	return res, nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// rebuildFileSHAs fills the content-hash bucket of a rebuilt index from the file
// objects it lists. A file object that cannot be read is left out (verify reports it).
func (s *Store) rebuildFileSHAs(db *bolt.DB) error {
	files := map[string]ID{}
	var locs []struct {
		id  ID
		loc Location
	}
	err := db.View(func(tx *bolt.Tx) error {
		return forEachObject(tx, func(id ID, loc Location) error {
			if loc.Kind == KindFile {
				locs = append(locs, struct {
					id  ID
					loc Location
				}{id, loc})
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, l := range locs {
		data, err := s.readLocated(l.id, l.loc, nil)
		if err != nil {
			continue
		}
		var f File
		if decodeObject(KindFile, data, &f) == nil && f.SHA256 != "" {
			files[f.SHA256] = l.id
		}
	}
	return db.Update(func(tx *bolt.Tx) error { return putFileSHAs(tx, files) })
}
