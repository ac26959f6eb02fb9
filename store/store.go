package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heft-dev/heft/internal/vfs"
	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/s3"
)

// Version is the heft version recorded in commit provenance.
var Version = "0.1.0-dev"

// Options tune a Store. The zero value means the defaults documented per field.
type Options struct {
	// LockTimeout bounds how long an operation waits for another process's lock
	// (the index for one transaction, refs, gc). Default 60 s.
	LockTimeout time.Duration
	// ChunkSize is the fixed chunk size for tensor data, aligned to each tensor's
	// start. Default DefaultChunkSize (see docs/benchmarks.md for the choice).
	ChunkSize int
	// PackSize is the target size of a pack file. Default 256 MiB.
	PackSize int64
	// Workers is the number of hashing/compression/decoding goroutines. Default
	// GOMAXPROCS.
	Workers int
	// NoCompress stores every chunk raw (for benchmarks and already-dense data).
	NoCompress bool
	// Now is the clock (tests inject one). Default time.Now.
	Now func() time.Time
	// ReadCacheBytes, when positive, keeps up to that many bytes of decoded,
	// verified file pieces in memory for FileReaders (`heft serve` sets it), so
	// repeated downloads of a model decode each piece once. Default 0: none.
	ReadCacheBytes int64
	// FS is the filesystem holding the store's own files: packs, refs, config,
	// reflog, ingest journals (and everything gc removes or repair scans). The
	// index (index.db) and the lock files (locks/) stay on the real filesystem in
	// the same directory, since bbolt and flock need real files; a bbolt commit is
	// durable when it returns. Tests pass a vfs.ErrorFS or vfs.MemFS to inject
	// faults and simulate crashes. Default vfs.Default (the real filesystem).
	FS vfs.FS
	// BackendURL keeps the store's packs and refs in an object store shared by
	// several nodes (see remote.go): s3://BUCKET/PREFIX[?OPTIONS] as
	// s3.ParseURL reads it. It is recorded in the config file when the store is
	// created; opening an existing store uses the recorded URL, and a different
	// one here is an error. Empty: whatever the config says (a local store by
	// default).
	BackendURL string
	// Backend, when set, is the shared backend itself (tests pass an in-memory
	// one), used instead of opening BackendURL. The config file records its
	// location; the store must be opened with a backend at every later open.
	Backend backend.Backend
	// RemoteLockTTL is how long a shared store's lock object lives without a
	// refresh (its holder rewrites it every quarter of it). Default 2 minutes.
	RemoteLockTTL time.Duration
	// PackCacheBytes bounds the copies of packs a shared store's node keeps in
	// packs/ (packcache.go). Zero: the config file's value, else a quarter of
	// the filesystem holding the store; negative: unlimited.
	PackCacheBytes int64
}

// DefaultChunkSize is the tensor chunk size: large enough that per-chunk costs
// (index records, pack entry headers, codec framing, lookups) vanish against the
// data, small enough that a partly changed tensor (new embedding rows, one frozen
// block) dedups at a fine grain. Measured in docs/benchmarks.md.
const DefaultChunkSize = 4 << 20

func (o Options) withDefaults() Options {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 60 * time.Second
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.PackSize <= 0 {
		o.PackSize = 256 << 20
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FS == nil {
		o.FS = vfs.Default
	}
	return o
}

// Store is an open heft store: a directory holding
//
//	config          format marker
//	index.db        bbolt index (a cache rebuildable from packs)
//	packs/xx/*.pack write-once pack files with every object
//	refs            the refs, rewritten atomically
//	logs/reflog     every ref change, appended
//	locks/          flock files (refs.lock, gc.lock)
//
// A Store is safe for concurrent use by goroutines; several processes may use one
// store at once (see gc.lock in gc.go for the one exclusive operation).
type Store struct {
	dir  string
	opts Options
	fs   vfs.FS // opts.FS
	idx  *index
	// readCache holds decoded pieces for FileReaders (nil: no cache), layouts
	// the layouts of opened files (nil: none); both only with ReadCacheBytes.
	readCache *chunkCache
	layouts   *layoutCache

	skipCheck bool // see SkipCleanupCheck

	// Set once this process has made the entry of logs/reflog (in logs/) and of
	// ingest/ (in the store directory) durable with SyncDir: both are created on
	// first use, and a file in a directory whose entry is not durable can vanish in
	// a crash with it.
	reflogDurable, journalDirDurable atomic.Bool

	packMu    sync.Mutex
	packFiles map[ID]vfs.File // +checklocks:packMu
	// packMaps are read-only mappings of whole packs. Packs never change once
	// published, so a mapping stays valid; gc may unlink a mapped pack, whose pages
	// then live until Close unmaps them.
	packMaps map[ID]vfs.Mapping // +checklocks:packMu

	// remote is the shared backend of a store whose packs and refs live in an
	// object store (nil for a local store).
	remote *remote
	// ownsBackend: the store opened the backend (from its URL) and closes it.
	ownsBackend bool
}

type storeConfig struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Backend is the URL of the shared backend holding packs and refs, for a
	// store created with one ("" for a local store; for a backend handed over
	// as Options.Backend, its kind and location, which cannot be reopened from
	// the URL alone).
	Backend string `json:"backend,omitempty"`
	// PackCacheBytes is the node's pack cache budget (shared stores; 0: the
	// default, see Options.PackCacheBytes).
	PackCacheBytes int64 `json:"pack_cache_bytes,omitempty"`
}

