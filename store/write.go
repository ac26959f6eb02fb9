package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/heft-dev/heft/codec/safetensors"
)

// The write API builds commits from streams and computed tensors rather than from
// a directory on disk: the hub ingests uploads with it, pulls store what they
// download with it, and ops store their results with it. It has two steps, as git's
// plumbing does: store file objects (IngestFile, WriteSafetensors), then commit a
// manifest of stored files to a ref (Commit). A stored file is durable when the call
// returns but no ref reaches it until a commit names it; gc's grace period keeps it
// meanwhile.

// StoredFile describes a file object the write API stored (or found).
type StoredFile struct {
	ID      ID
	Size    int64
	SHA256  string
	GitSHA  string
	Tensors int
	Stats   IngestStats
	// Timing is where WriteSafetensors spent its time (zero for other writes).
	Timing WriteTiming
}

// IngestOptions tune IngestFile.
type IngestOptions struct {
	// ExpectSHA256, when set, is the content hash the caller was promised (an LFS
	// oid); a mismatch fails with ErrInput and nothing refers to what was written.
	ExpectSHA256 string
	// Base names a model (REF) to delta-code new tensor chunks against, matching
	// tensors by name, dtype and shape.
	Base string
	// Progress, when set, is called with the bytes read so far and the total.
	Progress func(done, total int64)
	// UploadRepo, when set, records the stored file as uploaded by that
	// repository (as RecordUpload does) before the ingest lets gc run, so no gc
	// can fall between storing the unreferenced file and protecting it.
	UploadRepo string
}

// IngestFile stores one file of a model directory whose size bytes arrive on r, as
// Import would store it from disk: a path ending in .safetensors is validated and
// stored tensor by tensor (its header is read from the stream first), anything else
// is chunked by content. r must yield exactly size bytes. The content's SHA-256 is
// indexed, so FileBySHA256 finds the file afterwards.
func (s *Store) IngestFile(ctx context.Context, path string, r io.Reader, size int64, opts IngestOptions) (*StoredFile, error) {
	if err := ValidatePath(path); err != nil {
		return nil, err
	}
	return s.ingest(ctx, path, strings.HasSuffix(path, ".safetensors"), false, r, size, opts)
}

// IngestObject is IngestFile for content whose file name is not known yet (a Git
// LFS upload, named by its hash): a valid safetensors file is recognised by its
// header and stored tensor by tensor, anything else is chunked by content. The file
// object does not depend on the name, so a later commit may put it at any path.
func (s *Store) IngestObject(ctx context.Context, r io.Reader, size int64, opts IngestOptions) (*StoredFile, error) {
	name := "upload"
	if opts.ExpectSHA256 != "" {
		name = "object " + opts.ExpectSHA256
	}
	return s.ingest(ctx, name, false, true, r, size, opts)
}

