package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/hubtest"
)

func lfsPointer(data []byte) string {
	return fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", hubtest.SHA256(data), len(data))
}

func wantHeader(t *testing.T, resp *http.Response, key, want string) {
	t.Helper()
	if got := resp.Header.Get(key); got != want {
		t.Errorf("%s %s: header %s = %q, want %q", resp.Request.Method, resp.Request.URL, key, got, want)
	}
}

func wantStatus(t *testing.T, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d", resp.Request.Method, resp.Request.URL, resp.StatusCode, want)
	}
}

func TestResolveHeadAndGet(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	for _, tc := range []struct {
		path string
		lfs  bool
	}{
		{"config.json", false},
		{"model.safetensors", true},
		{"tokenizer/tokenizer.json", false},
		{"a/b/c.txt", false},
		{"empty.txt", false},
	} {
		data := f.files[tc.path]
		etag := hubtest.GitBlobSHA1(data)
		if tc.lfs {
			etag = hubtest.SHA256(data)
		}
		u := srv.URL + "/acme/tiny/resolve/main/" + tc.path

		opened := f.repos.Opened()
		resp, body := do(t, http.MethodHead, u, map[string]string{"Accept-Encoding": "identity"}, nil)
		wantStatus(t, resp, http.StatusOK)
		if len(body) != 0 {
			t.Errorf("HEAD %s: %d body bytes", tc.path, len(body))
		}
		if f.repos.Opened() != opened {
			t.Errorf("HEAD %s opened a reader", tc.path)
		}
		for _, r := range []*http.Response{resp, func() *http.Response {
			resp, body := do(t, http.MethodGet, u, nil, nil)
			wantStatus(t, resp, http.StatusOK)
			if !bytes.Equal(body, data) {
				t.Errorf("GET %s: body differs (%d bytes, want %d)", tc.path, len(body), len(data))
			}
			return resp
		}()} {
			wantHeader(t, r, "Content-Length", strconv.Itoa(len(data)))
			wantHeader(t, r, "ETag", `"`+etag+`"`)
			wantHeader(t, r, "X-Repo-Commit", f.main.ID)
			wantHeader(t, r, "Accept-Ranges", "bytes")
			wantHeader(t, r, "Content-Encoding", "")
			if tc.lfs {
				wantHeader(t, r, "X-Linked-Etag", `"`+etag+`"`)
				wantHeader(t, r, "X-Linked-Size", strconv.Itoa(len(data)))
			} else {
				wantHeader(t, r, "X-Linked-Etag", "")
				wantHeader(t, r, "X-Linked-Size", "")
			}
			for k := range r.Header {
				if strings.HasPrefix(strings.ToLower(k), "x-xet") {
					t.Errorf("%s: Xet header %s sent", tc.path, k)
				}
			}
		}
	}
	// A client that asks for gzip still gets identity bytes (§2.3: never
	// compress /resolve).
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/acme/tiny/resolve/main/config.json", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(body, f.files["config.json"]) {
		t.Errorf("gzip request: Content-Encoding %q, body %q", resp.Header.Get("Content-Encoding"), body)
	}
}

