package storeremote_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/remote"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/internal/storeremote"
	"github.com/heft-dev/heft/store"
)

// The acceptance tests of the heft remote protocol: a real store behind the real
// handler on 127.0.0.1, and a real client over another store.

var (
	ctx = context.Background()

	modelsOnce sync.Once
	models     struct {
		base, tuned, other string
		err                error
	}
)

// testModels writes, once per test binary, a base model of about 8 MB, a
// fine-tune of it (every tensor changed) and an unrelated model.
func testModels(t *testing.T) (base, tuned, other string) {
	t.Helper()
	modelsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "heft-remote-models-")
		if err != nil {
			models.err = err
			return
		}
		models.base, models.tuned, models.other = filepath.Join(dir, "base"), filepath.Join(dir, "tuned"), filepath.Join(dir, "other")
		cfg := modelgen.Sized(8 << 20)
		if models.err = modelgen.WriteBase(models.base, cfg, modelgen.Options{Seed: 1, Shards: 2}); models.err != nil {
			return
		}
		if models.err = modelgen.FineTune(models.base, models.tuned, modelgen.FineTuneOptions{Seed: 2, DeltaScale: 0.01}); models.err != nil {
			return
		}
		models.err = modelgen.WriteBase(models.other, modelgen.Tiny(), modelgen.Options{Seed: 3})
	})
	if models.err != nil {
		t.Fatal(models.err)
	}
	return models.base, models.tuned, models.other
}

func TestMain(m *testing.M) {
	code := m.Run()
	if models.base != "" {
		os.RemoveAll(filepath.Dir(models.base))
	}
	os.Exit(code)
}

// storeOpts: chunks small enough that an 8 MB model has a few hundred of them.
var storeOpts = store.Options{ChunkSize: 64 << 10, PackSize: 4 << 20}

func newStore(t *testing.T) *store.Store { return store.TestStore(t, storeOpts) }

func importModel(t *testing.T, s *store.Store, dir, ref string) store.ID {
	t.Helper()
	r, err := store.ParseRef(ref)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Import(ctx, dir, store.ImportOptions{Ref: r})
	if err != nil {
		t.Fatal(err)
	}
	return res.Commit
}

// server is a store served over HTTP with three tokens.
type server struct {
	s                     *store.Store
	url                   string
	write, read, stranger string // acme:write, acme:read, other:write
	tokens                *hub.TokenStore
	wrap                  *wrapStore
	ln                    *faultListener
}

func newServer(t *testing.T, opts remote.Options) *server {
	t.Helper()
	return newServerOn(t, newStore(t), opts)
}

