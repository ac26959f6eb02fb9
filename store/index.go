package store

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	boltErrors "go.etcd.io/bbolt/errors"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/store/internal/pack"
)

// The index is a bbolt database mapping object IDs to their place in a pack. It is a
// cache: every fact in it is also in the packs' self-describing trailers, so `heft
// repair index` can rebuild it (restic's and perkeep's lesson). bbolt checksums only
// its meta pages, so every value carries its own CRC-32C, checked on every read.
//
// The database is opened for the length of a transaction, not for the life of the
// process: bbolt's file lock is exclusive for writers, and holding it across a long
// import would lock every other heft process out of the store. Within one process the
// open handle is shared and reference-counted.

var (
	bucketObjects = []byte("objects") // object ID → location
	bucketPacks   = []byte("packs")   // pack ID → pack record
	bucketMeta    = []byte("meta")    // "version" → index format version
)

const indexVersion = "1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Location is where an object's stored bytes live.
type Location struct {
	Pack      ID
	Offset    uint64
	StoredLen uint64
	RawLen    uint64
	Kind      Kind
	Codec     uint8
	CRC       uint32 // CRC-32C of the stored bytes, as in the pack entry
}

const locationLen = 32 + 8 + 8 + 8 + 1 + 1 + 4

// entry is the pack entry of the object id stored at l, as the pack readers
// check it.
func (l Location) entry(id ID) pack.Entry {
	return pack.Entry{ID: pack.ID(id), Kind: uint8(l.Kind), Codec: l.Codec, Offset: l.Offset, RawLen: l.RawLen, StoredLen: l.StoredLen, CRC: l.CRC}
}

// locationOf is the index location of a pack entry of pack packID.
func locationOf(packID ID, e pack.Entry) Location {
	return Location{Pack: packID, Offset: e.Offset, StoredLen: e.StoredLen, RawLen: e.RawLen, Kind: Kind(e.Kind), Codec: e.Codec, CRC: e.CRC}
}

func (l Location) encode() []byte {
	b := make([]byte, locationLen+4)
	copy(b, l.Pack[:])
	binary.LittleEndian.PutUint64(b[32:], l.Offset)
	binary.LittleEndian.PutUint64(b[40:], l.StoredLen)
	binary.LittleEndian.PutUint64(b[48:], l.RawLen)
	b[56] = byte(l.Kind)
	b[57] = l.Codec
	binary.LittleEndian.PutUint32(b[58:], l.CRC)
	binary.LittleEndian.PutUint32(b[locationLen:], crc32.Checksum(b[:locationLen], castagnoli))
	return b
}

func decodeLocation(id ID, b []byte) (Location, error) {
	var l Location
	if len(b) != locationLen+4 || crc32.Checksum(b[:locationLen], castagnoli) != binary.LittleEndian.Uint32(b[locationLen:]) {
		return l, fmt.Errorf("%w: index record of object %s fails its checksum", ErrIndexCorrupt, id.Short())
	}
	copy(l.Pack[:], b)
	l.Offset = binary.LittleEndian.Uint64(b[32:])
	l.StoredLen = binary.LittleEndian.Uint64(b[40:])
	l.RawLen = binary.LittleEndian.Uint64(b[48:])
	l.Kind = Kind(b[56])
	l.Codec = b[57]
	l.CRC = binary.LittleEndian.Uint32(b[58:])
	return l, nil
}

// packRecord is what the index knows about a pack file.
type packRecord struct {
	Size    uint64
	Entries uint64
}

func (p packRecord) encode() []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint64(b, p.Size)
	binary.LittleEndian.PutUint64(b[8:], p.Entries)
	binary.LittleEndian.PutUint32(b[16:], crc32.Checksum(b[:16], castagnoli))
	return b
}

