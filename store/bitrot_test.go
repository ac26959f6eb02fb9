package store

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestBitRot flips random single bits and 8-bit bursts in pack files (data,
// entry headers, trailers) and in the index, one at a time, and checks that heft
// never returns wrong bytes: every pack flip is found by verify --read-data and by
// ordinary reads (an integrity error, or the right bytes when the flip hit a byte
// reads do not use); every index flip is either reported or shown harmless (every
// file still reads back exactly). Each flip is undone before the next. Finally the
// index is deleted and repair restores every model.
func TestBitRot(t *testing.T) {
	trials := 1000
	if testing.Short() {
		trials = 150
	}
	s := TestStore(t, Options{ChunkSize: 16 << 10, PackSize: 64 << 10})
	base, _, tuned, _ := family(t, testCfg())
	importDir(t, s, base, "org/base")
	importDir(t, s, tuned, "org/tuned")
	want := readAllFiles(t, s)

	var packs []string
	s.walkPackDir(func(path string, info os.FileInfo, id ID, isPack bool) error {
		if isPack {
			packs = append(packs, path)
		}
		return nil
	})
	if len(packs) < 3 {
		t.Fatalf("only %d packs", len(packs))
	}
	index := filepath.Join(s.Dir(), "index.db")
	rng := rand.New(rand.NewPCG(7, 11))
	var packFlips, packDetectedByVerify, packReadErrors, indexFlips, indexDetected, indexHarmless int
	for trial := range trials {
		onIndex := trial%4 == 3
		path := packs[rng.IntN(len(packs))]
		if onIndex {
			path = index
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		off := rng.Int64N(st.Size())
		mask := byte(1) << rng.IntN(8)
		if trial%10 == 9 {
			mask = byte(1 + rng.IntN(255)) // a burst within one byte
		}
		flip(t, path, off, mask)
		verr := func() error {
			res, err := s.Verify(ctx, VerifyOptions{ReadData: true})
			if err != nil {
				return err
			}
			if !res.OK {
				return errors.New("damage reported")
			}
			return nil
		}()
		readErr, wrong := readBack(s, want)
		if wrong != "" {
			t.Fatalf("trial %d: flip %#02x at %s:%d: %s returned wrong bytes without an error", trial, mask, filepath.Base(path), off, wrong)
		}
		if onIndex {
			indexFlips++
			switch {
			case verr != nil || readErr != nil:
				indexDetected++
			default:
				indexHarmless++ // verify clean and every byte read back right
			}
		} else {
			packFlips++
			if verr == nil {
				t.Fatalf("trial %d: flip %#02x at %s:%d: verify --read-data found nothing", trial, mask, filepath.Base(path), off)
			}
			packDetectedByVerify++
			if readErr != nil {
				packReadErrors++
			}
		}
		flip(t, path, off, mask) // undo
		if trial%50 == 0 {
			if res, err := s.Verify(ctx, VerifyOptions{ReadData: true}); err != nil || !res.OK {
				t.Fatalf("trial %d: undoing the flip did not restore the store: %v", trial, err)
			}
		}
	}
	t.Logf("%d pack flips: %d found by verify --read-data, %d of them also failed a read (the rest hit bytes no file read uses, e.g. a trailer); %d index flips: %d reported, %d harmless",
		packFlips, packDetectedByVerify, packReadErrors, indexFlips, indexDetected, indexHarmless)
	// The index is a cache: deleting it and repairing restores every model.
	s.Close()
	if err := os.Remove(index); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RepairIndex(); err != nil {
		t.Fatal(err)
	}
	if err, wrong := readBack(s, want); err != nil || wrong != "" {
		t.Fatalf("after repair: %v %s", err, wrong)
	}
}

// flip XORs mask into the byte at off of path (pack files are read-only; the test
// makes them writable for the flip and restores the mode).
func flip(t *testing.T, path string, off int64, mask byte) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Chmod(path, st.Mode().Perm())
}

// readAllFiles reads every file of every ref through FileReader.
func readAllFiles(t *testing.T, s *Store) map[ID][]byte {
	t.Helper()
	out := map[ID][]byte{}
	refs, err := s.Refs()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		files, err := s.CommitFiles(r.Commit)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			fr, err := s.OpenFile(f.ID)
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(io.NewSectionReader(fr, 0, fr.Size()))
			fr.Close()
			if err != nil {
				t.Fatal(err)
			}
			out[f.ID] = data
		}
	}
	return out
}

// readBack reads every file again: it returns the first error, and the name of a
// file whose bytes came back different without an error ("" when none did).
func readBack(s *Store, want map[ID][]byte) (error, string) {
	var first error
	for id, data := range want {
		fr, err := s.OpenFile(id)
		if err != nil {
			first = errors.Join(first, err)
			continue
		}
		got, err := io.ReadAll(io.NewSectionReader(fr, 0, fr.Size()))
		fr.Close()
		if err != nil {
			first = errors.Join(first, err)
			continue
		}
		if !bytes.Equal(got, data) {
			return first, id.Short()
		}
	}
	return first, ""
}
