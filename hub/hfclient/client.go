package hfclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// DefaultEndpoint is the Hub.
const DefaultEndpoint = "https://huggingface.co"

// Defaults of Options. The downloads of a client buffer at most Connections ×
// RangeSize bytes (128 MiB with the defaults); the Hub's CDN serves each
// connection at tens of MB/s, so 8 of them fill most links.
const (
	DefaultMaxRetries    = 5
	DefaultRetryBase     = time.Second
	DefaultRetryMax      = 30 * time.Second
	DefaultMaxRetryAfter = 5 * time.Minute
	DefaultConnections   = 8
	DefaultRangeSize     = 16 << 20
	DefaultStallTimeout  = 60 * time.Second
)

// Options configure a Client. The zero value means the defaults documented
// per field.
type Options struct {
	// Endpoint is the Hub's base URL (scheme://host[:port][/prefix]); a
	// trailing slash is ignored. Empty: DefaultEndpoint.
	Endpoint string
	// Token is sent as "Authorization: Bearer" to the endpoint's host only
	// (never to a CDN a download is redirected to, nor to upload URLs).
	// Empty: anonymous.
	Token string
	// HTTPClient sends the requests. Nil: a client with connection and
	// response-header timeouts. Its CheckRedirect is replaced so that a
	// redirect to another host never carries the token.
	HTTPClient *http.Client
	// UserAgent identifies the client. Empty: "heft-hfclient".
	UserAgent string
	// MaxRetries is how many times a failed request is retried; negative
	// means never. Zero: DefaultMaxRetries.
	MaxRetries int
	// RetryBase and RetryMax shape the exponential backoff (doubling from
	// RetryBase up to RetryMax, with jitter). Zero: the defaults.
	RetryBase, RetryMax time.Duration
	// MaxRetryAfter caps how long a Retry-After (or RateLimit) header can
	// make the client wait. Zero: DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// Connections bounds the transfers (ranged GETs, part uploads) running at
	// once over all downloads and uploads of the client. Zero:
	// DefaultConnections.
	Connections int
	// RangeSize is the size of the ranges a large download is split into.
	// Zero: DefaultRangeSize.
	RangeSize int64
	// StallTimeout cancels (and retries) a transfer that receives no byte for
	// this long. Zero: DefaultStallTimeout.
	StallTimeout time.Duration
}

// Client talks to one Hub endpoint. It is safe for concurrent use.
type Client struct {
	endpoint *url.URL
	base     string // endpoint without trailing slash
	token    string
	http     *http.Client
	ua       string
	opts     Options
	conns    *semaphore.Weighted

	downloaded, uploaded, requests, retries atomic.Int64
}

// Stats counts what a client did since it was made.
type Stats struct {
	Requests        int64 // requests sent, retries included
	Retries         int64
	BytesDownloaded int64 // file content received (bodies of /resolve)
	BytesUploaded   int64 // LFS content sent (PUT bodies)
}

// New returns a client for opts.
func New(opts Options) (*Client, error) {
	if opts.Endpoint == "" {
		opts.Endpoint = DefaultEndpoint
	}
	base := strings.TrimRight(opts.Endpoint, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("hf: endpoint %q is not an http(s) URL", opts.Endpoint)
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = DefaultMaxRetries
	}
	if opts.MaxRetries < 0 {
		opts.MaxRetries = 0
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = DefaultRetryBase
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = DefaultRetryMax
	}
	if opts.MaxRetryAfter <= 0 {
		opts.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if opts.Connections <= 0 {
		opts.Connections = DefaultConnections
	}
	if opts.RangeSize <= 0 {
		opts.RangeSize = DefaultRangeSize
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "heft-hfclient"
	}
	hc := &http.Client{}
	if opts.HTTPClient != nil {
		*hc = *opts.HTTPClient
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 2 * time.Minute
		tr.MaxIdleConnsPerHost = opts.Connections
		hc.Transport = tr
	}
	hc.CheckRedirect = checkRedirect
	return &Client{
		endpoint: u, base: base, token: opts.Token, http: hc, ua: opts.UserAgent, opts: opts,
		conns: semaphore.NewWeighted(int64(opts.Connections)),
	}, nil
}

// checkRedirect follows up to 10 redirects and drops the Authorization header
// when one leaves the original host (§1.5): the Hub redirects LFS downloads to
// a CDN, which must not see the token. Go itself would keep it for a
// subdomain (cdn-lfs.huggingface.co).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		req.Header.Del("Authorization")
	}
	return nil
}

