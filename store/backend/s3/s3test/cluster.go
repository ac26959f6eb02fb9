package s3test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ClusterOptions shape a SeaweedCluster. The zero value is the layout of
// docs/object-storage.md §2.8.
type ClusterOptions struct {
	// Replication is the master's -defaultReplication. Default "001": one
	// extra copy on another server of the same rack, so with two volume
	// servers every volume has a copy on each.
	Replication string
	// MaxVolumes is each volume server's -max. Default 40. Every bucket takes
	// 6 volumes (SeaweedFS's growth for two copies) on each server on its
	// first write, and the readiness probe has a bucket of its own.
	MaxVolumes int
	// VolumeSizeLimitMB is the master's -volumeSizeLimitMB. Default 256.
	VolumeSizeLimitMB int
}

// Cluster is a SeaweedFS cluster of separate processes on 127.0.0.1: a master,
// two volume servers and a filer with an embedded S3 gateway (the embedded
// *Server, whose Config and NewBucket work as for the other servers).
type Cluster struct {
	*Server

	bin    string
	master string // 127.0.0.1:PORT of the master
	mu     sync.Mutex
	procs  map[string]*proc // "master", "volume0", "volume1", "filer"
	vols   [2]volumeSpec
}

type volumeSpec struct {
	name string
	dir  string
	port int
	args []string
}

// proc is one running weed process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

// SeaweedCluster starts a master, two volume servers and a filer with S3 on
// free loopback ports, over fresh directories, with telemetry off and
// replication 001 (docs/object-storage.md §2.8), and waits until a replicated
// write works (about 15 s on a 2-core machine). Everything stops when t ends.
// Gated like SeaweedFS: it runs only under HEFT_TEST_SEAWEEDFS=1, and holds the
// host-wide SeaweedFS lock for its whole life.
func SeaweedCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if os.Getenv("HEFT_TEST_SEAWEEDFS") != "1" {
		t.Skip("SeaweedFS tests are opt-in (a 15 s start of four processes, about 1 GB of memory, and a 5-minute build the first time): set HEFT_TEST_SEAWEEDFS=1")
	}
	if opts.Replication == "" {
		opts.Replication = "001"
	}
	if opts.MaxVolumes == 0 {
		opts.MaxVolumes = 40
	}
	if opts.VolumeSizeLimitMB == 0 {
		opts.VolumeSizeLimitMB = 256
	}
	bin, err := seaweedBinary(t)
	if err != nil {
		unavailable(t, "SeaweedFS %s is not available for the S3 tests: %v", SeaweedFSVersion, err)
	}
	lockSeaweedFS(t)

	var lastErr error
	for try := 0; try < 3; try++ {
		c, err := startCluster(t, bin, opts, try)
		if err == nil {
			return c
		}
		lastErr = err
	}
	t.Fatalf("SeaweedFS cluster did not become writable: %v", lastErr)
	return nil
}

