package hub_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
)

// writeEnv is a write-enabled server over a hubtest.Repos, with tokens:
//
//	admin   *:write
//	alice   alice:write, acme:write
//	bob     bob:write
//	reader  acme:read (user "carol")
//
// and small limits so that tests exercise multipart uploads and body caps
// with little data. The clock is settable (upload URL expiry).
type writeEnv struct {
	t     *testing.T
	repos *hubtest.Repos // the fake, or nil when the env runs over another store
	// fingerprint summarises the store's state, to show that a refused request
	// changed nothing.
	fingerprint func() string
	handler     *hub.Handler
	url         string
	logs        *logBuffer
	tokens      map[string]string // name → token
	staging     string

	mu  sync.Mutex
	now time.Time
}

const (
	testChunk     = 256 << 10
	testThreshold = 512 << 10
)

func newWriteEnv(t *testing.T, tweak func(*hub.Options)) *writeEnv {
	t.Helper()
	fake := hubtest.New()
	e := newWriteEnvOn(t, tweak, fake, fake, fake.Fingerprint)
	e.repos = fake
	t.Cleanup(func() {
		if n := fake.OpenReaders(); n != 0 {
			t.Errorf("%d readers left open", n)
		}
	})
	return e
}

// newWriteEnvOn serves repos and writer (any store) with the env's tokens.
func newWriteEnvOn(t *testing.T, tweak func(*hub.Options), repos hub.Repos, writer hub.Writer, fingerprint func() string) *writeEnv {
	t.Helper()
	e := &writeEnv{t: t, fingerprint: fingerprint, logs: &logBuffer{}, tokens: map[string]string{}, now: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
	store, err := hub.OpenTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []struct {
		name, user string
		grants     []string
	}{
		{"admin", "root", []string{"*:write"}},
		{"alice", "alice", []string{"alice:write", "acme:write"}},
		{"bob", "bob", []string{"bob:write"}},
		{"reader", "carol", []string{"acme:read"}},
	} {
		var grants []hub.Grant
		for _, g := range tok.grants {
			gr, err := hub.ParseGrant(g)
			if err != nil {
				t.Fatal(err)
			}
			grants = append(grants, gr)
		}
		secret, _, err := store.Create(tok.name, tok.user, grants, 0)
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[tok.name] = secret
	}
	e.staging = filepath.Join(t.TempDir(), "staging")
	opts := hub.Options{
		Logger:             slog.New(slog.NewJSONHandler(e.logs, nil)),
		Writer:             writer,
		Tokens:             store,
		UploadKey:          bytes.Repeat([]byte{7}, 32),
		MultipartThreshold: testThreshold,
		MultipartChunkSize: testChunk,
		MaxObjectSize:      64 << 20,
		MaxInlineFileSize:  1 << 20,
		MaxCommitBytes:     4 << 20,
		StagingDir:         e.staging,
		Now:                e.clock,
	}
	if tweak != nil {
		tweak(&opts)
	}
	e.handler = hub.NewHandler(repos, opts)
	srv := httptest.NewServer(e.handler)
	e.url = srv.URL
	t.Cleanup(func() {
		srv.Close()
		if err := e.handler.Close(); err != nil {
			t.Errorf("Handler.Close: %v", err)
		}
	})
	return e
}

func (e *writeEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *writeEnv) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

// call sends a request with the named token ("" for none; a name not in
// the table is sent as the raw Authorization header) and returns the
// response and its body.
func (e *writeEnv) call(method, path, token, contentType string, body []byte) (*http.Response, []byte) {
	e.t.Helper()
	u := path
	if !strings.HasPrefix(path, "http") {
		u = e.url + path
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body == nil {
		req.Body = http.NoBody
		req.ContentLength = 0
	}
	if token != "" {
		if secret, ok := e.tokens[token]; ok {
			req.Header.Set("Authorization", "Bearer "+secret)
		} else {
			req.Header.Set("Authorization", token)
		}
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, b
}

// json sends v as a JSON body.
func (e *writeEnv) json(method, path, token string, v any) (*http.Response, []byte) {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.call(method, path, token, "application/json", b)
}

// expect checks a response's status and X-Error-Code, and that an error
// body is {"error": …} JSON.
func expect(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("%s: status %d, want %d (body %s)", what, resp.StatusCode, status, trim(body))
		return
	}
	if got := resp.Header.Get("X-Error-Code"); got != code {
		t.Errorf("%s: X-Error-Code %q, want %q", what, got, code)
	}
	if status >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("%s: error body %s is not {\"error\": …}", what, trim(body))
		}
	}
}

func trim(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// createRepo creates ns/name as alice (who may write alice and acme).
func (e *writeEnv) createRepo(repo string) {
	e.t.Helper()
	ns, name, _ := strings.Cut(repo, "/")
	resp, body := e.json(http.MethodPost, "/api/repos/create", "alice", map[string]any{"name": name, "organization": ns, "private": false})
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("create %s: %d %s", repo, resp.StatusCode, body)
	}
}

