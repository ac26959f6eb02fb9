package chunkcodec

import (
	"math"
	"math/bits"
)

// This file plans the blocks of a coded plane: which are constant, which
// are stored raw, and which Huffman tables the others are coded with. The
// plan is made from the histograms of the plane's blocks and a model of
// the coded size (floorBits); the encoder then codes the blocks with real
// tables, and still stores a block raw if coding does not shrink it.
//
// Weights are not uniform within a chunk: the rows of an embedding, or of a
// projection, have different scales, so the exponent plane's distribution
// drifts from block to block; and some rows (never trained, or stored at a
// lower precision) have low mantissa bytes that are zero or take a few
// values while those of the other rows are random. With one table per
// plane, as in version 1 of the frame, all-MiniLM-L6-v2 stored 0.6659 of
// its BF16 weights and 0.8203 of its F32 ones; ZipNN, with a table per
// 256 KiB, 0.6647 and 0.8188. So the blocks of a plane are grouped into
// runs of consecutive blocks that share a table, a new run starting where a
// table of its own saves more than it costs, and a plane whose parts differ
// in kind (constant, random, coded) is cut into blocks of 16 Ki symbols
// rather than 128 Ki where that pays for the extra block headers: 0.6645
// and 0.8184.

// Planning constants, in bytes unless noted.
const (
	// tablePenalty is added to the cost of every new table: decoding
	// needs to parse it and build a decode table (about 7 µs, the time
	// to decode some 12 KB), which a few bytes of gain do not justify.
	tablePenalty = 8

	// huffExtra models the excess of Huffman codes over the entropy
	// (see floorBits).
	huffExtra = 1.015

	// fineBlockPenalty is charged per coded block when the plane is cut
	// into fine blocks, for the per-block work of decoding (stream set
	// up and tails), on top of the block header.
	fineBlockPenalty = 8

	blockOverhead = blockHdrLen + jumpTableSize
)

// Plan entries for a block: a run index (>= 0), or one of these.
const (
	planBlockRaw   = -1
	planBlockConst = -2
)

// bgRun is a run of blocks that share a Huffman table.
type bgRun struct {
	hist [256]uint32
	n    int     // symbols in the run's blocks
	bits float64 // their modelled size in bits (floorBits)
}

// planBlocks plans the blocks of a plane of n symbols whose block i, of
// m symbols (the last one less), has the histogram hists[i]; syms lists,
// in increasing order, the byte values that occur in the plane. It returns
// the estimated size of the plane's blocks in bytes, the plan (one entry a
// block) and the runs, reusing the storage of plan and runs.
//
// Blocks are taken in order: a block joins the current run, starts a new
// one, or is stored raw or as a constant, whichever the model (floorBits)
// says is smallest. Joining costs the growth of the run's modelled size,
// which grows the more the block's distribution differs from the run's; a
// new run costs the block's own size plus its table and tablePenalty. A
// raw or constant block does not end the run.
func planBlocks(hists [][256]uint32, m, n int, syms []byte, plan []int32, runs []bgRun) (float64, []int32, []bgRun) {
	plan, runs = plan[:0], runs[:0]
	est := 0.0
	cur := -1
	var sum [256]uint32
	for i := range hists {
		h := &hists[i]
		bl := min(m, n-i*m)
		raw := float64(1 + bl)
		own, nsym := floorBits(h, bl, syms)
		if nsym <= 1 {
			plan = append(plan, planBlockConst)
			est += 2
			continue
		}
		if bl < minHuffBlock {
			plan = append(plan, planBlockRaw)
			est += raw
			continue
		}
		newCost := own/8 + blockOverhead + tableBytes(h, nsym, syms) + tablePenalty
		joinCost := math.Inf(1)
		merged := 0.0
		if cur >= 0 {
			r := &runs[cur]
			for _, s := range syms {
				sum[s] = r.hist[s] + h[s]
			}
			merged, _ = floorBits(&sum, r.n+bl, syms)
			joinCost = (merged-r.bits)/8 + blockOverhead
		}
		switch {
		case joinCost <= newCost && joinCost < raw:
			r := &runs[cur]
			r.hist = sum
			r.n += bl
			r.bits = merged
			plan = append(plan, int32(cur))
			est += joinCost
		case newCost < raw:
			runs = append(runs, bgRun{hist: *h, n: bl, bits: own})
			cur = len(runs) - 1
			plan = append(plan, int32(cur))
			est += newCost
		default:
			plan = append(plan, planBlockRaw)
			est += raw
		}
	}
	return est, plan, runs
}

