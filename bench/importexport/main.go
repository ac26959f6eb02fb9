// Command importexport measures heft import and export throughput and peak RSS on a
// generated Qwen3-style BF16 model, next to cp of the same files in the same run.
//
//	go run ./bench/importexport -size 2.5GiB -heft ./heft
//
// Every command runs as a child process; peak RSS is the child's ru_maxrss. The page
// cache is warm for every contender (the source was just written or read), so the
// numbers compare CPU and write paths, not the disk's read speed. Each step starts
// after an untimed sync; "+ sync" steps include flushing their own writes. heft
// import always fsyncs its packs (durability), so "cp -r + sync" is its like-for-like
// peer, and plain "cp -r" the stricter one.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/heft-dev/heft/bench/internal/benchutil"
	"github.com/heft-dev/heft/internal/modelgen"
)

type run struct {
	name    string
	seconds float64
	rssKiB  int64
}

func main() {
	size := flag.String("size", "2.5GiB", "model size (BF16 bytes), e.g. 2.5GiB or 512MiB")
	heftBin := flag.String("heft", "heft", "heft binary to benchmark")
	work := flag.String("dir", "", "work directory (default: a temp dir under /tmp, removed)")
	keep := flag.Bool("keep", false, "keep the work directory")
	chunk := flag.String("chunk-size", "", "HEFT_CHUNK_SIZE for the import (default: heft's)")
	flag.Parse()

	bytes, err := benchutil.ParseSize(*size)
	check(err)
	dir := *work
	if dir == "" {
		dir, err = os.MkdirTemp("", "heft-bench-")
		check(err)
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	model := filepath.Join(dir, "model")
	cfg := modelgen.Sized(bytes)
	fmt.Fprintf(os.Stderr, "generating %s model in %s\n", *size, model)
	check(modelgen.WriteBase(model, cfg, modelgen.Options{Seed: 1, Shards: max(1, int(bytes/(1<<30)))}))
	total := benchutil.DirSize(model)

	env := os.Environ()
	if *chunk != "" {
		env = append(env, "HEFT_CHUNK_SIZE="+*chunk)
	}
	var runs []run
	// Warm the page cache for the source once, then time each contender.
	must(runCmd(env, "cat-warm", "sh", "-c", "cat "+filepath.Join(model, "*")+" > /dev/null"))
	runs = append(runs, must(runCmd(env, "cp -r", "cp", "-r", model, filepath.Join(dir, "cp-copy"))))
	runs = append(runs, must(runCmd(env, "cp -r + sync", "sh", "-c", "cp -r "+model+" "+filepath.Join(dir, "cp-copy2")+" && sync")))
	os.RemoveAll(filepath.Join(dir, "cp-copy"))
	os.RemoveAll(filepath.Join(dir, "cp-copy2"))
	storeDir := filepath.Join(dir, "store")
	runs = append(runs, must(runCmd(env, "heft import", *heftBin, "--store", storeDir, "--quiet", "import", model, "--name", "bench/model")))
	runs = append(runs, must(runCmd(env, "heft export", *heftBin, "--store", storeDir, "--quiet", "export", "bench/model", filepath.Join(dir, "export"))))
	runs = append(runs, must(runCmd(env, "heft export + sync", "sh", "-c", *heftBin+" --store "+storeDir+" --quiet export bench/model "+filepath.Join(dir, "export2")+" && sync")))
	out, err := exec.Command(*heftBin, "--store", storeDir, "--json", "stats").Output()
	check(err)
	physical := jsonInt(string(out), "physical_bytes")

	host, _ := os.Hostname()
	fmt.Printf("\nmodel: %s BF16 (%d bytes, %d files), GOMAXPROCS=%d, host %s, %s\n\n", *size, total, countFiles(model), runtime.GOMAXPROCS(0), host, time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("| step | seconds | MB/s | vs cp -r | peak RSS |\n|---|---|---|---|---|\n")
	cp := runs[0].seconds
	for _, r := range runs {
		fmt.Printf("| %s | %.2f | %.0f | %.2f× | %.0f MiB |\n", r.name, r.seconds, float64(total)/r.seconds/1e6, cp/r.seconds, float64(r.rssKiB)/1024)
	}
	fmt.Printf("\nstored: %d physical bytes for %d logical (%.3f)\n", physical, total, float64(physical)/float64(total))
}

func runCmd(env []string, name string, args ...string) (run, error) {
	// Start every step with no dirty pages left by the one before, so that a
	// step's own writeback is what its "+ sync" variant measures.
	if err := exec.Command("sync").Run(); err != nil {
		return run{}, fmt.Errorf("sync: %w", err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return run{}, fmt.Errorf("%s: %w", name, err)
	}
	r := run{name: name, seconds: time.Since(start).Seconds()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rssKiB = ru.Maxrss
	}
	fmt.Fprintf(os.Stderr, "%s: %.2fs\n", name, r.seconds)
	return r, nil
}

func must(r run, err error) run {
	check(err)
	return r
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func countFiles(dir string) int {
	entries, _ := os.ReadDir(dir)
	return len(entries)
}

func jsonInt(doc, key string) int64 {
	var m map[string]any
	if json.Unmarshal([]byte(doc), &m) != nil {
		return -1
	}
	v, _ := m[key].(float64)
	return int64(v)
}
