package s3test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// SeaweedFS servers started here take a host-wide lock for their whole life:
// an exclusive flock on BinDir()/.seaweedfs.lock. `weed mini` opens fixed admin
// ports (12535, 22535, 23646) whatever its other flags say, so two of them on
// one host collide, and `go test ./...` runs the test binaries of several
// packages at once. The four-process cluster takes the same lock: it needs no
// fixed port, but it starts in 15 s and needs about 1 GB, and two of them at
// once on a 2-core machine make each other's timings (and 30 s write blocks)
// meaningless. A test that waits logs the holder (PID and test name), and
// waits until 2 minutes before its own -timeout deadline at most; then it skips
// (or fails under HEFT_TEST_S3_REQUIRED=1). Give `go test` a -timeout long
// enough for the packages that start SeaweedFS to run one after the other, or
// run them with -p 1.
//
// Within one test binary a semaphore serialises the servers of parallel tests
// the same way; a test that starts a second SeaweedFS while it holds one waits
// for itself and skips at its deadline, so don't.

var seaweedSem = make(chan struct{}, 1)

// lockSeaweedFS takes the SeaweedFS lock for t, released when t ends (after
// the servers' own cleanups, which t registers later and so run first).
func lockSeaweedFS(t testing.TB) {
	t.Helper()
	root, err := BinDir()
	if err != nil {
		unavailable(t, "SeaweedFS lock: %v", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		unavailable(t, "SeaweedFS lock: %v", err)
	}
	deadline := time.Now().Add(30 * time.Minute)
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if end, ok := d.Deadline(); ok {
			deadline = end.Add(-2 * time.Minute)
		}
	}
	t0 := time.Now()

	select {
	case seaweedSem <- struct{}{}:
	case <-time.After(time.Until(deadline)):
		unavailable(t, "another test of this binary held the SeaweedFS lock for %s", time.Since(t0).Round(time.Second))
	}
	path := filepath.Join(root, ".seaweedfs.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		<-seaweedSem
		unavailable(t, "SeaweedFS lock: %v", err)
	}
	logged := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			_ = f.Close()
			<-seaweedSem
			unavailable(t, "SeaweedFS lock %s: %v", path, err)
		}
		holder := readHolder(path)
		if time.Now().After(deadline) {
			_ = f.Close()
			<-seaweedSem
			unavailable(t, "SeaweedFS lock %s still held by %s after %s (another go test process runs SeaweedFS)", path, holder, time.Since(t0).Round(time.Second))
		}
		if !logged {
			t.Logf("waiting for the SeaweedFS lock %s, held by %s", path, holder)
			logged = true
		}
		time.Sleep(250 * time.Millisecond)
	}
	if logged {
		t.Logf("got the SeaweedFS lock after %s", time.Since(t0).Round(100*time.Millisecond))
	}
	// Record the holder for the messages of waiting processes.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d, test %s\n", os.Getpid(), t.Name())), 0)
	}
	t.Cleanup(func() {
		_ = f.Truncate(0)
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		_ = f.Close()
		<-seaweedSem
	})
}

func readHolder(path string) string {
	b, err := os.ReadFile(path)
	if s := strings.TrimSpace(string(b)); err == nil && s != "" {
		return s
	}
	return "an unknown process"
}
