package store

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Uploads: files stored for a repository before any commit names them (the Hub's
// upload-then-commit flow). Each is recorded per repository, so a repository may use
// only content it uploaded itself or already has in its history: knowing a file's
// SHA-256 must not be enough to commit it into another namespace. A recorded upload
// is a gc root for UploadGrace. The records live in the index: losing them (repair
// index) costs a client a re-upload, nothing else.

// UploadGrace is how long an uploaded file that no commit names stays available.
const UploadGrace = 24 * time.Hour

var bucketUploads = []byte("uploads") // repo \x00 sha256 (32 bytes) → file ID, unix seconds, CRC

func uploadKey(repo string, sha []byte) []byte {
	return append(append([]byte(repo), 0), sha...)
}

func encodeUpload(file ID, at time.Time) []byte {
	b := make([]byte, 44)
	copy(b, file[:])
	binary.LittleEndian.PutUint64(b[32:], uint64(at.Unix()))
	binary.LittleEndian.PutUint32(b[40:], crc32.Checksum(b[:40], castagnoli))
	return b
}

func decodeUpload(b []byte) (ID, time.Time, error) {
	if len(b) != 44 || crc32.Checksum(b[:40], castagnoli) != binary.LittleEndian.Uint32(b[40:]) {
		return ID{}, time.Time{}, fmt.Errorf("%w: an upload record fails its checksum", ErrIndexCorrupt)
	}
	return ID(b[:32]), time.Unix(int64(binary.LittleEndian.Uint64(b[32:])), 0), nil
}

func shaKey(sha256 string) ([]byte, error) {
	b, err := hex.DecodeString(sha256)
	if err != nil || len(b) != 32 {
		return nil, inputErrorf("%q is not a hex SHA-256", sha256)
	}
	return b, nil
}

// RecordUpload notes that repo uploaded the file with content sha256 now. The
// file must be stored and indexed: RecordUpload checks, under the lock that
// keeps gc out, that it still is (a gc may have reclaimed an unreferenced file
// since it was stored), and returns ErrNotFound otherwise. IngestFile and
// IngestObject record an upload atomically with IngestOptions.UploadRepo.
func (s *Store) RecordUpload(repo, sha256 string, file ID) error {
	gcLock, err := s.writerLock()
	if err != nil {
		return err
	}
	defer gcLock.Unlock()
	locs, err := s.idx.lookup([]ID{file})
	if err != nil {
		return err
	}
	if _, ok := locs[file]; !ok {
		return fmt.Errorf("%w: record upload of %s for %s: file object %s is no longer stored (reclaimed by gc?)", ErrNotFound, sha256, repo, file.Short())
	}
	return s.recordUpload(repo, sha256, file)
}

// recordUpload writes the upload record; the caller holds the writer lock.
func (s *Store) recordUpload(repo, sha256 string, file ID) error {
	key, err := shaKey(sha256)
	if err != nil {
		return err
	}
	return s.idx.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketUploads)
		if err != nil {
			return err
		}
		return b.Put(uploadKey(repo, key), encodeUpload(file, s.now()))
	})
}

// Uploaded returns the file repo uploaded with content sha256 within UploadGrace.
func (s *Store) Uploaded(repo, sha256 string) (ID, bool, error) {
	key, err := shaKey(sha256)
	if err != nil {
		return ID{}, false, err
	}
	var id ID
	var ok bool
	err = s.idx.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUploads)
		if b == nil {
			return nil
		}
		v := b.Get(uploadKey(repo, key))
		if v == nil {
			return nil
		}
		file, at, err := decodeUpload(v)
		if err != nil {
			return err
		}
		if s.now().Sub(at) <= UploadGrace {
			id, ok = file, true
		}
		return nil
	})
	return id, ok, err
}

// ForgetUploads drops every upload record of repo.
func (s *Store) ForgetUploads(repo string) error {
	prefix := append([]byte(repo), 0)
	return s.idx.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUploads)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		var keys [][]byte
		for k, _ := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
			keys = append(keys, append([]byte{}, k...))
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// uploadRoots returns the files of recent uploads (gc keeps them) and, unless
// dryRun, deletes the records older than UploadGrace.
func (s *Store) uploadRoots(dryRun bool) ([]ID, error) {
	var roots []ID
	var expired [][]byte
	now := s.now()
	err := s.idx.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUploads)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			file, at, err := decodeUpload(v)
			if err != nil {
				return err
			}
			if now.Sub(at) <= UploadGrace {
				roots = append(roots, file)
			} else {
				expired = append(expired, append([]byte{}, k...))
			}
			return nil
		})
	})
	if err != nil || dryRun || len(expired) == 0 {
		return roots, err
	}
	return roots, s.idx.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUploads)
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}