func decodePackRecord(id ID, b []byte) (packRecord, error) {
	if len(b) != 20 || crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:]) {
		return packRecord{}, fmt.Errorf("%w: index record of pack %s fails its checksum", ErrIndexCorrupt, id.Short())
	}
	return packRecord{Size: binary.LittleEndian.Uint64(b), Entries: binary.LittleEndian.Uint64(b[8:])}, nil
}

type index struct {
	path    string
	timeout time.Duration

	mu    sync.Mutex
	db    *bolt.DB // +checklocks:mu
	users int      // +checklocks:mu
}

// acquire returns the shared handle, opening the database if this process has no
// handle open. Each acquire must be paired with release.
func (ix *index) acquire() (db *bolt.DB, err error) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.db == nil {
		if _, statErr := os.Stat(ix.path); statErr != nil {
			return nil, fmt.Errorf("%w: index %s is missing (run `heft repair index`)", ErrIndexCorrupt, ix.path)
		}
		db, err = openBolt(ix.path, ix.timeout)
		if err != nil {
			return nil, err
		}
		ix.db = db
	}
	ix.users++
	return ix.db, nil
}

func (ix *index) release() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.users--
	if ix.users == 0 && ix.db != nil {
		_ = ix.db.Close()
		ix.db = nil
	}
}

// openBolt opens (or creates) a bbolt file, turning bbolt's panics on damaged pages
// into ErrIndexCorrupt and its lock timeout into ErrBusy.
func openBolt(path string, timeout time.Duration) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: opening %s: %v", ErrIndexCorrupt, path, r)
		}
	}()
	db, err = bolt.Open(path, 0o644, &bolt.Options{Timeout: timeout})
	switch {
	case errors.Is(err, boltErrors.ErrTimeout):
		return nil, fmt.Errorf("%w: another heft process is writing the index %s (waited %s)", ErrBusy, path, timeout)
	case errors.Is(err, boltErrors.ErrInvalid), errors.Is(err, boltErrors.ErrChecksum), errors.Is(err, boltErrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: opening %s: %v", ErrIndexCorrupt, path, err)
	case err != nil:
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	return db, nil
}

func (ix *index) view(fn func(tx *bolt.Tx) error) error {
	return ix.run(false, fn)
}

func (ix *index) update(fn func(tx *bolt.Tx) error) error {
	return ix.run(true, fn)
}

func (ix *index) run(write bool, fn func(tx *bolt.Tx) error) (err error) {
	db, err := ix.acquire()
	if err != nil {
		return err
	}
	defer ix.release()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: reading %s: %v", ErrIndexCorrupt, ix.path, r)
		}
	}()
	wrapped := func(tx *bolt.Tx) error {
		if tx.Bucket(bucketObjects) == nil || tx.Bucket(bucketPacks) == nil {
			return fmt.Errorf("%w: %s lacks its buckets", ErrIndexCorrupt, ix.path)
		}
		return fn(tx)
	}
	if write {
		return db.Update(wrapped)
	}
	return db.View(wrapped)
}

// createIndex writes a fresh, empty index at path (which must not exist).
func createIndex(path string, timeout time.Duration) error {
	db, err := openBolt(path, timeout)
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketObjects, bucketPacks, bucketMeta, bucketFiles} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put([]byte("version"), []byte(indexVersion))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create index %s: %w", path, err)
	}
	return nil
}

func getLocation(tx *bolt.Tx, id ID) (Location, bool, error) {
	v := tx.Bucket(bucketObjects).Get(id[:])
	if v == nil {
		return Location{}, false, nil
	}
	l, err := decodeLocation(id, v)
	return l, err == nil, err
}

// lookup returns the locations of the ids that the index has.
func (ix *index) lookup(ids []ID) (map[ID]Location, error) {
	found := make(map[ID]Location, len(ids))
	err := ix.view(func(tx *bolt.Tx) error {
		for _, id := range ids {
			l, ok, err := getLocation(tx, id)
			if err != nil {
				return err
			}
			if ok {
				found[id] = l
			}
		}
		return nil
	})
	return found, err
}

