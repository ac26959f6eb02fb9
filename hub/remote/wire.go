package remote

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// Limits of the protocol. A receiver enforces them before it allocates.
const (
	// MaxBatchBytes is the size of an object batch (frames and stored bytes)
	// that a sender aims for; a batch is larger only when it holds one object.
	MaxBatchBytes = 64 << 20
	// MaxObjectBytes bounds one object's stored and decoded length. Chunks are
	// DefaultChunkSize (4 MiB) in a default store; the largest metadata objects
	// and safetensors headers are far smaller.
	MaxObjectBytes = 256 << 20
	// MaxIDs bounds the IDs in one list of a JSON message; a sender splits
	// longer lists over several requests.
	MaxIDs = 1 << 18
	// MaxHistory bounds the commits of a history a transfer negotiates.
	MaxHistory = 1 << 16
	// MaxJSONBody bounds a JSON request or response body: MaxIDs IDs in
	// base64 plus the rest.
	MaxJSONBody = 16 << 20
	// MaxObjectsBody bounds an object stream: a full batch plus one object
	// that did not fit.
	MaxObjectsBody = MaxBatchBytes + MaxObjectBytes + 2*frameLen + len(streamMagic)
)

// ID is a BLAKE3-256 object name. On the wire: 64 lowercase hex digits in JSON
// fields of one ID, 32 raw bytes in frames and lists.
type ID [32]byte

// ParseID parses 64 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 64 {
		return id, fmt.Errorf("%w: object id %q: want 64 hex digits", ErrInvalid, s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: object id %q: %v", ErrInvalid, s, err)
	}
	return id, nil
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short is the abbreviated form for messages.
func (id ID) Short() string { return hex.EncodeToString(id[:6]) }

// IsZero reports whether id is the zero ID, which names no object.
func (id ID) IsZero() bool { return id == ID{} }

func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Kind is an object's kind, numbered as the store numbers them.
type Kind uint8

const (
	KindChunk    Kind = 1
	KindTensor   Kind = 2
	KindFile     Kind = 3
	KindManifest Kind = 4
	KindCommit   Kind = 5
)

func (k Kind) valid() bool { return k >= KindChunk && k <= KindCommit }

func (k Kind) String() string {
	switch k {
	case KindChunk:
		return "chunk"
	case KindTensor:
		return "tensor"
	case KindFile:
		return "file"
	case KindManifest:
		return "manifest"
	case KindCommit:
		return "commit"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Presence is how much of an object, and of everything it reaches, a store has
// (and may use).
type Presence uint8

const (
	Absent     Presence = 0
	Incomplete Presence = 1
	Complete   Presence = 2
)

func (p Presence) String() string {
	switch p {
	case Absent:
		return "absent"
	case Incomplete:
		return "incomplete"
	case Complete:
		return "complete"
	}
	return fmt.Sprintf("presence(%d)", uint8(p))
}

// IDList is a list of IDs, in JSON one base64 (standard, padded) string of the
// concatenated 32-byte IDs: 43 bytes per ID instead of 66 for hex strings.
type IDList []ID

func (l IDList) MarshalJSON() ([]byte, error) {
	raw := make([]byte, 32*len(l))
	for i, id := range l {
		copy(raw[32*i:], id[:])
	}
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(raw))+2)
	out = append(out, '"')
	out = base64.StdEncoding.AppendEncode(out, raw)
	return append(out, '"'), nil
}

func (l *IDList) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w: id list: %v", ErrInvalid, err)
	}
	if base64.StdEncoding.DecodedLen(len(s)) > 32*MaxIDs+2 {
		return fmt.Errorf("%w: id list longer than %d ids", ErrInvalid, MaxIDs)
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("%w: id list: %v", ErrInvalid, err)
	}
	if len(raw)%32 != 0 {
		return fmt.Errorf("%w: id list of %d bytes is not a whole number of ids", ErrInvalid, len(raw))
	}
	out := make(IDList, len(raw)/32)
	for i := range out {
		copy(out[i][:], raw[32*i:])
	}
	*l = out
	return nil
}

