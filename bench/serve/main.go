// Command serve measures download throughput from `heft serve` next to nginx
// serving the same files, in the same run, with the same client and parallelism:
// every file of a generated Qwen3-style model (≥ 2 GB) is fetched with ranged GETs
// on its /resolve URL by a pool of workers. It reports GB/s for both, heft's peak
// RSS, and, when a Python with huggingface_hub is given, snapshot_download from heft
// serve timed beside them.
//
//	go build -o heft . && go run ./bench/serve -heft ./heft [-size 2.2GiB -parallel 8 -python .venv/bin/python]
//
// nginx comes from Debian (apt-get install nginx-light). The page cache is warm for
// both servers (the files were just written and read), so this compares the
// servers' CPU paths: heft decodes and verifies chunks, nginx sends file pages.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/heft-dev/heft/bench/internal/benchutil"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/internal/modelgen"
)

func main() {
	size := flag.String("size", "2.2GiB", "model size (BF16 bytes)")
	heftBin := flag.String("heft", "heft", "heft binary")
	nginx := flag.String("nginx", "nginx", "nginx binary")
	parallel := flag.Int("parallel", 8, "concurrent ranged GETs")
	rangeSize := flag.Int64("range", 64<<20, "bytes per ranged GET")
	reps := flag.Int("reps", 3, "timed rounds (heft and nginx alternate)")
	python := flag.String("python", "", "a Python with huggingface_hub, for the snapshot_download timing")
	work := flag.String("dir", "", "work directory (default: a temp dir, removed)")
	flag.Parse()
	if err := run(*size, *heftBin, *nginx, *python, *work, *parallel, *rangeSize, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitListening(addr string) error {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

type file struct {
	path string
	size int64
}

func run(sizeStr, heftBin, nginx, python, work string, parallel int, rangeSize int64, reps int) error {
	size, err := benchutil.ParseSize(sizeStr)
	if err != nil {
		return fmt.Errorf("-size: %w", err)
	}
	if heftBin, err = exec.LookPath(heftBin); err != nil {
		return err
	}
	if heftBin, err = filepath.Abs(heftBin); err != nil {
		return err
	}
	if nginx, err = exec.LookPath(nginx); err != nil {
		return fmt.Errorf("nginx not found (apt-get install nginx-light): %w", err)
	}
	if work == "" {
		if work, err = os.MkdirTemp("", "heft-bench-serve-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	model := filepath.Join(work, "model")
	cfg := modelgen.Sized(size)
	shards := int(max(1, size/(1<<30)))
	fmt.Printf("generating %.2f GB Qwen3-style model (%d shards) in %s\n", float64(cfg.ParamBytes())/1e9, shards, model)
	if err := modelgen.WriteBase(model, cfg, modelgen.Options{Seed: 1, Shards: shards}); err != nil {
		return err
	}
	var files []file
	var total int64
	err = filepath.Walk(model, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(model, p)
		files = append(files, file{rel, info.Size()})
		total += info.Size()
		return nil
	})
	if err != nil {
		return err
	}
	storeDir := filepath.Join(work, "store")
	heft := func(args ...string) (string, error) {
		out, err := exec.Command(heftBin, append([]string{"--store", storeDir}, args...)...).Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("heft %s: %v: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return strings.TrimSpace(string(out)), err
	}
	if _, err := heft("import", model, "--name", "bench/model"); err != nil {
		return err
	}
	token, err := heft("token", "create", "--scope", "read", "--namespace", "bench")
	if err != nil {
		return err
	}
	heftAddr, err := freePort()
	if err != nil {
		return err
	}
	srv := exec.Command(heftBin, "--store", storeDir, "serve", "--addr", heftAddr)
	srv.Stderr = io.Discard
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Signal(os.Interrupt); srv.Wait() }()
	nginxAddr, err := freePort()
	if err != nil {
		return err
	}
	prefix := filepath.Join(work, "nginx")
	os.MkdirAll(filepath.Join(prefix, "logs"), 0o755)
	os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755)
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers would otherwise run as nobody, who cannot read the temp dir
	}
	conf := fmt.Sprintf(`%[4]s
worker_processes auto;
error_log %[1]s/logs/error.log;
pid %[1]s/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  sendfile on;
  tcp_nopush on;
  server {
    listen %[2]s;
    location /bench/model/resolve/main/ { alias %[3]s/; }
  }
}
`, prefix, nginxAddr, model, user)
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	ng := exec.Command(nginx, "-p", prefix, "-c", confPath, "-g", "daemon off;")
	ng.Stderr = os.Stderr
	if err := ng.Start(); err != nil {
		return err
	}
	defer func() { ng.Process.Signal(os.Interrupt); ng.Wait() }()
	for _, a := range []string{heftAddr, nginxAddr} {
		if err := waitListening(a); err != nil {
			return err
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: parallel, DisableCompression: true}}
	results := map[string][]float64{}
	for rep := 0; rep < reps; rep++ {
		for _, s := range []struct{ name, base, token string }{{"heft serve", "http://" + heftAddr, token}, {"nginx", "http://" + nginxAddr, ""}} {
			secs, err := download(client, s.base+"/bench/model/resolve/main/", s.token, files, total, parallel, rangeSize)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			results[s.name] = append(results[s.name], secs)
		}
	}
	rss, _ := peakRSS(srv.Process.Pid)
	fmt.Printf("\n%d files, %.2f GB, %d parallel ranged GETs of %d MiB, best of %d (median in brackets):\n", len(files), float64(total)/1e9, parallel, rangeSize>>20, reps)
	summary := map[string]any{"bytes": total, "files": len(files), "parallel": parallel, "heft_peak_rss_kib": rss}
	for _, name := range []string{"heft serve", "nginx"} {
		t := results[name]
		var rounds []string
		for _, secs := range t {
			rounds = append(rounds, fmt.Sprintf("%.2f", float64(total)/secs/1e9))
		}
		fmt.Printf("  %-12s rounds in order: %s GB/s (heft's first round is cold: every piece decoded and verified)\n", name, strings.Join(rounds, ", "))
		summary[name+"_first_gbps"] = float64(total) / t[0] / 1e9
		t = append([]float64(nil), t...)
		sort.Float64s(t)
		best, med := float64(total)/t[0]/1e9, float64(total)/t[len(t)/2]/1e9
		fmt.Printf("  %-12s %6.2f GB/s (%.2f)\n", name, best, med)
		summary[name+"_gbps"] = best
	}
	h, n := results["heft serve"], results["nginx"]
	hs, ns := append([]float64(nil), h...), append([]float64(nil), n...)
	sort.Float64s(hs)
	sort.Float64s(ns)
	fmt.Printf("  heft / nginx (best rounds): %.2f×; heft serve peak RSS %d MiB\n", ns[0]/hs[0], rss>>10)
	summary["ratio"] = ns[0] / hs[0]
	if python != "" {
		cache := filepath.Join(work, "hf-cache")
		script := `import sys, time
from huggingface_hub import snapshot_download
t = time.time(); snapshot_download("bench/model", cache_dir=sys.argv[1]); print(time.time() - t)`
		var best float64
		for rep := 0; rep < reps; rep++ {
			os.RemoveAll(cache)
			cmd := exec.Command(python, "-c", script, cache)
			cmd.Env = append(os.Environ(), "HF_ENDPOINT=http://"+heftAddr, "HF_TOKEN="+token, "HF_HUB_DISABLE_TELEMETRY=1", "HF_HUB_DISABLE_XET=1")
			out, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("snapshot_download: %w", err)
			}
			secs, _ := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			if best == 0 || secs < best {
				best = secs
			}
		}
		fmt.Printf("  snapshot_download from heft serve: %.2f s = %.2f GB/s (best of %d, cold cache each time)\n", best, float64(total)/best/1e9, reps)
		summary["snapshot_download_gbps"] = float64(total) / best / 1e9
	}
	// heft pull from the server into an empty store, over the heft remote protocol.
	other := filepath.Join(work, "other")
	if out, err := exec.Command(heftBin, "--store", other, "remote", "add", "origin", "http://"+heftAddr).CombinedOutput(); err != nil {
		return fmt.Errorf("remote add: %v: %s", err, out)
	}
	pull := exec.Command(heftBin, "--store", other, "pull", "origin", "bench/model")
	pull.Env = append(os.Environ(), "HEFT_TOKEN="+token)
	start := time.Now()
	if out, err := pull.CombinedOutput(); err != nil {
		return fmt.Errorf("heft pull: %v: %s", err, out)
	}
	secs := time.Since(start).Seconds()
	pullRSS := int64(0)
	if ru, ok := pull.ProcessState.SysUsage().(*syscall.Rusage); ok {
		pullRSS = ru.Maxrss
	}
	fmt.Printf("  heft pull (store to store, loopback): %.2f s = %.2f GB/s of model, peak RSS %d MiB\n", secs, float64(total)/secs/1e9, pullRSS>>10)
	summary["pull_gbps"] = float64(total) / secs / 1e9
	summary["pull_peak_rss_kib"] = pullRSS
	enc, _ := json.Marshal(summary)
	fmt.Println(string(enc))
	return nil
}

// download fetches every file in ranges with parallel workers and returns the
// wall time. Every response must be a 206 (or 200 for a whole small file) with the
// expected length.
func download(client *http.Client, base, token string, files []file, total int64, parallel int, rangeSize int64) (float64, error) {
	type job struct {
		f        file
		off, end int64
	}
	jobs := make(chan job)
	var got atomic.Int64
	g, ctx := errgroup.WithContext(context.Background())
	start := time.Now()
	g.Go(func() error {
		defer close(jobs)
		for _, f := range files {
			for off := int64(0); off < f.size || (off == 0 && f.size == 0); off += rangeSize {
				select {
				case jobs <- job{f, off, min(off+rangeSize, f.size)}:
				case <-ctx.Done():
					return ctx.Err()
				}
				if f.size == 0 {
					break
				}
			}
		}
		return nil
	})
	var bufs sync.Pool
	bufs.New = func() any { b := make([]byte, 1<<20); return &b }
	for range parallel {
		g.Go(func() error {
			for j := range jobs {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+j.f.path, nil)
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				if j.f.size > 0 {
					req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", j.off, j.end-1))
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				buf := bufs.Get().(*[]byte)
				n, err := io.CopyBuffer(io.Discard, resp.Body, *buf)
				bufs.Put(buf)
				resp.Body.Close()
				if err != nil {
					return err
				}
				if resp.StatusCode/100 != 2 || n != j.end-j.off {
					return fmt.Errorf("%s [%d, %d): status %d, %d bytes", j.f.path, j.off, j.end, resp.StatusCode, n)
				}
				got.Add(n)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	if got.Load() != total {
		return 0, fmt.Errorf("downloaded %d bytes of %d", got.Load(), total)
	}
	return time.Since(start).Seconds(), nil
}

// peakRSS reads a process's peak resident set (VmHWM) in KiB.
func peakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmHWM")
}
