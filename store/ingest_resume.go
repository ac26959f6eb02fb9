package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/vfs"
	"github.com/heft-dev/heft/store/internal/chunker"
)

// Resumable ingestion stores a file that arrives over an unreliable link (a pull
// from a Hub) so that an interruption costs at most the last few tens of MiB.
//
// A file is stored as it would be by IngestFile, but the write session is finished
// (its packs published, fsynced and indexed) every CheckpointBytes of new data, and
// after each such checkpoint a journal records which prefix of the file is now
// stored as which chunks:
//
//	ingest/<sha256>.json   {"version":1,"sha256":…,"size":…,"format":…,"chunk_size":…,
//	                        "done":N,"chunks":[{"id":…,"size":…},…]}
//
// meaning bytes [0, done) of the file with that content hash are the concatenation
// of those chunks. The journal is replaced atomically (temp file, fsync, rename,
// directory fsync) and only ever names chunks that are durable and indexed, so a
// crash at any point leaves either the previous journal or the new one, both true.
//
// A later call for the same SHA-256 reads the journal, keeps the longest prefix
// whose chunks are all still indexed (gc removes unreferenced chunks after its grace
// period, DefaultGrace), reads those chunks back from the store (each verified
// against its BLAKE3 ID) to feed the file's SHA-256, and asks Fetch only for the
// bytes after the prefix. Chunk boundaries are the same as in one uninterrupted run
// (tensor chunks are aligned to each tensor's start; content-defined chunks of other
// files depend only on the bytes since the previous boundary), so the resulting file
// object is identical. The journal is removed when the file is stored, and when the
// content turns out not to have the expected SHA-256 (so that a corrupt prefix is
// not reused).

// DefaultCheckpointBytes is how much new data a resumable ingest stores between two
// journal checkpoints: the most an interruption can make a restart fetch again
// (plus what was in flight). Each checkpoint publishes a pack, so smaller values
// mean more, smaller packs.
const DefaultCheckpointBytes = 64 << 20

// journalVersion is the format of ingest journals.
const journalVersion = 1

// ResumableOptions tune IngestResumable.
type ResumableOptions struct {
	// SHA256 is the content hash of the file (a Git LFS oid, 64 lowercase hex
	// digits). It is required: it names the journal, and the content must match it.
	SHA256 string
	// Fetch returns a reader of the n bytes of the file that start at offset off.
	// IngestResumable calls it at most once, for the bytes no earlier call stored,
	// and closes the reader before it returns. It is not called when nothing is
	// missing.
	Fetch func(ctx context.Context, off, n int64) (io.ReadCloser, error)
	// CheckpointBytes is the new data stored between journal checkpoints. Zero
	// means DefaultCheckpointBytes.
	CheckpointBytes int64
	// Base names a model (REF) to delta-code new tensor chunks against, as in
	// IngestOptions.
	Base string
	// Progress, when set, is called with the bytes handled so far (read back or
	// fetched) and the file size.
	Progress func(done, total int64)
}

// ResumableResult is what IngestResumable stored and how.
type ResumableResult struct {
	StoredFile
	// Found: a file with this content was stored already; nothing was read.
	Found bool
	// Resumed is the prefix an interrupted earlier call had stored; those bytes
	// were read back from the store rather than fetched.
	Resumed int64
	// Fetched is how many bytes were read from Fetch's reader.
	Fetched int64
}

// ingestJournal is the durable state of one interrupted ingest; see the comment at
// the top of this file.
type ingestJournal struct {
	Version   int        `json:"version"`
	SHA256    string     `json:"sha256"`
	Size      int64      `json:"size"`
	Format    string     `json:"format"`
	ChunkSize int        `json:"chunk_size"`
	Done      int64      `json:"done"`
	Chunks    []ChunkRef `json:"chunks"`
}

func (s *Store) journalDir() string { return filepath.Join(s.dir, "ingest") }

func (s *Store) journalPath(sha256 string) string {
	return filepath.Join(s.journalDir(), sha256+".json")
}