// Kinds and presences travel as strings of digits, one per ID of the list they
// go with: "2225" says the first three IDs are tensors and the fourth a commit.

func encodeKinds(ks []Kind) string {
	b := make([]byte, len(ks))
	for i, k := range ks {
		b[i] = '0' + byte(k)
	}
	return string(b)
}

func decodeKinds(s string, n int) ([]Kind, error) {
	if len(s) != n {
		return nil, fmt.Errorf("%w: %d kinds for %d ids", ErrInvalid, len(s), n)
	}
	out := make([]Kind, n)
	for i := 0; i < n; i++ {
		k := Kind(s[i] - '0')
		if s[i] < '0' || !k.valid() {
			return nil, fmt.Errorf("%w: kind %q", ErrInvalid, s[i])
		}
		out[i] = k
	}
	return out, nil
}

func encodePresence(ps []Presence) string {
	b := make([]byte, len(ps))
	for i, p := range ps {
		b[i] = '0' + byte(p)
	}
	return string(b)
}

func decodePresence(s string, n int) ([]Presence, error) {
	if len(s) != n {
		return nil, fmt.Errorf("%w: %d presences for %d ids", ErrInvalid, len(s), n)
	}
	out := make([]Presence, n)
	for i := 0; i < n; i++ {
		if s[i] < '0' || s[i] > '2' {
			return nil, fmt.Errorf("%w: presence %q", ErrInvalid, s[i])
		}
		out[i] = Presence(s[i] - '0')
	}
	return out, nil
}

// JSON messages (see doc.go for the exchange).

type pushNegotiateRequest struct {
	New ID `json:"new"`
	// Old is the value the ref must have for the update to happen now (the zero
	// ID: it must not exist). Without it the server takes the current value and
	// requires New to fast-forward it unless Force.
	Old     *ID    `json:"old,omitempty"`
	Force   bool   `json:"force,omitempty"`
	Commits IDList `json:"commits"` // New and its ancestors, New first
}

type pushNegotiateResponse struct {
	Current ID     `json:"current"` // the ref's value when the request was handled (zero: none)
	Updated bool   `json:"updated"` // the ref points to New now
	Status  string `json:"status"`  // a presence per commit of the request
}

type haveRequest struct {
	Objects IDList `json:"objects"`
	Kinds   string `json:"kinds"`
}

type haveResponse struct {
	Status string `json:"status"`
}

type receiveResponse struct {
	Objects     int   `json:"objects"`
	New         int   `json:"new"`
	StoredBytes int64 `json:"stored_bytes"`
}

type updateRequest struct {
	Old   ID   `json:"old"` // zero: the ref must not exist
	New   ID   `json:"new"`
	Force bool `json:"force,omitempty"`
}

type updateResponse struct {
	Updated bool `json:"updated"`
}

type pullNegotiateResponse struct {
	Commit  ID     `json:"commit"`
	Commits IDList `json:"commits"` // Commit and its ancestors, Commit first
}

type treesRequest struct {
	Commits IDList `json:"commits"`
}

type treesResponse struct {
	Objects IDList `json:"objects"`
	Kinds   string `json:"kinds"`
}

type chunksRequest struct {
	Objects IDList `json:"objects"`
}

type chunksResponse struct {
	Chunks IDList `json:"chunks"`
	// Deltas lists, for each chunk stored as a delta, the chunk and its base:
	// pairs of IDs.
	Deltas IDList `json:"deltas"`
}

type objectsRequest struct {
	Objects IDList `json:"objects"`
}

type errorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// decodeJSON parses one JSON document of at most MaxJSONBody bytes into v,
// rejecting unknown fields and trailing data.
func decodeJSON(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxJSONBody+1))
	if err != nil {
		return fmt.Errorf("read message: %w", err)
	}
	if len(data) > MaxJSONBody {
		return fmt.Errorf("%w: message larger than %d bytes", ErrTooLarge, MaxJSONBody)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, ErrInvalid) {
			return err
		}
		return fmt.Errorf("%w: message: %v", ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the message", ErrInvalid)
	}
	return nil
}

