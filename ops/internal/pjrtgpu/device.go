//go:build cgo && linux

package pjrtgpu

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/pjrt"
	"golang.org/x/sync/errgroup"
)

// Device is one opened PJRT device (the first addressable device of the
// client). Its methods are safe for concurrent use; executions are
// serialized by the device itself.
type Device struct {
	plugin *pjrt.Plugin
	client *pjrt.Client
	name   string

	mu    sync.Mutex // guards cache, names, stats, sketches
	cache map[string]*pjrt.LoadedExecutable
	// failed holds the programs that did not compile, so that a fallback
	// does not pay for the failure again.
	failed map[string]error
	names  map[*pjrt.LoadedExecutable]string // program of each executable, for Stats.Programs
	stats  Stats
	// sketches holds the last Gaussian sketches uploaded, by (l, n, seed).
	sketches []sketchEntry

	compileMu sync.Mutex // one compile at a time (they use all cores anyway)

	dqMu sync.Mutex // guards dq; held while a kernel is probed
	dq   map[string]*dqChoice
	// dqPack: FP8 dequantization to BF16 stores u32 pairs (fp8Shape.pack).
	dqPack atomic.Bool
}

type sketchEntry struct {
	l, n int
	seed uint64
	buf  *pjrt.Buffer
}

// maxSketches bounds the device memory the sketch cache holds (an l×n
// float32 each: 33 MB for 320 × 25600).
const maxSketches = 4

// Open finds a PJRT plugin (see Candidates), creates a client on it with
// preallocate=false and opts.MemoryFraction, and compiles and runs a smoke
// program using exp and a matmul. It returns the first device that passes,
// with a Report of everything it tried; on failure the error wraps
// ErrUnavailable and says why.
//
// For a CUDA plugin Open prepares the environment the plugin reads at its
// first compile, leaving any value the user set alone: GOPJRT_CUDA_CHECKS=0
// (silences a misleading go-xla warning), TF_CPP_MIN_LOG_LEVEL=1 (no INFO
// logs from XLA on stderr), --xla_gpu_cuda_data_dir in XLA_FLAGS when XLA
// would not find ptxas and libdevice by itself (see findCUDADataDir), and
// --xla_gpu_enable_triton_gemm=false (cuBLAS gemms: faster on the H100 for
// these shapes and compiled 3 to 6 times faster; gpu.md §4b).
func Open(opts Options) (*Device, *Report, error) {
	rep := &Report{Cgo: true, CUDAVisible: opts.getenv("CUDA_VISIBLE_DEVICES")}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/gomlx/go-xla" {
				rep.GoXLA = dep.Path + " " + dep.Version
			}
		}
	}
	frac := opts.MemoryFraction
	if frac <= 0 || frac > 1 {
		frac = DefaultMemoryFraction
	}
	rep.MemoryFraction = frac
	rep.Candidates = Candidates(opts)
	var reasons []string
	for i := range rep.Candidates {
		c := &rep.Candidates[i]
		if !c.Exists {
			continue
		}
		d, err := open(c.Path, frac, opts, rep)
		if err != nil {
			c.Error = err.Error()
			reasons = append(reasons, c.Path+": "+err.Error())
			continue
		}
		rep.OK = true
		rep.Plugin = c.Path
		return d, rep, nil
	}
	rep.XLAFlags = os.Getenv("XLA_FLAGS")
	switch {
	case len(reasons) > 0:
		rep.Reason = strings.Join(reasons, "; ")
	case len(rep.Candidates) == 0:
		rep.Reason = "no plugin location to try"
	default:
		var tried []string
		for _, c := range rep.Candidates {
			tried = append(tried, c.Source+": "+c.Error)
		}
		rep.Reason = "no PJRT plugin found (" + strings.Join(tried, "; ") + ")"
	}
	return nil, rep, fmt.Errorf("%w: %s", ErrUnavailable, rep.Reason)
}

