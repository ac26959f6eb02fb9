package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/internal/failpoint"
)

// ClientOptions configure NewClient.
type ClientOptions struct {
	// DialContext opens connections (default: a net.Dialer with a 30 s
	// timeout). Every connection is counted (Client.Stats) on top of it.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Transport is cloned for the client's requests (default: the settings of
	// http.DefaultTransport); its DialContext is replaced.
	Transport *http.Transport
	// BatchBytes is the size of the object batches a push sends (default and
	// maximum MaxBatchBytes).
	BatchBytes int
	// Retries is how many times Push and Pull start over after a failure that
	// may pass (a dropped connection, a busy or failing server, a ref update
	// that found objects missing), waiting 1 s, 2 s, 4 s… in between. Each
	// attempt negotiates again, so it moves only what is still missing.
	Retries int
	// UserAgent is sent with every request (default "heft").
	UserAgent string
}

// Client speaks the protocol to one server. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	opts  ClientOptions

	requests, sent, received atomic.Int64
}

// Stats are a client's counters since it was made.
type Stats struct {
	Requests int64
	// BytesSent and BytesReceived count what crossed the client's connections:
	// request and status lines, headers and bodies (TLS records, over TLS).
	BytesSent, BytesReceived int64
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Requests: c.requests.Load(), BytesSent: c.sent.Load(), BytesReceived: c.received.Load()}
}

func (s Stats) sub(o Stats) Stats {
	return Stats{Requests: s.Requests - o.Requests, BytesSent: s.BytesSent - o.BytesSent, BytesReceived: s.BytesReceived - o.BytesReceived}
}

// NewClient returns a client of the server at baseURL (http or https; the
// protocol lives under baseURL + PathPrefix). token, when not empty, is sent as a
// bearer token; it never appears in errors.
func NewClient(baseURL, token string, opts ClientOptions) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: remote URL %q: want http(s)://HOST[:PORT][/PATH]", ErrInvalid, baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if opts.BatchBytes <= 0 || opts.BatchBytes > MaxBatchBytes {
		opts.BatchBytes = MaxBatchBytes
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "heft"
	}
	c := &Client{base: u, token: token, opts: opts}
	var t *http.Transport
	if opts.Transport != nil {
		t = opts.Transport.Clone()
	} else {
		t = http.DefaultTransport.(*http.Transport).Clone()
	}
	dial := opts.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: conn, c: c}, nil
	}
	t.DialTLSContext = nil
	c.hc = &http.Client{
		Transport: t,
		// A redirect could carry the token elsewhere; the protocol has none.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// URL returns the server's base URL.
func (c *Client) URL() string { return c.base.String() }

type countingConn struct {
	net.Conn
	c *Client
}

func (cc *countingConn) Read(p []byte) (int, error) {
	n, err := cc.Conn.Read(p)
	cc.c.received.Add(int64(n))
	return n, err
}

func (cc *countingConn) Write(p []byte) (int, error) {
	n, err := cc.Conn.Write(p)
	cc.c.sent.Add(int64(n))
	return n, err
}

func (c *Client) endpoint(path, ref string) string {
	u := *c.base
	u.Path += PathPrefix + path
	u.RawQuery = url.Values{"ref": {ref}}.Encode()
	return u.String()
}

// post sends one request and returns the response of a 200; any other status is
// returned as an error of its class.
func (c *Client) post(ctx context.Context, path, ref, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint(path, ref), body)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", path, err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", c.opts.UserAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	c.requests.Add(1)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", path, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	var er errorResponse
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(data, &er) != nil || er.Error == "" {
		er.Error = strings.TrimSpace(string(data))
		if len(er.Error) > 200 {
			er.Error = er.Error[:200]
		}
	}
	return nil, &StatusError{Status: resp.StatusCode, Path: path, Message: er.Error, class: classOf(resp.StatusCode, er.Code)}
}

// StatusError is an error response. It matches (errors.Is) the class its status
// and code stand for, if any.
type StatusError struct {
	Status  int
	Path    string // the endpoint, e.g. "push/update"
	Message string // the server's
	class   error
}

func (e *StatusError) Error() string {
	if e.class != nil {
		return fmt.Sprintf("remote %s: %s", e.Path, e.Message)
	}
	return fmt.Sprintf("remote %s: HTTP %d %s: %s", e.Path, e.Status, http.StatusText(e.Status), e.Message)
}

func (e *StatusError) Unwrap() error { return e.class }

