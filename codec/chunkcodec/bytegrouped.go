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
	// bgVersion is the version the encoder writes. Frames of version 1
	// (bgVersion1: one block size and one Huffman table per plane) still
	// decode.
	bgVersion  = 2
	bgVersion1 = 1

	// bgBlockLog sets 128 Ki elements per block: with four streams of 32 Ki
	// symbols of at most 11 bits a stream is at most 45,057 bytes, inside
	// the uint16 jump table, and a block of every plane fits in L2 while
	// it is merged. bgFineLog, 16 Ki, is the block of planes whose blocks
	// differ in kind (see plan.go).
	bgBlockLog    = 17
	bgFineLog     = 14
	bgMaxBlockLog = 17
	// The smallest block log a frame may have: 8 in version 1; in version
	// 2, where every block may bring a table (about 7 µs to set up, the
	// time to decode some 12 Ki symbols), 14.
	bgMinBlockLog1 = 8
	bgMinBlockLog  = bgFineLog

	flagRotate = 1

	planeRaw   = 0
	planeConst = 1
	planeCoded = 2

	blockRaw   = 0
	blockConst = 1
	blockHuff  = 2 // Huffman with the plane's current table
	blockZstd  = 3
	blockTable = 4 // version 2: a new table, then Huffman with it

	descSize    = 5 // mode byte + uint32
	blockHdrLen = 4 // mode byte + uint24 length, for blockHuff, blockZstd, blockTable
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
	// pairCounts is scratch for histBlocks.
	pairCounts *[1 << 16]uint32
	hs         huff0.Scratch
	fs         fse.Scratch
	// Planning scratch, per entry of planLogs: the histograms of a plane's
	// blocks of that size, and the plan and runs made of them.
	levels [len(planLogs)]planLevel
	// table is the description of the table being coded with.
	table []byte
}

var bgEncoders = sync.Pool{New: func() any { return new(bgEncoder) }}

// planLogs are the block logs a plane is planned with, coarsest first,
// bgFineLog last: the plane is cut with the one that gives the smallest
// plan (see plan.go).
var planLogs = [...]int{bgBlockLog, bgFineLog}

type planLevel struct {
	hists [][256]uint32
	plan  []int32
	runs  []bgRun
}

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

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
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
		(e-nraw)*(1+nblocks*(blockHdrLen+64)) + 2*min(n, 1<<bgBlockLog) + 64
	if cap(dst) < bound {
		dst = make([]byte, 0, bound)
	}
	flags := byte(0)
	if rotate {
		flags |= flagRotate
	}
	dst = append(dst[:0], bgVersion, byte(e), flags, 0)
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
		var err error
		if dst, err = enc.codePlane(dst, planes[p], descAt+p*descSize, &st.seen[p]); err != nil {
			return nil, err
		}
	}
	return append(dst, src[n*e:]...), nil
}