func TestResolveRanges(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	data := f.files["model.safetensors"]
	n := int64(len(data))
	etag := `"` + hubtest.SHA256(data) + `"`
	u := srv.URL + "/acme/tiny/resolve/main/model.safetensors"
	type want struct {
		status     int
		start, end int64 // inclusive; for 206
	}
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		want want
	}{
		{"open-ended from 0", map[string]string{"Range": "bytes=0-"}, want{206, 0, n - 1}},
		{"open-ended resume", map[string]string{"Range": "bytes=1000-"}, want{206, 1000, n - 1}},
		{"first byte (JS probe)", map[string]string{"Range": "bytes=0-0"}, want{206, 0, 0}},
		{"middle", map[string]string{"Range": "bytes=100-199"}, want{206, 100, 199}},
		{"header read", map[string]string{"Range": "bytes=0-100000"}, want{206, 0, 100000}},
		{"last byte", map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", n-1, n-1)}, want{206, n - 1, n - 1}},
		{"end past EOF clamped (hf_transfer)", map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", n-10, n)}, want{206, n - 10, n - 1}},
		{"end far past EOF", map[string]string{"Range": "bytes=5-99999999999"}, want{206, 5, n - 1}},
		{"suffix", map[string]string{"Range": "bytes=-16"}, want{206, n - 16, n - 1}},
		{"suffix longer than file", map[string]string{"Range": fmt.Sprintf("bytes=-%d", n+100)}, want{206, 0, n - 1}},
		{"spaces", map[string]string{"Range": "bytes= 10 - 20 "}, want{206, 10, 20}},
		{"unit case", map[string]string{"Range": "Bytes=10-20"}, want{206, 10, 20}},
		{"if-range match", map[string]string{"Range": "bytes=10-20", "If-Range": etag}, want{206, 10, 20}},
		{"if-range mismatch sends all", map[string]string{"Range": "bytes=10-20", "If-Range": `"other"`}, want{200, 0, n - 1}},
		{"multi-range ignored", map[string]string{"Range": "bytes=0-1,5-6"}, want{200, 0, n - 1}},
		{"other unit ignored", map[string]string{"Range": "items=0-1"}, want{200, 0, n - 1}},
		{"start at EOF", map[string]string{"Range": fmt.Sprintf("bytes=%d-", n)}, want{416, 0, 0}},
		{"start past EOF", map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", n+5, n+10)}, want{416, 0, 0}},
		{"zero suffix", map[string]string{"Range": "bytes=-0"}, want{416, 0, 0}},
		{"reversed", map[string]string{"Range": "bytes=20-10"}, want{416, 0, 0}},
		{"garbage", map[string]string{"Range": "bytes=abc"}, want{416, 0, 0}},
		{"negative", map[string]string{"Range": "bytes=--5"}, want{416, 0, 0}},
		{"overflow", map[string]string{"Range": "bytes=99999999999999999999-"}, want{416, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				resp, body := do(t, method, u, tc.hdr, nil)
				wantStatus(t, resp, tc.want.status)
				wantHeader(t, resp, "X-Repo-Commit", f.main.ID)
				switch tc.want.status {
				case 206, 200:
					length := tc.want.end - tc.want.start + 1
					wantHeader(t, resp, "Content-Length", strconv.FormatInt(length, 10))
					wantHeader(t, resp, "ETag", etag)
					if tc.want.status == 206 {
						wantHeader(t, resp, "Content-Range", fmt.Sprintf("bytes %d-%d/%d", tc.want.start, tc.want.end, n))
					} else {
						wantHeader(t, resp, "Content-Range", "")
					}
					if method == http.MethodGet && !bytes.Equal(body, data[tc.want.start:tc.want.end+1]) {
						t.Errorf("%s: wrong bytes (%d)", method, len(body))
					}
				case 416:
					wantHeader(t, resp, "Content-Range", fmt.Sprintf("bytes */%d", n))
				}
				if method == http.MethodHead && len(body) != 0 {
					t.Errorf("HEAD: body of %d bytes", len(body))
				}
			}
		})
	}

	// An empty file: JS always probes with bytes=0-0 and needs the size
	// after the slash of Content-Range, not a 416 (§2.3).
	for _, spec := range []string{"bytes=0-0", "bytes=0-", "bytes=-5"} {
		resp, body := do(t, http.MethodGet, srv.URL+"/acme/tiny/resolve/main/empty.txt", map[string]string{"Range": spec}, nil)
		wantStatus(t, resp, http.StatusOK)
		wantHeader(t, resp, "Content-Range", "bytes */0")
		wantHeader(t, resp, "Content-Length", "0")
		if len(body) != 0 {
			t.Errorf("empty file %s: body %q", spec, body)
		}
	}
}

func TestRevisions(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	for _, tc := range []struct {
		rev    string // as it appears in the URL
		commit hub.Commit
		config []byte
	}{
		{"main", f.main, f.files["config.json"]},
		{"HEAD", f.main, f.files["config.json"]},
		{f.main.ID, f.main, f.files["config.json"]},
		{f.v1.ID, f.v1, nil},
		{"v1.0", f.v1, nil},
		{"feature%2Fx", f.feature, f.featureFiles["config.json"]}, // Python and JS encode the revision
		{"feature%2fx", f.feature, f.featureFiles["config.json"]}, // lower-case escape
		{"feature/x", f.feature, f.featureFiles["config.json"]},   // raw, e.g. curl
	} {
		for _, p := range []string{"config.json", "tokenizer/tokenizer.json", "tokenizer%2Ftokenizer.json"} {
			resp, body := do(t, http.MethodGet, srv.URL+"/acme/tiny/resolve/"+tc.rev+"/"+p, nil, nil)
			wantStatus(t, resp, http.StatusOK)
			wantHeader(t, resp, "X-Repo-Commit", tc.commit.ID)
			if p == "config.json" && tc.config != nil && !bytes.Equal(body, tc.config) {
				t.Errorf("rev %s: config.json = %q, want %q", tc.rev, body, tc.config)
			}
		}
	}
}

func TestNotFound(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
		commit       string // expected X-Repo-Commit, if any
	}{
		{"HEAD", "/acme/nope/resolve/main/config.json", 404, "RepoNotFound", ""},
		{"GET", "/acme/nope/resolve/main/config.json", 404, "RepoNotFound", ""},
		{"HEAD", "/acme/tiny/resolve/nope/config.json", 404, "RevisionNotFound", ""},
		{"GET", "/acme/tiny/resolve/feature%2Fnope/config.json", 404, "RevisionNotFound", ""},
		{"GET", "/acme/tiny/resolve/" + strings.Repeat("a", 40) + "/config.json", 404, "RevisionNotFound", ""},
		{"HEAD", "/acme/tiny/resolve/main/missing.json", 404, "EntryNotFound", f.main.ID},
		{"GET", "/acme/tiny/resolve/main/missing.json", 404, "EntryNotFound", f.main.ID},
		{"GET", "/acme/tiny/resolve/main/tokenizer", 404, "EntryNotFound", f.main.ID},
		{"GET", "/acme/tiny/resolve/main/a/b", 404, "EntryNotFound", f.main.ID},
		{"GET", "/acme/tiny/resolve/feature%2Fx/missing.json", 404, "EntryNotFound", f.feature.ID},
		{"GET", "/acme/tiny/raw/main/missing.json", 404, "EntryNotFound", f.main.ID},
		{"GET", "/datasets/acme/tiny/resolve/main/config.json", 404, "RepoNotFound", ""},
		{"GET", "/api/models/acme/nope", 404, "RepoNotFound", ""},
		{"GET", "/api/models/acme/nope/revision/main", 404, "RepoNotFound", ""},
		{"GET", "/api/models/acme/tiny/revision/nope", 404, "RevisionNotFound", ""},
		{"GET", "/api/models/acme/tiny/revision/feature%2Fnope", 404, "RevisionNotFound", ""},
		{"GET", "/api/models/acme/tiny/tree/nope", 404, "RevisionNotFound", ""},
		{"GET", "/api/models/acme/nope/tree/main", 404, "RepoNotFound", ""},
		{"GET", "/api/models/acme/tiny/tree/main/missing", 404, "EntryNotFound", f.main.ID},
		{"GET", "/api/models/acme/tiny/tree/main/config.json", 404, "EntryNotFound", f.main.ID},
		{"GET", "/api/datasets/acme/tiny", 404, "RepoNotFound", ""},
		{"GET", "/acme/tiny/resolve//config.json", 404, "RevisionNotFound", ""},
		{"GET", "/acme/nope/resolve//config.json", 404, "RepoNotFound", ""},
		{"GET", "/api/models/acme/tiny/revision/", 404, "RevisionNotFound", ""},
		{"GET", "/api/models/acme/tiny/xet-read-token/main", 404, "", ""},
		{"GET", "/api/models/acme/tiny/refs", 404, "", ""},
		{"GET", "/nothing/here", 404, "", ""},
		{"POST", "/acme/tiny/resolve/main/config.json", 405, "", ""},
		{"GET", "/api/models/acme/tiny/paths-info/main", 405, "", ""},
	} {
		resp, body := do(t, tc.method, srv.URL+tc.path, nil, nil)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
			continue
		}
		wantHeader(t, resp, "X-Error-Code", tc.code)
		if tc.commit != "" {
			wantHeader(t, resp, "X-Repo-Commit", tc.commit)
		}
		if tc.code != "" && resp.Header.Get("X-Error-Message") == "" {
			t.Errorf("%s %s: no X-Error-Message", tc.method, tc.path)
		}
		if tc.method == http.MethodGet {
			var e struct{ Error string }
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || json.Unmarshal(body, &e) != nil || e.Error == "" {
				t.Errorf("%s %s: body %q is not {\"error\": …} JSON", tc.method, tc.path, body)
			}
		}
	}
}

