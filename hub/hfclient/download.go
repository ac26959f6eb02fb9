package hfclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// ResolveURL is the download URL of path at revision rev (§2.3). Pulls pass a
// commit id as rev, so that every range reads the same version.
func (c *Client) ResolveURL(repo, rev, path string) string {
	return c.base + "/" + repo + "/resolve/" + escapeRev(rev) + "/" + escapePath(path)
}

// OpenRange returns a reader of the n bytes of path (a file of size bytes; -1
// if unknown) at offset off, fetched over one connection with
// "Range: bytes=off-(off+n-1)" from /resolve (following redirects; the token
// is not sent to another host). Every response is checked: a 206 must carry
// the Content-Range asked for, with the file's size; a 200 (a server
// ignoring Range) must have the file's size, and the bytes before off are
// skipped. A transfer that fails mid-way (reset, timeout, stall, early end)
// resumes from the next byte after a backoff; it gives up after MaxRetries
// consecutive failures without progress. The reader holds one of the
// client's Connections from its first Read to its end or Close; Close must
// be called.
func (c *Client) OpenRange(ctx context.Context, repo, rev, path string, size, off, n int64) (io.ReadCloser, error) {
	if err := checkRange(size, off, n); err != nil {
		return nil, err
	}
	return c.newStream(ctx, repo, rev, path, size, off, n, true), nil
}

func checkRange(size, off, n int64) error {
	if off < 0 || n < 0 || (size >= 0 && off+n > size) {
		return fmt.Errorf("hf: range [%d, %d) outside a file of %d bytes", off, off+n, size)
	}
	return nil
}

// Download returns a reader of the n bytes of path (a file of size bytes) at
// offset off, in order. Up to RangeSize bytes it is OpenRange. Larger spans
// are split into ranges of RangeSize that are fetched by parallel ranged
// GETs, each as OpenRange fetches it, and delivered in order: a dispatcher
// takes one of the client's Connections per range, in range order, and a
// range's buffer and connection are released once the reader has consumed
// it. So all the downloads of a client together hold at most Connections ×
// RangeSize bytes, and the fetch runs ahead of a slow consumer by at most
// that much. Close must be called; it stops the fetches in flight.
func (c *Client) Download(ctx context.Context, repo, rev, path string, size, off, n int64) (io.ReadCloser, error) {
	if err := checkRange(size, off, n); err != nil {
		return nil, err
	}
	if n <= c.opts.RangeSize {
		return c.newStream(ctx, repo, rev, path, size, off, n, true), nil
	}
	pctx, cancel := context.WithCancel(ctx)
	p := &parallelReader{c: c, ctx: pctx, cancel: cancel}
	for pos := off; pos < off+n; pos += c.opts.RangeSize {
		p.parts = append(p.parts, part{off: pos, n: min(c.opts.RangeSize, off+n-pos), ch: make(chan partResult, 1)})
	}
	p.g.Go(func() error {
		p.dispatch(repo, rev, path, size)
		return nil
	})
	return p, nil
}

func (c *Client) newStream(ctx context.Context, repo, rev, path string, size, off, n int64, needSlot bool) *rangeStream {
	return &rangeStream{c: c, ctx: ctx, repo: repo, rev: rev, path: path, url: c.ResolveURL(repo, rev, path), size: size, pos: off, end: off + n, needSlot: needSlot}
}

// transientError marks a failure of open that a new attempt may fix.
type transientError struct{ err error }

func (t transientError) Error() string { return t.err.Error() }

// rangeStream reads [pos, end) of one file, resuming on failures.
type rangeStream struct {
	c          *Client
	ctx        context.Context
	repo, path string
	rev        string
	url        string
	size       int64
	pos, end   int64

	needSlot, slot bool

	body    io.ReadCloser
	bodyEnd int64 // where the current response's bytes end
	cancel  context.CancelFunc
	stall   *time.Timer
	stalled atomic.Bool

	failures int
	err      error // sticky
}

