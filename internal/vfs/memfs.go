package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrCrashed is returned by every operation of a MemFS after its simulated crash
// point, until Crash resets it, and by Files opened before the last Crash.
var ErrCrashed = errors.New("vfs: simulated crash")

// MemFS is an in-memory filesystem that keeps exactly what the package contract
// makes durable, in the style of pebble's strict memfs: a file's content survives a
// Crash only up to its last Sync, and a directory entry (create, rename, remove)
// only once its directory was synced with SyncDir. Crash resets the filesystem to
// that synced state, as power loss would.
//
// To enumerate crash points, a test counts the mutating operations of a workload
// (Ops: file and directory creation, Write, Sync, Rename, Remove, SyncDir; reads,
// Stat, Chmod and Close are not counted), then re-runs it from the same starting
// state with CrashAfter(k) for each k: operations 1..k run, and from operation k+1
// on every operation, reads included, fails with ErrCrashed, so the workload stops
// as a crashed process would. Crash then drops everything unsynced.
//
// Paths are absolute (relative ones are made absolute against the process's
// working directory); there are no symlinks and no permissions checks.
type MemFS struct {
	mu         sync.Mutex
	root       *memNode // +checklocks:mu
	ops        int      // +checklocks:mu
	crashAfter int      // +checklocks:mu
	crashed    bool     // +checklocks:mu
	gen        int      // +checklocks:mu
	tempSeq    int      // +checklocks:mu
	now        func() time.Time
}

type memNode struct {
	dir bool
	// Directories: the entries now, and as of the last SyncDir.
	children, synced map[string]*memNode
	// Files: the content now, and as of the last Sync.
	data, syncedData   []byte
	mtime, syncedMtime time.Time
	mode               fs.FileMode
}

func newDirNode() *memNode {
	return &memNode{dir: true, children: map[string]*memNode{}, synced: map[string]*memNode{}, mode: fs.ModeDir | 0o755}
}

// NewMemFS returns an empty crash-simulating filesystem (only "/" exists).
func NewMemFS() *MemFS {
	return &MemFS{root: newDirNode(), crashAfter: -1, now: time.Now}
}

// Ops returns the number of mutating operations attempted so far (see MemFS).
func (m *MemFS) Ops() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ops
}

// CrashAfter makes operation k+1 and every later one fail with ErrCrashed, counting
// from the operations already made (so CrashAfter(0) right after NewMemFS crashes
// at the first one). A negative k turns the crash point off.
func (m *MemFS) CrashAfter(k int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k < 0 {
		m.crashAfter = -1
		return
	}
	m.crashAfter = m.ops + k
}

// Crashed reports whether the crash point was reached.
func (m *MemFS) Crashed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.crashed
}

// Crash simulates power loss: every file's content goes back to its last Sync and
// every directory's entries to its last SyncDir (pebble's ResetToSyncedState). Files
// opened before fail with ErrCrashed from now on. The crash point is cleared.
func (m *MemFS) Crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.crashed = false
	m.crashAfter = -1
	resetDir(m.root, map[*memNode]bool{})
}

// CrashKeeping simulates power loss that lets some unsynced changes reach the disk,
// as real filesystems do (pebble's CrashClone with UnsyncedDataPercent): each
// file's unsynced content, and each directory entry's unsynced creation, rename
// or removal, survives with probability keep, independently, drawn from rng.
// keep = 0 is Crash.
func (m *MemFS) CrashKeeping(rng *rand.Rand, keep float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	m.crashed = false
	m.crashAfter = -1
	if keep <= 0 || rng == nil {
		resetDir(m.root, map[*memNode]bool{})
		return
	}
	reset(m.root, map[*memNode]bool{}, func() bool { return rng.Float64() < keep })
}

func resetDir(d *memNode, seen map[*memNode]bool) {
	reset(d, seen, func() bool { return false })
}

