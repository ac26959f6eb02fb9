//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Enabled reports whether this binary was built with failpoints.
const Enabled = true

var (
	target, count = parse(os.Getenv("HEFT_FAILPOINT"))
	mu            sync.Mutex
	hits          int
)

func parse(v string) (string, int) {
	name, n, ok := strings.Cut(v, "@")
	if !ok {
		return name, 1
	}
	c, err := strconv.Atoi(n)
	if err != nil || c < 1 {
		return name, 1
	}
	return name, c
}

// Hit stops the process if name is the armed failpoint and this is its N-th hit.
func Hit(name string) {
	if target == "" || name != target {
		return
	}
	mu.Lock()
	hits++
	stop := hits == count
	mu.Unlock()
	if stop {
		fmt.Fprintf(os.Stderr, "failpoint %s\n", name)
		os.Exit(ExitCode)
	}
}

var (
	faultOp, faultN, faultErr = parseFault(os.Getenv("HEFT_FAULT"))
	faultHits                 int
)

func parseFault(v string) (string, int, error) {
	spec, errName, ok := strings.Cut(v, ":")
	if !ok {
		return "", 0, nil
	}
	op, n := parse(spec)
	switch errName {
	case "ENOSPC":
		return op, n, syscall.ENOSPC
	case "EIO":
		return op, n, syscall.EIO
	}
	return "", 0, nil
}

// Fault returns the injected error on the armed occurrence of op, nil otherwise.
func Fault(op string) error {
	if faultOp == "" || op != faultOp {
		return nil
	}
	mu.Lock()
	defer mu.Unlock()
	faultHits++
	if faultHits == faultN {
		return faultErr
	}
	return nil
}