func (r *rangeStream) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if r.pos >= r.end {
			r.release()
			r.err = io.EOF
			return 0, io.EOF
		}
		if r.body == nil {
			if err := r.open(); err != nil {
				var te transientError
				if !errors.As(err, &te) || r.ctx.Err() != nil {
					// do has retried already, or it cannot work.
					r.err = err
					r.release()
					return 0, err
				}
				if err := r.failed(te.err); err != nil {
					return 0, err
				}
				continue
			}
		}
		q := p
		if lim := min(r.end, r.bodyEnd) - r.pos; int64(len(q)) > lim {
			q = q[:lim]
		}
		n, err := r.body.Read(q)
		if n > 0 {
			r.pos += int64(n)
			r.c.downloaded.Add(int64(n))
			r.failures = 0
			r.stall.Reset(r.c.opts.StallTimeout)
		}
		switch {
		case err != nil && r.pos < r.bodyEnd:
			// Cut short: reconnect from r.pos.
			r.closeBody()
			if n > 0 {
				return n, nil
			}
			if err == io.EOF {
				err = fmt.Errorf("connection closed at byte %d, before %d: %w", r.pos, r.bodyEnd, io.ErrUnexpectedEOF)
			}
			if r.stalled.Load() && r.ctx.Err() == nil {
				err = fmt.Errorf("no data for %v", r.c.opts.StallTimeout)
			}
			if err := r.failed(err); err != nil {
				return 0, err
			}
			continue
		case r.pos >= r.bodyEnd:
			r.closeBody()
		}
		if n > 0 {
			return n, nil
		}
	}
}

// failed handles a failed transfer attempt: it waits before the next one, or
// returns (and keeps) the final error.
func (r *rangeStream) failed(err error) error {
	if cerr := r.ctx.Err(); cerr != nil {
		r.err = cerr
		r.release()
		return cerr
	}
	r.failures++
	if r.failures > r.c.opts.MaxRetries {
		var e *Error
		if !errors.As(err, &e) {
			err = &Error{Op: "download", Method: http.MethodGet, URL: r.url, Repo: r.repo, Path: r.path, Err: err}
		}
		var fe *Error
		if errors.As(err, &fe) {
			fe.Attempts = r.failures
		}
		r.err = err
		r.release()
		return err
	}
	if werr := r.c.wait(r.ctx, r.c.backoff(r.failures)); werr != nil {
		r.err = werr
		r.release()
		return werr
	}
	return nil
}

// open sends the ranged GET for [pos, end) and checks the response.
func (r *rangeStream) open() error {
	if r.needSlot && !r.slot {
		if err := r.c.conns.Acquire(r.ctx, 1); err != nil {
			return err
		}
		r.slot = true
	}
	rctx, cancel := context.WithCancel(r.ctx)
	hdr := http.Header{
		"Range": {fmt.Sprintf("bytes=%d-%d", r.pos, r.end-1)},
		// Never compressed: lengths and offsets are of the content (§2.3).
		"Accept-Encoding": {"identity"},
	}
	resp, err := r.c.do(rctx, call{
		op: "download", repo: r.repo, path: r.path, method: http.MethodGet, url: r.url, header: hdr,
		auth: true, idempotent: true, length: -1,
		accept: func(s int) bool { return s == http.StatusOK || s == http.StatusPartialContent },
	})
	if err != nil {
		cancel()
		return err
	}
	bad := func(format string, args ...any) error {
		resp.Body.Close()
		cancel()
		return &Error{Op: "download", Method: http.MethodGet, URL: redactURL(resp.Request.URL.String()), Repo: r.repo, Path: r.path, Status: resp.StatusCode,
			Err: fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))}
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
		return bad("the content is %s-encoded", ce)
	}
	// The Hub names the commit it served (a CDN after a redirect does not).
	if rc := resp.Header.Get("X-Repo-Commit"); rc != "" && commitIDRe.MatchString(r.rev) && rc != r.rev {
		return bad("asked for commit %s, served commit %s", r.rev, rc)
	}
	if resp.StatusCode == http.StatusPartialContent {
		first, last, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case err != nil:
			return bad("%v", err)
		case first != r.pos || last >= r.end:
			return bad("asked for bytes %d-%d, got Content-Range %q", r.pos, r.end-1, resp.Header.Get("Content-Range"))
		case total >= 0 && r.size >= 0 && total != r.size:
			return bad("the file has %d bytes on the server, but is listed with %d", total, r.size)
		}
		r.bodyEnd = last + 1
	} else {
		// The server ignored Range and sends the whole file.
		if resp.ContentLength >= 0 && r.size >= 0 && resp.ContentLength != r.size {
			return bad("the file has %d bytes on the server, but is listed with %d", resp.ContentLength, r.size)
		}
		if r.pos > 0 {
			skipped, err := io.CopyN(io.Discard, resp.Body, r.pos)
			r.c.downloaded.Add(skipped)
			if err != nil {
				resp.Body.Close()
				cancel()
				return transientError{fmt.Errorf("skipping to byte %d of a full response: %w", r.pos, err)}
			}
		}
		r.bodyEnd = r.end
	}
	r.body, r.cancel = resp.Body, cancel
	r.stalled.Store(false)
	r.stall = time.AfterFunc(r.c.opts.StallTimeout, func() {
		r.stalled.Store(true)
		cancel()
	})
	return nil
}