func (s *Store) ingest(ctx context.Context, path string, isSafetensors, sniff bool, r io.Reader, size int64, opts IngestOptions) (*StoredFile, error) {
	if size < 0 {
		return nil, inputErrorf("%s: negative size", path)
	}
	if opts.ExpectSHA256 != "" {
		if b, err := hex.DecodeString(opts.ExpectSHA256); err != nil || len(b) != 32 || strings.ToLower(opts.ExpectSHA256) != opts.ExpectSHA256 {
			return nil, inputErrorf("%s: expected sha256 %q is not 64 lowercase hex digits", path, opts.ExpectSHA256)
		}
	}
	in := fileInput{rel: path, size: size, r: r}
	switch {
	case isSafetensors:
		// Read the length prefix and the header from the stream, then hand both
		// back to the chunker in front of the rest.
		var prefix [8]byte
		if _, err := io.ReadFull(r, prefix[:]); err != nil {
			return nil, inputErrorf("%s: reading the safetensors header length: %v", path, err)
		}
		n := binary.LittleEndian.Uint64(prefix[:])
		if n > safetensors.MaxHeaderSize || int64(n) > size-8 {
			// ParseHeader names the exact problem.
			_, err := safetensors.ParseHeader(prefix[:], size, path)
			if err == nil {
				err = fmt.Errorf("header length %d exceeds the file", n)
			}
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		raw := make([]byte, 8+n)
		copy(raw, prefix[:])
		if _, err := io.ReadFull(r, raw[8:]); err != nil {
			return nil, inputErrorf("%s: reading the safetensors header: %v", path, err)
		}
		h, err := safetensors.ParseHeader(raw, size, path)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		in.header = h
		in.r = io.MultiReader(bytes.NewReader(raw), r)
	case sniff && size >= 8:
		// Read what a safetensors header would be; if it is one, store the file
		// as safetensors, else put the bytes back in front of the stream.
		var prefix [8]byte
		if _, err := io.ReadFull(r, prefix[:]); err != nil {
			return nil, inputErrorf("%s: %v", path, err)
		}
		n := binary.LittleEndian.Uint64(prefix[:])
		raw := prefix[:]
		if n >= 2 && n <= safetensors.MaxHeaderSize && int64(n) <= size-8 {
			raw = make([]byte, 8+n)
			copy(raw, prefix[:])
			if _, err := io.ReadFull(r, raw[8:]); err != nil {
				return nil, inputErrorf("%s: %v", path, err)
			}
			if raw[8] == '{' {
				if h, err := safetensors.ParseHeader(raw, size, path); err == nil {
					in.header = h
				}
			}
		}
		in.r = io.MultiReader(bytes.NewReader(raw), r)
	}
	var base *baseModel
	if opts.Base != "" {
		id, err := s.Resolve(opts.Base)
		if err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
		if base, err = s.loadBaseModel(id, opts.Base); err != nil {
			return nil, err
		}
	}
	gcLock, err := s.writerLock()
	if err != nil {
		return nil, err
	}
	defer gcLock.Unlock()
	prog := &progress{fn: opts.Progress, total: size}
	var res StoredFile
	stats, err := s.withSession(ctx, func(sess *session) error {
		id, obj, err := s.storeFile(sess, in, base, nil, prog)
		if err != nil {
			return err
		}
		if opts.ExpectSHA256 != "" && obj.SHA256 != opts.ExpectSHA256 {
			return inputErrorf("%s: content has sha256 %s, expected %s", path, obj.SHA256, opts.ExpectSHA256)
		}
		// The stream must end where the caller said it would.
		var extra [1]byte
		if n, _ := io.ReadFull(r, extra[:]); n > 0 {
			return inputErrorf("%s: more than the declared %d bytes", path, size)
		}
		res = StoredFile{ID: id, Size: size, SHA256: obj.SHA256, GitSHA: obj.GitSHA, Tensors: len(obj.Tensor)}
		return nil
	})
	res.Stats = stats
	if err != nil {
		return nil, err
	}
	if opts.UploadRepo != "" {
		// Still under the writer lock: gc cannot run before the upload is recorded.
		if err := s.recordUpload(opts.UploadRepo, res.SHA256, res.ID); err != nil {
			return nil, err
		}
	}
	return &res, nil
}

// FileBySHA256 returns a stored file object whose content has the given SHA-256
// (lowercase hex), or ErrNotFound. The object is checked to be present and to match.
func (s *Store) FileBySHA256(sha256 string) (ID, *File, error) {
	key, err := hex.DecodeString(sha256)
	if err != nil || len(key) != 32 {
		return ID{}, nil, inputErrorf("%q is not a hex SHA-256", sha256)
	}
	id, ok, err := s.idx.fileBySHA(key)
	if err != nil {
		return ID{}, nil, err
	}
	if !ok {
		return ID{}, nil, fmt.Errorf("%w: no file with sha256 %s", ErrNotFound, sha256)
	}
	f, err := s.LoadFile(id)
	if err != nil {
		if errors.Is(err, ErrIntegrity) {
			// Removed by gc or damaged: as good as absent for a caller deciding
			// whether to upload it again.
			return ID{}, nil, fmt.Errorf("%w: no file with sha256 %s", ErrNotFound, sha256)
		}
		return ID{}, nil, err
	}
	if f.SHA256 != strings.ToLower(sha256) {
		return ID{}, nil, &IntegrityError{ID: id, Kind: KindFile, Reason: "index lists it under another sha256"}
	}
	return id, f, nil
}

// CommitRequest is a new commit of stored files.
type CommitRequest struct {
	Ref RefName
	// Parent is the commit the ref must point to when it moves (compare-and-swap);
	// the zero ID means the ref must not exist yet. The new commit's parent is
	// Parent.
	Parent ID
	// Files is the complete model directory. Each file must be stored already.
	Files      []ManifestEntry
	Message    string
	Provenance Provenance
	// Time overrides the commit time (zero: now).
	Time time.Time
	// Orphan makes a commit without parents while the ref still moves by
	// compare-and-swap from Parent (an empty branch replacing an existing one).
	Orphan bool
}

// Commit writes a manifest and a commit for files that are already stored and moves
// the ref from req.Parent to it. The ref moves only after the objects are durable
// and indexed; if it changed meanwhile the call fails with ErrConflict and the ref
// keeps its value (the objects written stay for gc).
func (s *Store) Commit(ctx context.Context, req CommitRequest) (ID, error) {
	if err := req.Ref.Validate(); err != nil {
		return ID{}, err
	}
	files := slices.Clone(req.Files)
	slices.SortFunc(files, func(a, b ManifestEntry) int { return strings.Compare(a.Path, b.Path) })
	ids := make([]ID, len(files))
	for i, f := range files {
		if err := ValidatePath(f.Path); err != nil {
			return ID{}, err
		}
		if i > 0 && files[i-1].Path == f.Path {
			return ID{}, inputErrorf("commit: path %q listed twice", f.Path)
		}
		ids[i] = f.File
	}
	if err := checkNoFileDirClash(files); err != nil {
		return ID{}, err
	}
	gcLock, err := s.writerLock()
	if err != nil {
		return ID{}, err
	}
	defer gcLock.Unlock()
	// gc may not run while the writer lock is held, so files present now stay.
	locs, err := s.idx.lookup(ids)
	if err != nil {
		return ID{}, err
	}
	for i, f := range files {
		loc, ok := locs[f.File]
		if !ok || loc.Kind != KindFile {
			return ID{}, fmt.Errorf("%w: commit: %s: file object %s is not stored", ErrNotFound, f.Path, f.File.Short())
		}
		obj, err := s.LoadFile(f.File)
		if err != nil {
			return ID{}, fmt.Errorf("commit: %s: %w", f.Path, err)
		}
		if files[i].Size == 0 {
			files[i].Size = obj.Size
		} else if files[i].Size != obj.Size {
			return ID{}, inputErrorf("commit: %s: size %d, but the stored file has %d bytes", f.Path, f.Size, obj.Size)
		}
	}
	if !req.Parent.IsZero() {
		if _, err := s.LoadCommit(req.Parent); err != nil {
			return ID{}, fmt.Errorf("commit: parent: %w", err)
		}
	}
	prov := req.Provenance
	prov.HeftVersion = Version
	when := req.Time
	if when.IsZero() {
		when = s.now()
	}
	c := Commit{Message: req.Message, Time: when.UTC().Format(time.RFC3339Nano), Provenance: prov}
	if !req.Parent.IsZero() && !req.Orphan {
		c.Parents = []ID{req.Parent}
	}
	var commitID ID
	_, err = s.withSession(ctx, func(sess *session) error {
		m := Manifest{Files: files}
		if m.Files == nil {
			m.Files = []ManifestEntry{}
		}
		mid, err := sess.put(KindManifest, &m)
		if err != nil {
			return err
		}
		c.Manifest = mid
		commitID, err = sess.put(KindCommit, &c)
		return err
	})
	if err != nil {
		return ID{}, err
	}
	msg := prov.Op
	if req.Message != "" {
		msg += ": " + req.Message
	}
	if err := s.UpdateRef(req.Ref, req.Parent, commitID, msg); err != nil {
		return ID{}, err
	}
	return commitID, nil
}

// checkNoFileDirClash refuses a directory whose path is also a file ("a" and "a/b").
// files must be sorted by path.
func checkNoFileDirClash(files []ManifestEntry) error {
	paths := map[string]bool{}
	for _, f := range files {
		paths[f.Path] = true
	}
	for _, f := range files {
		for dir := f.Path; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
			if paths[dir] {
				return inputErrorf("commit: %q is both a file and the directory of %q", dir, f.Path)
			}
		}
	}
	return nil
}
