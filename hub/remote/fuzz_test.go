package remote

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// Every decoder of the protocol has a fuzz target: object streams, the JSON
// messages (with their ID lists), the digit strings and the Authorization header.

func FuzzObjectReader(f *testing.F) {
	good := encodeStream(f, testObjects())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(encodeStream(f, nil))
	f.Add([]byte(streamMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := readAll(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		// A stream that reads cleanly is canonical: writing its objects
		// again gives a prefix of the same bytes (trailing data is ignored).
		again := encodeStream(t, objs)
		if !bytes.HasPrefix(data, again) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzMessages(f *testing.F) {
	id := `"` + ID{1}.String() + `"`
	list, _ := IDList{{1}, {2}}.MarshalJSON()
	for _, s := range []string{
		`{"new":` + id + `,"commits":` + string(list) + `}`,
		`{"new":` + id + `,"old":` + id + `,"force":true,"commits":""}`,
		`{"objects":` + string(list) + `,"kinds":"12"}`,
		`{"current":` + id + `,"updated":true,"status":"2"}`,
		`{"commit":` + id + `,"commits":` + string(list) + `}`,
		`{"chunks":` + string(list) + `,"deltas":""}`,
		`{"error":"x","code":"conflict"}`,
		`{}`, `[]`, `{"objects":"AAAA"}`, `{"new":"zz"}`, `{} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []any{
			&pushNegotiateRequest{}, &pushNegotiateResponse{}, &haveRequest{}, &haveResponse{},
			&receiveResponse{}, &updateRequest{}, &updateResponse{}, &pullNegotiateResponse{},
			&treesRequest{}, &treesResponse{}, &chunksRequest{}, &chunksResponse{}, &objectsRequest{}, &errorResponse{},
		} {
			if err := decodeJSON(bytes.NewReader(data), v); err != nil {
				if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("%T: unclassified error %v", v, err)
				}
				continue
			}
			// What decodes encodes and decodes to the same value.
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("%T: %v", v, err)
			}
			if err := decodeJSON(bytes.NewReader(b), v); err != nil {
				t.Fatalf("%T: re-decoding %s: %v", v, b, err)
			}
			b2, _ := json.Marshal(v)
			if !bytes.Equal(b, b2) {
				t.Fatalf("%T: %s then %s", v, b, b2)
			}
		}
	})
}

func FuzzDigits(f *testing.F) {
	for _, s := range []string{"", "1", "12345", "0", "6", "012", "2\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ks, err := decodeKinds(s, len(s)); err == nil {
			if encodeKinds(ks) != s {
				t.Fatalf("kinds %q do not round-trip", s)
			}
		}
		if ps, err := decodePresence(s, len(s)); err == nil {
			if encodePresence(ps) != s {
				t.Fatalf("presence %q does not round-trip", s)
			}
		}
	})
}

func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"", "Bearer abc", "bearer  x", "Basic YTpi", "Bearer", "Bearer a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, err := bearerToken(h)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if h != "" && tok == "" {
			t.Fatalf("%q: empty token without error", h)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] <= 0x20 || tok[i] >= 0x7f {
				t.Fatalf("%q: token with byte %#x", h, tok[i])
			}
		}
	})
}

func FuzzRef(f *testing.F) {
	for _, s := range []string{"acme/m", "m:tag", "", ":x", "a b", "acme/m:v1/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		if validRef(ref) == nil && Namespace(ref) == "" {
			t.Fatalf("%q: empty namespace", ref)
		}
	})
}
