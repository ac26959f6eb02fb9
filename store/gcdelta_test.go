package store

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGCKeepsBasesOfRetainedDeltas: gc must not forget a delta chunk's base while
// the delta chunk itself stays indexed. Here the base model's packs are old and the
// fine-tune's young, and both refs are gone: gc drops the base's packs but keeps the
// fine-tune's within the grace period, with their dead delta chunks still indexed.
// Before the fix their bases were forgotten, so verify --read-data reported them
// damaged, and a re-import of the fine-tune reused them by ID and could not be
// read. (Found by TestCrashPoints: a crash between gc's per-pack index updates left
// the same state.)
func TestGCKeepsBasesOfRetainedDeltas(t *testing.T) {
	s := TestStore(t, smallChunks)
	base, _, tuned, _ := family(t, testCfg())
	importDir(t, s, base, "org/base")
	old := time.Now().Add(-2 * time.Hour)
	err := filepath.Walk(filepath.Join(s.Dir(), "packs"), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		return os.Chtimes(path, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	if res := importDir(t, s, tuned, "org/tuned"); res.DeltaBase == "" {
		t.Fatal("the fine-tune was not delta-coded")
	}
	for _, r := range []string{"org/base", "org/tuned"} {
		if err := s.UpdateRef(mustRef(t, r), mustResolve(t, s, r), ID{}, "rm"); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.ProtectedByAge == 0 {
		t.Fatalf("no pack was protected by the grace period: %+v", res)
	}
	CheckStore(t, s)
	importDir(t, s, tuned, "org/tuned")
	assertExportIdentical(t, s, "org/tuned", tuned)
	CheckStore(t, s)
}