// codePlane appends the data of a coded plane to dst and fills in its
// descriptor at dst[desc:]. seen has the byte values seen in the plane's
// sample.
func (enc *bgEncoder) codePlane(dst, plane []byte, desc int, seen *[4]uint64) ([]byte, error) {
	n := len(plane)
	// The histograms of the finest blocks are counted, and summed into
	// those of the coarser ones.
	fine := &enc.levels[len(planLogs)-1]
	nfine := (n + 1<<bgFineLog - 1) >> bgFineLog
	ncoarse := (n + 1<<bgBlockLog - 1) >> bgBlockLog
	fine.hists = grow(fine.hists, nfine)
	var hist [256]uint32
	if enc.pairCounts == nil {
		enc.pairCounts = new([1 << 16]uint32)
	}
	histBlocks(fine.hists, &hist, plane, bgFineLog, enc.pairCounts, seen)
	var symBuf [256]byte
	syms := symBuf[:0]
	maxCount := uint32(0)
	for s, c := range hist {
		if c != 0 {
			syms = append(syms, byte(s))
			maxCount = max(maxCount, c)
		}
	}
	if len(syms) == 1 {
		dst[desc] = planeConst
		binary.LittleEndian.PutUint32(dst[desc+1:], uint32(syms[0]))
		return dst, nil
	}
	for k := range len(planLogs) - 1 {
		lv := &enc.levels[k]
		sh := planLogs[k] - bgFineLog
		lv.hists = grow(lv.hists, (n+1<<planLogs[k]-1)>>planLogs[k])
		for i := range lv.hists {
			h := &lv.hists[i]
			*h = fine.hists[i<<sh]
			for _, f := range fine.hists[i<<sh+1 : min((i+1)<<sh, nfine)] {
				for s, c := range f {
					h[s] += c
				}
			}
		}
	}
	coarse := &enc.levels[0]

	start := len(dst)
	dst[desc] = planeCoded
	ent := entropy(&hist, n)
	limit := float64(n - n/minPlaneGain)
	zstdOK := ent*float64(n)/8+float64(ncoarse*blockHdrLen) <= limit
	// A plane dominated by one value: see zstdExcessBits. A Huffman code
	// exceeds the entropy by at most p + 0.086 bits, p the probability of
	// the most frequent symbol (Gallager, 1978), so below 1/4 it need not
	// be built. buildTable fails only where huff0 cannot describe the
	// table (more than 128 symbols whose weights FSE cannot compress); such
	// a plane is close to random and the zstd estimate decides.
	useZstd := false
	if maxCount >= uint32(n/4) {
		if tb, err := buildTable(enc.table[:0], &enc.ht, &hist, &enc.hs, &enc.fs); err == nil {
			enc.table = tb
			excess := float64(enc.ht.cost(&hist))/float64(n) - ent
			useZstd = excess > zstdExcessBits && zstdOK
		} else {
			useZstd = zstdOK
		}
	}
	if useZstd {
		dst = append(dst, bgBlockLog)
		for j := 0; j < n; j += 1 << bgBlockLog {
			blk := plane[j:min(j+1<<bgBlockLog, n)]
			if h := &coarse.hists[j>>bgBlockLog]; int(h[blk[0]]) == len(blk) {
				dst = append(dst, blockConst, blk[0])
				continue
			}
			at := len(dst)
			dst = zstdEncode(append(dst, blockZstd, 0, 0, 0), blk)
			if l := len(dst) - at - blockHdrLen; l < len(blk) {
				putUint24(dst[at+1:], l)
				continue
			}
			dst = append(append(dst[:at], blockRaw), blk...)
		}
	} else {
		est := math.Inf(1)
		var blockLog int
		var plan []int32
		var runs []bgRun
		for k, lg := range planLogs {
			if k > 0 && n <= 1<<lg {
				break // one block, as at the coarser level
			}
			lv := &enc.levels[k]
			var e float64
			e, lv.plan, lv.runs = planBlocks(lv.hists, 1<<lg, n, syms, lv.plan, lv.runs)
			if lg < bgBlockLog {
				for _, r := range lv.plan {
					if r >= 0 {
						e += fineBlockPenalty
					}
				}
			}
			if e < est {
				est, blockLog, plan, runs = e, lg, lv.plan, lv.runs
			}
		}
		if est > limit {
			// Not worth decoding: the blocks are stored raw.
			for i, r := range plan {
				if r >= 0 {
					plan[i] = planBlockRaw
				}
			}
		}
		dst = enc.huffBlocks(append(dst, byte(blockLog)), plane, blockLog, plan, runs)
	}
	l := len(dst) - start
	if l > math.MaxUint32 {
		return nil, fmt.Errorf("chunkcodec: plane of %d bytes too large", l)
	}
	binary.LittleEndian.PutUint32(dst[desc+1:], uint32(l))
	return dst, nil
}

