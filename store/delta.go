package store

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/heft-dev/heft/codec/chunkcodec"
)

// Delta chunks. A fine-tune changes most values of a tensor only slightly, so the XOR
// of its bytes with the base tensor's bytes is mostly zero in the high (sign and
// exponent) byte planes and compresses far better than the values themselves
// (ZipLLM's BitX). A delta chunk keeps its identity (the BLAKE3 of its own decoded
// bytes), so dedup, verify and export see an ordinary chunk; only its stored form
// differs:
//
//	stored = version u8 (1) | base chunk ID [32] | inner codec u8 | inner-coded XOR
//
// and its index codec is codecDelta. Chains are one level deep: a delta's base is
// never itself a delta (an import against a delta-stored model uses that model's own
// base chunk), so decoding reads at most two chunks. gc keeps every base a live
// delta names (gc.go), so deleting the base model never breaks the tuned one.

const (
	codecDelta        uint8 = 0x40
	deltaVersion      uint8 = 1
	deltaPayloadStart       = 1 + 32 + 1
	// deltaAccept: a delta that stores at most this share of the raw bytes is kept
	// without trying the plain codec, since plain coding of trained float weights
	// does not get below about 0.6 (the order-0 entropy bound of the exponent).
	deltaAccept = 0.5
)

// parseDeltaHeader returns the base chunk ID and inner codec of a delta payload.
func parseDeltaHeader(stored []byte) (ID, chunkcodec.ID, error) {
	if len(stored) < deltaPayloadStart || stored[0] != deltaVersion {
		return ID{}, 0, fmt.Errorf("malformed delta payload (%d bytes)", len(stored))
	}
	var base ID
	copy(base[:], stored[1:33])
	return base, chunkcodec.ID(stored[33]), nil
}

// xorInto sets dst[i] = a[i] ^ b[i]; the slices have equal length.
func xorInto(dst, a, b []byte) {
	i := 0
	for ; i+8 <= len(a); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(a[i:])^binary.LittleEndian.Uint64(b[i:]))
	}
	for ; i < len(a); i++ {
		dst[i] = a[i] ^ b[i]
	}
}

// decodeDelta turns a delta payload back into the chunk's bytes, reading the base.
func (s *Store) decodeDelta(id ID, loc Location, stored, dst []byte) ([]byte, error) {
	base, inner, err := parseDeltaHeader(stored)
	if err != nil {
		return dst, err
	}
	baseLoc, ok, err := s.locate(base)
	if err != nil {
		return dst, err
	}
	if !ok {
		return dst, fmt.Errorf("delta base chunk %s is missing from the index", base.Short())
	}
	if baseLoc.Codec == codecDelta || baseLoc.RawLen != loc.RawLen {
		return dst, fmt.Errorf("delta base chunk %s is not a plain chunk of %d bytes", base.Short(), loc.RawLen)
	}
	baseData, err := s.readLocated(base, baseLoc, nil)
	if err != nil {
		return dst, fmt.Errorf("delta base: %w", err)
	}
	xor, err := chunkcodec.Decode(inner, dst, stored[deltaPayloadStart:], int(loc.RawLen))
	if err != nil {
		return dst, err
	}
	xorInto(xor, xor, baseData)
	return xor, nil
}

// deltaBase reads the base ID named by a delta-stored object.
func (s *Store) deltaBase(id ID, loc Location) (ID, error) {
	f, where, remote, err := s.packReader(loc.Pack)
	if err != nil {
		return ID{}, err
	}
	head := make([]byte, deltaPayloadStart)
	if loc.StoredLen < deltaPayloadStart {
		return ID{}, &IntegrityError{ID: id, Kind: loc.Kind, Pack: where, Reason: "delta payload too short"}
	}
	if _, err := f.ReadAt(head, int64(loc.Offset)); err != nil {
		if remote {
			return ID{}, s.remoteReadError(id, loc.Kind, where, err)
		}
		return ID{}, fmt.Errorf("read delta header of %s: %w", id.Short(), err)
	}
	base, _, err := parseDeltaHeader(head)
	if err != nil {
		return ID{}, &IntegrityError{ID: id, Kind: loc.Kind, Pack: where, Err: err}
	}
	return base, nil
}

// deltaBase is a plain base chunk that new chunks may be XOR-coded against.
type deltaBaseChunk struct {
	id  ID
	loc Location
}

// deltaBases resolves the base chunks named by the missing units: each must be
// indexed and plain; a base that is itself a delta is replaced by its own base (the
// root), which keeps chains one level deep. Units whose base cannot be used are
// simply stored plain. The result is keyed by the base the unit named.
func (sess *session) deltaBases(units []unit, missing []int) (map[ID]deltaBaseChunk, error) {
	var want []ID
	seen := map[ID]bool{}
	for _, i := range missing {
		if b := units[i].base; !b.IsZero() && !seen[b] {
			seen[b] = true
			want = append(want, b)
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	locs, err := sess.s.idx.lookup(want)
	if err != nil {
		return nil, err
	}
	out := make(map[ID]deltaBaseChunk, len(locs))
	for named, loc := range locs {
		id := named
		if loc.Codec == codecDelta {
			root, err := sess.s.deltaBase(named, loc)
			if err != nil {
				continue
			}
			rootLoc, ok, err := sess.s.locate(root)
			if err != nil {
				return nil, err
			}
			if !ok || rootLoc.Codec == codecDelta {
				continue
			}
			id, loc = root, rootLoc
		}
		out[named] = deltaBaseChunk{id: id, loc: loc}
	}
	return out, nil
}

var (
	xorPool       = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}
	decodeBufPool = sync.Pool{New: func() any { return new([]byte) }}
)

// encodeDelta codes data as its XOR with the base chunk when that is smaller than
// coding data alone. The caller accounts for the result.
func (sess *session) encodeDelta(id ID, data []byte, hint chunkcodec.Hint, base deltaBaseChunk) (writeReq, error) {
	if base.loc.RawLen != uint64(len(data)) || len(data) == 0 {
		return sess.encode(id, KindChunk, data, hint)
	}
	bp := decodeBufPool.Get().(*[]byte)
	defer decodeBufPool.Put(bp)
	baseData, err := sess.s.readLocated(base.id, base.loc, (*bp)[:0])
	*bp = baseData[:0]
	if err != nil {
		return writeReq{}, fmt.Errorf("read delta base %s: %w", base.id.Short(), err)
	}
	xp := xorPool.Get().(*[]byte)
	defer xorPool.Put(xp)
	xor := append((*xp)[:0], data...)
	*xp = xor
	xorInto(xor, data, baseData)

	out := storedPool.Get().(*[]byte)
	inner, enc, err := chunkcodec.Encode((*out)[:0], xor, hint)
	if err != nil {
		storedPool.Put(out)
		return writeReq{}, fmt.Errorf("compress delta of chunk %s: %w", id.Short(), err)
	}
	payload := make([]byte, deltaPayloadStart, deltaPayloadStart+len(enc))
	payload[0] = deltaVersion
	copy(payload[1:33], base.id[:])
	payload[33] = uint8(inner)
	payload = append(payload, enc...)
	*out = enc[:0]
	storedPool.Put(out)

	if float64(len(payload)) > deltaAccept*float64(len(data)) {
		plain, err := sess.encode(id, KindChunk, data, hint)
		if err != nil || len(*plain.stored) <= len(payload) {
			return plain, err
		}
		storedPool.Put(plain.stored)
	}
	return writeReq{id: id, kind: KindChunk, codec: codecDelta, rawLen: uint64(len(data)), stored: &payload}, nil
}
