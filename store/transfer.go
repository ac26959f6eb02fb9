package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/store/internal/pack"
)

// Store-to-store transfer: the primitives the heft remote protocol (hub/remote) is
// built on. A transfer moves objects in their stored form (compressed, or delta-coded
// against a base chunk) so that nothing is decoded and re-encoded on the way, and
// moves only what the receiver lacks:
//
//   - the sender lists what a commit needs, level by level: History (the commit and
//     its ancestors, as git pushes a branch's whole history), TreeObjects (the
//     manifests, files and tensors under some commits) and ChunkLinks (the chunks
//     some files and tensors name, each with the base it is delta-coded against);
//   - the receiver answers Presence for each level, so the sender expands only what
//     is missing: a complete commit costs one lookup, not a walk of its chunks;
//   - the sender reads each missing object with ReadStored and the receiver writes
//     them with ReceiveObjects, which verifies every object (decode, BLAKE3 = ID,
//     kind, metadata parses) before it is written and makes each call's objects
//     durable and indexed before it returns;
//   - UpdateRefVerified moves the receiver's ref by compare-and-swap, under the
//     writer lock, only once everything the new commit reaches is present.
//
// Possession. An object counts as present for a push only when the caller's usable
// predicate accepts it (hub/remote accepts what the pusher could read anyway, and
// what was received for the target namespace, see RecordReceived). Knowing an ID is
// not proof of having the bytes; without the predicate anyone who learned a commit
// ID could point a ref of theirs at someone else's private model.

// ObjectRef names an object and the kind the caller expects it to have.
type ObjectRef struct {
	ID   ID
	Kind Kind
}

// ChunkLink is a chunk that a file or tensor names, with the chunk it is
// delta-coded against in this store (zero when it is stored on its own). A
// receiver that lacks the chunk and the base needs both: the base first.
type ChunkLink struct {
	ID   ID
	Base ID
}

// Presence is how much of an object, and of everything it reaches, a store has.
type Presence uint8

const (
	// Absent: the store does not have the object (or may not use it).
	Absent Presence = iota
	// Incomplete: the object is present, something it reaches is not.
	Incomplete
	// Complete: the object and everything it reaches are present: a commit's
	// manifest, files, tensors, recipe inputs, chunks, delta bases and ancestors.
	Complete
)

func (p Presence) String() string {
	switch p {
	case Absent:
		return "absent"
	case Incomplete:
		return "incomplete"
	case Complete:
		return "complete"
	}
	return fmt.Sprintf("presence(%d)", uint8(p))
}

// CodecDelta is the codec of delta-coded chunks in StoredObject.Codec (see
// delta.go for the stored form).
const CodecDelta = codecDelta

// ErrIncomplete is returned when an operation needs objects the store lacks: a
// ref update whose commit does not reach only present objects, a delta chunk whose
// base was not stored first. A transfer that gets it negotiates again. It wraps
// ErrNotFound.
var ErrIncomplete = fmt.Errorf("%w: objects missing", ErrNotFound)

// StoredObject is an object in its stored form, exactly as in a pack.
type StoredObject struct {
	ID     ID
	Kind   Kind
	Codec  uint8  // a chunkcodec.ID, or CodecDelta
	RawLen uint64 // decoded length
	// Base is the chunk a delta-coded chunk needs to decode (the ID inside its
	// stored bytes); zero for every other object.
	Base ID
	Data []byte // the stored bytes
}

// History returns tip and every ancestor, each once, tip first and breadth-first
// (parents before grandparents). It fails with ErrInput when there are more than
// limit commits (limit <= 0: no limit), and with an *IntegrityError when a commit
// is missing.
func (s *Store) History(tip ID, limit int) ([]ID, error) {
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	seen := map[ID]bool{tip: true}
	queue := []ID{tip}
	for i := 0; i < len(queue); i++ {
		c, err := s.LoadCommit(queue[i])
		if err != nil {
			return nil, fmt.Errorf("history of %s: commit %s: %w", tip.Short(), queue[i].Short(), err)
		}
		for _, p := range c.Parents {
			if !seen[p] {
				seen[p] = true
				queue = append(queue, p)
			}
		}
		if limit > 0 && len(queue) > limit {
			return nil, inputErrorf("history of %s has more than %d commits", tip.Short(), limit)
		}
	}
	return queue, nil
}