// floorBits estimates the size in bits of n bytes with the histogram h
// coded with a Huffman code for h whose lengths are limited to maxTableLog
// bits, and returns the number of symbols in h. The model is the cross
// entropy of h and a distribution q that gives every symbol at least
// 2^-maxTableLog, q(s) = max(h(s), n/2^maxTableLog) / z, normalized: length
// limited codes give the rarest symbols more than their share, taken from
// all others, which costs a run of millions of symbols some 0.3 % over its
// entropy and a single block less. Huffman codes then add a fairly constant
// 1.2-1.8 % (huffExtra).
//
// h may only count the byte values in syms.
func floorBits(h *[256]uint32, n int, syms []byte) (float64, int) {
	fl := uint32(n >> maxTableLog)
	z := uint64(0)
	s := 0.0
	k := 0
	for _, v := range syms {
		if c := h[v]; c != 0 {
			q := max(c, fl)
			z += uint64(q)
			s += float64(c) * log2u(q)
			k++
		}
	}
	return (float64(n)*log2u64(z) - s) * huffExtra, k
}

// tableBytes estimates the size of the huff0 description of a table for
// h, which has nsym symbols: 4-bit weights up to the largest symbol, or
// about a byte a symbol when huff0 compresses them with FSE (measured on
// exponent planes: 3 + nsym to 4 + nsym). h may only count the byte values
// in syms, which are in increasing order.
func tableBytes(h *[256]uint32, nsym int, syms []byte) float64 {
	last := 0
	for i := len(syms) - 1; i >= 0; i-- {
		if h[syms[i]] != 0 {
			last = int(syms[i])
			break
		}
	}
	direct := 1 + (last+1)/2
	if last >= 128 {
		direct = 1 << 10 // huff0 then has to compress the weights
	}
	return float64(min(direct, 4+nsym))
}

// entropyBits returns n times the entropy of h, whose counts sum to n, in
// bits, and the number of symbols that occur.
func entropyBits(h *[256]uint32, n int) (float64, int) {
	s := 0.0
	k := 0
	for _, c := range h {
		if c != 0 {
			s += float64(c) * log2u(c)
			k++
		}
	}
	return float64(n)*log2u(uint32(n)) - s, k
}

// mergedBits returns n times the entropy of a+b, whose counts sum to n.
func mergedBits(a, b *[256]uint32, n int) float64 {
	s := 0.0
	for i, c := range a {
		c += b[i]
		if c != 0 {
			s += float64(c) * log2u(c)
		}
	}
	return float64(n)*log2u(uint32(n)) - s
}

// log2Frac[i] is log2(1 + i/4096).
var log2Frac = func() (t [4096]float32) {
	for i := range t {
		t[i] = float32(math.Log2(1 + float64(i)/4096))
	}
	return t
}()

// log2u approximates log2(c) for c >= 1 from the 12 bits below the leading
// one (exact below 8192, otherwise within 0.0004): math.Log2 measured 15 ns,
// which planning a fine plane calls some 30,000 times.
func log2u(c uint32) float64 {
	l := bits.Len32(c) - 1
	var f uint32
	if l >= 12 {
		f = c >> (l - 12) & 4095
	} else {
		f = c << (12 - l) & 4095
	}
	return float64(l) + float64(log2Frac[f])
}

// log2u64 is log2u for 64-bit values.
func log2u64(c uint64) float64 {
	if c < 1<<32 {
		return log2u(uint32(c))
	}
	l := bits.Len64(c) - 32
	return float64(l) + log2u(uint32(c>>l))
}

