package hub_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
	"github.com/heft-dev/heft/internal/storehub"
	"github.com/heft-dev/heft/store"
)

// TestAuthMatrix sends every read and write request with every kind of
// caller and checks the refusals: status, X-Error-Code, an {"error": …}
// body, and that the store did not change.
func TestAuthMatrix(t *testing.T) {
	t.Run("fake", func(t *testing.T) { authMatrix(t, newWriteEnv(t, nil)) })
	// The same matrix over heft's real store: refs and pack bytes must not move.
	t.Run("store", func(t *testing.T) {
		s := store.TestStore(t, store.Options{})
		fingerprint := func() string {
			refs, err := s.Refs()
			if err != nil {
				t.Fatal(err)
			}
			st, err := s.Stats(nil)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("%v %d", refs, st.PhysicalBytes)
		}
		authMatrix(t, newWriteEnvOn(t, nil, storehub.NewRepos(s), storehub.NewWriter(s), fingerprint))
	})
}

func authMatrix(t *testing.T, e *writeEnv) {
	e.createRepo("acme/private")
	e.commit("acme/private", "main", ndjson(header("one"), inline("config.json", []byte("{}\n"))))
	weights := randomBytes(9, 1000)

	type request struct {
		name, method, path, contentType string
		body                            []byte
		write                           bool
		create                          bool // a create-repo request: no repo to hide
	}
	j := func(v any) []byte { b, _ := json.Marshal(v); return b }
	batch := j(map[string]any{"operation": "upload", "transfers": []string{"basic"}, "objects": []map[string]any{{"oid": hubtest.SHA256(weights), "size": len(weights)}}})
	requests := []request{
		{"resolve", "GET", "/acme/private/resolve/main/config.json", "", nil, false, false},
		{"head", "HEAD", "/acme/private/resolve/main/config.json", "", nil, false, false},
		{"raw", "GET", "/acme/private/raw/main/config.json", "", nil, false, false},
		{"info", "GET", "/api/models/acme/private", "", nil, false, false},
		{"revision", "GET", "/api/models/acme/private/revision/main", "", nil, false, false},
		{"tree", "GET", "/api/models/acme/private/tree/main", "", nil, false, false},
		{"paths-info", "POST", "/api/models/acme/private/paths-info/main", "application/json", j(map[string]any{"paths": []string{"config.json"}}), false, false},
		{"preupload", "POST", "/api/models/acme/private/preupload/main", "application/json", j(map[string]any{"files": []map[string]any{{"path": "a.txt", "size": 1, "sample": "YQ=="}}}), true, false},
		{"lfs batch", "POST", "/acme/private.git/info/lfs/objects/batch", "application/vnd.git-lfs+json", batch, true, false},
		{"commit", "POST", "/api/models/acme/private/commit/main", "application/x-ndjson", ndjson(header("x"), inline("x.txt", []byte("x"))), true, false},
		{"create branch", "POST", "/api/models/acme/private/branch/dev", "application/json", j(map[string]any{}), true, false},
		{"delete branch", "DELETE", "/api/models/acme/private/branch/main", "", nil, true, false},
		{"create tag", "POST", "/api/models/acme/private/tag/main", "application/json", j(map[string]any{"tag": "v1"}), true, false},
		{"delete tag", "DELETE", "/api/models/acme/private/tag/v0", "", nil, true, false},
		{"delete repo", "DELETE", "/api/repos/delete", "application/json", j(map[string]any{"name": "private", "organization": "acme"}), true, false},
		{"create repo", "POST", "/api/repos/create", "application/json", j(map[string]any{"name": "new", "organization": "acme"}), true, true},
	}
	type want struct {
		status int
		code   string
	}
	const invalidCreds = "Invalid credentials in Authorization header"
	for _, caller := range []struct {
		name, token string
		read, write want // for repo-scoped requests; zero = allowed
		create      want
		errMessage  string
	}{
		{"anonymous", "", want{401, "RepoNotFound"}, want{401, "RepoNotFound"}, want{401, ""}, ""},
		{"unknown token", "Bearer heft_" + strings.Repeat("0", 43), want{401, ""}, want{401, ""}, want{401, ""}, invalidCreds},
		{"not a heft token", "Bearer hf_abcdef", want{401, ""}, want{401, ""}, want{401, ""}, invalidCreds},
		{"malformed header", "Token abc", want{401, ""}, want{401, ""}, want{401, ""}, invalidCreds},
		{"empty bearer", "Bearer ", want{401, ""}, want{401, ""}, want{401, ""}, invalidCreds},
		{"other namespace", "bob", want{404, "RepoNotFound"}, want{404, "RepoNotFound"}, want{403, ""}, ""},
		{"read-only token", "reader", want{}, want{403, ""}, want{403, ""}, ""},
	} {
		for _, req := range requests {
			w := caller.read
			if req.write {
				w = caller.write
			}
			if req.create {
				w = caller.create
			}
			if w.status == 0 {
				continue // allowed; the other tests cover the answers
			}
			before := e.fingerprint()
			resp, body := e.call(req.method, req.path, caller.token, req.contentType, req.body)
			what := caller.name + " " + req.name
			if resp.StatusCode != w.status || resp.Header.Get("X-Error-Code") != w.code {
				t.Errorf("%s: %d %q, want %d %q (%s)", what, resp.StatusCode, resp.Header.Get("X-Error-Code"), w.status, w.code, trim(body))
			}
			if req.method != http.MethodHead {
				expect(t, what, resp, body, w.status, w.code)
			}
			if caller.errMessage != "" && resp.Header.Get("X-Error-Message") != caller.errMessage {
				t.Errorf("%s: X-Error-Message %q, want %q", what, resp.Header.Get("X-Error-Message"), caller.errMessage)
			}
			if e.fingerprint() != before {
				t.Errorf("%s: a refused request changed the store", what)
			}
		}
	}

	// Listings show only what the caller may read.
	_, body := e.call(http.MethodGet, "/api/models", "bob", "", nil)
	if strings.Contains(string(body), "acme/private") {
		t.Errorf("bob's listing shows acme/private: %s", body)
	}
	_, body = e.call(http.MethodGet, "/api/models", "reader", "", nil)
	if !strings.Contains(string(body), "acme/private") {
		t.Errorf("reader's listing lacks acme/private: %s", body)
	}
	// The admin's wildcard grant reaches every namespace.
	resp, body := e.json(http.MethodPost, "/api/repos/create", "admin", map[string]any{"name": "x", "organization": "anyone"})
	expect(t, "admin creates anywhere", resp, body, 200, "")
	// Basic auth with the token as password (git, git-lfs) works too.
	resp, body = e.call(http.MethodGet, "/api/models/acme/private", "Basic "+basicAuth("x", e.tokens["reader"]), "", nil)
	expect(t, "basic auth", resp, body, 200, "")
}

