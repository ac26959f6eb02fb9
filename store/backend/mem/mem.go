// Package mem is an in-memory backend.Backend for tests of the layers above the
// backend (style.md: test the store against a fake of its own interface, not an
// S3 fake). It keeps the whole contract, including conditional writes, name
// conflicts ("a" versus "a/b", refused as on a filesystem) and consistent
// listing, and it issues a fresh version token on every write, so
// compare-and-swap on it is free of ABA.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/internal/objio"
)

// Options tune a Backend. The zero value is ready to use.
type Options struct {
	// Now is the clock for ModTime. Default time.Now.
	Now func() time.Time
}

// Backend keeps objects in a map. Stored bytes are never modified, so readers
// share them without copying.
type Backend struct {
	now func() time.Time

	mu   sync.RWMutex
	objs map[string]*object // +checklocks:mu
	// dirs counts the objects below each directory name, to refuse "a" while
	// "a/b" exists.
	dirs map[string]int // +checklocks:mu
	gen  uint64         // +checklocks:mu
}

type object struct {
	data    []byte
	version string
	modTime time.Time
}

var _ backend.Backend = (*Backend)(nil)

// New returns an empty in-memory backend.
func New(opts Options) *Backend {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Backend{now: opts.Now, objs: map[string]*object{}, dirs: map[string]int{}}
}

func (b *Backend) fail(op, name string, err error) error {
	return &backend.Error{Op: op, Path: "mem:" + name, Err: err}
}

func (b *Backend) Put(ctx context.Context, name string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	return b.put(ctx, name, r, size, objio.PutAlways, "")
}

func (b *Backend) PutIfAbsent(ctx context.Context, name string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	return b.put(ctx, name, r, size, objio.PutIfAbsent, "")
}

func (b *Backend) CompareAndSwap(ctx context.Context, name, version string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	return b.put(ctx, name, r, size, objio.PutIfMatch, version)
}

func (b *Backend) put(ctx context.Context, name string, r io.ReaderAt, size int64, mode objio.PutMode, version string) (backend.ObjectInfo, error) {
	op := mode.Op()
	if err := backend.CheckName(name); err != nil {
		return backend.ObjectInfo{}, b.fail(op, name, err)
	}
	if err := objio.CheckSize(size); err != nil {
		return backend.ObjectInfo{}, b.fail(op, name, err)
	}
	var buf bytes.Buffer
	buf.Grow(int(size))
	if err := objio.CopyFrom(ctx, &buf, r, size); err != nil {
		return backend.ObjectInfo{}, b.fail(op, name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// A cancellation that arrives before publication publishes nothing.
	if err := ctx.Err(); err != nil {
		return backend.ObjectInfo{}, b.fail(op, name, err)
	}
	if err := b.checkConflict(name); err != nil {
		return backend.ObjectInfo{}, b.fail(op, name, err)
	}
	cur, exists := b.objs[name]
	switch mode {
	case objio.PutIfAbsent:
		if exists {
			return backend.ObjectInfo{}, b.fail(op, name, backend.ErrExists)
		}
	case objio.PutIfMatch:
		if !exists {
			return backend.ObjectInfo{}, b.fail(op, name, fmt.Errorf("%w: %w", backend.ErrPreconditionFailed, backend.ErrNotFound))
		}
		if cur.version != version {
			return backend.ObjectInfo{}, b.fail(op, name, fmt.Errorf("%w: version is %s, expected %s", backend.ErrPreconditionFailed, cur.version, version))
		}
	}
	b.gen++
	obj := &object{data: buf.Bytes(), version: "m" + strconv.FormatUint(b.gen, 10), modTime: b.now()}
	if !exists {
		for _, p := range backend.Parents(name) {
			b.dirs[p]++
		}
	}
	b.objs[name] = obj
	return obj.info(name), nil
}

// checkConflict refuses name when an object sits at one of its parents or below
// it.
// +checklocks:b.mu
func (b *Backend) checkConflict(name string) error {
	for _, p := range backend.Parents(name) {
		if _, ok := b.objs[p]; ok {
			return fmt.Errorf("%w: object %q exists where %q needs a directory", backend.ErrInvalidName, p, name)
		}
	}
	if b.dirs[name] > 0 {
		return fmt.Errorf("%w: %q is a directory of other objects", backend.ErrInvalidName, name)
	}
	return nil
}

func (o *object) info(name string) backend.ObjectInfo {
	return backend.ObjectInfo{Name: name, Size: int64(len(o.data)), Version: o.version, ModTime: o.modTime}
}

func (b *Backend) lookup(ctx context.Context, op, name string) (*object, error) {
	if err := objio.Start(ctx, name); err != nil {
		return nil, b.fail(op, name, err)
	}
	b.mu.RLock()
	obj, ok := b.objs[name]
	b.mu.RUnlock()
	if !ok {
		return nil, b.fail(op, name, backend.ErrNotFound)
	}
	return obj, nil
}

func (b *Backend) Get(ctx context.Context, name string, off, length int64) (io.ReadCloser, backend.ObjectInfo, error) {
	obj, err := b.lookup(ctx, "get", name)
	if err != nil {
		return nil, backend.ObjectInfo{}, err
	}
	n, err := objio.Range(int64(len(obj.data)), off, length)
	if err != nil {
		return nil, backend.ObjectInfo{}, b.fail("get", name, err)
	}
	r := &objio.CtxReader{Ctx: ctx, R: bytes.NewReader(obj.data[off : off+n])}
	return r, obj.info(name), nil
}

func (b *Backend) ReadAt(ctx context.Context, name string, p []byte, off int64) (int, error) {
	obj, err := b.lookup(ctx, "read", name)
	if err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, b.fail("read", name, fmt.Errorf("negative offset %d", off))
	}
	size := int64(len(obj.data))
	n := 0
	if off < size {
		n = copy(p, obj.data[off:])
	}
	if n < len(p) || off > size {
		return n, b.fail("read", name, objio.ShortRead(off, n, len(p), size))
	}
	return n, nil
}

func (b *Backend) Stat(ctx context.Context, name string) (backend.ObjectInfo, error) {
	obj, err := b.lookup(ctx, "stat", name)
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	return obj.info(name), nil
}

func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if err := backend.CheckPrefix(prefix); err != nil {
		return b.fail("list", prefix, err)
	}
	if err := ctx.Err(); err != nil {
		return b.fail("list", prefix, err)
	}
	b.mu.RLock()
	var infos []backend.ObjectInfo
	for name, obj := range b.objs {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, obj.info(name))
		}
	}
	b.mu.RUnlock()
	if err := objio.Deliver(ctx, infos, fn); err != nil {
		return b.fail("list", prefix, err)
	}
	return nil
}

func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := objio.Start(ctx, name); err != nil {
		return b.fail("delete", name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objs[name]; !ok {
		return nil
	}
	delete(b.objs, name)
	for _, p := range backend.Parents(name) {
		if b.dirs[p]--; b.dirs[p] == 0 {
			delete(b.dirs, p)
		}
	}
	return nil
}

func (b *Backend) Properties() backend.Properties {
	return backend.Properties{Kind: "mem", Location: "mem:", ConsistentList: true, Connections: 8}
}

// Close does nothing: the objects live as long as the Backend value.
func (b *Backend) Close() error { return nil }
