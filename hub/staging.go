package hub

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// staging holds the parts of multipart uploads until their completion
// request feeds them, in order, to Writer.StoreObject. Parts arrive in
// parallel and in any order, and a client may retry one, so each part is
// written to a temp file and renamed to part-NNNNN-<sha256>: a finished
// part is never torn, and the completion request names the parts it wants
// by the ETags (SHA-256s) it got back.
//
// Layout: ROOT/<upload>/part-00001-<sha256>, where <upload> hashes the repo,
// oid, size and chunk size (parts staged for one repo are never used to
// complete an upload for another, see Writer's object scoping).
//
// The bytes staged (and reserved by parts being written) are capped at max;
// a part that would exceed it is refused with errStagingFull (503, which
// the clients retry). Uploads idle for longer than an upload URL lives are
// swept when another upload starts. Staging is not durable: a part lost to
// a crash is uploaded again by the client after the completion fails.
type staging struct {
	dir string // as configured; "" means a private temp dir
	max int64
	ttl time.Duration

	mu      sync.Mutex
	root    string // guarded by mu; "" until first use
	ownRoot bool   // root was created by us (Close removes it)
	used    int64  // bytes staged or reserved; guarded by mu
	busy    map[string]*uploadLock
}

type uploadLock struct {
	mu   sync.Mutex
	refs int
}

var errStagingFull = errors.New("staging area for multipart uploads is full; retry later")

func newStaging(dir string, max int64, ttl time.Duration) *staging {
	return &staging{dir: dir, max: max, ttl: ttl, busy: map[string]*uploadLock{}}
}

// uploadKey names the staging directory of one multipart upload.
func uploadKey(repo, oid string, size, chunk int64) string {
	sum := sha256.Sum256([]byte(repo + "\x00" + oid + "\x00" + strconv.FormatInt(size, 10) + "\x00" + strconv.FormatInt(chunk, 10)))
	return hex.EncodeToString(sum[:16])
}

// rootDir returns the staging root, creating it on first use and counting
// what a previous process left there.
func (s *staging) rootDir() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.root != "" {
		return s.root, nil
	}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "heft-hub-staging-")
		if err != nil {
			return "", fmt.Errorf("staging: %w", err)
		}
		s.root, s.ownRoot = d, true
		return d, nil
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return "", fmt.Errorf("staging: %w", err)
	}
	var used int64
	err := filepath.WalkDir(s.dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if fi, err := d.Info(); err == nil {
			used += fi.Size()
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("staging: %w", err)
	}
	s.root, s.used = s.dir, used
	return s.root, nil
}

// reserve claims n bytes of the budget.
func (s *staging) reserve(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used+n > s.max {
		return errStagingFull
	}
	s.used += n
	return nil
}

func (s *staging) release(n int64) {
	s.mu.Lock()
	s.used -= n
	s.mu.Unlock()
}

// Used reports the bytes staged or reserved (for tests and metrics).
func (s *staging) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

func partName(n int, sha string) string { return fmt.Sprintf("part-%05d-%s", n, sha) }

// putPart stores part n (1-based) of an upload, which must be exactly want
// bytes, from r, and returns its SHA-256 (the ETag the client sends back).
func (s *staging) putPart(key string, n int, want int64, r io.Reader) (string, error) {
	root, err := s.rootDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, key)
	if err := os.Mkdir(dir, 0o700); err == nil {
		s.sweep(root, key) // a new upload: a good time to drop abandoned ones
	} else if !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("staging: %w", err)
	}
	// A retried part replaces what an earlier attempt staged, and must not
	// be refused for the room that attempt holds.
	if old, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("part-%05d-*", n))); len(old) > 0 {
		for _, p := range old {
			if fi, err := os.Stat(p); err == nil && os.Remove(p) == nil {
				s.release(fi.Size())
			}
		}
	}
	if err := s.reserve(want); err != nil {
		return "", err
	}
	kept := false
	defer func() {
		if !kept {
			s.release(want)
		}
	}()
	f, err := os.CreateTemp(dir, ".tmp-part-*")
	if err != nil {
		return "", fmt.Errorf("staging: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	h := sha256.New()
	got, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, want+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("staging part %d: %w", n, err)
	}
	if got != want {
		return "", &partSizeError{part: n, got: got, want: want}
	}
	sha := hex.EncodeToString(h.Sum(nil))
	final := filepath.Join(dir, partName(n, sha))
	var replaced int64
	if fi, err := os.Stat(final); err == nil {
		replaced = fi.Size() // a retry of the same part: counted once
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("staging: %w", err)
	}
	kept = true
	s.release(replaced)
	return sha, nil
}

