package chunkcodec

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/klauspost/compress/fse"
	"github.com/klauspost/compress/huff0"
)

// ByteGrouped frame constants; the layout is described in doc.go.
const (
	bgVersion = 1

	// bgBlockLog sets 128 Ki elements per block: with four streams of 32 Ki
	// symbols of at most 11 bits a stream is at most 45,057 bytes, inside
	// the uint16 jump table, and a block of every plane fits in L2 while
	// it is merged.
	bgBlockLog    = 17
	bgMinBlockLog = 8
	bgMaxBlockLog = 17

	flagRotate = 1

	planeRaw   = 0
	planeConst = 1
	planeCoded = 2

	blockRaw   = 0
	blockConst = 1
	blockHuff  = 2
	blockZstd  = 3

	descSize    = 5 // mode byte + uint32
	blockHdrLen = 4 // mode byte + uint24 length, for blockHuff and blockZstd
	maxBlockLen = 1<<24 - 1
)

// Plane decisions. Entropies are in bits per byte.
const (
	// candidateBits: a plane whose sampled entropy is above this is stored
	// raw without a histogram of the whole plane. The mantissa planes of
	// trained weights sample at 7.9-8.0 bits and would save at most 1-2 %
	// at the cost of a Huffman pass on every read.
	candidateBits = 7.75

	// A coded plane must save at least 1/minPlaneGain of its size, or its
	// blocks are stored raw.
	minPlaneGain = 32

	// zstdExcessBits: when Huffman codes (at least 1 bit per byte) are
	// this much longer on average than the plane's entropy, the plane is
	// dominated by one value (padding, pruned or upcast weights) and zstd,
	// which codes runs, is used for its blocks instead.
	zstdExcessBits = 0.35
)

type bgEncoder struct {
	planes [8][]byte
	ht     huffTable
	et     encTable
	pt     *pairTable
	// pairCounts is scratch for histogramPairs.
	pairCounts *[1 << 16]uint32
	hs         huff0.Scratch
	fs         fse.Scratch
}

var bgEncoders = sync.Pool{New: func() any { return new(bgEncoder) }}

type bgDecoder struct {
	planes [8][]byte
	dt     [8]*decTable
	ht     huffTable
	fs     fse.Scratch
}

var bgDecoders = sync.Pool{New: func() any { return new(bgDecoder) }}

// buf returns a scratch buffer of n bytes for plane p.
func buf(b *[8][]byte, p, n int) []byte {
	if cap(b[p]) < n {
		b[p] = make([]byte, n)
	}
	return b[p][:n]
}

func layout(h Hint) (e int, rotate bool) {
	e = max(h.ElemBytes, 1)
	return e, h.Float && e >= 2
}

// encodeByteGrouped appends the ByteGrouped frame of src to dst. st, if not
// nil, holds samplePlanes(src) already computed by the caller.
func encodeByteGrouped(dst, src []byte, h Hint, st *planeStats) ([]byte, error) {
	e, rotate := layout(h)
	n := len(src) / e
	if st == nil {
		s := samplePlanes(src, e, rotate)
		st = &s
	}

	// Planes judged incompressible from the sample are raw and come first
	// in the frame, so they can be split straight into dst.
	var mode [8]byte
	nraw := 0
	for p := range e {
		if n >= minHuffBlock && st.bits[p] <= candidateBits {
			mode[p] = planeCoded
		} else {
			mode[p] = planeRaw
			nraw++
		}
	}
	nblocks := (n + 1<<bgBlockLog - 1) >> bgBlockLog
	bound := 4 + binary.MaxVarintLen64 + descSize*e + len(src) +
		(e-nraw)*(2+256+nblocks*blockHdrLen) + 2*min(n, 1<<bgBlockLog) + 64
	if cap(dst) < bound {
		dst = make([]byte, 0, bound)
	}
	flags := byte(0)
	if rotate {
		flags |= flagRotate
	}
	dst = append(dst[:0], bgVersion, byte(e), flags, bgBlockLog)
	dst = binary.AppendUvarint(dst, uint64(len(src)))
	descAt := len(dst)
	dst = dst[:descAt+descSize*e]
	clear(dst[descAt:])
	rawAt := len(dst)
	dst = dst[:rawAt+nraw*n]

	enc := bgEncoders.Get().(*bgEncoder)
	defer bgEncoders.Put(enc)
	var planes [8][]byte
	r := 0
	for p := range e {
		switch {
		case mode[p] == planeRaw:
			planes[p] = dst[rawAt+r*n : rawAt+(r+1)*n]
			r++
		case e == 1:
			// A single coded plane is src itself.
			planes[p] = src[:n]
		default:
			planes[p] = buf(&enc.planes, p, n)
		}
	}
	if e > 1 || mode[0] == planeRaw {
		splitPlanes(src[:n*e], e, &planes, rotate)
	}
	for p := range e {
		if mode[p] != planeCoded {
			continue
		}
		// Counting in the split loop measured slower than this separate
		// pass: Go spills the byte indexes when both share a loop.
		var hist [256]uint32
		if n >= minPairHistogram {
			if enc.pairCounts == nil {
				enc.pairCounts = new([1 << 16]uint32)
			}
			histogramPairs(&hist, enc.pairCounts, planes[p])
		} else {
			histogram(&hist, planes[p])
		}
		var err error
		if dst, err = enc.codePlane(dst, planes[p], &hist, descAt+p*descSize); err != nil {
			return nil, err
		}
	}
	return append(dst, src[n*e:]...), nil
}