func basicAuth(user, pass string) string {
	return strings.TrimSpace(strings.TrimPrefix(func() string {
		r, _ := http.NewRequest("GET", "http://x", nil)
		r.SetBasicAuth(user, pass)
		return r.Header.Get("Authorization")
	}(), "Basic"))
}

// TestTraversal sends repo ids and file paths that try to escape, in every
// place they occur; all are refused and nothing changes.
func TestTraversal(t *testing.T) {
	e := newWriteEnv(t, nil)
	e.createRepo("acme/r")
	before := e.fingerprint()
	for _, tc := range []struct {
		method, path, contentType string
		body                      []byte
		status                    int
		code                      string
	}{
		{"POST", "/api/models/acme/..%2F..%2Fetc/commit/main", "application/x-ndjson", ndjson(header("x")), 404, "RepoNotFound"},
		{"POST", "/api/models/..%2Facme/r/commit/main", "application/x-ndjson", ndjson(header("x")), 404, "RepoNotFound"},
		{"POST", "/api/models/acme%2Fr/x/commit/main", "application/x-ndjson", ndjson(header("x")), 404, "RepoNotFound"},
		{"POST", "/acme/..%2Fr.git/info/lfs/objects/batch", "application/json", []byte(`{}`), 404, "RepoNotFound"},
		{"POST", "/api/models/acme/r/commit/main", "application/x-ndjson", ndjson(header("x"), inline("../../etc/passwd", []byte("x"))), 400, ""},
		{"POST", "/api/models/acme/r/commit/main", "application/x-ndjson", ndjson(header("x"), inline("a/../../b", []byte("x"))), 400, ""},
		{"POST", "/api/models/acme/r/commit/main", "application/x-ndjson", ndjson(header("x"), inline("a/./b", []byte("x"))), 400, ""},
		{"POST", "/api/models/acme/r/commit/main", "application/x-ndjson", ndjson(header("x"), deleted("deletedFolder", "..")), 400, ""},
		{"POST", "/api/models/acme/r/commit/main", "application/x-ndjson", ndjson(header("x"), inline("a\u202e.txt\x7f", []byte("x"))), 400, ""},
		{"POST", "/api/models/acme/r/commit/main", "application/x-ndjson", ndjson(header("x"), inline(strings.Repeat("a/", 600)+"b", []byte("x"))), 400, ""},
		{"POST", "/api/models/acme/r/commit/main", "application/x-ndjson", ndjson(header("x"), inline(strings.Repeat("a", 256), []byte("x"))), 400, ""},
		{"POST", "/api/repos/create", "application/json", []byte(`{"name":"..","organization":"acme"}`), 400, ""},
		{"POST", "/api/repos/create", "application/json", []byte(`{"name":"r","organization":"../acme"}`), 400, ""},
		{"POST", "/api/repos/create", "application/json", []byte(`{"name":"r\u0000x","organization":"acme"}`), 400, ""},
		{"POST", "/api/models/acme/r/branch/..%2F..%2Fx", "application/json", []byte(`{}`), 400, ""},
		{"POST", "/api/models/acme/r/tag/main", "application/json", []byte(`{"tag":"../x"}`), 400, ""},
	} {
		resp, body := e.call(tc.method, tc.path, "admin", tc.contentType, tc.body)
		expect(t, tc.method+" "+tc.path+" "+trim(tc.body), resp, body, tc.status, tc.code)
	}
	if e.fingerprint() != before {
		t.Error("a refused request changed the store")
	}
}

