package pack

import (
	"os"
	"testing"
)

// benchDir is where benchmarks write: $HEFT_BENCH_DIR if set (for example
// a tmpfs, to take the disk's writeback out of the numbers), else a test
// temp dir.
func benchDir(b *testing.B) string {
	if d := os.Getenv("HEFT_BENCH_DIR"); d != "" {
		d, err := os.MkdirTemp(d, "packbench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return b.TempDir()
}

// packChunks is how many 4 MiB chunks a benchmark pack holds before it is
// rotated, so b.N does not decide the file size.
const packChunks = 64

// BenchmarkWriterAdd measures Add of 4 MiB chunks (CRC-32C plus the write
// into the page cache). Compare with BenchmarkRawWrite, the bare write.
func BenchmarkWriterAdd(b *testing.B) {
	chunk := randObjs(13, 4<<20)[0]
	id := chunk.id()
	dir := benchDir(b)
	b.SetBytes(int64(len(chunk.data)))
	var w *Writer
	defer func() {
		if w != nil {
			w.Abort()
		}
	}()
	for i := 0; b.Loop(); i++ {
		if i%packChunks == 0 {
			b.StopTimer()
			if w != nil {
				if err := w.Abort(); err != nil {
					b.Fatal(err)
				}
			}
			var err error
			if w, err = NewWriter(dir); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if _, err := w.Add(id, 1, 1, uint64(len(chunk.data)), chunk.data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawWrite is the floor for BenchmarkWriterAdd: os.File.Write of
// the same chunks with the same rotation.
func BenchmarkRawWrite(b *testing.B) {
	chunk := randObjs(13, 4<<20)[0]
	dir := benchDir(b)
	b.SetBytes(int64(len(chunk.data)))
	var f *os.File
	rotate := func() {
		if f != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	defer rotate()
	for i := 0; b.Loop(); i++ {
		if i%packChunks == 0 {
			b.StopTimer()
			rotate()
			var err error
			if f, err = os.CreateTemp(dir, "raw-*"); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if _, err := f.Write(chunk.data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWritePack measures a whole 64 MiB pack (sixteen 4 MiB chunks):
// NewWriter, the Adds and Finish with its fsync, verify after write, rename
// and directory fsyncs. Against BenchmarkWriterAdd it shows what publishing
// costs; on a real disk the fsync dominates.
func BenchmarkWritePack(b *testing.B) {
	const chunks = 16
	chunk := randObjs(14, 4<<20)[0]
	dir := benchDir(b)
	b.SetBytes(chunks * int64(len(chunk.data)))
	for i := 0; b.Loop(); i++ {
		w, err := NewWriter(dir)
		if err != nil {
			b.Fatal(err)
		}
		for k := range chunks {
			id := chunk.id()
			id[0], id[1], id[2] = byte(i), byte(i>>8), byte(k) // distinct packs, so none is deduplicated
			if _, err := w.Add(id, 1, 1, 0, chunk.data); err != nil {
				b.Fatal(err)
			}
		}
		info, err := w.Finish()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.Remove(info.Path); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkReadStored measures a pread of a 4 MiB chunk plus its header
// check and CRC-32C, from the page cache.
func BenchmarkReadStored(b *testing.B) {
	objs := randObjs(15, 4<<20, 4<<20)
	info := writePack(b, benchDir(b), objs)
	r, err := Open(info.Path)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.SetBytes(4 << 20)
	buf := make([]byte, 4<<20)
	for i := 0; b.Loop(); i++ {
		if _, err := r.ReadStored(info.Entries[i%2], buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCRC32C is the checksum part of Add alone.
func BenchmarkCRC32C(b *testing.B) {
	chunk := randObjs(13, 4<<20)[0]
	b.SetBytes(int64(len(chunk.data)))
	for b.Loop() {
		checksum(chunk.data)
	}
}