func TestRaw(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	// An LFS file's raw blob is its pointer (§2.4).
	resp, body := do(t, http.MethodGet, srv.URL+"/acme/tiny/raw/main/model.safetensors", nil, nil)
	wantStatus(t, resp, http.StatusOK)
	ptr := lfsPointer(f.files["model.safetensors"])
	if string(body) != ptr {
		t.Errorf("raw LFS body = %q, want %q", body, ptr)
	}
	wantHeader(t, resp, "ETag", `"`+hubtest.GitBlobSHA1([]byte(ptr))+`"`)
	wantHeader(t, resp, "X-Linked-Etag", "")
	// A regular file's raw blob is its content.
	resp, body = do(t, http.MethodHead, srv.URL+"/acme/tiny/raw/main/config.json", nil, nil)
	wantStatus(t, resp, http.StatusOK)
	wantHeader(t, resp, "Content-Length", strconv.Itoa(len(f.files["config.json"])))
	wantHeader(t, resp, "ETag", `"`+hubtest.GitBlobSHA1(f.files["config.json"])+`"`)
	if len(body) != 0 {
		t.Error("HEAD raw: body")
	}
}

type siblingJSON struct {
	RFilename string `json:"rfilename"`
	Size      *int64 `json:"size"`
	BlobID    string `json:"blobId"`
	LFS       *struct {
		Size        int64  `json:"size"`
		SHA256      string `json:"sha256"`
		PointerSize int    `json:"pointerSize"`
	} `json:"lfs"`
}