// TestUploadURLs checks the signed upload URLs: tampering with any signed
// part, or using one after it expired, is a 403 with a clear message, and
// nothing is stored.
func TestUploadURLs(t *testing.T) {
	e := newWriteEnv(t, nil)
	e.createRepo("acme/u")
	data := randomBytes(10, 3000)
	big := randomBytes(11, 2*testChunk+1)
	_, reply, _ := e.batch("acme/u", "alice", []string{"basic", "multipart"}, data, big)
	put := action(t, reply.Objects[0].Actions["upload"]).Href
	verify := action(t, reply.Objects[0].Actions["verify"]).Href
	mp := action(t, reply.Objects[1].Actions["upload"])
	oid, size := hubtest.SHA256(data), fmt.Sprint(len(data))

	u, _ := url.Parse(put)
	q := u.Query()
	with := func(path string, set func(url.Values)) string {
		v := url.Values{}
		for k, vs := range q {
			v[k] = append([]string(nil), vs...)
		}
		if set != nil {
			set(v)
		}
		return e.url + path + "?" + v.Encode()
	}
	otherOID := hubtest.SHA256([]byte("other"))
	before := e.fingerprint()
	for _, tc := range []struct {
		name, method, url string
		body              []byte
		status            int
		msg               string
	}{
		{"another oid", "PUT", with(strings.Replace(u.Path, oid, otherOID, 1), nil), []byte("other"), 403, "signature"},
		{"another size", "PUT", with(strings.Replace(u.Path, "/"+size, "/2999", 1), nil), data[:2999], 403, "signature"},
		{"another repo", "PUT", with(strings.Replace(u.Path, "acme/u", "alice/u", 1), nil), data, 403, "signature"},
		{"another signature", "PUT", with(u.Path, func(v url.Values) { v.Set("sig", strings.Repeat("A", 43)) }), data, 403, "signature"},
		{"no signature", "PUT", with(u.Path, func(v url.Values) { v.Del("sig") }), data, 403, "signature"},
		{"another user", "PUT", with(u.Path, func(v url.Values) { v.Set("u", "bob") }), data, 403, "signature"},
		{"a later expiry", "PUT", with(u.Path, func(v url.Values) { v.Set("exp", fmt.Sprint(time.Now().Add(1000*time.Hour).Unix())) }), data, 403, "signature"},
		{"the verify URL for a PUT", "PUT", strings.Replace(verify, "/verify/", "/object/", 1), data, 403, "signature"},
		{"a part URL as another part", "PUT", strings.Replace(mp.Header["1"], "/1?", "/2?", 1), big[testChunk : 2*testChunk], 403, "signature"},
		{"the completion URL of another upload", "POST", strings.Replace(mp.Href, hubtest.SHA256(big), oid, 1), []byte(`{}`), 403, "signature"},
		{"a mangled path", "PUT", e.url + "/.heft-lfs/object/acme/u/" + oid, data, 404, ""},
		{"a method the URL was not signed for", "POST", put, data, 405, ""},
	} {
		resp, body := e.call(tc.method, tc.url, "", "", tc.body)
		expect(t, tc.name, resp, body, tc.status, "")
		if !strings.Contains(string(body), tc.msg) {
			t.Errorf("%s: body %s does not explain (%q)", tc.name, body, tc.msg)
		}
	}
	if e.fingerprint() != before {
		t.Error("a refused upload changed the store")
	}
	// Expired: the default lifetime is 6h.
	e.advance(6*time.Hour + time.Second)
	resp, body := e.call(http.MethodPut, put, "", "", data)
	expect(t, "expired URL", resp, body, 403, "")
	if !strings.Contains(string(body), "expired") {
		t.Errorf("expired URL: body %s", body)
	}
	resp, body = e.call(http.MethodPut, mp.Header["1"], "", "", big[:testChunk])
	expect(t, "expired part URL", resp, body, 403, "")
	if e.repos.Fingerprint() != before || len(e.stagedFiles()) != 0 {
		t.Error("an expired URL changed the store or staged a part")
	}
	// A fresh batch gives working URLs again.
	e.upload("acme/u", data)
}

