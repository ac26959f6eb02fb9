package store

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/store/internal/pack"
)

// IngestStats counts what one write session added to the store.
type IngestStats struct {
	Chunks      int   // chunks offered
	NewChunks   int   // chunks the store did not have
	NewRawBytes int64 // decoded bytes of newly stored objects
	StoredBytes int64 // their bytes after compression
	PackBytes   int64 // bytes of pack files published (framing included)
	DeltaChunks int   // new chunks stored as deltas against a base
	Packs       int
}

// session is one write session: it dedups objects against the index and the objects
// it already wrote, compresses new ones on the caller's goroutines, and hands them to
// a single packer goroutine that appends them to packs, publishes full packs and
// indexes them. Everything it wrote is durable and indexed when withSession returns
// without error; on error, published packs stay (unreferenced, for gc) and the pack in
// progress is removed.
type session struct {
	s      *Store
	ctx    context.Context
	cancel context.CancelFunc
	g      *errgroup.Group
	writes chan writeReq

	mu      sync.Mutex
	known   map[ID]bool   // +checklocks:mu: present in the index or claimed by this session
	files   map[string]ID // +checklocks:mu: sha256 → file object, for the index once durable
	stats   IngestStats   // +checklocks:mu
	packErr error         // +checklocks:mu
}

type writeReq struct {
	id     ID
	kind   Kind
	codec  uint8 // a chunkcodec.ID or codecDelta
	rawLen uint64
	stored *[]byte // returned to storedPool after the write
}

var storedPool = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

// withSession runs fn with a write session and then makes everything durable.
func (s *Store) withSession(ctx context.Context, fn func(*session) error) (IngestStats, error) {
	sess := s.beginSession(ctx)
	if err := fn(sess); err != nil {
		_, _ = sess.abort()
		return sess.statsNow(), err
	}
	return sess.finish()
}

// beginSession starts a write session whose packer runs until finish or abort. The
// caller must call exactly one of them.
func (s *Store) beginSession(ctx context.Context) *session {
	g, gctx := errgroup.WithContext(ctx)
	cctx, cancel := context.WithCancel(gctx)
	sess := &session{s: s, ctx: cctx, cancel: cancel, g: g, writes: make(chan writeReq, 2*s.opts.Workers), known: map[ID]bool{}}
	pk := &packer{s: s, sess: sess, entries: map[ID]Location{}}
	g.Go(func() error {
		err := pk.run(cctx, sess.writes)
		if err != nil {
			sess.mu.Lock()
			sess.packErr = err
			sess.mu.Unlock()
		}
		return err
	})
	return sess
}

// finish makes everything the session wrote durable and indexed.
func (sess *session) finish() (IngestStats, error) {
	close(sess.writes)
	err := sess.g.Wait()
	sess.cancel()
	if err == nil {
		sess.mu.Lock()
		files := sess.files
		sess.mu.Unlock()
		// The objects are indexed; now they may be found by content hash.
		err = sess.s.idx.addFileSHAs(files)
	}
	return sess.statsNow(), err
}

// noteFile records that the file object id has content sha256.
func (sess *session) noteFile(sha256 string, id ID) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.files == nil {
		sess.files = map[string]ID{}
	}
	sess.files[sha256] = id
}

// abort stops the session: the pack in progress is removed; packs already
// published stay, unreferenced, for gc.
func (sess *session) abort() (IngestStats, error) {
	sess.cancel()
	close(sess.writes)
	err := sess.g.Wait()
	return sess.statsNow(), err
}

func (sess *session) statsNow() IngestStats {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.stats
}

// unit is one piece of data offered to a session with the hint its codec needs and,
// optionally, the chunk at the same place in a base model to delta-code against.
type unit struct {
	data []byte
	hint chunkcodec.Hint
	base ID
}

