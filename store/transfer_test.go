package store

import (
	"errors"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/modelgen"
)

// baseAndTune writes a base model and a fine-tune of it (every tensor changed) and
// returns their directories.
func baseAndTune(t *testing.T) (base, tuned string) {
	t.Helper()
	root := t.TempDir()
	base, tuned = filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := modelgen.WriteBase(base, testCfg(), modelgen.Options{Seed: 11, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 12, DeltaScale: 0.01}); err != nil {
		t.Fatal(err)
	}
	return base, tuned
}

// plan is what a sender works out for one commit: the objects dst lacks, bases
// first, then chunks, then metadata children before parents.
func plan(t *testing.T, src, dst *Store, commit ID, usable func(ID) (bool, error)) (bases, rest []ID) {
	t.Helper()
	hist, err := src.History(commit, 0)
	if err != nil {
		t.Fatal(err)
	}
	refs := make([]ObjectRef, len(hist))
	for i, c := range hist {
		refs[i] = ObjectRef{ID: c, Kind: KindCommit}
	}
	st, err := dst.Presence(refs, usable)
	if err != nil {
		t.Fatal(err)
	}
	var need, absentCommits []ID
	for i, c := range hist {
		if st[i] != Complete {
			need = append(need, c)
		}
		if st[i] == Absent {
			absentCommits = append(absentCommits, c)
		}
	}
	trees, err := src.TreeObjects(need)
	if err != nil {
		t.Fatal(err)
	}
	tst, err := dst.Presence(trees, usable)
	if err != nil {
		t.Fatal(err)
	}
	var incomplete, absentTrees []ID
	for i, o := range trees {
		if tst[i] != Complete && o.Kind != KindManifest {
			incomplete = append(incomplete, o.ID)
		}
		if tst[i] == Absent {
			absentTrees = append(absentTrees, o.ID)
		}
	}
	links, err := src.ChunkLinks(incomplete)
	if err != nil {
		t.Fatal(err)
	}
	var ask []ObjectRef
	for _, l := range links {
		ask = append(ask, ObjectRef{ID: l.ID, Kind: KindChunk})
		if !l.Base.IsZero() {
			ask = append(ask, ObjectRef{ID: l.Base, Kind: KindChunk})
		}
	}
	cst, err := dst.Presence(ask, usable)
	if err != nil {
		t.Fatal(err)
	}
	have := map[ID]Presence{}
	for i, o := range ask {
		have[o.ID] = cst[i]
	}
	seen := map[ID]bool{}
	for _, l := range links {
		if have[l.ID] != Absent {
			continue
		}
		if !l.Base.IsZero() && have[l.Base] == Absent && !seen[l.Base] {
			seen[l.Base] = true
			bases = append(bases, l.Base)
		}
		rest = append(rest, l.ID)
	}
	rest = append(rest, absentTrees...)
	for i := len(absentCommits) - 1; i >= 0; i-- {
		rest = append(rest, absentCommits[i])
	}
	return bases, rest
}

// send moves ids from src to dst with ReceiveObjects.
func send(t *testing.T, src, dst *Store, ids []ID, ns string) ReceiveStats {
	t.Helper()
	i := 0
	stats, err := dst.ReceiveObjects(ctx, ReceiveOptions{Namespace: ns}, func() (StoredObject, error) {
		if i == len(ids) {
			return StoredObject{}, io.EOF
		}
		o, err := src.ReadStored(ids[i], nil)
		i++
		return o, err
	})
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return stats
}

