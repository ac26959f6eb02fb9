package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/internal/vfs"
)

// Simulated power loss at every k-th filesystem operation of small workloads
// (reliability.md G2; pebble's TestDBWALRotationCrash pattern). The store's files
// live in a vfs.MemFS, which keeps only what was synced (file data) and what a
// SyncDir made durable (directory entries); the bbolt index and the locks are real
// files in a temporary directory, restored to the workload's starting state before
// each run (a bbolt commit is durable when it returns, so at a crash the index is
// exactly its last commit).
//
// For each workload the harness runs it once without a crash to count its mutating
// operations N and to learn the outcome, then for k = 0, every, 2·every, …, N−1, N
// runs it from the same starting state with the FS failing every operation after
// the k-th, crashes the FS, reopens the store and checks against an oracle kept
// outside the store (expected refs → commits → file sha256s):
//   - every ref is either as before the workload or as after it, and every ref
//     present exports byte-identical files;
//   - verify --read-data is clean;
//   - re-running the interrupted operation succeeds and gives the crash-free refs;
//   - gc with no grace leaves exactly the objects and the physical bytes a
//     crash-free run leaves, and no unindexed file;
//   - a ref change that survived has its reflog entry.
//
// The last crash point, k = N, is power loss right after the workload returned:
// all of it must survive.
//
// Besides the strict crash (only what was synced survives), every 4th crash point is
// also tried with each unsynced change surviving with probability 0.5 (real disks
// write back some of what was not synced; pebble's UnsyncedDataPercent), seeded
// by the crash point; HEFT_CRASH_UNSYNCED=0.1,0.5 tries those probabilities at
// every point.
//
// HEFT_CRASH_EVERY=K tries every K-th crash point (1: all of them, the long run);
// by default points are spaced so that each workload tries at most
// crashPointsPerWorkload (today every workload has fewer operations, so all).

const crashPointsPerWorkload = 64

type crashSnapshot struct {
	fs    *vfs.MemFS // synced state only
	index []byte     // index.db, nil: none
}

type crashHarness struct {
	t     *testing.T
	root  string // the store directory (real: index.db, locks/)
	opts  Options
	trees map[ID]map[string]string // commit → file → sha256 (the oracle)
	tmp   string
	// keeps are the unsynced-survival probabilities tried at every keepEvery-th
	// crash point besides the strict crash.
	keeps     []float64
	keepEvery int
	// reference is set during a workload's crash-free run.
	reference bool
}

// workload is one operation under test. run performs it; complete says whether its
// effect is already fully there (a re-run after a crash is then skipped, as a user
// would not repeat a finished import); always re-run when complete is nil.
type crashWorkload struct {
	name     string
	run      func(s *Store) error
	complete func(s *Store) bool
	check    func(t *testing.T, s *Store, crashed bool) // extra outcome checks
}