// Endpoint returns the endpoint's base URL.
func (c *Client) Endpoint() string { return c.base }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Requests: c.requests.Load(), Retries: c.retries.Load(), BytesDownloaded: c.downloaded.Load(), BytesUploaded: c.uploaded.Load()}
}

// EndpointFromEnv returns HF_ENDPOINT without a trailing slash, or
// DefaultEndpoint.
func EndpointFromEnv() string {
	if e := strings.TrimRight(strings.TrimSpace(os.Getenv("HF_ENDPOINT")), "/"); e != "" {
		return e
	}
	return DefaultEndpoint
}

// TokenFromEnv finds the token the way huggingface_hub does: HF_TOKEN, else
// the token file $HF_TOKEN_PATH, else $HF_HOME/token, else
// $XDG_CACHE_HOME/huggingface/token, else ~/.cache/huggingface/token. A
// missing file means no token ("", nil).
func TokenFromEnv() (string, error) {
	if t := strings.TrimSpace(os.Getenv("HF_TOKEN")); t != "" {
		return t, nil
	}
	path := os.Getenv("HF_TOKEN_PATH")
	if path == "" {
		home := os.Getenv("HF_HOME")
		if home == "" {
			cache := os.Getenv("XDG_CACHE_HOME")
			if cache == "" {
				h, err := os.UserHomeDir()
				if err != nil {
					return "", nil
				}
				cache = filepath.Join(h, ".cache")
			}
			home = filepath.Join(cache, "huggingface")
		}
		path = filepath.Join(home, "token")
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("hf: reading the token file: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// NewFromEnv is New with Endpoint and Token, when empty, taken from the
// environment (EndpointFromEnv, TokenFromEnv).
func NewFromEnv(opts Options) (*Client, error) {
	if opts.Endpoint == "" {
		opts.Endpoint = EndpointFromEnv()
	}
	if opts.Token == "" {
		t, err := TokenFromEnv()
		if err != nil {
			return nil, err
		}
		opts.Token = t
	}
	return New(opts)
}

// call is one logical request, sent as often as the retry policy allows.
type call struct {
	op, repo, path string
	method, url    string
	header         http.Header
	// body returns a fresh request body for each attempt (nil: none).
	body   func() (io.Reader, error)
	length int64 // of the body; -1 when unknown
	// auth sends the token (to the endpoint's host only).
	auth bool
	// idempotent requests are retried on transport errors and any retryable
	// status; others (a commit) only on 429 and 503, which say the request
	// was not processed.
	idempotent bool
	// accept lists statuses returned to the caller as responses; nil: 2xx.
	accept func(status int) bool
}

// jsonBody returns a body function for fixed bytes.
func jsonBody(b []byte) func() (io.Reader, error) {
	return func() (io.Reader, error) { return bytes.NewReader(b), nil }
}

// do sends c until it gets an accepted response (returned, body open) or a
// permanent failure (an *Error). ctx bounds everything, waits included.
func (c *Client) do(ctx context.Context, cl call) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		req, err := c.newRequest(ctx, cl)
		if err != nil {
			return nil, &Error{Op: cl.op, Method: cl.method, URL: redactURL(cl.url), Repo: cl.repo, Path: cl.path, Err: err}
		}
		c.requests.Add(1)
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			e := &Error{Op: cl.op, Method: cl.method, URL: redactURL(cl.url), Repo: cl.repo, Path: cl.path, Err: unwrapURLError(err), Attempts: attempt}
			if !cl.idempotent || !retryableTransport(err) || attempt > c.opts.MaxRetries {
				return nil, e
			}
			if err := c.wait(ctx, c.backoff(attempt)); err != nil {
				return nil, err
			}
			continue
		}
		ok := resp.StatusCode >= 200 && resp.StatusCode < 300
		if cl.accept != nil {
			ok = cl.accept(resp.StatusCode)
		}
		if ok {
			return resp, nil
		}
		retry := retryableStatus(resp.StatusCode)
		if !cl.idempotent {
			retry = resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable
		}
		if !retry || attempt > c.opts.MaxRetries {
			e := responseError(resp, cl.op, cl.repo, cl.path)
			e.Attempts = attempt
			resp.Body.Close()
			return nil, e
		}
		delay := c.retryAfter(resp.Header)
		if delay <= 0 {
			delay = c.backoff(attempt)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		if err := c.wait(ctx, delay); err != nil {
			return nil, err
		}
	}
}

func (c *Client) newRequest(ctx context.Context, cl call) (*http.Request, error) {
	var body io.Reader
	if cl.body != nil {
		b, err := cl.body()
		if err != nil {
			return nil, err
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, cl.url, body)
	if err != nil {
		return nil, err
	}
	if cl.body != nil && cl.length >= 0 {
		req.ContentLength = cl.length
		if cl.length == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range cl.header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", c.ua)
	if cl.auth && c.token != "" && c.sameHost(req.URL) {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// sameHost reports whether u is on the endpoint's scheme and host.
func (c *Client) sameHost(u *url.URL) bool {
	return strings.EqualFold(u.Host, c.endpoint.Host) && u.Scheme == c.endpoint.Scheme
}

// retryableStatus: request timeout, rate limit, and server errors except "not
// implemented" and "HTTP version not supported", which will not change.
func retryableStatus(s int) bool {
	switch {
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests:
		return true
	case s == http.StatusNotImplemented, s == http.StatusHTTPVersionNotSupported:
		return false
	}
	return s >= 500 && s < 600
}

// retryableTransport: a failure to get a response is worth retrying
// (resets, timeouts, refused connections, truncated responses) unless it is
// a certificate or URL problem, which will not go away.
func retryableTransport(err error) bool {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var cv *tls.CertificateVerificationError
	if errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &cv) {
		return false
	}
	var ue *url.Error
	if errors.As(err, &ue) && strings.Contains(ue.Err.Error(), "unsupported protocol scheme") {
		return false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return false
	}
	return true
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// backoff is the wait before retry number attempt (1-based): RetryBase
// doubled per attempt, capped at RetryMax, with jitter in [d/2, d].
func (c *Client) backoff(attempt int) time.Duration {
	d := c.opts.RetryBase
	for i := 1; i < attempt && d < c.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, c.opts.RetryMax)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// retryAfter reads how long the server asked to wait: Retry-After (seconds or
// an HTTP date) or the RateLimit header's t= ("api";r=0;t=55, §1.6), capped at
// MaxRetryAfter; 0 when absent.
func (c *Client) retryAfter(h http.Header) time.Duration {
	d := parseRetryAfter(h.Get("Retry-After"), time.Now())
	if d <= 0 {
		d = parseRateLimit(h.Get("RateLimit"))
	}
	return min(d, c.opts.MaxRetryAfter)
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n <= 0 || n > 1e6 {
			return 0
		}
		return time.Duration(n * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return t.Sub(now)
	}
	return 0
}

func parseRateLimit(v string) time.Duration {
	for _, part := range strings.Split(v, ";") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(part), "t="); ok {
			if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 1e6 {
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}

// wait sleeps for d unless ctx ends first.
func (c *Client) wait(ctx context.Context, d time.Duration) error {
	c.retries.Add(1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
