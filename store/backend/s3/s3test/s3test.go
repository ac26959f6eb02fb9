// Package s3test starts S3-compatible servers on 127.0.0.1 for tests
// (docs/object-storage.md §9.1): versitygw, the fast target every test run
// uses, and SeaweedFS (`weed mini`), the distributed store, when its binary is
// available.
//
// Binaries live outside the repository, in $HEFT_TEST_BIN or else
// $XDG_CACHE_HOME/heft-test-bin (~/.cache/heft-test-bin), one directory per
// pinned version. A missing versitygw is built there with `go install` (about
// a minute and 0.8 GB of Go caches, once). SeaweedFS runs only when
// HEFT_TEST_SEAWEEDFS=1: it takes 5 s to start and 0.8 GB of memory, and a
// missing binary is built with the copy recipe of docs/object-storage.md §2.2
// (about 5 minutes and 4 GB of Go caches, once). SeaweedCluster (cluster.go)
// starts a master, two volume servers and a filer with replication, for the
// failure tests. SeaweedFS servers of concurrent test processes run one at a
// time, under a lock file in the binary directory (lock.go).
//
// A test that cannot get a server skips with the reason, unless
// HEFT_TEST_S3_REQUIRED=1, which makes it fail (for CI, where a silent skip
// would hide a broken setup). HEFT_TEST_NO_INSTALL=1 forbids building.
package s3test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sys/unix"

	"github.com/heft-dev/heft/store/backend/s3"
)

// Pinned versions (docs/object-storage.md §1).
const (
	VersityGWVersion = "v1.8.0"
	SeaweedFSVersion = "v0.0.0-20261109003541-7506e5f91cd6" // weed version 4.53
)

// Test credentials of every server started here.
const (
	AccessKey = "testaccess"
	SecretKey = "testsecret1234"
)

// Server is a running S3-compatible server.
type Server struct {
	// Name says which server and version, for logs and reports.
	Name string
	// Endpoint is http://127.0.0.1:PORT.
	Endpoint string
	// Dir holds its data and its log.
	Dir string

	client  *minio.Client
	buckets atomic.Int64
}

// Config returns a Config for bucket on this server, with fast retries for
// tests and ConsistentList (both servers list consistently, as measured in
// docs/object-storage.md §6).
func (s *Server) Config(bucket, prefix string) s3.Config {
	return s3.Config{
		Endpoint:        s.Endpoint,
		Region:          "us-east-1",
		Bucket:          bucket,
		Prefix:          prefix,
		AccessKeyID:     AccessKey,
		SecretAccessKey: SecretKey,
		ConsistentList:  true,
		RetryBaseDelay:  20 * time.Millisecond,
		RetryMaxDelay:   500 * time.Millisecond,
	}
}

// NewBucket creates a bucket with a fresh name and returns the name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("heft-test-%d-%d", os.Getpid(), s.buckets.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("%s: make bucket %s: %v", s.Name, name, err)
	}
	return name
}

// BinDir is where test binaries are cached.
func BinDir() (string, error) {
	if d := os.Getenv("HEFT_TEST_BIN"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory for test binaries (set HEFT_TEST_BIN): %w", err)
	}
	return filepath.Join(d, "heft-test-bin"), nil
}

// unavailable skips the test, or fails it under HEFT_TEST_S3_REQUIRED=1.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("HEFT_TEST_S3_REQUIRED") == "1" {
		t.Fatalf("%s (failing, not skipping: HEFT_TEST_S3_REQUIRED=1)", msg)
	}
	t.Skipf("skipping: %s", msg)
}

// VersityGW starts versitygw over a fresh directory; it stops when t ends.
func VersityGW(t testing.TB) *Server {
	t.Helper()
	bin, err := versityBinary(t)
	if err != nil {
		unavailable(t, "versitygw %s is not available for the S3 tests: %v", VersityGWVersion, err)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	return start(t, "versitygw "+VersityGWVersion, dir, func(port int) *exec.Cmd {
		cmd := exec.Command(bin, "--port", "127.0.0.1:"+strconv.Itoa(port), "--quiet", "posix", data)
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+AccessKey, "ROOT_SECRET_ACCESS_KEY="+SecretKey)
		return cmd
	}, 20*time.Second)
}