func TestCrashPoints(t *testing.T) {
	every := 0
	if v := os.Getenv("HEFT_CRASH_EVERY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("HEFT_CRASH_EVERY=%q: want a positive integer", v)
		}
		every = n
	} else if testing.Short() {
		t.Skip("-short: skipping the crash-point enumeration")
	}
	// Crashes that let unsynced changes survive: by default with probability 0.5
	// at every 4th crash point; HEFT_CRASH_UNSYNCED=P1,P2,... at every point.
	keeps, keepEvery := []float64{0.5}, 4
	if v := os.Getenv("HEFT_CRASH_UNSYNCED"); v != "" {
		keeps, keepEvery = nil, 1
		for _, f := range strings.Split(v, ",") {
			p, err := strconv.ParseFloat(f, 64)
			if err != nil || p < 0 || p > 1 {
				t.Fatalf("HEFT_CRASH_UNSYNCED=%q: want probabilities between 0 and 1", v)
			}
			keeps = append(keeps, p)
		}
	}
	start := time.Now()
	dirs := t.TempDir()
	base, tuned := filepath.Join(dirs, "base"), filepath.Join(dirs, "tuned")
	if err := modelgen.WriteBase(base, modelgen.Tiny(), modelgen.Options{Seed: 11, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 12, FreezeEmbeddings: true}); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 300<<10)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range blob {
		blob[i] = byte(rng.Uint32() % 7) // compressible, so packs hold encoded chunks
	}
	blobSHA := sha256Hex(blob)

	// One clock for the store and, through file times, for gc: an hour ahead, so
	// that gc with no grace sees every file as old and uploads and journals as
	// recent.
	now := time.Now().Add(time.Hour).Truncate(time.Second)
	h := &crashHarness{
		t:    t,
		root: filepath.Join(dirs, "store"),
		tmp:  filepath.Join(dirs, "exports"),
		opts: Options{ChunkSize: 16 << 10, PackSize: 64 << 10, Workers: 1, LockTimeout: 5 * time.Second,
			Now: func() time.Time { return now }},
		trees: map[ID]map[string]string{},
		keeps: keeps, keepEvery: keepEvery,
	}
	if err := os.MkdirAll(h.tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	empty := vfs.NewMemFS()
	if err := empty.MkdirAll(filepath.Dir(h.root), 0o755); err != nil {
		t.Fatal(err)
	}
	empty.SyncAll()
	snap := crashSnapshot{fs: empty}

	refBase, refTuned, refTag := mustRef(t, "org/base"), mustRef(t, "org/tuned"), mustRef(t, "org/tuned:v1")
	importAs := func(src string, ref RefName) func(*Store) error {
		return func(s *Store) error {
			res, err := s.Import(ctx, src, ImportOptions{Ref: ref})
			if err == nil {
				h.trees[res.Commit] = treeHashes(t, src)
			}
			return err
		}
	}
	refIs := func(ref RefName, want func(s *Store) ID) func(*Store) bool {
		return func(s *Store) bool {
			id, err := s.Ref(ref)
			return err == nil && id == want(s)
		}
	}
	var tunedCommit ID
	upload := func(s *Store) error {
		res, err := s.IngestResumable(ctx, "blob.bin", int64(len(blob)), ResumableOptions{
			SHA256:          blobSHA,
			CheckpointBytes: 64 << 10,
			Fetch: func(_ context.Context, off, n int64) (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(blob[off : off+n])), nil
			},
		})
		if err != nil {
			return err
		}
		return s.RecordUpload("org/up", blobSHA, res.ID)
	}
	checkUpload := func(t *testing.T, s *Store, crashed bool) {
		t.Helper()
		id, ok, err := s.Uploaded("org/up", blobSHA)
		if err != nil {
			t.Fatalf("uploaded: %v", err)
		}
		if !ok {
			if !crashed {
				t.Fatal("the upload is not recorded")
			}
			return
		}
		r, err := s.OpenFile(id)
		if err != nil {
			t.Fatalf("open uploaded file: %v", err)
		}
		hash := sha256.New()
		if _, err := io.Copy(hash, io.NewSectionReader(r, 0, int64(len(blob)))); err != nil {
			t.Fatalf("read uploaded file: %v", err)
		}
		if got := hex.EncodeToString(hash.Sum(nil)); got != blobSHA {
			t.Fatalf("uploaded file reads back as sha256 %s, want %s", got, blobSHA)
		}
	}

	workloads := []crashWorkload{
		{name: "import", run: importAs(base, refBase), complete: func(s *Store) bool { _, err := s.Ref(refBase); return err == nil }},
		{name: "import-delta", run: func(s *Store) error {
			if err := importAs(tuned, refTuned)(s); err != nil {
				return err
			}
			// The fine-tune must really be delta-coded against the base.
			var deltas int
			err := s.idx.view(func(tx *bolt.Tx) error {
				return forEachObject(tx, func(_ ID, loc Location) error {
					if loc.Codec == codecDelta {
						deltas++
					}
					return nil
				})
			})
			if err == nil && deltas == 0 {
				err = errors.New("the fine-tune stored no delta chunks")
			}
			return err
		}, complete: func(s *Store) bool { _, err := s.Ref(refTuned); return err == nil }},
		{name: "tag", run: func(s *Store) error {
			id, err := s.Ref(refTuned)
			if err != nil {
				return err
			}
			tunedCommit = id
			return s.UpdateRef(refTag, ID{}, id, "tag")
		}, complete: refIs(refTag, func(*Store) ID { return tunedCommit })},
		{name: "rm", run: func(s *Store) error {
			id, err := s.Ref(refBase)
			if err != nil {
				return err
			}
			return s.UpdateRef(refBase, id, ID{}, "rm")
		}, complete: func(s *Store) bool { _, err := s.Ref(refBase); return err != nil }},
		// The base's chunks stay (delta bases of the fine-tune); its metadata is
		// garbage, so a high repack threshold makes gc rewrite its packs.
		{name: "gc-rewrite", run: func(s *Store) error {
			res, err := s.GC(ctx, GCOptions{Grace: -1, RepackThreshold: 0.9999})
			if err == nil && res.PacksRewritten == 0 && h.reference {
				err = fmt.Errorf("gc changed nothing: %+v", res)
			}
			return err
		}},
		{name: "rm-all", run: func(s *Store) error {
			return s.UpdateRefs([]RefUpdate{{Ref: refTuned, Old: tunedCommit}, {Ref: refTag, Old: tunedCommit}}, "rm")
		}, complete: func(s *Store) bool { refs, err := s.Refs(); return err == nil && len(refs) == 0 }},
		{name: "gc-delete", run: func(s *Store) error {
			_, err := s.GC(ctx, GCOptions{Grace: -1})
			return err
		}},
		{name: "upload", run: upload, check: checkUpload},
	}
	total := 0
	for _, w := range workloads {
		n, points, next := h.runWorkload(w, snap, every)
		t.Logf("%-13s %3d mutating operations, %3d crashes tried, all reopened and verified", w.name, n, points)
		total += points
		snap = next
	}
	t.Logf("%d crashes in %s", total, time.Since(start).Round(time.Millisecond))
}

