// Package chunker splits a byte stream into content-defined chunks with
// FastCDC (Xia et al., "FastCDC: a Fast and Efficient Content-Defined
// Chunking Approach for Data Deduplication", USENIX ATC '16).
//
// The store uses it for files that are not safetensors (tokenizer.json,
// pickled .bin, .gguf, ...): a boundary depends only on the 64 bytes before
// it, so an edit changes the chunks around the edit and the chunk stream
// re-synchronises after it, and the unchanged chunks deduplicate.
//
// # Algorithm
//
// A gear hash h = h<<1 + gear[b] is rolled over the input. After a byte is
// hashed, h depends on exactly the last 64 bytes (older contributions have
// been shifted out), and a chunk ends after that byte when the top bits of h
// selected by a mask are all zero. Normalized chunking (level 2) uses a
// harder mask (log2(Avg)+2 bits) while the chunk is shorter than Avg and an
// easier one (log2(Avg)-2 bits) after, which narrows the size distribution
// around Avg. Bytes before Min-64 in a chunk are skipped without hashing
// (cut points before Min are never taken), and hashing starts 64 bytes
// before Min so that the first candidate boundary already sees a full
// window. A chunk that reaches Max ends there.
//
// # Stability
//
// Boundaries are part of the store's on-disk identity: two versions of heft
// that cut the same file differently stop deduplicating against each other.
// Everything that decides a boundary is therefore fixed here and pinned by
// golden tests: the gear table (see [gearSeed]), the mask construction, the
// window start and the comparison order. Changing any of them is a format
// change.
package chunker

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// Default sizes. A 1 MiB average keeps the index of a 100 GB model to about
// 10^5 entries while an edit to a large file still rewrites only a few MiB.
const (
	DefaultMin = 256 << 10
	DefaultAvg = 1 << 20
	DefaultMax = 4 << 20
)

// windowSize is the number of bytes a gear-hash value depends on: one bit of
// history is shifted out per byte of a 64-bit hash.
const windowSize = 64

// Params are the chunk size limits in bytes. The zero value selects the
// defaults (DefaultMin, DefaultAvg, DefaultMax); a partly set value is
// validated as given.
type Params struct {
	Min int // smallest chunk, except the last chunk of a stream
	Avg int // target average; must be a power of two
	Max int // largest chunk
}

// DefaultParams returns the default sizes.
func DefaultParams() Params {
	return Params{Min: DefaultMin, Avg: DefaultAvg, Max: DefaultMax}
}

// Validate reports whether p can be used. It requires
// 64 <= Min < Avg < Max <= 1 GiB, Avg a power of two of at least 256 (so that
// the easier mask keeps at least 6 bits), and no zero field unless all are
// zero.
func (p Params) Validate() error {
	if p == (Params{}) {
		return nil
	}
	switch {
	case p.Min < windowSize:
		return fmt.Errorf("chunker: Min %d below %d", p.Min, windowSize)
	case p.Avg <= p.Min || p.Max <= p.Avg:
		return fmt.Errorf("chunker: need Min < Avg < Max, have %d, %d, %d", p.Min, p.Avg, p.Max)
	case p.Max > 1<<30:
		return fmt.Errorf("chunker: Max %d above 1 GiB", p.Max)
	case p.Avg < 256 || p.Avg&(p.Avg-1) != 0:
		return fmt.Errorf("chunker: Avg %d is not a power of two >= 256", p.Avg)
	}
	return nil
}

func (p Params) orDefault() Params {
	if p == (Params{}) {
		return DefaultParams()
	}
	return p
}

// masks returns the normalized-chunking masks for p: the hard one used below
// Avg and the easy one used from Avg on. They select the top bits of the
// hash because only those depend on the full 64-byte window (bit k of the
// hash depends on the last k+1 bytes only).
func (p Params) masks() (small, large uint64) {
	b := bits.TrailingZeros(uint(p.Avg))
	small = ^uint64(0) << (64 - (b + 2))
	large = ^uint64(0) << (64 - (b - 2))
	return small, large
}

// Chunker cuts the stream of an io.Reader into chunks. It keeps one buffer
// of 2*Max bytes and returns chunks as slices of it. A Chunker is not safe
// for concurrent use.
type Chunker struct {
	r      io.Reader
	p      Params
	maskS  uint64
	maskL  uint64
	buf    []byte
	start  int // first byte of the next chunk in buf
	end    int // end of buffered data in buf
	eof    bool
	err    error // sticky: returned by every later Next
	offset int64 // stream offset of buf[start], for errors and tests
}

// New returns a Chunker reading from r. Invalid parameters are reported by
// the first call to Next. The buffer is allocated on the first call to Next.
func New(r io.Reader, p Params) *Chunker {
	c := &Chunker{r: r}
	if err := p.Validate(); err != nil {
		c.err = err
		return c
	}
	c.p = p.orDefault()
	c.maskS, c.maskL = c.p.masks()
	return c
}

// Reset makes c read a new stream from r with the same parameters, keeping
// its buffer. A chunk returned before Reset is invalid afterwards.
func (c *Chunker) Reset(r io.Reader) {
	if c.p == (Params{}) {
		// Invalid parameters stay invalid.
		c.r = r
		return
	}
	*c = Chunker{r: r, p: c.p, maskS: c.maskS, maskL: c.maskL, buf: c.buf}
}

