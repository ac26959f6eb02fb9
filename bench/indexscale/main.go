// Command indexscale measures heft's index at scale (issue 7): import throughput
// into a store whose index holds ≥ 10 M chunks against an empty store's, and point
// lookups per second against the big index.
//
//	go run ./bench/indexscale -chunks 10000000 -size 1GiB -reps 3
//
// It seeds a store with synthetic chunk records (store.SeedSyntheticIndex: random
// IDs, plausible locations in packs that do not exist), then, for each repetition,
// generates a BF16 model (a new seed each time, so nothing dedups against earlier
// repetitions) and imports it into a fresh empty store and into the seeded store, in
// alternating order. Imports run in this process through store.Import, with delta
// coding off (the seeded store holds the earlier repetitions' models, which auto
// base selection would pick; the empty store has none), each after an untimed sync.
// The page cache is warm for the source and for index.db: the numbers compare the
// index's CPU and write costs, not the disk's read speed.
//
// Lookups go through store.HasObjects (the batch lookup an import's dedup makes, one
// read transaction per call) with IDs known to be present (hits, in random order)
// and random IDs (misses), on one goroutine and on GOMAXPROCS: one ID per call and
// 256 per call with the index opened per call (heft's default: each transaction
// opens and maps index.db), and one ID per call with the index held open
// (store.HoldIndex, as walks, verify and gc hold it), both on a fresh mapping (first
// pass) and on a warm one (second pass in the same hold).
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heft-dev/heft/bench/internal/benchutil"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/store"
)

const seed = 1

func main() {
	chunks := flag.Int("chunks", 10_000_000, "synthetic chunk records in the seeded store")
	size := flag.String("size", "1GiB", "model size (BF16 bytes)")
	reps := flag.Int("reps", 3, "import repetitions (each imports into both stores)")
	lookups := flag.Int("lookups", 200_000, "IDs looked up per lookup measurement")
	lookupReps := flag.Int("lookup-reps", 3, "repetitions of each lookup measurement")
	work := flag.String("dir", "", "work directory (default: a temp dir under /tmp, removed)")
	keep := flag.Bool("keep", false, "keep the work directory")
	flag.Parse()

	bytes, err := benchutil.ParseSize(*size)
	check(err)
	dir := *work
	if dir == "" {
		dir, err = os.MkdirTemp("", "heft-indexscale-")
		check(err)
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}

	seededDir := filepath.Join(dir, "seeded")
	seeded, err := store.Open(seededDir, store.Options{})
	check(err)
	defer seeded.Close()
	fmt.Fprintf(os.Stderr, "seeding %d chunk records\n", *chunks)
	st, err := seeded.SeedSyntheticIndex(*chunks, seed)
	check(err)
	fmt.Fprintf(os.Stderr, "seeded in %.1fs, index.db %.2f GiB\n", st.Elapsed.Seconds(), float64(st.IndexBytes)/(1<<30))

	host, _ := os.Hostname()
	fmt.Printf("\nindex: %d synthetic chunks in %d packs, seeded in %.1f s, index.db %.2f GiB (%d bytes); GOMAXPROCS=%d, host %s, %s\n",
		st.Objects, st.Packs, st.Elapsed.Seconds(), float64(st.IndexBytes)/(1<<30), st.IndexBytes, runtime.GOMAXPROCS(0), host, time.Now().UTC().Format(time.RFC3339))

	// Lookups against the seeded index.
	hits := store.SyntheticIDs(*chunks, seed, *lookups)
	rng := rand.New(rand.NewPCG(seed, 2))
	rng.Shuffle(len(hits), func(i, j int) { hits[i], hits[j] = hits[j], hits[i] })
	misses := make([]store.ID, len(hits))
	for i := range misses {
		for j := 0; j < len(misses[i]); j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				misses[i][j+k] = byte(v >> (8 * k))
			}
		}
	}
	empty0, err := store.Open(filepath.Join(dir, "empty-lookups"), store.Options{})
	check(err)
	fmt.Printf("\n| lookups | index | path | goroutines | lookups/s (median) | range | runs |\n|---|---|---|---|---|---|---|\n")
	for _, c := range []struct {
		name string
		s    *store.Store
		ids  []store.ID
	}{{"hits", seeded, hits}, {"misses", seeded, misses}, {"misses", empty0, misses}} {
		label := fmt.Sprintf("%g M", float64(*chunks)/1e6)
		if c.s == empty0 {
			label = "empty"
		}
		for _, m := range lookupModes {
			for _, g := range []int{1, runtime.GOMAXPROCS(0)} {
				n := len(c.ids)
				if m.batch == 1 && !m.held {
					n = min(n, 50_000) // tens of µs each
				}
				var rates []float64
				for range *lookupReps {
					rates = append(rates, lookupRate(c.s, c.ids[:n], m, g))
				}
				med, lo, hi := stats(rates)
				fmt.Printf("| %s | %s | %s | %d | %.0f k | %.0f–%.0f k | %d |\n", c.name, label, m.name, g, med/1e3, lo/1e3, hi/1e3, len(rates))
			}
		}
	}
	empty0.Close()

	// Imports, alternating which store goes first.
	var emptyRates, seededRates []float64
	fmt.Printf("\n| rep | store | seconds | MB/s | new chunks | packs |\n|---|---|---|---|---|---|\n")
	for r := range *reps {
		model := filepath.Join(dir, "model")
		os.RemoveAll(model)
		cfg := modelgen.Sized(bytes)
		check(modelgen.WriteBase(model, cfg, modelgen.Options{Seed: uint64(100 + r), Shards: max(1, int(bytes/(1<<30)))}))
		total := benchutil.DirSize(model)
		// Warm the page cache for the source.
		check(exec.Command("sh", "-c", "cat "+filepath.Join(model, "*")+" > /dev/null").Run())
		emptyDir := filepath.Join(dir, fmt.Sprintf("empty-%d", r))
		order := []string{"empty", "seeded"}
		if r%2 == 1 {
			order = []string{"seeded", "empty"}
		}
		for _, which := range order {
			s := seeded
			if which == "empty" {
				s, err = store.Open(emptyDir, store.Options{})
				check(err)
			}
			secs, res := timeImport(s, model, fmt.Sprintf("bench/model-%d", r))
			rate := float64(total) / secs / 1e6
			if which == "empty" {
				emptyRates = append(emptyRates, rate)
				s.Close()
				os.RemoveAll(emptyDir)
			} else {
				seededRates = append(seededRates, rate)
			}
			fmt.Printf("| %d | %s | %.2f | %.0f | %d | %d |\n", r+1, which, secs, rate, res.Stats.NewChunks, res.Stats.Packs)
		}
	}
	em, elo, ehi := stats(emptyRates)
	sm, slo, shi := stats(seededRates)
	fmt.Printf("\nmodel: %s BF16, %d reps\n\n| store | import MB/s (median) | range |\n|---|---|---|\n", *size, *reps)
	fmt.Printf("| empty | %.0f | %.0f–%.0f |\n| %g M chunks | %.0f | %.0f–%.0f |\n", em, elo, ehi, float64(*chunks)/1e6, sm, slo, shi)
	fmt.Printf("\nseeded/empty (medians): %.3f\n", sm/em)
	var ratios []float64
	for i := range emptyRates {
		ratios = append(ratios, seededRates[i]/emptyRates[i])
	}
	fmt.Printf("per-rep ratios: %s\n", fmtList(ratios))
	if fi, err := os.Stat(filepath.Join(seededDir, "index.db")); err == nil {
		fmt.Printf("index.db after the imports: %d bytes\n", fi.Size())
	}
}