// TestServerModes: anonymous reads on request, and a server without a
// Writer refusing every write route.
func TestServerModes(t *testing.T) {
	e := newWriteEnv(t, func(o *hub.Options) { o.AnonymousRead = true })
	e.createRepo("acme/open")
	resp, body := e.call(http.MethodGet, "/api/models/acme/open", "", "", nil)
	expect(t, "anonymous read with AnonymousRead", resp, body, 200, "")
	resp, body = e.call(http.MethodPost, "/api/models/acme/open/commit/main", "", "application/x-ndjson", ndjson(header("x")))
	expect(t, "anonymous write with AnonymousRead", resp, body, 401, "RepoNotFound")
	resp, body = e.call(http.MethodGet, "/api/models/acme/open", "Bearer bogus", "", nil)
	expect(t, "a bad token is refused even where anonymous reads work", resp, body, 401, "")

	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	for _, tc := range []struct{ method, path string }{
		{"POST", "/api/repos/create"},
		{"POST", "/api/models/acme/tiny/commit/main"},
		{"POST", "/api/models/acme/tiny/preupload/main"},
		{"POST", "/acme/tiny.git/info/lfs/objects/batch"},
		{"POST", "/api/models/acme/tiny/branch/x"},
		{"DELETE", "/api/repos/delete"},
	} {
		resp, body := do(t, tc.method, srv.URL+tc.path, nil, strings.NewReader("{}"))
		if resp.StatusCode != 403 || !strings.Contains(string(body), "read-only") {
			t.Errorf("read-only server: %s %s: %d %s", tc.method, tc.path, resp.StatusCode, body)
		}
	}
}

func TestWhoamiWithTokens(t *testing.T) {
	e := newWriteEnv(t, nil)
	for _, tc := range []struct {
		token, name, role string
		orgs              []string
	}{
		{"alice", "alice", "write", []string{"acme"}},
		{"reader", "carol", "read", []string{"acme"}},
		{"admin", "root", "write", nil},
	} {
		resp, body := e.call(http.MethodGet, "/api/whoami-v2", tc.token, "", nil)
		var who struct {
			Name string `json:"name"`
			Orgs []struct {
				Name string `json:"name"`
			} `json:"orgs"`
			Auth struct {
				AccessToken struct {
					DisplayName, Role string
				} `json:"accessToken"`
			} `json:"auth"`
		}
		json.Unmarshal(body, &who)
		var orgs []string
		for _, o := range who.Orgs {
			orgs = append(orgs, o.Name)
		}
		if resp.StatusCode != 200 || who.Name != tc.name || who.Auth.AccessToken.Role != tc.role || who.Auth.AccessToken.DisplayName != tc.token || fmt.Sprint(orgs) != fmt.Sprint(tc.orgs) {
			t.Errorf("whoami %s: %d %s", tc.token, resp.StatusCode, body)
		}
	}
	resp, body := e.call(http.MethodGet, "/api/whoami-v2", "", "", nil)
	expect(t, "anonymous whoami", resp, body, 401, "")
}

