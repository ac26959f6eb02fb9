package hub

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// Fuzz targets for every request body the server parses and for the
// Authorization header. Each checks what a successful parse promises (the
// invariants the handlers rely on), not only that nothing panics.

var fuzzLimits = commitLimits{maxInline: 1 << 10, maxOps: 50}

func FuzzParseCommit(f *testing.F) {
	b64 := base64.StdEncoding.EncodeToString
	py := `{"key": "header", "value": {"summary": "Upload folder", "description": "", "parentCommit": "0123456789abcdef0123456789abcdef01234567"}}` + "\n" +
		`{"key": "file", "value": {"content": "` + b64([]byte("hello\n")) + `", "path": "a/b.txt", "encoding": "base64"}}` + "\n" +
		`{"key": "lfsFile", "value": {"path": "model.safetensors", "algo": "sha256", "oid": "` + strings.Repeat("ab", 32) + `", "size": 12}}` + "\n" +
		`{"key": "deletedFile", "value": {"path": "old.txt"}}` + "\n" +
		`{"key": "deletedFolder", "value": {"path": "logs/"}}` + "\n"
	js := `{"key":"header","value":{"summary":"x"}}` + "\n" + `{"key":"file","value":{"path":"u.txt","content":"plain","encoding":"utf-8"}}`
	jsonForm := `{"summary":"s","description":"d","files":[{"path":"a","content":"` + b64([]byte("a")) + `"}],"lfsFiles":[{"path":"b","oid":"` + strings.Repeat("0", 64) + `"}],"deletedFiles":[{"path":"c"}],"deletedFolders":[{"path":"d/"}],"x":[1,{"y":null}]}`
	for _, seed := range []struct {
		body string
		json bool
	}{
		{py, false}, {js, false}, {jsonForm, true},
		{"", false}, {"\n\n", false}, {"{}", false}, {`{"key":"header"}`, false}, {"[", true}, {`{"files":[{}]}`, true},
		{`{"key":"file","value":{"path":"../x","content":""}}`, false},
		{`{"key":"lfsFile","value":{"path":"a","oid":"` + strings.Repeat("A", 64) + `","size":-1}}`, false},
	} {
		f.Add([]byte(seed.body), seed.json)
	}
	f.Fuzz(func(t *testing.T, body []byte, jsonForm bool) {
		ct := "application/x-ndjson"
		if jsonForm {
			ct = "application/json"
		}
		var entries []commitEntry
		hdr, err := parseCommit(bytes.NewReader(body), ct, fuzzLimits, func(e commitEntry) error {
			entries = append(entries, e)
			return nil
		})
		if len(entries) > fuzzLimits.maxOps {
			t.Fatalf("%d operations passed the limit of %d", len(entries), fuzzLimits.maxOps)
		}
		for _, e := range entries {
			if !ValidPath(e.path) || strings.Contains(e.path, "..") && slices.Contains(strings.Split(e.path, "/"), "..") {
				t.Fatalf("operation with invalid path %q", e.path)
			}
			switch {
			case e.kind == OpAdd && !e.lfs:
				if int64(len(e.content)) > fuzzLimits.maxInline || e.size != int64(len(e.content)) {
					t.Fatalf("inline file %q: %d bytes, size %d, limit %d", e.path, len(e.content), e.size, fuzzLimits.maxInline)
				}
			case e.kind == OpAdd:
				if !isHex(e.oid, 64) || e.size < -1 {
					t.Fatalf("lfsFile %q: oid %q size %d", e.path, e.oid, e.size)
				}
			case e.kind != OpDeleteFile && e.kind != OpDeleteFolder:
				t.Fatalf("unknown kind %v", e.kind)
			}
		}
		if err != nil {
			var se *commitSyntaxError
			if !errors.As(err, &se) && !errors.Is(err, errInlineTooLarge) {
				t.Fatalf("error of an unexpected kind: %v", err)
			}
			return
		}
		// A body that parsed re-encodes to NDJSON that parses to the same
		// operations.
		var out bytes.Buffer
		line := func(key string, v any) {
			b, _ := json.Marshal(map[string]any{"key": key, "value": v})
			out.Write(append(b, '\n'))
		}
		line("header", hdr)
		for _, e := range entries {
			switch {
			case e.kind == OpAdd && !e.lfs:
				line("file", map[string]any{"path": e.path, "content": base64.StdEncoding.EncodeToString(e.content), "encoding": "base64"})
			case e.kind == OpAdd:
				v := map[string]any{"path": e.path, "algo": "sha256", "oid": e.oid}
				if e.size >= 0 {
					v["size"] = e.size
				}
				line("lfsFile", v)
			case e.kind == OpDeleteFile:
				line("deletedFile", map[string]any{"path": e.path})
			default:
				line("deletedFolder", map[string]any{"path": e.path})
			}
		}
		var again []commitEntry
		hdr2, err := parseCommit(&out, "application/x-ndjson", fuzzLimits, func(e commitEntry) error {
			again = append(again, e)
			return nil
		})
		if err != nil || hdr2 != hdr || len(again) != len(entries) {
			t.Fatalf("re-encoded commit: %v, header %+v vs %+v, %d vs %d operations", err, hdr2, hdr, len(again), len(entries))
		}
		for i := range again {
			a, b := again[i], entries[i]
			if a.kind != b.kind || a.path != b.path || a.lfs != b.lfs || a.oid != b.oid || a.size != b.size || !bytes.Equal(a.content, b.content) {
				t.Fatalf("operation %d changed in the round trip: %+v vs %+v", i, a, b)
			}
		}
	})
}