// histBlocks sets hs[i] to the byte counts of b[i<<log : (i+1)<<log] and
// total to those of b; len(hs) is the number of blocks. pt is scratch, all
// zero on entry and on return. seed holds byte values that b is likely to
// hold (bit v of word v/64), which only saves time.
//
// Counting pairs of bytes, the two bytes of a uint16 index into pt, halves
// the increments of histogram (20 % faster on an exponent plane), but
// folding the 64 Ki pair counters of every block would cost more than the
// counting. So a block's pairs are folded only over the symbols known to
// be in the plane (the seed, and those found so far), k of them and k*k
// counters, which is complete when the folded counts add up to the pairs
// counted; otherwise the block is scanned for the bytes not known yet,
// whose pairs are folded as they are found. A plane with more than
// maxPairSyms symbols is counted one byte at a time instead.
func histBlocks(hs [][256]uint32, total *[256]uint32, b []byte, log int, pt *[1 << 16]uint32, seed *[4]uint64) {
	*total = [256]uint32{}
	var unseen [256]uint8
	var syms [256]uint8
	ns := 0
	for v := range 256 {
		if seed[v/64]>>(v%64)&1 != 0 {
			syms[ns] = uint8(v)
			ns++
		} else {
			unseen[v] = 1
		}
	}
	for i := range hs {
		blk := b[i<<log : min((i+1)<<log, len(b))]
		h := &hs[i]
		*h = [256]uint32{}
		if ns > maxPairSyms {
			histogram(h, blk)
		} else {
			k := 0
			for ; k+8 <= len(blk); k += 8 {
				w := le64(blk, k)
				pt[uint16(w)]++
				pt[uint16(w>>16)]++
				pt[uint16(w>>32)]++
				pt[uint16(w>>48)]++
			}
			for _, v := range blk[k:] {
				h[v]++
			}
			pairs := uint32(k / 2)
			folded := foldPairs(h, pt, syms[:ns])
			// Pairs left over hold a symbol new to the plane: find
			// the new symbols in the block, and fold their pairs with
			// the symbols known, until every pair is accounted for.
			for j := 0; folded != pairs && j < k; j += 8 {
				x := blk[j : j+8 : j+8]
				if unseen[x[0]]|unseen[x[1]]|unseen[x[2]]|unseen[x[3]]|
					unseen[x[4]]|unseen[x[5]]|unseen[x[6]]|unseen[x[7]] == 0 {
					continue
				}
				for _, v := range x {
					if unseen[v] == 0 {
						continue
					}
					unseen[v] = 0
					syms[ns] = v
					ns++
					row := pt[int(v)<<8 : int(v)<<8+256]
					for _, s := range syms[:ns] {
						c := row[s]
						row[s] = 0
						if s != v {
							c2 := pt[int(s)<<8|int(v)]
							pt[int(s)<<8|int(v)] = 0
							h[s] += c2
							h[v] += c2
							folded += c2
						}
						h[s] += c
						h[v] += c
						folded += c
					}
				}
			}
		}
		for s, c := range h {
			total[s] += c
			if c != 0 && unseen[s] != 0 {
				unseen[s] = 0
				syms[ns] = uint8(s)
				ns++
			}
		}
	}
}

// foldPairs adds the counts of the pairs of syms in pt to h, clears them,
// and returns how many pairs it found.
func foldPairs(h *[256]uint32, pt *[1 << 16]uint32, syms []uint8) uint32 {
	folded := uint32(0)
	for _, hi := range syms {
		row := pt[int(hi)<<8 : int(hi)<<8+256]
		sum := uint32(0)
		for _, lo := range syms {
			c := row[lo]
			row[lo] = 0
			h[lo] += c
			sum += c
		}
		h[hi] += sum
		folded += sum
	}
	return folded
}

// maxPairSyms bounds the symbols of a plane whose blocks histBlocks counts
// in pairs: folding costs k*k per block.
const maxPairSyms = 64