func (h *crashHarness) restore(snap crashSnapshot) *vfs.MemFS {
	h.t.Helper()
	idx := filepath.Join(h.root, "index.db")
	if snap.index == nil {
		if err := os.Remove(idx); err != nil && !errors.Is(err, fs.ErrNotExist) {
			h.t.Fatal(err)
		}
	} else {
		if err := os.MkdirAll(h.root, 0o755); err != nil {
			h.t.Fatal(err)
		}
		if err := os.WriteFile(idx, snap.index, 0o644); err != nil {
			h.t.Fatal(err)
		}
	}
	return snap.fs.CrashClone()
}

func (h *crashHarness) snapshot(fsys *vfs.MemFS) crashSnapshot {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, "index.db"))
	if err != nil {
		h.t.Fatal(err)
	}
	return crashSnapshot{fs: fsys.CrashClone(), index: b}
}

func (h *crashHarness) open(fsys vfs.FS) (*Store, error) {
	o := h.opts
	o.FS = fsys
	return Open(h.root, o)
}

func (h *crashHarness) mustOpen(fsys vfs.FS) *Store {
	h.t.Helper()
	s, err := h.open(fsys)
	if err != nil {
		h.t.Fatalf("open store: %v", err)
	}
	return s
}

func (h *crashHarness) refs(s *Store) map[RefName]ID {
	h.t.Helper()
	refs, err := s.Refs()
	if err != nil {
		h.t.Fatalf("refs: %v", err)
	}
	out := map[RefName]ID{}
	for _, r := range refs {
		out[r.Ref] = r.Commit
	}
	return out
}

// objects returns the indexed object IDs.
func (h *crashHarness) objects(s *Store) map[ID]bool {
	h.t.Helper()
	out := map[ID]bool{}
	err := s.idx.view(func(tx *bolt.Tx) error {
		return forEachObject(tx, func(id ID, _ Location) error {
			out[id] = true
			return nil
		})
	})
	if err != nil {
		h.t.Fatalf("list objects: %v", err)
	}
	return out
}