// reset brings d and everything below it to what survives a crash; survive
// decides, for each unsynced change, whether it reached the disk anyway.
func reset(d *memNode, seen map[*memNode]bool, survive func() bool) {
	if seen[d] {
		return
	}
	seen[d] = true
	names := make([]string, 0, len(d.children)+len(d.synced))
	for name := range d.children {
		names = append(names, name)
	}
	for name := range d.synced {
		if _, ok := d.children[name]; !ok {
			names = append(names, name)
		}
	}
	sort.Strings(names) // the same draws for the same seed
	after := make(map[string]*memNode, len(names))
	for _, name := range names {
		cur, inCur := d.children[name]
		syn, inSyn := d.synced[name]
		switch {
		case inCur && inSyn && cur == syn:
			after[name] = cur
		case survive():
			if inCur {
				after[name] = cur
			}
		case inSyn:
			after[name] = syn
		}
	}
	d.children, d.synced = after, cloneEntries(after)
	for _, name := range names {
		c, ok := after[name]
		switch {
		case !ok:
		case c.dir:
			reset(c, seen, survive)
		case !seen[c]:
			seen[c] = true
			if !bytes.Equal(c.data, c.syncedData) && survive() {
				c.syncedData, c.syncedMtime = cloneBytes(c.data), c.mtime
			}
			c.data, c.mtime = cloneBytes(c.syncedData), c.syncedMtime
		}
	}
}

// SyncAll makes the whole current state durable, as `sync` and a clean shutdown
// would (for setting up a test's starting state).
func (m *MemFS) SyncAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[*memNode]bool{}
	var walk func(n *memNode)
	walk = func(n *memNode) {
		if seen[n] {
			return
		}
		seen[n] = true
		if !n.dir {
			n.syncedData, n.syncedMtime = cloneBytes(n.data), n.mtime
			return
		}
		n.synced = cloneEntries(n.children)
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(m.root)
}

// CrashClone returns a new MemFS holding what m would hold after a Crash now,
// leaving m as it is (pebble's CrashClone with no unsynced data kept). Operation
// counts start from zero.
func (m *MemFS) CrashClone() *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	copied := map[*memNode]*memNode{}
	var cp func(n *memNode) *memNode
	cp = func(n *memNode) *memNode {
		if c, ok := copied[n]; ok {
			return c
		}
		if !n.dir {
			c := &memNode{data: cloneBytes(n.syncedData), syncedData: cloneBytes(n.syncedData), mtime: n.syncedMtime, syncedMtime: n.syncedMtime, mode: n.mode}
			copied[n] = c
			return c
		}
		c := newDirNode()
		c.mode = n.mode
		copied[n] = c
		for name, child := range n.synced {
			c.children[name] = cp(child)
		}
		c.synced = cloneEntries(c.children)
		return c
	}
	return &MemFS{root: cp(m.root), crashAfter: -1, now: m.now, tempSeq: m.tempSeq}
}

func cloneEntries(e map[string]*memNode) map[string]*memNode {
	out := make(map[string]*memNode, len(e))
	for k, v := range e {
		out[k] = v
	}
	return out
}

func cloneBytes(b []byte) []byte { return append([]byte(nil), b...) }

// mutate counts one mutating operation and says whether it may run.
// +checklocks:m.mu
func (m *MemFS) mutate() error {
	if m.crashed {
		return ErrCrashed
	}
	m.ops++
	if m.crashAfter >= 0 && m.ops > m.crashAfter {
		m.crashed = true
		return ErrCrashed
	}
	return nil
}

// +checklocks:m.mu
func (m *MemFS) alive() error {
	if m.crashed {
		return ErrCrashed
	}
	return nil
}

func split(name string) ([]string, error) {
	abs, err := filepath.Abs(name)
	if err != nil {
		return nil, err
	}
	if abs == "/" {
		return nil, nil
	}
	return strings.Split(strings.TrimPrefix(abs, "/"), "/"), nil
}

// lookupParent returns the directory holding name's last component, and that
// component (nil and "" for the root). Past the crash point it fails with
// ErrCrashed, so every path operation, reads included, stops there.
// +checklocks:m.mu
func (m *MemFS) lookupParent(name string) (*memNode, string, error) {
	if err := m.alive(); err != nil {
		return nil, "", err
	}
	parts, err := split(name)
	if err != nil {
		return nil, "", err
	}
	if len(parts) == 0 {
		return nil, "", nil
	}
	d := m.root
	for _, p := range parts[:len(parts)-1] {
		c, ok := d.children[p]
		if !ok {
			return nil, "", fs.ErrNotExist
		}
		if !c.dir {
			return nil, "", syscall.ENOTDIR
		}
		d = c
	}
	return d, parts[len(parts)-1], nil
}

// +checklocks:m.mu
func (m *MemFS) lookup(name string) (*memNode, error) {
	d, base, err := m.lookupParent(name)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return m.root, nil
	}
	n, ok := d.children[base]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return n, nil
}

