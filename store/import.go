package store

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/store/internal/chunker"
)

// ImportOptions describe one import.
type ImportOptions struct {
	Ref     RefName
	Message string
	// Base names the model (REF) to delta-code against. When empty and NoDelta is
	// false, a stored model of the same architecture is found automatically (see
	// autoBase); the choice is recorded in the commit's provenance.
	Base    string
	NoDelta bool
	// NoRecipes stores every tensor as data even when it is exactly a quantization
	// or dequantization of a stored model's tensors (see detectRecipes).
	NoRecipes bool
	// Provenance overrides the default {op: "import", source: SRC}.
	Provenance *Provenance
	// Progress, when set, is called with the bytes read so far and the total.
	Progress func(done, total int64)
}

// ImportResult is what an import did.
type ImportResult struct {
	Commit    ID
	Ref       RefName
	Files     int
	Tensors   int
	DeltaBase string // the model new chunks were delta-coded against, if any
	// RecipeTensors tensors were stored as recipes over RecipeSource's tensors.
	RecipeTensors int
	RecipeSource  string
	LogicalBytes  int64 // size of the imported files
	Stats         IngestStats
}

// gitBlobLimit: the Hub keeps files up to 10 MB in git (above that, LFS), and its
// ETag for those is the git blob id; heft computes it for such files only.
const gitBlobLimit = 10 << 20

// sourceFile is one file of the source directory, validated before anything is stored.
type sourceFile struct {
	rel    string // slash-separated path inside the model directory
	abs    string
	size   int64
	header *safetensors.Header // nil for non-safetensors files
}

// Import stores a model directory (or one .safetensors file) and moves ref to a new
// commit whose parent is the ref's previous commit. Every safetensors header is
// validated before the first byte is stored, so malformed input leaves the store
// untouched. Data is durable and indexed before the ref moves.
func (s *Store) Import(ctx context.Context, src string, opts ImportOptions) (*ImportResult, error) {
	if err := opts.Ref.Validate(); err != nil {
		return nil, err
	}
	files, err := scanSource(src)
	if err != nil {
		return nil, err
	}
	gcLock, err := s.writerLock()
	if err != nil {
		return nil, err
	}
	defer gcLock.Unlock()
	parent, err := s.Ref(opts.Ref)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	var base *baseModel
	switch {
	case opts.Base != "":
		id, err := s.Resolve(opts.Base)
		if err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
		if base, err = s.loadBaseModel(id, opts.Base); err != nil {
			return nil, err
		}
	case !opts.NoDelta:
		if base, err = s.autoBase(files); err != nil {
			return nil, fmt.Errorf("choosing a delta base: %w", err)
		}
	}
	var recipes *recipeSet
	if !opts.NoRecipes {
		if recipes, err = s.detectRecipes(files); err != nil {
			return nil, fmt.Errorf("looking for recipes: %w", err)
		}
	}
	res := &ImportResult{Ref: opts.Ref, Files: len(files)}
	if base != nil {
		res.DeltaBase = base.label
	}
	var total int64
	for _, f := range files {
		total += f.size
	}
	res.LogicalBytes = total
	prog := &progress{fn: opts.Progress, total: total}
	var commitID ID
	stats, err := s.withSession(ctx, func(sess *session) error {
		var manifest Manifest
		for _, f := range files {
			fileID, ntensors, err := s.importFile(sess, f, base, recipes, prog)
			if err != nil {
				return err
			}
			res.Tensors += ntensors
			manifest.Files = append(manifest.Files, ManifestEntry{Path: f.rel, File: fileID, Size: uint64(f.size)})
		}
		manifestID, err := sess.put(KindManifest, &manifest)
		if err != nil {
			return err
		}
		prov := Provenance{Op: "import", Source: src}
		if opts.Provenance != nil {
			prov = *opts.Provenance
		}
		prov.HeftVersion = Version
		if base != nil {
			prov.Params = maps.Clone(prov.Params)
			if prov.Params == nil {
				prov.Params = map[string]string{}
			}
			prov.Params["delta_base"] = base.label
			if !slices.Contains(prov.Inputs, base.commit) {
				prov.Inputs = append(prov.Inputs, base.commit)
			}
		}
		if recipes != nil && recipes.hits > 0 {
			prov.Params = maps.Clone(prov.Params)
			if prov.Params == nil {
				prov.Params = map[string]string{}
			}
			prov.Params["recipes"] = fmt.Sprintf("%d tensors as %s of %s", recipes.hits, recipes.op, recipes.label)
			prov.Params["derived_op"] = recipes.op
			if !slices.Contains(prov.Inputs, recipes.commit) {
				prov.Inputs = append(prov.Inputs, recipes.commit)
			}
		}
		c := Commit{Manifest: manifestID, Message: opts.Message, Time: s.now().UTC().Format(time.RFC3339Nano), Provenance: prov}
		if !parent.IsZero() {
			c.Parents = []ID{parent}
		}
		commitID, err = sess.put(KindCommit, &c)
		return err
	})
	res.Stats = stats
	if recipes != nil {
		res.RecipeTensors, res.RecipeSource = recipes.hits, recipes.label
	}
	if err != nil {
		return res, err
	}
	msg := "import: " + src
	if opts.Message != "" {
		msg += ": " + opts.Message
	}
	if err := s.UpdateRef(opts.Ref, parent, commitID, msg); err != nil {
		return res, err
	}
	res.Commit = commitID
	return res, nil
}

