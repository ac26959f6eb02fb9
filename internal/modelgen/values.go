package modelgen

import (
	"encoding/binary"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
)

const (
	// chunkBytes is the unit of parallel work and of each chunk's random
	// stream. It is part of the output: changing it changes every generated
	// model. It is a multiple of 8 so a chunk holds whole groups of four
	// BF16 values drawn from one 64-bit random number.
	chunkBytes = 2 << 20
	initStd    = 0.02 // weight init std of Qwen3 (initializer_range)
)

// splitmix64 scrambles seeds so that related inputs (seed, seed+1, chunk
// numbers) give unrelated PCG states.
func splitmix64(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// tensorSeed derives a tensor's seed from the model seed and the tensor
// name, so a tensor's values do not depend on which shard it lands in or on
// which other tensors exist.
func tensorSeed(seed uint64, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return splitmix64(seed ^ splitmix64(h.Sum64()))
}

// chunkRNG is the generator for one chunk of one tensor; purpose separates
// independent streams drawn for the same tensor.
func chunkRNG(seed uint64, purpose uint64, chunk int) *rand.PCG {
	s := splitmix64(seed ^ splitmix64(purpose<<32|uint64(chunk)))
	return rand.NewPCG(s, splitmix64(s))
}

// Random-stream purposes.
const (
	purposeValues uint64 = iota + 1
	purposeNoise
	purposeLowRankA
	purposeLowRankB
	purposeBytes
)

// standardNormal holds the 65536 quantiles Φ⁻¹((i+½)/65536) of N(0,1).
// Indexing it with 16 uniform random bits samples a normal distribution
// (truncated at ±4.3σ) for the cost of a table lookup, so one 64-bit random
// number yields four values: this is what makes multi-gigabyte models
// generate in seconds. The values are quantised to 2^16 levels, far finer
// than BF16's 8-bit significand.
var standardNormal = sync.OnceValue(func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		p := (float64(i) + 0.5) / (1 << 16)
		t[i] = float32(math.Sqrt2 * math.Erfinv(2*p-1))
	}
	return &t
})

// bf16Table maps 16 random bits to the BF16 bits of mean + std·N(0,1).
type bf16Table [1 << 16]uint16

func newBF16Table(mean, std float64) *bf16Table {
	var t bf16Table
	for i, z := range standardNormal() {
		t[i] = f32ToBF16(float32(mean + std*float64(z)))
	}
	return &t
}

var (
	weightTable = sync.OnceValue(func() *bf16Table { return newBF16Table(0, initStd) })
	normTable   = sync.OnceValue(func() *bf16Table { return newBF16Table(1, initStd) })
)

// fillBF16 fills buf (an even number of bytes) with little-endian BF16
// values drawn from table.
func fillBF16(buf []byte, table *bf16Table, rng *rand.PCG) {
	i := 0
	for ; i+8 <= len(buf); i += 8 {
		r := rng.Uint64()
		binary.LittleEndian.PutUint16(buf[i:], table[uint16(r)])
		binary.LittleEndian.PutUint16(buf[i+2:], table[uint16(r>>16)])
		binary.LittleEndian.PutUint16(buf[i+4:], table[uint16(r>>32)])
		binary.LittleEndian.PutUint16(buf[i+6:], table[uint16(r>>48)])
	}
	for r := rng.Uint64(); i+2 <= len(buf); i, r = i+2, r>>16 {
		binary.LittleEndian.PutUint16(buf[i:], table[uint16(r)])
	}
}

// fillRandom fills buf with uniformly random bytes.
func fillRandom(buf []byte, rng *rand.PCG) {
	i := 0
	for ; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
	}
	for r := rng.Uint64(); i < len(buf); i, r = i+1, r>>8 {
		buf[i] = byte(r)
	}
}

// f32ToBF16 rounds to nearest even as torch does (formats.md §1.4); NaN
// becomes the canonical quiet NaN.
func f32ToBF16(f float32) uint16 {
	if f != f {
		return 0x7FC0
	}
	u := math.Float32bits(f)
	return uint16((u + 0x7FFF + ((u >> 16) & 1)) >> 16)
}

func bf16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// chunk is one unit of work of writeChunks.
type chunk struct {
	buf  []byte
	err  error
	done chan struct{}
}

// writeChunks writes size bytes to w, produced in chunkBytes pieces by fill
// on up to GOMAXPROCS goroutines and written in order. fill(i, buf) produces
// bytes [i·chunkBytes, i·chunkBytes+len(buf)); it must depend only on its
// arguments, which keeps the output independent of scheduling. At most about
// three chunks per CPU are in memory at once.
func writeChunks(w io.Writer, size int64, fill func(index int, buf []byte) error) error {
	if size == 0 {
		return nil
	}
	count := int((size + chunkBytes - 1) / chunkBytes)
	workers := min(runtime.GOMAXPROCS(0), count)
	pending := make(chan *chunk, workers)
	running := make(chan struct{}, workers)
	free := make(chan []byte, 3*workers)
	stop := make(chan struct{})

	go func() {
		defer close(pending)
		for i := range count {
			var buf []byte
			select {
			case buf = <-free:
			default:
				buf = make([]byte, chunkBytes)
			}
			c := &chunk{buf: buf[:min(chunkBytes, size-int64(i)*chunkBytes)], done: make(chan struct{})}
			select {
			case running <- struct{}{}:
			case <-stop:
				return
			}
			go func() {
				defer close(c.done)
				c.err = fill(i, c.buf)
				<-running
			}()
			select {
			case pending <- c:
			case <-stop:
				<-c.done
				return
			}
		}
	}()

	var err error
	for c := range pending {
		<-c.done
		if err == nil {
			err = c.err
			if err == nil {
				_, err = w.Write(c.buf)
			}
			if err != nil {
				close(stop)
			}
		}
		select {
		case free <- c.buf[:cap(c.buf)]:
		default:
		}
	}
	return err
}