// codePlane appends the data of a coded plane with histogram hist to dst
// and fills in its descriptor at dst[desc:].
func (enc *bgEncoder) codePlane(dst, plane []byte, hist *[256]uint32, desc int) ([]byte, error) {
	n := len(plane)
	maxCount := uint32(0)
	for s, c := range hist {
		if int(c) == n {
			dst[desc] = planeConst
			binary.LittleEndian.PutUint32(dst[desc+1:], uint32(s))
			return dst, nil
		}
		maxCount = max(maxCount, c)
	}

	const (
		useRaw = iota
		useHuff
		useZstd
	)
	start := len(dst)
	nblocks := (n + 1<<bgBlockLog - 1) >> bgBlockLog
	overhead := nblocks * blockHdrLen
	dst = append(dst, 1) // table present
	tableAt := len(dst)
	ent := entropy(hist, n)
	zstdOK := ent*float64(n)/8+float64(overhead) <= float64(n-n/minPlaneGain)
	use := useRaw
	// buildTable fails only where huff0 cannot describe the table (more
	// than 128 symbols whose weights FSE cannot compress); such a plane is
	// close to random and the zstd estimate decides.
	if out, err := buildTable(dst, &enc.ht, hist, &enc.hs, &enc.fs); err == nil {
		dst = out
		bitsTotal := enc.ht.cost(hist)
		excess := float64(bitsTotal)/float64(n) - ent
		switch {
		case excess > zstdExcessBits && zstdOK:
			use = useZstd
		case int(bitsTotal/8)+len(dst)-tableAt+overhead <= n-n/minPlaneGain:
			use = useHuff
		}
	} else if zstdOK {
		use = useZstd
	}
	var pairs *pairTable
	if use != useHuff {
		dst = append(dst[:tableAt-1], 0) // no table
	} else {
		enc.ht.encTable(&enc.et)
		if k := enc.et.symbols(); k*k*minPairRatio <= n {
			if enc.pt == nil {
				enc.pt = new(pairTable)
			}
			enc.et.fillPairs(enc.pt)
			pairs = enc.pt
		}
	}

	for j := 0; j < n; j += 1 << bgBlockLog {
		blk := plane[j:min(j+1<<bgBlockLog, n)]
		m := len(blk)
		if use != useRaw && (use == useZstd || int(maxCount) >= m) && allSame(blk) {
			dst = append(dst, blockConst, blk[0])
			continue
		}
		at := len(dst)
		switch {
		case use == useHuff && m >= minHuffBlock:
			dst = append(dst, blockHuff, 0, 0, 0)
			dst = encode4X(dst, blk, &enc.et, pairs)
		case use == useZstd:
			dst = append(dst, blockZstd, 0, 0, 0)
			dst = zstdEncode(dst, blk)
		}
		if l := len(dst) - at - blockHdrLen; len(dst) > at && l < m {
			putUint24(dst[at+1:], l)
			continue
		}
		dst = append(append(dst[:at], blockRaw), blk...)
	}
	dst[desc] = planeCoded
	l := len(dst) - start
	if l > math.MaxUint32 {
		return nil, fmt.Errorf("chunkcodec: plane of %d bytes too large", l)
	}
	binary.LittleEndian.PutUint32(dst[desc+1:], uint32(l))
	return dst, nil
}