// readJournal returns the journal for sha256 with its prefix cut to the chunks that
// are still indexed, or nil when there is none (or it is unreadable, which is
// treated the same way: the file is fetched whole).
func (s *Store) readJournal(sha256 string) (*ingestJournal, error) {
	data, err := vfs.ReadFile(s.fs, s.journalPath(sha256))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ingest journal: %w", err)
	}
	var j ingestJournal
	if err := json.Unmarshal(data, &j); err != nil || j.Version != journalVersion || j.SHA256 != sha256 || j.Done < 0 || j.Done > j.Size {
		return nil, nil
	}
	var sum int64
	ids := make([]ID, len(j.Chunks))
	for i, c := range j.Chunks {
		sum += int64(c.Size)
		ids[i] = c.ID
	}
	if sum != j.Done {
		return nil, nil
	}
	found, err := s.idx.lookup(ids)
	if err != nil {
		return nil, err
	}
	for i, c := range j.Chunks {
		if loc, ok := found[c.ID]; !ok || loc.Kind != KindChunk {
			// gc took it (the pull was abandoned longer than the grace period):
			// keep what comes before.
			j.Chunks = j.Chunks[:i]
			break
		}
	}
	j.Done = 0
	for _, c := range j.Chunks {
		j.Done += int64(c.Size)
	}
	return &j, nil
}

// writeJournal publishes j atomically.
func (s *Store) writeJournal(j *ingestJournal) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode ingest journal: %w", err)
	}
	if err := s.fs.MkdirAll(s.journalDir(), 0o755); err != nil {
		return fmt.Errorf("write ingest journal: %w", err)
	}
	if !s.journalDirDurable.Load() {
		// ingest/ may have just been created (here or by a process that crashed
		// before this step): without this the journal's own directory fsync below
		// does not keep it across a crash.
		if err := s.fs.SyncDir(s.dir); err != nil {
			return fmt.Errorf("write ingest journal: %w", err)
		}
		s.journalDirDurable.Store(true)
	}
	if err := vfs.WriteFileAtomic(s.fs, s.journalPath(j.SHA256), data, 0o600); err != nil {
		return fmt.Errorf("write ingest journal: %w", err)
	}
	return nil
}

// removeJournal deletes the journal of sha256, if any.
func (s *Store) removeJournal(sha256 string) error {
	err := s.fs.Remove(s.journalPath(sha256))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove ingest journal: %w", err)
	}
	return nil
}

// sweepJournalTemps removes temp files a crash left in the journal directory once
// they are older than the grace period.
func (s *Store) sweepJournalTemps() {
	entries, err := s.fs.ReadDir(s.journalDir())
	if err != nil {
		return
	}
	cutoff := s.now().Add(-DefaultGrace)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(cutoff) {
			_ = s.fs.Remove(filepath.Join(s.journalDir(), e.Name()))
		}
	}
}