// startCluster makes one attempt on fresh ports; on failure it stops what it
// started and returns why.
func startCluster(t testing.TB, bin string, opts ClusterOptions, try int) (*Cluster, error) {
	dir := t.TempDir()
	// master, volume0, volume1, filer, s3: each HTTP port's +10000 (gRPC) is
	// free too.
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, master: "127.0.0.1:" + strconv.Itoa(ports[0]), procs: map[string]*proc{}}
	name := fmt.Sprintf("SeaweedFS %s cluster (master, 2 volume servers, filer+S3; replication %s)", SeaweedFSVersion, opts.Replication)
	c.Server = &Server{Name: name, Endpoint: "http://127.0.0.1:" + strconv.Itoa(ports[4]), Dir: dir}

	s3json := filepath.Join(dir, "s3.json")
	identities := fmt.Sprintf(`{"identities": [{"name": "test", "credentials": [{"accessKey": %q, "secretKey": %q}], "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}`, AccessKey, SecretKey)
	if err := os.WriteFile(s3json, []byte(identities), 0o600); err != nil {
		t.Fatal(err)
	}
	mkdir := func(sub string) string {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	local := []string{"-ip=127.0.0.1", "-ip.bind=127.0.0.1"}
	masterArgs := append([]string{"master"}, local...)
	masterArgs = append(masterArgs, "-port="+strconv.Itoa(ports[0]), "-mdir="+mkdir("master"),
		"-defaultReplication="+opts.Replication, "-volumeSizeLimitMB="+strconv.Itoa(opts.VolumeSizeLimitMB),
		"-telemetry=false")
	for i := range c.vols {
		v := volumeSpec{name: fmt.Sprintf("volume%d", i), dir: mkdir(fmt.Sprintf("volume%d", i)), port: ports[1+i]}
		v.args = append([]string{"volume"}, local...)
		v.args = append(v.args, "-port="+strconv.Itoa(v.port), "-dir="+v.dir, "-max="+strconv.Itoa(opts.MaxVolumes),
			"-master="+c.master, "-rack=r1", "-preStopSeconds=0")
		c.vols[i] = v
	}
	filerDir := mkdir("filer")
	filerArgs := append([]string{"filer"}, local...)
	filerArgs = append(filerArgs, "-port="+strconv.Itoa(ports[3]), "-master="+c.master,
		"-defaultStoreDir="+filerDir, "-s3", "-s3.port="+strconv.Itoa(ports[4]), "-s3.config="+s3json,
		"-s3.port.iceberg=0", "-s3.port.lance=0")

	t.Cleanup(func() {
		c.stopAll()
		if t.Failed() {
			for _, n := range []string{"master", "volume0", "volume1", "filer"} {
				if p := c.procs[n]; p != nil {
					t.Logf("SeaweedFS %s log (%s):\n%s", n, p.log, tail(p.log, 3000))
				}
			}
		}
	})
	t0 := time.Now()
	if err := c.run("master", dir, masterArgs, try); err != nil {
		return nil, err
	}
	for i, v := range c.vols {
		if err := c.run(v.name, dir, v.args, try); err != nil {
			return nil, fmt.Errorf("volume server %d: %w", i, err)
		}
	}
	if err := c.run("filer", filerDir, filerArgs, try); err != nil {
		return nil, err
	}
	c.client, err = minio.New(strings.TrimPrefix(c.Endpoint, "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The probe's PUT needs a replicated volume, so it succeeds only once both
	// volume servers have registered with the master.
	err = waitWritable(c.client, c.anyExited(), 120*time.Second)
	if err != nil {
		c.stopAll()
		return nil, fmt.Errorf("%w; logs:\n%s", err, c.logTails(1500))
	}
	t.Logf("%s ready at %s in %s", name, c.Endpoint, time.Since(t0).Round(time.Millisecond))
	return c, nil
}

// run starts the weed process name with args in dir.
func (c *Cluster) run(name, dir string, args []string, try int) error {
	logPath := filepath.Join(c.Dir, fmt.Sprintf("%s-%d.log", name, try))
	c.mu.Lock()
	if old := c.procs[name]; old != nil {
		logPath = old.log // a restart appends to the same log
	}
	c.mu.Unlock()
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("start weed %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return nil
}

// anyExited is closed when any process of the cluster exits.
func (c *Cluster) anyExited() <-chan struct{} {
	out := make(chan struct{})
	c.mu.Lock()
	var chans []chan struct{}
	for _, p := range c.procs {
		chans = append(chans, p.exited)
	}
	c.mu.Unlock()
	var once sync.Once
	for _, ch := range chans {
		go func() {
			<-ch
			once.Do(func() { close(out) })
		}()
	}
	return out
}

func (c *Cluster) logTails(n int) string {
	var b strings.Builder
	for _, name := range []string{"master", "volume0", "volume1", "filer"} {
		if p := c.procs[name]; p != nil {
			fmt.Fprintf(&b, "--- %s:\n%s\n", name, tail(p.log, n))
		}
	}
	return b.String()
}

// stopAll kills every process (the directories are thrown away, so there is
// nothing to shut down cleanly) and waits for them to exit.
func (c *Cluster) stopAll() {
	c.mu.Lock()
	procs := make([]*proc, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Kill() // also ends a SIGSTOPped process
	}
	for _, p := range procs {
		<-p.exited
	}
}

// MasterURL is http://127.0.0.1:PORT of the master.
func (c *Cluster) MasterURL() string { return "http://" + c.master }

// VolumeDir is the data directory of volume server i (0 or 1).
func (c *Cluster) VolumeDir(i int) string { return c.vols[i].dir }

// VolumeAddr is 127.0.0.1:PORT of volume server i.
func (c *Cluster) VolumeAddr(i int) string { return "127.0.0.1:" + strconv.Itoa(c.vols[i].port) }

func (c *Cluster) volume(t testing.TB, i int) *proc {
	t.Helper()
	if i < 0 || i >= len(c.vols) {
		t.Fatalf("no volume server %d (there are %d)", i, len(c.vols))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[c.vols[i].name]
}

// StopVolume kills volume server i with SIGKILL, as a crash or a lost machine
// would, and waits until it has exited. Its directory and port are kept for
// RestartVolume.
func (c *Cluster) StopVolume(t testing.TB, i int) {
	t.Helper()
	p := c.volume(t, i)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill volume server %d: %v", i, err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("volume server %d did not exit 10 s after SIGKILL", i)
	}
}

// FreezeVolume stops volume server i with SIGSTOP: its sockets stay open but
// nothing answers, as with a hung process or a network partition. ThawVolume
// resumes it.
func (c *Cluster) FreezeVolume(t testing.TB, i int) {
	t.Helper()
	p := c.volume(t, i)
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP volume server %d: %v", i, err)
	}
}

// ThawVolume resumes a volume server that FreezeVolume stopped.
func (c *Cluster) ThawVolume(t testing.TB, i int) {
	t.Helper()
	p := c.volume(t, i)
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT volume server %d: %v", i, err)
	}
}

// RestartVolume starts volume server i again on its directory and port, after
// StopVolume, and waits until the master lists it again (so that it heartbeats
// and its volumes are known; writes may still take a moment). It returns how
// long that took.
func (c *Cluster) RestartVolume(t testing.TB, i int) time.Duration {
	t.Helper()
	old := c.volume(t, i)
	select {
	case <-old.exited:
	default:
		t.Fatalf("RestartVolume(%d): the volume server is still running (StopVolume first)", i)
	}
	v := c.vols[i]
	t0 := time.Now()
	// The port was free a moment ago; should another process have taken it,
	// the server exits and the next try may find it free again.
	var lastErr error
	for try := 0; try < 5; try++ {
		if err := c.run(v.name, c.Dir, v.args, 0); err != nil {
			t.Fatalf("restart volume server %d: %v", i, err)
		}
		p := c.volume(t, i)
		lastErr = c.waitRegistered(p, v, 60*time.Second)
		if lastErr == nil {
			return time.Since(t0)
		}
		_ = p.cmd.Process.Kill()
		<-p.exited
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("volume server %d did not come back on %s: %v\n%s", i, c.VolumeAddr(i), lastErr, tail(c.volume(t, i).log, 3000))
	return 0
}

// waitRegistered polls the master's topology until it lists volume server v.
func (c *Cluster) waitRegistered(p *proc, v volumeSpec, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	addr := "127.0.0.1:" + strconv.Itoa(v.port)
	for {
		select {
		case <-p.exited:
			return errors.New("the volume server exited")
		default:
		}
		ok, err := c.masterLists(addr)
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the master does not list %s after %s (last error: %v)", addr, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// masterLists reports whether the master's /dir/status lists the volume server
// at addr.
func (c *Cluster) masterLists(addr string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.MasterURL()+"/dir/status", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return false, err
	}
	return strings.Contains(string(body), `"`+addr+`"`), nil
}