func putUint24(b []byte, v int) {
	_ = b[2]
	b[0], b[1], b[2] = byte(v), byte(v>>8), byte(v>>16)
}

func uint24(b []byte) int {
	_ = b[2]
	return int(b[0]) | int(b[1])<<8 | int(b[2])<<16
}

// allSame reports whether every byte of b equals b[0].
func allSame(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	w := uint64(b[0]) * lo1
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:]) != w {
			return false
		}
	}
	for ; i < len(b); i++ {
		if b[i] != b[0] {
			return false
		}
	}
	return true
}

// decodeByteGrouped decodes the frame src into dst, which has the length
// the caller declared.
func decodeByteGrouped(dst, src []byte) error {
	rawLen := len(dst)
	if len(src) < 5 {
		return corrupt("bytegrouped frame too short")
	}
	if src[0] != bgVersion {
		return corrupt(fmt.Sprintf("bytegrouped version %d", src[0]))
	}
	e := int(src[1])
	if e != 1 && e != 2 && e != 4 && e != 8 {
		return corrupt(fmt.Sprintf("bytegrouped element size %d", e))
	}
	flags := src[2]
	if flags&^flagRotate != 0 || (flags&flagRotate != 0 && e < 2) {
		return corrupt(fmt.Sprintf("bytegrouped flags %#x", flags))
	}
	rotate := flags&flagRotate != 0
	blockLog := int(src[3])
	if blockLog < bgMinBlockLog || blockLog > bgMaxBlockLog {
		return corrupt(fmt.Sprintf("bytegrouped block log %d", blockLog))
	}
	rl, k := binary.Uvarint(src[4:])
	if k <= 0 || rl != uint64(rawLen) {
		return corrupt(fmt.Sprintf("bytegrouped raw length %d, want %d", rl, rawLen))
	}
	pos := 4 + k
	if len(src)-pos < descSize*e {
		return corrupt("bytegrouped descriptors truncated")
	}
	n := rawLen / e
	tail := rawLen - n*e

	var mode [8]byte
	var val [8]int
	var rawIndex [8]int
	nraw := 0
	for p := range e {
		d := src[pos+p*descSize:]
		mode[p] = d[0]
		val[p] = int(binary.LittleEndian.Uint32(d[1:]))
		switch {
		case mode[p] == planeRaw && val[p] == 0:
			rawIndex[p] = nraw
			nraw++
		case mode[p] == planeConst && val[p] <= 255:
		case mode[p] == planeCoded && val[p] > 0:
		default:
			return corrupt(fmt.Sprintf("bytegrouped plane %d descriptor %d/%d", p, mode[p], val[p]))
		}
	}
	pos += descSize * e
	rawAt := pos
	if nraw*n > len(src)-pos {
		return corrupt("bytegrouped raw planes truncated")
	}
	pos += nraw * n
	var cur, end [8]int
	for p := range e {
		if mode[p] != planeCoded {
			continue
		}
		if val[p] > len(src)-pos {
			return corrupt("bytegrouped coded plane truncated")
		}
		cur[p], end[p] = pos, pos+val[p]
		pos = end[p]
	}
	if pos+tail != len(src) {
		return corrupt(fmt.Sprintf("bytegrouped frame is %d bytes, layout needs %d", len(src), pos+tail))
	}

	dec := bgDecoders.Get().(*bgDecoder)
	defer bgDecoders.Put(dec)
	blockSize := 1 << blockLog
	bufLen := min(blockSize, n)
	var hasTable [8]bool
	for p := range e {
		switch mode[p] {
		case planeCoded:
			switch src[cur[p]] {
			case 0:
			case 1:
				k, err := parseTable(&dec.ht, src[cur[p]+1:end[p]], &dec.fs)
				if err != nil {
					return err
				}
				cur[p] += k
				if dec.dt[p] == nil {
					dec.dt[p] = new(decTable)
				}
				dec.ht.decTable(dec.dt[p])
				hasTable[p] = true
			default:
				return corrupt("bytegrouped table flag")
			}
			cur[p]++
		case planeConst:
			b := buf(&dec.planes, p, bufLen)
			for i := range b {
				b[i] = byte(val[p])
			}
		}
	}

	var planes [8][]byte
	for j := 0; j < n; j += blockSize {
		m := min(blockSize, n-j)
		out := dst[j*e : (j+m)*e]
		for p := range e {
			switch mode[p] {
			case planeRaw:
				at := rawAt + rawIndex[p]*n + j
				planes[p] = src[at : at+m]
				continue
			case planeConst:
				planes[p] = dec.planes[p][:m]
				continue
			}
			// A single plane decodes straight into dst.
			var pb []byte
			if e == 1 {
				pb = out
			} else {
				pb = buf(&dec.planes, p, bufLen)[:m]
			}
			c := cur[p]
			if c >= end[p] {
				return corrupt("bytegrouped plane data truncated")
			}
			switch src[c] {
			case blockRaw:
				if m > end[p]-c-1 {
					return corrupt("bytegrouped raw block truncated")
				}
				planes[p] = src[c+1 : c+1+m]
				cur[p] = c + 1 + m
				continue
			case blockConst:
				if end[p]-c < 2 {
					return corrupt("bytegrouped const block truncated")
				}
				for i := range pb {
					pb[i] = src[c+1]
				}
				cur[p] = c + 2
			case blockHuff, blockZstd:
				if end[p]-c < blockHdrLen {
					return corrupt("bytegrouped block header truncated")
				}
				l := uint24(src[c+1:])
				if l > end[p]-c-blockHdrLen {
					return corrupt("bytegrouped block truncated")
				}
				payload := src[c+blockHdrLen : c+blockHdrLen+l]
				cur[p] = c + blockHdrLen + l
				var err error
				if src[c] == blockHuff {
					if !hasTable[p] {
						return corrupt("bytegrouped huffman block without a table")
					}
					err = decode4X(pb, payload, dec.dt[p])
				} else {
					err = zstdDecode(pb, payload)
				}
				if err != nil {
					return err
				}
			default:
				return corrupt(fmt.Sprintf("bytegrouped block mode %d", src[c]))
			}
			planes[p] = pb
		}
		if e == 1 && len(out) > 0 && &planes[0][0] == &out[0] {
			continue
		}
		mergePlanes(out, e, &planes, rotate)
	}
	for p := range e {
		if mode[p] == planeCoded && cur[p] != end[p] {
			return corrupt(fmt.Sprintf("bytegrouped plane %d has %d bytes left over", p, end[p]-cur[p]))
		}
	}
	copy(dst[n*e:], src[len(src)-tail:])
	return nil
}

