package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"
)

// placedChunk is a piece of a file at its offset: a chunk, or a whole tensor stored
// as a recipe (then chunk.ID is the tensor's ID and recipe is the tensor).
type placedChunk struct {
	off    int64
	chunk  ChunkRef
	recipe *Tensor
}

// fileLayout places every chunk of a file at its offset. For a safetensors file the
// header chunk comes first, then each tensor's chunks in file order.
func (s *Store) fileLayout(f *File) ([]placedChunk, error) {
	var out []placedChunk
	var off int64
	place := func(c ChunkRef) {
		out = append(out, placedChunk{off: off, chunk: c})
		off += int64(c.Size)
	}
	switch f.Format {
	case FormatSafetensors:
		if f.Header == nil {
			return nil, fmt.Errorf("%w: safetensors file object without a header", ErrIntegrity)
		}
		place(*f.Header)
		for _, ft := range f.Tensor {
			t, err := s.LoadTensor(ft.Tensor)
			if err != nil {
				return nil, fmt.Errorf("tensor %q: %w", ft.Name, err)
			}
			if t.Recipe != nil {
				out = append(out, placedChunk{off: off, chunk: ChunkRef{ID: ft.Tensor, Size: t.Size}, recipe: t})
				off += int64(t.Size)
				continue
			}
			for _, c := range t.Chunks {
				place(c)
			}
		}
	case FormatBlob:
		for _, c := range f.Chunks {
			place(c)
		}
	default:
		return nil, fmt.Errorf("%w: unknown file format %q", ErrIntegrity, f.Format)
	}
	if off != int64(f.Size) {
		return nil, fmt.Errorf("%w: chunks add up to %d bytes, file object says %d", ErrIntegrity, off, f.Size)
	}
	return out, nil
}

// locateLayout looks up the index locations of a layout's chunks and checks that
// each is present with the size the file expects.
func (s *Store) locateLayout(layout []placedChunk) (map[ID]Location, error) {
	ids := make([]ID, 0, len(layout))
	for _, p := range layout {
		if p.recipe == nil {
			ids = append(ids, p.chunk.ID)
		}
	}
	locs, err := s.idx.lookup(ids)
	if err != nil {
		return nil, err
	}
	for _, p := range layout {
		if p.recipe != nil {
			continue
		}
		loc, ok := locs[p.chunk.ID]
		if !ok {
			return nil, &IntegrityError{ID: p.chunk.ID, Kind: KindChunk, Reason: "chunk is missing from the index"}
		}
		if loc.RawLen != p.chunk.Size {
			return nil, &IntegrityError{ID: p.chunk.ID, Kind: KindChunk, Reason: fmt.Sprintf("index says %d bytes, file expects %d", loc.RawLen, p.chunk.Size)}
		}
	}
	return locs, nil
}

// readPiece decodes one piece of a layout into dst[:0] (reusing its capacity):
// a chunk is read and verified, a recipe tensor is evaluated and verified.
func (s *Store) readPiece(p placedChunk, locs map[ID]Location, dst []byte) ([]byte, error) {
	if p.recipe != nil {
		return s.tensorBytes(p.chunk.ID, p.recipe, dst[:0])
	}
	return s.readLocated(p.chunk.ID, locs[p.chunk.ID], dst)
}

// ExportResult is what an export wrote.
type ExportResult struct {
	Commit ID
	Files  int
	Bytes  int64
}

