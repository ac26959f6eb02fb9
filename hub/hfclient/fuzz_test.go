package hfclient

import (
	"fmt"
	"strings"
	"testing"
)

// Fuzz targets for every response body the client decodes. Each checks that
// the decoder never panics and that what it accepts has the properties the
// client relies on.

func FuzzParseRepoInfo(f *testing.F) {
	f.Add([]byte(`{"_id":"r","id":"acme/tiny","sha":"` + sha40() + `","lastModified":"2026-01-02T03:04:05.000Z","private":false,"siblings":[{"rfilename":".gitattributes"},{"rfilename":"config.json"}]}`))
	f.Add([]byte(`{"id":"a/b","sha":"` + sha40() + `","siblings":[{"rfilename":"m.safetensors","size":9,"blobId":"ab","lfs":{"size":9,"sha256":"` + fmt.Sprintf("%064x", 1) + `","pointerSize":130}}]}`))
	f.Add([]byte(`{"id":"a/b","sha":null}`))
	f.Add([]byte(`{"sha":"` + sha40() + `","siblings":[{"rfilename":"x","size":-1}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		info, sized, err := parseRepoInfo(body)
		if err != nil {
			return
		}
		if !commitIDRe.MatchString(info.SHA) {
			t.Fatalf("accepted sha %q", info.SHA)
		}
		seen := map[string]bool{}
		for _, s := range info.Siblings {
			if s.Path == "" || seen[s.Path] {
				t.Fatalf("accepted sibling path %q", s.Path)
			}
			seen[s.Path] = true
			if sized && s.Size < 0 {
				t.Fatalf("sized listing with size %d", s.Size)
			}
			if s.SHA256 != "" && !sha256Re.MatchString(s.SHA256) {
				t.Fatalf("accepted lfs sha256 %q", s.SHA256)
			}
		}
	})
}

func FuzzParseTree(f *testing.F) {
	f.Add([]byte(`[{"type":"directory","path":"d","oid":"x","size":0},{"type":"file","path":"d/a.txt","oid":"aa","size":3}]`))
	f.Add([]byte(`[{"type":"file","path":"w.safetensors","oid":"bb","size":9,"lfs":{"oid":"` + fmt.Sprintf("%064X", 2) + `","size":9,"pointerSize":130}}]`))
	f.Add([]byte(`[{"type":"file","path":"w","oid":"bb","size":9,"lfs":{"oid":"zz","size":9}}]`))
	f.Add([]byte(`[{"type":"symlink","path":"x"}]`))
	f.Add([]byte(`{"error":"nope"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		files, err := parseTree(body)
		if err != nil {
			return
		}
		for _, fl := range files {
			if fl.Path == "" || fl.Size < 0 {
				t.Fatalf("accepted %+v", fl)
			}
			if fl.SHA256 != "" && !sha256Re.MatchString(fl.SHA256) {
				t.Fatalf("accepted lfs oid %q", fl.SHA256)
			}
		}
	})
}

func FuzzParseBatch(f *testing.F) {
	oid := fmt.Sprintf("%064x", 3)
	f.Add([]byte(`{"transfer":"basic","objects":[{"oid":"`+oid+`","size":10,"actions":{"upload":{"href":"http://h/u"},"verify":{"href":"http://h/v"}}}]}`), int64(10))
	f.Add([]byte(`{"transfer":"basic","objects":[{"oid":"`+oid+`","size":10}]}`), int64(10))
	f.Add([]byte(`{"objects":[{"oid":"`+oid+`","size":10,"actions":{"upload":{"href":"http://h/c","header":{"chunk_size":5,"1":"http://h/1","2":"http://h/2"}}}}]}`), int64(10))
	f.Add([]byte(`{"objects":[{"oid":"`+oid+`","size":10,"error":{"code":422,"message":"no"}}]}`), int64(10))
	f.Add([]byte(`{"transfer":"xet","objects":[]}`), int64(0))
	f.Add([]byte(`{"objects":[{"oid":"`+oid+`","size":10.5,"actions":null}]}`), int64(10))
	f.Fuzz(func(t *testing.T, body []byte, size int64) {
		asked := map[string]int64{oid: size}
		objs, err := parseBatch(body, asked)
		if err != nil {
			return
		}
		for _, o := range objs {
			if want, ok := asked[o.OID]; !ok || want != o.Size {
				t.Fatalf("accepted an object not asked for: %+v", o)
			}
			for _, a := range []*LFSAction{o.Upload, o.Verify} {
				if a != nil && (a.Href == "" || a.Header == nil) {
					t.Fatalf("accepted action %+v", a)
				}
			}
		}
	})
}

func FuzzParseCommit(f *testing.F) {
	f.Add([]byte(`{"success":true,"commitOid":"` + sha40() + `","commitUrl":"http://h/a/b/commit/` + sha40() + `","hookOutput":""}`))
	f.Add([]byte(`{"commitOid":"abc"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ci, err := parseCommit(body)
		if err == nil && !commitIDRe.MatchString(ci.OID) {
			t.Fatalf("accepted commitOid %q", ci.OID)
		}
	})
}

func FuzzParsePreupload(f *testing.F) {
	f.Add([]byte(`{"files":[{"path":"a","uploadMode":"lfs","shouldIgnore":false,"oid":"x"},{"path":"b","uploadMode":"regular","shouldIgnore":true}],"commitOid":"c"}`))
	f.Add([]byte(`{"files":[{"path":"a","uploadMode":"xet","shouldIgnore":false}]}`))
	f.Add([]byte(`{"files":[{"path":"a","uploadMode":"lfs"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		asked := []string{"a", "b"}
		modes, err := parsePreupload(body, asked)
		if err != nil {
			return
		}
		if len(modes) != len(asked) {
			t.Fatalf("accepted %d answers for %d paths", len(modes), len(asked))
		}
		for _, p := range asked {
			if modes[p].Path != p {
				t.Fatalf("no answer for %s", p)
			}
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-0/1", "bytes 5-9/10", "bytes 0-9/*", "bytes */10", "bytes 9-5/10", "bytes 0-10/10", "bits 0-1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		a, b, total, err := parseContentRange(v)
		if err != nil {
			return
		}
		if a < 0 || b < a || (total != -1 && total <= b) {
			t.Fatalf("%q: accepted %d-%d/%d", v, a, b, total)
		}
	})
}

func FuzzErrorBody(f *testing.F) {
	f.Add("application/json", []byte(`{"error":"Repository not found"}`))
	f.Add("application/json", []byte(`{"error":["a","b"],"error_description":"c"}`))
	f.Add("application/json", []byte(`{"errors":[{"message":"bad yaml"}]}`))
	f.Add("text/html", []byte(`<html>oops</html>`))
	f.Add("text/plain", []byte(strings.Repeat("x", 2000)))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		if d := errorDetail(ct, body); len(d) > 500+len("…") {
			t.Fatalf("detail of %d bytes", len(d))
		}
		_ = parseNextLink(string(body))
	})
}