// scanSource lists and validates the files of src.
func scanSource(src string) ([]sourceFile, error) {
	st, err := os.Stat(src)
	if err != nil {
		return nil, inputErrorf("import source: %v", err)
	}
	var files []sourceFile
	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return nil, inputErrorf("import source %s is not a regular file or directory", src)
		}
		files = append(files, sourceFile{rel: filepath.Base(src), abs: src, size: st.Size()})
	} else {
		err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return inputErrorf("import source: %v", err)
			}
			rel, _ := filepath.Rel(src, path)
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				// A git checkout's metadata and huggingface_hub's local-dir cache are
				// not part of the model.
				if rel == ".git" || rel == ".cache/huggingface" {
					return filepath.SkipDir
				}
				return nil
			}
			info, err := os.Stat(path) // follows symlinks (Hugging Face cache snapshots are symlinks)
			if err != nil {
				return inputErrorf("import source %s: %v", path, err)
			}
			if info.IsDir() {
				return inputErrorf("import source %s: symlinked directories are not followed", path)
			}
			if !info.Mode().IsRegular() {
				return inputErrorf("import source %s: not a regular file", path)
			}
			if err := ValidatePath(rel); err != nil {
				return err
			}
			files = append(files, sourceFile{rel: rel, abs: path, size: info.Size()})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].rel < files[j].rel })
	for i := range files {
		f := &files[i]
		if !strings.HasSuffix(f.rel, ".safetensors") {
			continue
		}
		h, err := readSafetensorsHeader(f.abs, f.size, f.rel)
		if err != nil {
			return nil, err
		}
		f.header = h
	}
	return files, nil
}

func readSafetensorsHeader(path string, size int64, name string) (*safetensors.Header, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, inputErrorf("%v", err)
	}
	defer fh.Close()
	h, err := safetensors.ReadHeader(fh, size, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInput, err)
	}
	return h, nil
}

// ValidatePath checks a model-relative path: slash-separated, no empty, "." or ".."
// segments, no absolute paths or control characters.
func ValidatePath(p string) error {
	if p == "" || len(p) > 1024 || strings.HasPrefix(p, "/") {
		return inputErrorf("invalid path %q", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return inputErrorf("invalid path %q: empty, '.' or '..' segment", p)
		}
	}
	for _, r := range p {
		if unicode.IsControl(r) || r == '\\' {
			return inputErrorf("invalid path %q: control character or backslash", p)
		}
	}
	return nil
}

// progress reports bytes read across all files of one operation.
// It is safe for concurrent use.
type progress struct {
	fn          func(done, total int64)
	mu          sync.Mutex
	done, total int64 // +checklocks:mu
}

func (p *progress) add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
}

// batchBytes is how much source data one pipeline step holds: enough for every
// worker to have two chunks, and bounded so memory stays small whatever the model size.
func (s *Store) batchBytes() int {
	n := 2 * s.opts.Workers * s.opts.ChunkSize
	if n < 16<<20 {
		n = 16 << 20
	}
	return n
}

// fileHasher computes a file's sha256 (and git blob id for small files) on its own
// goroutine, so that hashing the whole file overlaps chunk hashing and compression.
type fileHasher struct {
	sha  hash.Hash
	git  hash.Hash
	in   chan []byte
	done chan struct{}
}

func newFileHasher(size int64) *fileHasher {
	// Unbuffered: a send returns only once the hasher has finished the previous
	// buffer, so the caller may refill that one (two buffers alternate).
	h := &fileHasher{sha: sha256.New(), in: make(chan []byte), done: make(chan struct{})}
	if size <= gitBlobLimit {
		h.git = sha1.New()
		fmt.Fprintf(h.git, "blob %d\x00", size)
	}
	go func() {
		defer close(h.done)
		for b := range h.in {
			h.sha.Write(b)
			if h.git != nil {
				h.git.Write(b)
			}
		}
	}()
	return h
}