type lookupMode struct {
	name  string
	batch int  // IDs per HasObjects call
	held  bool // index held open (store.HoldIndex) across the calls
	warm  bool // one untimed pass first, inside the same hold
}

var lookupModes = []lookupMode{
	{name: "1 ID per call, index opened per call", batch: 1},
	{name: "256 IDs per call (import dedup), opened per call", batch: 256},
	{name: "1 ID per call, index held, first pass", batch: 1, held: true},
	{name: "1 ID per call, index held, warm", batch: 1, held: true, warm: true},
}

// lookupRate looks up ids in calls of m.batch IDs from g goroutines and returns
// IDs per second.
func lookupRate(s *store.Store, ids []store.ID, m lookupMode, g int) float64 {
	if m.held {
		release, err := s.HoldIndex()
		check(err)
		defer release()
	}
	pass := func() float64 {
		runtime.GC()
		var wg sync.WaitGroup
		per := (len(ids) + g - 1) / g
		start := time.Now()
		for w := range g {
			part := ids[min(w*per, len(ids)):min((w+1)*per, len(ids))]
			wg.Go(func() {
				for i := 0; i < len(part); i += m.batch {
					if _, err := s.HasObjects(part[i:min(i+m.batch, len(part))]); err != nil {
						check(err)
					}
				}
			})
		}
		wg.Wait()
		return float64(len(ids)) / time.Since(start).Seconds()
	}
	if m.warm {
		pass()
	}
	return pass()
}

func timeImport(s *store.Store, model, ref string) (float64, *store.ImportResult) {
	check(exec.Command("sync").Run())
	runtime.GC()
	r, err := store.ParseRef(ref)
	check(err)
	start := time.Now()
	res, err := s.Import(context.Background(), model, store.ImportOptions{Ref: r, NoDelta: true, NoRecipes: true})
	check(err)
	return time.Since(start).Seconds(), res
}

func stats(v []float64) (median, lo, hi float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0, 0, 0
	}
	median = s[n/2]
	if n%2 == 0 {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, s[0], s[n-1]
}

func fmtList(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(parts, ", ")
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "indexscale:", err)
		os.Exit(1)
	}
}