// Export writes the model directory of ref into dest, which must not exist or be
// empty. Every file is byte-identical to the imported one: each chunk is verified
// against its hash as it is read, and placed at its offset by parallel workers.
func (s *Store) Export(ctx context.Context, ref, dest string, progressFn func(done, total int64)) (res *ExportResult, err error) {
	commitID, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	_, m, err := s.commitManifest(commitID)
	if err != nil {
		return nil, err
	}
	if err := prepareDest(dest); err != nil {
		return nil, err
	}
	var created []string
	defer func() {
		if err != nil {
			for i := len(created) - 1; i >= 0; i-- {
				_ = os.Remove(created[i])
			}
		}
	}()
	res = &ExportResult{Commit: commitID, Files: len(m.Files)}
	prog := &progress{fn: progressFn}
	type job struct {
		path string
		file *File
		out  *os.File
	}
	var jobs []job
	defer func() {
		for _, j := range jobs {
			_ = j.out.Close()
		}
	}()
	for _, e := range m.Files {
		if err := ValidatePath(e.Path); err != nil {
			return nil, fmt.Errorf("%w: manifest path: %v", ErrIntegrity, err)
		}
		path := filepath.Join(dest, filepath.FromSlash(e.Path))
		if dir := filepath.Dir(path); dir != dest {
			if err := mkdirAllTracked(dir, dest, &created); err != nil {
				return nil, err
			}
		}
		f, err := s.LoadFile(e.File)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path, err)
		}
		out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", e.Path, err)
		}
		created = append(created, path)
		jobs = append(jobs, job{e.Path, f, out})
		prog.total += int64(f.Size)
		res.Bytes += int64(f.Size)
	}
	// Files are written concurrently: writes into one file serialize on its inode
	// lock in the kernel, and copying into the page cache is the slowest step, so
	// several files in flight keep every core busy.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.opts.Workers)
	for _, j := range jobs {
		g.Go(func() error {
			if err := s.writeFile(gctx, j.file, j.out, prog); err != nil {
				return fmt.Errorf("export %s: %w", j.path, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var closeErr error
	for _, j := range jobs {
		if err := j.out.Close(); err != nil && closeErr == nil {
			closeErr = fmt.Errorf("export %s: %w", j.path, err)
		}
	}
	jobs = nil // closed: nothing left for the deferred cleanup
	if closeErr != nil {
		return nil, closeErr
	}
	return res, nil
}

func prepareDest(dest string) error {
	entries, err := os.ReadDir(dest)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return nil
	case err != nil:
		return inputErrorf("export destination %s: %v", dest, err)
	case len(entries) > 0:
		return inputErrorf("export destination %s is not empty", dest)
	}
	return nil
}

// mkdirAllTracked creates dir and its missing parents below root, recording them so
// a failed export can remove what it made.
func mkdirAllTracked(dir, root string, created *[]string) error {
	if dir == root {
		return nil
	}
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := mkdirAllTracked(filepath.Dir(dir), root, created); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("export: %w", err)
	}
	*created = append(*created, dir)
	return nil
}

// writeFile writes a file object's bytes to out, chunks decoded in parallel and
// written at their offsets.
func (s *Store) writeFile(ctx context.Context, f *File, out io.WriterAt, prog *progress) error {
	layout, err := s.fileLayout(f)
	if err != nil {
		return err
	}
	if t, ok := out.(interface{ Truncate(int64) error }); ok {
		if err := t.Truncate(int64(f.Size)); err != nil {
			return err
		}
	}
	locs, err := s.locateLayout(layout)
	if err != nil {
		return err
	}
	// Workers decode and verify chunks; one writer writes them in file order. Writes
	// into one file serialize in the kernel anyway, and a single sequential writer
	// keeps that bottleneck busy while the other cores decode, instead of parking
	// decoders on the inode lock. window bounds the decoded chunks in flight.
	type decoded struct {
		buf  *[]byte
		data []byte
	}
	// The window's buffers are allocated once per file and recycled: fresh multi-MiB
	// buffers per chunk cost more in page faults than decoding does.
	window := 2 * s.opts.Workers
	slots := make([]chan decoded, len(layout))
	for i := range slots {
		slots[i] = make(chan decoded, 1)
	}
	g, gctx := errgroup.WithContext(ctx)
	type job struct {
		i   int
		buf *[]byte
	}
	next := make(chan job)
	free := make(chan *[]byte, window)
	for range window {
		free <- new([]byte)
	}
	g.Go(func() error {
		defer close(next)
		for i := range layout {
			var buf *[]byte
			select {
			case buf = <-free:
			case <-gctx.Done():
				return gctx.Err()
			}
			select {
			case next <- job{i, buf}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range s.opts.Workers {
		g.Go(func() error {
			for j := range next {
				p := layout[j.i]
				data, err := s.readPiece(p, locs, (*j.buf)[:0])
				*j.buf = data[:0]
				if err != nil {
					return err
				}
				slots[j.i] <- decoded{j.buf, data}
			}
			return nil
		})
	}
	g.Go(func() error {
		for i, p := range layout {
			var d decoded
			select {
			case d = <-slots[i]:
			case <-gctx.Done():
				return gctx.Err()
			}
			_, err := out.WriteAt(d.data, p.off)
			free <- d.buf
			if err != nil {
				return err
			}
			prog.add(int64(len(d.data)))
		}
		return nil
	})
	return g.Wait()
}