// ndjson builds a commit body the way Python does (every line ends with
// "\n").
func ndjson(lines ...map[string]any) []byte {
	var b bytes.Buffer
	for _, l := range lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func header(summary string) map[string]any {
	return map[string]any{"key": "header", "value": map[string]any{"summary": summary, "description": ""}}
}

func inline(path string, data []byte) map[string]any {
	return map[string]any{"key": "file", "value": map[string]any{"path": path, "content": base64.StdEncoding.EncodeToString(data), "encoding": "base64"}}
}

func lfsLine(path string, data []byte) map[string]any {
	return map[string]any{"key": "lfsFile", "value": map[string]any{"path": path, "algo": "sha256", "oid": hubtest.SHA256(data), "size": len(data)}}
}

func deleted(key, path string) map[string]any {
	return map[string]any{"key": key, "value": map[string]any{"path": path}}
}

// commitResp is the body of a successful commit.
type commitResp struct {
	Success   bool   `json:"success"`
	CommitOID string `json:"commitOid"`
	CommitURL string `json:"commitUrl"`
}

// commit posts an NDJSON commit as alice and requires success.
func (e *writeEnv) commit(repo, rev string, body []byte) commitResp {
	e.t.Helper()
	resp, b := e.call(http.MethodPost, "/api/models/"+repo+"/commit/"+url.PathEscape(rev), "alice", "application/x-ndjson", body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("commit to %s@%s: %d %s", repo, rev, resp.StatusCode, b)
	}
	var c commitResp
	if err := json.Unmarshal(b, &c); err != nil {
		e.t.Fatal(err)
	}
	return c
}

// batchReply is the LFS batch answer as a client reads it.
type batchReply struct {
	Transfer string `json:"transfer"`
	Objects  []struct {
		OID     string                     `json:"oid"`
		Size    int64                      `json:"size"`
		Actions map[string]json.RawMessage `json:"actions"`
		Error   *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	} `json:"objects"`
}

type lfsAction struct {
	Href   string            `json:"href"`
	Header map[string]string `json:"header"`
}

func (e *writeEnv) batch(repo, token string, transfers []string, objs ...[]byte) (*http.Response, batchReply, []byte) {
	e.t.Helper()
	var list []map[string]any
	for _, o := range objs {
		list = append(list, map[string]any{"oid": hubtest.SHA256(o), "size": len(o)})
	}
	b, _ := json.Marshal(map[string]any{"operation": "upload", "transfers": transfers, "objects": list, "hash_algo": "sha256", "ref": map[string]string{"name": "main"}})
	resp, body := e.call(http.MethodPost, "/"+repo+".git/info/lfs/objects/batch", token, "application/vnd.git-lfs+json", b)
	var reply batchReply
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &reply); err != nil {
			e.t.Fatalf("batch reply %s: %v", body, err)
		}
	}
	return resp, reply, body
}

func action(t *testing.T, raw json.RawMessage) lfsAction {
	t.Helper()
	var a lfsAction
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("action %s: %v", raw, err)
	}
	return a
}

// upload sends objs to repo through the LFS batch API as alice, with basic
// or multipart uploads as the server says, and verifies each.
func (e *writeEnv) upload(repo string, objs ...[]byte) {
	e.t.Helper()
	resp, reply, body := e.batch(repo, "alice", []string{"basic", "multipart"}, objs...)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("batch: %d %s", resp.StatusCode, body)
	}
	for i, o := range reply.Objects {
		if o.Error != nil {
			e.t.Fatalf("batch object %s: %+v", o.OID, o.Error)
		}
		if o.Actions == nil {
			continue
		}
		up := action(e.t, o.Actions["upload"])
		data := objs[i]
		if cs, ok := up.Header["chunk_size"]; ok {
			var chunk int
			fmt.Sscan(cs, &chunk)
			var parts []map[string]any
			for n := 1; (n-1)*chunk < len(data); n++ {
				end := min(n*chunk, len(data))
				r, b := e.call(http.MethodPut, up.Header[fmt.Sprint(n)], "", "", data[(n-1)*chunk:end])
				if r.StatusCode != http.StatusOK || r.Header.Get("ETag") == "" {
					e.t.Fatalf("part %d: %d %s", n, r.StatusCode, b)
				}
				parts = append(parts, map[string]any{"partNumber": n, "etag": r.Header.Get("ETag")})
			}
			r, b := e.json(http.MethodPost, up.Href, "", map[string]any{"oid": o.OID, "parts": parts})
			if r.StatusCode != http.StatusOK {
				e.t.Fatalf("complete: %d %s", r.StatusCode, b)
			}
		} else {
			r, b := e.call(http.MethodPut, up.Href, "", "", data)
			if r.StatusCode != http.StatusOK {
				e.t.Fatalf("PUT: %d %s", r.StatusCode, b)
			}
		}
		v := action(e.t, o.Actions["verify"])
		r, b := e.json(http.MethodPost, v.Href, "alice", map[string]any{"oid": o.OID, "size": o.Size})
		if r.StatusCode != http.StatusOK {
			e.t.Fatalf("verify: %d %s", r.StatusCode, b)
		}
	}
}

// download GETs a file through the read API as alice.
func (e *writeEnv) download(repo, rev, path string) (int, []byte) {
	e.t.Helper()
	resp, b := e.call(http.MethodGet, "/"+repo+"/resolve/"+url.PathEscape(rev)+"/"+path, "alice", "", nil)
	return resp.StatusCode, b
}

// stagedFiles lists what is left in the staging dir.
func (e *writeEnv) stagedFiles() []string {
	var out []string
	filepath.WalkDir(e.staging, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}