// open tries one plugin.
func open(path string, frac float64, opts Options, rep *Report) (*Device, error) {
	cuda := isCUDAPlugin(path)
	if cuda {
		setDefaultEnv("GOPJRT_CUDA_CHECKS", "0")
		setDefaultEnv("TF_CPP_MIN_LOG_LEVEL", "1")
		flags := os.Getenv("XLA_FLAGS")
		dir, from, need := findCUDADataDir(opts, path)
		rep.CUDADataDir, rep.CUDADataDirFrom = dir, from
		if need {
			flags = withCUDADataDir(flags, dir)
			rep.CUDADataDirFrom += " (set in XLA_FLAGS)"
		}
		if !strings.Contains(flags, "xla_gpu_enable_triton_gemm") {
			flags = strings.TrimSpace(flags + " --xla_gpu_enable_triton_gemm=false")
		}
		if err := os.Setenv("XLA_FLAGS", flags); err != nil {
			return nil, fmt.Errorf("set XLA_FLAGS: %w", err)
		}
		rep.GPUs = nvidiaSMI()
	}
	rep.XLAFlags = os.Getenv("XLA_FLAGS")
	plugin, err := pjrt.GetPlugin(path)
	if err != nil {
		return nil, fmt.Errorf("load plugin: %w", err)
	}
	major, minor := plugin.Version()
	rep.PJRTVersion = fmt.Sprintf("%d.%d", major, minor)
	rep.Attributes = map[string]string{}
	for k, v := range plugin.Attributes() {
		rep.Attributes[k] = fmt.Sprint(v)
	}
	options := pjrt.NamedValuesMap{}
	if cuda {
		options["preallocate"] = false
		options["memory_fraction"] = float32(frac)
	}
	client, err := plugin.NewClient(options)
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	rep.Platform, rep.PlatformVer = client.Platform(), client.PlatformVersion()
	devs := client.AddressableDevices()
	for _, dv := range devs {
		if desc, err := dv.GetDescription(); err == nil {
			rep.Devices = append(rep.Devices, desc.DebugString())
		}
	}
	if len(devs) == 0 {
		_ = client.Destroy()
		return nil, errors.New("the client has no addressable device")
	}
	d := &Device{plugin: plugin, client: client, cache: map[string]*pjrt.LoadedExecutable{}, names: map[*pjrt.LoadedExecutable]string{}, dq: map[string]*dqChoice{}}
	// Packed BF16 stores are the default: measured on an H200 at 97 % and 80 % of
	// copy bandwidth (q_proj and gate_proj shapes) against 69 % and 71 % with u16
	// stores, bit-identical (docs/benchmarks.md). HEFT_PJRT_DEQUANT_PACK=0 turns
	// them off.
	d.dqPack.Store(os.Getenv("HEFT_PJRT_DEQUANT_PACK") != "0")
	d.name = rep.Platform
	switch {
	case len(rep.GPUs) > 0:
		d.name += ": " + strings.TrimSpace(strings.SplitN(rep.GPUs[0], ",", 2)[0])
	case len(rep.Devices) > 0:
		d.name += ": " + rep.Devices[0]
	}
	start := time.Now()
	err = d.smoke()
	rep.SmokeTime = time.Since(start)
	if err != nil {
		rep.Smoke = "failed: " + err.Error()
		_ = d.Close()
		return nil, fmt.Errorf("smoke test (exp and matmul; a CUDA setup without ptxas or libdevice fails here): %w", err)
	}
	rep.Smoke = fmt.Sprintf("ok (exp and matmul compiled and ran in %.2fs)", rep.SmokeTime.Seconds())
	return d, nil
}

func setDefaultEnv(k, v string) {
	if _, ok := os.LookupEnv(k); !ok {
		_ = os.Setenv(k, v)
	}
}

// smoke compiles and runs progSmoke and checks its results.
func (d *Device) smoke() error {
	exe, err := d.exe("smoke", progSmoke)
	if err != nil {
		return err
	}
	x := make([]float32, 8)
	var want float64
	for i := range x {
		x[i] = float32(i) / 4
		want += float64(x[i]) * float64(x[i])
	}
	in, err := d.uploadSmall(f32bytes(x), dtypes.Float32, 8)
	if err != nil {
		return err
	}
	defer destroy(in)
	outs, err := d.run(exe, in)
	if err != nil {
		return err
	}
	defer destroy(outs...)
	e := make([]float32, 8)
	dot := make([]float32, 1)
	if err := d.download(outs[0], f32bytes(e)); err != nil {
		return err
	}
	if err := d.download(outs[1], f32bytes(dot)); err != nil {
		return err
	}
	for i, v := range e {
		if w := math.Exp(float64(x[i])); math.Abs(float64(v)-w) > 1e-5*w {
			return fmt.Errorf("exp(%v) = %v, want %v", x[i], v, w)
		}
	}
	if math.Abs(float64(dot[0])-want) > 1e-5*want {
		return fmt.Errorf("dot = %v, want %v", dot[0], want)
	}
	return nil
}