// planeStats holds the sampled entropy of each plane in bits per byte.
type planeStats struct {
	bits [8]float64
}

// Sampling: 16 windows of 256 elements spread evenly over the chunk. A
// window rather than single elements keeps the reads sequential; 4096
// samples put the entropy estimate within about 0.05 bits of the plane's.
const (
	sampleWindows = 16
	sampleWindow  = 256
)

// samplePlanes estimates the entropy of each plane of src from a sample.
func samplePlanes(src []byte, e int, rotate bool) planeStats {
	n := len(src) / e
	var st planeStats
	if n == 0 {
		for p := range st.bits {
			st.bits[p] = 8
		}
		return st
	}
	var hist [8][256]uint32
	add := func(i0, cnt int) {
		for i := i0; i < i0+cnt; i++ {
			el := src[i*e : i*e+e]
			for p, b := range el {
				hist[p][b]++
			}
			if rotate {
				v := uint16(el[e-2]) | uint16(el[e-1])<<8
				v = v<<1 | v>>15
				hist[e-2][el[e-2]]--
				hist[e-1][el[e-1]]--
				hist[e-2][byte(v)]++
				hist[e-1][byte(v>>8)]++
			}
		}
	}
	total := n
	if n <= sampleWindows*sampleWindow {
		add(0, n)
	} else {
		total = sampleWindows * sampleWindow
		for w := range sampleWindows {
			add(w*(n-sampleWindow)/(sampleWindows-1), sampleWindow)
		}
	}
	for p := range e {
		st.bits[p] = entropy(&hist[p], total)
	}
	return st
}

// entropy returns the order-0 entropy in bits per byte of a histogram of
// total bytes.
func entropy(h *[256]uint32, total int) float64 {
	if total == 0 {
		return 0
	}
	t := float64(total)
	var s float64
	for _, c := range h {
		if c != 0 {
			f := float64(c)
			s += f * math.Log2(f)
		}
	}
	return math.Log2(t) - s/t
}