func TestTransferFineTuneMovesOnlyDeltas(t *testing.T) {
	baseDir, tunedDir := baseAndTune(t)
	src := TestStore(t, smallChunks)
	dst := TestStore(t, smallChunks)
	importDir(t, src, baseDir, "acme/base")
	tuned := importDir(t, src, tunedDir, "acme/tuned")
	baseCommit, _ := src.Ref(mustRef(t, "acme/base"))

	// dst gets the base first: everything moves.
	bases, rest := plan(t, src, dst, baseCommit, nil)
	if len(bases) != 0 {
		t.Fatalf("base model plan has %d delta bases", len(bases))
	}
	send(t, src, dst, rest, "")
	if err := dst.UpdateRefVerified(RefChange{Ref: mustRef(t, "acme/base"), New: baseCommit}); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, dst, "acme/base", baseDir)

	// Then the fine-tune: only its chunks (deltas against the base) and metadata.
	bases, rest = plan(t, src, dst, tuned.Commit, nil)
	if len(bases) != 0 {
		t.Fatalf("dst has the base, yet %d bases would move", len(bases))
	}
	var deltas, storedBytes int64
	for _, id := range rest {
		o, err := src.ReadStored(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		storedBytes += int64(len(o.Data))
		if o.Codec == CodecDelta {
			deltas++
		}
	}
	if deltas == 0 {
		t.Fatal("no delta chunks in the fine-tune's plan")
	}
	stats := send(t, src, dst, rest, "")
	if stats.Objects != len(rest) || stats.New != len(rest) || stats.StoredBytes != storedBytes {
		t.Fatalf("receive stats %+v, sent %d objects of %d bytes", stats, len(rest), storedBytes)
	}
	// Stored exactly as sent: verbatim, no re-encoding.
	if stats.NewBytes != storedBytes {
		t.Fatalf("wrote %d bytes for %d received", stats.NewBytes, storedBytes)
	}
	if err := dst.UpdateRefVerified(RefChange{Ref: mustRef(t, "acme/tuned"), New: tuned.Commit}); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, dst, "acme/tuned", tunedDir)

	// Nothing is left to move.
	bases, rest = plan(t, src, dst, tuned.Commit, nil)
	if len(bases)+len(rest) != 0 {
		t.Fatalf("after the transfer %d objects still planned", len(bases)+len(rest))
	}
}

func TestTransferSendsBaseFirst(t *testing.T) {
	baseDir, tunedDir := baseAndTune(t)
	src := TestStore(t, smallChunks)
	dst := TestStore(t, smallChunks)
	importDir(t, src, baseDir, "acme/base")
	tuned := importDir(t, src, tunedDir, "acme/tuned")

	bases, rest := plan(t, src, dst, tuned.Commit, nil)
	if len(bases) == 0 {
		t.Fatal("dst lacks the base, yet no delta bases are planned")
	}
	// A delta before its base is refused as incomplete, and nothing is indexed for it.
	var delta ID
	for _, id := range rest {
		if o, _ := src.ReadStored(id, nil); o.Codec == CodecDelta {
			delta = id
			break
		}
	}
	_, err := dst.ReceiveObjects(ctx, ReceiveOptions{}, oneObject(t, src, delta))
	wantErr(t, err, ErrIncomplete)
	if pr, _ := dst.Presence([]ObjectRef{{ID: delta, Kind: KindChunk}}, nil); pr[0] != Absent {
		t.Fatalf("refused delta is %s", pr[0])
	}

	send(t, src, dst, bases, "")
	send(t, src, dst, rest, "")
	if err := dst.UpdateRefVerified(RefChange{Ref: mustRef(t, "acme/tuned"), New: tuned.Commit}); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, dst, "acme/tuned", tunedDir)
}

