package hub_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
)

func randomBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func repoInfo(t *testing.T, e *writeEnv, repo, rev string) (sha string, files []string) {
	t.Helper()
	path := "/api/models/" + repo
	if rev != "" {
		path += "/revision/" + rev
	}
	resp, body := e.call(http.MethodGet, path, "alice", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	var info infoJSON
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Siblings {
		files = append(files, s.RFilename)
	}
	slices.Sort(files)
	return info.SHA, files
}

func TestCreateAndDeleteRepo(t *testing.T) {
	e := newWriteEnv(t, nil)
	// PY1 without organization: the token's user is the namespace.
	resp, body := e.json(http.MethodPost, "/api/repos/create", "alice", map[string]any{"name": "model", "organization": nil, "visibility": "private"})
	expect(t, "create", resp, body, 200, "")
	var created struct{ URL, Name, ID string }
	if err := json.Unmarshal(body, &created); err != nil {
		t.Fatal(err)
	}
	if created.URL != e.url+"/alice/model" || created.Name != "alice/model" || created.ID == "" {
		t.Errorf("create answer %s", body)
	}
	if _, files := repoInfo(t, e, "alice/model", ""); !slices.Equal(files, []string{".gitattributes"}) {
		t.Errorf("new repo files %v", files)
	}
	if st, attrs := e.download("alice/model", "main", ".gitattributes"); st != 200 || !bytes.Contains(attrs, []byte("*.safetensors filter=lfs")) {
		t.Errorf(".gitattributes: %d %q", st, attrs)
	}

	// Existing: 409 with url (Python's exist_ok reads it, §4.1).
	resp, body = e.json(http.MethodPost, "/api/repos/create", "alice", map[string]any{"name": "model", "private": false})
	expect(t, "create existing", resp, body, http.StatusConflict, "")
	var conflict struct{ URL, Error string }
	json.Unmarshal(body, &conflict)
	if conflict.URL != e.url+"/alice/model" {
		t.Errorf("409 body %s lacks the url", body)
	}

	// PY0 spelling, an organization, JS initial files, a full id in name.
	resp, body = e.json(http.MethodPost, "/api/repos/create", "alice", map[string]any{"name": "m2", "organization": "acme", "private": true, "type": "model"})
	expect(t, "create in org", resp, body, 200, "")
	resp, body = e.json(http.MethodPost, "/api/repos/create", "alice", map[string]any{"name": "js", "organization": "acme",
		"files": []map[string]string{{"path": "README.md", "content": base64.StdEncoding.EncodeToString([]byte("# js\n")), "encoding": "base64"}}})
	expect(t, "create with files", resp, body, 200, "")
	if st, b := e.download("acme/js", "main", "README.md"); st != 200 || string(b) != "# js\n" {
		t.Errorf("initial file: %d %q", st, b)
	}
	resp, body = e.json(http.MethodPost, "/api/repos/create", "alice", map[string]any{"name": "acme/full"})
	expect(t, "create with a full id", resp, body, 200, "")
	if sha, _ := repoInfo(t, e, "acme/full", "main"); len(sha) != 40 {
		t.Errorf("acme/full main = %q", sha)
	}

	before := e.repos.Fingerprint()
	for _, bad := range []map[string]any{
		{"name": "ds", "organization": "acme", "type": "dataset"},
		{"name": "bad--name", "organization": "acme"},
		{"name": "..", "organization": "acme"},
		{"name": "x.git", "organization": "acme"},
		{"name": "b/c", "organization": "acme"},
		{"name": "-x", "organization": "acme"},
		{"name": strings.Repeat("a", 97), "organization": "acme"},
		{"name": "x", "organization": "api"},
		{"name": "", "organization": "acme"},
		{"name": "x y", "organization": "acme"},
		{"name": "js2", "organization": "acme", "files": []map[string]string{{"path": "../escape", "content": ""}}},
		{"name": "js3", "organization": "acme", "files": []map[string]string{{"path": "a.txt", "content": "%%%"}}},
	} {
		resp, body := e.json(http.MethodPost, "/api/repos/create", "admin", bad)
		expect(t, fmt.Sprintf("create %v", bad), resp, body, http.StatusBadRequest, "")
	}
	resp, body = e.call(http.MethodPost, "/api/repos/create", "alice", "application/json", []byte(`{"name": 5}`))
	expect(t, "create with a non-string name", resp, body, http.StatusBadRequest, "")
	resp, body = e.call(http.MethodPost, "/api/repos/create", "alice", "application/json", []byte(`{"name":"a"} {"name":"b"}`))
	expect(t, "create with two bodies", resp, body, http.StatusBadRequest, "")
	if e.repos.Fingerprint() != before {
		t.Error("refused creates changed the store")
	}

	// Delete.
	resp, body = e.json(http.MethodDelete, "/api/repos/delete", "alice", map[string]any{"name": "m2", "organization": "acme", "type": "model"})
	expect(t, "delete", resp, body, 200, "")
	resp, body = e.call(http.MethodGet, "/api/models/acme/m2", "alice", "", nil)
	expect(t, "info after delete", resp, body, 404, "RepoNotFound")
	resp, body = e.json(http.MethodDelete, "/api/repos/delete", "alice", map[string]any{"name": "m2", "organization": "acme"})
	expect(t, "delete again (missing_ok relies on it)", resp, body, 404, "RepoNotFound")
	resp, body = e.json(http.MethodPost, "/api/repos/delete", "alice", map[string]any{"name": "js", "organization": "acme"})
	expect(t, "delete with POST", resp, body, http.StatusMethodNotAllowed, "")
}

func TestPreupload(t *testing.T) {
	e := newWriteEnv(t, nil)
	e.createRepo("acme/pre")
	weights := randomBytes(1, 3000)
	config := []byte(`{"a":1}` + "\n")
	e.upload("acme/pre", weights)
	e.commit("acme/pre", "main", ndjson(header("files"),
		inline("config.json", config), lfsLine("model.safetensors", weights),
		inline(".gitignore", []byte("*.log\nbuild/\n!keep.log\n# comment\n"))))

	type file struct {
		Path   string `json:"path"`
		Size   int64  `json:"size"`
		Sample string `json:"sample"`
	}
	text := func(p string, size int64) file {
		return file{p, size, base64.StdEncoding.EncodeToString([]byte("hello\n"))}
	}
	req := map[string]any{"files": []file{
		text("config.json", int64(len(config))),
		text("new.txt", 6),
		text("data.bin", 6),     // .bin is LFS-tracked by the default .gitattributes
		text("big.txt", 11<<20), // over 10 MiB
		{"blob", 4, base64.StdEncoding.EncodeToString([]byte{'a', 0, 'b', 'c'})}, // binary
		{"latin1.txt", 3, base64.StdEncoding.EncodeToString([]byte{0xe9, 't', 'e'})},
		{"cut.txt", 600, base64.StdEncoding.EncodeToString(append(bytes.Repeat([]byte("a"), 511), 0xc3))}, // sample cut inside é
		text("empty", 0),
		text("x.log", 6),
		text("keep.log", 6),
		text("build/out.txt", 6),
		text("sub/build/out.txt", 6),
		text("model.safetensors", int64(len(weights))),
	}}
	resp, body := e.json(http.MethodPost, "/api/models/acme/pre/preupload/main", "alice", req)
	expect(t, "preupload", resp, body, 200, "")
	var got struct {
		Files []struct {
			Path         string  `json:"path"`
			UploadMode   string  `json:"uploadMode"`
			ShouldIgnore *bool   `json:"shouldIgnore"`
			OID          *string `json:"oid"`
		} `json:"files"`
		CommitOID string `json:"commitOid"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	main, _ := repoInfo(t, e, "acme/pre", "main")
	if got.CommitOID != main {
		t.Errorf("commitOid %s, want %s", got.CommitOID, main)
	}
	want := []struct {
		path, mode string
		ignore     bool
		oid        string
	}{
		{"config.json", "regular", false, hubtest.GitBlobSHA1(config)},
		{"new.txt", "regular", false, ""},
		{"data.bin", "lfs", false, ""},
		{"big.txt", "lfs", false, ""},
		{"blob", "lfs", false, ""},
		{"latin1.txt", "lfs", false, ""},
		{"cut.txt", "regular", false, ""},
		{"empty", "regular", false, ""},
		{"x.log", "regular", true, ""},
		{"keep.log", "regular", false, ""},
		{"build/out.txt", "regular", true, ""},
		{"sub/build/out.txt", "regular", true, ""},
		{"model.safetensors", "lfs", false, hubtest.SHA256(weights)},
	}
	if len(got.Files) != len(want) {
		t.Fatalf("%d files echoed, want %d: %s", len(got.Files), len(want), body)
	}
	for i, w := range want {
		g := got.Files[i]
		oid := ""
		if g.OID != nil {
			oid = *g.OID
		}
		if g.Path != w.path || g.UploadMode != w.mode || g.ShouldIgnore == nil || *g.ShouldIgnore != w.ignore || oid != w.oid {
			t.Errorf("preupload %s: got path %s mode %s ignore %v oid %q; want %s %v %q", w.path, g.Path, g.UploadMode, g.ShouldIgnore, oid, w.mode, w.ignore, w.oid)
		}
	}

	// Patterns sent with the request win over the revision's (JS
	// gitAttributes, Python gitIgnore).
	resp, body = e.json(http.MethodPost, "/api/models/acme/pre/preupload/main", "alice", map[string]any{
		"files": []file{text("notes.txt", 6), text("x.log", 6)}, "gitAttributes": "*.txt filter=lfs diff=lfs merge=lfs -text\n", "gitIgnore": "",
	})
	expect(t, "preupload with patterns", resp, body, 200, "")
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Files[0].UploadMode != "lfs" || *got.Files[1].ShouldIgnore {
		t.Errorf("request patterns ignored: %s", body)
	}

	resp, body = e.json(http.MethodPost, "/api/models/acme/pre/preupload/nope", "alice", req)
	expect(t, "preupload on a missing revision", resp, body, 404, "RevisionNotFound")
	for _, bad := range []any{
		map[string]any{"files": []file{text("../x", 1)}},
		map[string]any{"files": []file{text("a\\b", 1)}},
		map[string]any{"files": []file{{"a", 1, "!!not base64"}}},
		map[string]any{"files": []file{text("a", -1)}},
		map[string]any{"files": "nope"},
	} {
		resp, body := e.json(http.MethodPost, "/api/models/acme/pre/preupload/main", "alice", bad)
		expect(t, fmt.Sprintf("preupload %v", bad), resp, body, 400, "")
	}
}

func TestLFSBasicUpload(t *testing.T) {
	e := newWriteEnv(t, nil)
	e.createRepo("acme/up")
	e.createRepo("alice/other")
	big := randomBytes(2, 300<<10)
	small := []byte("small object\n")

	resp, reply, body := e.batch("acme/up", "alice", []string{"basic", "multipart", "xet"}, big, small)
	expect(t, "batch", resp, body, 200, "")
	if reply.Transfer != "basic" || strings.Contains(string(body), "xet") {
		t.Errorf("batch must answer transfer basic and never mention xet (§5.2): %s", body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.git-lfs+json" {
		t.Errorf("batch Content-Type %q", ct)
	}
	for i, o := range reply.Objects {
		if o.OID != hubtest.SHA256([][]byte{big, small}[i]) || o.Actions == nil || o.Actions["upload"] == nil || o.Actions["verify"] == nil {
			t.Fatalf("object %d: %+v", i, o)
		}
		if up := action(t, o.Actions["upload"]); len(up.Header) != 0 {
			t.Errorf("a %d-byte object got multipart headers %v", o.Size, up.Header)
		}
	}
	put := action(t, reply.Objects[0].Actions["upload"]).Href
	verify := action(t, reply.Objects[0].Actions["verify"]).Href
	if !strings.HasPrefix(put, e.url+"/") {
		t.Errorf("upload href %s is not on the server's host", put)
	}

	// Verify before the upload: 404. Then the PUT, without Authorization.
	r, b := e.json(http.MethodPost, verify, "alice", map[string]any{"oid": hubtest.SHA256(big), "size": len(big)})
	expect(t, "verify before upload", r, b, 404, "")
	r, b = e.call(http.MethodPut, put, "", "", big)
	expect(t, "PUT", r, b, 200, "")
	r, b = e.json(http.MethodPost, verify, "", map[string]any{"oid": hubtest.SHA256(big), "size": len(big)})
	expect(t, "verify", r, b, 200, "")
	r, b = e.json(http.MethodPost, verify, "", map[string]any{"oid": hubtest.SHA256(small), "size": len(big)})
	expect(t, "verify with another oid", r, b, 400, "")

	// A present object gets no "actions" key at all (not null, not {}).
	resp, reply, body = e.batch("acme/up", "alice", []string{"basic"}, big, small)
	expect(t, "batch again", resp, body, 200, "")
	var raw struct {
		Objects []map[string]json.RawMessage `json:"objects"`
	}
	json.Unmarshal(body, &raw)
	if _, has := raw.Objects[0]["actions"]; has {
		t.Errorf("present object has an actions key: %s", body)
	}
	if _, has := raw.Objects[1]["actions"]; !has {
		t.Errorf("missing object has no actions: %s", body)
	}
	// Objects are scoped per repo: alice/other must upload it too.
	_, other, _ := e.batch("alice/other", "alice", []string{"basic"}, big)
	if other.Objects[0].Actions == nil {
		t.Error("an object uploaded to acme/up is offered as present to alice/other")
	}

	// Wrong content, wrong length: refused, nothing stored.
	smallPut := action(t, reply.Objects[1].Actions["upload"]).Href
	before := e.repos.Fingerprint()
	r, b = e.call(http.MethodPut, smallPut, "", "", []byte("small objecT\n"))
	expect(t, "PUT wrong bytes", r, b, 400, "")
	r, b = e.call(http.MethodPut, smallPut, "", "", []byte("small"))
	expect(t, "PUT short body", r, b, 400, "")
	r, b = e.call(http.MethodPut, smallPut, "", "", append(slices.Clone(small), 'x'))
	expect(t, "PUT long body", r, b, 400, "")
	if e.repos.Fingerprint() != before {
		t.Error("a refused PUT changed the store")
	}
	// A chunked body (no Content-Length) streams through the same checks.
	req, _ := http.NewRequest(http.MethodPut, smallPut, struct{ *bytes.Reader }{bytes.NewReader(small)})
	req.ContentLength = -1
	cresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	cresp.Body.Close()
	if cresp.StatusCode != 200 {
		t.Errorf("chunked PUT: %d", cresp.StatusCode)
	}

	// The uploaded objects commit and download.
	e.commit("acme/up", "main", ndjson(header("lfs"), lfsLine("big.bin", big), lfsLine("small.bin", small)))
	if st, got := e.download("acme/up", "main", "big.bin"); st != 200 || !bytes.Equal(got, big) {
		t.Errorf("download big.bin: %d, %d bytes", st, len(got))
	}

	// Per-object errors keep the 200.
	b2, _ := json.Marshal(map[string]any{"operation": "upload", "transfers": []string{"basic"}, "objects": []map[string]any{
		{"oid": "XYZ", "size": 1}, {"oid": hubtest.SHA256(small), "size": -1}, {"oid": strings.Repeat("a", 64), "size": 65 << 20},
		{"oid": hubtest.SHA256(small), "size": len(small) + 1},
	}})
	r, b = e.call(http.MethodPost, "/acme/up.git/info/lfs/objects/batch", "alice", "application/vnd.git-lfs+json", b2)
	expect(t, "batch with bad objects", r, b, 200, "")
	var errs batchReply
	json.Unmarshal(b, &errs)
	for i, o := range errs.Objects {
		if o.Error == nil || o.Error.Code != 422 || o.Error.Message == "" || o.Actions != nil {
			t.Errorf("bad object %d: %+v", i, o)
		}
	}
	for _, bad := range []string{
		`{"operation":"download","objects":[{"oid":"` + strings.Repeat("a", 64) + `","size":1}]}`,
		`{"operation":"upload","hash_algo":"md5","objects":[{"oid":"` + strings.Repeat("a", 64) + `","size":1}]}`,
		`{"operation":"upload","transfers":["xet"],"objects":[{"oid":"` + strings.Repeat("a", 64) + `","size":1}]}`,
		`{"operation":"upload","objects":[]}`,
		`{"operation":"upload","objects":[{"oid":"` + strings.Repeat("a", 64) + `","size":1.5}]}`,
		`not json`,
	} {
		r, b := e.call(http.MethodPost, "/acme/up.git/info/lfs/objects/batch", "alice", "application/vnd.git-lfs+json", []byte(bad))
		expect(t, "batch "+bad, r, b, 422, "")
	}
	r, _, b = e.batch("acme/nope", "alice", []string{"basic"}, small)
	expect(t, "batch for a missing repo", r, b, 404, "RepoNotFound")
	r, b = e.call(http.MethodGet, "/acme/up.git/info/lfs/objects/batch", "alice", "", nil)
	expect(t, "batch with GET", r, b, 405, "")
	r, b = e.call(http.MethodPost, "/datasets/acme/up.git/info/lfs/objects/batch", "alice", "", []byte("{}"))
	expect(t, "dataset batch", r, b, 404, "RepoNotFound")
}

func TestLFSMultipartUpload(t *testing.T) {
	e := newWriteEnv(t, nil)
	e.createRepo("acme/mp")
	data := randomBytes(3, 4*testChunk+12345) // 5 parts
	oid := hubtest.SHA256(data)

	// Without "multipart" offered, a basic PUT even for a large object.
	_, basic, _ := e.batch("acme/mp", "alice", []string{"basic"}, data)
	if up := action(t, basic.Objects[0].Actions["upload"]); len(up.Header) != 0 {
		t.Errorf("multipart headers without multipart offered: %v", up.Header)
	}

	_, reply, body := e.batch("acme/mp", "alice", []string{"basic", "multipart"}, data)
	up := action(t, reply.Objects[0].Actions["upload"])
	if up.Header["chunk_size"] != fmt.Sprint(testChunk) || len(up.Header) != 6 {
		t.Fatalf("multipart header %v (%s)", up.Header, body)
	}
	part := func(n int) []byte { return data[(n-1)*testChunk : min(n*testChunk, len(data))] }

	// Parts in parallel, in reverse order; then part 3 again (a retry).
	etags := make([]string, 6)
	var g errgroup.Group
	for _, n := range []int{5, 4, 3, 2, 1} {
		g.Go(func() error {
			r, b := e.call(http.MethodPut, up.Header[fmt.Sprint(n)], "", "", part(n))
			if r.StatusCode != 200 {
				return fmt.Errorf("part %d: %d %s", n, r.StatusCode, b)
			}
			if want := `"` + hubtest.SHA256(part(n)) + `"`; r.Header.Get("ETag") != want {
				return fmt.Errorf("part %d: ETag %s, want %s", n, r.Header.Get("ETag"), want)
			}
			etags[n] = r.Header.Get("ETag")
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if r, b := e.call(http.MethodPut, up.Header["3"], "", "", part(3)); r.StatusCode != 200 || r.Header.Get("ETag") != etags[3] {
		t.Fatalf("retried part 3: %d %s, ETag %s", r.StatusCode, b, r.Header.Get("ETag"))
	}
	if n := len(e.stagedFiles()); n != 5 {
		t.Errorf("%d staged files, want 5 (one per part): %v", n, e.stagedFiles())
	}
	// Nothing is stored before completion.
	if _, again, _ := e.batch("acme/mp", "alice", []string{"basic", "multipart"}, data); again.Objects[0].Actions == nil {
		t.Error("the object counts as present before the completion request")
	}
	// A wrongly sized part is refused.
	r, b := e.call(http.MethodPut, up.Header["2"], "", "", part(2)[1:])
	expect(t, "short part", r, b, 400, "")

	parts := func(order ...int) []map[string]any {
		var out []map[string]any
		for _, n := range order {
			out = append(out, map[string]any{"partNumber": n, "etag": etags[n]})
		}
		return out
	}
	for name, bad := range map[string]map[string]any{
		"a part missing":   {"oid": oid, "parts": parts(1, 2, 3, 4)},
		"a part repeated":  {"oid": oid, "parts": parts(1, 2, 2, 4, 5)},
		"another oid":      {"oid": strings.Repeat("b", 64), "parts": parts(1, 2, 3, 4, 5)},
		"a wrong etag":     {"oid": oid, "parts": append(parts(1, 2, 3, 4), map[string]any{"partNumber": 5, "etag": `"` + strings.Repeat("c", 64) + `"`})},
		"a malformed etag": {"oid": oid, "parts": append(parts(1, 2, 3, 4), map[string]any{"partNumber": 5, "etag": "nope"})},
	} {
		r, b := e.json(http.MethodPost, up.Href, "", bad)
		expect(t, "completion with "+name, r, b, 400, "")
	}
	// Python sends the parts 1..N with the ETags as returned (quoted).
	r, b = e.json(http.MethodPost, up.Href, "", map[string]any{"oid": oid, "parts": parts(1, 2, 3, 4, 5)})
	expect(t, "completion", r, b, 200, "")
	if left := e.stagedFiles(); len(left) != 0 {
		t.Errorf("staged parts left after completion: %v", left)
	}
	r, b = e.json(http.MethodPost, up.Href, "", map[string]any{"oid": oid, "parts": parts(5, 4, 3, 2, 1)})
	expect(t, "repeated completion (any order)", r, b, 200, "")
	e.commit("acme/mp", "main", ndjson(header("big"), lfsLine("model.safetensors", data)))
	if st, got := e.download("acme/mp", "main", "model.safetensors"); st != 200 || !bytes.Equal(got, data) {
		t.Errorf("download: %d, %d bytes", st, len(got))
	}

	// Parts whose concatenation is another object: refused at completion,
	// staged parts dropped, nothing stored.
	other := randomBytes(4, len(data))
	_, reply, _ = e.batch("acme/mp", "alice", []string{"multipart"}, other)
	up = action(t, reply.Objects[0].Actions["upload"])
	var list []map[string]any
	for n := 1; n <= 5; n++ {
		chunk := other[(n-1)*testChunk : min(n*testChunk, len(other))]
		if n == 3 {
			chunk = bytes.Repeat([]byte{'z'}, len(chunk))
		}
		r, _ := e.call(http.MethodPut, up.Header[fmt.Sprint(n)], "", "", chunk)
		list = append(list, map[string]any{"partNumber": n, "etag": r.Header.Get("ETag")})
	}
	before := e.repos.Fingerprint()
	r, b = e.json(http.MethodPost, up.Href, "", map[string]any{"oid": hubtest.SHA256(other), "parts": list})
	expect(t, "completion of mismatching parts", r, b, 400, "")
	if e.repos.Fingerprint() != before || len(e.stagedFiles()) != 0 {
		t.Errorf("mismatching completion: store changed %v, staged %v", e.repos.Fingerprint() != before, e.stagedFiles())
	}
}

func TestStagingLimit(t *testing.T) {
	e := newWriteEnv(t, func(o *hub.Options) { o.MaxStagingBytes = testChunk + testChunk/2 })
	e.createRepo("acme/s")
	data := randomBytes(5, 3*testChunk)
	_, reply, _ := e.batch("acme/s", "alice", []string{"multipart"}, data)
	up := action(t, reply.Objects[0].Actions["upload"])
	r, b := e.call(http.MethodPut, up.Header["1"], "", "", data[:testChunk])
	expect(t, "first part", r, b, 200, "")
	r, b = e.call(http.MethodPut, up.Header["2"], "", "", data[testChunk:2*testChunk])
	expect(t, "part over the staging limit", r, b, http.StatusServiceUnavailable, "")
	if r.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	// A retry of the staged part does not count twice.
	r, b = e.call(http.MethodPut, up.Header["1"], "", "", data[:testChunk])
	expect(t, "retried part", r, b, 200, "")
}

func TestCommit(t *testing.T) {
	e := newWriteEnv(t, nil)
	e.createRepo("acme/c")
	weights := randomBytes(6, 200<<10)
	config := []byte(`{"model_type":"qwen3"}` + "\n")
	e.upload("acme/c", weights)

	// Python's body: every line ends with "\n".
	c1 := e.commit("acme/c", "main", ndjson(header("add files"),
		inline("config.json", config), inline("docs/a.md", []byte("a\n")), inline("docs/sub/b.md", []byte("b\n")),
		lfsLine("model.safetensors", weights), inline("empty.txt", nil)))
	if !c1.Success || len(c1.CommitOID) != 40 || c1.CommitURL != e.url+"/acme/c/commit/"+c1.CommitOID {
		t.Errorf("commit answer %+v", c1)
	}
	sha, files := repoInfo(t, e, "acme/c", "main")
	if sha != c1.CommitOID || !slices.Equal(files, []string{".gitattributes", "config.json", "docs/a.md", "docs/sub/b.md", "empty.txt", "model.safetensors"}) {
		t.Errorf("after commit: sha %s files %v", sha, files)
	}
	for p, want := range map[string][]byte{"config.json": config, "model.safetensors": weights, "docs/sub/b.md": []byte("b\n")} {
		if st, got := e.download("acme/c", "main", p); st != 200 || !bytes.Equal(got, want) {
			t.Errorf("%s: %d %q", p, st, trim(got))
		}
	}

	// JS's body: no trailing newline; a folder delete with a trailing
	// slash; parentCommit as a short prefix; HEAD as the revision.
	body := bytes.TrimSuffix(ndjson(
		map[string]any{"key": "header", "value": map[string]any{"summary": "deletes", "parentCommit": c1.CommitOID[:7]}},
		deleted("deletedFile", "config.json"), deleted("deletedFolder", "docs/")), []byte("\n"))
	c2 := e.commit("acme/c", "HEAD", body)
	if _, files := repoInfo(t, e, "acme/c", "main"); !slices.Equal(files, []string{".gitattributes", "empty.txt", "model.safetensors"}) {
		t.Errorf("after deletes: %v", files)
	}

	headIs := func(what, want string) {
		t.Helper()
		if sha, _ := repoInfo(t, e, "acme/c", "main"); sha != want {
			t.Errorf("%s: main moved to %s", what, sha)
		}
	}
	post := func(rev, contentType string, body []byte) (*http.Response, []byte) {
		return e.call(http.MethodPost, "/api/models/acme/c/commit/"+rev, "alice", contentType, body)
	}
	// A stale parent: 412 (PY1 tests assert it).
	r, b := post("main", "application/x-ndjson", ndjson(map[string]any{"key": "header", "value": map[string]any{"summary": "stale", "parentCommit": c1.CommitOID}}, inline("x.txt", []byte("x"))))
	expect(t, "stale parentCommit", r, b, http.StatusPreconditionFailed, "")
	headIs("stale parent", c2.CommitOID)
	// Deleting a missing file: 404 EntryNotFound with the text Python
	// turns into a hint.
	r, b = post("main", "application/x-ndjson", ndjson(header("del"), inline("y.txt", []byte("y")), deleted("deletedFile", "nope.txt")))
	expect(t, "delete a missing file", r, b, 404, "EntryNotFound")
	if !strings.Contains(string(b), "A file with this name doesn't exist") {
		t.Errorf("delete missing: body %s", b)
	}
	headIs("delete missing", c2.CommitOID)
	// An LFS file that was never uploaded, or with a wrong size.
	r, b = post("main", "application/x-ndjson", ndjson(header("lfs"), lfsLine("w.bin", []byte("never uploaded"))))
	expect(t, "lfsFile not uploaded", r, b, 400, "")
	bad := lfsLine("w.bin", weights)
	bad["value"].(map[string]any)["size"] = len(weights) + 1
	r, b = post("main", "application/x-ndjson", ndjson(header("lfs"), bad))
	expect(t, "lfsFile with a wrong size", r, b, 400, "")
	headIs("bad lfsFile", c2.CommitOID)
	// lfsFile without size (Python's server-side copy).
	noSize := lfsLine("copy.safetensors", weights)
	delete(noSize["value"].(map[string]any), "size")
	e.commit("acme/c", "main", ndjson(header("copy"), noSize))
	if st, got := e.download("acme/c", "main", "copy.safetensors"); st != 200 || !bytes.Equal(got, weights) {
		t.Errorf("copy: %d", st)
	}

	// The JSON form.
	j, _ := json.Marshal(map[string]any{
		"summary": "json form", "description": "d",
		"files":        []map[string]string{{"path": "j.txt", "content": base64.StdEncoding.EncodeToString([]byte("json\n")), "encoding": "base64"}, {"path": "u.txt", "content": "plain", "encoding": "utf-8"}},
		"lfsFiles":     []map[string]any{{"path": "j.bin", "algo": "sha256", "oid": hubtest.SHA256(weights), "size": len(weights)}},
		"deletedFiles": []map[string]string{{"path": "empty.txt"}},
		"unknownField": map[string]any{"ignored": []int{1, 2}},
	})
	r, b = post("main", "application/json", j)
	expect(t, "JSON form", r, b, 200, "")
	if _, files := repoInfo(t, e, "acme/c", "main"); !slices.Equal(files, []string{".gitattributes", "copy.safetensors", "j.bin", "j.txt", "model.safetensors", "u.txt"}) {
		t.Errorf("after JSON commit: %v", files)
	}
	if st, got := e.download("acme/c", "main", "u.txt"); st != 200 || string(got) != "plain" {
		t.Errorf("utf-8 content: %d %q", st, got)
	}

	// A line longer than bufio.Scanner's 64 KiB.
	long := randomBytes(7, 700<<10)
	e.commit("acme/c", "main", ndjson(header("long line"), inline("long.dat", long)))
	if st, got := e.download("acme/c", "main", "long.dat"); st != 200 || !bytes.Equal(got, long) {
		t.Errorf("long inline file: %d, %d bytes", st, len(got))
	}

	sha, _ = repoInfo(t, e, "acme/c", "main")
	for name, body := range map[string][]byte{
		"not JSON":            []byte("{nope\n"),
		"no header":           ndjson(inline("a.txt", []byte("a"))),
		"two headers":         ndjson(header("a"), header("b")),
		"empty summary":       ndjson(header("  ")),
		"unknown key":         ndjson(header("a"), map[string]any{"key": "symlink", "value": map[string]any{"path": "x"}}),
		"no value":            ndjson(header("a"), map[string]any{"key": "file"}),
		"rename":              ndjson(header("a"), map[string]any{"key": "lfsFile", "value": map[string]any{"path": "b", "oldPath": "a"}}),
		"traversal":           ndjson(header("a"), inline("../etc/passwd", []byte("x"))),
		"absolute path":       ndjson(header("a"), inline("/etc/passwd", []byte("x"))),
		"empty segment":       ndjson(header("a"), inline("a//b", []byte("x"))),
		"backslash":           ndjson(header("a"), inline(`a\b`, []byte("x"))),
		"control character":   ndjson(header("a"), inline("a\x01b", []byte("x"))),
		".git segment":        ndjson(header("a"), inline(".git/config", []byte("x"))),
		"bad base64":          ndjson(header("a"), map[string]any{"key": "file", "value": map[string]any{"path": "a", "content": "%%%"}}),
		"bad encoding":        ndjson(header("a"), map[string]any{"key": "file", "value": map[string]any{"path": "a", "content": "", "encoding": "rot13"}}),
		"bad oid":             ndjson(header("a"), map[string]any{"key": "lfsFile", "value": map[string]any{"path": "a", "oid": "xyz"}}),
		"bad algo":            ndjson(header("a"), map[string]any{"key": "lfsFile", "value": map[string]any{"path": "a", "algo": "md5", "oid": strings.Repeat("a", 64)}}),
		"negative size":       ndjson(header("a"), map[string]any{"key": "lfsFile", "value": map[string]any{"path": "a", "oid": strings.Repeat("a", 64), "size": -1}}),
		"bad parentCommit":    ndjson(map[string]any{"key": "header", "value": map[string]any{"summary": "a", "parentCommit": "xyz"}}),
		"empty folder delete": ndjson(header("a"), deleted("deletedFolder", "/")),
	} {
		r, b := post("main", "application/x-ndjson", body)
		expect(t, "commit with "+name, r, b, 400, "")
	}
	for name, body := range map[string][]byte{
		"JSON: not an object":  []byte(`[1]`),
		"JSON: trailing data":  []byte(`{"summary":"a"} {}`),
		"JSON: files not list": []byte(`{"summary":"a","files":{}}`),
		"JSON: truncated":      []byte(`{"summary":"a","files":[`),
	} {
		r, b := post("main", "application/json", body)
		expect(t, "commit with "+name, r, b, 400, "")
	}
	headIs("refused commits", sha)

	r, b = e.call(http.MethodPost, "/api/models/acme/c/commit/main?create_pr=1", "alice", "application/x-ndjson", ndjson(header("pr"), inline("p.txt", []byte("p"))))
	expect(t, "create_pr", r, b, 400, "")
	r, b = post("nope", "application/x-ndjson", ndjson(header("a"), inline("a.txt", []byte("a"))))
	expect(t, "commit to a missing branch", r, b, 404, "RevisionNotFound")
	r, b = e.call(http.MethodPost, "/api/models/acme/nope/commit/main", "alice", "application/x-ndjson", ndjson(header("a")))
	expect(t, "commit to a missing repo", r, b, 404, "RepoNotFound")
	e.json(http.MethodPost, "/api/models/acme/c/tag/main", "alice", map[string]any{"tag": "v1"})
	r, b = post("v1", "application/x-ndjson", ndjson(header("a"), inline("a.txt", []byte("a"))))
	expect(t, "commit to a tag", r, b, 404, "RevisionNotFound")
	headIs("refused commits", sha)

	// A branch with a slash, %2F-encoded as Python sends it.
	e.json(http.MethodPost, "/api/models/acme/c/branch/feature%2Fx", "alice", map[string]any{})
	cf := e.commit("acme/c", "feature/x", ndjson(header("on a branch"), inline("f.txt", []byte("f"))))
	if got, _ := repoInfo(t, e, "acme/c", "feature%2Fx"); got != cf.CommitOID {
		t.Errorf("feature/x = %s, want %s", got, cf.CommitOID)
	}
	headIs("commit on a branch", sha)
}

func TestBranchesAndTags(t *testing.T) {
	e := newWriteEnv(t, nil)
	e.createRepo("acme/b")
	c1 := e.commit("acme/b", "main", ndjson(header("one"), inline("a.txt", []byte("1"))))
	base := "/api/models/acme/b"

	r, b := e.json(http.MethodPost, base+"/branch/feature%2Fnew", "alice", map[string]any{"startingPoint": "main"})
	expect(t, "create branch", r, b, 200, "")
	if sha, _ := repoInfo(t, e, "acme/b", "feature%2Fnew"); sha != c1.CommitOID {
		t.Errorf("new branch at %s, want %s", sha, c1.CommitOID)
	}
	r, b = e.json(http.MethodPost, base+"/branch/feature%2Fnew", "alice", map[string]any{})
	expect(t, "existing branch (exist_ok relies on 409)", r, b, 409, "")
	for _, name := range []string{"refs%2Fpr%2F1", "HEAD", strings.Repeat("a", 40), "a..b", "a%20b", "x.lock", "-x", "a%5Cb"} {
		r, b := e.json(http.MethodPost, base+"/branch/"+name, "alice", map[string]any{})
		expect(t, "branch "+name, r, b, 400, "")
	}
	r, b = e.json(http.MethodPost, base+"/branch/other", "alice", map[string]any{"startingPoint": "nope"})
	expect(t, "branch from a missing revision", r, b, 404, "RevisionNotFound")
	r, b = e.call(http.MethodPost, base+"/branch/nobody", "alice", "", nil)
	expect(t, "branch without a body", r, b, 200, "")

	c2 := e.commit("acme/b", "main", ndjson(header("two"), inline("b.txt", []byte("2"))))
	// JS: emptyBranch, overwrite.
	r, b = e.json(http.MethodPost, base+"/branch/empty", "alice", map[string]any{"emptyBranch": true})
	expect(t, "empty branch", r, b, 200, "")
	if _, files := repoInfo(t, e, "acme/b", "empty"); len(files) != 0 {
		t.Errorf("empty branch has %v", files)
	}
	r, b = e.json(http.MethodPost, base+"/branch/feature%2Fnew", "alice", map[string]any{"startingPoint": c2.CommitOID, "overwrite": true})
	expect(t, "overwrite branch", r, b, 200, "")
	if sha, _ := repoInfo(t, e, "acme/b", "feature%2Fnew"); sha != c2.CommitOID {
		t.Errorf("overwritten branch at %s, want %s", sha, c2.CommitOID)
	}

	r, b = e.call(http.MethodDelete, base+"/branch/feature%2Fnew", "alice", "", nil)
	expect(t, "delete branch", r, b, 200, "")
	r, b = e.call(http.MethodGet, base+"/revision/feature%2Fnew", "alice", "", nil)
	expect(t, "deleted branch", r, b, 404, "RevisionNotFound")
	r, b = e.call(http.MethodDelete, base+"/branch/feature%2Fnew", "alice", "", nil)
	expect(t, "delete a missing branch", r, b, 404, "RevisionNotFound")
	r, b = e.call(http.MethodDelete, base+"/branch/main", "alice", "", nil)
	expect(t, "delete main", r, b, 403, "")

	// Tags: Python posts to tag/{revision} with {"tag", "message"}.
	r, b = e.json(http.MethodPost, base+"/tag/"+c1.CommitOID, "alice", map[string]any{"tag": "v1.0", "message": "first"})
	expect(t, "create tag", r, b, 200, "")
	if sha, _ := repoInfo(t, e, "acme/b", "v1.0"); sha != c1.CommitOID {
		t.Errorf("tag at %s, want %s", sha, c1.CommitOID)
	}
	r, b = e.json(http.MethodPost, base+"/tag/main", "alice", map[string]any{"tag": "v1.0"})
	expect(t, "existing tag", r, b, 409, "")
	r, b = e.json(http.MethodPost, base+"/tag/main", "alice", map[string]any{"tag": "bad tag"})
	expect(t, "bad tag name", r, b, 400, "")
	r, b = e.json(http.MethodPost, base+"/tag/nope", "alice", map[string]any{"tag": "v2"})
	expect(t, "tag a missing revision", r, b, 404, "RevisionNotFound")
	r, b = e.json(http.MethodPost, base+"/tag/main", "alice", map[string]any{"tag": "empty"})
	expect(t, "tag named like a branch", r, b, 409, "")
	e.commit("acme/b", "main", ndjson(header("three"), inline("c.txt", []byte("3"))))
	if sha, _ := repoInfo(t, e, "acme/b", "v1.0"); sha != c1.CommitOID {
		t.Errorf("a tag moved with main: %s", sha)
	}
	r, b = e.call(http.MethodDelete, base+"/tag/v1.0", "alice", "", nil)
	expect(t, "delete tag", r, b, 200, "")
	r, b = e.call(http.MethodDelete, base+"/tag/v1.0", "alice", "", nil)
	expect(t, "delete a missing tag", r, b, 404, "RevisionNotFound")
	r, b = e.call(http.MethodPut, base+"/tag/main", "alice", "", nil)
	expect(t, "tag with PUT", r, b, 405, "")
}

func TestValidateYAML(t *testing.T) {
	e := newWriteEnv(t, nil)
	for _, tc := range []struct {
		readme string
		status int
	}{
		{"# no metadata\n", 200},
		{"---\nlicense: mit\n---\n# x\n", 200},
		{"---\r\nlicense: mit\r\n---\r\n", 200},
		{"---\nlicense: mit\n# never closed\n", 400},
	} {
		r, b := e.json(http.MethodPost, "/api/validate-yaml", "alice", map[string]any{"content": tc.readme, "repoType": "model"})
		var body struct {
			Errors   []map[string]string `json:"errors"`
			Warnings []any               `json:"warnings"`
		}
		// Python parses the JSON before looking at the status (§3.6).
		if r.StatusCode != tc.status || json.Unmarshal(b, &body) != nil || body.Warnings == nil || (tc.status == 400) != (len(body.Errors) == 1) {
			t.Errorf("validate-yaml %q: %d %s", tc.readme, r.StatusCode, b)
		}
	}
}

// TestInlineForXetClients: with the option, huggingface_hub ≥ 1.20 gets
// "regular" for files it may send inline, so that it never goes to Xet
// (§5.3); other clients are unaffected.
func TestInlineForXetClients(t *testing.T) {
	e := newWriteEnv(t, func(o *hub.Options) { o.InlineUploadsForXetClients = true })
	e.createRepo("acme/x")
	sample := base64.StdEncoding.EncodeToString([]byte("\x00\x01"))
	body, _ := json.Marshal(map[string]any{"files": []map[string]any{
		{"path": "small.safetensors", "size": 1 << 20, "sample": sample},
		{"path": "huge.safetensors", "size": 1<<20 + 1, "sample": sample},
	}})
	for ua, want := range map[string][2]string{
		"huggingface_hub/2.4.0; hf_hub/2.4.0; python/3.11": {"regular", "lfs"},
		"unknown/None; hf_hub/1.20.0; python/3.12":         {"regular", "lfs"},
		"huggingface_hub/0.36.2; hf_hub/0.36.2; python/3":  {"lfs", "lfs"},
		"huggingface.js/2.15.0":                            {"lfs", "lfs"},
	} {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/api/models/acme/x/preupload/main", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e.tokens["alice"])
		req.Header.Set("User-Agent", ua)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Files []struct {
				UploadMode string `json:"uploadMode"`
			} `json:"files"`
		}
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if len(got.Files) != 2 || got.Files[0].UploadMode != want[0] || got.Files[1].UploadMode != want[1] {
			t.Errorf("%s: modes %+v, want %v", ua, got.Files, want)
		}
	}
}
