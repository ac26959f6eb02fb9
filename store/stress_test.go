package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/modelgen"
)

// TestConcurrentWritersReadersGC runs 8 writers (imports, and uploads through
// IngestFile + Commit as the hub does), readers re-reading every committed file,
// and gc in a loop with a short grace, all at once (run it with -race; .ci/run
// does). Nothing committed may be lost or read wrong, and verify is clean at the end.
func TestConcurrentWritersReadersGC(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	s := TestStore(t, smallChunks)
	root := t.TempDir()
	base := filepath.Join(root, "base")
	if err := modelgen.WriteBase(base, testCfg(), modelgen.Options{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	importDir(t, s, base, "org/base")
	const writers = 8
	dirs := make([]string, writers)
	for i := range dirs {
		dirs[i] = filepath.Join(root, "ft", string(rune('a'+i)))
		if err := modelgen.FineTune(base, dirs[i], modelgen.FineTuneOptions{Seed: uint64(10 + i), FreezeEmbeddings: i%2 == 0}); err != nil {
			t.Fatal(err)
		}
	}
	// The oracle: file sha256 of every committed file, by ref.
	var mu sync.Mutex
	committed := map[string]map[string]string{"org/base:main": treeHashes(t, base)}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
		stop.Store(true)
	}
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := "org/m" + string(rune('a'+i))
			for round := 0; round < 3 && !stop.Load(); round++ {
				var err error
				if i%2 == 0 {
					_, err = s.Import(ctx, dirs[i], ImportOptions{Ref: mustRef(t, ref)})
				} else {
					err = uploadDir(s, dirs[i], ref)
				}
				if err != nil {
					fail(err)
					return
				}
				mu.Lock()
				committed[ref+":main"] = treeHashes(t, dirs[i])
				mu.Unlock()
			}
		}()
	}
	var readers sync.WaitGroup
	var reads atomic.Int64
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for !stop.Load() {
				mu.Lock()
				snapshot := map[string]map[string]string{}
				for k, v := range committed {
					snapshot[k] = v
				}
				mu.Unlock()
				for ref, want := range snapshot {
					commit, err := s.Resolve(ref)
					if err != nil {
						fail(err)
						return
					}
					files, err := s.CommitFiles(commit)
					if err != nil {
						fail(err)
						return
					}
					for _, f := range files {
						fr, err := s.OpenFile(f.ID)
						if err != nil {
							fail(err)
							return
						}
						h := sha256.New()
						_, err = io.Copy(h, io.NewSectionReader(fr, 0, fr.Size()))
						fr.Close()
						if err != nil {
							fail(err)
							return
						}
						if got := hex.EncodeToString(h.Sum(nil)); got != want[f.Path] {
							t.Errorf("%s: %s read back as %s", ref, f.Path, got)
							stop.Store(true)
							return
						}
						reads.Add(1)
					}
				}
			}
		}()
	}
	readers.Add(1)
	var gcs atomic.Int64
	go func() {
		defer readers.Done()
		for !stop.Load() {
			if _, err := s.GC(ctx, GCOptions{Grace: 50 * time.Millisecond}); err != nil {
				fail(err)
				return
			}
			gcs.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	wg.Wait()
	stop.Store(true)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d files read back, %d gc runs", reads.Load(), gcs.Load())
	// The turnstile lets gc in between overlapping writers.
	if gcs.Load() < 3 {
		t.Errorf("gc ran %d times while the writers ran: starved", gcs.Load())
	}
	for ref, want := range committed {
		dest := filepath.Join(t.TempDir(), "x")
		if _, err := s.Export(ctx, ref, dest, nil); err != nil {
			t.Fatal(err)
		}
		got := treeHashes(t, dest)
		for p, h := range want {
			if got[p] != h {
				t.Fatalf("%s: %s lost", ref, p)
			}
		}
	}
}

// uploadDir stores a directory the way the hub's upload flow does: each file
// through IngestFile (recorded as an upload by it), then one commit.
func uploadDir(s *Store, dir, ref string) error {
	var files []ManifestEntry
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		// Recorded as an upload within the ingest: gc runs with a 50 ms grace
		// here, so a separate RecordUpload could come after a gc that reclaimed
		// the still unreferenced file (as the hub once did).
		res, err := s.IngestFile(ctx, filepath.ToSlash(rel), bytes.NewReader(data), int64(len(data)), IngestOptions{UploadRepo: ref})
		if err != nil {
			return err
		}
		files = append(files, ManifestEntry{Path: filepath.ToSlash(rel), File: res.ID})
		return nil
	})
	if err != nil {
		return err
	}
	r, err := ParseRef(ref)
	if err != nil {
		return err
	}
	parent, err := s.Ref(r)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	_, err = s.Commit(ctx, CommitRequest{Ref: r, Parent: parent, Files: files, Provenance: Provenance{Op: "upload"}})
	return err
}