// TreeObjects returns the metadata objects under the given commits' manifests, each
// once: the manifests, their files, the files' tensors and, recursively, the input
// tensors of recipes. Commits themselves and their parents are not included (list
// ancestors with History). Children come before the objects that name them
// (tensors before their file, files before their manifest), the order in which a
// receiver should get them.
func (s *Store) TreeObjects(commits []ID) ([]ObjectRef, error) {
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	t := &treeLister{s: s, seen: map[ID]bool{}}
	for _, c := range commits {
		commit, err := s.LoadCommit(c)
		if err != nil {
			return nil, fmt.Errorf("tree of commit %s: %w", c.Short(), err)
		}
		if err := t.manifest(commit.Manifest); err != nil {
			return nil, fmt.Errorf("tree of commit %s: %w", c.Short(), err)
		}
	}
	return t.out, nil
}

type treeLister struct {
	s    *Store
	seen map[ID]bool
	out  []ObjectRef
}

func (t *treeLister) manifest(id ID) error {
	if t.seen[id] {
		return nil
	}
	t.seen[id] = true
	m, err := t.s.LoadManifest(id)
	if err != nil {
		return err
	}
	for _, e := range m.Files {
		if err := t.file(e.File); err != nil {
			return fmt.Errorf("%s: %w", e.Path, err)
		}
	}
	t.out = append(t.out, ObjectRef{ID: id, Kind: KindManifest})
	return nil
}

func (t *treeLister) file(id ID) error {
	if t.seen[id] {
		return nil
	}
	t.seen[id] = true
	f, err := t.s.LoadFile(id)
	if err != nil {
		return err
	}
	for _, ft := range f.Tensor {
		if err := t.tensor(ft.Tensor, 0); err != nil {
			return fmt.Errorf("tensor %q: %w", ft.Name, err)
		}
	}
	t.out = append(t.out, ObjectRef{ID: id, Kind: KindFile})
	return nil
}

// maxRecipeNesting bounds the recursion through recipe inputs. Content addressing
// makes cycles impossible; the bound keeps a hostile chain from costing much.
const maxRecipeNesting = 2 * MaxRecipeDepth

func (t *treeLister) tensor(id ID, depth int) error {
	if t.seen[id] {
		return nil
	}
	t.seen[id] = true
	tn, err := t.s.LoadTensor(id)
	if err != nil {
		return err
	}
	if tn.Recipe != nil {
		if depth >= maxRecipeNesting {
			return inputErrorf("tensor %s: recipe chain deeper than %d", id.Short(), maxRecipeNesting)
		}
		for _, in := range tn.Recipe.Inputs {
			if err := t.tensor(in, depth+1); err != nil {
				return fmt.Errorf("recipe input %s: %w", in.Short(), err)
			}
		}
	}
	t.out = append(t.out, ObjectRef{ID: id, Kind: KindTensor})
	return nil
}