// ResumePoint returns how many leading bytes of the file with content sha256 an
// interrupted IngestResumable has stored durably (0 when none): a restarted ingest
// fetches only the rest.
func (s *Store) ResumePoint(sha256 string) (int64, error) {
	if !isLowerHex(sha256, 64) {
		return 0, inputErrorf("%q is not a hex SHA-256", sha256)
	}
	j, err := s.readJournal(sha256)
	if err != nil || j == nil {
		return 0, err
	}
	return j.Done, nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// IngestResumable stores one file of a model directory of size bytes whose content
// has SHA-256 opts.SHA256, as IngestFile would, fetching its bytes through
// opts.Fetch and checkpointing progress so that a later call for the same content
// after an interruption fetches only what is not stored yet (see the comment at the
// top of this file). If a file with that content is stored already, it returns it
// with Found set and fetches nothing.
//
// The content is checked against opts.SHA256 (and its length against size); on a
// mismatch the call fails with ErrInput, nothing refers to what was written, and
// the journal is removed so that a retry starts afresh. Like IngestFile, the stored
// file is durable but unreferenced until a commit names it. Two calls for the same
// content may run at once (each journal written is true); they then fetch twice.
func (s *Store) IngestResumable(ctx context.Context, path string, size int64, opts ResumableOptions) (*ResumableResult, error) {
	if err := ValidatePath(path); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, inputErrorf("%s: negative size", path)
	}
	if !isLowerHex(opts.SHA256, 64) {
		return nil, inputErrorf("%s: sha256 %q is not 64 lowercase hex digits", path, opts.SHA256)
	}
	if opts.Fetch == nil {
		return nil, inputErrorf("%s: IngestResumable needs a Fetch function", path)
	}
	if opts.CheckpointBytes <= 0 {
		opts.CheckpointBytes = DefaultCheckpointBytes
	}
	if id, f, err := s.FileBySHA256(opts.SHA256); err == nil && int64(f.Size) == size {
		_ = s.removeJournal(opts.SHA256)
		return &ResumableResult{Found: true, StoredFile: StoredFile{ID: id, Size: size, SHA256: f.SHA256, GitSHA: f.GitSHA, Tensors: len(f.Tensor)}}, nil
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
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
	s.sweepJournalTemps()

	format := FormatBlob
	if strings.HasSuffix(path, ".safetensors") {
		format = FormatSafetensors
	}
	j, err := s.readJournal(opts.SHA256)
	if err != nil {
		return nil, err
	}
	if j == nil || j.Size != size || j.Format != format || j.ChunkSize != s.opts.ChunkSize {
		j = &ingestJournal{Version: journalVersion, SHA256: opts.SHA256, Size: size, Format: format, ChunkSize: s.opts.ChunkSize}
	}
	run := &resumeRun{
		s: s, ctx: ctx, sessCtx: context.WithoutCancel(ctx), path: path, size: size, opts: opts, j: j, base: base,
		prog: &progress{fn: opts.Progress, total: size},
	}
	return run.run()
}

// resumeRun is one IngestResumable call.
type resumeRun struct {
	s   *Store
	ctx context.Context // the caller's: Fetch gets it
	// sessCtx is ctx without its cancellation: a cancelled call still
	// checkpoints what it stored (failAfterCheckpoint).
	sessCtx context.Context
	path    string
	size    int64
	opts    ResumableOptions
	base    *baseModel
	prog    *progress

	// j is the durable state: bytes [0, j.Done) are stored as j.Chunks. It grows at
	// each checkpoint.
	j *ingestJournal
	// pending are chunks stored by the current session, not yet in the journal.
	pending      []ChunkRef
	pendingBytes int64

	sess   *session
	stats  IngestStats
	hasher *fileHasher

	src     io.ReadCloser
	counter *countingReader
}

// resumeUnit is one chunk of a safetensors file: the header or a piece of a tensor,
// cut exactly as importSafetensors cuts it.
type resumeUnit struct {
	len    int64
	tensor int // index into the header's tensors, -1 for the header
	hint   chunkcodec.Hint
	base   ID
}

func (r *resumeRun) run() (res *ResumableResult, err error) {
	r.hasher = newFileHasher(r.size)
	hashed := false
	defer func() {
		if !hashed {
			r.hasher.finish()
		}
		if r.sess != nil {
			_, _ = r.sess.abort()
		}
		if r.src != nil {
			if cerr := r.src.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("%s: closing the download: %w", r.path, cerr)
			}
		}
	}()

	// The stored prefix: check it still fits this file, then read it back.
	var header *safetensors.Header
	if r.j.Format == FormatSafetensors && len(r.j.Chunks) > 0 {
		raw, err := r.s.ReadChunk(r.j.Chunks[0].ID)
		if err != nil && !errors.Is(err, ErrIntegrity) {
			return nil, fmt.Errorf("%s: reading the stored header back: %w", r.path, err)
		}
		if h, perr := safetensors.ParseHeader(raw, r.size, r.path); err == nil && perr == nil && h.DataStart() == int64(len(raw)) {
			header = h
		}
		if header == nil || !r.prefixFits(planUnits(header, r.s.opts.ChunkSize, r.base)) {
			r.restart()
			header = nil
		}
	}
	var readBack int64
	for _, c := range r.j.Chunks {
		data, err := r.s.ReadChunk(c.ID)
		if err == nil && int64(len(data)) != int64(c.Size) {
			err = &IntegrityError{ID: c.ID, Kind: KindChunk, Reason: fmt.Sprintf("has %d bytes, the ingest journal says %d", len(data), c.Size)}
		}
		if errors.Is(err, ErrIntegrity) {
			// A damaged stored chunk: fetch the whole file instead.
			r.hasher.finish()
			r.hasher = newFileHasher(r.size)
			r.prog.add(-readBack)
			r.restart()
			header, readBack = nil, 0
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: reading stored chunk %s back: %w", r.path, c.ID.Short(), err)
		}
		r.hasher.write(data)
		r.prog.add(int64(len(data)))
		readBack += int64(len(data))
	}
	resumed := r.j.Done

	r.sess = r.s.beginSession(r.sessCtx)
	obj := File{Size: uint64(r.size), Format: r.j.Format}
	if r.j.Format == FormatSafetensors {
		err = r.safetensors(header, &obj)
	} else {
		err = r.blob(&obj)
	}
	if err != nil {
		return nil, err
	}
	obj.SHA256, obj.GitSHA = r.hasher.finish()
	hashed = true
	if obj.SHA256 != r.opts.SHA256 {
		// The prefix may be what is wrong: never resume from it.
		_ = r.s.removeJournal(r.opts.SHA256)
		return nil, inputErrorf("%s: content has sha256 %s, expected %s", r.path, obj.SHA256, r.opts.SHA256)
	}
	id, err := r.sess.put(KindFile, &obj)
	if err != nil {
		return nil, err
	}
	r.sess.noteFile(obj.SHA256, id)
	sess := r.sess
	r.sess = nil
	st, err := sess.finish()
	r.addStats(st)
	if err != nil {
		return nil, err
	}
	if err := r.s.removeJournal(r.opts.SHA256); err != nil {
		return nil, err
	}
	res = &ResumableResult{
		StoredFile: StoredFile{ID: id, Size: r.size, SHA256: obj.SHA256, GitSHA: obj.GitSHA, Tensors: len(obj.Tensor), Stats: r.stats},
		Resumed:    resumed,
	}
	if r.counter != nil {
		res.Fetched = r.counter.n
	}
	return res, nil
}

