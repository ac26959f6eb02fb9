package store

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
)

// FileReader reads one stored file at any offset without staging it: a read maps to
// the chunks it touches, each decoded and verified as it is read. The last decoded
// chunk is kept, so sequential reads in pieces smaller than a chunk decode each
// chunk once; and once reads go forward chunk after chunk, the next few chunks are
// decoded ahead on other goroutines, so one sequential reader (one HTTP download)
// uses several cores. Safe for concurrent use.
type FileReader struct {
	s      *Store
	size   int64
	layout []placedChunk
	locs   map[ID]Location

	mu      sync.Mutex
	cacheAt int    // +checklocks:mu: index in layout of the cached chunk, -1 for none
	cache   []byte // +checklocks:mu
	// ahead holds chunks being decoded or decoded ahead of a sequential reader.
	ahead map[int]*decoding // +checklocks:mu
	last  int               // +checklocks:mu: the chunk read last, -1 for none
}

// decoding is one chunk decoded in the background; done is closed when data or
// err is set.
type decoding struct {
	done chan struct{}
	data []byte
	err  error
}

// readAhead is how many chunks a sequential reader has decoded ahead of it.
func (r *FileReader) readAhead() int { return min(4, r.s.opts.Workers) }

// OpenFile opens a file object for reading.
func (s *Store) OpenFile(id ID) (*FileReader, error) {
	if l, ok := s.layouts.get(id); ok {
		return &FileReader{s: s, size: l.size, layout: l.layout, locs: l.locs, cacheAt: -1, last: -1, ahead: map[int]*decoding{}}, nil
	}
	f, err := s.LoadFile(id)
	if err != nil {
		return nil, err
	}
	layout, err := s.fileLayout(f)
	if err != nil {
		return nil, err
	}
	locs, err := s.locateLayout(layout)
	if err != nil {
		return nil, err
	}
	s.layouts.put(id, &fileLayoutEntry{size: int64(f.Size), layout: layout, locs: locs})
	return &FileReader{s: s, size: int64(f.Size), layout: layout, locs: locs, cacheAt: -1, last: -1, ahead: map[int]*decoding{}}, nil
}

// Size is the file's length in bytes.
func (r *FileReader) Size() int64 { return r.size }

// Close releases the cached and read-ahead chunks (decodes in flight finish on
// their own and are dropped).
func (r *FileReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cache, r.cacheAt = nil, -1
	r.ahead = map[int]*decoding{}
	return nil
}

// ReadAt implements io.ReaderAt.
func (r *FileReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	// The first chunk that ends after off.
	i := sort.Search(len(r.layout), func(i int) bool {
		return r.layout[i].off+int64(r.layout[i].chunk.Size) > off
	})
	n := 0
	for n < len(p) && i < len(r.layout) && off < r.size {
		pc := r.layout[i]
		data, err := r.chunk(i)
		if err != nil {
			return n, fmt.Errorf("read at %d: %w", off, err)
		}
		c := copy(p[n:], data[off-pc.off:])
		n += c
		off += int64(c)
		i++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteRangeTo writes the n bytes at off to w straight from the decoded pieces
// (verified, as ReadAt's), without copying them into a caller's buffer first.
func (r *FileReader) WriteRangeTo(w io.Writer, off, n int64) (int64, error) {
	if off < 0 || n < 0 || off+n > r.size {
		return 0, fmt.Errorf("write range [%d, %d) of a %d-byte file", off, off+n, r.size)
	}
	i := sort.Search(len(r.layout), func(i int) bool {
		return r.layout[i].off+int64(r.layout[i].chunk.Size) > off
	})
	var written int64
	for written < n && i < len(r.layout) {
		pc := r.layout[i]
		data, err := r.chunk(i)
		if err != nil {
			return written, fmt.Errorf("read at %d: %w", off, err)
		}
		part := data[off-pc.off:]
		if rest := n - written; int64(len(part)) > rest {
			part = part[:rest]
		}
		m, err := w.Write(part)
		written += int64(m)
		off += int64(m)
		if err != nil {
			return written, err
		}
		i++
	}
	if written < n {
		return written, io.ErrUnexpectedEOF
	}
	return written, nil
}

// chunk returns the decoded bytes of layout[i], from the cache or the read-ahead
// when they hold it. The returned slice must not be modified; it stays valid
// because a replaced buffer is never reused.
func (r *FileReader) chunk(i int) ([]byte, error) {
	r.mu.Lock()
	if r.cacheAt == i {
		data := r.cache
		r.mu.Unlock()
		return data, nil
	}
	sequential := r.last >= 0 && i == r.last+1
	r.last = i
	d := r.ahead[i]
	delete(r.ahead, i)
	for k := range r.ahead { // behind the reader now: never read
		if k < i {
			delete(r.ahead, k)
		}
	}
	if sequential {
		for k := i + 1; k <= i+r.readAhead() && k < len(r.layout); k++ {
			if _, ok := r.ahead[k]; !ok {
				r.ahead[k] = r.decodeAsync(k)
			}
		}
	}
	r.mu.Unlock()
	var data []byte
	var err error
	if d != nil {
		<-d.done
		data, err = d.data, d.err
	} else {
		data, err = r.piece(i)
	}
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.cache, r.cacheAt = data, i
	r.mu.Unlock()
	return data, nil
}

// piece decodes layout[i], through the store's read cache when it has one.
func (r *FileReader) piece(i int) ([]byte, error) {
	id := r.layout[i].chunk.ID
	if data, ok := r.s.readCache.get(id); ok {
		return data, nil
	}
	data, err := r.s.readPiece(r.layout[i], r.locs, nil)
	if err == nil {
		r.s.readCache.put(id, data)
	}
	return data, err
}

// decodeAsync starts decoding chunk k. A result nobody collects is garbage once the
// reader moves on or closes.
func (r *FileReader) decodeAsync(k int) *decoding {
	d := &decoding{done: make(chan struct{})}
	go func() {
		defer close(d.done)
		d.data, d.err = r.piece(k)
	}()
	return d
}

// CommitFile is one file of a commit with its metadata.
type CommitFile struct {
	Path string
	ID   ID
	File *File
}

// CommitFiles lists the files of a commit with their metadata (no data is read).
func (s *Store) CommitFiles(commit ID) ([]CommitFile, error) {
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	_, m, err := s.commitManifest(commit)
	if err != nil {
		return nil, err
	}
	out := make([]CommitFile, 0, len(m.Files))
	for _, e := range m.Files {
		f, err := s.LoadFile(e.File)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path, err)
		}
		out = append(out, CommitFile{Path: e.Path, ID: e.File, File: f})
	}
	return out, nil
}