// ChunkLinks returns the chunks that the given file and tensor objects name
// directly (a file's header and blob chunks, a tensor's data chunks), each once, with
// the base of each one stored as a delta. Objects of another kind fail with
// ErrInput; a chunk the index lacks with an *IntegrityError.
func (s *Store) ChunkLinks(objs []ID) ([]ChunkLink, error) {
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	seen := map[ID]bool{}
	var ids []ID
	add := func(c ChunkRef) {
		if !seen[c.ID] {
			seen[c.ID] = true
			ids = append(ids, c.ID)
		}
	}
	for _, id := range objs {
		loc, ok, err := s.locate(id)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, &IntegrityError{ID: id, Kind: KindTensor, Reason: "object is missing from the index"}
		}
		switch loc.Kind {
		case KindFile:
			f, err := s.LoadFile(id)
			if err != nil {
				return nil, err
			}
			if f.Header != nil {
				add(*f.Header)
			}
			for _, c := range f.Chunks {
				add(c)
			}
		case KindTensor:
			t, err := s.LoadTensor(id)
			if err != nil {
				return nil, err
			}
			for _, c := range t.Chunks {
				add(c)
			}
		default:
			return nil, inputErrorf("chunk links of %s: it is a %s, not a file or tensor", id.Short(), loc.Kind)
		}
	}
	locs, err := s.idx.lookup(ids)
	if err != nil {
		return nil, err
	}
	out := make([]ChunkLink, len(ids))
	for i, id := range ids {
		loc, ok := locs[id]
		if !ok {
			return nil, &IntegrityError{ID: id, Kind: KindChunk, Reason: "chunk is missing from the index"}
		}
		out[i].ID = id
		if loc.Codec == codecDelta {
			if out[i].Base, err = s.deltaBase(id, loc); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// Closure returns every object commit reaches, with its kind: the commit, its
// ancestors, their manifests, files, tensors, recipe inputs and chunks, and the base
// of every delta-coded chunk among them. It is what a reader of the commit may read.
func (s *Store) Closure(commit ID) (map[ID]Kind, error) {
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	w := newWalker(s)
	if err := w.commitChain(commit); err != nil {
		return nil, fmt.Errorf("closure of %s: %w", commit.Short(), err)
	}
	var chunks []ID
	for id, k := range w.seen {
		if k == KindChunk {
			chunks = append(chunks, id)
		}
	}
	locs, err := s.idx.lookup(chunks)
	if err != nil {
		return nil, err
	}
	for _, id := range chunks {
		loc, ok := locs[id]
		if !ok {
			return nil, &IntegrityError{ID: id, Kind: KindChunk, Reason: "chunk is missing from the index"}
		}
		if loc.Codec == codecDelta {
			base, err := s.deltaBase(id, loc)
			if err != nil {
				return nil, err
			}
			w.seen[base] = KindChunk
		}
	}
	return w.seen, nil
}

// Presence reports, for each object, whether the store has it and everything it
// reaches (see the constants). usable, when not nil, decides which stored objects
// count at all: one it rejects is Absent, as is one stored with another kind than
// the caller expects. Structurally impossible metadata (a chunk of another size than
// its tensor says, a bad path) fails with ErrInput; a damaged stored object with an
// *IntegrityError.
func (s *Store) Presence(objs []ObjectRef, usable func(ID) (bool, error)) ([]Presence, error) {
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	p := &presenceCheck{s: s, usable: usable, memo: map[ObjectRef]Presence{}, sizes: map[ID]uint64{}}
	out := make([]Presence, len(objs))
	for i, o := range objs {
		if out[i], err = p.object(o.ID, o.Kind, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// presenceCheck walks down from objects, memoizing each object's presence. sizes
// records the decoded length of every present chunk and the size of every present
// tensor and file, for the structural checks.
type presenceCheck struct {
	s      *Store
	usable func(ID) (bool, error)
	memo   map[ObjectRef]Presence
	sizes  map[ID]uint64
}

func (p *presenceCheck) object(id ID, kind Kind, depth int) (Presence, error) {
	key := ObjectRef{ID: id, Kind: kind}
	if pr, ok := p.memo[key]; ok {
		return pr, nil
	}
	loc, ok, err := p.s.locate(id)
	if err != nil {
		return Absent, err
	}
	if ok && p.usable != nil {
		if ok, err = p.usable(id); err != nil {
			return Absent, err
		}
	}
	if !ok || loc.Kind != kind {
		p.memo[key] = Absent
		return Absent, nil
	}
	// Marked before descending, so a (hash-impossible) cycle ends here.
	p.memo[key] = Incomplete
	var pr Presence
	switch kind {
	case KindChunk:
		p.sizes[id] = loc.RawLen
		pr, err = p.chunk(id, loc)
	case KindTensor:
		pr, err = p.tensor(id, depth)
	case KindFile:
		pr, err = p.file(id)
	case KindManifest:
		pr, err = p.manifest(id)
	case KindCommit:
		pr, err = p.commit(id)
	default:
		return Absent, inputErrorf("object %s: unknown kind %d", id.Short(), kind)
	}
	if err != nil {
		return Absent, err
	}
	p.memo[key] = pr
	return pr, nil
}

// worst returns the lesser presence of what an object reaches: Complete only if
// all are.
func worst(a, b Presence) Presence {
	if a == Complete && b == Complete {
		return Complete
	}
	return Incomplete
}

func (p *presenceCheck) chunk(id ID, loc Location) (Presence, error) {
	if loc.Codec != codecDelta {
		return Complete, nil
	}
	base, err := p.s.deltaBase(id, loc)
	if err != nil {
		return Absent, err
	}
	pr, err := p.object(base, KindChunk, 0)
	return worst(pr, Complete), err
}

// chunkRef checks a chunk named with a size.
func (p *presenceCheck) chunkRef(owner ID, c ChunkRef) (Presence, error) {
	pr, err := p.object(c.ID, KindChunk, 0)
	if err != nil || pr == Absent {
		return pr, err
	}
	if got := p.sizes[c.ID]; got != c.Size {
		return Absent, inputErrorf("object %s names chunk %s of %d bytes, but it has %d", owner.Short(), c.ID.Short(), c.Size, got)
	}
	return pr, nil
}

func (p *presenceCheck) tensor(id ID, depth int) (Presence, error) {
	t, err := p.s.LoadTensor(id)
	if err != nil {
		return Absent, err
	}
	p.sizes[id] = t.Size
	pr := Complete
	if t.Recipe != nil {
		if len(t.Chunks) > 0 || len(t.Recipe.Inputs) == 0 {
			return Absent, inputErrorf("tensor %s: a recipe tensor has inputs and no chunks", id.Short())
		}
		if depth >= maxRecipeNesting {
			return Absent, inputErrorf("tensor %s: recipe chain deeper than %d", id.Short(), maxRecipeNesting)
		}
		for _, in := range t.Recipe.Inputs {
			ipr, err := p.object(in, KindTensor, depth+1)
			if err != nil {
				return Absent, err
			}
			pr = worst(pr, ipr)
		}
		return pr, nil
	}
	var total uint64
	for _, c := range t.Chunks {
		cpr, err := p.chunkRef(id, c)
		if err != nil {
			return Absent, err
		}
		pr = worst(pr, cpr)
		total += c.Size
	}
	if total != t.Size {
		return Absent, inputErrorf("tensor %s: chunks add up to %d bytes, it says %d", id.Short(), total, t.Size)
	}
	return pr, nil
}

func (p *presenceCheck) file(id ID) (Presence, error) {
	f, err := p.s.LoadFile(id)
	if err != nil {
		return Absent, err
	}
	p.sizes[id] = f.Size
	pr := Complete
	var total uint64
	check := func(c ChunkRef) error {
		cpr, err := p.chunkRef(id, c)
		pr = worst(pr, cpr)
		total += c.Size
		return err
	}
	switch f.Format {
	case FormatSafetensors:
		if f.Header == nil || len(f.Chunks) > 0 {
			return Absent, inputErrorf("file %s: a safetensors file has a header and no blob chunks", id.Short())
		}
		if err := check(*f.Header); err != nil {
			return Absent, err
		}
		for _, ft := range f.Tensor {
			tpr, err := p.object(ft.Tensor, KindTensor, 0)
			if err != nil {
				return Absent, err
			}
			pr = worst(pr, tpr)
			if tpr != Absent && p.sizes[ft.Tensor] != ft.Size {
				return Absent, inputErrorf("file %s: tensor %q has %d bytes, the file says %d", id.Short(), ft.Name, p.sizes[ft.Tensor], ft.Size)
			}
			total += ft.Size
		}
	case FormatBlob:
		if f.Header != nil || len(f.Tensor) > 0 {
			return Absent, inputErrorf("file %s: a blob has chunks only", id.Short())
		}
		for _, c := range f.Chunks {
			if err := check(c); err != nil {
				return Absent, err
			}
		}
	default:
		return Absent, inputErrorf("file %s: unknown format %q", id.Short(), f.Format)
	}
	if total != f.Size {
		return Absent, inputErrorf("file %s: parts add up to %d bytes, it says %d", id.Short(), total, f.Size)
	}
	return pr, nil
}

func (p *presenceCheck) manifest(id ID) (Presence, error) {
	m, err := p.s.LoadManifest(id)
	if err != nil {
		return Absent, err
	}
	pr := Complete
	for i, e := range m.Files {
		if err := ValidatePath(e.Path); err != nil {
			return Absent, fmt.Errorf("manifest %s: %w", id.Short(), err)
		}
		if i > 0 && m.Files[i-1].Path >= e.Path {
			return Absent, inputErrorf("manifest %s: paths are not sorted and unique at %q", id.Short(), e.Path)
		}
		fpr, err := p.object(e.File, KindFile, 0)
		if err != nil {
			return Absent, err
		}
		pr = worst(pr, fpr)
		if fpr != Absent && p.sizes[e.File] != e.Size {
			return Absent, inputErrorf("manifest %s: %s has %d bytes, the manifest says %d", id.Short(), e.Path, p.sizes[e.File], e.Size)
		}
	}
	return pr, checkNoFileDirClash(m.Files)
}

func (p *presenceCheck) commit(id ID) (Presence, error) {
	c, err := p.s.LoadCommit(id)
	if err != nil {
		return Absent, err
	}
	pr, err := p.object(c.Manifest, KindManifest, 0)
	if err != nil {
		return Absent, err
	}
	pr = worst(pr, Complete)
	for _, parent := range c.Parents {
		ppr, err := p.object(parent, KindCommit, 0)
		if err != nil {
			return Absent, err
		}
		pr = worst(pr, ppr)
	}
	return pr, nil
}

// ReadStored returns an object's stored form, read from its pack (checked against
// the pack entry's CRC, not decoded). The stored bytes are appended to buf[:0].
// A missing object is an *IntegrityError.
func (s *Store) ReadStored(id ID, buf []byte) (StoredObject, error) {
	loc, ok, err := s.locate(id)
	if err != nil {
		return StoredObject{}, err
	}
	if !ok {
		return StoredObject{}, &IntegrityError{ID: id, Kind: KindChunk, Reason: "object is missing from the index"}
	}
	data, where, err := s.readStoredAt(id, loc, buf)
	if err != nil && errors.Is(err, ErrIntegrity) {
		// gc in another process (or node) may have moved the object to a
		// rewritten pack since loc was looked up: follow the index once (as
		// readLocated does).
		if s.remote != nil {
			_ = s.refreshIndex(context.Background(), true)
		}
		if now, ok, lerr := s.locate(id); lerr == nil && ok && now.Pack != loc.Pack {
			loc = now
			data, where, err = s.readStoredAt(id, loc, buf)
		}
	}
	if err != nil {
		var ie *IntegrityError
		if errors.As(err, &ie) {
			ie.ID, ie.Kind = id, loc.Kind
		}
		return StoredObject{}, err
	}
	o := StoredObject{ID: id, Kind: loc.Kind, Codec: loc.Codec, RawLen: loc.RawLen, Data: data}
	if loc.Codec == codecDelta {
		base, _, err := parseDeltaHeader(data)
		if err != nil {
			return StoredObject{}, &IntegrityError{ID: id, Kind: loc.Kind, Pack: where, Err: err}
		}
		o.Base = base
	}
	return o, nil
}

// readStoredAt reads an object's stored bytes (CRC-checked, not decoded) from
// this node's copy of its pack, or from the backend with one ranged read.
func (s *Store) readStoredAt(id ID, loc Location, buf []byte) ([]byte, string, error) {
	if s.remote != nil && !s.packCached(loc.Pack) {
		return s.readRemoteStored(id, loc)
	}
	f, err := s.packFile(loc.Pack)
	if err != nil {
		return nil, s.packPath(loc.Pack), err
	}
	e := loc.entry(id)
	data, err := pack.ReadStoredAt(f, s.packPath(loc.Pack), e, buf)
	if err != nil {
		return nil, s.packPath(loc.Pack), &IntegrityError{ID: id, Kind: loc.Kind, Pack: s.packPath(loc.Pack), Err: err}
	}
	return data, s.packPath(loc.Pack), nil
}

// ReceiveOptions tune ReceiveObjects.
type ReceiveOptions struct {
	// Namespace, when set, records every verified object as received for it
	// (RecordReceived), so that a later push into the namespace may use it.
	Namespace string
	// Usable, when set, decides which stored chunks a received delta may name
	// as its base (see Presence); a base it rejects counts as missing, so a
	// sender can neither use nor probe objects outside its scope.
	Usable func(ID) (bool, error)
}

// ReceiveStats counts what ReceiveObjects took in.
type ReceiveStats struct {
	Objects     int   // objects received and verified
	New         int   // of them, objects the store did not have
	StoredBytes int64 // stored bytes received
	NewBytes    int64 // stored bytes written for the new ones
}

// ReceiveObjects stores objects that arrive in stored form from another store. next
// returns them one at a time and io.EOF after the last; the receiver may keep no
// reference to an object's Data after handling it. Every object is verified before
// it is written: its kind is known, it decodes with its codec to RawLen bytes whose
// BLAKE3 is its ID, and a metadata object parses as its kind. A delta chunk's base
// must be present already (in the store, not earlier in the same call); a delta
// whose base is itself delta-coded here is re-coded against that base's own base,
// so chains stay one level deep. Objects the store has are not written again.
//
// The writer lock is held throughout, and the objects are durable and indexed when
// it returns. If next fails (the connection dropped) or ctx ends, the objects
// verified so far are still made durable, so that a retry need not send them again,
// and the error is returned with the stats. If an object fails verification the call
// fails with an *IntegrityError (or ErrIncomplete for a missing base) and the pack
// in progress is discarded.
func (s *Store) ReceiveObjects(ctx context.Context, opts ReceiveOptions, next func() (StoredObject, error)) (ReceiveStats, error) {
	var stats ReceiveStats
	gcLock, err := s.writerLock()
	if err != nil {
		return stats, err
	}
	defer gcLock.Unlock()
	// The index is not held open across the call (it may last as long as a slow
	// network transfer, and an open index locks other processes out of it).
	// The session outlives ctx: what was verified before a cancellation is
	// finished, not thrown away.
	sess := s.beginSession(context.WithoutCancel(ctx))
	var (
		srcErr   error
		received []ID
		mu       sync.Mutex // guards stats and received
	)
	objs := make(chan StoredObject, s.opts.Workers)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(objs)
		for {
			o, err := next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				srcErr = err
				return nil
			}
			select {
			case objs <- o:
			case <-gctx.Done():
				if srcErr = ctx.Err(); srcErr == nil {
					srcErr = context.Cause(gctx)
				}
				return nil
			}
		}
	})
	for range s.opts.Workers {
		g.Go(func() error {
			var buf []byte
			for o := range objs {
				data, plan, err := s.verifyStored(o, buf, opts.Usable)
				if err != nil {
					return err
				}
				buf = data[:0]
				isNew, written, err := sess.putStored(o, data, plan)
				if err != nil {
					return err
				}
				mu.Lock()
				stats.Objects++
				stats.StoredBytes += int64(len(o.Data))
				if isNew {
					stats.New++
					stats.NewBytes += written
				}
				received = append(received, o.ID)
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		_, _ = sess.abort()
		return stats, err
	}
	if _, err := sess.finish(); err != nil {
		return stats, fmt.Errorf("receive: %w", err)
	}
	if opts.Namespace != "" {
		if err := s.RecordReceived(opts.Namespace, received); err != nil {
			return stats, err
		}
	}
	if srcErr != nil {
		return stats, fmt.Errorf("receive: %w", srcErr)
	}
	return stats, nil
}

// storePlan says how a verified object is written.
type storePlan struct {
	// recode, when set, re-codes a delta chunk against this plain base (its own
	// base was a delta here).
	recode *deltaBaseChunk
	plain  bool // store data plainly coded (the base has no usable root)
}

// verifyStored decodes a received object and checks it is what it says, returning
// its decoded bytes (appended to dst[:0]).
func (s *Store) verifyStored(o StoredObject, dst []byte, usable func(ID) (bool, error)) ([]byte, storePlan, error) {
	var plan storePlan
	bad := func(reason string, err error) ([]byte, storePlan, error) {
		return dst, plan, &IntegrityError{ID: o.ID, Kind: o.Kind, Reason: "received object " + reason, Err: err}
	}
	if o.Kind < KindChunk || o.Kind > KindCommit {
		return bad(fmt.Sprintf("has unknown kind %d", o.Kind), nil)
	}
	if o.RawLen > chunkcodec.MaxRawLen || len(o.Data) > pack.MaxStoredLen {
		return bad(fmt.Sprintf("is too large (%d bytes, %d stored)", o.RawLen, len(o.Data)), nil)
	}
	var data []byte
	if o.Codec == codecDelta {
		if o.Kind != KindChunk {
			return bad("is a delta-coded "+o.Kind.String(), nil)
		}
		base, inner, err := parseDeltaHeader(o.Data)
		if err != nil {
			return bad("has a malformed delta", err)
		}
		if !o.Base.IsZero() && o.Base != base {
			return bad(fmt.Sprintf("names base %s but is coded against %s", o.Base.Short(), base.Short()), nil)
		}
		baseLoc, ok, err := s.locate(base)
		if err != nil {
			return dst, plan, err
		}
		if ok && usable != nil {
			if ok, err = usable(base); err != nil {
				return dst, plan, err
			}
		}
		if !ok {
			return dst, plan, fmt.Errorf("%w: delta chunk %s needs base %s, which must be stored first", ErrIncomplete, o.ID.Short(), base.Short())
		}
		if baseLoc.Kind != KindChunk || baseLoc.RawLen != o.RawLen {
			return bad(fmt.Sprintf("is coded against %s, which is not a chunk of %d bytes", base.Short(), o.RawLen), nil)
		}
		baseData, err := s.readLocated(base, baseLoc, nil)
		if err != nil {
			return dst, plan, fmt.Errorf("delta base of received chunk %s: %w", o.ID.Short(), err)
		}
		if data, err = chunkcodec.Decode(inner, dst, o.Data[deltaPayloadStart:], int(o.RawLen)); err != nil {
			return bad("does not decode", err)
		}
		xorInto(data, data, baseData)
		if baseLoc.Codec == codecDelta {
			plan.plain = true
			if root, err := s.deltaBase(base, baseLoc); err == nil {
				if rootLoc, ok, err := s.locate(root); err == nil && ok && rootLoc.Codec != codecDelta && rootLoc.RawLen == o.RawLen {
					plan = storePlan{recode: &deltaBaseChunk{id: root, loc: rootLoc}}
				}
			}
		}
	} else {
		var err error
		if data, err = chunkcodec.Decode(chunkcodec.ID(o.Codec), dst, o.Data, int(o.RawLen)); err != nil {
			return bad("does not decode", err)
		}
	}
	if Sum(data) != o.ID {
		return bad("does not match its id", nil)
	}
	var err error
	switch o.Kind {
	case KindTensor:
		err = decodeObject(o.Kind, data, new(Tensor))
	case KindFile:
		err = decodeObject(o.Kind, data, new(File))
	case KindManifest:
		err = decodeObject(o.Kind, data, new(Manifest))
	case KindCommit:
		err = decodeObject(o.Kind, data, new(Commit))
	}
	if err != nil {
		return bad("does not parse", err)
	}
	return data, plan, nil
}

// putStored queues a verified object for the packer unless the store (or this
// session) has it. It returns whether it was new and the stored bytes written.
func (sess *session) putStored(o StoredObject, data []byte, plan storePlan) (bool, int64, error) {
	missing, err := sess.claim([]ID{o.ID})
	if err != nil || len(missing) == 0 {
		return false, 0, err
	}
	var req writeReq
	switch {
	case plan.recode != nil:
		req, err = sess.encodeDelta(o.ID, data, chunkcodec.Hint{}, *plan.recode)
	case plan.plain:
		req, err = sess.encode(o.ID, o.Kind, data, chunkcodec.Hint{})
	default:
		buf := storedPool.Get().(*[]byte)
		*buf = append((*buf)[:0], o.Data...)
		req = writeReq{id: o.ID, kind: o.Kind, codec: o.Codec, rawLen: o.RawLen, stored: buf}
	}
	if err != nil {
		return false, 0, err
	}
	n := int64(len(*req.stored))
	return true, n, sess.enqueue(sess.account(req))
}

// ReceivedGrace is how long a received-object record lets pushes into its namespace
// use the object without sending it again, and keeps it from gc.
const ReceivedGrace = 24 * time.Hour

// bucketReceived records objects received for a namespace: namespace \x00 object ID
// → unix seconds (u64) and a CRC-32C of both. Like the rest of the index it is a
// cache of sorts: losing it (repair index) costs a pusher a re-send, nothing else.
var bucketReceived = []byte("received")

func receivedKey(ns string, id ID) []byte {
	return append(append([]byte(ns), 0), id[:]...)
}

func encodeReceived(at time.Time) []byte {
	b := make([]byte, 12)
	binary.LittleEndian.PutUint64(b, uint64(at.Unix()))
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	return b
}

func decodeReceived(b []byte) (time.Time, error) {
	if len(b) != 12 || crc32.Checksum(b[:8], castagnoli) != binary.LittleEndian.Uint32(b[8:]) {
		return time.Time{}, fmt.Errorf("%w: a received-object record fails its checksum", ErrIndexCorrupt)
	}
	return time.Unix(int64(binary.LittleEndian.Uint64(b)), 0), nil
}

// RecordReceived notes that ns received the objects now (the sender proved it has
// them by sending them), and drops the namespace's records older than
// ReceivedGrace. gc keeps objects received within ReceivedGrace, as it keeps
// uploads: a push that takes longer than gc's grace (a large model over a slow
// link) must not lose what it sent before the ref moves.
func (s *Store) RecordReceived(ns string, ids []ID) error {
	if ns == "" || len(ids) == 0 {
		return nil
	}
	now := s.now()
	return s.idx.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketReceived)
		if err != nil {
			return err
		}
		prefix := append([]byte(ns), 0)
		var expired [][]byte
		c := b.Cursor()
		for k, v := c.Seek(prefix); k != nil && len(k) == len(prefix)+32 && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			if at, err := decodeReceived(v); err != nil || now.Sub(at) > ReceivedGrace {
				expired = append(expired, append([]byte{}, k...))
			}
		}
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		v := encodeReceived(now)
		for _, id := range ids {
			if err := b.Put(receivedKey(ns, id), v); err != nil {
				return fmt.Errorf("record received %s: %w", id.Short(), err)
			}
		}
		return nil
	})
}

// receivedRoots returns the objects received within ReceivedGrace, in any
// namespace (gc keeps them); records are expired by RecordReceived.
func (s *Store) receivedRoots() ([]ID, error) {
	seen := map[ID]bool{}
	var roots []ID
	now := s.now()
	err := s.idx.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReceived)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) < 33 {
				return fmt.Errorf("%w: a received-object record has a short key", ErrIndexCorrupt)
			}
			at, err := decodeReceived(v)
			if err != nil {
				return err
			}
			id := ID(k[len(k)-32:])
			if now.Sub(at) <= ReceivedGrace && !seen[id] {
				seen[id] = true
				roots = append(roots, id)
			}
			return nil
		})
	})
	return roots, err
}