// addPack records a published pack and all its entries in one transaction. It runs
// only after the pack file and its directory are durable (data before metadata). An
// object already indexed in another pack keeps its old location: both copies are
// valid, and gc reclaims the duplicate when it rewrites packs.
func (ix *index) addPack(packID ID, rec packRecord, entries map[ID]Location) error {
	failpoint.Hit(failpoint.IndexBeforeCommit)
	defer failpoint.Hit(failpoint.IndexAfterCommit)
	return ix.update(func(tx *bolt.Tx) error {
		objs := tx.Bucket(bucketObjects)
		for id, loc := range entries {
			if objs.Get(id[:]) != nil {
				continue
			}
			if err := objs.Put(id[:], loc.encode()); err != nil {
				return fmt.Errorf("index object %s: %w", id.Short(), err)
			}
		}
		return tx.Bucket(bucketPacks).Put(packID[:], rec.encode())
	})
}

// forEachPack calls fn for every pack record, checking each record's checksum.
func forEachPack(tx *bolt.Tx, fn func(id ID, rec packRecord) error) error {
	return tx.Bucket(bucketPacks).ForEach(func(k, v []byte) error {
		id := ID(k)
		rec, err := decodePackRecord(id, v)
		if err != nil {
			return err
		}
		return fn(id, rec)
	})
}

// forEachObject calls fn for every object location, checking each record's checksum.
func forEachObject(tx *bolt.Tx, fn func(id ID, loc Location) error) error {
	return tx.Bucket(bucketObjects).ForEach(func(k, v []byte) error {
		id := ID(k)
		loc, err := decodeLocation(id, v)
		if err != nil {
			return err
		}
		return fn(id, loc)
	})
}

// bucketFiles maps a file's content SHA-256 (32 bytes) to a file object with that
// content, so a file the store already has (an upload, a pull) is recognised by the
// hash clients know it by. Like the rest of the index it is a cache: repair rebuilds
// it from the file objects in the packs.
var bucketFiles = []byte("files")

func encodeFileRecord(id ID) []byte {
	b := make([]byte, 36)
	copy(b, id[:])
	binary.LittleEndian.PutUint32(b[32:], crc32.Checksum(b[:32], castagnoli))
	return b
}

func decodeFileRecord(b []byte) (ID, error) {
	if len(b) != 36 || crc32.Checksum(b[:32], castagnoli) != binary.LittleEndian.Uint32(b[32:]) {
		return ID{}, fmt.Errorf("%w: index record of a file hash fails its checksum", ErrIndexCorrupt)
	}
	return ID(b[:32]), nil
}

// putFileSHAs records sha256 (hex) → file object for each entry.
func putFileSHAs(tx *bolt.Tx, files map[string]ID) error {
	if len(files) == 0 {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bucketFiles)
	if err != nil {
		return err
	}
	for sha, id := range files {
		key, err := hex.DecodeString(sha)
		if err != nil || len(key) != 32 {
			return fmt.Errorf("index file hash %q: not a hex SHA-256", sha)
		}
		if err := b.Put(key, encodeFileRecord(id)); err != nil {
			return err
		}
	}
	return nil
}

func (ix *index) addFileSHAs(files map[string]ID) error {
	if len(files) == 0 {
		return nil
	}
	return ix.update(func(tx *bolt.Tx) error { return putFileSHAs(tx, files) })
}

// fileBySHA returns the file object recorded for a content hash.
func (ix *index) fileBySHA(sha []byte) (ID, bool, error) {
	var id ID
	var ok bool
	err := ix.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFiles)
		if b == nil {
			return nil
		}
		v := b.Get(sha)
		if v == nil {
			return nil
		}
		var err error
		id, err = decodeFileRecord(v)
		ok = err == nil
		return err
	})
	return id, ok, err
}
