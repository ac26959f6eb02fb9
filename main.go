// Command heft is git for model weights: see README.md.
package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/heft-dev/heft/cli"
)

func main() {
	// HEFT_CPUPROFILE=FILE writes a CPU profile of the whole command (for
	// benchmarks; `heft serve` writes it when interrupted).
	if path := os.Getenv("HEFT_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "heft: HEFT_CPUPROFILE:", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "heft: HEFT_CPUPROFILE:", err)
			os.Exit(2)
		}
		code := cli.Main(os.Args, os.Stdout, os.Stderr)
		pprof.StopCPUProfile()
		f.Close()
		os.Exit(code)
	}
	os.Exit(cli.Main(os.Args, os.Stdout, os.Stderr))
}