// SeaweedFS starts `weed mini` over a fresh directory; it stops when t ends.
// mini also opens fixed admin ports (12535, 22535, 23646), so only one can run
// on a host at a time: it holds the host-wide SeaweedFS lock (lock.go) from
// before it starts until after it has stopped, and waits for it first.
func SeaweedFS(t testing.TB) *Server {
	t.Helper()
	if os.Getenv("HEFT_TEST_SEAWEEDFS") != "1" {
		t.Skip("SeaweedFS tests are opt-in (a 5 s start, 0.8 GB of memory, and a 5-minute build the first time): set HEFT_TEST_SEAWEEDFS=1")
	}
	bin, err := seaweedBinary(t)
	if err != nil {
		unavailable(t, "SeaweedFS %s is not available for the S3 tests: %v", SeaweedFSVersion, err)
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	lockSeaweedFS(t) // before start, so that its release runs after start's stop
	return start(t, "SeaweedFS weed mini "+SeaweedFSVersion, dir, func(port int) *exec.Cmd {
		// Each HTTP port has a gRPC port at +10000; freePorts keeps both free.
		ports, err := freePorts(3)
		if err != nil {
			return nil
		}
		cmd := exec.Command(bin, "mini", "-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
			"-master.telemetry=false", "-webdav=false", "-admin.ui=false",
			"-s3.port.iceberg=0", "-s3.port.lance=0",
			"-master.port="+strconv.Itoa(ports[0]), "-volume.port="+strconv.Itoa(ports[1]),
			"-filer.port="+strconv.Itoa(ports[2]), "-s3.port="+strconv.Itoa(port))
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+AccessKey, "AWS_SECRET_ACCESS_KEY="+SecretKey)
		return cmd
	}, 90*time.Second)
}

// start runs the command mk builds for a free port, waits until a bucket can be
// created and an object written and read back (docs/object-storage.md §2.6: the
// port answers before writes work), and stops the server by its PID when t
// ends. It tries three ports, in case another process takes one first.
func start(t testing.TB, name, dir string, mk func(port int) *exec.Cmd, ready time.Duration) *Server {
	t.Helper()
	var lastErr error
	for try := 0; try < 3; try++ {
		ports, err := freePorts(1)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		port := ports[0]
		cmd := mk(port)
		if cmd == nil {
			lastErr = errors.New("no free ports")
			continue
		}
		logPath := filepath.Join(dir, fmt.Sprintf("server-%d.log", try))
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.Dir = dir
		setPdeathsig(cmd)
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			_ = logFile.Close()
			unavailable(t, "%s: start: %v", name, err)
		}
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			_ = logFile.Close()
			close(exited)
		}()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		s := &Server{Name: name, Endpoint: "http://127.0.0.1:" + strconv.Itoa(port), Dir: dir}
		s.client, err = minio.New("127.0.0.1:"+strconv.Itoa(port), &minio.Options{
			Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
			Region:       "us-east-1",
			BucketLookup: minio.BucketLookupPath,
		})
		if err != nil {
			stop()
			t.Fatal(err)
		}
		err = waitWritable(s.client, exited, ready)
		if err == nil {
			t.Logf("%s ready at %s in %s", name, s.Endpoint, time.Since(t0).Round(time.Millisecond))
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("%s log (%s):\n%s", name, logPath, tail(logPath, 4000))
				}
			})
			return s
		}
		stop()
		lastErr = fmt.Errorf("%w; log:\n%s", err, tail(logPath, 2000))
	}
	t.Fatalf("%s did not become writable: %v", name, lastErr)
	return nil
}

// waitWritable polls with a real write until the server takes it.
func waitWritable(c *minio.Client, exited <-chan struct{}, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := probeOnce(c)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("server exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not writable after %s: %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func probeOnce(c *minio.Client) error {
	// Writes may hang while a server warms up: bound each attempt.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	const bucket = "heft-probe"
	ok, err := c.BucketExists(ctx, bucket)
	if err != nil {
		return err
	}
	if !ok {
		if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
			return err
		}
	}
	want := []byte("ready")
	if _, err := c.PutObject(ctx, bucket, "probe", bytes.NewReader(want), int64(len(want)), minio.PutObjectOptions{}); err != nil {
		return err
	}
	obj, err := c.GetObject(ctx, bucket, "probe", minio.GetObjectOptions{})
	if err != nil {
		return err
	}
	defer obj.Close()
	got, err := io.ReadAll(obj)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("probe read back %q", got)
	}
	return c.RemoveObject(ctx, bucket, "probe", minio.RemoveObjectOptions{})
}