// entry returns the existing entry name, its directory and its name there, for
// an operation that changes it (the root cannot be changed: EBUSY).
// +checklocks:m.mu
func (m *MemFS) entry(name string) (d *memNode, base string, n *memNode, err error) {
	d, base, err = m.lookupParent(name)
	if err != nil {
		return nil, "", nil, err
	}
	if d == nil {
		return nil, "", nil, syscall.EBUSY
	}
	n, ok := d.children[base]
	if !ok {
		return nil, "", nil, fs.ErrNotExist
	}
	return d, base, n, nil
}

func (m *MemFS) Open(name string) (File, error) { return m.OpenFile(name, os.O_RDONLY, 0) }

func (m *MemFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := m.openLocked(name, flag, perm)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return f, nil
}

// +checklocks:m.mu
func (m *MemFS) openLocked(name string, flag int, perm fs.FileMode) (*memFile, error) {
	d, base, err := m.lookupParent(name)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, syscall.EISDIR
	}
	n, ok := d.children[base]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, fs.ErrExist
	case !ok && flag&os.O_CREATE == 0:
		return nil, fs.ErrNotExist
	case !ok:
		if err := m.mutate(); err != nil {
			return nil, err
		}
		n = &memNode{mode: perm & fs.ModePerm, mtime: m.now()}
		d.children[base] = n
	case n.dir && flag&(os.O_WRONLY|os.O_RDWR) != 0:
		return nil, syscall.EISDIR
	}
	if flag&os.O_TRUNC != 0 && len(n.data) > 0 {
		if err := m.mutate(); err != nil {
			return nil, err
		}
		n.data, n.mtime = nil, m.now()
	}
	acc := flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	return &memFile{fs: m, node: n, name: name, gen: m.gen,
		read: acc == os.O_RDONLY || acc == os.O_RDWR, write: acc == os.O_WRONLY || acc == os.O_RDWR,
		append: flag&os.O_APPEND != 0}, nil
}

func (m *MemFS) CreateTemp(dir, pattern string) (File, error) {
	if dir == "" {
		return nil, &fs.PathError{Op: "createtemp", Path: pattern, Err: errors.New("vfs: CreateTemp needs a directory")}
	}
	prefix, suffix, _ := strings.Cut(pattern, "*")
	if !strings.Contains(pattern, "*") {
		prefix, suffix = pattern, ""
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		m.tempSeq++
		name := filepath.Join(dir, prefix+strconv.Itoa(1000000+m.tempSeq)+suffix)
		f, err := m.openLocked(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "createtemp", Path: name, Err: err}
		}
		return f, nil
	}
}

func (m *MemFS) Rename(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := func() error {
		od, obase, n, err := m.entry(oldname)
		if err != nil {
			return err
		}
		nd, nbase, err := m.lookupParent(newname)
		if err != nil {
			return err
		}
		if nd == nil {
			return syscall.EBUSY
		}
		if t, ok := nd.children[nbase]; ok && t.dir {
			return syscall.EEXIST
		}
		if err := m.mutate(); err != nil {
			return err
		}
		if od == nd && obase == nbase {
			return nil
		}
		delete(od.children, obase)
		nd.children[nbase] = n
		return nil
	}()
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return nil
}

func (m *MemFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := func() error {
		d, base, n, err := m.entry(name)
		if err != nil {
			return err
		}
		if n.dir && len(n.children) > 0 {
			return syscall.ENOTEMPTY
		}
		if err := m.mutate(); err != nil {
			return err
		}
		delete(d.children, base)
		return nil
	}()
	if err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}

func (m *MemFS) Mkdir(name string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.mkdirLocked(name, perm); err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return nil
}

// +checklocks:m.mu
func (m *MemFS) mkdirLocked(name string, perm fs.FileMode) error {
	d, base, err := m.lookupParent(name)
	if err != nil {
		return err
	}
	if d == nil {
		return fs.ErrExist
	}
	if _, ok := d.children[base]; ok {
		return fs.ErrExist
	}
	if err := m.mutate(); err != nil {
		return err
	}
	n := newDirNode()
	n.mode = fs.ModeDir | perm&fs.ModePerm
	n.mtime = m.now()
	d.children[base] = n
	return nil
}