func FuzzParseBatch(f *testing.F) {
	oid := strings.Repeat("ab", 32)
	f.Add([]byte(`{"operation":"upload","transfers":["basic","multipart"],"objects":[{"oid":"` + oid + `","size":12}],"hash_algo":"sha256","ref":{"name":"main"}}`))
	f.Add([]byte(`{"operation":"upload","transfers":["basic","multipart","xet"],"objects":[{"oid":"` + oid + `","size":0}],"hash_algo":"sha_256"}`))
	f.Add([]byte(`{"operation":"download","objects":[]}`))
	f.Add([]byte(`{"operation":"upload","objects":[{"oid":1,"size":"x"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseBatch(body)
		if err != nil {
			return
		}
		if req.Operation != "upload" || len(req.Objects) == 0 || len(req.Objects) > maxBatchObjects {
			t.Fatalf("accepted %+v", req)
		}
		if req.HashAlgo != "" && req.HashAlgo != "sha256" && req.HashAlgo != "sha_256" {
			t.Fatalf("accepted hash_algo %q", req.HashAlgo)
		}
		if len(req.Transfers) > 0 && !slices.Contains(req.Transfers, "basic") && !slices.Contains(req.Transfers, "multipart") {
			t.Fatalf("accepted transfers %q", req.Transfers)
		}
	})
}

func FuzzParsePreupload(f *testing.F) {
	f.Add([]byte(`{"files":[{"path":"a/b.txt","size":12,"sample":"aGVsbG8="}],"gitIgnore":"*.log\n"}`))
	f.Add([]byte(`{"files":[{"path":"x","size":0,"sample":""}],"gitAttributes":"*.bin filter=lfs\n"}`))
	f.Add([]byte(`{"files":[{"path":"../x","size":-1,"sample":"!"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, samples, err := parsePreupload(body)
		if err != nil {
			return
		}
		if len(req.Files) > maxBatchObjects || len(samples) != len(req.Files) {
			t.Fatalf("%d files, %d samples", len(req.Files), len(samples))
		}
		for i, file := range req.Files {
			if !ValidPath(file.Path) || file.Size < 0 || len(samples[i]) > 1024 {
				t.Fatalf("accepted %+v", file)
			}
			if m := uploadMode(parseGitPatterns(deref(req.GitAttributes), true), file.Path, file.Size, samples[i]); m != "lfs" && m != "regular" {
				t.Fatalf("upload mode %q", m)
			}
			gitIgnored(parseGitPatterns(deref(req.GitIgnore), false), file.Path)
		}
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func FuzzParseCreateRepo(f *testing.F) {
	f.Add([]byte(`{"name":"model","organization":null,"private":false}`), "alice")
	f.Add([]byte(`{"name":"m","organization":"acme","visibility":"private","type":"model"}`), "")
	f.Add([]byte(`{"name":"acme/full"}`), "bob")
	f.Add([]byte(`{"name":"js","organization":"acme","files":[{"path":"README.md","content":"IyB4","encoding":"base64"}]}`), "")
	f.Add([]byte(`{"name":"x","type":"dataset"}`), "a")
	f.Fuzz(func(t *testing.T, body []byte, user string) {
		repo, req, err := parseCreateRepo(body, user)
		if err != nil {
			return
		}
		if !ValidRepoID(repo) || strings.Count(repo, "/") != 1 {
			t.Fatalf("accepted repo id %q", repo)
		}
		for _, file := range req.Files {
			if !ValidPath(file.Path) {
				t.Fatalf("accepted file path %q", file.Path)
			}
		}
	})
}

func FuzzParseAuthorization(f *testing.F) {
	for _, h := range []string{"Bearer heft_abc", "bearer  x", "Basic dXNlcjpwYXNz", "Basic OnRvaw==", "Basic dXNlcjo=", "Bearer", "Token x", "Bearer a b", "Basic !!!", ""} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := parseAuthorization(h)
		if err != nil || tok == "" {
			if err == nil && h != "" {
				t.Fatalf("%q: no token and no error", h)
			}
			return
		}
		if len(tok) > maxTokenLen || !utf8.ValidString(tok) {
			t.Fatalf("%q: token of %d bytes", h, len(tok))
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] <= 0x20 || tok[i] >= 0x7f {
				t.Fatalf("%q: token %q has byte %#x", h, tok, tok[i])
			}
		}
		if again, err := parseAuthorization("Bearer " + tok); err != nil || again != tok {
			t.Fatalf("Bearer %q parsed as %q, %v", tok, again, err)
		}
	})
}

func FuzzParseComplete(f *testing.F) {
	oid := strings.Repeat("ab", 32)
	etag := `"` + strings.Repeat("cd", 32) + `"`
	f.Add([]byte(`{"oid":"`+oid+`","parts":[{"partNumber":1,"etag":`+etag+`},{"partNumber":2,"etag":`+etag+`}]}`), int64(2))
	f.Add([]byte(`{"oid":"`+oid+`","parts":[{"partNumber":2,"etag":"W/`+etag[1:]+`}]}`), int64(1))
	f.Fuzz(func(t *testing.T, body []byte, n int64) {
		if n < 1 || n > 10_000 {
			return
		}
		shas, err := parseComplete(body, oid, n)
		if err != nil {
			return
		}
		if int64(len(shas)) != n {
			t.Fatalf("%d part hashes for %d parts", len(shas), n)
		}
		for _, s := range shas {
			if !isHex(s, 64) {
				t.Fatalf("part hash %q", s)
			}
		}
	})
}

func FuzzParseUploadPath(f *testing.F) {
	oid := strings.Repeat("ab", 32)
	for _, p := range []string{"object/acme/m/" + oid + "/12", "part/acme/m/" + oid + "/100/30/4", "complete/acme/m/" + oid + "/100/30", "verify/a/b/" + oid + "/0", "part/a/b/" + oid + "/0/1/1"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		tg, ok := parseUploadPath(strings.Split(p, "/"))
		if !ok {
			return
		}
		if !ValidRepoID(tg.repo) || !isHex(tg.oid, 64) || tg.size < 0 {
			t.Fatalf("%q: accepted %+v", p, tg)
		}
		if tg.op == "part" && (tg.chunk <= 0 || tg.part < 1 || (tg.part-1)*tg.chunk >= max(tg.size, 1)) {
			t.Fatalf("%q: part %d of chunk %d outside a %d-byte object", p, tg.part, tg.chunk, tg.size)
		}
	})
}

func FuzzGitPatterns(f *testing.F) {
	f.Add("*.log\n!keep.log\nbuild/\n/root.txt\n**/deep/**\n[a-c]?.bin\n\\#x\n", "a/build/x.log")
	f.Add(defaultGitAttributes, "saved_model/x/y.pb")
	f.Fuzz(func(t *testing.T, patterns, path string) {
		// Any pattern text compiles or is skipped line by line.
		gitIgnored(parseGitPatterns(patterns, false), path)
		lfsTracked(parseGitPatterns(patterns, true), path)
		// A path without glob characters, anchored as a pattern, matches
		// itself (and, negated after, no longer does).
		if !ValidPath(path) || strings.ContainsAny(path, "*?[\\!# \t") {
			return
		}
		if !gitIgnored(parseGitPatterns("/"+path, false), path) {
			t.Fatalf("pattern /%s does not ignore %s", path, path)
		}
		if gitIgnored(parseGitPatterns("/"+path+"\n!/"+path, false), path) {
			t.Fatalf("a negated pattern still ignores %s", path)
		}
		if !lfsTracked(parseGitPatterns("/"+path+" filter=lfs", true), path) || lfsTracked(parseGitPatterns("/"+path+" -filter", true), path) {
			t.Fatalf("attributes for %s", path)
		}
		// And a parent directory pattern ignores it.
		if i := strings.IndexByte(path, '/'); i > 0 && !gitIgnored(parseGitPatterns(path[:i]+"/", false), path) {
			t.Fatalf("pattern %s/ does not ignore %s", path[:i], path)
		}
	})
}

// The verifying reader never lets wrong content end in io.EOF.
func FuzzVerifyingReader(f *testing.F) {
	f.Add([]byte("hello"), []byte("hello"), uint8(3))
	f.Add([]byte("hello"), []byte("hell"), uint8(1))
	f.Add([]byte("hello"), []byte("hello!"), uint8(7))
	f.Fuzz(func(t *testing.T, want, got []byte, step uint8) {
		oid := sha256Hex(want)
		v := newVerifyingReader(&stepReader{data: got, step: int(step%16) + 1}, oid, int64(len(want)))
		out, err := io.ReadAll(v)
		if bytes.Equal(want, got) {
			if err != nil || !bytes.Equal(out, want) {
				t.Fatalf("matching content: %v, %d bytes", err, len(out))
			}
			return
		}
		if !errors.Is(err, ErrObjectMismatch) || int64(len(out)) > int64(len(want)) {
			t.Fatalf("mismatching content read as %d bytes, %v", len(out), err)
		}
	})
}

type stepReader struct {
	data []byte
	step int
}

func (s *stepReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), s.step)], s.data)
	s.data = s.data[n:]
	return n, nil
}

