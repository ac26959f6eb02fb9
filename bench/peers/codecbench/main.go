// Command codecbench measures heft's chunk codecs on the tensors of
// safetensors files, the way the store cuts and encodes them, for the peer
// benchmark (bench/peers/run.sh).
//
//	go run ./bench/peers/codecbench -label "MiniLM F32" FILE.safetensors...
//
// Each tensor is cut into chunks of -chunk bytes (default 4 MiB, the store's
// DefaultChunkSize) aligned to the tensor's start; each chunk gets the hint
// the store derives from the dtype (BF16/F16 {2,true}, F32 {4,true}, F8
// {1,true}, integers {n,false}). Every chunk is then encoded three ways:
//
//	heft (auto)         chunkcodec.Encode, the store's automatic choice
//	heft bytegrouped    chunkcodec.EncodeWith(ByteGrouped) for every chunk
//	heft zstd           chunkcodec.EncodeWith(Zstd) for every chunk
//
// and decoded with chunkcodec.Decode; every decoded chunk must equal its
// source byte for byte, or the program exits 1. It runs on one core
// (GOMAXPROCS=1, one goroutine, the garbage collector included): encode and
// decode GB/s are raw bytes per second of the process's CPU time (user+sys),
// i.e. per core, which a shared machine disturbs far less than wall-clock
// time (also reported, as *_wall_gbps); 1 GB = 1e9 bytes. Each speed is the
// best of -reps measurements, each of which repeats whole passes over all
// chunks for at least -min-time of CPU time.
//
// Output: one JSON object per line on stdout (dataset, tool, raw_bytes,
// stored_bytes, enc_gbps, dec_gbps, enc_wall_gbps, dec_wall_gbps, note), a
// readable summary on stderr.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/codec/safetensors"
)

type chunk struct {
	src  []byte
	hint chunkcodec.Hint
}

// Row is one line of output.
type Row struct {
	Dataset     string  `json:"dataset"`
	Tool        string  `json:"tool"`
	RawBytes    int64   `json:"raw_bytes"`
	StoredBytes int64   `json:"stored_bytes"`
	EncGBps     float64 `json:"enc_gbps"` // by CPU time: per core
	DecGBps     float64 `json:"dec_gbps"`
	EncWallGBps float64 `json:"enc_wall_gbps"` // by wall-clock time, one thread
	DecWallGBps float64 `json:"dec_wall_gbps"`
	Note        string  `json:"note,omitempty"`
}

