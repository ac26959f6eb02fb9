// Command lora benchmarks LoRA extraction: the randomized truncated SVD of
// ops/internal/linalg on a 2048×8192 synthetic delta at rank 128, with its
// error against the exact optimum. run.sh runs it next to numpy's full SVD
// (numpy_svd.py) on the same bits.
//
//	go run ./bench/lora                         # extract from the generated delta
//	go run ./bench/lora gen -out delta.npy      # write the delta for numpy
//	go run ./bench/lora extract -in delta.npy -ref numpy.json
//	go run ./bench/lora extract -exact          # exact optimum computed in Go (~20 s more)
//	go run ./bench/lora sweep                   # error ratio and time over p × q
//
// The benchmark itself is ops/internal/linalg/lorabench: Go's internal
// package rule keeps ops/internal/linalg out of reach of bench/, so this
// command only runs that one (with `go run`, from the module root) and
// passes its arguments and exit status through.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lora:", err)
		os.Exit(1)
	}
	cmd := exec.Command("go", append([]string{"run", "./ops/internal/linalg/lorabench"}, os.Args[1:]...)...)
	cmd.Dir = root
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "lora:", err)
		os.Exit(1)
	}
}

// moduleRoot returns the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the heft module (run from the repository)")
	}
	return filepath.Dir(gomod), nil
}