// Received reports whether ns received the object within ReceivedGrace.
func (s *Store) Received(ns string, id ID) (bool, error) {
	var ok bool
	err := s.idx.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReceived)
		if b == nil {
			return nil
		}
		v := b.Get(receivedKey(ns, id))
		if v == nil {
			return nil
		}
		at, err := decodeReceived(v)
		if err != nil {
			return err
		}
		ok = s.now().Sub(at) <= ReceivedGrace
		return nil
	})
	return ok, err
}

// RefChange is a checked ref update (see UpdateRefVerified).
type RefChange struct {
	Ref RefName
	// Old is the value the ref must have (zero: it must not exist).
	Old ID
	New ID
	// Force allows a change that is not a fast-forward (Old not an ancestor of
	// New).
	Force   bool
	Message string
	// Usable decides which objects count (see Presence); nil: all.
	Usable func(ID) (bool, error)
}

// UpdateRefVerified moves a ref to a commit received from elsewhere. Under the
// writer lock, so that gc cannot remove anything between the check and the move,
// it checks that New reaches only present, usable, well-formed objects (else
// ErrIncomplete, or ErrInput for malformed ones), that Old is an ancestor of New
// unless Force (else ErrConflict), and then compare-and-swaps the ref from Old to
// New (ErrConflict if it moved meanwhile). A ref already at New with Old == New is
// left alone.
func (s *Store) UpdateRefVerified(ch RefChange) error {
	if err := ch.Ref.Validate(); err != nil {
		return err
	}
	if ch.New.IsZero() {
		return inputErrorf("update %s: no commit given", ch.Ref)
	}
	gcLock, err := s.writerLock()
	if err != nil {
		return err
	}
	defer gcLock.Unlock()
	pr, err := s.Presence([]ObjectRef{{ID: ch.New, Kind: KindCommit}}, ch.Usable)
	if err != nil {
		return fmt.Errorf("update %s: %w", ch.Ref, err)
	}
	if pr[0] != Complete {
		return fmt.Errorf("%w: update %s: commit %s is %s here", ErrIncomplete, ch.Ref, ch.New.Short(), pr[0])
	}
	if ch.Old == ch.New {
		cur, err := s.Ref(ch.Ref)
		if err == nil && cur == ch.New {
			return nil
		}
	}
	if !ch.Force && !ch.Old.IsZero() && ch.Old != ch.New {
		hist, err := s.History(ch.New, 0)
		if err != nil {
			return err
		}
		found := false
		for _, c := range hist {
			if c == ch.Old {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%w: update %s: %s is not an ancestor of %s (not a fast-forward)", ErrConflict, ch.Ref, ch.Old.Short(), ch.New.Short())
		}
	}
	return s.UpdateRef(ch.Ref, ch.Old, ch.New, ch.Message)
}