// partSizeError reports a part body of the wrong length (400).
type partSizeError struct {
	part      int
	got, want int64
}

func (e *partSizeError) Error() string {
	if e.got > e.want {
		return fmt.Sprintf("part %d: more than the %d bytes it must have", e.part, e.want)
	}
	return fmt.Sprintf("part %d: got %d bytes, want %d", e.part, e.got, e.want)
}

// openParts opens the staged parts named by shas (part i+1 has SHA-256
// shas[i]) as one reader of their concatenation, checking that each has
// its expected length (chunk, the last one the rest of size).
func (s *staging) openParts(key string, shas []string, size, chunk int64) (io.ReadCloser, error) {
	root, err := s.rootDir()
	if err != nil {
		return nil, err
	}
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	readers := make([]io.Reader, 0, len(shas))
	for i, sha := range shas {
		want := min(chunk, size-int64(i)*chunk)
		f, err := os.Open(filepath.Join(root, key, partName(i+1, sha)))
		if errors.Is(err, fs.ErrNotExist) {
			closeAll()
			return nil, &missingPartError{part: i + 1}
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("staging: %w", err)
		}
		files = append(files, f)
		fi, err := f.Stat()
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("staging: %w", err)
		}
		if fi.Size() != want {
			closeAll()
			return nil, &partSizeError{part: i + 1, got: fi.Size(), want: want}
		}
		readers = append(readers, f)
	}
	return &multiFile{Reader: io.MultiReader(readers...), close: closeAll}, nil
}

// missingPartError reports a completion request for a part that was not
// uploaded (or not with the ETag given) (400).
type missingPartError struct{ part int }

func (e *missingPartError) Error() string {
	return fmt.Sprintf("part %d was not uploaded with the ETag given for it", e.part)
}

type multiFile struct {
	io.Reader
	close func()
}

func (m *multiFile) Close() error { m.close(); return nil }

// remove deletes an upload's staged parts and returns their bytes to the
// budget.
func (s *staging) remove(key string) {
	s.mu.Lock()
	root := s.root
	s.mu.Unlock()
	if root != "" {
		s.removeDir(filepath.Join(root, key))
	}
}

func (s *staging) removeDir(dir string) {
	var freed int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && !strings.HasPrefix(e.Name(), ".tmp-") {
			freed += fi.Size() // temp files are still reserved by their writer
		}
	}
	if err := os.RemoveAll(dir); err == nil {
		s.release(freed)
	}
}

// sweep removes uploads (other than keep) untouched for longer than an
// upload URL lives: their completion URL has expired, so they can never
// complete.
func (s *staging) sweep(root, keep string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	// File times are wall-clock times, so this compares with the wall
	// clock, not the handler's (possibly fake) one.
	cutoff := time.Now().Add(-s.ttl - time.Hour)
	for _, e := range entries {
		if !e.IsDir() || e.Name() == keep {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			s.removeDir(filepath.Join(root, e.Name()))
		}
	}
}

// lock serialises completion requests of one upload; the returned function
// unlocks.
func (s *staging) lock(key string) func() {
	s.mu.Lock()
	l := s.busy[key]
	if l == nil {
		l = &uploadLock{}
		s.busy[key] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.busy, key)
		}
		s.mu.Unlock()
	}
}

// close removes the staging root if it is a private temp dir.
func (s *staging) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ownRoot && s.root != "" {
		err := os.RemoveAll(s.root)
		s.root, s.ownRoot, s.used = "", false, 0
		if err != nil {
			return fmt.Errorf("staging: %w", err)
		}
	}
	return nil
}