// Name describes the device, e.g. "cuda: NVIDIA H100 80GB HBM3".
func (d *Device) Name() string { return d.name }

// Stats returns the accumulated statistics; ResetStats clears them.
func (d *Device) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	s.Programs = maps.Clone(s.Programs)
	return s
}

// ResetStats clears the statistics.
func (d *Device) ResetStats() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats = Stats{}
}

func (d *Device) addStats(f func(s *Stats)) {
	d.mu.Lock()
	f(&d.stats)
	d.mu.Unlock()
}

// Close frees the cached executables and sketches and the client. The
// plugin stays loaded (PJRT plugins cannot be unloaded).
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, s := range d.sketches {
		errs = append(errs, s.buf.Destroy())
	}
	d.sketches = nil
	for _, e := range d.cache {
		errs = append(errs, e.Destroy())
	}
	d.cache = map[string]*pjrt.LoadedExecutable{}
	d.failed = nil
	d.names = map[*pjrt.LoadedExecutable]string{}
	if d.client != nil {
		errs = append(errs, d.client.Destroy())
		d.client = nil
	}
	return errors.Join(errs...)
}

// FailedPrograms lists the programs the plugin could not compile, with the
// compiler's message (callers fell back: a slower kernel or the CPU).
func (d *Device) FailedPrograms() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, k := range slices.Sorted(maps.Keys(d.failed)) {
		msg := d.failed[k].Error()
		if len(msg) > 600 {
			msg = msg[:600] + "…"
		}
		out = append(out, msg)
	}
	return out
}

// exe returns the executable cached under key, compiling build's program
// the first time. A compile failure wraps ErrUnsupported.
func (d *Device) exe(key string, build func() ([]byte, error)) (*pjrt.LoadedExecutable, error) {
	d.mu.Lock()
	e, ok := d.cache[key]
	ferr := d.failed[key]
	d.mu.Unlock()
	if ok || ferr != nil {
		return e, ferr
	}
	d.compileMu.Lock()
	defer d.compileMu.Unlock()
	d.mu.Lock()
	e, ok = d.cache[key]
	ferr = d.failed[key]
	d.mu.Unlock()
	if ok || ferr != nil {
		return e, ferr
	}
	prog, err := build()
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", key, err)
	}
	start := time.Now()
	e, err = d.client.Compile().WithStableHLO(prog).Done()
	if err != nil {
		// A program this plugin cannot compile is a kernel it does not
		// support: the caller runs the CPU kernel instead.
		err = fmt.Errorf("%w: compile %s: %v", ErrUnsupported, key, err)
		d.mu.Lock()
		if d.failed == nil {
			d.failed = map[string]error{}
		}
		d.failed[key] = err
		d.stats.CompileFailures++
		d.mu.Unlock()
		return nil, err
	}
	dt := time.Since(start)
	d.mu.Lock()
	d.cache[key] = e
	d.names[e], _, _ = strings.Cut(key, "/")
	d.stats.Compiles++
	d.stats.CompileTime += dt
	d.mu.Unlock()
	return e, nil
}

// run executes e and waits for the results.
func (d *Device) run(e *pjrt.LoadedExecutable, inputs ...*pjrt.Buffer) ([]*pjrt.Buffer, error) {
	start := time.Now()
	outs, err := e.Execute(inputs...).DonateNone().Done()
	if err != nil {
		return nil, fmt.Errorf("execute: %w", err)
	}
	dt := time.Since(start)
	d.mu.Lock()
	s := &d.stats
	s.Executes++
	s.ExecuteTime += dt
	if s.Programs == nil {
		s.Programs = map[string]ProgramStats{}
	}
	ps := s.Programs[d.names[e]]
	ps.Executes++
	ps.Time += dt
	s.Programs[d.names[e]] = ps
	d.mu.Unlock()
	return outs, nil
}

// run1 executes a program with one output.
func (d *Device) run1(e *pjrt.LoadedExecutable, inputs ...*pjrt.Buffer) (*pjrt.Buffer, error) {
	outs, err := d.run(e, inputs...)
	if err != nil {
		return nil, err
	}
	if len(outs) != 1 {
		destroy(outs...)
		return nil, fmt.Errorf("execute: %d outputs, want 1", len(outs))
	}
	return outs[0], nil
}