func oneObject(t *testing.T, s *Store, id ID) func() (StoredObject, error) {
	done := false
	return func() (StoredObject, error) {
		if done {
			return StoredObject{}, io.EOF
		}
		done = true
		o, err := s.ReadStored(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		return o, nil
	}
}

func TestReceiveRejectsBadObjects(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if err := modelgen.WriteBase(dir, testCfg(), modelgen.Options{Seed: 3}); err != nil {
		t.Fatal(err)
	}
	src := TestStore(t, smallChunks)
	dst := TestStore(t, smallChunks)
	res := importDir(t, src, dir, "m")
	_, rest := plan(t, src, dst, res.Commit, nil)
	var chunk, tensor StoredObject
	for _, id := range rest {
		o, err := src.ReadStored(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if o.Kind == KindChunk && chunk.Data == nil && len(o.Data) > 100 {
			chunk = o
		}
		if o.Kind == KindTensor && tensor.Data == nil {
			tensor = o
		}
	}
	clone := func(o StoredObject) StoredObject {
		o.Data = append([]byte(nil), o.Data...)
		return o
	}
	flipped := clone(chunk)
	flipped.Data[len(flipped.Data)/2] ^= 0x10
	wrongKind := clone(chunk)
	wrongKind.Kind = KindTensor
	unknownKind := clone(chunk)
	unknownKind.Kind = 9
	wrongLen := clone(chunk)
	wrongLen.RawLen++
	otherID := clone(chunk)
	otherID.ID = tensor.ID
	garbage := []byte(objectMagic[KindTensor] + `{"dtype":"BF16","bogus":1}` + "\n")
	notParsing := StoredObject{ID: Sum(garbage), Kind: KindTensor, Codec: 0, RawLen: uint64(len(garbage)), Data: garbage}
	for name, o := range map[string]StoredObject{
		"flipped byte": flipped, "wrong kind": wrongKind, "unknown kind": unknownKind,
		"wrong length": wrongLen, "other id": otherID, "metadata that does not parse": notParsing,
	} {
		t.Run(name, func(t *testing.T) {
			sent := false
			_, err := dst.ReceiveObjects(ctx, ReceiveOptions{Namespace: "acme"}, func() (StoredObject, error) {
				if sent {
					return StoredObject{}, io.EOF
				}
				sent = true
				return o, nil
			})
			wantErr(t, err, ErrIntegrity)
			pr, err := dst.Presence([]ObjectRef{{ID: o.ID, Kind: o.Kind}}, nil)
			if err != nil || pr[0] != Absent {
				t.Fatalf("refused object is %v (%v)", pr, err)
			}
			if ok, _ := dst.Received("acme", o.ID); ok {
				t.Fatal("refused object recorded as received")
			}
		})
	}
	if refs, _ := dst.Refs(); len(refs) != 0 {
		t.Fatalf("dst has refs %v", refs)
	}
}

func TestReceiveKeepsWhatArrivedBeforeAnError(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if err := modelgen.WriteBase(dir, testCfg(), modelgen.Options{Seed: 4}); err != nil {
		t.Fatal(err)
	}
	src := TestStore(t, smallChunks)
	dst := TestStore(t, smallChunks)
	res := importDir(t, src, dir, "m")
	_, rest := plan(t, src, dst, res.Commit, nil)
	cut := len(rest) / 2
	errCut := errors.New("connection reset")
	i := 0
	stats, err := dst.ReceiveObjects(ctx, ReceiveOptions{Namespace: "acme"}, func() (StoredObject, error) {
		if i == cut {
			return StoredObject{}, errCut
		}
		o, err := src.ReadStored(rest[i], nil)
		i++
		return o, err
	})
	if !errors.Is(err, errCut) || stats.Objects != cut {
		t.Fatalf("got %v after %d objects, want the cut after %d", err, stats.Objects, cut)
	}
	for _, id := range rest[:cut] {
		if ok, err := dst.Received("acme", id); err != nil || !ok {
			t.Fatalf("object before the cut not recorded (%v)", err)
		}
	}
	if err := dst.UpdateRefVerified(RefChange{Ref: mustRef(t, "m"), New: res.Commit}); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("update with half the objects: %v", err)
	}
	_, again := plan(t, src, dst, res.Commit, nil)
	if len(again) != len(rest)-cut {
		t.Fatalf("after the cut %d objects planned, want %d", len(again), len(rest)-cut)
	}
	send(t, src, dst, again, "")
	if err := dst.UpdateRefVerified(RefChange{Ref: mustRef(t, "m"), New: res.Commit}); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, dst, "m", dir)
}