// newServerOn serves s.
func newServerOn(t *testing.T, s *store.Store, opts remote.Options) *server {
	t.Helper()
	sv := &server{s: s}
	var err error
	if sv.tokens, err = hub.OpenTokenStore(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, g hub.Grant) string {
		tok, _, err := sv.tokens.Create(name, "alice", []hub.Grant{g}, 0)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	sv.write = mk("w", hub.Grant{Namespace: "acme", Role: hub.RoleWrite})
	sv.read = mk("r", hub.Grant{Namespace: "acme", Role: hub.RoleRead})
	sv.stranger = mk("s", hub.Grant{Namespace: "other", Role: hub.RoleWrite})
	opts.Tokens = sv.tokens
	sv.wrap = &wrapStore{Store: storeremote.New(sv.s)}
	srv := httptest.NewUnstartedServer(remote.NewHandler(sv.wrap, opts))
	sv.ln = &faultListener{Listener: srv.Listener}
	sv.ln.budget.Store(-1)
	srv.Listener = sv.ln
	srv.Start()
	t.Cleanup(srv.Close)
	sv.url = srv.URL
	return sv
}

func client(t *testing.T, url, token string, opts remote.ClientOptions) *remote.Client {
	t.Helper()
	c, err := remote.NewClient(url, token, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wrapStore lets tests watch and disturb the server's store.
type wrapStore struct {
	*storeremote.Store
	onRead   atomic.Pointer[func(o *remote.Object)] // may change the object read for a pull
	onUpdate atomic.Pointer[func()]                 // runs before a ref update
}

func (w *wrapStore) ReadObject(ctx context.Context, id remote.ID, buf []byte) (remote.Object, error) {
	o, err := w.Store.ReadObject(ctx, id, buf)
	if fn := w.onRead.Load(); err == nil && fn != nil {
		(*fn)(&o)
	}
	return o, err
}

func (w *wrapStore) UpdateRef(ctx context.Context, ch remote.RefChange) error {
	if fn := w.onUpdate.Load(); fn != nil {
		(*fn)()
	}
	return w.Store.UpdateRef(ctx, ch)
}

func (w *wrapStore) setOnRead(fn func(o *remote.Object)) {
	if fn == nil {
		w.onRead.Store(nil)
		return
	}
	w.onRead.Store(&fn)
}

func (w *wrapStore) setOnUpdate(fn func()) {
	if fn == nil {
		w.onUpdate.Store(nil)
		return
	}
	w.onUpdate.Store(&fn)
}

// corruptingStore flips a byte of one chunk as the client reads it to send it
// (after which the frame's CRC is computed over the flipped bytes, so only the
// receiver's verification can catch it).
type corruptingStore struct {
	remote.Store
	done atomic.Bool
}

func (c *corruptingStore) ReadObject(ctx context.Context, id remote.ID, buf []byte) (remote.Object, error) {
	o, err := c.Store.ReadObject(ctx, id, buf)
	if err == nil && o.Kind == remote.KindChunk && len(o.Data) > 64 && c.done.CompareAndSwap(false, true) {
		o.Data = append([]byte(nil), o.Data...)
		o.Data[len(o.Data)/3] ^= 0x01
	}
	return o, err
}

// faultListener cuts server connections once they have written budget bytes in
// total (budget < 0: never).
type faultListener struct {
	net.Listener
	budget  atomic.Int64
	written atomic.Int64
	read    atomic.Int64
}

func (l *faultListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &faultConn{Conn: c, l: l}, nil
}

type faultConn struct {
	net.Conn
	l *faultListener
}

func (c *faultConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.read.Add(int64(n))
	return n, err
}

func (c *faultConn) Write(p []byte) (int, error) {
	if b := c.l.budget.Load(); b >= 0 {
		left := b - c.l.written.Load()
		if left <= 0 {
			c.Conn.Close()
			return 0, net.ErrClosed
		}
		if int64(len(p)) > left {
			n, _ := c.Conn.Write(p[:left])
			c.l.written.Add(int64(n))
			c.Conn.Close()
			return n, net.ErrClosed
		}
	}
	n, err := c.Conn.Write(p)
	c.l.written.Add(int64(n))
	return n, err
}

// missingBytes is the stored size (in from) of every object commit reaches that
// to does not have: what a transfer must move at least.
func missingBytes(t *testing.T, from, to *store.Store, commit store.ID) (objects int, bytes int64) {
	t.Helper()
	cl, err := from.Closure(commit)
	if err != nil {
		t.Fatal(err)
	}
	refs := make([]store.ObjectRef, 0, len(cl))
	for id, k := range cl {
		refs = append(refs, store.ObjectRef{ID: id, Kind: k})
	}
	st, err := to.Presence(refs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range refs {
		if st[i] != store.Absent {
			continue
		}
		so, err := from.ReadStored(o.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		objects++
		bytes += int64(len(so.Data))
	}
	return objects, bytes
}

func exportMatches(t *testing.T, s *store.Store, ref, src string) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "export")
	if _, err := s.Export(ctx, ref, dest, nil); err != nil {
		t.Fatalf("export %s: %v", ref, err)
	}
	want, err := modelgen.TreeSHA256(src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := modelgen.TreeSHA256(dest)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("export %s: %d files, source has %d", ref, len(got), len(want))
	}
	for name, sum := range want {
		if got[name] != sum {
			t.Errorf("export %s: %s has sha256 %s, source %s", ref, name, got[name], sum)
		}
	}
}

func ref(t *testing.T, s *store.Store, name string) store.ID {
	t.Helper()
	r, err := store.ParseRef(name)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Ref(r)
	if err != nil {
		t.Fatalf("ref %s: %v", name, err)
	}
	return id
}

func wire(s remote.Stats) int64 { return s.BytesSent + s.BytesReceived }

func TestPushFineTuneMovesOnlyWhatTheRemoteLacks(t *testing.T) {
	baseDir, tunedDir, _ := testModels(t)
	local := newStore(t)
	baseCommit := importModel(t, local, baseDir, "acme/base")
	tuned := importModel(t, local, tunedDir, "acme/tuned")
	sv := newServer(t, remote.Options{})
	c := client(t, sv.url, sv.write, remote.ClientOptions{BatchBytes: 1 << 20})
	la := storeremote.New(local)

	// The remote gets the base.
	if _, err := c.Push(ctx, la, remote.ID(baseCommit), "acme/base", remote.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	// The fine-tune: only its own chunks (deltas against the base) and metadata
	// may move.
	wantObjects, wantBytes := missingBytes(t, local, sv.s, tuned)
	tr, err := c.Push(ctx, la, remote.ID(tuned), "acme/tuned", remote.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Objects != wantObjects || tr.ObjectBytes != wantBytes {
		t.Fatalf("moved %d objects, %d bytes; the remote lacked %d objects, %d bytes", tr.Objects, tr.ObjectBytes, wantObjects, wantBytes)
	}
	ratio := float64(wire(tr.Wire)) / float64(wantBytes)
	t.Logf("fine-tune push: remote lacked %d objects, %d stored bytes; wire %d bytes (%d sent, %d received, %d requests, %d batches): %.4f×",
		wantObjects, wantBytes, wire(tr.Wire), tr.Wire.BytesSent, tr.Wire.BytesReceived, tr.Wire.Requests, tr.Batches, ratio)
	if ratio > 1.05 {
		t.Fatalf("wire bytes %.4f× the missing stored bytes, want ≤ 1.05", ratio)
	}
	if got := ref(t, sv.s, "acme/tuned"); got != tuned {
		t.Fatalf("remote acme/tuned at %s, want %s", got.Short(), tuned.Short())
	}
	exportMatches(t, sv.s, "acme/tuned", tunedDir)

	// The same push again: one round trip, well under 1 MB.
	again, err := c.Push(ctx, la, remote.ID(tuned), "acme/tuned", remote.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("repeated push: %d requests, %d bytes on the wire", again.Wire.Requests, wire(again.Wire))
	if !again.UpToDate || again.Objects != 0 || again.Wire.Requests != 1 || wire(again.Wire) >= 1<<20 {
		t.Fatalf("repeated push: %+v", again)
	}
	// A new name for a model the remote has: one round trip too (a fast-forward
	// from nothing).
	tag, err := c.Push(ctx, la, remote.ID(tuned), "acme/tuned:v1", remote.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tag.UpToDate || tag.Objects != 0 || tag.Wire.Requests != 1 {
		t.Fatalf("push under a new name: %+v", tag)
	}
	store.CheckStore(t, sv.s)
}

func TestPullResumesAfterInterruptions(t *testing.T) {
	baseDir, tunedDir, _ := testModels(t)
	sv := newServer(t, remote.Options{BatchBytes: 1 << 20})
	importModel(t, sv.s, baseDir, "acme/base")
	tuned := importModel(t, sv.s, tunedDir, "acme/tuned")
	local := newStore(t)
	la := storeremote.New(local)
	wantObjects, wantBytes := missingBytes(t, sv.s, local, tuned)

	// Any object the server reads for a pull that the client already has
	// durably would be a re-download.
	var redownloads atomic.Int64
	sv.wrap.setOnRead(func(o *remote.Object) {
		pr, err := la.Presence(ctx, []remote.ObjectRef{{ID: o.ID, Kind: o.Kind}}, nil)
		if err == nil && pr[0] != remote.Absent {
			redownloads.Add(1)
		}
	})
	rng := rand.New(rand.NewPCG(7, 8))
	var (
		interrupted, attempts int
		received              int64
		objects               int
		wireTotal             int64
	)
	for interrupted < 12 {
		attempts++
		if attempts > 60 {
			t.Fatalf("pull did not finish in %d attempts", attempts)
		}
		// Cut somewhere in what is left, at a random byte: the server
		// connection on even attempts, the client's context on odd ones.
		left := wantBytes - received
		cutAt := 1 + rng.Int64N(max(left/3, 1)+4096)
		cctx, cancel := context.WithCancel(ctx)
		opts := remote.ClientOptions{}
		sv.ln.budget.Store(-1)
		if attempts%2 == 0 {
			sv.ln.written.Store(0)
			sv.ln.budget.Store(cutAt)
		} else {
			var got atomic.Int64
			opts.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &cancelConn{Conn: conn, got: &got, at: cutAt, cancel: cancel}, nil
			}
		}
		c := client(t, sv.url, sv.read, opts)
		tr, err := c.Pull(cctx, la, "acme/tuned", remote.PullOptions{})
		cancel()
		received += tr.ObjectBytes
		objects += tr.Objects
		wireTotal += wire(tr.Wire)
		if err == nil {
			break
		}
		interrupted++
		t.Logf("attempt %d cut at %d bytes: %d objects kept (%v)", attempts, cutAt, tr.Objects, err)
		if _, err := local.Ref(store.RefName{Name: "acme/tuned", Tag: "main"}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("local ref moved by an interrupted pull (%v)", err)
		}
	}
	sv.ln.budget.Store(-1)
	c := client(t, sv.url, sv.read, remote.ClientOptions{})
	tr, err := c.Pull(ctx, la, "acme/tuned", remote.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	received += tr.ObjectBytes
	objects += tr.Objects
	wireTotal += wire(tr.Wire)
	t.Logf("pull: %d interruptions over %d attempts; %d objects, %d stored bytes received in all (the client lacked %d, %d); %d bytes on the wire; %d re-downloads",
		interrupted, attempts+1, objects, received, wantObjects, wantBytes, wireTotal, redownloads.Load())
	if interrupted < 10 {
		t.Fatalf("only %d interruptions", interrupted)
	}
	if redownloads.Load() != 0 {
		t.Fatalf("%d objects the client had were sent again", redownloads.Load())
	}
	if objects != wantObjects || received != wantBytes {
		t.Fatalf("received %d objects, %d bytes in all; the client lacked %d, %d", objects, received, wantObjects, wantBytes)
	}
	if got := ref(t, local, "acme/tuned"); got != tuned {
		t.Fatalf("local ref at %s", got.Short())
	}
	exportMatches(t, local, "acme/tuned", tunedDir)

	// Pulling again: one round trip.
	again, err := c.Pull(ctx, la, "acme/tuned", remote.PullOptions{})
	if err != nil || !again.UpToDate || again.Wire.Requests != 1 || again.Objects != 0 {
		t.Fatalf("repeated pull: %+v, %v", again, err)
	}
	store.CheckStore(t, local)
}

// cancelConn cancels a context once it has read at bytes.
type cancelConn struct {
	net.Conn
	got    *atomic.Int64
	at     int64
	cancel context.CancelFunc
}

func (c *cancelConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.got.Add(int64(n)) >= c.at {
		c.cancel()
	}
	return n, err
}

func TestConcurrentPushesOneWins(t *testing.T) {
	baseDir, tunedDir, _ := testModels(t)
	a, b := newStore(t), newStore(t)
	ca := importModel(t, a, baseDir, "acme/m")
	cb := importModel(t, b, tunedDir, "acme/m")
	sv := newServer(t, remote.Options{})
	// Both pushes reach the compare-and-swap before either makes it.
	var arrived sync.WaitGroup
	arrived.Add(2)
	sv.wrap.setOnUpdate(func() {
		arrived.Done()
		done := make(chan struct{})
		go func() { arrived.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	})
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, job := range []struct {
		s      *store.Store
		commit store.ID
	}{{a, ca}, {b, cb}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client(t, sv.url, sv.write, remote.ClientOptions{BatchBytes: 1 << 20})
			_, errs[i] = c.Push(ctx, storeremote.New(job.s), remote.ID(job.commit), "acme/m", remote.PushOptions{})
		}()
	}
	wg.Wait()
	sv.wrap.setOnUpdate(nil)
	winner, loser := -1, -1
	for i, err := range errs {
		switch {
		case err == nil:
			winner = i
		case errors.Is(err, remote.ErrConflict):
			loser = i
			t.Logf("losing push: %v", err)
		default:
			t.Fatalf("push %d: %v", i, err)
		}
	}
	if winner < 0 || loser < 0 {
		t.Fatalf("want one winner and one conflict, got %v", errs)
	}
	commits := []store.ID{ca, cb}
	stores := []*store.Store{a, b}
	if got := ref(t, sv.s, "acme/m"); got != commits[winner] {
		t.Fatalf("remote ref at %s, want the winner's %s", got.Short(), commits[winner].Short())
	}
	// Nothing lost: the loser still has its commit and can push it under another
	// name, moving next to nothing (the remote kept what it received).
	if got := ref(t, stores[loser], "acme/m"); got != commits[loser] {
		t.Fatal("the losing push changed its own store")
	}
	c := client(t, sv.url, sv.write, remote.ClientOptions{})
	tr, err := c.Push(ctx, storeremote.New(stores[loser]), remote.ID(commits[loser]), "acme/m-alt", remote.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loser re-pushed under another name with %d objects, %d bytes on the wire", tr.Objects, wire(tr.Wire))
	if tr.Objects != 0 || wire(tr.Wire) >= 1<<20 {
		t.Fatalf("re-push after a lost race moved %d objects (%d bytes on the wire)", tr.Objects, wire(tr.Wire))
	}
	exportMatches(t, sv.s, "acme/m", []string{baseDir, tunedDir}[winner])
	exportMatches(t, sv.s, "acme/m-alt", []string{baseDir, tunedDir}[loser])
}

// snapshot is what must not change when a request is refused: the refs, the
// reflog and the pack files.
func snapshot(t *testing.T, s *store.Store) string {
	t.Helper()
	refs, err := s.Refs()
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprint(refs)
	var files []string
	filepath.Walk(s.Dir(), func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && (filepath.Ext(path) == ".pack" || filepath.Base(path) == "reflog" || filepath.Base(path) == "refs") {
			files = append(files, fmt.Sprintf("%s:%d", path, info.Size()))
		}
		return nil
	})
	sort.Strings(files)
	return out + fmt.Sprint(files)
}

func TestCorruptObjectsAreRefused(t *testing.T) {
	baseDir, _, _ := testModels(t)
	local := newStore(t)
	commit := importModel(t, local, baseDir, "acme/base")
	sv := newServer(t, remote.Options{})

	// Push: a chunk corrupted before it is framed fails the server's BLAKE3 check.
	bad := &corruptingStore{Store: storeremote.New(local)}
	c := client(t, sv.url, sv.write, remote.ClientOptions{})
	_, err := c.Push(ctx, bad, remote.ID(commit), "acme/base", remote.PushOptions{})
	if !errors.Is(err, remote.ErrIntegrity) {
		t.Fatalf("push of a corrupted chunk: %v", err)
	}
	if _, err := sv.s.Ref(store.RefName{Name: "acme/base", Tag: "main"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ref published after a refused push (%v)", err)
	}
	store.CheckStore(t, sv.s)
	// The same push, uncorrupted, completes.
	if _, err := c.Push(ctx, storeremote.New(local), remote.ID(commit), "acme/base", remote.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	exportMatches(t, sv.s, "acme/base", baseDir)

	// Pull: the server sends a corrupted chunk; the client refuses it and its ref
	// does not move.
	other := newStore(t)
	var flipped atomic.Bool
	sv.wrap.setOnRead(func(o *remote.Object) {
		if o.Kind == remote.KindChunk && len(o.Data) > 64 && flipped.CompareAndSwap(false, true) {
			o.Data = append([]byte(nil), o.Data...)
			o.Data[7] ^= 0x80
		}
	})
	rc := client(t, sv.url, sv.read, remote.ClientOptions{})
	_, err = rc.Pull(ctx, storeremote.New(other), "acme/base", remote.PullOptions{})
	if !errors.Is(err, remote.ErrIntegrity) {
		t.Fatalf("pull of a corrupted chunk: %v", err)
	}
	if refs, _ := other.Refs(); len(refs) != 0 {
		t.Fatalf("refs after a refused pull: %v", refs)
	}
	store.CheckStore(t, other)
	sv.wrap.setOnRead(nil)
	if _, err := rc.Pull(ctx, storeremote.New(other), "acme/base", remote.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	exportMatches(t, other, "acme/base", baseDir)
}

// A flipped bit on the wire fails the frame's CRC; the stream is refused.
func TestFlippedBitOnTheWireIsRefused(t *testing.T) {
	_, _, otherDir := testModels(t)
	local := newStore(t)
	commit := importModel(t, local, otherDir, "acme/tiny")
	sv := newServer(t, remote.Options{})
	var sent atomic.Int64
	flipAt := int64(20 << 10)
	c := client(t, sv.url, sv.write, remote.ClientOptions{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return &flipConn{Conn: conn, sent: &sent, at: flipAt}, err
	}})
	_, err := c.Push(ctx, storeremote.New(local), remote.ID(commit), "acme/tiny", remote.PushOptions{})
	if err == nil {
		t.Fatal("push with a flipped bit succeeded")
	}
	t.Logf("push with a flipped bit at byte %d: %v", flipAt, err)
	if _, err := sv.s.Ref(store.RefName{Name: "acme/tiny", Tag: "main"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ref published after a corrupted push (%v)", err)
	}
}

type flipConn struct {
	net.Conn
	sent *atomic.Int64
	at   int64
}

func (c *flipConn) Write(p []byte) (int, error) {
	start := c.sent.Add(int64(len(p))) - int64(len(p))
	if start <= c.at && c.at < start+int64(len(p)) {
		q := append([]byte(nil), p...)
		q[c.at-start] ^= 0x04
		p = q
	}
	return c.Conn.Write(p)
}

// rawPost sends one request to the server and returns its status.
func rawPost(t *testing.T, url, path, ref, auth, contentType string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+remote.PathPrefix+path+"?ref="+ref, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// objectStream frames objects read from s.
func objectStream(t *testing.T, s *store.Store, ids []store.ID, edit func(*remote.Object)) []byte {
	t.Helper()
	var buf bytes.Buffer
	ow := remote.NewObjectWriter(&buf)
	for _, id := range ids {
		so, err := s.ReadStored(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		o := remote.Object{ID: remote.ID(id), Kind: remote.Kind(so.Kind), Codec: so.Codec, RawLen: so.RawLen, Data: so.Data}
		if edit != nil {
			edit(&o)
		}
		if err := ow.Write(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := ow.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func hexID(id store.ID) string { return `"` + id.String() + `"` }

func idList(ids ...store.ID) string {
	l := make(remote.IDList, len(ids))
	for i, id := range ids {
		l[i] = remote.ID(id)
	}
	b, _ := l.MarshalJSON()
	return string(b)
}

func TestRefusedRequestsLeaveTheStoreUnchanged(t *testing.T) {
	baseDir, tunedDir, otherDir := testModels(t)
	sv := newServer(t, remote.Options{})
	baseCommit := importModel(t, sv.s, baseDir, "acme/base")
	// Objects a pusher could send: a model the server does not have.
	src := newStore(t)
	tinyCommit := importModel(t, src, otherDir, "acme/tiny")
	chunks, err := src.ChunkLinks(treeObjects(t, src, tinyCommit))
	if err != nil {
		t.Fatal(err)
	}
	firstChunk := chunks[0].ID
	stream := objectStream(t, src, []store.ID{firstChunk}, nil)

	revoked, _, err := sv.tokens.Create("revoked", "alice", []hub.Grant{{Namespace: "acme", Role: hub.RoleWrite}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sv.tokens.Revoke("revoked"); err != nil {
		t.Fatal(err)
	}
	expired, _, err := sv.tokens.Create("expired", "alice", []hub.Grant{{Namespace: "acme", Role: hub.RoleWrite}}, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	tampered := []byte(sv.write)
	tampered[len(tampered)-1] ^= 1

	endpoints := []struct {
		path, ctype string
		body        []byte
		write       bool
	}{
		{"push/negotiate", "application/json", []byte(`{"new":` + hexID(tinyCommit) + `,"commits":` + idList(tinyCommit) + `}`), true},
		{"push/have", "application/json", []byte(`{"objects":` + idList(firstChunk) + `,"kinds":"1"}`), true},
		{"push/objects", "application/x-heft-objects", stream, true},
		{"push/update", "application/json", []byte(`{"old":` + hexID(store.ID{}) + `,"new":` + hexID(baseCommit) + `,"force":true}`), true},
		{"pull/negotiate", "application/json", []byte(`{}`), false},
		{"pull/trees", "application/json", []byte(`{"commits":` + idList(baseCommit) + `}`), false},
		{"pull/chunks", "application/json", []byte(`{"objects":` + idList(baseCommit) + `}`), false},
		{"pull/objects", "application/json", []byte(`{"objects":` + idList(baseCommit) + `}`), false},
	}
	creds := []struct {
		name, auth string
		status     int // for writes; reads differ only for the read token
		readStatus int
	}{
		{"no token", "", 401, 401},
		{"malformed header", "Bearer", 401, 401},
		{"basic scheme", "Basic YWxpY2U6c2VjcmV0", 401, 401},
		{"unknown token", "Bearer heft_0123456789abcdef0123456789abcdef0123456789abcdef", 401, 401},
		{"tampered token", "Bearer " + string(tampered), 401, 401},
		{"revoked token", "Bearer " + revoked, 401, 401},
		{"expired token", "Bearer " + expired, 401, 401},
		{"read-only token", "Bearer " + sv.read, 403, 0},
		{"other namespace", "Bearer " + sv.stranger, 403, 403},
	}
	before := snapshot(t, sv.s)
	for _, e := range endpoints {
		for _, cr := range creds {
			want := cr.status
			if !e.write {
				want = cr.readStatus
			}
			if want == 0 {
				continue
			}
			for _, ref := range []string{"acme/base", "acme%2Fbase", "acme/base:main"} {
				if got := rawPost(t, sv.url, e.path, ref, cr.auth, e.ctype, e.body); got != want {
					t.Errorf("%s with %s on %s: status %d, want %d", e.path, cr.name, ref, got, want)
				}
			}
		}
		// A write grant on acme does not cover refs outside any namespace.
		if e.write {
			if got := rawPost(t, sv.url, e.path, "model", "Bearer "+sv.write, e.ctype, e.body); got != 403 {
				t.Errorf("%s on a ref without namespace: status %d, want 403", e.path, got)
			}
		}
	}
	if after := snapshot(t, sv.s); after != before {
		t.Fatalf("refused requests changed the store:\n%s\n%s", before, after)
	}

	// Tampered requests with a valid write token.
	w := "Bearer " + sv.write
	flipped := objectStream(t, src, []store.ID{firstChunk}, func(o *remote.Object) {
		o.Data = append([]byte(nil), o.Data...)
		o.Data[len(o.Data)/2] ^= 0x20
	})
	lying := objectStream(t, src, []store.ID{firstChunk}, func(o *remote.Object) { o.ID[0] ^= 1 })
	badKind := objectStream(t, src, []store.ID{firstChunk}, func(o *remote.Object) { o.Kind = remote.KindCommit })
	cut := stream[:len(stream)-10]
	crcBroken := append([]byte(nil), stream...)
	crcBroken[len(crcBroken)-80] ^= 1
	// A delta naming a base the pusher may not read is answered as if the base
	// were absent (412), whether it is present or not: no probing.
	baseChunks, err := sv.s.ChunkLinks(treeObjects(t, sv.s, baseCommit))
	if err != nil {
		t.Fatal(err)
	}
	hidden, err := sv.s.ReadStored(baseChunks[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	probe := func(base store.ID) []byte {
		payload := append([]byte{1}, base[:]...)
		payload = append(payload, 0)
		payload = append(payload, make([]byte, hidden.RawLen)...)
		var buf bytes.Buffer
		ow := remote.NewObjectWriter(&buf)
		if err := ow.Write(remote.Object{ID: remote.ID{9}, Kind: remote.KindChunk, Codec: store.CodecDelta, RawLen: hidden.RawLen, Data: payload}); err != nil {
			t.Fatal(err)
		}
		ow.Close()
		return buf.Bytes()
	}
	for _, base := range []store.ID{hidden.ID, {7}} {
		if got := rawPost(t, sv.url, "push/objects", "other/x", "Bearer "+sv.stranger, "application/x-heft-objects", probe(base)); got != 412 {
			t.Errorf("delta probing base %s: status %d, want 412", base.Short(), got)
		}
	}
	for _, tc := range []struct {
		name, path string
		body       []byte
		want       int
	}{
		{"chunk whose bytes were changed", "push/objects", flipped, 422},
		{"chunk sent under another id", "push/objects", lying, 422},
		{"chunk sent as a commit", "push/objects", badKind, 422},
		{"stream with a broken checksum", "push/objects", crcBroken, 400},
		{"not a stream", "push/objects", []byte("GET / HTTP/1.1\r\n"), 400},
		{"malformed JSON", "push/update", []byte(`{"new":`), 400},
		{"unknown field", "push/have", []byte(`{"objects":"","kinds":"","admin":true}`), 400},
		{"kinds that do not match the ids", "push/have", []byte(`{"objects":` + idList(firstChunk) + `,"kinds":"19"}`), 400},
		{"oversized message", "push/have", bytes.Repeat([]byte(" "), remote.MaxJSONBody+10), 413},
		// Knowing the ID of a commit is not having it: a ref of another namespace
		// may not be pointed at acme's model.
		{"update to a commit the pusher cannot read", "push/update", []byte(`{"old":` + hexID(store.ID{}) + `,"new":` + hexID(baseCommit) + `}`), 412},
	} {
		ref := "acme/new"
		auth := w
		if tc.name == "update to a commit the pusher cannot read" {
			ref, auth = "other/stolen", "Bearer "+sv.stranger
		}
		if got := rawPost(t, sv.url, tc.path, ref, auth, "application/octet-stream", tc.body); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	if after := snapshot(t, sv.s); after != before {
		t.Fatalf("tampered requests changed the store:\n%s\n%s", before, after)
	}
	// A stream cut inside an object keeps nothing of it; cut after a whole
	// object, it keeps that object (verified) for the retry. No ref moves.
	presence := func() store.Presence {
		pr, err := sv.s.Presence([]store.ObjectRef{{ID: firstChunk, Kind: store.KindChunk}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return pr[0]
	}
	rawPost(t, sv.url, "push/objects", "acme/new", w, "application/x-heft-objects", stream[:len(stream)/2])
	if p := presence(); p != store.Absent {
		t.Fatalf("half a chunk stored: %s", p)
	}
	rawPost(t, sv.url, "push/objects", "acme/new", w, "application/x-heft-objects", cut)
	if p := presence(); p != store.Complete {
		t.Fatalf("whole chunk before a cut not kept: %s", p)
	}
	if refs, _ := sv.s.Refs(); len(refs) != 1 {
		t.Fatalf("refs after tampered requests: %v", refs)
	}

	// The stranger's negotiation for acme's commit sees it as absent.
	stranger := client(t, sv.url, sv.stranger, remote.ClientOptions{})
	_, err = stranger.Push(ctx, storeremote.New(newStore(t)), remote.ID(baseCommit), "other/stolen", remote.PushOptions{})
	if err == nil {
		t.Fatal("a push of a commit the pusher does not have succeeded")
	}
	_, err = stranger.Pull(ctx, storeremote.New(newStore(t)), "acme/base", remote.PullOptions{})
	if !errors.Is(err, remote.ErrForbidden) {
		t.Fatalf("pull from another namespace: %v", err)
	}
	if _, err := sv.s.Ref(store.RefName{Name: "other/stolen", Tag: "main"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("stolen ref exists (%v)", err)
	}
	// Unknown endpoints and methods.
	if got := rawPost(t, sv.url, "push/delete", "acme/base", w, "application/json", nil); got != 404 {
		t.Errorf("unknown endpoint: %d", got)
	}
	resp, err := http.Get(sv.url + remote.PathPrefix + "pull/negotiate?ref=acme/base")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	_ = tunedDir
}

func treeObjects(t *testing.T, s *store.Store, commit store.ID) []store.ID {
	t.Helper()
	trees, err := s.TreeObjects([]store.ID{commit})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.ID
	for _, o := range trees {
		if o.Kind == store.KindFile || o.Kind == store.KindTensor {
			out = append(out, o.ID)
		}
	}
	return out
}

// A push may reuse only what the pusher could read: with the base in a namespace
// its token does not cover, the base's chunks are sent too (and stored once).
func TestPushReusesOnlyWhatThePusherMayRead(t *testing.T) {
	baseDir, tunedDir, _ := testModels(t)
	sv := newServer(t, remote.Options{})
	importModel(t, sv.s, baseDir, "acme/base")
	local := newStore(t)
	importModel(t, local, baseDir, "other/base")
	tuned := importModel(t, local, tunedDir, "other/tuned")
	_, lacked := missingBytes(t, local, sv.s, tuned)
	packsBefore := packBytes(t, sv.s)
	c := client(t, sv.url, sv.stranger, remote.ClientOptions{})
	tr, err := c.Push(ctx, storeremote.New(local), remote.ID(tuned), "other/tuned", remote.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	grew := packBytes(t, sv.s) - packsBefore
	t.Logf("push into a namespace that cannot read the base: sent %d stored bytes; the server lacked %d and its packs grew %d", tr.ObjectBytes, lacked, grew)
	if tr.ObjectBytes <= lacked {
		t.Fatalf("sent %d bytes: the base's chunks were taken from a namespace the pusher cannot read", tr.ObjectBytes)
	}
	if grew > lacked+lacked/10 {
		t.Fatalf("packs grew %d bytes for %d new: the base was stored twice", grew, lacked)
	}
	exportMatches(t, sv.s, "other/tuned", tunedDir)
}

func packBytes(t *testing.T, s *store.Store) int64 {
	t.Helper()
	var n int64
	filepath.Walk(filepath.Join(s.Dir(), "packs"), func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// gc between the transfer and the ref update (with no grace) removes what was
// sent; the update refuses (412) and the client's retry sends it again.
// TestPushRetriesWhenGCRemovedObjects: gc keeps what a push sent for
// ReceivedGrace, so a gc in the middle of a push removes nothing of it (one
// attempt); once the records have expired — a push stalled for a day — gc may
// remove the objects before the ref moves, and the client sends them again.
func TestPushRetriesWhenGCRemovedObjects(t *testing.T) {
	_, _, otherDir := testModels(t)
	local := newStore(t)
	commit := importModel(t, local, otherDir, "acme/tiny")
	var skew atomic.Int64 // added to the server store's clock
	opts := storeOpts
	opts.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	sv := newServerOn(t, store.TestStore(t, opts), remote.Options{})
	var gcs atomic.Int32
	sv.wrap.setOnUpdate(func() {
		if gcs.Add(1) == 1 {
			if _, err := sv.s.GC(ctx, store.GCOptions{Grace: -1}); err != nil {
				t.Error(err)
			}
		}
	})
	_, lacked := missingBytes(t, local, sv.s, commit)
	c := client(t, sv.url, sv.write, remote.ClientOptions{Retries: 2})
	tr, err := c.Push(ctx, storeremote.New(local), remote.ID(commit), "acme/tiny", remote.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Attempts != 1 || tr.ObjectBytes != lacked {
		t.Fatalf("push with a gc before the ref moved: %d attempts, %d bytes sent (%d lacked)", tr.Attempts, tr.ObjectBytes, lacked)
	}
	exportMatches(t, sv.s, "acme/tiny", otherDir)

	// With the server's clock a day ahead when gc runs, the records have
	// expired: after the ref is dropped gc takes the model, and again in the
	// middle of the next push, which then sends it a second time.
	name, err := store.ParseRef("acme/tiny")
	if err != nil {
		t.Fatal(err)
	}
	if err := sv.s.UpdateRefs([]store.RefUpdate{{Ref: name, Old: ref(t, sv.s, "acme/tiny")}}, "test: drop"); err != nil {
		t.Fatal(err)
	}
	dayLaterGC := func() {
		skew.Store(int64(store.ReceivedGrace + time.Hour))
		defer skew.Store(0)
		if _, err := sv.s.GC(ctx, store.GCOptions{Grace: -1}); err != nil {
			t.Error(err)
		}
	}
	dayLaterGC()
	gcs.Store(0)
	sv.wrap.setOnUpdate(func() {
		if gcs.Add(1) == 1 {
			dayLaterGC()
		}
	})
	_, lacked = missingBytes(t, local, sv.s, commit)
	tr, err = c.Push(ctx, storeremote.New(local), remote.ID(commit), "acme/tiny", remote.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Attempts != 2 || tr.ObjectBytes != 2*lacked {
		t.Fatalf("push with expired records: %d attempts, %d bytes sent (%d lacked)", tr.Attempts, tr.ObjectBytes, lacked)
	}
	exportMatches(t, sv.s, "acme/tiny", otherDir)
}

// TestTransferThroughput measures push and pull of a larger model on loopback
// with default store options. It runs only with HEFT_REMOTE_BENCH set to the
// model size in MiB (e.g. 512).
func TestTransferThroughput(t *testing.T) {
	mib := os.Getenv("HEFT_REMOTE_BENCH")
	if mib == "" {
		t.Skip("set HEFT_REMOTE_BENCH=SIZE_MIB to measure")
	}
	var size int64
	if _, err := fmt.Sscan(mib, &size); err != nil || size <= 0 {
		t.Fatalf("HEFT_REMOTE_BENCH=%q", mib)
	}
	dir := filepath.Join(t.TempDir(), "m")
	if err := modelgen.WriteBase(dir, modelgen.Sized(size<<20), modelgen.Options{Seed: 9, Shards: 4}); err != nil {
		t.Fatal(err)
	}
	local := store.TestStore(t, store.Options{})
	start := time.Now()
	r, err := local.Import(ctx, dir, store.ImportOptions{Ref: store.RefName{Name: "acme/big", Tag: "main"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("import: %d logical bytes, %d stored, in %v", r.LogicalBytes, r.Stats.StoredBytes, time.Since(start))
	sv := &server{}
	sv.s = store.TestStore(t, store.Options{})
	tokens, _ := hub.OpenTokenStore(t.TempDir())
	tok, _, _ := tokens.Create("w", "alice", []hub.Grant{{Namespace: "acme", Role: hub.RoleWrite}}, 0)
	srv := httptest.NewServer(remote.NewHandler(storeremote.New(sv.s), remote.Options{Tokens: tokens}))
	defer srv.Close()
	c := client(t, srv.URL, tok, remote.ClientOptions{})
	start = time.Now()
	tr, err := c.Push(ctx, storeremote.New(local), remote.ID(r.Commit), "acme/big", remote.PushOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start).Seconds()
	t.Logf("push: %d objects, %d stored bytes, %d on the wire in %.2fs: %.0f MB/s stored, %.0f MB/s logical",
		tr.Objects, tr.ObjectBytes, wire(tr.Wire), d, float64(tr.ObjectBytes)/d/1e6, float64(r.LogicalBytes)/d/1e6)
	other := store.TestStore(t, store.Options{})
	start = time.Now()
	tr, err = c.Pull(ctx, storeremote.New(other), "acme/big", remote.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d = time.Since(start).Seconds()
	t.Logf("pull: %d objects, %d stored bytes, %d on the wire in %.2fs: %.0f MB/s stored, %.0f MB/s logical",
		tr.Objects, tr.ObjectBytes, wire(tr.Wire), d, float64(tr.ObjectBytes)/d/1e6, float64(r.LogicalBytes)/d/1e6)
}