// restart forgets the journal's prefix (it does not fit the file).
func (r *resumeRun) restart() {
	r.j.Chunks, r.j.Done = nil, 0
}

// prefixFits reports whether the journal's chunks are the first units of the plan.
func (r *resumeRun) prefixFits(units []resumeUnit) bool {
	if len(r.j.Chunks) > len(units) {
		return false
	}
	for i, c := range r.j.Chunks {
		if int64(c.Size) != units[i].len {
			return false
		}
	}
	return true
}

// planUnits cuts a safetensors file into the header and tensor chunks of chunkSize
// aligned to each tensor's start, in file order, as importSafetensors does.
func planUnits(h *safetensors.Header, chunkSize int, base *baseModel) []resumeUnit {
	units := []resumeUnit{{len: h.DataStart(), tensor: -1}}
	cs := int64(chunkSize)
	for ti, t := range h.Tensors {
		hint := chunkcodec.HintFor(string(t.DType))
		for k, off := 0, int64(t.Begin); off < int64(t.End); k, off = k+1, off+cs {
			n := min(cs, int64(t.End)-off)
			b := base.chunkFor(t.Name, string(t.DType), t.Shape, k, n)
			units = append(units, resumeUnit{len: n, tensor: ti, hint: hint, base: b})
		}
	}
	return units
}