const storeFormat = "heft-store"

// Open opens the store at dir, creating it on first use.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: abs, opts: opts, fs: opts.FS, packFiles: map[ID]vfs.File{}, packMaps: map[ID]vfs.Mapping{}, readCache: newChunkCache(opts.ReadCacheBytes), layouts: newLayoutCache(opts.ReadCacheBytes > 0)}
	s.idx = &index{path: filepath.Join(abs, "index.db"), timeout: opts.LockTimeout}
	cfgPath := filepath.Join(abs, "config")
	data, err := vfs.ReadFile(s.fs, cfgPath)
	var cfg storeConfig
	created := false
	switch {
	case errors.Is(err, os.ErrNotExist):
		created = true
		cfg = storeConfig{Format: storeFormat, Version: 1, Backend: opts.BackendURL, PackCacheBytes: opts.PackCacheBytes}
		if opts.Backend != nil {
			cfg.Backend = opts.Backend.Properties().Kind + ":" + opts.Backend.Properties().Location
		}
		if err := s.create(cfg); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	default:
		if err := json.Unmarshal(data, &cfg); err != nil || cfg.Format != storeFormat {
			return nil, fmt.Errorf("%w: %s is not a heft store (bad config file)", ErrInput, abs)
		}
		if cfg.Version != 1 {
			return nil, fmt.Errorf("%w: store %s has format version %d; this heft reads version 1", ErrInput, abs, cfg.Version)
		}
		if opts.BackendURL != "" && opts.BackendURL != cfg.Backend {
			return nil, fmt.Errorf("%w: store %s was created with backend %q, not %q", ErrInput, abs, cfg.Backend, opts.BackendURL)
		}
	}
	if s.opts.PackCacheBytes == 0 {
		s.opts.PackCacheBytes = cfg.PackCacheBytes
	}
	be := opts.Backend
	switch {
	case be == nil && strings.HasPrefix(cfg.Backend, "s3://"):
		s3cfg, err := s3.ParseURL(cfg.Backend)
		if err != nil {
			return nil, fmt.Errorf("%w: store %s: backend: %v", ErrInput, abs, err)
		}
		if be, err = s3.New(s3cfg); err != nil {
			return nil, fmt.Errorf("store %s: backend: %w", abs, err)
		}
	case be == nil && cfg.Backend != "":
		return nil, fmt.Errorf("%w: store %s keeps its packs in %s, which must be opened by the program that created it", ErrInput, abs, cfg.Backend)
	case be != nil && cfg.Backend == "":
		return nil, fmt.Errorf("%w: store %s is a local store; it cannot be opened with a backend", ErrInput, abs)
	}
	if be != nil {
		if err := s.openRemote(context.Background(), be); err != nil {
			if opts.Backend == nil {
				_ = be.Close()
			}
			if created {
				// A store that never reached its bucket is not a store: drop
				// its config, so that init can be run again (with the
				// bucket created, or another URL).
				_ = s.fs.Remove(cfgPath)
			}
			return nil, err
		}
		s.ownsBackend = opts.Backend == nil
	}
	return s, nil
}

// create lays out a new store. The config file is written last, so a store whose
// creation was interrupted is simply created again. The index and the lock
// directory are on the real filesystem, the rest on s.fs (the same one by default).
func (s *Store) create(cfg storeConfig) error {
	for _, d := range []string{s.dir, filepath.Join(s.dir, "locks")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create store %s: %w", s.dir, err)
		}
	}
	for _, d := range []string{s.dir, s.packsDir(), filepath.Join(s.dir, "logs")} {
		if err := s.fs.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create store %s: %w", s.dir, err)
		}
	}
	if _, err := os.Stat(s.idx.path); errors.Is(err, os.ErrNotExist) {
		if err := createIndex(s.idx.path, s.opts.LockTimeout); err != nil {
			return err
		}
	}
	data, _ := json.Marshal(cfg)
	if err := vfs.WriteFileAtomic(s.fs, filepath.Join(s.dir, "config"), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("create store %s: %w", s.dir, err)
	}
	return s.fs.SyncDir(filepath.Dir(s.dir))
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Close releases cached pack file handles.
func (s *Store) Close() error {
	s.packMu.Lock()
	defer s.packMu.Unlock()
	for id, f := range s.packFiles {
		_ = f.Close()
		delete(s.packFiles, id)
	}
	for id, m := range s.packMaps {
		_ = m.Close()
		delete(s.packMaps, id)
	}
	if s.remote != nil && s.ownsBackend {
		s.ownsBackend = false
		return s.remote.be.Close()
	}
	return nil
}

func (s *Store) now() time.Time { return s.opts.Now() }

func (s *Store) packsDir() string { return filepath.Join(s.dir, "packs") }

func (s *Store) packPath(id ID) string {
	h := id.String()
	return filepath.Join(s.packsDir(), h[:2], h+".pack")
}

// ReadConfig reads a store directory's config file without opening the store:
// whether a store is there, and the URL of its shared backend ("" for a local
// store).
func ReadConfig(dir string) (backendURL string, exists bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, "config"))
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	var cfg storeConfig
	if err := json.Unmarshal(data, &cfg); err != nil || cfg.Format != storeFormat {
		return "", false, fmt.Errorf("%w: %s is not a heft store (bad config file)", ErrInput, dir)
	}
	return cfg.Backend, true, nil
}
