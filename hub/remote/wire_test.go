package remote

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func testObjects() []Object {
	return []Object{
		{ID: ID{1}, Kind: KindChunk, Codec: 2, RawLen: 100, Data: bytes.Repeat([]byte{7}, 40)},
		{ID: ID{2}, Kind: KindTensor, Codec: 1, RawLen: 5, Data: []byte("hello")},
		{ID: ID{3}, Kind: KindCommit, Codec: 0, RawLen: 0, Data: []byte{}},
		{ID: ID{4}, Kind: KindChunk, Codec: 0x40, RawLen: 1 << 20, Data: bytes.Repeat([]byte{1, 2, 3}, 1000)},
	}
}

func encodeStream(t testing.TB, objs []Object) []byte {
	t.Helper()
	var buf bytes.Buffer
	ow := NewObjectWriter(&buf)
	for _, o := range objs {
		if err := ow.Write(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := ow.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAll(data []byte) ([]Object, error) {
	or := NewObjectReader(bytes.NewReader(data))
	var out []Object
	for {
		o, err := or.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, o)
	}
}

func TestObjectStreamRoundTrip(t *testing.T) {
	objs := testObjects()
	data := encodeStream(t, objs)
	got, err := readAll(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(objs) {
		t.Fatalf("read %d objects, wrote %d", len(got), len(objs))
	}
	for i := range objs {
		if got[i].ID != objs[i].ID || got[i].Kind != objs[i].Kind || got[i].Codec != objs[i].Codec ||
			got[i].RawLen != objs[i].RawLen || !bytes.Equal(got[i].Data, objs[i].Data) {
			t.Fatalf("object %d: got %+v, want %+v", i, got[i], objs[i])
		}
	}
	want := len(streamMagic) + frameLen
	for _, o := range objs {
		want += frameSize(len(o.Data))
	}
	if len(data) != want {
		t.Fatalf("stream of %d bytes, want %d", len(data), want)
	}
	// An empty stream is the magic and the end.
	if got, err := readAll(encodeStream(t, nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty stream: %v, %v", got, err)
	}
}

// reheader recomputes the header CRC of the frame at off after an edit.
func reheader(b []byte, off int) {
	binary.LittleEndian.PutUint32(b[off+52:], crc32.Checksum(b[off:off+52], castagnoli))
}

func TestObjectStreamRejects(t *testing.T) {
	good := encodeStream(t, testObjects())
	first := len(streamMagic)
	end := len(good) - frameLen
	edit := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, io.ErrUnexpectedEOF},
		{"bad magic", edit(func(b []byte) { b[0] = 'X' }), ErrInvalid},
		{"newer version", edit(func(b []byte) { b[7] = 2 }), ErrInvalid},
		{"cut in a header", good[:first+10], io.ErrUnexpectedEOF},
		{"cut in the data", good[:first+frameLen+5], io.ErrUnexpectedEOF},
		{"cut before the end", good[:end], io.ErrUnexpectedEOF},
		{"header checksum", edit(func(b []byte) { b[first+33] ^= 1 }), ErrInvalid},
		{"data checksum", edit(func(b []byte) { b[first+frameLen] ^= 1 }), ErrInvalid},
		{"unknown kind", edit(func(b []byte) { b[first+32] = 9; reheader(b, first) }), ErrInvalid},
		{"reserved bytes", edit(func(b []byte) { b[first+34] = 1; reheader(b, first) }), ErrInvalid},
		{"huge stored length", edit(func(b []byte) {
			binary.LittleEndian.PutUint32(b[first+36:], MaxObjectBytes+1)
			reheader(b, first)
		}), ErrTooLarge},
		{"huge raw length", edit(func(b []byte) {
			binary.LittleEndian.PutUint64(b[first+40:], 1<<40)
			reheader(b, first)
		}), ErrTooLarge},
		{"wrong count at the end", edit(func(b []byte) {
			binary.LittleEndian.PutUint64(b[end+40:], 3)
			reheader(b, end)
		}), ErrInvalid},
		{"end with an id", edit(func(b []byte) { b[end] = 1; reheader(b, end) }), ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Errors are sticky; data after the end is never read.
	or := NewObjectReader(bytes.NewReader(good[:first+10]))
	if _, err := or.Next(); err == nil {
		t.Fatal("no error")
	}
	if _, err := or.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("second Next: %v", err)
	}
}

func TestObjectWriterRefusesWhatReadersRefuse(t *testing.T) {
	ow := NewObjectWriter(io.Discard)
	for _, o := range []Object{{Kind: 0}, {Kind: 6}, {Kind: KindChunk, RawLen: MaxObjectBytes + 1}} {
		if err := ow.Write(o); err == nil {
			t.Fatalf("wrote %+v", o)
		}
	}
}

func TestIDListJSON(t *testing.T) {
	l := IDList{{1, 2, 3}, {4}, {}}
	b, err := json.Marshal(struct {
		L IDList `json:"l"`
	}{l})
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		L IDList `json:"l"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.L) != 3 || back.L[0] != l[0] || back.L[1] != l[1] {
		t.Fatalf("round trip: %v", back.L)
	}
	if 32*3*4/3+2 < len(b)-len(`{"l":}`)-2 {
		t.Fatalf("encoding is not compact: %s", b)
	}
	for _, bad := range []string{`"AAAA"`, `"!!"`, `17`, `"` + strings.Repeat("A", 44*MaxIDs+100) + `"`} {
		var x IDList
		if err := json.Unmarshal([]byte(bad), &x); err == nil {
			t.Fatalf("decoded %.40s", bad)
		}
	}
}

func TestDigits(t *testing.T) {
	ks := []Kind{KindChunk, KindCommit, KindTensor}
	got, err := decodeKinds(encodeKinds(ks), 3)
	if err != nil || got[0] != KindChunk || got[1] != KindCommit || got[2] != KindTensor {
		t.Fatalf("kinds %v %v", got, err)
	}
	for _, bad := range []string{"0", "6", "1/", "x", "1\x00"} {
		if _, err := decodeKinds(bad, len(bad)); err == nil {
			t.Fatalf("kinds %q accepted", bad)
		}
	}
	if _, err := decodeKinds("12", 3); err == nil {
		t.Fatal("short kinds accepted")
	}
	ps, err := decodePresence("012", 3)
	if err != nil || ps[0] != Absent || ps[1] != Incomplete || ps[2] != Complete {
		t.Fatalf("presence %v %v", ps, err)
	}
	if _, err := decodePresence("3", 1); err == nil {
		t.Fatal("presence 3 accepted")
	}
}

func TestBearerToken(t *testing.T) {
	for h, want := range map[string]string{"": "", "Bearer abc": "abc", "bearer  abc": "abc", "BEARER x.y-z": "x.y-z"} {
		got, err := bearerToken(h)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v", h, got, err)
		}
	}
	for _, h := range []string{"Bearer", "Bearer ", "Basic YTpi", "Token abc", "Bearer a b", "Bearer a\x7f", "Bearer " + strings.Repeat("a", 1025)} {
		if _, err := bearerToken(h); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%q accepted", h)
		}
	}
}

func TestNamespace(t *testing.T) {
	for ref, want := range map[string]string{"acme/m": "acme", "acme/m:v1/x": "acme", "m": "*", "m:a/b": "*", "/m": "*"} {
		if got := Namespace(ref); got != want {
			t.Errorf("Namespace(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestErrorClassesRoundTrip(t *testing.T) {
	for _, c := range classes {
		rec := httptest.NewRecorder()
		status := writeError(rec, c.err)
		var er errorResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil {
			t.Fatal(err)
		}
		if got := classOf(status, er.Code); got != c.err {
			t.Errorf("%v: came back as %v", c.err, got)
		}
	}
	rec := httptest.NewRecorder()
	if status := writeError(rec, errors.New("disk on fire")); status != 500 || strings.Contains(rec.Body.String(), "fire") {
		t.Fatalf("internal error answered %d %s", status, rec.Body.String())
	}
}