func main() {
	label := flag.String("label", "", "dataset name for the output (default: the first file's name)")
	chunkSize := flag.Int("chunk", 4<<20, "tensor chunk size in bytes (the store's default is 4 MiB)")
	minTime := flag.Duration("min-time", time.Second, "minimum duration of one timing measurement")
	reps := flag.Int("reps", 3, "timing measurements per speed; the best is reported")
	procs := flag.Int("procs", 1, "GOMAXPROCS (1: per-core speed)")
	flag.Parse()
	if flag.NArg() == 0 || *chunkSize <= 0 || *reps <= 0 {
		fmt.Fprintln(os.Stderr, "usage: codecbench [-label NAME] [-chunk BYTES] [-min-time D] [-reps N] FILE.safetensors...")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(*procs)
	if *label == "" {
		*label = flag.Arg(0)
	}

	chunks, raw := load(flag.Args(), *chunkSize)
	fmt.Fprintf(os.Stderr, "codecbench: %s: %d chunks, %d bytes of tensor data, GOMAXPROCS=%d\n", *label, len(chunks), raw, runtime.GOMAXPROCS(0))

	type mode struct {
		tool  string
		force chunkcodec.ID
		auto  bool
	}
	enc := json.NewEncoder(os.Stdout)
	for _, m := range []mode{
		{tool: "heft (auto)", auto: true},
		{tool: "heft bytegrouped", force: chunkcodec.ByteGrouped},
		{tool: "heft zstd", force: chunkcodec.Zstd},
	} {
		ids := make([]chunkcodec.ID, len(chunks))
		out := make([][]byte, len(chunks))
		for i, c := range chunks {
			out[i] = make([]byte, 0, len(c.src)+4096)
		}
		encodeAll := func() {
			for i, c := range chunks {
				var err error
				if m.auto {
					ids[i], out[i], err = chunkcodec.Encode(out[i][:0], c.src, c.hint)
				} else {
					ids[i] = m.force
					out[i], err = chunkcodec.EncodeWith(m.force, out[i][:0], c.src, c.hint)
				}
				if err != nil {
					fail("%s: encode: %v", m.tool, err)
				}
			}
		}
		encodeAll() // warm-up; also the output that is checked and measured
		var stored int64
		mix := map[chunkcodec.ID]int64{}
		for i := range chunks {
			stored += int64(len(out[i]))
			mix[ids[i]] += int64(len(chunks[i].src))
		}
		var dec []byte
		for i, c := range chunks {
			var err error
			dec, err = chunkcodec.Decode(ids[i], dec[:0], out[i], len(c.src))
			if err != nil {
				fail("%s: decode chunk %d: %v", m.tool, i, err)
			}
			if !bytes.Equal(dec, c.src) {
				fail("%s: chunk %d does not round-trip bit-exactly", m.tool, i)
			}
		}
		decodeAll := func() {
			for i, c := range chunks {
				var err error
				if dec, err = chunkcodec.Decode(ids[i], dec[:0], out[i], len(c.src)); err != nil {
					fail("%s: decode: %v", m.tool, err)
				}
			}
		}
		row := Row{Dataset: *label, Tool: m.tool, RawBytes: raw, StoredBytes: stored}
		row.EncGBps, row.EncWallGBps = rate(raw, encodeAll, *minTime, *reps)
		row.DecGBps, row.DecWallGBps = rate(raw, decodeAll, *minTime, *reps)
		if m.auto {
			row.Note = mixNote(mix, raw)
		}
		fmt.Fprintf(os.Stderr, "codecbench: %-17s stored/raw %.4f (%.3fx)  encode %.2f GB/s  decode %.2f GB/s per core (wall %.2f / %.2f)  %s\n",
			m.tool, float64(stored)/float64(raw), float64(raw)/float64(stored), row.EncGBps, row.DecGBps, row.EncWallGBps, row.DecWallGBps, row.Note)
		check(enc.Encode(row))
	}
}

// load reads the files' tensors and cuts them as the store does.
func load(paths []string, chunkSize int) ([]chunk, int64) {
	var chunks []chunk
	var raw int64
	for _, p := range paths {
		f, err := os.Open(p)
		check(err)
		st, err := f.Stat()
		check(err)
		h, err := safetensors.ReadHeader(f, st.Size(), p)
		check(err)
		data := make([]byte, h.DataSize())
		_, err = io.ReadFull(io.NewSectionReader(f, h.DataStart(), int64(len(data))), data)
		check(err)
		f.Close()
		for _, t := range h.Tensors {
			td := data[t.Begin:t.End]
			hint := chunkcodec.HintFor(string(t.DType))
			for off := 0; off < len(td); off += chunkSize {
				end := min(off+chunkSize, len(td))
				chunks = append(chunks, chunk{src: td[off:end:end], hint: hint})
				raw += int64(end - off)
			}
		}
	}
	if raw == 0 {
		fail("no tensor data in %s", strings.Join(paths, ", "))
	}
	return chunks, raw
}

// rate measures pass's speed reps times, each measurement repeating pass
// for at least minTime of CPU time, and returns the best speeds in GB/s by
// process CPU time (user+sys; with GOMAXPROCS=1 one core's time, whatever
// else the machine runs) and by wall-clock time.
func rate(bytesPerPass int64, pass func(), minTime time.Duration, reps int) (cpu, wall float64) {
	for range reps {
		runtime.GC()
		n := 0
		c0, w0 := cpuTime(), time.Now()
		for n == 0 || cpuTime()-c0 < minTime {
			pass()
			n++
		}
		c, w := (cpuTime() - c0).Seconds(), time.Since(w0).Seconds()
		total := float64(bytesPerPass) * float64(n) / 1e9
		cpu, wall = max(cpu, total/c), max(wall, total/w)
	}
	return cpu, wall
}

// cpuTime is the process's user+sys CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mixNote(mix map[chunkcodec.ID]int64, raw int64) string {
	var parts []string
	for _, id := range []chunkcodec.ID{chunkcodec.ByteGrouped, chunkcodec.Zstd, chunkcodec.Raw} {
		if mix[id] > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f%%", id, 100*float64(mix[id])/float64(raw)))
		}
	}
	return "chunks by raw bytes: " + strings.Join(parts, ", ")
}

func check(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "codecbench: "+format+"\n", args...)
	os.Exit(1)
}
