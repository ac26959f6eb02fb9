package hfclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// apiURL is {endpoint}/api/models/{repo}/{parts…}; parts are escaped already.
func (c *Client) apiURL(repo string, parts ...string) string {
	u := c.base + "/api/models/" + repo
	for _, p := range parts {
		u += "/" + p
	}
	return u
}

// escapeRev escapes a revision as one path segment ("refs/pr/1" →
// "refs%2Fpr%2F1"), as Python does (§1.3).
func escapeRev(rev string) string { return url.PathEscape(rev) }

// escapePath escapes each segment of a file path, keeping the slashes.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

func checkRepo(repo string) error {
	if !ValidRepoID(repo) {
		return fmt.Errorf("hf: %q is not a repository id (namespace/name of [A-Za-z0-9_.-])", repo)
	}
	return nil
}

// readJSON reads a JSON response body of at most maxJSONResponse bytes and
// closes it.
func readJSON(resp *http.Response, op, repo string) ([]byte, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONResponse+1))
	if err != nil {
		return nil, &Error{Op: op, Method: resp.Request.Method, URL: redactURL(resp.Request.URL.String()), Repo: repo, Err: fmt.Errorf("reading the response: %w", err)}
	}
	if len(body) > maxJSONResponse {
		return nil, &Error{Op: op, Method: resp.Request.Method, URL: redactURL(resp.Request.URL.String()), Repo: repo, Err: fmt.Errorf("%w: response larger than %d bytes", ErrProtocol, maxJSONResponse)}
	}
	return body, nil
}

// getJSON GETs a JSON document with retries, also when the body is cut.
func (c *Client) getJSON(ctx context.Context, op, repo, u string) ([]byte, http.Header, error) {
	for attempt := 1; ; attempt++ {
		resp, err := c.do(ctx, call{op: op, repo: repo, method: http.MethodGet, url: u, auth: true, idempotent: true, length: -1})
		if err != nil {
			return nil, nil, err
		}
		body, err := readJSON(resp, op, repo)
		if err == nil || errors.Is(err, ErrProtocol) || ctx.Err() != nil || attempt > c.opts.MaxRetries {
			return body, resp.Header, err
		}
		if werr := c.wait(ctx, c.backoff(attempt)); werr != nil {
			return nil, nil, werr
		}
	}
}

// RepoInfo returns the repo info at revision rev ("" means main) with its
// file list (§3.1); blobs asks for sizes and hashes of every file.
func (c *Client) RepoInfo(ctx context.Context, repo, rev string, blobs bool) (*RepoInfo, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if rev == "" {
		rev = "main"
	}
	u := c.apiURL(repo, "revision", escapeRev(rev))
	if blobs {
		u += "?blobs=true"
	}
	body, _, err := c.getJSON(ctx, "repo info", repo, u)
	if err != nil {
		return nil, err
	}
	info, _, err := parseRepoInfo(body)
	if err != nil {
		return nil, &Error{Op: "repo info", Method: http.MethodGet, URL: u, Repo: repo, Err: err}
	}
	return info, nil
}

// ResolveRevision returns the commit (40 hex digits) that revision rev of
// repo points to now. Pulls resolve once and then read everything at that
// commit, so that a branch moving meanwhile cannot mix two versions.
func (c *Client) ResolveRevision(ctx context.Context, repo, rev string) (string, error) {
	info, err := c.RepoInfo(ctx, repo, rev, false)
	if err != nil {
		return "", err
	}
	return info.SHA, nil
}

// ListFiles lists every file of repo at commit with its size and hash:
// GET /api/models/{repo}/tree/{commit}?recursive=true&expand=false, following
// Link rel="next" pages (§3.2, what huggingface_hub ≥ 1.22 uses). A server
// without the tree API (a 404 without an X-Error-Code, 405 or 501) is asked
// for the repo info with blobs=true instead (what PY0 uses, §6.2). Paths are
// returned as the server sent them; the caller validates them.
func (c *Client) ListFiles(ctx context.Context, repo, commit string) ([]RepoFile, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	next := c.apiURL(repo, "tree", escapeRev(commit)) + "?recursive=true&expand=false"
	var files []RepoFile
	seen := map[string]bool{}
	for pages := 0; next != ""; pages++ {
		if pages > 100_000 {
			return nil, &Error{Op: "list files", Repo: repo, Err: fmt.Errorf("%w: more than 100000 pages", ErrProtocol)}
		}
		body, hdr, err := c.getJSON(ctx, "list files", repo, next)
		var he *Error
		if pages == 0 && errors.As(err, &he) && he.Code == "" && (he.Status == http.StatusNotFound || he.Status == http.StatusMethodNotAllowed || he.Status == http.StatusNotImplemented) {
			return c.listFromInfo(ctx, repo, commit)
		}
		if err != nil {
			return nil, err
		}
		page, err := parseTree(body)
		if err != nil {
			return nil, &Error{Op: "list files", Method: http.MethodGet, URL: redactURL(next), Repo: repo, Err: err}
		}
		for _, f := range page {
			if seen[f.Path] {
				return nil, &Error{Op: "list files", Repo: repo, Path: f.Path, Err: fmt.Errorf("%w: listed twice", ErrProtocol)}
			}
			seen[f.Path] = true
			files = append(files, f)
		}
		next, err = c.nextPage(next, hdr.Get("Link"))
		if err != nil {
			return nil, &Error{Op: "list files", Repo: repo, Err: err}
		}
	}
	return files, nil
}

// nextPage resolves a Link rel="next" against the current page's URL; only
// pages on the endpoint's host are followed (they get the token).
func (c *Client) nextPage(cur, link string) (string, error) {
	n := parseNextLink(link)
	if n == "" {
		return "", nil
	}
	base, err := url.Parse(cur)
	if err != nil {
		return "", err
	}
	u, err := base.Parse(n)
	if err != nil {
		return "", fmt.Errorf("%w: Link %q: %v", ErrProtocol, n, err)
	}
	if !c.sameHost(u) {
		return "", fmt.Errorf("%w: the next page %s is on another host", ErrProtocol, redactURL(u.String()))
	}
	return u.String(), nil
}

func (c *Client) listFromInfo(ctx context.Context, repo, commit string) ([]RepoFile, error) {
	u := c.apiURL(repo, "revision", escapeRev(commit)) + "?blobs=true"
	body, _, err := c.getJSON(ctx, "list files", repo, u)
	if err != nil {
		return nil, err
	}
	info, sized, err := parseRepoInfo(body)
	if err == nil && !sized {
		err = fmt.Errorf("%w: the server lists files without sizes (no tree API, and blobs=true ignored)", ErrProtocol)
	}
	if err != nil {
		return nil, &Error{Op: "list files", Method: http.MethodGet, URL: u, Repo: repo, Err: err}
	}
	return info.Siblings, nil
}
