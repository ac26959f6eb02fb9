package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/mem"
)

// sharedNodes opens n stores (nodes, each with its own directory) over one
// backend, checked at the end like TestStore's.
func sharedNodes(t *testing.T, be backend.Backend, n int, opts Options) []*Store {
	t.Helper()
	var nodes []*Store
	for i := range n {
		o := opts
		o.Backend = be
		s, err := Open(t.TempDir(), o)
		if err != nil {
			t.Fatalf("open node %d: %v", i, err)
		}
		nodes = append(nodes, s)
	}
	t.Cleanup(func() {
		for _, s := range nodes {
			if !t.Failed() {
				CheckStore(t, s)
			}
			s.Close()
		}
	})
	return nodes
}

func TestSharedStoreTwoNodes(t *testing.T) {
	be := newSharedBackend(t)
	nodes := sharedNodes(t, be, 2, smallChunks)
	a, b := nodes[0], nodes[1]
	base, _, tuned, _ := family(t, testCfg())

	importDir(t, a, base, "org/base:main")
	// b sees the ref a moved, and every object under it, and exports it
	// byte-identically from packs it fetches on demand.
	if _, err := b.Ref(mustRef(t, "org/base:main")); err != nil {
		t.Fatalf("node b: %v", err)
	}
	assertExportIdentical(t, b, "org/base:main", base)

	// b imports the fine-tune: it dedups against a's packs (its frozen
	// embedding is stored once in the bucket).
	before := remoteBytes(t, be)
	res := importDir(t, b, tuned, "org/tuned:main")
	if res.Stats.PackBytes == 0 || remoteBytes(t, be)-before != res.Stats.PackBytes {
		t.Fatalf("bucket grew by %d, import wrote %d pack bytes", remoteBytes(t, be)-before, res.Stats.PackBytes)
	}
	assertExportIdentical(t, a, "org/tuned:main", tuned)

	// Nothing is kept locally that the bucket lacks: a node with an empty
	// directory reads everything.
	c, err := Open(t.TempDir(), Options{Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	refs, err := c.Refs()
	if err != nil || len(refs) != 2 {
		t.Fatalf("node c refs %v, %v", refs, err)
	}
	assertExportIdentical(t, c, "org/tuned:main", tuned)
	CheckStore(t, c)
}

// newSharedBackend is an in-memory backend, or the one HEFT_TEST_STORE_BACKEND
// selects.
func newSharedBackend(t *testing.T) backend.Backend {
	if sharedTestBackend != nil {
		return sharedTestBackend(t)
	}
	return mem.New(mem.Options{})
}

func remoteBytes(t *testing.T, be backend.Backend) int64 {
	t.Helper()
	var n int64
	if err := be.List(ctx, remotePacksDir, func(oi backend.ObjectInfo) error {
		n += oi.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSharedStoreRefConflicts(t *testing.T) {
	be := newSharedBackend(t)
	nodes := sharedNodes(t, be, 3, smallChunks)
	base, _, tuned, _ := family(t, testCfg())
	importDir(t, nodes[0], base, "m:base")
	importDir(t, nodes[1], tuned, "m:tuned")
	baseID, _ := nodes[2].Ref(mustRef(t, "m:base"))
	tunedID, _ := nodes[2].Ref(mustRef(t, "m:tuned"))

	// Every node tries to create the same ref at once: one wins, the others
	// get ErrConflict; unrelated refs created at the same time all succeed.
	for round := range 5 {
		ref := mustRef(t, "race:r"+string(rune('a'+round)))
		var wg sync.WaitGroup
		errs := make([]error, len(nodes))
		for i, s := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				target := baseID
				if i%2 == 1 {
					target = tunedID
				}
				errs[i] = s.UpdateRef(ref, ID{}, target, "race")
				if err := s.UpdateRef(mustRef(t, "own:n"+string(rune('0'+i))+string(rune('a'+round))), ID{}, target, "own"); err != nil {
					t.Errorf("node %d: unrelated ref: %v", i, err)
				}
			}()
		}
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrConflict):
			default:
				t.Fatalf("node %d: %v", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("round %d: %d winners (%v)", round, wins, errs)
		}
	}
	refs, err := nodes[0].Refs()
	if err != nil || len(refs) != 2+5+15 {
		t.Fatalf("%d refs, %v", len(refs), err)
	}
}

func TestSharedStoreGCAcrossNodes(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	var be backend.Backend = mem.New(mem.Options{Now: func() time.Time { return now }})
	if sharedTestBackend != nil {
		be = sharedTestBackend(t) // the server's clock: the store's clock moves past it below
	}
	opts := smallChunks
	opts.Now = clock
	nodes := sharedNodes(t, be, 3, opts)
	a, b, c := nodes[0], nodes[1], nodes[2]
	base, _, tuned, _ := family(t, testCfg())
	importDir(t, a, base, "m:base")
	importDir(t, a, tuned, "m:tuned")
	assertExportIdentical(t, b, "m:tuned", tuned) // b caches the packs
	before := remoteBytes(t, be)

	// Removing the base leaves its chunks live as the fine-tune's delta bases
	// and its commit, manifest and file objects dead: gc rewrites its packs.
	if err := a.UpdateRef(mustRef(t, "m:base"), mustGetRef(t, a, "m:base"), ID{}, "rm"); err != nil {
		t.Fatal(err)
	}
	// Young packs are kept whatever the grace says: another node may have
	// received them for a commit still to come.
	res, err := b.GC(ctx, GCOptions{Grace: -1, RepackThreshold: 0.999})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksDeleted+res.PacksRewritten != 0 || res.ProtectedByAge == 0 {
		t.Fatalf("gc touched young packs: %+v", res)
	}
	if _, err := c.Refs(); err != nil { // c indexes the packs, caches none
		t.Fatal(err)
	}
	now = now.Add(ReceivedGrace + time.Hour)
	res, err = b.GC(ctx, GCOptions{Grace: -1, RepackThreshold: 0.999})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksRewritten == 0 || res.PhysicalBefore != before || res.PhysicalAfter >= before || remoteBytes(t, be) != res.PhysicalAfter {
		t.Fatalf("gc: %+v; bucket %d bytes, %d before", res, remoteBytes(t, be), before)
	}
	// c's index still points into the packs b's gc rewrote: its reads find
	// them gone from the backend, refresh, and follow the objects.
	assertExportIdentical(t, c, "m:tuned", tuned)
	// a still has the rewritten packs in its index and cache; its next writer
	// lock (an import) refreshes and forgets them, so it never dedups against
	// objects the bucket lost.
	importDir(t, a, base, "m:base2")
	assertExportIdentical(t, b, "m:base2", base)
	assertExportIdentical(t, c, "m:base2", base)
	for _, s := range nodes {
		if res, err := s.Verify(ctx, VerifyOptions{ReadData: true}); err != nil || !res.OK {
			t.Fatalf("verify: %+v %v", res, err)
		}
	}
}

func mustGetRef(t *testing.T, s *Store, ref string) ID {
	t.Helper()
	id, err := s.Ref(mustRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestSharedStoreLocks(t *testing.T) {
	be := newSharedBackend(t)
	opts := smallChunks
	opts.LockTimeout = 300 * time.Millisecond
	opts.RemoteLockTTL = time.Second
	nodes := sharedNodes(t, be, 2, opts)
	a, b := nodes[0], nodes[1]

	w, err := a.writerLock()
	if err != nil {
		t.Fatal(err)
	}
	// Writers on other nodes share; gc waits for them and gives up busy.
	w2, err := b.writerLock()
	if err != nil {
		t.Fatalf("second writer: %v", err)
	}
	w2.Unlock()
	if _, err := b.GC(ctx, GCOptions{}); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "imports are running on other nodes") {
		t.Fatalf("gc during a writer on another node: %v", err)
	}
	// The holder keeps its lock alive past its TTL.
	time.Sleep(1500 * time.Millisecond)
	if _, err := b.GC(ctx, GCOptions{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("gc after the writer's first TTL: %v", err)
	}
	w.Unlock()
	if _, err := b.GC(ctx, GCOptions{}); err != nil {
		t.Fatalf("gc after the writer finished: %v", err)
	}
	// gc holds the exclusive lock: writers elsewhere wait and give up busy.
	g, err := a.exclusiveLock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.writerLock(); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "gc is running on another node") {
		t.Fatalf("writer during gc: %v", err)
	}
	g.Unlock()
	// A lock whose holder died expires.
	dead, err := a.acquireRemoteLock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	close(dead.stop) // the holder stops refreshing without deleting it
	dead.done.Wait()
	dead.stop = nil
	defer func(slack time.Duration) { lockClockSlack = slack }(lockClockSlack)
	lockClockSlack = 100 * time.Millisecond
	b.opts.LockTimeout = 10 * time.Second
	start := time.Now()
	if w, err := b.writerLock(); err != nil {
		t.Fatalf("writer after the dead gc's lock: %v", err)
	} else {
		w.Unlock()
	}
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Fatalf("a writer passed a live exclusive lock after %s", waited)
	}
	t.Logf("a dead holder's lock blocked a writer for %s", time.Since(start).Round(time.Millisecond))
}

func TestSharedStoreRepairIndexFromBackend(t *testing.T) {
	be := newSharedBackend(t)
	nodes := sharedNodes(t, be, 1, smallChunks)
	base, _, tuned, _ := family(t, testCfg())
	importDir(t, nodes[0], base, "m:base")
	importDir(t, nodes[0], tuned, "m:tuned")
	dir := nodes[0].Dir()
	// This node loses its index and its pack cache: the backend alone restores
	// every model.
	for _, p := range []string{"index.db", "packs"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nodes[0].Refs(); err == nil {
		if _, err := nodes[0].LoadCommit(mustGetRef(t, nodes[0], "m:base")); err == nil {
			t.Fatal("a store without its index read a commit")
		}
	}
	res, err := nodes[0].RepairIndex()
	if err != nil {
		t.Fatal(err)
	}
	if res.Packs == 0 || len(res.DamagedPacks) != 0 {
		t.Fatalf("repair: %+v", res)
	}
	assertExportIdentical(t, nodes[0], "m:base", base)
	assertExportIdentical(t, nodes[0], "m:tuned", tuned)
}

func TestSharedStoreConfig(t *testing.T) {
	be := mem.New(mem.Options{})
	dir := t.TempDir()
	s, err := Open(dir, Options{Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Reopening a shared store without its backend, or a local store with
	// one, is refused with the reason.
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "mem:") {
		t.Fatalf("open without backend: %v", err)
	}
	local := t.TempDir()
	if s, err := Open(local, Options{}); err != nil {
		t.Fatal(err)
	} else {
		s.Close()
	}
	if _, err := Open(local, Options{Backend: be}); !errors.Is(err, ErrInput) {
		t.Fatalf("open local store with a backend: %v", err)
	}
	// A bucket holding something else is not adopted.
	other := mem.New(mem.Options{})
	if _, err := other.Put(ctx, "config", strings.NewReader("{}"), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(t.TempDir(), Options{Backend: other}); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "not a heft store") {
		t.Fatalf("foreign bucket: %v", err)
	}
}

func TestSharedStorePackCache(t *testing.T) {
	be := newSharedBackend(t)
	base, _, tuned, _ := family(t, testCfg())
	// A node that keeps (almost) nothing: its reads are ranged reads of the
	// bucket.
	opts := smallChunks
	opts.PackCacheBytes = 1
	small := sharedNodes(t, be, 1, opts)[0]
	importDir(t, small, base, "m:base")
	importDir(t, small, tuned, "m:tuned")
	if n := packBytesOnDisk(t, small); n != 0 {
		t.Fatalf("a node with a 1-byte pack cache keeps %d bytes of packs", n)
	}
	assertExportIdentical(t, small, "m:tuned", tuned)
	// An unlimited cache keeps every pack the node wrote.
	opts.PackCacheBytes = -1
	big := sharedNodes(t, be, 1, opts)[0]
	importDir(t, big, base, "m:base2") // dedups: writes only the new commit
	if n := packBytesOnDisk(t, big); n == 0 || n > remoteBytes(t, be) {
		t.Fatalf("unlimited cache: %d bytes on disk, bucket %d", n, remoteBytes(t, be))
	}
	assertExportIdentical(t, big, "m:base2", base)
}

func TestSharedStoreDamagedPackInBucket(t *testing.T) {
	now := time.Now()
	be := newSharedBackend(t)
	opts := smallChunks
	opts.Now = func() time.Time { return now }
	s := sharedNodes(t, be, 1, opts)[0]
	base, _, _, _ := family(t, testCfg())
	importDir(t, s, base, "m:base")
	// Something that is not a pack appears under a pack's name (a bad copy, a
	// tool writing into the bucket): the node keeps answering, verify warns,
	// gc does not delete it.
	var junkID ID
	junkID[0] = 0xab
	junk := []byte("not a pack at all, but long enough to look at its footer........................")
	if _, err := be.Put(ctx, remotePackName(junkID), bytes.NewReader(junk), int64(len(junk))); err != nil {
		t.Fatal(err)
	}
	other, err := Open(t.TempDir(), Options{Backend: be})
	if err != nil {
		t.Fatalf("open beside a damaged pack: %v", err)
	}
	defer other.Close()
	assertExportIdentical(t, other, "m:base", base)
	res, err := other.Verify(ctx, VerifyOptions{})
	if err != nil || !res.OK || !strings.Contains(strings.Join(res.Warnings, "\n"), "cannot be indexed") {
		t.Fatalf("verify: %+v, %v", res, err)
	}
	now = now.Add(2 * ReceivedGrace)
	if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Stat(ctx, remotePackName(junkID)); err != nil {
		t.Fatalf("gc removed a damaged pack: %v", err)
	}
	if err := be.Delete(ctx, remotePackName(junkID)); err != nil { // for the final check
		t.Fatal(err)
	}
}

// Writers queued behind a gc get their turn before the next gc, and a gc
// queued behind writers gets its turn before the writers that came after it:
// neither a gc run back to back nor a stream of writers starves the other.
func TestSharedStoreLockFairness(t *testing.T) {
	be := newSharedBackend(t)
	opts := smallChunks
	opts.LockTimeout = 20 * time.Second
	nodes := sharedNodes(t, be, 3, opts)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// hammer takes a lock back to back until stop, counting the takes.
	hammer := func(what string, take func() (*storeLock, error), count *atomic.Int64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l, err := take()
				if err != nil {
					t.Errorf("%s: %v", what, err)
					return
				}
				time.Sleep(20 * time.Millisecond)
				l.Unlock()
				count.Add(1)
			}
		}()
	}
	var gcs, writes atomic.Int64
	hammer("exclusive", nodes[0].exclusiveLock, &gcs) // node 0: gc back to back
	for _, s := range nodes[1:] {
		hammer("writer", s.writerLock, &writes) // nodes 1 and 2: writers
	}
	time.Sleep(4 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("in 4 s: %d exclusive and %d shared locks taken", gcs.Load(), writes.Load())
	if gcs.Load() < 3 || writes.Load() < 3 {
		t.Fatalf("starved: %d exclusive, %d shared locks in 4 s", gcs.Load(), writes.Load())
	}
}

func TestSharedStoreInitFailureLeavesNoStore(t *testing.T) {
	dir := t.TempDir()
	broken := failingBackend{mem.New(mem.Options{})}
	if _, err := Open(dir, Options{Backend: broken}); err == nil {
		t.Fatal("open over a failing backend succeeded")
	}
	if _, exists, err := ReadConfig(dir); err != nil || exists {
		t.Fatalf("a store that never reached its backend left a config (exists %v, %v)", exists, err)
	}
	// Init again with a working backend.
	s, err := Open(dir, Options{Backend: mem.New(mem.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// failingBackend refuses every write, as a missing bucket does.
type failingBackend struct{ backend.Backend }

func (failingBackend) PutIfAbsent(context.Context, string, io.ReaderAt, int64) (backend.ObjectInfo, error) {
	return backend.ObjectInfo{}, errors.New("the specified bucket does not exist")
}