// validRef checks the shape of a ref on the wire: NAME[:TAG], visible ASCII,
// at most 256 bytes. The store validates it fully.
func validRef(ref string) error {
	if ref == "" || len(ref) > 256 || strings.HasPrefix(ref, ":") {
		return fmt.Errorf("%w: ref %q", ErrInvalid, ref)
	}
	for i := 0; i < len(ref); i++ {
		if c := ref[i]; c <= 0x20 || c >= 0x7f {
			return fmt.Errorf("%w: ref %q", ErrInvalid, ref)
		}
	}
	return nil
}

// Namespace returns the namespace a ref belongs to for authorization: the part
// of its NAME before "/", or "*" for a NAME without one (only a grant on every
// namespace covers it).
func Namespace(ref string) string {
	name, _, _ := strings.Cut(ref, ":")
	ns, _, ok := strings.Cut(name, "/")
	if !ok || ns == "" {
		return "*"
	}
	return ns
}

// Object streams: the body of POST /heft/v1/push/objects and the response of
// POST /heft/v1/pull/objects.
//
//	stream = magic frame* end
//	magic  = "HEFTOBJ" 0x01 (version 1)
//	frame  = header (56 bytes) stored-bytes
//	header:
//	   0  32  object ID
//	  32   1  kind (1 chunk … 5 commit)
//	  33   1  codec (the store's codec id; 0x40 = delta chunk)
//	  34   2  reserved, zero
//	  36   4  stored length (u32), at most MaxObjectBytes
//	  40   8  raw (decoded) length (u64), at most MaxObjectBytes
//	  48   4  CRC-32C of the stored bytes
//	  52   4  CRC-32C of header bytes 0..52
//	end    = a header with kind 0, a zero ID, codec, stored length and CRC,
//	         and the number of objects in the stream as the raw length.
//
// Integers are little-endian. A stream that stops before its end header was cut:
// the objects before the cut are whole (each has its CRC) and may be kept.

