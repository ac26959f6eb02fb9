package pjrtgpu

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// XLA compiles GPU kernels with ptxas and links libdevice at the first
// compile; without them every fusion fails (gpu.md §2, §6). It looks in
// --xla_gpu_cuda_data_dir and in the default toolkit locations. A CUDA data
// directory holds both files:
const (
	ptxasRel     = "bin/ptxas"
	libdeviceRel = "nvvm/libdevice/libdevice.10.bc"
)

var cudaDirFlag = regexp.MustCompile(`--xla_gpu_cuda_data_dir=(\S+)`)

// isCUDADataDir reports whether dir holds ptxas and libdevice.
func isCUDADataDir(dir string) bool {
	for _, rel := range []string{ptxasRel, libdeviceRel} {
		if ok, _ := fileExists(filepath.Join(dir, rel)); !ok {
			return false
		}
	}
	return true
}

// findCUDADataDir returns the CUDA data directory XLA will use and where it
// comes from, and whether Open must name it in XLA_FLAGS for XLA to find it:
//
//  1. --xla_gpu_cuda_data_dir in XLA_FLAGS (used as given);
//  2. $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, /usr/local/cuda-* (newest
//     first), or the toolkit of the ptxas on PATH — XLA searches the
//     default location itself, the others need the flag;
//  3. the nvidia-cuda-nvcc wheel next to the plugin (site-packages/nvidia/
//     cu13 or cuda_nvcc), which XLA does not search.
//
// It returns "" when none is found: compiles will then fail, which the
// smoke test reports.
func findCUDADataDir(o Options, plugin string) (dir, from string, needFlag bool) {
	if m := cudaDirFlag.FindStringSubmatch(o.getenv("XLA_FLAGS")); m != nil {
		return m[1], "XLA_FLAGS", false
	}
	for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
		if d := o.getenv(env); d != "" && isCUDADataDir(d) {
			return d, "$" + env, true
		}
	}
	if isCUDADataDir("/usr/local/cuda") {
		return "/usr/local/cuda", "default toolkit location", false
	}
	versions, _ := filepath.Glob("/usr/local/cuda-*")
	sort.Sort(sort.Reverse(sort.StringSlice(versions)))
	for _, d := range versions {
		if isCUDADataDir(d) {
			return d, "toolkit " + d, true
		}
	}
	if p, err := exec.LookPath("ptxas"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if d := filepath.Dir(filepath.Dir(p)); isCUDADataDir(d) {
			return d, "ptxas on PATH", true
		}
	}
	if plugin != "" {
		// site-packages/jax_plugins/xla_cuda13/xla_cuda_plugin.so →
		// site-packages/nvidia/{cu13,cu12,cuda_nvcc}.
		site := filepath.Dir(filepath.Dir(filepath.Dir(plugin)))
		for _, sub := range []string{"cu13", "cu12", "cuda_nvcc"} {
			d := filepath.Join(site, "nvidia", sub)
			if isCUDADataDir(d) {
				return d, "nvidia wheel " + d, true
			}
		}
	}
	return "", "", false
}

// withCUDADataDir returns XLA_FLAGS with --xla_gpu_cuda_data_dir=dir added.
func withCUDADataDir(flags, dir string) string {
	return strings.TrimSpace(flags + " --xla_gpu_cuda_data_dir=" + dir)
}

// isCUDAPlugin guesses from its path whether a plugin is NVIDIA's.
func isCUDAPlugin(path string) bool {
	p := strings.ToLower(filepath.Base(filepath.Dir(path)) + "/" + filepath.Base(path))
	return strings.Contains(p, "cuda") || strings.Contains(p, "nvidia") || strings.Contains(p, "gpu")
}

// nvidiaSMI lists the cards as "name, memory.total, memory.used", or nil.
func nvidiaSMI() []string {
	out, err := exec.Command("nvidia-smi", "--query-gpu=name,memory.total,memory.used,driver_version", "--format=csv,noheader").Output()
	if err != nil {
		return nil
	}
	var cards []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			cards = append(cards, l)
		}
	}
	return cards
}
