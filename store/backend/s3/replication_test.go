package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/s3"
	"github.com/heft-dev/heft/store/backend/s3/s3test"
)

// Replication and failure tests on a SeaweedFS cluster of separate processes
// (master, two volume servers, filer+S3, replication 001: every volume has a
// copy on each volume server). Issue 7's acceptance: stopping one volume server
// during downloads does not fail them, and writes during the outage fail with
// a clear, retriable error and succeed once it is back. The figures these
// tests log are in docs/s3-replication.md.

// TestConformanceSeaweedFSCluster runs the conformance suite on the replicated
// cluster, not just on `weed mini`.
func TestConformanceSeaweedFSCluster(t *testing.T) {
	c := s3test.SeaweedCluster(t, s3test.ClusterOptions{})
	runSuite(t, c.Server, nil)
}

// retryLog collects the backend's lines about failed attempts and resumed
// streams.
type retryLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *retryLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

// take returns the lines since the last take.
func (l *retryLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.lines
	l.lines = nil
	return out
}

func summarize(lines []string) string {
	resumes, retries := 0, 0
	for _, s := range lines {
		switch {
		case strings.Contains(s, "stream broke"):
			resumes++
		case strings.Contains(s, "retrying"), strings.Contains(s, "giving up"):
			retries++
		}
	}
	out := fmt.Sprintf("%d stream resumes, %d failed request attempts", resumes, retries)
	for i, s := range lines {
		if i == 6 {
			out += fmt.Sprintf("\n\t... %d more", len(lines)-i)
			break
		}
		out += "\n\t" + s
	}
	return out
}

// maxDur is a concurrently updated maximum.
type maxDur struct{ v atomic.Int64 }

