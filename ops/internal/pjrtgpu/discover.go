package pjrtgpu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Plugin file names searched for in the directories of
// PJRT_PLUGIN_LIBRARY_PATH: the jax wheel's name first, then go-xla's own
// naming patterns (gpu.md §2).
var pluginNames = []string{"xla_cuda_plugin.so", "pjrt_c_api_cuda_plugin.so", "pjrt-plugin-cuda.so"}

// jaxWheels are the jax_plugins modules whose directory holds
// xla_cuda_plugin.so, newest CUDA first.
var jaxWheels = []string{"xla_cuda13", "xla_cuda12"}

// Source names of Candidate.
const (
	SourceExplicit = "--pjrt-plugin / HEFT_PJRT_PLUGIN"
	SourceEnvPath  = "PJRT_PLUGIN_LIBRARY_PATH"
	SourceJax      = "jax wheel jax_plugins."
)

func (o Options) getenv(k string) string {
	if o.Env != nil {
		return o.Env(k)
	}
	return os.Getenv(k)
}

// python runs python3 -c code with a time limit.
func (o Options) python(code string) (string, error) {
	if o.Python != nil {
		return o.Python(code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "-c", code).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = strings.TrimSpace(string(ee.Stderr))
			if i := strings.LastIndexByte(stderr, '\n'); i >= 0 {
				stderr = stderr[i+1:] // the exception line
			}
		}
		if stderr != "" {
			return "", fmt.Errorf("python3: %s", stderr)
		}
		return "", fmt.Errorf("python3: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// Candidates lists the plugin files to try, in order: the explicit path
// alone when there is one; else every file of PJRT_PLUGIN_LIBRARY_PATH (a
// ":"-separated list of files or directories, searched for pluginNames),
// then the CUDA plugins of the jax wheels, located by importing
// jax_plugins.xla_cuda13 (and xla_cuda12) in python3. Candidates that do
// not exist are listed too, with the reason, for the report.
func Candidates(o Options) []Candidate {
	if p := o.Plugin; p != "" {
		c := Candidate{Path: p, Source: SourceExplicit}
		if abs, err := filepath.Abs(p); err == nil {
			c.Path = abs
		}
		c.Exists, c.Error = fileExists(c.Path)
		return []Candidate{c}
	}
	var out []Candidate
	seen := map[string]bool{}
	add := func(c Candidate) {
		if seen[c.Path] {
			return
		}
		seen[c.Path] = true
		out = append(out, c)
	}
	for _, entry := range filepath.SplitList(o.getenv(SourceEnvPath)) {
		if entry == "" {
			continue
		}
		st, err := os.Stat(entry)
		switch {
		case err != nil:
			add(Candidate{Path: entry, Source: SourceEnvPath, Error: err.Error()})
		case !st.IsDir():
			add(Candidate{Path: entry, Source: SourceEnvPath, Exists: true})
		default:
			found := false
			for _, name := range pluginNames {
				p := filepath.Join(entry, name)
				if ok, _ := fileExists(p); ok {
					add(Candidate{Path: p, Source: SourceEnvPath, Exists: true})
					found = true
				}
			}
			if !found {
				add(Candidate{Path: entry, Source: SourceEnvPath, Error: "directory holds none of " + strings.Join(pluginNames, ", ")})
			}
		}
	}
	for _, mod := range jaxWheels {
		src := SourceJax + mod
		dir, err := o.python("import jax_plugins." + mod + " as m; print(m.__path__[0])")
		if err != nil {
			add(Candidate{Path: "jax_plugins/" + mod + "/xla_cuda_plugin.so", Source: src, Error: err.Error()})
			continue
		}
		p := filepath.Join(dir, "xla_cuda_plugin.so")
		c := Candidate{Path: p, Source: src}
		c.Exists, c.Error = fileExists(p)
		add(c)
	}
	return out
}

func fileExists(p string) (bool, string) {
	st, err := os.Stat(p)
	switch {
	case err != nil:
		return false, err.Error()
	case st.IsDir():
		return false, "is a directory"
	}
	return true, ""
}