// huffBlocks appends the blocks of plane, of 2^blockLog symbols, as plan
// says. A run's table goes with the first of its blocks that Huffman
// coding shrinks; blocks it does not are stored raw. The blocks of a run
// whose table huff0 cannot describe get zstd, or are raw.
func (enc *bgEncoder) huffBlocks(dst, plane []byte, blockLog int, plan []int32, runs []bgRun) []byte {
	n := len(plane)
	cur := int32(-1) // the run whose table enc.ht holds
	sent := false    // whether that table is in the frame
	ok := false      // whether that table could be built
	var pt *pairTable
	for i, r := range plan {
		j := i << blockLog
		blk := plane[j:min(j+1<<blockLog, n)]
		m := len(blk)
		if r == planBlockConst && allSame(blk) {
			dst = append(dst, blockConst, blk[0])
			continue
		}
		if r != cur && r >= 0 {
			cur, sent = r, false
			var err error
			enc.table, err = buildTable(enc.table[:0], &enc.ht, &runs[r].hist, &enc.hs, &enc.fs)
			ok = err == nil
			pt = nil
			if ok {
				enc.ht.encTable(&enc.et)
				if k := enc.et.symbols(); k*k*minPairRatio <= runs[r].n {
					if enc.pt == nil {
						enc.pt = new(pairTable)
					}
					enc.et.fillPairs(enc.pt)
					pt = enc.pt
				}
			}
		}
		if r >= 0 {
			at := len(dst)
			switch {
			case !ok:
				// huff0 cannot describe the table (see codePlane).
				dst = zstdEncode(append(dst, blockZstd, 0, 0, 0), blk)
			case sent:
				dst = encode4X(append(dst, blockHuff, 0, 0, 0), blk, &enc.et, pt)
			default:
				dst = append(append(dst, blockTable, 0, 0, 0), enc.table...)
				dst = encode4X(dst, blk, &enc.et, pt)
			}
			if l := len(dst) - at - blockHdrLen; l+blockHdrLen < 1+m {
				putUint24(dst[at+1:], l)
				sent = sent || ok
				continue
			}
			dst = dst[:at]
		}
		dst = append(append(dst, blockRaw), blk...)
	}
	return dst
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
	version := src[0]
	if version != bgVersion && version != bgVersion1 {
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
	// Version 1 has one block log for the frame; version 2 has one per
	// coded plane and 0 here.
	frameLog := int(src[3])
	if version == bgVersion1 && (frameLog < bgMinBlockLog1 || frameLog > bgMaxBlockLog) ||
		version != bgVersion1 && frameLog != 0 {
		return corrupt(fmt.Sprintf("bytegrouped block log %d", frameLog))
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
	// Each coded plane's block log; planes are merged in steps of the
	// smallest, within which every plane's bytes are contiguous.
	var blockLog [8]int
	stepLog := bgMaxBlockLog
	if version == bgVersion1 {
		stepLog = frameLog
	}
	var hasTable [8]bool
	for p := range e {
		if mode[p] != planeCoded {
			continue
		}
		c := cur[p] // end[p] > c: val[p] > 0
		if version == bgVersion1 {
			blockLog[p] = frameLog
			switch src[c] {
			case 0:
			case 1:
				k, err := parseTable(&dec.ht, src[c+1:end[p]], &dec.fs)
				if err != nil {
					return err
				}
				c += k
				if dec.dt[p] == nil {
					dec.dt[p] = new(decTable)
				}
				dec.ht.decTable(dec.dt[p])
				hasTable[p] = true
			default:
				return corrupt("bytegrouped table flag")
			}
		} else {
			blockLog[p] = int(src[c])
			if blockLog[p] < bgMinBlockLog || blockLog[p] > bgMaxBlockLog {
				return corrupt(fmt.Sprintf("bytegrouped plane %d block log %d", p, blockLog[p]))
			}
			stepLog = min(stepLog, blockLog[p])
		}
		cur[p] = c + 1
	}
	step := 1 << stepLog
	for p := range e {
		if mode[p] == planeConst {
			b := buf(&dec.planes, p, min(step, n))
			for i := range b {
				b[i] = byte(val[p])
			}
		}
	}

	// blk[p] is the current block of coded plane p.
	var planes, blk [8][]byte
	for j := 0; j < n; j += step {
		m := min(step, n-j)
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
			bs := 1 << blockLog[p]
			off := j & (bs - 1)
			if off != 0 {
				planes[p] = blk[p][off : off+m]
				continue
			}
			mb := min(bs, n-j)
			// A single plane decodes straight into dst.
			var pb []byte
			if e == 1 {
				pb = out
			} else {
				pb = buf(&dec.planes, p, min(bs, n))[:mb]
			}
			c := cur[p]
			if c >= end[p] {
				return corrupt("bytegrouped plane data truncated")
			}
			switch bm := src[c]; bm {
			case blockRaw:
				if mb > end[p]-c-1 {
					return corrupt("bytegrouped raw block truncated")
				}
				pb = src[c+1 : c+1+mb]
				cur[p] = c + 1 + mb
			case blockConst:
				if end[p]-c < 2 {
					return corrupt("bytegrouped const block truncated")
				}
				for i := range pb {
					pb[i] = src[c+1]
				}
				cur[p] = c + 2
			case blockHuff, blockZstd, blockTable:
				if bm == blockTable && version == bgVersion1 {
					return corrupt(fmt.Sprintf("bytegrouped block mode %d", bm))
				}
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
				switch bm {
				case blockZstd:
					err = zstdDecode(pb, payload)
				case blockTable:
					k, perr := parseTable(&dec.ht, payload, &dec.fs)
					if perr != nil {
						return perr
					}
					payload = payload[k:]
					if dec.dt[p] == nil {
						dec.dt[p] = new(decTable)
					}
					dec.ht.decTable(dec.dt[p])
					hasTable[p] = true
					fallthrough
				default:
					if !hasTable[p] {
						return corrupt("bytegrouped huffman block without a table")
					}
					err = decode4X(pb, payload, dec.dt[p])
				}
				if err != nil {
					return err
				}
			default:
				return corrupt(fmt.Sprintf("bytegrouped block mode %d", bm))
			}
			blk[p] = pb
			planes[p] = pb[:m]
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

// planeStats holds the sampled entropy of each plane in bits per byte, and
// the byte values seen in the sample of each plane (bit b of word b/64).
type planeStats struct {
	bits [8]float64
	seen [8][4]uint64
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
		for b, c := range hist[p] {
			if c != 0 {
				st.seen[p][b/64] |= 1 << (b % 64)
			}
		}
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