// putChunks stores the units as chunks and returns their IDs in order. Hashing,
// dedup lookups and compression run on up to Workers goroutines; the writes are
// queued to the packer. The units' data may be reused as soon as it returns.
func (sess *session) putChunks(units []unit) ([]ID, error) {
	ids := make([]ID, len(units))
	workers := sess.s.opts.Workers
	g, gctx := errgroup.WithContext(sess.ctx)
	g.SetLimit(workers)
	for i := range units {
		g.Go(func() error {
			ids[i] = Sum(units[i].data)
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, sess.wrapErr(err)
	}
	missing, err := sess.claim(ids)
	if err != nil {
		return nil, err
	}
	bases, err := sess.deltaBases(units, missing)
	if err != nil {
		return nil, err
	}
	g, gctx = errgroup.WithContext(sess.ctx)
	g.SetLimit(workers)
	results := make([]writeReq, len(units))
	for _, i := range missing {
		g.Go(func() error {
			var req writeReq
			var err error
			if b, ok := bases[units[i].base]; ok && !sess.s.opts.NoCompress {
				req, err = sess.encodeDelta(ids[i], units[i].data, units[i].hint, b)
			} else {
				req, err = sess.encode(ids[i], KindChunk, units[i].data, units[i].hint)
			}
			if err != nil {
				return err
			}
			results[i] = sess.account(req)
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return nil, sess.wrapErr(err)
	}
	for _, i := range missing {
		if err := sess.enqueue(results[i]); err != nil {
			return nil, err
		}
	}
	sess.mu.Lock()
	sess.stats.Chunks += len(units)
	sess.mu.Unlock()
	return ids, nil
}

// putObject stores one metadata object (already encoded) and returns its ID.
func (sess *session) putObject(kind Kind, data []byte) (ID, error) {
	id := Sum(data)
	missing, err := sess.claim([]ID{id})
	if err != nil || len(missing) == 0 {
		return id, err
	}
	req, err := sess.encode(id, kind, data, chunkcodec.Hint{})
	if err != nil {
		return id, err
	}
	return id, sess.enqueue(sess.account(req))
}

// put encodes v as a metadata object of kind and stores it.
func (sess *session) put(kind Kind, v any) (ID, error) {
	data, _, err := encodeObject(kind, v)
	if err != nil {
		return ID{}, err
	}
	return sess.putObject(kind, data)
}

// claim returns the indexes of ids that neither the index nor this session has, and
// marks them as claimed, so an ID offered twice is written once.
func (sess *session) claim(ids []ID) ([]int, error) {
	var unknown []ID
	sess.mu.Lock()
	for _, id := range ids {
		if !sess.known[id] {
			unknown = append(unknown, id)
		}
	}
	sess.mu.Unlock()
	var found map[ID]Location
	if len(unknown) > 0 {
		var err error
		if found, err = sess.s.idx.lookup(unknown); err != nil {
			return nil, err
		}
	}
	var missing []int
	sess.mu.Lock()
	defer sess.mu.Unlock()
	for i, id := range ids {
		if sess.known[id] {
			continue
		}
		sess.known[id] = true
		if _, ok := found[id]; !ok {
			missing = append(missing, i)
		}
	}
	return missing, nil
}

// encode codes one object without a base. The caller accounts for it.
func (sess *session) encode(id ID, kind Kind, data []byte, hint chunkcodec.Hint) (writeReq, error) {
	buf := storedPool.Get().(*[]byte)
	var (
		codec  chunkcodec.ID
		stored []byte
		err    error
	)
	if sess.s.opts.NoCompress {
		codec, stored = chunkcodec.Raw, append((*buf)[:0], data...)
	} else {
		codec, stored, err = chunkcodec.Encode(*buf, data, hint)
		if err != nil {
			storedPool.Put(buf)
			return writeReq{}, fmt.Errorf("compress %s %s: %w", kind, id.Short(), err)
		}
	}
	*buf = stored
	return writeReq{id: id, kind: kind, codec: uint8(codec), rawLen: uint64(len(data)), stored: buf}, nil
}

// account counts a new object in the session's stats.
func (sess *session) account(req writeReq) writeReq {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.stats.NewChunks++
	sess.stats.NewRawBytes += int64(req.rawLen)
	sess.stats.StoredBytes += int64(len(*req.stored))
	if req.codec == codecDelta {
		sess.stats.DeltaChunks++
	}
	return req
}
func (sess *session) enqueue(req writeReq) error {
	select {
	case sess.writes <- req:
		return nil
	case <-sess.ctx.Done():
		storedPool.Put(req.stored)
		return sess.wrapErr(sess.ctx.Err())
	}
}

// wrapErr prefers the packer's error to the cancellation it caused.
func (sess *session) wrapErr(err error) error {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.packErr != nil {
		return sess.packErr
	}
	return err
}

// packer owns the pack being written. It runs on one goroutine.
type packer struct {
	s       *Store
	sess    *session
	w       *pack.Writer
	entries map[ID]Location // entries of the pack in progress
	// uploads (shared stores) puts finished packs into the backend and then
	// indexes them, while the packer writes the next pack.
	uploads *errgroup.Group
	// uploadsFailed is done once an upload failed: the packer stops early.
	uploadsFailed context.Context
}

// uploadsInFlight bounds the packs a shared store's import uploads at once
// (each is a finished 256 MiB file on disk, not memory).
const uploadsInFlight = 2

func (p *packer) run(ctx context.Context, reqs <-chan writeReq) (err error) {
	if p.s.remote != nil {
		p.uploads, p.uploadsFailed = errgroup.WithContext(context.Background())
		p.uploads.SetLimit(uploadsInFlight)
	}
	defer func() {
		if err != nil && p.w != nil {
			_ = p.w.Abort()
		}
		if p.uploads != nil {
			// Every pack this import published is in the backend and indexed
			// (or the import fails) before the session can move a ref.
			if uerr := p.uploads.Wait(); err == nil {
				err = uerr
			}
		}
		// Drain so producers blocked on the channel see the cancellation.
		for req := range reqs {
			storedPool.Put(req.stored)
		}
	}()
	for req := range reqs {
		err := p.add(req)
		storedPool.Put(req.stored)
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return p.flush()
}

// entryOverhead bounds a pack entry's framing (entry header plus trailer record).
const entryOverhead = 256

func (p *packer) add(req writeReq) error {
	stored := *req.stored
	if p.w != nil && p.w.Len() > 0 && p.w.Size()+int64(len(stored))+entryOverhead > p.s.opts.PackSize {
		if err := p.flush(); err != nil {
			return err
		}
	}
	if p.w == nil {
		w, err := pack.NewWriterFS(p.s.fs, p.s.packsDir())
		if err != nil {
			return fmt.Errorf("start pack: %w", err)
		}
		p.w = w
	}
	e, err := p.w.Add(pack.ID(req.id), uint8(req.kind), req.codec, req.rawLen, stored)
	if err != nil {
		return fmt.Errorf("write %s %s: %w", req.kind, req.id.Short(), err)
	}
	p.entries[req.id] = Location{Offset: e.Offset, StoredLen: e.StoredLen, RawLen: e.RawLen, Kind: req.kind, Codec: req.codec, CRC: e.CRC}
	return nil
}

// flush publishes the pack in progress (fsync, rename, directory fsync inside
// Finish) and only then indexes its entries: data before metadata.
func (p *packer) flush() error {
	if p.w == nil {
		return nil
	}
	w := p.w
	p.w = nil
	if w.Len() == 0 {
		return w.Abort()
	}
	info, err := w.Finish()
	if err != nil {
		return fmt.Errorf("publish pack: %w", err)
	}
	packID := ID(info.ID)
	entries := p.entries
	p.entries = map[ID]Location{}
	for id, loc := range entries {
		loc.Pack = packID
		entries[id] = loc
	}
	publish := func() error {
		if p.s.remote != nil {
			if err := p.s.uploadPack(info); err != nil {
				return err
			}
		}
		if err := p.s.idx.addPack(packID, packRecord{Size: uint64(info.Size), Entries: uint64(len(info.Entries))}, entries); err != nil {
			return fmt.Errorf("index pack %s: %w", packID.Short(), err)
		}
		p.sess.mu.Lock()
		p.sess.stats.PackBytes += info.Size
		p.sess.stats.Packs++
		p.sess.mu.Unlock()
		p.s.trimPackCache()
		return nil
	}
	if p.uploads == nil {
		return publish()
	}
	if p.uploadsFailed.Err() != nil {
		return p.uploads.Wait() // an earlier pack's upload failed: stop now
	}
	p.uploads.Go(publish)
	return nil
}