// fetch opens the download of everything after the stored prefix.
func (r *resumeRun) fetch() (io.Reader, error) {
	if r.src != nil {
		return r.counter, nil
	}
	rest := r.size - r.j.Done
	if rest == 0 {
		r.counter = &countingReader{r: bytes.NewReader(nil)}
		return r.counter, nil
	}
	src, err := r.opts.Fetch(r.ctx, r.j.Done, rest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.path, err)
	}
	r.src = src
	r.counter = &countingReader{r: src}
	return r.counter, nil
}

// batchCap is how much of the download one pipeline step holds: the store's batch
// size, but no more than a checkpoint, so that small checkpoints (tests, slow links)
// are honoured.
func (r *resumeRun) batchCap() int {
	return int(min(int64(r.s.batchBytes()), r.opts.CheckpointBytes))
}

// readErr describes a failure to read the download.
func (r *resumeRun) readErr(err error) error {
	// io.ReadFull and the chunker report a stream that ended early this way,
	// unwrapped; a failing download returns its own errors.
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return inputErrorf("%s: the download ended before byte %d of %d", r.path, r.j.Done+r.pendingBytes, r.size)
	}
	return fmt.Errorf("%s: reading the download at byte %d: %w", r.path, r.j.Done+r.pendingBytes, err)
}

// expectEnd fails unless the download has nothing after the file's last byte.
func (r *resumeRun) expectEnd(src io.Reader) error {
	var extra [1]byte
	if n, _ := io.ReadFull(src, extra[:]); n > 0 {
		return inputErrorf("%s: the download has more than the declared %d bytes", r.path, r.size)
	}
	return nil
}

// stored records chunks the current session stored and checkpoints when enough new
// data has accumulated.
func (r *resumeRun) stored(ids []ID, lens []int64) error {
	for i, id := range ids {
		r.pending = append(r.pending, ChunkRef{ID: id, Size: uint64(lens[i])})
		r.pendingBytes += lens[i]
	}
	if r.pendingBytes < r.opts.CheckpointBytes {
		return nil
	}
	return r.checkpoint()
}

// checkpoint makes the current session's chunks durable and indexed, records them
// in the journal, and starts a new session.
func (r *resumeRun) checkpoint() error {
	sess := r.sess
	r.sess = nil
	st, err := sess.finish()
	r.addStats(st)
	if err != nil {
		return err
	}
	r.j.Chunks = append(r.j.Chunks, r.pending...)
	r.j.Done += r.pendingBytes
	r.pending, r.pendingBytes = nil, 0
	if err := r.s.writeJournal(r.j); err != nil {
		return err
	}
	r.sess = r.s.beginSession(r.sessCtx)
	return nil
}

func (r *resumeRun) addStats(st IngestStats) {
	r.stats.Chunks += st.Chunks
	r.stats.NewChunks += st.NewChunks
	r.stats.NewRawBytes += st.NewRawBytes
	r.stats.StoredBytes += st.StoredBytes
	r.stats.PackBytes += st.PackBytes
	r.stats.DeltaChunks += st.DeltaChunks
	r.stats.Packs += st.Packs
}

// storeUnits stores the units laid out one after another in buf (each an exact
// tensor chunk or the header).
func (r *resumeRun) storeUnits(buf []byte, units []resumeUnit) error {
	var n int64
	for _, u := range units {
		n += u.len
	}
	buf = buf[:n]
	r.hasher.write(buf)
	batch := make([]unit, 0, len(units))
	lens := make([]int64, 0, len(units))
	pos := int64(0)
	for _, u := range units {
		batch = append(batch, unit{data: buf[pos : pos+u.len], hint: u.hint, base: u.base})
		lens = append(lens, u.len)
		pos += u.len
	}
	ids, err := r.sess.putChunks(batch)
	if err != nil {
		return fmt.Errorf("ingest %s: %w", r.path, err)
	}
	r.prog.add(n)
	return r.stored(ids, lens)
}

