// Package s3bench measures import and export throughput of a store whose packs
// live in an S3 bucket (issue 7) next to the local filesystem's, in the same run:
//
//	HEFT_BENCH_S3=1 go test -count=1 -v -timeout 60m ./bench/s3/             # local and versitygw
//	HEFT_BENCH_S3=1 HEFT_TEST_SEAWEEDFS=1 go test -count=1 -v ./bench/s3/     # and SeaweedFS (weed mini)
//
// HEFT_BENCH_S3_SIZE (default 1GiB) sets the model size, HEFT_BENCH_S3_REPS
// (default 3) the repetitions. Each repetition imports the same generated BF16
// model into a fresh store (a fresh bucket), exports it from the importing
// node (its pack cache holds every pack: the local path) and from a second node
// with an empty cache (every object is a ranged GET of the bucket). The page
// cache is warm for the source. Results go to stdout as a markdown table; the
// test asserts nothing about speed.
package s3bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heft-dev/heft/bench/internal/benchutil"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/store"
	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/s3"
	"github.com/heft-dev/heft/store/backend/s3/s3test"
)

func TestS3ImportExportThroughput(t *testing.T) {
	if os.Getenv("HEFT_BENCH_S3") != "1" {
		t.Skip("a benchmark: set HEFT_BENCH_S3=1")
	}
	size := int64(1 << 30)
	if v := os.Getenv("HEFT_BENCH_S3_SIZE"); v != "" {
		n, err := benchutil.ParseSize(v)
		if err != nil {
			t.Fatal(err)
		}
		size = n
	}
	reps := 3
	if v := os.Getenv("HEFT_BENCH_S3_REPS"); v != "" {
		reps, _ = strconv.Atoi(v)
	}
	root := t.TempDir()
	model := filepath.Join(root, "model")
	if err := modelgen.WriteBase(model, modelgen.Sized(size), modelgen.Options{Seed: 1, Shards: max(1, int(size>>30))}); err != nil {
		t.Fatal(err)
	}
	logical := dirBytes(t, model)

	type target struct {
		name string
		// newBackend returns a fresh bucket's backend, or nil for a local store.
		newBackend func() backend.Backend
	}
	targets := []target{{name: "local filesystem", newBackend: func() backend.Backend { return nil }}}
	addS3 := func(srv *s3test.Server) {
		targets = append(targets, target{name: srv.Name, newBackend: func() backend.Backend {
			cfg := srv.Config(srv.NewBucket(t), "bench")
			cfg.RetryBaseDelay, cfg.RetryMaxDelay = 0, 0 // production backoff
			be, err := s3.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { be.Close() })
			return be
		}})
	}
	addS3(s3test.VersityGW(t))
	if os.Getenv("HEFT_TEST_SEAWEEDFS") == "1" {
		addS3(s3test.SeaweedFS(t))
	}

	type sample struct{ imp, expWarm, expCold float64 }
	results := map[string][]sample{}
	ctx := context.Background()
	for rep := range reps {
		for _, tg := range targets {
			be := tg.newBackend()
			open := func() *store.Store {
				s, err := store.Open(filepath.Join(root, fmt.Sprintf("store-%d-%d", rep, len(results[tg.name]))+strings.ReplaceAll(tg.name, " ", "_")+fmt.Sprint(time.Now().UnixNano())), store.Options{Backend: be})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			a := open()
			ref, _ := store.ParseRef("bench/model")
			t0 := time.Now()
			if _, err := a.Import(ctx, model, store.ImportOptions{Ref: ref}); err != nil {
				t.Fatalf("%s: import: %v", tg.name, err)
			}
			imp := time.Since(t0).Seconds()
			exportTo := func(s *store.Store) float64 {
				dest := filepath.Join(root, "export")
				os.RemoveAll(dest)
				t0 := time.Now()
				if _, err := s.Export(ctx, "bench/model", dest, nil); err != nil {
					t.Fatalf("%s: export: %v", tg.name, err)
				}
				secs := time.Since(t0).Seconds()
				if got := dirBytes(t, dest); got != logical {
					t.Fatalf("%s: exported %d bytes of %d", tg.name, got, logical)
				}
				os.RemoveAll(dest)
				return secs
			}
			warm := exportTo(a)
			cold := warm
			if be != nil {
				b := open() // a second node: nothing cached
				cold = exportTo(b)
				b.Close()
			}
			a.Close()
			results[tg.name] = append(results[tg.name], sample{imp, warm, cold})
			t.Logf("rep %d %-32s import %.2f s, export %.2f s (node's cache), %.2f s (empty cache)", rep, tg.name, imp, warm, cold)
		}
	}
	gb := float64(logical) / 1e9
	fmt.Printf("\nmodel: %.2f GB BF16 (%d reps; median [min–max] MB/s)\n\n", gb, reps)
	fmt.Println("| storage | import | export, node's cache | export, empty cache (ranged reads of the bucket) |")
	fmt.Println("|---|---|---|---|")
	for _, tg := range targets {
		col := func(pick func(sample) float64) string {
			var v []float64
			for _, s := range results[tg.name] {
				v = append(v, gb*1000/pick(s))
			}
			sort.Float64s(v)
			return fmt.Sprintf("%.0f [%.0f–%.0f]", v[len(v)/2], v[0], v[len(v)-1])
		}
		fmt.Printf("| %s | %s | %s | %s |\n", tg.name, col(func(s sample) float64 { return s.imp }), col(func(s sample) float64 { return s.expWarm }), col(func(s sample) float64 { return s.expCold }))
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