type infoJSON struct {
	ID           string        `json:"id"`
	SHA          string        `json:"sha"`
	LastModified string        `json:"lastModified"`
	Private      *bool         `json:"private"`
	Siblings     []siblingJSON `json:"siblings"`
}

func TestRepoInfo(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	mainPaths := slices.Sorted(func(yield func(string) bool) {
		for p := range f.files {
			if !yield(p) {
				return
			}
		}
	})
	for _, tc := range []struct {
		path   string
		commit hub.Commit
	}{
		{"/api/models/acme/tiny", f.main},
		{"/api/models/acme/tiny/revision/main", f.main},
		{"/api/models/acme/tiny/revision/HEAD", f.main},
		{"/api/models/acme/tiny/revision/" + f.v1.ID, f.v1},
		{"/api/models/acme/tiny/revision/v1.0", f.v1},
		{"/api/models/acme/tiny/revision/feature%2Fx", f.feature},
		{"/api/models/acme/tiny/revision/feature/x", f.feature},
		{"/api/models/acme/tiny/revision/main?expand=sha&expand=private", f.main},
	} {
		resp, body := do(t, http.MethodGet, srv.URL+tc.path, nil, nil)
		wantStatus(t, resp, http.StatusOK)
		var info infoJSON
		if err := json.Unmarshal(body, &info); err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if info.ID != "acme/tiny" || info.SHA != tc.commit.ID || info.Private == nil || *info.Private {
			t.Errorf("%s: id %q sha %q private %v", tc.path, info.ID, info.SHA, info.Private)
		}
		if want := tc.commit.Time.UTC().Format("2006-01-02T15:04:05.000Z"); info.LastModified != want {
			t.Errorf("%s: lastModified %q, want %q", tc.path, info.LastModified, want)
		}
		var got []string
		for _, s := range info.Siblings {
			got = append(got, s.RFilename)
			if s.Size != nil || s.LFS != nil || s.BlobID != "" {
				t.Errorf("%s: sibling %s has blob fields without blobs=true", tc.path, s.RFilename)
			}
		}
		if !slices.Equal(got, mainPaths) {
			t.Errorf("%s: siblings %v, want %v", tc.path, got, mainPaths)
		}
	}

	// blobs=True (PY0 spelling) adds size, blobId and lfs (§3.1).
	resp, body := do(t, http.MethodGet, srv.URL+"/api/models/acme/tiny/revision/main?blobs=True", nil, nil)
	wantStatus(t, resp, http.StatusOK)
	var info infoJSON
	if err := json.Unmarshal(body, &info); err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Siblings {
		data := f.files[s.RFilename]
		if s.Size == nil || *s.Size != int64(len(data)) {
			t.Errorf("blobs: %s size %v", s.RFilename, s.Size)
		}
		if s.RFilename == "model.safetensors" {
			ptr := lfsPointer(data)
			if s.LFS == nil || s.LFS.SHA256 != hubtest.SHA256(data) || s.LFS.Size != int64(len(data)) || s.LFS.PointerSize != len(ptr) {
				t.Errorf("blobs: %s lfs %+v", s.RFilename, s.LFS)
			}
			if s.BlobID != hubtest.GitBlobSHA1([]byte(ptr)) {
				t.Errorf("blobs: %s blobId %s", s.RFilename, s.BlobID)
			}
		} else if s.LFS != nil || s.BlobID != hubtest.GitBlobSHA1(data) {
			t.Errorf("blobs: %s blobId %s lfs %+v", s.RFilename, s.BlobID, s.LFS)
		}
	}

	// HEAD works and sends no body.
	resp, body = do(t, http.MethodHead, srv.URL+"/api/models/acme/tiny", nil, nil)
	wantStatus(t, resp, http.StatusOK)
	if len(body) != 0 {
		t.Error("HEAD info: body")
	}
}

