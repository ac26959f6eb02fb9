package store

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/modelgen"
)

func TestGCRemovesOnlyUnreachable(t *testing.T) {
	skipIfShared(t, "gc of a shared store keeps every pack younger than ReceivedGrace (TestSharedStoreGCAcrossNodes covers it)")
	s := TestStore(t, smallChunks)
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	modelgen.WriteBase(a, testCfg(), modelgen.Options{Seed: 1, Shards: 2})
	modelgen.FineTune(a, b, modelgen.FineTuneOptions{Seed: 3, FreezeEmbeddings: true})
	importDir(t, s, a, "org/a")
	// Without a delta base, so that b needs none of a's chunks.
	rb, err := s.Import(ctx, b, ImportOptions{Ref: mustRef(t, "org/b"), NoDelta: true})
	if err != nil {
		t.Fatal(err)
	}
	before := packBytesOnDisk(t, s)

	// Nothing is garbage yet.
	res, err := s.GC(ctx, GCOptions{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksDeleted+res.PacksRewritten+res.OrphanPacks != 0 || packBytesOnDisk(t, s) != before {
		t.Fatalf("gc with everything live removed data: %+v", res)
	}
	if err := s.UpdateRef(mustRef(t, "org/a"), mustResolve(t, s, "org/a"), ID{}, "rm"); err != nil {
		t.Fatal(err)
	}
	// Within the grace period, nothing goes.
	res, err = s.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BytesFreed != 0 {
		t.Fatalf("gc inside grace freed %d", res.BytesFreed)
	}
	dry, err := s.GC(ctx, GCOptions{Grace: -1, DryRun: true})
	if err != nil || dry.BytesFreed == 0 || packBytesOnDisk(t, s) != before {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	res, err = s.GC(ctx, GCOptions{Grace: -1})
	if err != nil {
		t.Fatal(err)
	}
	after := packBytesOnDisk(t, s)
	if res.BytesFreed == 0 || after >= before {
		t.Fatalf("gc freed nothing: %+v", res)
	}
	// What remains is about what b alone needs (its own data plus the shared embedding).
	if after > rb.Stats.PackBytes+rb.Stats.PackBytes/2 {
		t.Errorf("after gc %d bytes remain; b needs about %d", after, rb.Stats.PackBytes)
	}
	assertExportIdentical(t, s, "org/b", b)
}

func mustResolve(t testing.TB, s *Store, ref string) ID {
	t.Helper()
	id, err := s.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestGCConcurrentWithImport runs gc repeatedly (no grace) while imports run; the
// writer lock makes gc wait for them, so nothing they reuse or write is lost.
func TestGCConcurrentWithImport(t *testing.T) {
	s := TestStore(t, smallChunks)
	root := t.TempDir()
	var dirs []string
	for i := range 4 {
		d := filepath.Join(root, string(rune('a'+i)))
		if i == 0 {
			modelgen.WriteBase(d, testCfg(), modelgen.Options{Seed: 1, Shards: 2})
		} else {
			modelgen.FineTune(dirs[0], d, modelgen.FineTuneOptions{Seed: uint64(i), FreezeEmbeddings: i%2 == 0})
		}
		dirs = append(dirs, d)
	}
	importDir(t, s, dirs[0], "org/m0")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
				t.Errorf("gc: %v", err)
				return
			}
			time.Sleep(5 * time.Millisecond) // let the importer take its lock
		}
	}()
	for i := 1; i < len(dirs); i++ {
		importDir(t, s, dirs[i], "org/m"+string(rune('0'+i)))
		// Drop the previous model so gc has garbage to chase.
		if i > 1 {
			prev := "org/m" + string(rune('0'+i-1))
			if err := s.UpdateRef(mustRef(t, prev), mustResolve(t, s, prev), ID{}, "rm"); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	assertExportIdentical(t, s, "org/m0", dirs[0])
	assertExportIdentical(t, s, "org/m3", dirs[3])
}

func TestGCRefusesWithMissingPack(t *testing.T) {
	skipIfShared(t, "deletes a local pack file by hand (a shared store fetches it again from the backend)")
	s := TestStore(t, smallChunks)
	s.SkipCleanupCheck()
	base, _, _, _ := family(t, testCfg())
	importDir(t, s, base, "org/base")
	packs, _ := filepath.Glob(filepath.Join(s.Dir(), "packs", "*", "*.pack"))
	if len(packs) == 0 {
		t.Fatal("no packs")
	}
	if err := os.Remove(packs[0]); err != nil {
		t.Fatal(err)
	}
	before := packBytesOnDisk(t, s)
	_, err := s.GC(ctx, GCOptions{Grace: -1})
	wantErr(t, err, ErrIntegrity)
	if packBytesOnDisk(t, s) != before {
		t.Fatal("gc deleted data while refusing to run")
	}
	res, err := s.Verify(ctx, VerifyOptions{})
	if err != nil || res.OK {
		t.Fatalf("verify after losing a pack: ok=%v err=%v", res.OK, err)
	}
}
