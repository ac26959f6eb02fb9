package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/internal/vfs"
)

// TestImportFaults fails the n-th filesystem operation of each kind during a delta
// import (ENOSPC for creates and writes, short writes, EIO for fsyncs, renames,
// directory fsyncs and removes; vfs.ErrorFS), for every n the import reaches (at
// most faultCasesPerKind of them), and a few random fault patterns (reliability.md
// G3, G7). Each time the import either succeeds or fails with the injected error;
// the committed ref still exports identically, the new ref is absent or complete,
// verify --read-data is clean, the same import then succeeds, and gc leaves
// nothing behind.
func TestImportFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the fault matrix")
	}
	dirs := t.TempDir()
	base, tuned := filepath.Join(dirs, "base"), filepath.Join(dirs, "tuned")
	if err := modelgen.WriteBase(base, modelgen.Tiny(), modelgen.Options{Seed: 21}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 22}); err != nil {
		t.Fatal(err)
	}
	opts := Options{ChunkSize: 16 << 10, PackSize: 64 << 10, Workers: 1}

	// A store holding the base, copied for every case.
	template := filepath.Join(dirs, "template")
	s, err := Open(template, opts)
	if err != nil {
		t.Fatal(err)
	}
	importDir(t, s, base, "org/base")
	s.Close()
	open := func(dir string, fsys vfs.FS) *Store {
		t.Helper()
		if err := modelgen.CopyDir(template, dir); err != nil {
			t.Fatal(err)
		}
		o := opts
		o.FS = fsys
		s, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// Count each kind of operation of a clean import.
	counts := map[vfs.Op]int{}
	efs := vfs.NewErrorFS(vfs.OS, nil)
	s = open(filepath.Join(dirs, "count"), efs)
	efs.SetPolicy(func(op vfs.Op, _ string) error { counts[op]++; return nil })
	importDir(t, s, tuned, "org/tuned")
	efs.SetPolicy(nil)
	s.Close()

	const faultCasesPerKind = 12
	type faultCase struct {
		name   string
		policy vfs.Policy
		want   error
	}
	var cases []faultCase
	for _, k := range []struct {
		op  vfs.Op
		err error
	}{{vfs.OpCreate, syscall.ENOSPC}, {vfs.OpWrite, syscall.ENOSPC}, {vfs.OpSync, syscall.EIO},
		{vfs.OpRename, syscall.EIO}, {vfs.OpDirSync, syscall.EIO}, {vfs.OpRemove, syscall.EIO}} {
		step := max(1, (counts[k.op]+faultCasesPerKind-1)/faultCasesPerKind)
		for n := 1; n <= counts[k.op]; n += step {
			cases = append(cases, faultCase{fmt.Sprintf("%s@%d", k.op, n), vfs.FailNth(k.op, n, k.err), k.err})
			if k.op == vfs.OpWrite {
				cases = append(cases, faultCase{fmt.Sprintf("short-write@%d", n), vfs.ShortWriteNth(n, 1000*n, syscall.ENOSPC), syscall.ENOSPC})
			}
		}
	}
	for seed := int64(1); seed <= 4; seed++ {
		cases = append(cases, faultCase{fmt.Sprintf("random-%d", seed), vfs.FailRandom(seed, 0.1, syscall.EIO), syscall.EIO})
	}
	baseTree, tunedTree := treeHashes(t, base), treeHashes(t, tuned)
	hit := 0
	for i, c := range cases {
		efs := vfs.NewErrorFS(vfs.OS, nil)
		s := open(filepath.Join(dirs, fmt.Sprintf("case%d", i)), efs)
		efs.SetPolicy(c.policy)
		_, err = s.Import(ctx, tuned, ImportOptions{Ref: mustRef(t, "org/tuned")})
		efs.SetPolicy(nil)
		switch {
		case err == nil:
		case errors.Is(err, c.want):
			hit++
		default:
			t.Fatalf("%s: import failed with %v, want %v", c.name, err, c.want)
		}
		s.Close()
		// Reopen, as a user would after the error.
		o := opts
		s, err = Open(s.Dir(), o)
		if err != nil {
			t.Fatalf("%s: reopen: %v", c.name, err)
		}
		CheckStore(t, s)
		checkExportTree(t, s, "org/base", baseTree, c.name)
		if _, err := s.Ref(mustRef(t, "org/tuned")); err == nil {
			checkExportTree(t, s, "org/tuned", tunedTree, c.name+" (ref left by the failed import)")
		} else {
			importDir(t, s, tuned, "org/tuned")
			checkExportTree(t, s, "org/tuned", tunedTree, c.name+" (re-run)")
		}
		if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
			t.Fatalf("%s: gc: %v", c.name, err)
		}
		if res, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil || res.BytesFreed != 0 {
			t.Fatalf("%s: second gc: %+v, %v", c.name, res, err)
		}
		checkExportTree(t, s, "org/tuned", tunedTree, c.name+" (after gc)")
		s.Close()
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d fault cases (operations of a clean import: %v), %d hit the import", len(cases), counts, hit)
	if hit < len(cases)/2 {
		t.Fatalf("only %d of %d injected faults took effect", hit, len(cases))
	}
}

func checkExportTree(t *testing.T, s *Store, ref string, want map[string]string, what string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "export")
	if _, err := s.Export(ctx, ref, dest, nil); err != nil {
		t.Fatalf("%s: export %s: %v", what, ref, err)
	}
	got := treeHashes(t, dest)
	if len(got) != len(want) {
		t.Fatalf("%s: export %s: %d files, want %d", what, ref, len(got), len(want))
	}
	for name, sum := range want {
		if got[name] != sum {
			t.Fatalf("%s: export %s: %s differs", what, ref, name)
		}
	}
}