// call posts a JSON message and decodes the JSON answer into out.
func (c *Client) call(ctx context.Context, path, ref string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("remote %s: %w", path, err)
	}
	resp, err := c.post(ctx, path, ref, jsonType, bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := decodeJSON(resp.Body, out); err != nil {
		return fmt.Errorf("remote %s: answer: %w", path, err)
	}
	return nil
}

// have asks which of objs the server has for a push into ref.
func (c *Client) have(ctx context.Context, ref string, objs []ObjectRef) ([]Presence, error) {
	out := make([]Presence, 0, len(objs))
	for start := 0; start < len(objs); start += MaxIDs {
		part := objs[start:min(start+MaxIDs, len(objs))]
		req := haveRequest{Objects: make(IDList, len(part))}
		kinds := make([]Kind, len(part))
		for i, o := range part {
			req.Objects[i], kinds[i] = o.ID, o.Kind
		}
		req.Kinds = encodeKinds(kinds)
		var resp haveResponse
		if err := c.call(ctx, "push/have", ref, req, &resp); err != nil {
			return nil, err
		}
		st, err := decodePresence(resp.Status, len(part))
		if err != nil {
			return nil, fmt.Errorf("remote push/have: answer: %w", err)
		}
		out = append(out, st...)
	}
	return out, nil
}

// PushOptions tune Push.
type PushOptions struct {
	// Force allows moving the remote ref to a commit that does not descend from
	// its current value.
	Force bool
	// Expect, when set, is the value the remote ref must have (the zero ID: it
	// must not exist). By default the value the remote reports when the push
	// starts is expected, and the push must fast-forward it.
	Expect *ID
	// Progress, when set, is called after each batch with the stored bytes sent
	// so far (total is -1: unknown before the objects are read).
	Progress func(done, total int64)
}

// Transfer describes what one push or pull moved.
type Transfer struct {
	Ref    string // the remote ref
	Commit ID     // the commit the moved ref points to afterwards
	// Old is the previous value of the ref that moves (the remote ref for a
	// push, the local one for a pull); zero when it did not exist.
	Old ID
	// UpToDate: the ref already pointed to Commit.
	UpToDate    bool
	Objects     int   // objects moved
	ObjectBytes int64 // their stored bytes
	Batches     int   // object batches
	Attempts    int   // 1 unless a retry happened
	Wire        Stats // requests and bytes on the wire, all attempts
}

// Push makes the remote ref point to commit (a commit of local), sending only the
// objects the remote lacks: it negotiates commits, then trees (manifests, files,
// tensors), then chunks, each time listing only what is missing below what was
// missing, sends the missing objects in batches of at most BatchBytes (delta
// bases in batches of their own, before the deltas; then chunks; then metadata,
// children before parents), each written durably by the remote before it answers,
// and finally asks the remote to compare-and-swap the ref. A push the remote
// already has is one round trip. An interrupted push can be run again: it
// negotiates again and sends only what is still missing. A concurrent update of
// the ref fails with ErrConflict and changes nothing.
func (c *Client) Push(ctx context.Context, local Store, commit ID, ref string, opts PushOptions) (*Transfer, error) {
	if err := validRef(ref); err != nil {
		return nil, err
	}
	t := &Transfer{Ref: ref, Commit: commit}
	start := c.Stats()
	err := c.retry(ctx, t, func() error { return c.pushOnce(ctx, local, commit, ref, opts, t) })
	t.Wire = c.Stats().sub(start)
	if err != nil {
		return t, fmt.Errorf("push to %s %s: %w", c.base.Redacted(), ref, err)
	}
	return t, nil
}

