package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/s3"
)

// doctorReport is `heft doctor --json`.
type doctorReport struct {
	OS      string            `json:"os"`
	Arch    string            `json:"arch"`
	Go      string            `json:"go"`
	Device  *ops.DeviceReport `json:"device"`
	Env     map[string]string `json:"env"` // the variables that steer the choice
	Failure string            `json:"failure,omitempty"`
	// Storage is where the store keeps its packs and refs, and (for a shared
	// backend) what a check of every operation the store needs found.
	Storage *storageReport `json:"storage,omitempty"`
}

// storageReport is doctor's view of the store's storage.
type storageReport struct {
	Store   string               `json:"store"`
	Exists  bool                 `json:"exists"`
	Backend string               `json:"backend"` // "local" or the backend URL
	Check   *backend.CheckReport `json:"check,omitempty"`
	Error   string               `json:"error,omitempty"`
}

// checkStorage reports the store's storage; a shared backend (the store's, or
// the one --backend names) is checked with backend.Check.
func checkStorage(ctx context.Context, dir, url string) *storageReport {
	rep := &storageReport{Store: dir, Backend: "local"}
	recorded, exists, err := store.ReadConfig(dir)
	rep.Exists = exists
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	if url == "" {
		url = recorded
	}
	if url == "" {
		return rep
	}
	rep.Backend = url
	cfg, err := s3.ParseURL(url)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	be, err := s3.New(cfg)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	defer be.Close()
	check := backend.Check(ctx, be, "doctor/")
	rep.Check = &check
	if !check.OK {
		rep.Error = "the backend failed a check the store relies on"
	}
	return rep
}

// doctorEnv are the environment variables doctor reports.
var doctorEnv = []string{"HEFT_DEVICE", "HEFT_PJRT_PLUGIN", "HEFT_GPU_MEMORY_FRACTION", "PJRT_PLUGIN_LIBRARY_PATH",
	"XLA_FLAGS", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "TF_CPP_MIN_LOG_LEVEL", "GOPJRT_CUDA_CHECKS"}

// cmdDoctor probes for a GPU backend the way the ops commands do and
// reports what it found and why a backend was or was not chosen.
func cmdDoctor() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "report which compute backend the ops commands would use (a GPU through PJRT, or the CPU) and why, and check the store's storage",
		Description: "Probes as `heft lora extract` does: --pjrt-plugin (HEFT_PJRT_PLUGIN), else PJRT_PLUGIN_LIBRARY_PATH, else the\n" +
			"jax CUDA 13/12 wheels found by python3; loads the plugin, creates a client and runs a smoke program (exp and a\n" +
			"matmul: a CUDA setup without ptxas or libdevice fails there). Exit 0 when the requested device is usable\n" +
			"(auto always is: it falls back to the CPU), 2 when --device gpu finds no GPU.\n" +
			"For a store shared through S3 (heft init --backend) it also runs every operation the store relies on against\n" +
			"the bucket (conditional writes, ranged reads, listing, delete) on a scratch object under doctor/, and exits 2\n" +
			"when one fails; --backend URL checks a bucket before a store is created on it.",
		Flags: commonFlags(deviceFlag(), pluginFlag(),
			&cli.StringFlag{Name: "backend", Usage: "check this shared backend (s3://BUCKET/PREFIX?endpoint=...) instead of the store's"}),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			if c.NArg() != 0 {
				return usagef("doctor takes no arguments")
			}
			be, rep, err := openBackend(c, &env{stdout: e.stdout, stderr: e.stderr, quiet: true})
			var ue usageError
			if errors.As(err, &ue) {
				return err
			}
			if be != nil {
				defer be.Close()
			}
			dr := doctorReport{OS: runtime.GOOS, Arch: runtime.GOARCH, Go: runtime.Version(), Device: rep, Env: map[string]string{}}
			for _, k := range doctorEnv {
				if v, ok := os.LookupEnv(k); ok {
					dr.Env[k] = v
				}
			}
			if err != nil {
				dr.Failure = err.Error()
			}
			dr.Storage = checkStorage(c.Context, e.storeDir, c.String("backend"))
			if dr.Storage.Error != "" && err == nil {
				err = errors.New(dr.Storage.Error)
			}
			if e.json {
				if perr := e.printJSON(dr); perr != nil {
					return perr
				}
			} else {
				printDoctor(e, dr)
			}
			if err != nil {
				return silentExit{ExitOperational}
			}
			return nil
		},
	}
}