// TestBodyLimits sends bodies over each cap: 413, nothing stored.
func TestBodyLimits(t *testing.T) {
	e := newWriteEnv(t, nil)
	e.createRepo("acme/l")
	pad := func(n int) string { return strings.Repeat("x", n) }
	many := make([]map[string]any, 1001)
	for i := range many {
		many[i] = map[string]any{"path": fmt.Sprintf("f%d", i), "size": 1, "sample": "YQ=="}
	}
	var manyObjs []map[string]any
	for range 1001 {
		manyObjs = append(manyObjs, map[string]any{"oid": strings.Repeat("a", 64), "size": 1})
	}
	j := func(v any) []byte { b, _ := json.Marshal(v); return b }
	for _, tc := range []struct {
		name, method, path, contentType string
		body                            []byte
		status                          int
	}{
		{"create repo body", "POST", "/api/repos/create", "application/json", j(map[string]any{"name": "x", "organization": "acme", "pad": pad(3 << 20)}), 413},
		{"branch body", "POST", "/api/models/acme/l/branch/x", "application/json", j(map[string]any{"pad": pad(2 << 20)}), 413},
		{"tag body", "POST", "/api/models/acme/l/tag/main", "application/json", j(map[string]any{"tag": "v", "pad": pad(2 << 20)}), 413},
		{"batch body", "POST", "/acme/l.git/info/lfs/objects/batch", "application/json", j(map[string]any{"operation": "upload", "pad": pad(5 << 20)}), 413},
		{"batch objects", "POST", "/acme/l.git/info/lfs/objects/batch", "application/json", j(map[string]any{"operation": "upload", "objects": manyObjs}), 422},
		{"preupload body", "POST", "/api/models/acme/l/preupload/main", "application/json", j(map[string]any{"files": []any{}, "pad": pad(5 << 20)}), 413},
		{"preupload files", "POST", "/api/models/acme/l/preupload/main", "application/json", j(map[string]any{"files": many}), 400},
		{"validate-yaml body", "POST", "/api/validate-yaml", "application/json", j(map[string]any{"content": pad(9 << 20)}), 413},
		{"inline file", "POST", "/api/models/acme/l/commit/main", "application/x-ndjson", ndjson(header("x"), inline("big.txt", randomBytes(12, 1<<20+1))), 413},
		{"inline file (JSON form)", "POST", "/api/models/acme/l/commit/main", "application/json", j(map[string]any{"summary": "x", "files": []map[string]string{{"path": "a", "content": pad(2 << 20), "encoding": "utf-8"}}}), 413},
		{"commit body", "POST", "/api/models/acme/l/commit/main", "application/x-ndjson", bytes.Repeat(ndjson(inline("f.txt", randomBytes(13, 900<<10))), 6), 413},
	} {
		before := e.fingerprint()
		resp, body := e.call(tc.method, tc.path, "alice", tc.contentType, tc.body)
		expect(t, tc.name, resp, body, tc.status, "")
		// A commit stores inline files as they arrive (invisible until the
		// commit); everything else must leave the store as it was.
		if tc.path != "/api/models/acme/l/commit/main" && e.repos.Fingerprint() != before {
			t.Errorf("%s: the refused request changed the store", tc.name)
		}
	}
	// The part list of a completion request is capped too.
	_, reply, _ := e.batch("acme/l", "alice", []string{"multipart"}, randomBytes(14, 2*testChunk+1))
	complete := action(t, reply.Objects[0].Actions["upload"]).Href
	resp, body := e.call(http.MethodPost, complete, "", "application/json", j(map[string]any{"oid": "x", "pad": pad(2 << 20)}))
	expect(t, "completion body", resp, body, 413, "")
	// The commit body limit applies to the bytes sent: inline files stored
	// before it was hit are not visible.
	if sha, files := repoInfo(t, e, "acme/l", "main"); len(files) != 1 || sha == "" {
		t.Errorf("after refused commits: %v", files)
	}
}