// destroy frees device buffers now rather than at garbage collection.
func destroy(bufs ...*pjrt.Buffer) {
	for _, b := range bufs {
		if b != nil {
			_ = b.Destroy()
		}
	}
}

// Uploads at or above parallelUpload bytes are split by rows over
// uploadParts goroutines (one H2D stream of pageable memory reaches 8 to 10
// GB/s, four to eight concurrent ones 28 to 36 GB/s; gpu.md §4c) and joined
// on the device.
const (
	parallelUpload = 32 << 20
	uploadParts    = 8
)

// upload copies a row-major [rows, cols] array of dt to the device.
func (d *Device) upload(data []byte, dt dtypes.DType, rows, cols int) (*pjrt.Buffer, error) {
	if len(data) < parallelUpload || rows < uploadParts {
		return d.uploadSmall(data, dt, rows, cols)
	}
	rowBytes := len(data) / rows
	per := cdiv(rows, uploadParts)
	var parts []int
	for r := 0; r < rows; r += per {
		parts = append(parts, min(per, rows-r))
	}
	bufs := make([]*pjrt.Buffer, len(parts))
	var g errgroup.Group
	start := time.Now()
	for i, n := range parts {
		r0 := i * per
		g.Go(func() error {
			b, err := d.client.BufferFromHost().FromRawData(data[r0*rowBytes:(r0+n)*rowBytes], dt, []int{n, cols}).Done()
			if err != nil {
				return fmt.Errorf("upload rows %d to %d: %w", r0, r0+n, err)
			}
			bufs[i] = b
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		destroy(bufs...)
		return nil, err
	}
	dur := time.Since(start)
	d.addStats(func(s *Stats) { s.UploadBytes += int64(len(data)); s.UploadTime += dur })
	defer destroy(bufs...)
	key := fmt.Sprintf("concat/%s/%v/%d", dt, parts, cols)
	e, err := d.exe(key, func() ([]byte, error) { return progConcat(dt, parts, cols) })
	if err != nil {
		return nil, err
	}
	return d.run1(e, bufs...)
}

// uploadSmall copies an array to the device in one transfer.
func (d *Device) uploadSmall(data []byte, dt dtypes.DType, dims ...int) (*pjrt.Buffer, error) {
	start := time.Now()
	b, err := d.client.BufferFromHost().FromRawData(data, dt, dims).Done()
	if err != nil {
		return nil, fmt.Errorf("upload %s%v: %w", dt, dims, err)
	}
	dur := time.Since(start)
	d.addStats(func(s *Stats) { s.UploadBytes += int64(len(data)); s.UploadTime += dur })
	return b, nil
}

// download copies a device buffer into dst, which must have its exact size;
// dst's pages are touched first (see pretouch).
func (d *Device) download(b *pjrt.Buffer, dst []byte) error {
	pretouch(dst)
	start := time.Now()
	if err := b.ToHost(dst); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	dur := time.Since(start)
	d.addStats(func(s *Stats) { s.DownBytes += int64(len(dst)); s.DownTime += dur })
	return nil
}

func f32bytes(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

func f64bytes(x []float64) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 8*len(x))
}

func i32bytes(x []int32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

func u32bytes(x []uint32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

// sketch returns the device copy of the l×n Gaussian sketch of seed,
// uploading it on first use. The buffer stays owned by the cache.
func (d *Device) sketch(l, n int, seed uint64) (*pjrt.Buffer, error) {
	d.mu.Lock()
	for i, s := range d.sketches {
		if s.l == l && s.n == n && s.seed == seed {
			// Move to the front (most recently used).
			copy(d.sketches[1:i+1], d.sketches[:i])
			d.sketches[0] = s
			d.mu.Unlock()
			return s.buf, nil
		}
	}
	d.mu.Unlock()
	host := gaussianSketch(l, n, seed)
	buf, err := d.upload(f32bytes(host), dtypes.Float32, l, n)
	runtime.KeepAlive(host)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sketches = append([]sketchEntry{{l: l, n: n, seed: seed, buf: buf}}, d.sketches...)
	if len(d.sketches) > maxSketches {
		// Evicted buffers may still be in use by a concurrent SVD of another
		// shape: leave them to the garbage collector rather than destroying
		// them here.
		d.sketches = d.sketches[:maxSketches]
	}
	return buf, nil
}