func printDoctor(e *env, dr doctorReport) {
	w := e.stdout
	line := func(k, format string, args ...any) { fmt.Fprintf(w, "%-22s %s\n", k+":", fmt.Sprintf(format, args...)) }
	if st := dr.Storage; st != nil {
		state := "not created yet"
		if st.Exists {
			state = "exists"
		}
		line("store", "%s (%s)", st.Store, state)
		line("storage", "%s", st.Backend)
		if st.Check != nil {
			p := st.Check.Properties
			line("backend", "%s at %s, consistent listing declared: %v, multipart above %d bytes", p.Kind, p.Location, p.ConsistentList, p.MultipartThreshold)
			for _, step := range st.Check.Steps {
				res := "ok"
				if step.Error != "" {
					res = "FAILED: " + step.Error
				}
				fmt.Fprintf(w, "  %-42s %8s  %s\n", step.Op, step.Elapsed.Round(time.Microsecond), res)
			}
		}
		if st.Error != "" {
			line("storage failure", "%s", st.Error)
		}
	}
	rep := dr.Device
	g := rep.GPU
	build := "cgo (PJRT backend compiled in)"
	if g != nil && !g.Cgo {
		build = "no cgo (CPU only)"
	}
	line("build", "%s/%s, %s, %s", dr.OS, dr.Arch, dr.Go, build)
	line("requested", "%s", rep.Requested)
	line("chosen", "%s", rep.Backend)
	line("reason", "%s", rep.Reason)
	if dr.Failure != "" {
		line("failure", "%s", dr.Failure)
	}
	if g == nil {
		return
	}
	if len(g.Candidates) > 0 {
		fmt.Fprintln(w, "plugin search:")
		for _, c := range g.Candidates {
			mark := "found"
			switch {
			case !c.Exists:
				mark = "absent"
			case g.Plugin == c.Path:
				mark = "USED"
			case c.Error != "":
				mark = "failed"
			}
			fmt.Fprintf(w, "  %-7s %s  (%s)", mark, c.Path, c.Source)
			if c.Error != "" {
				fmt.Fprintf(w, ": %s", c.Error)
			}
			fmt.Fprintln(w)
		}
	}
	if g.Plugin != "" {
		line("plugin", "%s", g.Plugin)
	}
	if g.PJRTVersion != "" {
		built := g.GoXLA
		if built == "" {
			built = "go-xla (version not recorded in this binary)"
		}
		line("PJRT C API", "%s (plugin); heft built with %s", g.PJRTVersion, built)
	}
	if len(g.Attributes) > 0 {
		keys := make([]string, 0, len(g.Attributes))
		for k := range g.Attributes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, k+"="+g.Attributes[k])
		}
		line("plugin attributes", "%s", strings.Join(kv, ", "))
	}
	if g.Platform != "" {
		line("platform", "%s %s", g.Platform, g.PlatformVer)
	}
	for i, d := range g.Devices {
		line(fmt.Sprintf("device %d", i), "%s", d)
	}
	for i, c := range g.GPUs {
		line(fmt.Sprintf("nvidia-smi gpu %d", i), "%s", c)
	}
	if g.MemoryFraction > 0 && g.Plugin != "" {
		line("memory", "preallocate=false, memory_fraction=%.2f (HEFT_GPU_MEMORY_FRACTION)", g.MemoryFraction)
	}
	line("XLA_FLAGS", "%s", g.XLAFlags)
	if g.CUDADataDir != "" {
		line("CUDA data dir", "%s (%s)", g.CUDADataDir, g.CUDADataDirFrom)
	} else if g.Platform == "cuda" || len(g.GPUs) > 0 {
		line("CUDA data dir", "none found (no bin/ptxas with nvvm/libdevice): GPU compiles will fail; set XLA_FLAGS=--xla_gpu_cuda_data_dir=DIR")
	}
	if g.CUDAVisible != "" {
		line("CUDA_VISIBLE_DEVICES", "%s", g.CUDAVisible)
	}
	if g.Smoke != "" {
		line("smoke test", "%s", g.Smoke)
	}
}