func TestPresenceLevelsAndUsable(t *testing.T) {
	baseDir, tunedDir := baseAndTune(t)
	s := TestStore(t, smallChunks)
	importDir(t, s, baseDir, "acme/base")
	tuned := importDir(t, s, tunedDir, "acme/tuned")
	pr, err := s.Presence([]ObjectRef{{ID: tuned.Commit, Kind: KindCommit}, {ID: tuned.Commit, Kind: KindTensor}, {ID: Sum([]byte("x")), Kind: KindChunk}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pr[0] != Complete || pr[1] != Absent || pr[2] != Absent {
		t.Fatalf("presence %v", pr)
	}
	closure, err := s.Closure(tuned.Commit)
	if err != nil {
		t.Fatal(err)
	}
	// Without the delta bases (the base model's chunks) the fine-tune is
	// incomplete: a reader could not decode it.
	links, err := s.ChunkLinks(treeIDs(t, s, tuned.Commit))
	if err != nil {
		t.Fatal(err)
	}
	bases := map[ID]bool{}
	for _, l := range links {
		if !l.Base.IsZero() {
			bases[l.Base] = true
			if _, ok := closure[l.Base]; !ok {
				t.Fatalf("closure lacks delta base %s", l.Base.Short())
			}
		}
	}
	if len(bases) == 0 {
		t.Fatal("fine-tune has no delta chunks")
	}
	noBases := func(id ID) (bool, error) { return !bases[id], nil }
	pr, err = s.Presence([]ObjectRef{{ID: tuned.Commit, Kind: KindCommit}}, noBases)
	if err != nil || pr[0] != Incomplete {
		t.Fatalf("presence without bases %v (%v)", pr, err)
	}
	err = s.UpdateRefVerified(RefChange{Ref: mustRef(t, "acme/copy"), New: tuned.Commit, Usable: noBases})
	wantErr(t, err, ErrIncomplete)
	if err := s.UpdateRefVerified(RefChange{Ref: mustRef(t, "acme/copy"), New: tuned.Commit}); err != nil {
		t.Fatal(err)
	}
	// Not a fast-forward: base and tuned are unrelated histories.
	baseCommit, _ := s.Ref(mustRef(t, "acme/base"))
	err = s.UpdateRefVerified(RefChange{Ref: mustRef(t, "acme/copy"), Old: tuned.Commit, New: baseCommit})
	wantErr(t, err, ErrConflict)
	// A stale expectation loses the compare-and-swap.
	err = s.UpdateRefVerified(RefChange{Ref: mustRef(t, "acme/copy"), Old: baseCommit, New: baseCommit, Force: true})
	wantErr(t, err, ErrConflict)
	if err := s.UpdateRefVerified(RefChange{Ref: mustRef(t, "acme/copy"), Old: tuned.Commit, New: baseCommit, Force: true}); err != nil {
		t.Fatal(err)
	}
}

func treeIDs(t *testing.T, s *Store, commit ID) []ID {
	t.Helper()
	trees, err := s.TreeObjects([]ID{commit})
	if err != nil {
		t.Fatal(err)
	}
	var ids []ID
	for _, o := range trees {
		if o.Kind == KindFile || o.Kind == KindTensor {
			ids = append(ids, o.ID)
		}
	}
	return ids
}

func TestHistoryAndTreeOrder(t *testing.T) {
	a, b := baseAndTune(t)
	s := TestStore(t, smallChunks)
	first := importDir(t, s, a, "m")
	second := importDir(t, s, b, "m")
	hist, err := s.History(second.Commit, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0] != second.Commit || hist[1] != first.Commit {
		t.Fatalf("history %v", hist)
	}
	if _, err := s.History(second.Commit, 1); !errors.Is(err, ErrInput) {
		t.Fatalf("history over its limit: %v", err)
	}
	trees, err := s.TreeObjects([]ID{second.Commit})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[ID]int{}
	for i, o := range trees {
		pos[o.ID] = i
	}
	for _, o := range trees {
		if o.Kind != KindFile {
			continue
		}
		f, err := s.LoadFile(o.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, ft := range f.Tensor {
			if pos[ft.Tensor] > pos[o.ID] {
				t.Fatalf("tensor %s listed after its file", ft.Name)
			}
		}
	}
	if trees[len(trees)-1].Kind != KindManifest {
		t.Fatalf("last tree object is a %s", trees[len(trees)-1].Kind)
	}
}

// A chunk whose base is delta-coded in the receiver is re-coded against that base's
// own base, so chains stay one level deep.
func TestReceiveRecodesDeltaOfDelta(t *testing.T) {
	root := t.TempDir()
	base, t1, t2 := filepath.Join(root, "base"), filepath.Join(root, "t1"), filepath.Join(root, "t2")
	if err := modelgen.WriteBase(base, testCfg(), modelgen.Options{Seed: 21}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, t1, modelgen.FineTuneOptions{Seed: 22, DeltaScale: 0.01}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(t1, t2, modelgen.FineTuneOptions{Seed: 23, DeltaScale: 0.01}); err != nil {
		t.Fatal(err)
	}
	// src: t1 plain, t2 as deltas against t1. dst: t1 as deltas against base.
	src := TestStore(t, smallChunks)
	importDir(t, src, t1, "t1")
	r2, err := src.Import(ctx, t2, ImportOptions{Ref: mustRef(t, "t2"), Base: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	dst := TestStore(t, smallChunks)
	importDir(t, dst, base, "base")
	if _, err := dst.Import(ctx, t1, ImportOptions{Ref: mustRef(t, "t1"), Base: "base"}); err != nil {
		t.Fatal(err)
	}
	bases, rest := plan(t, src, dst, r2.Commit, nil)
	if len(bases) != 0 {
		t.Fatalf("dst has t1, yet %d bases planned", len(bases))
	}
	send(t, src, dst, rest, "")
	if err := dst.UpdateRefVerified(RefChange{Ref: mustRef(t, "t2"), New: r2.Commit}); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, dst, "t2", t2)
	links, err := dst.ChunkLinks(treeIDs(t, dst, r2.Commit))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Base.IsZero() {
			continue
		}
		o, err := dst.ReadStored(l.Base, nil)
		if err != nil {
			t.Fatal(err)
		}
		if o.Codec == CodecDelta {
			t.Fatalf("chunk %s is a delta of delta %s", l.ID.Short(), l.Base.Short())
		}
	}
}

// A model stored as recipes over another model's tensors needs those tensors: the
// tree, the closure and the plan include them, and the receiver reads the recipes.
func TestTransferRecipeModelBringsItsInputs(t *testing.T) {
	root := t.TempDir()
	base, fp8 := filepath.Join(root, "base"), filepath.Join(root, "fp8")
	if err := modelgen.WriteBase(base, testCfg(), modelgen.Options{Seed: 31}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.WriteFP8Block(base, fp8); err != nil {
		t.Fatal(err)
	}
	src := TestStore(t, smallChunks)
	importDir(t, src, base, "org/base")
	res := importDir(t, src, fp8, "org/fp8")
	if res.RecipeTensors == 0 {
		t.Fatal("the FP8 model was not stored as recipes")
	}
	dst := TestStore(t, smallChunks)
	bases, rest := plan(t, src, dst, res.Commit, nil)
	send(t, src, dst, bases, "")
	send(t, src, dst, rest, "")
	if err := dst.UpdateRefVerified(RefChange{Ref: mustRef(t, "org/fp8"), New: res.Commit}); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, dst, "org/fp8", fp8)
}

// Objects received before the ref moves are protected by gc's grace period; with
// no grace gc removes them, and the ref update, checked under the writer lock,
// refuses to point at what is gone until it is sent again.
func TestReceivedObjectsAndGC(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if err := modelgen.WriteBase(dir, testCfg(), modelgen.Options{Seed: 41}); err != nil {
		t.Fatal(err)
	}
	src := TestStore(t, smallChunks)
	var skew atomic.Int64 // added to dst's clock
	dstOpts := smallChunks
	dstOpts.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	dst := TestStore(t, dstOpts)
	res := importDir(t, src, dir, "m")
	_, rest := plan(t, src, dst, res.Commit, nil)
	send(t, src, dst, rest[:len(rest)/2], "acme")
	if _, err := dst.GC(ctx, GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, again := plan(t, src, dst, res.Commit, nil); len(again) != len(rest)-len(rest)/2 {
		t.Fatalf("gc within the grace period removed received objects: %d planned, want %d", len(again), len(rest)-len(rest)/2)
	}
	send(t, src, dst, rest[len(rest)/2:], "acme")
	// gc keeps what was received within ReceivedGrace, even with no grace for
	// packs: a push slower than gc's grace keeps what it sent.
	if _, err := dst.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	if _, again := plan(t, src, dst, res.Commit, nil); len(again) != 0 {
		t.Fatalf("gc removed %d received objects within ReceivedGrace", len(again))
	}
	// A day later the records have expired and gc takes the unreferenced objects.
	skew.Store(int64(ReceivedGrace + time.Hour))
	if _, err := dst.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	skew.Store(0)
	err := dst.UpdateRefVerified(RefChange{Ref: mustRef(t, "m"), New: res.Commit})
	wantErr(t, err, ErrIncomplete)
	// The records outlive the objects; they do not make them present.
	if ok, _ := dst.Received("acme", rest[0]); !ok {
		t.Fatal("record gone")
	}
	_, again := plan(t, src, dst, res.Commit, nil)
	if len(again) != len(rest) {
		t.Fatalf("after gc %d objects planned, want %d", len(again), len(rest))
	}
	send(t, src, dst, again, "acme")
	if err := dst.UpdateRefVerified(RefChange{Ref: mustRef(t, "m"), New: res.Commit}); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, dst, "m", dir)
	if _, err := dst.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	assertExportIdentical(t, dst, "m", dir)
}

// Malformed metadata that hashes and parses is refused at the ref update, not
// published: a chunk of another size than the tensor says, a path that escapes.
func TestUpdateRefRefusesMalformedMetadata(t *testing.T) {
	s := TestStore(t, smallChunks)
	chunk := []byte("0123456789abcdef")
	var chunkID ID
	_, err := s.withSession(ctx, func(sess *session) error {
		ids, err := sess.putChunks([]unit{{data: chunk}})
		chunkID = ids[0]
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	put := func(kind Kind, v any) ID {
		t.Helper()
		var id ID
		_, err := s.withSession(ctx, func(sess *session) error {
			var err error
			id, err = sess.put(kind, v)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	commitOf := func(files ...ManifestEntry) ID {
		m := put(KindManifest, &Manifest{Files: files})
		return put(KindCommit, &Commit{Manifest: m, Time: "2026-01-01T00:00:00Z", Provenance: Provenance{Op: "test"}})
	}
	blob := func(size uint64) ID {
		return put(KindFile, &File{Format: FormatBlob, Size: size, SHA256: "00", Chunks: []ChunkRef{{ID: chunkID, Size: size}}})
	}
	for name, c := range map[string]ID{
		"chunk size":       commitOf(ManifestEntry{Path: "a.bin", File: blob(99), Size: 99}),
		"path escapes":     commitOf(ManifestEntry{Path: "../a.bin", File: blob(16), Size: 16}),
		"unsorted":         commitOf(ManifestEntry{Path: "b", File: blob(16), Size: 16}, ManifestEntry{Path: "a", File: blob(16), Size: 16}),
		"manifest size":    commitOf(ManifestEntry{Path: "a.bin", File: blob(16), Size: 17}),
		"file and its dir": commitOf(ManifestEntry{Path: "a", File: blob(16), Size: 16}, ManifestEntry{Path: "a/b", File: blob(16), Size: 16}),
	} {
		err := s.UpdateRefVerified(RefChange{Ref: mustRef(t, "x"), New: c})
		if !errors.Is(err, ErrInput) {
			t.Errorf("%s: %v", name, err)
		}
	}
	good := commitOf(ManifestEntry{Path: "a.bin", File: blob(16), Size: 16})
	if err := s.UpdateRefVerified(RefChange{Ref: mustRef(t, "x"), New: good}); err != nil {
		t.Fatal(err)
	}
	s.SkipCleanupCheck() // sha256 "00" is not the blob's hash; verify would say so
}

// FuzzReceiveObject feeds arbitrary stored forms to the receive path's verifier:
// it must never panic, and must accept only objects whose decoded bytes hash to
// their ID and, for metadata, parse.
func FuzzReceiveObject(f *testing.F) {
	s := TestStore(f, smallChunks)
	dir := filepath.Join(f.TempDir(), "m")
	if err := modelgen.WriteBase(dir, testCfg(), modelgen.Options{Seed: 51}); err != nil {
		f.Fatal(err)
	}
	res, err := s.Import(ctx, dir, ImportOptions{Ref: mustRef(f, "m")})
	if err != nil {
		f.Fatal(err)
	}
	cl, err := s.Closure(res.Commit)
	if err != nil {
		f.Fatal(err)
	}
	n := 0
	for id := range cl {
		o, err := s.ReadStored(id, nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(o.Kind), o.Codec, uint32(o.RawLen), false, o.Data)
		if n++; n > 8 {
			break
		}
	}
	delta := append([]byte{deltaVersion}, make([]byte, 33)...)
	f.Add(uint8(KindChunk), codecDelta, uint32(16), true, delta)
	f.Add(uint8(KindTensor), uint8(0), uint32(20), true, []byte(objectMagic[KindTensor]+"{}\n"))
	f.Fuzz(func(t *testing.T, kind, codec uint8, rawLen uint32, idFromData bool, data []byte) {
		o := StoredObject{Kind: Kind(kind), Codec: codec, RawLen: uint64(rawLen % (4 << 20)), Data: data}
		if idFromData {
			o.ID = Sum(data) // reaches the parse checks for raw metadata
		} else if len(data) >= 32 {
			copy(o.ID[:], data)
		}
		out, _, err := s.verifyStored(o, nil, nil)
		if err != nil {
			return
		}
		if Sum(out) != o.ID || uint64(len(out)) != o.RawLen {
			t.Fatalf("accepted an object that does not decode to its id")
		}
	})
}
