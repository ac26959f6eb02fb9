package store

import (
	"io"
	"testing"

	"github.com/heft-dev/heft/internal/modelgen"
)

func modelgenCopy(src, dst string) error { return modelgen.CopyDir(src, dst) }

// TestReadAcrossGCRewrite opens a file, lets gc rewrite and delete the packs it
// was located in, then reads it: the reader must find the objects where gc moved
// them, not fail.
func TestReadAcrossGCRewrite(t *testing.T) {
	skipIfShared(t, "gc of a shared store keeps every pack younger than ReceivedGrace")
	s := TestStore(t, Options{ChunkSize: 16 << 10, PackSize: 1 << 30})
	base, _, tuned, _ := family(t, testCfg())
	// One pack holding both models: dropping the tuned one leaves it part live.
	both := t.TempDir()
	if err := modelgenCopy(base, both+"/base"); err != nil {
		t.Fatal(err)
	}
	if err := modelgenCopy(tuned, both+"/tuned"); err != nil {
		t.Fatal(err)
	}
	importDir(t, s, both, "org/tuned")
	importDir(t, s, base, "org/base")
	commit, _ := s.Ref(mustRef(t, "org/base"))
	files, err := s.CommitFiles(commit)
	if err != nil {
		t.Fatal(err)
	}
	var readers []*FileReader
	for _, f := range files {
		fr, err := s.OpenFile(f.ID)
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, fr)
	}
	if err := s.UpdateRef(mustRef(t, "org/tuned"), mustResolve(t, s, "org/tuned"), ID{}, "rm"); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC(ctx, GCOptions{Grace: -1, RepackThreshold: 0.99})
	if err != nil {
		t.Fatal(err)
	}
	if res.PacksRewritten+res.PacksDeleted == 0 {
		t.Fatalf("gc rewrote nothing: %+v", res)
	}
	for i, fr := range readers {
		if _, err := io.Copy(io.Discard, io.NewSectionReader(fr, 0, fr.Size())); err != nil {
			t.Fatalf("%s: read after gc moved its chunks: %v", files[i].Path, err)
		}
		fr.Close()
	}
}

// TestReadFollowsMovedObjects is the cross-process case: a reader that looked an
// object up before another process's gc moved it (and had not mapped the old pack)
// follows the index to the object's new pack.
func TestReadFollowsMovedObjects(t *testing.T) {
	skipIfShared(t, "gc of a shared store keeps every pack younger than ReceivedGrace")
	s := TestStore(t, Options{ChunkSize: 16 << 10, PackSize: 1 << 30})
	base, _, tuned, _ := family(t, testCfg())
	both := t.TempDir()
	if err := modelgenCopy(base, both+"/base"); err != nil {
		t.Fatal(err)
	}
	if err := modelgenCopy(tuned, both+"/tuned"); err != nil {
		t.Fatal(err)
	}
	importDir(t, s, both, "org/tuned")
	importDir(t, s, base, "org/base")
	commit, _ := s.Ref(mustRef(t, "org/base"))
	files, err := s.CommitFiles(commit)
	if err != nil {
		t.Fatal(err)
	}
	layout, err := s.fileLayout(files[len(files)-1].File)
	if err != nil {
		t.Fatal(err)
	}
	locs, err := s.locateLayout(layout)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRef(mustRef(t, "org/tuned"), mustResolve(t, s, "org/tuned"), ID{}, "rm"); err != nil {
		t.Fatal(err)
	}
	// gc runs in "another process": a second Store on the same directory.
	other, err := Open(s.Dir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.GC(ctx, GCOptions{Grace: -1, RepackThreshold: 0.99}); err != nil {
		t.Fatal(err)
	}
	other.Close()
	// This process has never mapped the old pack (a fresh Store), so the stale
	// locations point at a file that is gone.
	reader, err := Open(s.Dir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	for _, p := range layout {
		if p.recipe != nil {
			continue
		}
		if _, err := reader.readLocated(p.chunk.ID, locs[p.chunk.ID], nil); err != nil {
			t.Fatalf("chunk %s after gc moved it: %v", p.chunk.ID.Short(), err)
		}
	}
}
