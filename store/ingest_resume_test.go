package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
)

// failingFetch serves data[off:off+n] but fails after failAt bytes of the whole
// file (failAt < 0: never), and records what it was asked for.
type failingFetch struct {
	data   []byte
	failAt int64
	calls  []int64 // offsets asked for
	served int64
	cancel func() // set: cancel the call at failAt instead of failing
}

var errCut = errors.New("connection cut")

func (f *failingFetch) fetch(_ context.Context, off, n int64) (io.ReadCloser, error) {
	f.calls = append(f.calls, off)
	return io.NopCloser(&cutReader{f: f, pos: off, end: off + n}), nil
}

type cutReader struct {
	f        *failingFetch
	pos, end int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.pos >= c.end {
		return 0, io.EOF
	}
	lim := c.end
	if c.f.failAt >= 0 && c.f.failAt < lim {
		lim = c.f.failAt
	}
	if c.pos >= lim {
		if c.f.cancel != nil {
			c.f.cancel()
			return 0, context.Canceled
		}
		return 0, errCut
	}
	n := copy(p, c.f.data[c.pos:lim])
	c.pos += int64(n)
	c.f.served += int64(n)
	return n, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestIngestResumable cuts the download of a safetensors file and of a blob at
// several offsets, then resumes: the restart fetches exactly the bytes after the
// durable prefix, and the file object is the one IngestFile makes in one go.
func TestIngestResumable(t *testing.T) {
	dir := t.TempDir()
	if err := modelgen.WriteBase(dir, modelgen.Tiny(), modelgen.Options{Seed: 3}); err != nil {
		t.Fatal(err)
	}
	weights, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 5<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	cases := []struct {
		path string
		data []byte
	}{{"model.safetensors", weights}, {"sub/blob.bin", blob}}
	opts := Options{ChunkSize: 16 << 10, PackSize: 1 << 20}
	ref := TestStore(t, opts)
	for _, c := range cases {
		size := int64(len(c.data))
		want, err := ref.IngestFile(ctx, c.path, bytes.NewReader(c.data), size, IngestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Where a safetensors file's chunks end: a failed download keeps every
		// whole chunk that arrived.
		var ends []int64
		if strings.HasSuffix(c.path, ".safetensors") {
			h, err := safetensors.ReadHeader(bytes.NewReader(c.data), size, c.path)
			if err != nil {
				t.Fatal(err)
			}
			end := int64(0)
			for _, u := range planUnits(h, opts.ChunkSize, nil) {
				end += u.len
				ends = append(ends, end)
			}
		}
		for i, frac := range []float64{0, 0.3, 0.55, 0.9, 0.42, 0.77} {
			s := TestStore(t, opts)
			f := &failingFetch{data: c.data, failAt: int64(frac * float64(size))}
			ro := ResumableOptions{SHA256: sha256Hex(c.data), Fetch: f.fetch, CheckpointBytes: 64 << 10}
			cctx, cancel := context.WithCancel(ctx)
			wantErr := errCut
			if i >= 4 {
				// A cancelled call (Ctrl-C) keeps what arrived too.
				f.cancel, wantErr = cancel, context.Canceled
			}
			if _, err := s.IngestResumable(cctx, c.path, size, ro); !errors.Is(err, wantErr) {
				t.Fatalf("%s cut at %d: err = %v, want %v", c.path, f.failAt, err, wantErr)
			}
			cancel()
			point, err := s.ResumePoint(ro.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if point > f.failAt || (frac >= 0.55 && point == 0) {
				t.Fatalf("%s cut at %d: resume point %d", c.path, f.failAt, point)
			}
			if ends != nil {
				want := int64(0)
				for _, e := range ends {
					if e <= f.failAt {
						want = e
					}
				}
				if point != want {
					t.Fatalf("%s cut at %d: resume point %d, want the end of the last whole chunk, %d", c.path, f.failAt, point, want)
				}
			}
			f.failAt, f.served, f.cancel = -1, 0, nil
			res, err := s.IngestResumable(ctx, c.path, size, ro)
			if err != nil {
				t.Fatalf("%s resumed at %d: %v", c.path, point, err)
			}
			if f.calls[len(f.calls)-1] != point || f.served != size-point || res.Fetched != size-point || res.Resumed != point {
				t.Fatalf("%s: resumed at %d: fetch from %d, served %d, result %+v", c.path, point, f.calls[len(f.calls)-1], f.served, res)
			}
			if res.ID != want.ID || res.SHA256 != want.SHA256 || res.GitSHA != want.GitSHA {
				t.Fatalf("%s: resumed file %s differs from a plain ingest's %s", c.path, res.ID.Short(), want.ID.Short())
			}
			if p, _ := s.ResumePoint(ro.SHA256); p != 0 {
				t.Fatalf("journal left after completion: %d", p)
			}
			if _, err := os.Stat(s.journalPath(ro.SHA256)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("journal file left: %v", err)
			}
			// Stored now: a third call fetches nothing.
			n := len(f.calls)
			res, err = s.IngestResumable(ctx, c.path, size, ro)
			if err != nil || !res.Found || len(f.calls) != n {
				t.Fatalf("third call: %+v, %v, fetches %d", res, err, len(f.calls)-n)
			}
		}
	}
}

// TestIngestResumableMismatch: wrong content fails with ErrInput, leaves no
// journal (so that a retry does not reuse a bad prefix) and no findable file.
func TestIngestResumableMismatch(t *testing.T) {
	s := TestStore(t, Options{ChunkSize: 16 << 10})
	data := bytes.Repeat([]byte("heft resumable "), 40000)
	bad := bytes.Clone(data)
	bad[len(bad)-10] ^= 1
	f := &failingFetch{data: bad, failAt: -1}
	sha := sha256Hex(data)
	_, err := s.IngestResumable(ctx, "a.bin", int64(len(data)), ResumableOptions{SHA256: sha, Fetch: f.fetch, CheckpointBytes: 32 << 10})
	wantErr(t, err, ErrInput)
	if p, _ := s.ResumePoint(sha); p != 0 {
		t.Fatalf("journal kept after a mismatch: %d", p)
	}
	if _, _, err := s.FileBySHA256(sha); !errors.Is(err, ErrNotFound) {
		t.Fatalf("FileBySHA256 after a mismatch: %v", err)
	}
	// A short download is an input error too, and keeps the journal.
	f = &failingFetch{data: data[:len(data)/2], failAt: -1}
	_, err = s.IngestResumable(ctx, "a.bin", int64(len(data)), ResumableOptions{SHA256: sha, Fetch: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		return f.fetch(ctx, off, min(n, int64(len(f.data))-off))
	}, CheckpointBytes: 32 << 10})
	wantErr(t, err, ErrInput)
	if p, _ := s.ResumePoint(sha); p == 0 {
		t.Fatal("no journal after a short download")
	}
}

// TestIngestResumableLostChunks: chunks gc removed are fetched again.
func TestIngestResumableLostChunks(t *testing.T) {
	dir := t.TempDir()
	if err := modelgen.WriteBase(dir, modelgen.Tiny(), modelgen.Options{Seed: 4}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	s := TestStore(t, Options{ChunkSize: 16 << 10})
	sha := sha256Hex(data)
	f := &failingFetch{data: data, failAt: int64(len(data)) * 3 / 4}
	ro := ResumableOptions{SHA256: sha, Fetch: f.fetch, CheckpointBytes: 32 << 10}
	if _, err := s.IngestResumable(ctx, "model.safetensors", int64(len(data)), ro); !errors.Is(err, errCut) {
		t.Fatal(err)
	}
	// Pretend gc removed the third chunk by editing the journal to name a
	// chunk the index does not have.
	j, err := s.readJournal(sha)
	if err != nil || j == nil || len(j.Chunks) < 3 {
		t.Fatalf("journal %+v, %v", j, err)
	}
	j.Chunks[2].ID = Sum([]byte("not stored"))
	if err := s.writeJournal(j); err != nil {
		t.Fatal(err)
	}
	point, _ := s.ResumePoint(sha)
	if want := int64(j.Chunks[0].Size + j.Chunks[1].Size); point != want {
		t.Fatalf("resume point %d, want the first two chunks (%d)", point, want)
	}
	f.failAt = -1
	res, err := s.IngestResumable(ctx, "model.safetensors", int64(len(data)), ro)
	if err != nil || res.Resumed != point || res.Fetched != int64(len(data))-point {
		t.Fatalf("%+v, %v", res, err)
	}
}

// TestIngestResumableDamagedPrefix: a stored chunk of the prefix that fails its
// hash check makes the ingest fetch the whole file rather than fail forever.
func TestIngestResumableDamagedPrefix(t *testing.T) {
	dir := t.TempDir()
	if err := modelgen.WriteBase(dir, modelgen.Tiny(), modelgen.Options{Seed: 9}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	s := TestStore(t, Options{ChunkSize: 16 << 10})
	s.SkipCleanupCheck() // the damaged chunk stays indexed
	sha := sha256Hex(data)
	f := &failingFetch{data: data, failAt: int64(len(data)) / 2}
	ro := ResumableOptions{SHA256: sha, Fetch: f.fetch, CheckpointBytes: 32 << 10}
	if _, err := s.IngestResumable(ctx, "model.safetensors", int64(len(data)), ro); !errors.Is(err, errCut) {
		t.Fatal(err)
	}
	j, err := s.readJournal(sha)
	if err != nil || j == nil || len(j.Chunks) < 3 {
		t.Fatalf("journal %+v, %v", j, err)
	}
	victim := j.Chunks[2].ID
	locs, err := s.idx.lookup([]ID{victim})
	if err != nil {
		t.Fatal(err)
	}
	loc := locs[victim]
	fh, err := os.OpenFile(s.packPath(loc.Pack), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	fh.ReadAt(one, int64(loc.Offset+loc.StoredLen/2))
	one[0] ^= 0x40
	fh.WriteAt(one, int64(loc.Offset+loc.StoredLen/2))
	fh.Close()
	s.Close()
	f.failAt, f.served = -1, 0
	res, err := s.IngestResumable(ctx, "model.safetensors", int64(len(data)), ro)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 0 || res.Fetched != int64(len(data)) || res.SHA256 != sha {
		t.Fatalf("%+v", res)
	}
}

// TestIngestJournalSurvivesGC: gc keeps the chunks an interrupted ingest journaled
// (for UploadGrace), so a pull interrupted an hour ago still resumes.
func TestIngestJournalSurvivesGC(t *testing.T) {
	s := TestStore(t, Options{ChunkSize: 16 << 10, PackSize: 1 << 20})
	data := make([]byte, 12<<20) // several content-defined chunks (1 MiB average)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sum := sha256Hex(data)
	f := &failingFetch{data: data, failAt: int64(len(data)) * 3 / 4}
	if _, err := s.IngestResumable(ctx, "blob.bin", int64(len(data)), ResumableOptions{SHA256: sum, Fetch: f.fetch, CheckpointBytes: 1 << 20}); err == nil {
		t.Fatal("the cut ingest succeeded")
	}
	before, err := s.ResumePoint(sum)
	if err != nil || before == 0 {
		t.Fatalf("resume point %d, %v", before, err)
	}
	if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	after, err := s.ResumePoint(sum)
	if err != nil || after != before {
		t.Fatalf("after gc the resume point is %d (was %d): %v", after, before, err)
	}
}