const (
	streamMagic = "HEFTOBJ\x01"
	frameLen    = 56
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Object is an object in its stored form, as it moves on the wire.
type Object struct {
	ID     ID
	Kind   Kind
	Codec  uint8
	RawLen uint64
	// Base is the chunk a delta-coded chunk needs (zero otherwise). A store
	// sets it when it reads an object; it does not travel in frames (the
	// receiver reads it from the stored bytes).
	Base ID
	Data []byte
}

// frameSize is what an object adds to a stream.
func frameSize(storedLen int) int { return frameLen + storedLen }

// ObjectWriter writes an object stream.
type ObjectWriter struct {
	w       io.Writer
	n       uint64
	started bool
	hdr     [frameLen]byte
}

// NewObjectWriter returns a writer of an object stream to w.
func NewObjectWriter(w io.Writer) *ObjectWriter { return &ObjectWriter{w: w} }

func (ow *ObjectWriter) start() error {
	if ow.started {
		return nil
	}
	ow.started = true
	_, err := io.WriteString(ow.w, streamMagic)
	return err
}

// Write appends one object.
func (ow *ObjectWriter) Write(o Object) error {
	if !o.Kind.valid() || len(o.Data) > MaxObjectBytes || o.RawLen > MaxObjectBytes {
		return fmt.Errorf("%w: object %s (%s, %d bytes stored, %d raw) cannot be sent", ErrTooLarge, o.ID.Short(), o.Kind, len(o.Data), o.RawLen)
	}
	if err := ow.start(); err != nil {
		return err
	}
	putHeader(&ow.hdr, o.ID, o.Kind, o.Codec, uint32(len(o.Data)), o.RawLen, crc32.Checksum(o.Data, castagnoli))
	if _, err := ow.w.Write(ow.hdr[:]); err != nil {
		return err
	}
	if _, err := ow.w.Write(o.Data); err != nil {
		return err
	}
	ow.n++
	return nil
}

// Close writes the end of the stream (it does not close the underlying writer).
func (ow *ObjectWriter) Close() error {
	if err := ow.start(); err != nil {
		return err
	}
	putHeader(&ow.hdr, ID{}, 0, 0, 0, ow.n, 0)
	_, err := ow.w.Write(ow.hdr[:])
	return err
}

func putHeader(h *[frameLen]byte, id ID, kind Kind, codec uint8, storedLen uint32, rawLen uint64, crc uint32) {
	copy(h[:32], id[:])
	h[32] = byte(kind)
	h[33] = codec
	h[34], h[35] = 0, 0
	binary.LittleEndian.PutUint32(h[36:], storedLen)
	binary.LittleEndian.PutUint64(h[40:], rawLen)
	binary.LittleEndian.PutUint32(h[48:], crc)
	binary.LittleEndian.PutUint32(h[52:], crc32.Checksum(h[:52], castagnoli))
}

// ObjectReader reads an object stream, checking every header and CRC.
type ObjectReader struct {
	r       *bufio.Reader
	n       uint64
	started bool
	done    bool
	err     error
}

// NewObjectReader returns a reader of the object stream on r.
func NewObjectReader(r io.Reader) *ObjectReader {
	return &ObjectReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next object, with Data freshly allocated; io.EOF after a
// complete stream; io.ErrUnexpectedEOF (or the transport's error) when the
// stream was cut; an error wrapping ErrInvalid (or ErrTooLarge) when it is
// malformed. Errors are sticky.
func (or *ObjectReader) Next() (Object, error) {
	if or.err != nil {
		return Object{}, or.err
	}
	o, err := or.next()
	if err != nil {
		or.err = err
	}
	return o, err
}

// Count returns the number of objects read so far.
func (or *ObjectReader) Count() int { return int(or.n) }

func (or *ObjectReader) next() (Object, error) {
	if or.done {
		return Object{}, io.EOF
	}
	if !or.started {
		var m [len(streamMagic)]byte
		if _, err := io.ReadFull(or.r, m[:]); err != nil {
			return Object{}, cut(err)
		}
		if string(m[:]) != streamMagic {
			return Object{}, fmt.Errorf("%w: not an object stream (version 1)", ErrInvalid)
		}
		or.started = true
	}
	var h [frameLen]byte
	if _, err := io.ReadFull(or.r, h[:]); err != nil {
		return Object{}, cut(err)
	}
	if crc32.Checksum(h[:52], castagnoli) != binary.LittleEndian.Uint32(h[52:]) {
		return Object{}, fmt.Errorf("%w: frame %d: header fails its checksum", ErrInvalid, or.n)
	}
	var o Object
	copy(o.ID[:], h[:32])
	o.Kind = Kind(h[32])
	o.Codec = h[33]
	stored := binary.LittleEndian.Uint32(h[36:])
	o.RawLen = binary.LittleEndian.Uint64(h[40:])
	crc := binary.LittleEndian.Uint32(h[48:])
	if h[34] != 0 || h[35] != 0 {
		return Object{}, fmt.Errorf("%w: frame %d: reserved bytes set", ErrInvalid, or.n)
	}
	if o.Kind == 0 {
		if !o.ID.IsZero() || o.Codec != 0 || stored != 0 || crc != 0 || o.RawLen != or.n {
			return Object{}, fmt.Errorf("%w: malformed end of stream after %d objects", ErrInvalid, or.n)
		}
		or.done = true
		return Object{}, io.EOF
	}
	if !o.Kind.valid() {
		return Object{}, fmt.Errorf("%w: frame %d: unknown kind %d", ErrInvalid, or.n, o.Kind)
	}
	if stored > MaxObjectBytes || o.RawLen > MaxObjectBytes {
		return Object{}, fmt.Errorf("%w: frame %d: object of %d bytes (%d stored)", ErrTooLarge, or.n, o.RawLen, stored)
	}
	o.Data = make([]byte, stored)
	if _, err := io.ReadFull(or.r, o.Data); err != nil {
		return Object{}, cut(err)
	}
	if crc32.Checksum(o.Data, castagnoli) != crc {
		return Object{}, fmt.Errorf("%w: object %s: stored bytes fail their checksum", ErrInvalid, o.ID.Short())
	}
	or.n++
	return o, nil
}

// cut turns a clean EOF inside a stream into io.ErrUnexpectedEOF.
func cut(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