func (m *MemFS) MkdirAll(name string, perm fs.FileMode) error {
	parts, err := split(name)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	path := "/"
	for _, p := range parts {
		path = filepath.Join(path, p)
		n, err := m.lookup(path)
		switch {
		case err == nil && n.dir:
			continue
		case err == nil:
			return &fs.PathError{Op: "mkdir", Path: path, Err: syscall.ENOTDIR}
		}
		if err := m.mkdirLocked(path, perm); err != nil {
			return &fs.PathError{Op: "mkdir", Path: path, Err: err}
		}
	}
	return m.alive()
}

func (m *MemFS) ReadDir(name string) ([]fs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	if !n.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	out := make([]fs.DirEntry, 0, len(n.children))
	for base, c := range n.children {
		out = append(out, fs.FileInfoToDirEntry(c.info(base)))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

func (m *MemFS) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(name)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	return n.info(filepath.Base(name)), nil
}

func (m *MemFS) SyncDir(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := func() error {
		n, err := m.lookup(name)
		if err != nil {
			return err
		}
		if !n.dir {
			return syscall.ENOTDIR
		}
		if err := m.mutate(); err != nil {
			return err
		}
		n.synced = cloneEntries(n.children)
		return nil
	}()
	if err != nil {
		return &fs.PathError{Op: "fsync", Path: name, Err: err}
	}
	return nil
}

// Map returns a copy of the file's current content.
func (m *MemFS) Map(f File) (Mapping, error) {
	mf, ok := f.(*memFile)
	if !ok || mf.fs != m {
		return nil, fmt.Errorf("vfs: Map of a file from another FS")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := mf.usable(); err != nil {
		return nil, &fs.PathError{Op: "mmap", Path: mf.name, Err: err}
	}
	return memMapping{b: cloneBytes(mf.node.data)}, nil
}

func (n *memNode) info(name string) fs.FileInfo {
	return memInfo{name: name, size: int64(len(n.data)), mode: n.mode, mtime: n.mtime}
}

type memInfo struct {
	name  string
	size  int64
	mode  fs.FileMode
	mtime time.Time
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return i.mode }
func (i memInfo) ModTime() time.Time { return i.mtime }
func (i memInfo) IsDir() bool        { return i.mode.IsDir() }
func (i memInfo) Sys() any           { return nil }

type memFile struct {
	fs     *MemFS
	node   *memNode
	name   string
	gen    int
	off    int64
	read   bool
	write  bool
	append bool
	closed bool
}

// +checklocks:f.fs.mu
func (f *memFile) usable() error {
	switch {
	case f.closed:
		return fs.ErrClosed
	case f.gen != f.fs.gen:
		return ErrCrashed
	}
	return f.fs.alive()
}

// readable is usable, for a file opened for reading.
// +checklocks:f.fs.mu
func (f *memFile) readable() error {
	if err := f.usable(); err != nil {
		return err
	}
	if !f.read {
		return syscall.EBADF
	}
	return nil
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) Read(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.readable(); err != nil {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: err}
	}
	if f.off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[f.off:])
	f.off += int64(n)
	return n, nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.readable(); err != nil {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: err}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: f.name, Err: errors.New("negative offset")}
	}
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	err := f.usable()
	if err == nil && !f.write {
		err = syscall.EBADF
	}
	if err == nil {
		err = f.fs.mutate()
	}
	if err != nil {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: err}
	}
	n := f.node
	if f.append {
		f.off = int64(len(n.data))
	}
	end := f.off + int64(len(p))
	if end > int64(len(n.data)) {
		if end > int64(cap(n.data)) {
			grown := make([]byte, end, max(end, 2*int64(cap(n.data))))
			copy(grown, n.data)
			n.data = grown
		} else {
			n.data = n.data[:end]
		}
	}
	copy(n.data[f.off:], p)
	f.off = end
	n.mtime = f.fs.now()
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	err := f.usable()
	if err == nil {
		err = f.fs.mutate()
	}
	if err != nil {
		return &fs.PathError{Op: "fsync", Path: f.name, Err: err}
	}
	f.node.syncedData, f.node.syncedMtime = cloneBytes(f.node.data), f.node.mtime
	return nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable(); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: f.name, Err: err}
	}
	return f.node.info(filepath.Base(f.name)), nil
}

func (f *memFile) Chmod(mode fs.FileMode) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.usable(); err != nil {
		return &fs.PathError{Op: "chmod", Path: f.name, Err: err}
	}
	f.node.mode = f.node.mode&^fs.ModePerm | mode&fs.ModePerm
	return nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	return nil
}