func (c *Client) retry(ctx context.Context, t *Transfer, once func() error) error {
	wait := time.Second
	for {
		t.Attempts++
		err := once()
		if err == nil || t.Attempts > c.opts.Retries || !retriable(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// retriable reports whether a failure may pass by itself.
func retriable(err error) bool {
	var se *StatusError
	var ne net.Error
	switch {
	case errors.Is(err, ErrBusy), errors.Is(err, ErrIncomplete):
		return true
	case errors.As(err, &se) && se.class == nil:
		return se.Status >= 500 || se.Status == http.StatusTooManyRequests
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &ne):
		return true
	}
	return false
}

func (c *Client) pushOnce(ctx context.Context, local Store, commit ID, ref string, opts PushOptions, t *Transfer) error {
	hist, err := local.History(ctx, commit, MaxHistory)
	if err != nil {
		return err
	}
	var neg pushNegotiateResponse
	if err := c.call(ctx, "push/negotiate", ref, pushNegotiateRequest{New: commit, Old: opts.Expect, Force: opts.Force, Commits: hist}, &neg); err != nil {
		return err
	}
	t.Old = neg.Current
	if neg.Updated {
		t.UpToDate = neg.Current == commit
		return nil
	}
	st, err := decodePresence(neg.Status, len(hist))
	if err != nil {
		return fmt.Errorf("remote push/negotiate: answer: %w", err)
	}
	old := neg.Current
	if opts.Expect != nil {
		if *opts.Expect != old {
			return fmt.Errorf("%w: remote %s is at %s, expected %s", ErrConflict, ref, orNone(old), orNone(*opts.Expect))
		}
	}
	if !opts.Force && !old.IsZero() && !contains(hist, old) {
		return fmt.Errorf("%w: remote %s is at %s, which %s does not descend from (pull first, or force)", ErrConflict, ref, old.Short(), commit.Short())
	}
	var need, absentCommits []ID
	for i, id := range hist {
		if st[i] != Complete {
			need = append(need, id)
		}
		if st[i] == Absent {
			absentCommits = append(absentCommits, id)
		}
	}
	trees, err := local.TreeObjects(ctx, need)
	if err != nil {
		return err
	}
	tst, err := c.have(ctx, ref, trees)
	if err != nil {
		return err
	}
	var incomplete, absentTrees []ID
	for i, o := range trees {
		if tst[i] != Complete && (o.Kind == KindFile || o.Kind == KindTensor) {
			incomplete = append(incomplete, o.ID)
		}
		if tst[i] == Absent {
			absentTrees = append(absentTrees, o.ID)
		}
	}
	links, err := local.ChunkLinks(ctx, incomplete)
	if err != nil {
		return err
	}
	ask := chunkQuestions(links)
	cst, err := c.have(ctx, ref, ask)
	if err != nil {
		return err
	}
	bases, rest := chunkPlan(links, ask, cst)
	rest = append(rest, absentTrees...)
	for i := len(absentCommits) - 1; i >= 0; i-- {
		rest = append(rest, absentCommits[i])
	}
	for _, ids := range [][]ID{bases, rest} {
		if err := c.sendObjects(ctx, local, ref, ids, opts.Progress, t); err != nil {
			return err
		}
	}
	var up updateResponse
	if err := c.call(ctx, "push/update", ref, updateRequest{Old: old, New: commit, Force: opts.Force}, &up); err != nil {
		return err
	}
	return nil
}

func orNone(id ID) string {
	if id.IsZero() {
		return "(none)"
	}
	return id.Short()
}

func contains(ids []ID, id ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// chunkQuestions lists every chunk and delta base of links once, as chunks.
func chunkQuestions(links []ChunkLink) []ObjectRef {
	seen := map[ID]bool{}
	var ask []ObjectRef
	add := func(id ID) {
		if !id.IsZero() && !seen[id] {
			seen[id] = true
			ask = append(ask, ObjectRef{ID: id, Kind: KindChunk})
		}
	}
	for _, l := range links {
		add(l.ID)
		add(l.Base)
	}
	return ask
}

// chunkPlan returns the chunks to send given the receiver's answers: the absent
// delta bases of absent delta chunks (to go first), and the absent chunks.
func chunkPlan(links []ChunkLink, ask []ObjectRef, st []Presence) (bases, chunks []ID) {
	have := make(map[ID]Presence, len(ask))
	for i, o := range ask {
		have[o.ID] = st[i]
	}
	planned := map[ID]bool{}
	for _, l := range links {
		if have[l.ID] != Absent || planned[l.ID] {
			continue
		}
		if !l.Base.IsZero() && have[l.Base] == Absent && !planned[l.Base] {
			planned[l.Base] = true
			bases = append(bases, l.Base)
		}
		planned[l.ID] = true
		chunks = append(chunks, l.ID)
	}
	// A base that is also needed as a chunk in its own right goes first only.
	out := chunks[:0]
	isBase := map[ID]bool{}
	for _, b := range bases {
		isBase[b] = true
	}
	for _, id := range chunks {
		if !isBase[id] {
			out = append(out, id)
		}
	}
	return bases, out
}

// sendObjects sends ids in batches of at most BatchBytes (a batch is larger only
// with a single object), each a request that the remote answers once the batch is
// durable.
func (c *Client) sendObjects(ctx context.Context, local Store, ref string, ids []ID, progress func(done, total int64), t *Transfer) error {
	for next := 0; next < len(ids); {
		first := next
		pr, pw := io.Pipe()
		g, gctx := errgroup.WithContext(ctx)
		var (
			count  int
			nbytes int64
		)
		g.Go(func() error {
			ow := NewObjectWriter(pw)
			var (
				buf  []byte
				size int
			)
			for next < len(ids) {
				o, err := local.ReadObject(gctx, ids[next], buf)
				if err != nil {
					pw.CloseWithError(err)
					return err
				}
				if size > 0 && size+frameSize(len(o.Data)) > c.opts.BatchBytes {
					break
				}
				// Write returns once the request has taken the bytes, so buf is
				// free again. It fails only when the request ended early; the
				// request's own error says why.
				if err := ow.Write(o); err != nil {
					return nil
				}
				size += frameSize(len(o.Data))
				count++
				nbytes += int64(len(o.Data))
				buf = o.Data[:0]
				next++
			}
			pw.CloseWithError(ow.Close())
			return nil
		})
		var rr receiveResponse
		g.Go(func() error {
			resp, err := c.post(gctx, "push/objects", ref, objectsType, pr)
			// Unblock the writer if the request ended before it read everything.
			pr.CloseWithError(errors.New("request ended"))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if err := decodeJSON(resp.Body, &rr); err != nil {
				return fmt.Errorf("remote push/objects: answer: %w", err)
			}
			return nil
		})
		if err := g.Wait(); err != nil {
			return err
		}
		if rr.Objects != count {
			return fmt.Errorf("%w: remote push/objects: stored %d objects of %d sent", ErrInvalid, rr.Objects, count)
		}
		if next == first {
			return fmt.Errorf("remote push/objects: no progress at object %d", first)
		}
		t.Objects += count
		t.ObjectBytes += nbytes
		t.Batches++
		if progress != nil {
			progress(t.ObjectBytes, -1)
		}
	}
	return nil
}

// PullOptions tune Pull.
type PullOptions struct {
	// LocalRef is the local ref to point at the pulled commit (default: the
	// remote ref's name).
	LocalRef string
	// Force allows moving the local ref to a commit that does not descend from
	// its current value.
	Force bool
	// Progress, when set, is called after each batch with the stored bytes
	// received so far (total is -1: unknown before the objects arrive).
	Progress func(done, total int64)
}

// Pull fetches the commit the remote ref points to, with everything it reaches
// that local lacks, and points the local ref at it. It is the mirror of Push: the
// server lists commits, trees and chunks level by level, the client asks only for
// what it is missing below what was missing, and receives the objects in batches,
// each verified and made durable locally as it arrives; an interrupted pull keeps
// every object it received whole, so a re-run fetches only the rest. The local ref
// moves last, by compare-and-swap from the value it had when the pull started.
func (c *Client) Pull(ctx context.Context, local Store, ref string, opts PullOptions) (*Transfer, error) {
	if err := validRef(ref); err != nil {
		return nil, err
	}
	if opts.LocalRef == "" {
		opts.LocalRef = ref
	}
	t := &Transfer{Ref: ref}
	start := c.Stats()
	err := c.retry(ctx, t, func() error { return c.pullOnce(ctx, local, ref, opts, t) })
	t.Wire = c.Stats().sub(start)
	if err != nil {
		return t, fmt.Errorf("pull from %s %s: %w", c.base.Redacted(), ref, err)
	}
	return t, nil
}

func (c *Client) pullOnce(ctx context.Context, local Store, ref string, opts PullOptions, t *Transfer) error {
	var neg pullNegotiateResponse
	if err := c.call(ctx, "pull/negotiate", ref, struct{}{}, &neg); err != nil {
		return err
	}
	if neg.Commit.IsZero() || len(neg.Commits) == 0 || neg.Commits[0] != neg.Commit || len(neg.Commits) > MaxHistory {
		return fmt.Errorf("%w: remote pull/negotiate: malformed history", ErrInvalid)
	}
	t.Commit = neg.Commit
	old, err := local.Ref(ctx, opts.LocalRef)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	t.Old = old
	if !opts.Force && !old.IsZero() && !contains(neg.Commits, old) {
		return fmt.Errorf("%w: local %s is at %s, which remote %s (%s) does not descend from (force to replace it)", ErrConflict, opts.LocalRef, old.Short(), ref, neg.Commit.Short())
	}
	st, err := local.Presence(ctx, commitRefs(neg.Commits), nil)
	if err != nil {
		return err
	}
	if st[0] != Complete {
		if err := c.fetchMissing(ctx, local, ref, neg.Commits, st, opts.Progress, t); err != nil {
			return err
		}
	}
	if old == neg.Commit {
		t.UpToDate = true
		return nil
	}
	failpoint.Hit(failpoint.PullBeforeRefMove)
	return local.UpdateRef(ctx, RefChange{Ref: opts.LocalRef, Old: old, New: neg.Commit, Force: opts.Force,
		Message: fmt.Sprintf("pull: %s %s", c.base.Redacted(), ref)})
}

func (c *Client) fetchMissing(ctx context.Context, local Store, ref string, commits []ID, st []Presence, progress func(done, total int64), t *Transfer) error {
	var need, absentCommits []ID
	for i, id := range commits {
		if st[i] != Complete {
			need = append(need, id)
		}
		if st[i] == Absent {
			absentCommits = append(absentCommits, id)
		}
	}
	var tr treesResponse
	if err := c.call(ctx, "pull/trees", ref, treesRequest{Commits: need}, &tr); err != nil {
		return err
	}
	kinds, err := decodeKinds(tr.Kinds, len(tr.Objects))
	if err != nil {
		return fmt.Errorf("remote pull/trees: answer: %w", err)
	}
	trees := make([]ObjectRef, len(tr.Objects))
	for i, id := range tr.Objects {
		trees[i] = ObjectRef{ID: id, Kind: kinds[i]}
	}
	tst, err := local.Presence(ctx, trees, nil)
	if err != nil {
		return err
	}
	var incomplete, absentTrees []ID
	for i, o := range trees {
		if tst[i] != Complete && (o.Kind == KindFile || o.Kind == KindTensor) {
			incomplete = append(incomplete, o.ID)
		}
		if tst[i] == Absent {
			absentTrees = append(absentTrees, o.ID)
		}
	}
	var links []ChunkLink
	for start := 0; start < len(incomplete); start += MaxIDs {
		var cr chunksResponse
		if err := c.call(ctx, "pull/chunks", ref, chunksRequest{Objects: incomplete[start:min(start+MaxIDs, len(incomplete))]}, &cr); err != nil {
			return err
		}
		if len(cr.Deltas)%2 != 0 {
			return fmt.Errorf("%w: remote pull/chunks: odd delta list", ErrInvalid)
		}
		base := make(map[ID]ID, len(cr.Deltas)/2)
		for i := 0; i < len(cr.Deltas); i += 2 {
			base[cr.Deltas[i]] = cr.Deltas[i+1]
		}
		for _, id := range cr.Chunks {
			links = append(links, ChunkLink{ID: id, Base: base[id]})
		}
	}
	ask := chunkQuestions(links)
	cst, err := local.Presence(ctx, ask, nil)
	if err != nil {
		return err
	}
	bases, rest := chunkPlan(links, ask, cst)
	rest = append(rest, absentTrees...)
	for i := len(absentCommits) - 1; i >= 0; i-- {
		rest = append(rest, absentCommits[i])
	}
	for _, ids := range [][]ID{bases, rest} {
		if err := c.fetchObjects(ctx, local, ref, ids, progress, t); err != nil {
			return err
		}
	}
	return nil
}

// fetchObjects receives ids into local, as many per request as the server sends
// (it stops after about MaxBatchBytes).
func (c *Client) fetchObjects(ctx context.Context, local Store, ref string, ids []ID, progress func(done, total int64), t *Transfer) error {
	for next := 0; next < len(ids); {
		want := ids[next:min(next+MaxIDs, len(ids))]
		body, err := json.Marshal(objectsRequest{Objects: want})
		if err != nil {
			return err
		}
		resp, err := c.post(ctx, "pull/objects", ref, jsonType, bytes.NewReader(body))
		if err != nil {
			return err
		}
		or := NewObjectReader(io.LimitReader(resp.Body, int64(MaxObjectsBody)))
		var got int
		stats, err := local.Receive(ctx, "", nil, func() (Object, error) {
			o, err := or.Next()
			if err != nil {
				return o, err
			}
			if got >= len(want) || o.ID != want[got] {
				return Object{}, fmt.Errorf("%w: remote pull/objects: sent %s, not the object asked for", ErrInvalid, o.ID.Short())
			}
			got++
			return o, nil
		})
		resp.Body.Close()
		t.Objects += stats.Objects
		t.ObjectBytes += stats.StoredBytes
		t.Batches++
		if progress != nil && stats.Objects > 0 {
			progress(t.ObjectBytes, -1)
		}
		if err != nil {
			return fmt.Errorf("remote pull/objects: %w", err)
		}
		if got == 0 {
			return fmt.Errorf("%w: remote pull/objects: empty answer", ErrInvalid)
		}
		next += got
	}
	return nil
}