// physical returns the bytes under packs/ and fails if any file there is not an
// indexed pack of its recorded size (gc left something behind).
func (h *crashHarness) physical(t *testing.T, s *Store) int64 {
	t.Helper()
	packs := map[ID]packRecord{}
	err := s.idx.view(func(tx *bolt.Tx) error {
		return forEachPack(tx, func(id ID, rec packRecord) error {
			packs[id] = rec
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	err = vfs.Walk(s.fs, s.packsDir(), func(path string, info fs.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		n += info.Size()
		id, perr := ParseID(strings.TrimSuffix(info.Name(), ".pack"))
		if rec, ok := packs[id]; perr != nil || !ok || rec.Size != uint64(info.Size()) {
			t.Errorf("gc left %s (%d bytes), which is not an indexed pack", path, info.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (h *crashHarness) verify(t *testing.T, s *Store) {
	t.Helper()
	res, err := s.Verify(ctx, VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, d := range res.Damaged {
		t.Errorf("verify: damaged %s %s: %+v", d.Kind, d.ID.Short(), d)
	}
	if !res.OK && len(res.Damaged) == 0 {
		t.Errorf("verify not OK: %+v", res)
	}
}

// export exports ref and compares every file's sha256 with the oracle's.
func (h *crashHarness) export(t *testing.T, s *Store, ref RefName, commit ID) {
	t.Helper()
	want, ok := h.trees[commit]
	if !ok {
		t.Fatalf("%s is at commit %s, which no workload made", ref, commit.Short())
	}
	dest, err := os.MkdirTemp(h.tmp, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dest)
	dest = filepath.Join(dest, "out")
	if _, err := s.Export(ctx, ref.String(), dest, nil); err != nil {
		t.Fatalf("export %s: %v", ref, err)
	}
	got := treeHashes(t, dest)
	if len(got) != len(want) {
		t.Fatalf("export %s: %d files, want %d", ref, len(got), len(want))
	}
	for name, sum := range want {
		if got[name] != sum {
			t.Fatalf("export %s: %s has sha256 %s, want %s", ref, name, got[name], sum)
		}
	}
}

// runWorkload runs w crash-free from snap, then from snap again crashed at every
// chosen point, checking each; it returns the operation count, the crash points
// tried, and the crash-free state after w (the next workload's start).
func (h *crashHarness) runWorkload(w crashWorkload, snap crashSnapshot, every int) (int, int, crashSnapshot) {
	t := h.t
	// The crash-free run: its operation count, refs, and state after gc.
	fsys := h.restore(snap)
	pre := map[RefName]ID{}
	if snap.index != nil {
		s := h.mustOpen(fsys)
		pre = h.refs(s)
		s.Close()
	}
	start := fsys.Ops()
	s := h.mustOpen(fsys)
	h.reference = true
	err := w.run(s)
	h.reference = false
	if err != nil {
		t.Fatalf("%s: crash-free run: %v", w.name, err)
	}
	n := fsys.Ops() - start
	post := h.refs(s)
	for r, id := range post {
		h.export(t, s, r, id)
	}
	if w.check != nil {
		w.check(t, s, false)
	}
	s.Close()
	next := h.snapshot(fsys)
	s = h.mustOpen(fsys)
	if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatalf("%s: gc after the crash-free run: %v", w.name, err)
	}
	wantObjects, wantBytes := h.objects(s), h.physical(t, s)
	s.Close()

	if every == 0 {
		every = max(1, (n+crashPointsPerWorkload-1)/crashPointsPerWorkload)
	}
	// k = n: power is lost right after the workload returned; everything it
	// did must survive.
	var ks []int
	for k := 0; k < n; k += every {
		ks = append(ks, k)
	}
	if ks[len(ks)-1] < n-1 {
		ks = append(ks, n-1)
	}
	ks = append(ks, n)
	tried := 0
	for i, k := range ks {
		keeps := []float64{0}
		if i%h.keepEvery == 0 {
			keeps = append(keeps, h.keeps...)
		}
		for _, keep := range keeps {
			ok := t.Run(fmt.Sprintf("%s/crash-after-%d/keep-%g", w.name, k, keep), func(t *testing.T) {
				h.crashAt(t, w, snap, k, n, keep, pre, post, wantObjects, wantBytes)
			})
			if !ok {
				t.FailNow()
			}
			tried++
		}
	}
	return n, tried, next
}

func (h *crashHarness) crashAt(t *testing.T, w crashWorkload, snap crashSnapshot, k, n int, keep float64, pre, post map[RefName]ID, wantObjects map[ID]bool, wantBytes int64) {
	fsys := h.restore(snap)
	fsys.CrashAfter(k)
	s, err := h.open(fsys)
	if err == nil {
		err = w.run(s)
		s.Close()
	}
	if k < n && !fsys.Crashed() {
		t.Fatalf("the workload made fewer than %d operations this time (err %v)", k+1, err)
	}
	if k == n && err != nil {
		t.Fatalf("the workload failed without a crash: %v", err)
	}
	// A workload that returned success must find all its effects after the crash.
	committed := err == nil
	fsys.CrashKeeping(mrand.New(mrand.NewSource(int64(k))), keep)

	s = h.mustOpen(fsys)
	defer func() { s.Close() }()
	got := h.refs(s)
	for r := range merge(pre, post) {
		switch g := got[r]; {
		case committed && g != post[r]:
			t.Fatalf("the workload returned success, but after the crash %s is %s, not %s", r, g.Short(), post[r].Short())
		case g != pre[r] && g != post[r]:
			t.Fatalf("after the crash %s is %s: neither %s (before) nor %s (after)", r, g.Short(), pre[r].Short(), post[r].Short())
		}
	}
	// A ref change that survived has its reflog entry (written before the refs).
	for r := range merge(pre, post) {
		if pre[r] != post[r] && got[r] == post[r] {
			h.reflogHas(t, s, r, post[r])
		}
	}
	for r, id := range got {
		if _, ok := merge(pre, post)[r]; !ok {
			t.Fatalf("after the crash an unexpected ref %s exists", r)
		}
		h.export(t, s, r, id)
	}
	h.verify(t, s)
	if w.check != nil {
		w.check(t, s, !committed)
	}

	// Re-run the interrupted operation.
	if w.complete == nil || !w.complete(s) {
		if err := w.run(s); err != nil {
			t.Fatalf("re-run after the crash: %v", err)
		}
	}
	if got := h.refs(s); !sameRefs(got, post) {
		t.Fatalf("after the re-run refs are %v, want %v", got, post)
	}
	if w.check != nil {
		w.check(t, s, false)
	}
	if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatalf("gc: %v", err)
	}
	objs := h.objects(s)
	for id := range wantObjects {
		if !objs[id] {
			t.Errorf("after re-run and gc object %s is missing", id.Short())
		}
	}
	for id := range objs {
		if !wantObjects[id] {
			t.Errorf("after re-run and gc object %s remains, which a crash-free run does not keep", id.Short())
		}
	}
	if phys := h.physical(t, s); phys != wantBytes {
		t.Errorf("after re-run and gc the packs hold %d bytes, after a crash-free run %d", phys, wantBytes)
	}
	h.verify(t, s)
	for r, id := range post {
		h.export(t, s, r, id)
	}
}

// reflogHas fails unless the reflog records that r moved to id (zero: deleted).
func (h *crashHarness) reflogHas(t *testing.T, s *Store, r RefName, id ID) {
	t.Helper()
	entries, err := s.Reflog(&r)
	if err != nil {
		t.Fatalf("reflog: %v", err)
	}
	want := ""
	if !id.IsZero() {
		want = id.String()
	}
	for _, e := range entries {
		if e.New == want {
			return
		}
	}
	t.Fatalf("%s is at %s after the crash, but the reflog does not record the change (%d entries)", r, id.Short(), len(entries))
}

func merge(a, b map[RefName]ID) map[RefName]bool {
	out := map[RefName]bool{}
	for r := range a {
		out[r] = true
	}
	for r := range b {
		out[r] = true
	}
	return out
}

func sameRefs(a, b map[RefName]ID) bool {
	if len(a) != len(b) {
		return false
	}
	for r, id := range a {
		if b[r] != id {
			return false
		}
	}
	return true
}

// TestCrashKeepsResumePoint: the progress an interrupted IngestResumable reports
// as durable (ResumePoint) survives power loss. Before the fix the journal
// directory, created by the first checkpoint, was never made durable in the store
// directory, so a crash lost every journal and the next call fetched everything.
func TestCrashKeepsResumePoint(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	fsys := vfs.NewMemFS()
	if err := fsys.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		t.Fatal(err)
	}
	fsys.SyncAll()
	opts := Options{ChunkSize: 16 << 10, PackSize: 256 << 10, FS: fsys}
	s, err := Open(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 5<<20)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	f := &failingFetch{data: blob, failAt: 4 << 20}
	ro := ResumableOptions{SHA256: sha256Hex(blob), Fetch: f.fetch, CheckpointBytes: 64 << 10}
	if _, err := s.IngestResumable(ctx, "blob.bin", int64(len(blob)), ro); !errors.Is(err, errCut) {
		t.Fatalf("cut ingest: %v", err)
	}
	before, err := s.ResumePoint(ro.SHA256)
	if err != nil || before == 0 {
		t.Fatalf("resume point before the crash: %d, %v", before, err)
	}
	s.Close()
	fsys.Crash()
	s, err = Open(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	after, err := s.ResumePoint(ro.SHA256)
	if err != nil || after != before {
		t.Fatalf("resume point after the crash: %d, %v; before it: %d", after, err, before)
	}
	f.failAt = -1
	res, err := s.IngestResumable(ctx, "blob.bin", int64(len(blob)), ro)
	if err != nil || res.Resumed != before {
		t.Fatalf("resumed ingest: %+v, %v", res, err)
	}
	CheckStore(t, s)
}