// safetensors stores the rest of a safetensors file and fills in obj's header and
// tensors. header is the parsed header when the prefix holds it, else nil.
func (r *resumeRun) safetensors(header *safetensors.Header, obj *File) error {
	src, err := r.fetch()
	if err != nil {
		return err
	}
	in := src
	if header == nil {
		// Nothing stored yet: read the length prefix and the header from the
		// download, then hand both back in front of the rest.
		var prefix [8]byte
		if _, err := io.ReadFull(src, prefix[:]); err != nil {
			return r.readErr(err)
		}
		n := binary.LittleEndian.Uint64(prefix[:])
		if n > safetensors.MaxHeaderSize || int64(n) > r.size-8 {
			_, err := safetensors.ParseHeader(prefix[:], r.size, r.path)
			if err == nil {
				err = fmt.Errorf("header length %d exceeds the file", n)
			}
			return fmt.Errorf("%w: %w", ErrInput, err)
		}
		raw := make([]byte, 8+n)
		copy(raw, prefix[:])
		if _, err := io.ReadFull(src, raw[8:]); err != nil {
			return r.readErr(err)
		}
		if header, err = safetensors.ParseHeader(raw, r.size, r.path); err != nil {
			return fmt.Errorf("%w: %w", ErrInput, err)
		}
		in = io.MultiReader(bytes.NewReader(raw), src)
	}
	units := planUnits(header, r.s.opts.ChunkSize, r.base)
	bufs := [2][]byte{make([]byte, r.batchCap()), make([]byte, r.batchCap())}
	batchCap := int64(len(bufs[0]))
	for start, turn := len(r.j.Chunks), 0; start < len(units); turn ^= 1 {
		end, n := start, int64(0)
		for end < len(units) && (end == start || n+units[end].len <= batchCap) {
			n += units[end].len
			end++
		}
		buf := bufs[turn]
		if int64(len(buf)) < n { // a header larger than a batch
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if got, err := io.ReadFull(in, buf); err != nil {
			// Store the units that arrived whole, so that a restart resumes
			// after them.
			k := start
			for have := int64(0); k < end && have+units[k].len <= int64(got); k++ {
				have += units[k].len
			}
			if k > start {
				if serr := r.storeUnits(buf, units[start:k]); serr != nil {
					return serr
				}
			}
			return r.failAfterCheckpoint(r.readErr(err))
		}
		if err := r.storeUnits(buf, units[start:end]); err != nil {
			return err
		}
		start = end
	}
	if err := r.expectEnd(src); err != nil {
		return err
	}
	chunks := append(append([]ChunkRef{}, r.j.Chunks...), r.pending...)
	if len(chunks) != len(units) {
		return fmt.Errorf("ingest %s: %d chunks for %d units", r.path, len(chunks), len(units))
	}
	obj.Header = &ChunkRef{ID: chunks[0].ID, Size: chunks[0].Size}
	tensors := make([]Tensor, len(header.Tensors))
	for ti, t := range header.Tensors {
		tensors[ti] = Tensor{DType: string(t.DType), Shape: append([]uint64{}, t.Shape...), Size: t.End - t.Begin, Chunks: []ChunkRef{}}
	}
	for i, u := range units[1:] {
		t := &tensors[u.tensor]
		t.Chunks = append(t.Chunks, chunks[i+1])
	}
	for ti, t := range header.Tensors {
		tid, err := r.sess.put(KindTensor, &tensors[ti])
		if err != nil {
			return err
		}
		obj.Tensor = append(obj.Tensor, FileTensor{Name: t.Name, Tensor: tid, Size: t.End - t.Begin})
	}
	return nil
}

// blob stores the rest of any other file as content-defined chunks. The stored
// prefix ends at a chunk boundary, where a chunker started afresh cuts exactly as
// one that ran from the file's start.
func (r *resumeRun) blob(obj *File) error {
	src, err := r.fetch()
	if err != nil {
		return err
	}
	rest := r.size - r.j.Done
	params := chunker.DefaultParams()
	// The chunker reads up to 2*Max bytes ahead and stops at the first read
	// error; the stash lets it cut what it can before the failure point, so
	// that those chunks are stored and checkpointed.
	stash := &stashReader{r: io.LimitReader(src, rest)}
	ck := chunker.New(stash, params)
	batchCap := r.batchCap()
	bufs := [2][]byte{make([]byte, 0, batchCap+params.Max), make([]byte, 0, batchCap+params.Max)}
	var read int64
	failed := false
	for turn, eof := 0, false; !eof; turn ^= 1 {
		buf := bufs[turn][:0]
		var lens []int64
		// At least one chunk per batch; a batch never outgrows its buffer.
		for len(lens) == 0 || len(buf)+params.Max <= batchCap {
			c, err := ck.Next()
			if err == io.EOF {
				eof = true
				break
			}
			if err != nil {
				return r.readErr(err)
			}
			// After a failure the chunker sees a false end: a chunk is what an
			// uninterrupted run would cut only if its boundary came before
			// that end or was forced by Max.
			if stash.err != nil && ck.Offset() >= stash.pos && len(c) < params.Max {
				failed, eof = true, true
				break
			}
			buf = append(buf, c...)
			lens = append(lens, int64(len(c)))
		}
		if len(buf) == 0 {
			continue
		}
		r.hasher.write(buf)
		batch := make([]unit, len(lens))
		pos := int64(0)
		for i, n := range lens {
			batch[i] = unit{data: buf[pos : pos+n]}
			pos += n
		}
		ids, err := r.sess.putChunks(batch)
		if err != nil {
			return fmt.Errorf("ingest %s: %w", r.path, err)
		}
		read += int64(len(buf))
		r.prog.add(int64(len(buf)))
		if err := r.stored(ids, lens); err != nil {
			return err
		}
	}
	if failed || stash.err != nil {
		return r.failAfterCheckpoint(r.readErr(stash.err))
	}
	if read != rest {
		return inputErrorf("%s: the download ended at byte %d of %d", r.path, r.j.Done+r.pendingBytes, r.size)
	}
	if err := r.expectEnd(src); err != nil {
		return err
	}
	obj.Chunks = append(append([]ChunkRef{}, r.j.Chunks...), r.pending...)
	return nil
}

// failAfterCheckpoint makes what the current session stored durable and journaled
// before failing with err (a failed or cancelled download), so that a restart
// need not fetch it again. Sessions run on a context the caller cannot cancel for
// this reason: a Ctrl-C keeps everything that arrived.
func (r *resumeRun) failAfterCheckpoint(err error) error {
	if r.pendingBytes > 0 {
		if cerr := r.checkpoint(); cerr != nil {
			return errors.Join(err, cerr)
		}
	}
	return err
}

// stashReader passes reads through until the first error other than io.EOF,
// which it keeps (with the offset where it happened) and reports as io.EOF.
type stashReader struct {
	r   io.Reader
	pos int64
	err error
}

func (s *stashReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, io.EOF
	}
	n, err := s.r.Read(p)
	s.pos += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
		return n, io.EOF
	}
	return n, err
}

// countingReader counts the bytes read through it. It is used by one goroutine.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// journalRoots returns the chunks named by ingest journals written within
// UploadGrace (gc keeps them, so a pull interrupted for less than a day resumes
// without fetching them again) and, unless dryRun, deletes older journals.
func (s *Store) journalRoots(dryRun bool) ([]ChunkRef, error) {
	entries, err := s.fs.ReadDir(s.journalDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list ingest journals: %w", err)
	}
	var roots []ChunkRef
	now := s.now()
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".json" {
			continue
		}
		path := filepath.Join(s.journalDir(), e.Name())
		info, err := e.Info()
		if err != nil {
			continue
		}
		if now.Sub(info.ModTime()) > UploadGrace {
			if !dryRun {
				_ = s.fs.Remove(path)
			}
			continue
		}
		data, err := vfs.ReadFile(s.fs, path)
		if err != nil {
			continue
		}
		var j ingestJournal
		if json.Unmarshal(data, &j) == nil && j.Version == journalVersion {
			roots = append(roots, j.Chunks...)
		}
	}
	return roots, nil
}