// write hands b to the hasher; b must stay unmodified until the next write or finish
// returns.
func (h *fileHasher) write(b []byte) { h.in <- b }

func (h *fileHasher) finish() (sha, git string) {
	close(h.in)
	<-h.done
	sha = hex.EncodeToString(h.sha.Sum(nil))
	if h.git != nil {
		git = hex.EncodeToString(h.git.Sum(nil))
	}
	return sha, git
}

// importFile stores one file of the source directory and returns its file object's
// ID and tensor count.
func (s *Store) importFile(sess *session, f sourceFile, base *baseModel, recipes *recipeSet, prog *progress) (ID, int, error) {
	fh, err := os.Open(f.abs)
	if err != nil {
		return ID{}, 0, fmt.Errorf("import %s: %w", f.rel, err)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err != nil || st.Size() != f.size {
		return ID{}, 0, fmt.Errorf("%w: %s changed during import", ErrInput, f.rel)
	}
	id, _, err := s.storeFile(sess, fileInput{rel: f.rel, size: f.size, header: f.header, r: fh}, base, recipes, prog)
	if err != nil {
		return ID{}, 0, err
	}
	n := 0
	if f.header != nil {
		n = len(f.header.Tensors)
	}
	return id, n, nil
}

// fileInput is one file to store: exactly size bytes arrive on r, in order. header
// is the parsed safetensors header (its bytes are still the first ones on r), or nil
// for any other file.
type fileInput struct {
	rel    string
	size   int64
	header *safetensors.Header
	r      io.Reader
}

// storeFile chunks, dedups and stores one file and its file object.
func (s *Store) storeFile(sess *session, f fileInput, base *baseModel, recipes *recipeSet, prog *progress) (ID, *File, error) {
	// Two buffers alternate: the file hasher reads one while the next is filled.
	bufs := [2][]byte{make([]byte, s.batchBytes()), make([]byte, s.batchBytes())}
	hasher := newFileHasher(f.size)
	obj := File{Size: uint64(f.size)}
	var err error
	if f.header != nil {
		obj.Format = FormatSafetensors
		err = s.importSafetensors(sess, f, &obj, hasher, bufs, base, recipes, prog)
	} else {
		obj.Format = FormatBlob
		err = s.importBlob(sess, f, &obj, hasher, bufs, prog)
	}
	obj.SHA256, obj.GitSHA = hasher.finish()
	if err != nil {
		return ID{}, nil, err
	}
	id, err := sess.put(KindFile, &obj)
	if err != nil {
		return ID{}, nil, err
	}
	sess.noteFile(obj.SHA256, id)
	return id, &obj, nil
}

// tensorUnit is one chunk of a safetensors file: the header or a piece of a tensor.
type tensorUnit struct {
	off, len int64 // in the file
	tensor   int   // index into header.Tensors, -1 for the header
	hint     chunkcodec.Hint
	base     ID // the base model's chunk at the same place, if any
	// recipe marks a whole tensor that a recipe may reproduce.
	recipe bool
}

func (s *Store) importSafetensors(sess *session, f fileInput, obj *File, hasher *fileHasher, bufs [2][]byte, base *baseModel, recipes *recipeSet, prog *progress) error {
	h := f.header
	units := []tensorUnit{{off: 0, len: h.DataStart(), tensor: -1}}
	cs := int64(s.opts.ChunkSize)
	for ti, t := range h.Tensors {
		hint := chunkcodec.HintFor(string(t.DType))
		if recipes.candidate(t.Name) != nil && t.End > t.Begin {
			// Read whole, then stored as a recipe if the recipe reproduces it.
			units = append(units, tensorUnit{off: h.DataStart() + int64(t.Begin), len: int64(t.End - t.Begin), tensor: ti, hint: hint, recipe: true})
			continue
		}
		for k, off := 0, int64(t.Begin); off < int64(t.End); k, off = k+1, off+cs {
			n := min(cs, int64(t.End)-off)
			b := base.chunkFor(t.Name, string(t.DType), t.Shape, k, n)
			units = append(units, tensorUnit{off: h.DataStart() + off, len: n, tensor: ti, hint: hint, base: b})
		}
	}
	chunkIDs := make([]ID, len(units))
	// Tensors read whole for a recipe: their object (a recipe, or data when the
	// recipe did not reproduce them).
	whole := map[int]ID{}
	r := f.r
	batchCap := int64(len(bufs[0]))
	for start, turn := 0, 0; start < len(units); turn ^= 1 {
		if u := units[start]; u.recipe {
			buf := make([]byte, u.len)
			if _, err := io.ReadFull(r, buf); err != nil {
				return fmt.Errorf("%w: reading %s: %v (input shorter than %d bytes, or changed while read)", ErrInput, f.rel, err, f.size)
			}
			hasher.write(buf)
			t := h.Tensors[u.tensor]
			id, err := s.storeWholeTensor(sess, t, buf, recipes.candidate(t.Name), base, recipes)
			if err != nil {
				return fmt.Errorf("import %s: tensor %q: %w", f.rel, t.Name, err)
			}
			whole[u.tensor] = id
			prog.add(u.len)
			start++
			continue
		}
		end, n := start, int64(0)
		for end < len(units) && !units[end].recipe && (end == start || n+units[end].len <= batchCap) {
			n += units[end].len
			end++
		}
		buf := bufs[turn]
		if int64(len(buf)) < n { // a header larger than a batch
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("%w: reading %s: %v (input shorter than %d bytes, or changed while read)", ErrInput, f.rel, err, f.size)
		}
		hasher.write(buf)
		batch := make([]unit, 0, end-start)
		pos := int64(0)
		for _, u := range units[start:end] {
			batch = append(batch, unit{data: buf[pos : pos+u.len], hint: u.hint, base: u.base})
			pos += u.len
		}
		ids, err := sess.putChunks(batch)
		if err != nil {
			return fmt.Errorf("import %s: %w", f.rel, err)
		}
		copy(chunkIDs[start:end], ids)
		prog.add(n)
		start = end
	}
	// Build tensor objects from their chunks.
	obj.Header = &ChunkRef{ID: chunkIDs[0], Size: uint64(units[0].len)}
	tensors := make([]Tensor, len(h.Tensors))
	for ti, t := range h.Tensors {
		tensors[ti] = Tensor{DType: string(t.DType), Shape: append([]uint64{}, t.Shape...), Size: t.End - t.Begin, Chunks: []ChunkRef{}}
	}
	for i, u := range units[1:] {
		if u.recipe {
			continue
		}
		t := &tensors[u.tensor]
		t.Chunks = append(t.Chunks, ChunkRef{ID: chunkIDs[i+1], Size: uint64(u.len)})
	}
	for ti, t := range h.Tensors {
		tid, ok := whole[ti]
		if !ok {
			var err error
			if tid, err = sess.put(KindTensor, &tensors[ti]); err != nil {
				return err
			}
		}
		obj.Tensor = append(obj.Tensor, FileTensor{Name: t.Name, Tensor: tid, Size: t.End - t.Begin})
	}
	return nil
}

func (s *Store) importBlob(sess *session, f fileInput, obj *File, hasher *fileHasher, bufs [2][]byte, prog *progress) error {
	ck := chunker.New(io.LimitReader(f.r, f.size), chunker.DefaultParams())
	batchCap := len(bufs[0])
	var read int64
	for turn := 0; ; turn ^= 1 {
		buf := bufs[turn][:0]
		var batch []unit
		var lens []int
		eof := false
		for len(buf) < batchCap-chunker.DefaultParams().Max {
			c, err := ck.Next()
			if err == io.EOF {
				eof = true
				break
			}
			if err != nil {
				return fmt.Errorf("import %s: %w", f.rel, err)
			}
			buf = append(buf, c...)
			lens = append(lens, len(c))
		}
		pos := 0
		for _, n := range lens {
			batch = append(batch, unit{data: buf[pos : pos+n]})
			pos += n
		}
		if len(buf) > 0 {
			hasher.write(buf)
			ids, err := sess.putChunks(batch)
			if err != nil {
				return fmt.Errorf("import %s: %w", f.rel, err)
			}
			for i, id := range ids {
				obj.Chunks = append(obj.Chunks, ChunkRef{ID: id, Size: uint64(lens[i])})
			}
			read += int64(len(buf))
			prog.add(int64(len(buf)))
		}
		if eof {
			break
		}
	}
	if read != f.size {
		return fmt.Errorf("%w: %s: read %d of %d bytes (input ended early, or changed while read)", ErrInput, f.rel, read, f.size)
	}
	if obj.Chunks == nil {
		obj.Chunks = []ChunkRef{}
	}
	return nil
}