func (r *rangeStream) closeBody() {
	if r.body == nil {
		return
	}
	r.stall.Stop()
	r.body.Close()
	r.cancel()
	r.body = nil
}

func (r *rangeStream) release() {
	r.closeBody()
	if r.slot {
		r.c.conns.Release(1)
		r.slot = false
	}
}

// Close ends the transfer and releases its connection.
func (r *rangeStream) Close() error {
	r.release()
	if r.err == nil {
		r.err = errors.New("hf: read after Close")
	}
	return nil
}

// parallelReader delivers consecutive ranges fetched in parallel, in order.
type parallelReader struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	g      errgroup.Group
	parts  []part

	cur  int    // next part to take
	data []byte // the part being read
	pos  int
	held bool // data's part holds a connection
	err  error
}

type part struct {
	off, n int64
	ch     chan partResult // gets exactly one result once dispatched (or refused)
}

type partResult struct {
	data []byte
	slot bool // the part holds a connection until it is consumed
	err  error
}

var rangeBuffers sync.Pool

// buffer returns a buffer of n bytes, reusing full-size ones.
func (p *parallelReader) buffer(n int64) []byte {
	if n == p.c.opts.RangeSize {
		if b, ok := rangeBuffers.Get().(*[]byte); ok && int64(cap(*b)) == n {
			return (*b)[:n]
		}
	}
	return make([]byte, n)
}

func (p *parallelReader) recycle(b []byte) {
	if int64(cap(b)) == p.c.opts.RangeSize {
		rangeBuffers.Put(&b)
	}
}

// dispatch starts one fetch per part, in order, each after taking a
// connection. When it cannot take one (the reader was closed, or ctx ended)
// it tells the part it stopped at and returns.
func (p *parallelReader) dispatch(repo, rev, path string, size int64) {
	for i := range p.parts {
		pt := &p.parts[i]
		if err := p.c.conns.Acquire(p.ctx, 1); err != nil {
			pt.ch <- partResult{err: err}
			return
		}
		p.g.Go(func() error {
			s := p.c.newStream(p.ctx, repo, rev, path, size, pt.off, pt.n, false)
			buf := p.buffer(pt.n)
			_, err := io.ReadFull(s, buf)
			s.Close()
			if err != nil {
				p.recycle(buf)
				buf = nil
			}
			pt.ch <- partResult{data: buf, slot: true, err: err}
			return nil
		})
	}
}

func (p *parallelReader) Read(b []byte) (int, error) {
	for p.err == nil && p.pos == len(p.data) {
		p.done()
		if p.cur == len(p.parts) {
			p.err = io.EOF
			break
		}
		res := <-p.parts[p.cur].ch
		p.cur++
		p.data, p.pos, p.held = res.data, 0, res.slot
		if res.err != nil {
			p.err = res.err
		}
	}
	if p.err != nil {
		return 0, p.err
	}
	n := copy(b, p.data[p.pos:])
	p.pos += n
	return n, nil
}

// done releases the part just consumed.
func (p *parallelReader) done() {
	if p.data != nil {
		p.recycle(p.data)
		p.data, p.pos = nil, 0
	}
	if p.held {
		p.c.conns.Release(1)
		p.held = false
	}
}

// Close stops the fetches in flight, waits for them, and releases every
// connection and buffer the reader holds.
func (p *parallelReader) Close() error {
	p.cancel()
	_ = p.g.Wait()
	p.done()
	for i := p.cur; i < len(p.parts); i++ {
		select {
		case res := <-p.parts[i].ch:
			if res.slot {
				p.c.conns.Release(1)
			}
			if res.data != nil {
				p.recycle(res.data)
			}
		default:
			// Never dispatched.
		}
	}
	p.cur = len(p.parts)
	if p.err == nil {
		p.err = errors.New("hf: read after Close")
	}
	return nil
}