func (m *maxDur) add(d time.Duration) {
	for {
		old := m.v.Load()
		if int64(d) <= old || m.v.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

func (m *maxDur) get() time.Duration { return time.Duration(m.v.Load()) }

type replObject struct {
	name string
	data []byte
}

// downloadRound reads every object concurrently, through paced Get streams
// (each lasts about streamTime, so that they are in flight when the volume
// server goes) and ReadAt loops, takes volume server victim away stopAfter
// into the round (killed, or frozen with SIGSTOP when freeze is set), and
// checks that every read returns the right bytes. The volume server stays
// down afterwards. It logs the longest single Read and ReadAt calls.
func downloadRound(t *testing.T, c *s3test.Cluster, b *s3.Backend, objs []replObject, victim int, freeze bool, log *retryLog) {
	const (
		streamTime = 6 * time.Second
		stopAfter  = 2 * time.Second
		readers    = 4
	)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var (
		streamStall, readAtStall, readAtBefore maxDur
		readAts, streams                       atomic.Int64
		stopped                                atomic.Bool
	)
	g, gctx := errgroup.WithContext(ctx)
	// Two paced streams per object: the whole object, and a range from its
	// middle to near its end.
	for i, o := range objs {
		for j, rng := range [][2]int64{{0, -1}, {int64(len(o.data)) / 2, int64(len(o.data))/2 - 7}} {
			g.Go(func() error {
				off, n := rng[0], rng[1]
				want := o.data[off:]
				if n >= 0 {
					want = want[:n]
				}
				rc, info, err := b.Get(gctx, o.name, off, n)
				if err != nil {
					return fmt.Errorf("Get %s [%d, +%d): %w", o.name, off, n, err)
				}
				defer rc.Close()
				if info.Size != int64(len(o.data)) {
					return fmt.Errorf("Get %s: size %d, want %d", o.name, info.Size, len(o.data))
				}
				got := make([]byte, 0, len(want))
				buf := make([]byte, 64<<10)
				t0 := time.Now()
				for {
					r0 := time.Now()
					k, err := rc.Read(buf)
					streamStall.add(time.Since(r0))
					got = append(got, buf[:k]...)
					if err == io.EOF {
						break
					}
					if err != nil {
						return fmt.Errorf("Get %s (stream %d.%d) at byte %d of %d: %w", o.name, i, j, len(got), len(want), err)
					}
					// Pace the stream: byte k of n is due at k/n × streamTime.
					due := t0.Add(time.Duration(float64(streamTime) * float64(len(got)) / float64(len(want))))
					time.Sleep(time.Until(due))
				}
				if !bytes.Equal(got, want) {
					return fmt.Errorf("Get %s (stream %d.%d): %d bytes read, wrong content", o.name, i, j, len(got))
				}
				streams.Add(1)
				return nil
			})
		}
	}
	// ReadAt loops until the streams are done and then another 2 s of the
	// outage.
	done := make(chan struct{})
	var rg errgroup.Group
	for w := range readers {
		rg.Go(func() error {
			r := rand.New(rand.NewPCG(uint64(w), 9))
			p := make([]byte, 2<<20)
			for {
				select {
				case <-done:
					return nil
				default:
				}
				o := objs[r.IntN(len(objs))]
				n := 1 + r.IntN(min(len(p), len(o.data)))
				off := r.IntN(len(o.data) - n + 1)
				r0 := time.Now()
				k, err := b.ReadAt(ctx, o.name, p[:n], int64(off))
				d := time.Since(r0)
				if stopped.Load() {
					readAtStall.add(d)
				} else {
					readAtBefore.add(d)
				}
				if err != nil {
					return fmt.Errorf("ReadAt %s [%d, +%d): %d bytes, %w", o.name, off, n, k, err)
				}
				if !bytes.Equal(p[:n], o.data[off:off+n]) {
					return fmt.Errorf("ReadAt %s [%d, +%d): wrong content", o.name, off, n)
				}
				readAts.Add(1)
			}
		})
	}
	time.Sleep(stopAfter)
	ts := time.Now()
	how := "killed (SIGKILL)"
	if freeze {
		how = "frozen (SIGSTOP)"
		c.FreezeVolume(t, victim)
	} else {
		c.StopVolume(t, victim)
	}
	stopped.Store(true)
	t.Logf("volume server %d (%s) %s %s into the downloads", victim, c.VolumeAddr(victim), how, stopAfter)
	streamErr := g.Wait()
	time.Sleep(2 * time.Second)
	close(done)
	readErr := rg.Wait()
	if streamErr != nil || readErr != nil {
		t.Fatalf("downloads with volume server %d stopped: %v", victim, errors.Join(streamErr, readErr))
	}
	t.Logf("volume server %d down: %d paced Get streams and %d ReadAt calls (up to 2 MiB) all returned the right bytes; "+
		"longest Read call of a stream %s; longest ReadAt %s after the stop (%s before); downloads ran %s past the stop; %s",
		victim, streams.Load(), readAts.Load(), streamStall.get().Round(time.Millisecond),
		readAtStall.get().Round(time.Millisecond), readAtBefore.get().Round(time.Millisecond),
		time.Since(ts).Round(100*time.Millisecond), summarize(log.take()))

	// Fresh whole-object downloads with the volume server already gone.
	t0 := time.Now()
	for _, o := range objs {
		got, _, err := backend.ReadAll(ctx, b, o.name)
		if err != nil || !bytes.Equal(got, o.data) {
			t.Fatalf("ReadAll %s with volume server %d down: equal=%v, %v", o.name, victim, bytes.Equal(got, o.data), err)
		}
	}
	t.Logf("volume server %d down: fresh ReadAll of all %d objects in %s; %s", victim, len(objs), time.Since(t0).Round(time.Millisecond), summarize(log.take()))
}

// collectionBytes sums the sizes of the .dat volume files of collection in dir.
func collectionBytes(t *testing.T, dir, collection string) (files int, size int64) {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, collection+"_*.dat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		size += st.Size()
	}
	return len(m), size
}

// waitWritable polls with single-attempt Puts until one succeeds, and returns
// how long that took.
func waitWritable(t *testing.T, cfg s3.Config) time.Duration {
	t.Helper()
	cfg.MaxAttempts = 1
	cfg.Logf = nil
	b, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	t0 := time.Now()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := b.Put(ctx, "probe", bytes.NewReader([]byte("x")), 1)
		cancel()
		if err == nil {
			return time.Since(t0)
		}
		if time.Since(t0) > 2*time.Minute {
			t.Fatalf("no write succeeded in %s after the volume server came back: %v", time.Since(t0), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSeaweedFSVolumeServerOutage: with replication 001 on two volume servers,
// downloads ride out the loss of either volume server; with one down, writes
// fail with ErrTransient (SeaweedFS needs every replica for a write) and
// succeed again once it is back.
func TestSeaweedFSVolumeServerOutage(t *testing.T) {
	c := s3test.SeaweedCluster(t, s3test.ClusterOptions{})
	bucket := c.NewBucket(t)
	log := &retryLog{}
	cfg := c.Config(bucket, "repl")
	cfg.PartSize = s3.MinPartSize // objects above 5 MiB go up in parts
	cfg.Logf = log.logf
	b, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()

	// Objects below and above the multipart threshold.
	sizes := []int{100 << 10, 3 << 20, 12<<20 + 17, 24 << 20, 40<<20 + 5}
	objs := make([]replObject, len(sizes))
	var g errgroup.Group
	t0 := time.Now()
	for i, n := range sizes {
		objs[i] = replObject{name: fmt.Sprintf("packs/obj%d", i), data: payload(uint64(100+i), n)}
		g.Go(func() error {
			_, err := b.Put(ctx, objs[i].name, bytes.NewReader(objs[i].data), int64(n))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("upload: %v", err)
	}
	total := 0
	for _, n := range sizes {
		total += n
	}
	t.Logf("uploaded %d objects (%.1f MiB, %d above the 5 MiB part size) in %s",
		len(objs), float64(total)/(1<<20), 3, time.Since(t0).Round(time.Millisecond))
	// Both volume servers hold a full copy of the bucket's volumes.
	f0, s0 := collectionBytes(t, c.VolumeDir(0), bucket)
	f1, s1 := collectionBytes(t, c.VolumeDir(1), bucket)
	if f0 == 0 || f0 != f1 || s0 != s1 || s0 < int64(total) {
		t.Fatalf("replication: volume server 0 has %d files of %d bytes, 1 has %d of %d; want the same, at least %d bytes", f0, s0, f1, s1, total)
	}
	t.Logf("replicated: each volume server holds %d volume files of the bucket, %d bytes", f0, s0)
	_ = log.take()

	// Round 1: lose volume server 0 during downloads, then bring it back.
	downloadRound(t, c, b, objs, 0, false, log)
	d := c.RestartVolume(t, 0)
	w := waitWritable(t, cfg)
	t.Logf("volume server 0 restarted: the master listed it after %s, a write worked %s later", d.Round(time.Millisecond), w.Round(time.Millisecond))

	// Round 2: lose volume server 1 during downloads; it stays down for the
	// writes.
	downloadRound(t, c, b, objs, 1, false, log)

	// Writes while volume server 1 is down. Two attempts per request keep the
	// test short: SeaweedFS holds each for 30 s.
	wcfg := cfg
	wcfg.MaxAttempts = 2
	wb, err := s3.New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wb.Close() })
	type write struct {
		op   string
		name string
		data []byte
	}
	writes := []write{
		{"put", "new/small", payload(200, 1<<20)},
		{"put", "new/large", payload(201, 12<<20)},
		{"put-if-absent", "new/small-cond", payload(202, 1<<20)},
		{"put-if-absent", "new/large-cond", payload(203, 12<<20)},
	}
	do := func(b *s3.Backend, w write) error {
		var err error
		if w.op == "put" {
			_, err = b.Put(ctx, w.name, bytes.NewReader(w.data), int64(len(w.data)))
		} else {
			_, err = b.PutIfAbsent(ctx, w.name, bytes.NewReader(w.data), int64(len(w.data)))
		}
		return err
	}
	// A Put with the default retry budget (8 attempts), started with the
	// others, must ride out the outage once the volume server comes back.
	long := write{"put", "new/rides-out", payload(204, 2<<20)}
	lcfg := cfg
	lcfg.MaxAttempts = s3.DefaultMaxAttempts
	lb, err := s3.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lb.Close() })
	longDone := make(chan error, 1)
	var longEnd atomic.Int64
	tw := time.Now()
	go func() {
		err := do(lb, long)
		longEnd.Store(time.Now().UnixNano())
		longDone <- err
	}()
	errs := make([]error, len(writes))
	took := make([]time.Duration, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Go(func() {
			t0 := time.Now()
			errs[i] = do(wb, w)
			took[i] = time.Since(t0)
		})
	}
	wg.Wait()
	accepted := 0
	for i, w := range writes {
		err := errs[i]
		if err == nil {
			// SeaweedFS took it with one replica: it must read back.
			accepted++
			got, _, rerr := backend.ReadAll(ctx, b, w.name)
			if rerr != nil || !bytes.Equal(got, w.data) {
				t.Fatalf("%s %s succeeded with volume server 1 down but reads back wrong: %v", w.op, w.name, rerr)
			}
			t.Logf("%s %s (%d bytes) with volume server 1 down: SUCCEEDED in %s", w.op, w.name, len(w.data), took[i].Round(time.Millisecond))
			continue
		}
		if !backend.IsTransient(err) {
			t.Fatalf("%s %s with volume server 1 down: %v; want an error wrapping backend.ErrTransient", w.op, w.name, err)
		}
		for _, want := range []string{"s3://" + bucket + "/repl/" + w.name, "may be retried", "gave up after 2 attempts"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s %s: error %q does not say %q", w.op, w.name, err, want)
			}
		}
		// A failed write publishes nothing.
		if _, serr := b.Stat(ctx, w.name); !errors.Is(serr, backend.ErrNotFound) {
			t.Fatalf("%s %s failed, but Stat says %v; want ErrNotFound", w.op, w.name, serr)
		}
		t.Logf("%s %s (%d bytes) with volume server 1 down: failed after %s: %v", w.op, w.name, len(w.data), took[i].Round(time.Millisecond), err)
	}
	t.Logf("writes with volume server 1 down: %d of %d failed with ErrTransient, %d accepted; %s", len(writes)-accepted, len(writes), accepted, summarize(log.take()))
	select {
	case err := <-longDone:
		t.Fatalf("the Put with 8 attempts returned before volume server 1 came back (after %s): %v", time.Since(tw), err)
	default:
	}

	// Back: the same writes succeed and read back.
	outage := time.Since(tw)
	tr := time.Now()
	d = c.RestartVolume(t, 1)
	w = waitWritable(t, cfg)
	t.Logf("volume server 1 restarted after %s of writes failing: the master listed it after %s, a write worked %s later",
		outage.Round(100*time.Millisecond), d.Round(time.Millisecond), w.Round(time.Millisecond))
	for _, w := range writes {
		t0 := time.Now()
		if err := do(b, w); err != nil {
			t.Fatalf("%s %s after volume server 1 came back: %v", w.op, w.name, err)
		}
		got, _, err := backend.ReadAll(ctx, b, w.name)
		if err != nil || !bytes.Equal(got, w.data) {
			t.Fatalf("%s %s after volume server 1 came back reads back wrong: %v", w.op, w.name, err)
		}
		t.Logf("%s %s after volume server 1 came back: OK in %s", w.op, w.name, time.Since(t0).Round(time.Millisecond))
	}
	select {
	case err := <-longDone:
		if err != nil {
			t.Fatalf("the Put with 8 attempts started during the outage: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the Put with 8 attempts started during the outage did not finish 2 minutes after volume server 1 came back")
	}
	got, _, err := backend.ReadAll(ctx, b, long.name)
	if err != nil || !bytes.Equal(got, long.data) {
		t.Fatalf("%s rode out the outage but reads back wrong: %v", long.name, err)
	}
	t.Logf("the Put with the default 8 attempts started at the outage succeeded %s after the restart (%s in all); %s",
		time.Unix(0, longEnd.Load()).Sub(tr).Round(time.Millisecond), time.Unix(0, longEnd.Load()).Sub(tw).Round(time.Millisecond), summarize(log.take()))

	// Everything uploaded before is still there, from both replicas.
	for _, o := range objs {
		got, _, err := backend.ReadAll(ctx, b, o.name)
		if err != nil || !bytes.Equal(got, o.data) {
			t.Fatalf("ReadAll %s at the end: %v", o.name, err)
		}
	}
}

// TestSeaweedFSVolumeServerFrozen: a volume server that hangs (SIGSTOP: its
// sockets stay open, nothing answers) instead of dying.
func TestSeaweedFSVolumeServerFrozen(t *testing.T) {
	c := s3test.SeaweedCluster(t, s3test.ClusterOptions{})
	bucket := c.NewBucket(t)
	log := &retryLog{}
	cfg := c.Config(bucket, "frozen")
	cfg.PartSize = s3.MinPartSize
	cfg.Logf = log.logf
	b, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	sizes := []int{100 << 10, 3 << 20, 12<<20 + 17, 24 << 20}
	objs := make([]replObject, len(sizes))
	for i, n := range sizes {
		objs[i] = replObject{name: fmt.Sprintf("packs/obj%d", i), data: payload(uint64(300+i), n)}
		if _, err := b.Put(t.Context(), objs[i].name, bytes.NewReader(objs[i].data), int64(n)); err != nil {
			t.Fatal(err)
		}
	}
	_ = log.take()
	downloadRound(t, c, b, objs, 1, true, log)
	c.ThawVolume(t, 1)
	w := waitWritable(t, cfg)
	t.Logf("volume server 1 thawed (SIGCONT): a write worked %s later", w.Round(time.Millisecond))
}