// Offset returns the stream offset at which the next chunk starts.
func (c *Chunker) Offset() int64 { return c.offset }

// Next returns the next chunk. The slice is valid until the next call to
// Next or Reset and must not be modified. At the end of the stream Next
// returns nil, io.EOF; an empty stream has no chunks. A read error other
// than io.EOF is returned as is, at once and by every later call. Every
// chunk is between Min and Max bytes long except the last, which may be
// shorter than Min.
func (c *Chunker) Next() ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.end-c.start < c.p.Max && !c.eof {
		if err := c.fill(); err != nil {
			c.err = err
			// Stop here: a chunk cut from a stream that failed would not
			// be reproducible.
			return nil, err
		}
	}
	data := c.buf[c.start:c.end]
	if len(data) == 0 {
		c.err = io.EOF
		return nil, io.EOF
	}
	n := cut(data, c.p.Min, c.p.Avg, c.p.Max, c.maskS, c.maskL)
	chunk := data[:n:n]
	c.start += n
	c.offset += int64(n)
	return chunk, nil
}

// fill moves the unconsumed bytes to the front of the buffer and reads until
// the buffer is full or the reader reports the end. With a buffer of 2*Max
// this copies at most Max bytes per Max bytes consumed.
func (c *Chunker) fill() error {
	if c.buf == nil {
		c.buf = make([]byte, 2*c.p.Max)
	}
	if c.start > 0 {
		c.end = copy(c.buf, c.buf[c.start:c.end])
		c.start = 0
	}
	for c.end < len(c.buf) {
		n, err := c.r.Read(c.buf[c.end:])
		if n < 0 || n > len(c.buf)-c.end {
			return errors.New("chunker: reader returned an invalid count")
		}
		c.end += n
		if err == io.EOF {
			c.eof = true
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// cut returns the length of the chunk at the start of data, which holds
// either at least max bytes or the rest of the stream.
func cut(data []byte, minSize, avg, maxSize int, maskS, maskL uint64) int {
	n := len(data)
	if n <= minSize {
		return n
	}
	if n > maxSize {
		n = maxSize
	}
	normal := min(avg, n)

	var h uint64
	// Warm the hash over the window before the first candidate so that
	// the byte at minSize-1 is judged on a full window.
	i := minSize - windowSize
	for ; i < minSize-1; i++ {
		h = h<<1 + gear[data[i]]
	}
	// Below Avg the hard mask applies, from Avg on the easy one.
	if c, h2 := scan(data[:normal], i, h, maskS); c >= 0 {
		return c
	} else {
		h = h2
	}
	if c, _ := scan(data[:n], normal, h, maskL); c >= 0 {
		return c
	}
	return n
}

// scan rolls h over data[i:] and returns the length of the chunk that ends
// after the first byte whose hash has no bit of mask set, or -1 and the
// final hash.
//
// The plain loop h = h<<1 + gear[b] costs a shift and an add on the
// critical path per byte. Eight bytes per iteration are instead folded in
// pairs, h2 = h<<2 + (gear[b0]<<1 + gear[b1]), so the chain is one LEA per
// two bytes; the hash after the first byte of a pair, h<<1 + gear[b0], is
// computed off the chain for its own test. Both give exactly the value of the
// byte-at-a-time recurrence, so boundaries do not depend on the unrolling.
func scan(data []byte, i int, h uint64, mask uint64) (int, uint64) {
	for ; i+8 <= len(data); i += 8 {
		d := data[i : i+8 : i+8]
		g0, g1, g2, g3 := gear[d[0]], gear[d[1]], gear[d[2]], gear[d[3]]
		g4, g5, g6, g7 := gear[d[4]], gear[d[5]], gear[d[6]], gear[d[7]]
		if (h<<1+g0)&mask == 0 {
			return i + 1, 0
		}
		h = h<<2 + (g0<<1 + g1)
		if h&mask == 0 {
			return i + 2, 0
		}
		if (h<<1+g2)&mask == 0 {
			return i + 3, 0
		}
		h = h<<2 + (g2<<1 + g3)
		if h&mask == 0 {
			return i + 4, 0
		}
		if (h<<1+g4)&mask == 0 {
			return i + 5, 0
		}
		h = h<<2 + (g4<<1 + g5)
		if h&mask == 0 {
			return i + 6, 0
		}
		if (h<<1+g6)&mask == 0 {
			return i + 7, 0
		}
		h = h<<2 + (g6<<1 + g7)
		if h&mask == 0 {
			return i + 8, 0
		}
	}
	for ; i < len(data); i++ {
		h = h<<1 + gear[data[i]]
		if h&mask == 0 {
			return i + 1, 0
		}
	}
	return -1, h
}

// gearSeed seeds the SplitMix64 sequence that fills the gear table. It is
// the ASCII string "heft/cdc" read as a big-endian integer. It must never
// change: see the package comment.
const gearSeed = 0x686566742f636463

// gear maps a byte to a 64-bit random value. It is generated rather than
// written out as a literal so that it is easy to audit; TestGearTable pins
// its BLAKE3 digest.
var gear = func() (t [256]uint64) {
	// SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
	// generators", OOPSLA 2014) is fully specified by these constants, so
	// the table cannot drift with a library's PRNG.
	s := uint64(gearSeed)
	for i := range t {
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		t[i] = z ^ (z >> 31)
	}
	return t
}()