// freePorts returns n loopback ports that are free together with port+10000
// (SeaweedFS's gRPC ports). Another process may take one before the server
// binds it; start retries.
func freePorts(n int) ([]int, error) {
	var out []int
	var hold []net.Listener
	defer func() {
		for _, l := range hold {
			_ = l.Close()
		}
	}()
	for tries := 0; len(out) < n && tries < 100; tries++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		hold = append(hold, l)
		p := l.Addr().(*net.TCPAddr).Port
		if p+10000 > 65535 {
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		if err != nil {
			continue
		}
		hold = append(hold, l2)
		out = append(out, p)
	}
	if len(out) < n {
		return nil, errors.New("no free loopback ports")
	}
	return out, nil
}

// tail returns the last n bytes of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return lastBytes(data, n)
}

func lastBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

var installMu sync.Mutex

// versityBinary returns the cached versitygw, building it with go install when
// missing (about a minute, once).
func versityBinary(t testing.TB) (string, error) {
	return cachedBinary(t, "versitygw", VersityGWVersion, "versitygw", "about a minute", func(dir string) error {
		return goCmd(dir, 10*time.Minute, "install", "github.com/versity/versitygw/cmd/versitygw@"+VersityGWVersion)
	})
}

// seaweedBinary returns the cached weed binary, building it when missing with
// the copy recipe of docs/object-storage.md §2.2 (about 5 minutes and 4 GB of
// Go caches on a 2-core machine, once).
func seaweedBinary(t testing.TB) (string, error) {
	return cachedBinary(t, "SeaweedFS", SeaweedFSVersion, "weed", "several minutes", buildSeaweedFS)
}

// cachedBinary returns BinDir()/FILE-VERSION/FILE, running build(dir) to
// make it when missing (serialised across processes by a lock file, since
// several test binaries may start at once), unless HEFT_TEST_NO_INSTALL=1.
func cachedBinary(t testing.TB, what, version, file, takes string, build func(dir string) error) (string, error) {
	root, err := BinDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, file+"-"+version)
	bin := filepath.Join(dir, file)
	return bin, ensure(t, root, bin, func() error {
		if os.Getenv("HEFT_TEST_NO_INSTALL") == "1" {
			return fmt.Errorf("%s is missing and HEFT_TEST_NO_INSTALL=1", bin)
		}
		t.Logf("building %s %s into %s (%s, once)", what, version, dir, takes)
		return build(dir)
	})
}

// ensure runs build when bin does not exist yet, under a lock in root.
func ensure(t testing.TB, root, bin string, build func() error) error {
	if _, err := os.Stat(bin); err == nil {
		return nil
	}
	installMu.Lock()
	defer installMu.Unlock()
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(root, ".install.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	defer func() { _ = unix.Flock(int(lock.Fd()), unix.LOCK_UN) }()
	if _, err := os.Stat(bin); err == nil {
		return nil // another process built it while we waited
	}
	if err := build(); err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("build finished but %s is missing", bin)
	}
	return nil
}

// goCmd runs the go command outside any module, with GOBIN=gobin.
func goCmd(gobin string, timeout time.Duration, args ...string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("no go command to build with: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = os.TempDir() // outside the heft module, so its go.mod is untouched
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-mod=mod", "GO111MODULE=on")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, lastBytes(out, 2000))
	}
	return nil
}

// buildSeaweedFS is docs/object-storage.md §2.2: go install refuses the module
// (its go.mod has a replace directive), so download it, copy it out of the
// read-only module cache and build inside the copy, where its go.mod and go.sum
// are the main module's.
func buildSeaweedFS(dir string) error {
	if err := goCmd(dir, 10*time.Minute, "mod", "download", "github.com/seaweedfs/seaweedfs@"+SeaweedFSVersion); err != nil {
		return err
	}
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return fmt.Errorf("go env GOMODCACHE: %w", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "github.com", "seaweedfs", "seaweedfs@"+SeaweedFSVersion)
	tmp, err := os.MkdirTemp("", "seaweedfs-build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.CopyFS(tmp, os.DirFS(src)); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", filepath.Join(dir, "weed.tmp"), "./weed")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build weed: %v\n%s", err, lastBytes(out, 2000))
	}
	return os.Rename(filepath.Join(dir, "weed.tmp"), filepath.Join(dir, "weed"))
}