func TestListModels(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	ids := func(q string) []string {
		resp, body := do(t, http.MethodGet, srv.URL+"/api/models"+q, nil, nil)
		wantStatus(t, resp, http.StatusOK)
		var out []struct {
			ID           string `json:"id"`
			LastModified string `json:"lastModified"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range out {
			got = append(got, m.ID)
			if !strings.HasSuffix(m.LastModified, "Z") {
				t.Errorf("%s: lastModified %q", m.ID, m.LastModified)
			}
		}
		return got
	}
	// Other repo types are listed as empty.
	for _, p := range []string{"/api/datasets", "/api/spaces"} {
		resp, body := do(t, http.MethodGet, srv.URL+p, nil, nil)
		wantStatus(t, resp, http.StatusOK)
		if strings.TrimSpace(string(body)) != "[]" {
			t.Errorf("%s: %s", p, body)
		}
	}
	for q, want := range map[string][]string{
		"":                        {"acme/other", "acme/tiny"},
		"?author=acme&limit=1":    {"acme/other"},
		"?search=TIN":             {"acme/tiny"},
		"?author=nobody":          nil,
		"?search=acme&sort=likes": {"acme/other", "acme/tiny"},
	} {
		if got := ids(q); !slices.Equal(got, want) {
			t.Errorf("/api/models%s = %v, want %v", q, got, want)
		}
	}
}

type treeEntry struct {
	Type string `json:"type"`
	OID  string `json:"oid"`
	Size int64  `json:"size"`
	Path string `json:"path"`
	LFS  *struct {
		OID         string `json:"oid"`
		Size        int64  `json:"size"`
		PointerSize int    `json:"pointerSize"`
	} `json:"lfs"`
}

func getTree(t *testing.T, url string) []treeEntry {
	t.Helper()
	resp, body := do(t, http.MethodGet, url, nil, nil)
	wantStatus(t, resp, http.StatusOK)
	var out []treeEntry
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return out
}

func treePaths(es []treeEntry) []string {
	var out []string
	for _, e := range es {
		p := e.Path
		if e.Type == "directory" {
			p += "/"
		} else if e.Type != "file" {
			p += "?" + e.Type
		}
		out = append(out, p)
	}
	return out
}

func TestTree(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	base := srv.URL + "/api/models/acme/tiny/tree/"
	root := []string{"a/", "config.json", "empty.txt", "generation_config.json", "model.safetensors", "tokenizer/"}
	all := []string{"a/", "a/b/", "a/b/c.txt", "a/b.txt", "config.json", "empty.txt", "generation_config.json", "model.safetensors", "tokenizer/", "tokenizer/tokenizer.json"}
	for _, tc := range []struct {
		url  string
		want []string
	}{
		{"main", root},
		{"main?recursive=false&expand=false", root},
		{"main?recursive=True&expand=False", all}, // PY0
		{"main?recursive=true&expand=true", all},  // PY1, JS
		{"main?recursive=1", all},
		{f.main.ID + "?recursive=true", all},
		{"main/a", []string{"a/b/", "a/b.txt"}},
		{"main/a%2Fb", []string{"a/b/c.txt"}}, // Python: path as one %2F segment
		{"main/a/b", []string{"a/b/c.txt"}},   // JS: raw path
		{"main/a/", []string{"a/b/", "a/b.txt"}},
		{"main/a?recursive=true", []string{"a/b/", "a/b/c.txt", "a/b.txt"}},
		{"feature%2Fx/tokenizer", []string{"tokenizer/tokenizer.json"}}, // Python
		{"feature/x/tokenizer", []string{"tokenizer/tokenizer.json"}},   // JS: raw revision
		{"feature/x", root},
		{"feature/x?recursive=true", all},
	} {
		if got := treePaths(getTree(t, base+tc.url)); !slices.Equal(got, tc.want) {
			t.Errorf("tree/%s = %v, want %v", tc.url, got, tc.want)
		}
	}

	// File entries: oid is the git blob SHA-1 (of the pointer for LFS), size
	// the content size, lfs {oid=sha256, size, pointerSize}; never xetHash.
	resp, body := do(t, http.MethodGet, base+"main?recursive=true", nil, nil)
	wantStatus(t, resp, http.StatusOK)
	if bytes.Contains(body, []byte("xetHash")) || bytes.Contains(body, []byte("lastCommit")) {
		t.Errorf("tree has xetHash or lastCommit: %s", body)
	}
	var entries []treeEntry
	json.Unmarshal(body, &entries)
	for _, e := range entries {
		if e.Type != "file" {
			continue
		}
		data := f.files[e.Path]
		if e.Size != int64(len(data)) {
			t.Errorf("%s: size %d", e.Path, e.Size)
		}
		if e.Path == "model.safetensors" {
			ptr := lfsPointer(data)
			if e.OID != hubtest.GitBlobSHA1([]byte(ptr)) || e.LFS == nil || e.LFS.OID != hubtest.SHA256(data) || e.LFS.Size != int64(len(data)) || e.LFS.PointerSize != len(ptr) {
				t.Errorf("%s: entry %+v lfs %+v", e.Path, e, e.LFS)
			}
		} else if e.OID != hubtest.GitBlobSHA1(data) || e.LFS != nil {
			t.Errorf("%s: entry %+v", e.Path, e)
		}
	}
	checkTreeOIDsWithGit(t, f.files, entries)
}

// checkTreeOIDsWithGit compares the oids the handler computes with git's
// own for the same tree (LFS files committed as their pointers, as a Hub
// repo stores them). Skipped without git.
func checkTreeOIDsWithGit(t *testing.T, files map[string][]byte, entries []treeEntry) {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Log("git not found; directory oids not cross-checked")
		return
	}
	dir := t.TempDir()
	git := func(args ...string) string {
		cmd := exec.Command(gitPath, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	for p, data := range files {
		if hubtest.IsLFS(p, data) {
			data = []byte(lfsPointer(data))
		}
		full := filepath.Join(dir, filepath.FromSlash(p))
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("add", "-A")
	tree := git("write-tree")
	for _, e := range entries {
		if got := git("rev-parse", tree+":"+e.Path); got != e.OID {
			t.Errorf("%s %s: oid %s, git says %s", e.Type, e.Path, e.OID, got)
		}
	}
}

func TestPathsInfo(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	post := func(rev, ctype, body string) []treeEntry {
		resp, b := do(t, http.MethodPost, srv.URL+"/api/models/acme/tiny/paths-info/"+rev, map[string]string{"Content-Type": ctype}, strings.NewReader(body))
		wantStatus(t, resp, http.StatusOK)
		var out []treeEntry
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return out
	}
	form := url.Values{"paths": {"model.safetensors", "missing", "a/b", "config.json", "config.json"}, "expand": {"False"}}.Encode()
	got := post("main", "application/x-www-form-urlencoded", form) // Python
	if want := []string{"model.safetensors", "a/b/", "config.json"}; !slices.Equal(treePaths(got), want) {
		t.Errorf("form: %v, want %v", treePaths(got), want)
	}
	if got[0].LFS == nil || got[0].LFS.OID != hubtest.SHA256(f.files["model.safetensors"]) {
		t.Errorf("form: model.safetensors lfs %+v", got[0].LFS)
	}
	got = post("feature%2Fx", "application/json", `{"paths":["config.json"],"expand":true}`) // JS
	if len(got) != 1 || got[0].OID != hubtest.GitBlobSHA1(f.featureFiles["config.json"]) {
		t.Errorf("json: %+v", got)
	}
	resp, _ := do(t, http.MethodPost, srv.URL+"/api/models/acme/tiny/paths-info/nope", map[string]string{"Content-Type": "application/json"}, strings.NewReader(`{"paths":["x"]}`))
	wantStatus(t, resp, http.StatusNotFound)
	wantHeader(t, resp, "X-Error-Code", "RevisionNotFound")
	resp, _ = do(t, http.MethodPost, srv.URL+"/api/models/acme/tiny/paths-info/main", map[string]string{"Content-Type": "application/json"}, strings.NewReader(`{"paths":`))
	wantStatus(t, resp, http.StatusBadRequest)
}

func TestWhoamiAndAuthHook(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	resp, _ := do(t, http.MethodGet, srv.URL+"/api/whoami-v2", map[string]string{"Authorization": "Bearer x"}, nil)
	wantStatus(t, resp, http.StatusUnauthorized)
	wantHeader(t, resp, "X-Error-Message", "Invalid credentials in Authorization header")

	// A middleware stands in for the later token check: it rejects requests
	// without a token and attaches an identity to the others.
	auth := hub.MiddlewareFunc(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer good" {
				w.Header().Set("X-Error-Message", "Invalid credentials in Authorization header")
				http.Error(w, "no", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r.WithContext(hub.WithIdentity(r.Context(), hub.Identity{Name: "alice", Orgs: []string{"acme"}, TokenName: "t1", TokenRole: "write"})))
		})
	})
	srv2, _ := newServer(t, f, hub.Options{Auth: auth})
	resp, _ = do(t, http.MethodHead, srv2.URL+"/acme/tiny/resolve/main/config.json", nil, nil)
	wantStatus(t, resp, http.StatusUnauthorized)
	resp, _ = do(t, http.MethodHead, srv2.URL+"/acme/tiny/resolve/main/config.json", map[string]string{"Authorization": "Bearer good"}, nil)
	wantStatus(t, resp, http.StatusOK)
	resp, body := do(t, http.MethodGet, srv2.URL+"/api/whoami-v2", map[string]string{"Authorization": "Bearer good"}, nil)
	wantStatus(t, resp, http.StatusOK)
	var who struct {
		Name string `json:"name"`
		Orgs []struct {
			Name string `json:"name"`
		} `json:"orgs"`
		Auth struct {
			AccessToken struct {
				DisplayName string `json:"displayName"`
				Role        string `json:"role"`
				CreatedAt   string `json:"createdAt"`
			} `json:"accessToken"`
		} `json:"auth"`
	}
	if err := json.Unmarshal(body, &who); err != nil {
		t.Fatal(err)
	}
	if who.Name != "alice" || len(who.Orgs) != 1 || who.Orgs[0].Name != "acme" || who.Auth.AccessToken.Role != "write" ||
		who.Auth.AccessToken.DisplayName != "t1" || !strings.HasSuffix(who.Auth.AccessToken.CreatedAt, "Z") {
		t.Errorf("whoami: %s", body)
	}
}

func TestCORS(t *testing.T) {
	f := newFixture(t)
	srv, _ := newServer(t, f, hub.Options{})
	resp, _ := do(t, http.MethodOptions, srv.URL+"/acme/tiny/resolve/main/config.json", map[string]string{
		"Origin": "http://example.test", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization,range",
	}, nil)
	wantStatus(t, resp, http.StatusNoContent)
	wantHeader(t, resp, "Access-Control-Allow-Headers", "authorization,range")
	resp, _ = do(t, http.MethodHead, srv.URL+"/acme/tiny/resolve/main/config.json", nil, nil)
	for _, h := range []string{"X-Repo-Commit", "ETag", "Content-Range", "X-Linked-Size", "X-Error-Code"} {
		if !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), h) {
			t.Errorf("CORS does not expose %s", h)
		}
	}
}

// A store failure in the middle of a body must cut the connection, not end
// the body cleanly, and must be logged.
func TestReadFailureAbortsBody(t *testing.T) {
	f := newFixture(t)
	srv, logs := newServer(t, f, hub.Options{})
	data := f.files["model.safetensors"]
	f.repos.FailReadOnce("model.safetensors", int64(len(data))/2, errors.New("integrity: chunk damaged"))
	resp, err := http.Get(srv.URL + "/acme/tiny/resolve/main/model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("body ended cleanly after %d of %d bytes", len(got), len(data))
	}
	if !bytes.Equal(got, data[:len(got)]) || len(got) > len(data)/2 {
		t.Errorf("got %d bytes before the cut; want a correct prefix of at most %d", len(got), len(data)/2)
	}
	// Resuming where it stopped gives the rest.
	resp2, rest := do(t, http.MethodGet, srv.URL+"/acme/tiny/resolve/main/model.safetensors", map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(got))}, nil)
	wantStatus(t, resp2, http.StatusPartialContent)
	if !bytes.Equal(append(got, rest...), data) {
		t.Error("resumed file differs")
	}
	srv.Close() // flush the handler goroutines before reading the log
	var found bool
	for _, rec := range logs.records(t) {
		if rec["aborted"] == true && strings.Contains(fmt.Sprint(rec["error"]), "chunk damaged") && rec["level"] == "ERROR" {
			found = true
		}
	}
	if !found {
		t.Errorf("no aborted request with the error in the log: %v", logs.records(t))
	}
}

// A client that hangs up mid-body is routine: logged at INFO as
// client_closed, not as a store failure, and the reader is closed.
func TestClientDisconnect(t *testing.T) {
	f := newFixture(t)
	srv, logs := newServer(t, f, hub.Options{})
	resp, err := http.Get(srv.URL + "/acme/tiny/resolve/main/model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // unread body: the transport drops the connection
	srv.Close()       // waits for the handler
	recs := logs.records(t)
	if len(recs) != 1 || recs[0]["client_closed"] != true || recs[0]["level"] != "INFO" || recs[0]["aborted"] != nil || recs[0]["error"] != nil {
		t.Errorf("log: %v", recs)
	}
}

func TestRequestLog(t *testing.T) {
	f := newFixture(t)
	srv, logs := newServer(t, f, hub.Options{})
	do(t, http.MethodGet, srv.URL+"/acme/tiny/resolve/feature%2Fx/config.json", map[string]string{"Range": "bytes=0-3", "X-Request-Id": "abc-123"}, nil)
	srv.Close()
	recs := logs.records(t)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	for k, want := range map[string]any{
		"msg": "request", "method": "GET", "path": "/acme/tiny/resolve/feature%2Fx/config.json", "status": float64(206),
		"bytes": float64(4), "range": "bytes=0-3", "repo": "acme/tiny", "revision": "feature/x", "file": "config.json",
		"commit": f.feature.ID, "request_id": "abc-123", "level": "INFO",
	} {
		if r[k] != want {
			t.Errorf("log %s = %v, want %v", k, r[k], want)
		}
	}
}

// Files is called once per commit however many requests need it, and the
// cache evicts beyond CachedCommits.
type countingRepos struct {
	hub.Repos
	files chan string
}

func (c countingRepos) Files(commit string) ([]hub.FileInfo, error) {
	c.files <- commit
	return c.Repos.Files(commit)
}

func TestSnapshotCache(t *testing.T) {
	f := newFixture(t)
	cr := countingRepos{Repos: f.repos, files: make(chan string, 100)}
	srv := serveHandler(t, hub.NewHandler(cr, hub.Options{CachedCommits: 1, Logger: slog.New(slog.DiscardHandler)}))
	for _, rev := range []string{"main", "main", "main", "v1.0", "v1.0", "main"} {
		resp, _ := do(t, http.MethodHead, srv+"/acme/tiny/resolve/"+rev+"/config.json", nil, nil)
		wantStatus(t, resp, http.StatusOK)
	}
	close(cr.files)
	var got []string
	for c := range cr.files {
		got = append(got, c)
	}
	if want := []string{f.main.ID, f.v1.ID, f.main.ID}; !slices.Equal(got, want) {
		t.Errorf("Files calls %v, want %v", got, want)
	}
}

func TestServeGracefulShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- hub.ServeListener(ctx, ln, h) }()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-started
	cancel()
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	// New connections are refused once shutdown began.
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("listener still accepting after cancel")
	}
	close(release)
	if s := <-got; s != "done" {
		t.Errorf("in-flight request got %q", s)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	// Serve reports a bad address.
	if err := hub.Serve(context.Background(), "127.0.0.1:-1", h); err == nil {
		t.Error("Serve on a bad address returned nil")
	}
}

func TestConformanceOfFake(t *testing.T) {
	hubtest.CheckRepos(t, newFixture(t).repos)
}