// The small JSON bodies (branch, tag, verify, validate-yaml) go through
// decodeJSON into fixed structs; whatever they hold, decoding either fails
// or yields a value, and the front-matter check terminates.
func FuzzSmallBodies(f *testing.F) {
	f.Add([]byte(`{"startingPoint":"main","emptyBranch":false,"overwrite":true}`))
	f.Add([]byte(`{"tag":"v1.0","message":"m"}`))
	f.Add([]byte(`{"oid":"` + strings.Repeat("a", 64) + `","size":1}`))
	f.Add([]byte(`{"content":"---\nlicense: mit\n---\n","repoType":"model"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var br branchRequest
		var tr tagRequest
		var vr batchObject
		var yr struct {
			Content  string `json:"content"`
			RepoType string `json:"repoType"`
		}
		for _, v := range []any{&br, &tr, &vr, &yr} {
			if err := decodeJSON(body, v); err == nil && !json.Valid(body) {
				t.Fatalf("decodeJSON accepted invalid JSON %q", body)
			}
		}
		frontMatterError(yr.Content)
		frontMatterError(string(body))
	})
}

// FuzzParseRange: the Range header of resolve requests. Whatever the header
// and the body size, a satisfiable range lies inside the body and is not
// empty, and the standard forms give what RFC 9110 says.
func FuzzParseRange(f *testing.F) {
	for _, spec := range []string{"bytes=0-99", "bytes=100-", "bytes=-500", "bytes=5-4", "bytes=0-0,5-9", "items=0-1", "bytes= 7 - 9 ", "bytes=-0", "bytes=99999999999999999999-"} {
		f.Add(spec, int64(1000))
	}
	f.Add("bytes=0-", int64(0))
	f.Fuzz(func(t *testing.T, spec string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		start, length, res := parseRange(spec, size)
		switch res {
		case rangeOK:
			if start < 0 || length <= 0 || start >= size || length > size-start {
				t.Fatalf("parseRange(%q, %d) = [%d, +%d): outside the body", spec, size, start, length)
			}
		case rangeIgnore, rangeUnsatisfiable, rangeEmptyFile:
			if start != 0 || length != 0 {
				t.Fatalf("parseRange(%q, %d) = %d, %d with result %d", spec, size, start, length, res)
			}
			if res == rangeEmptyFile && size != 0 {
				t.Fatalf("parseRange(%q, %d): empty-file result for a non-empty body", spec, size)
			}
		default:
			t.Fatalf("parseRange(%q, %d): unknown result %d", spec, size, res)
		}
		// A well-formed first-last range of the body is served exactly.
		var a, b int64
		if n, err := fmt.Sscanf(spec, "bytes=%d-%d", &a, &b); err == nil && n == 2 && spec == fmt.Sprintf("bytes=%d-%d", a, b) && a >= 0 && a <= b && b < size {
			if res != rangeOK || start != a || length != b-a+1 {
				t.Fatalf("parseRange(%q, %d) = %d, %d, %d; want [%d, %d]", spec, size, start, length, res, a, b)
			}
		}
	})
}
