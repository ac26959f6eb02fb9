package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestUploadRecordedBeforeGC: an upload recorded by the ingest itself survives
// a gc with no grace that runs right after it, while a file stored without a
// record is reclaimed, and recording it afterwards fails with ErrNotFound
// instead of protecting a file that is gone (the race the concurrent writers
// test once hit: gc between IngestFile and RecordUpload).
func TestUploadRecordedBeforeGC(t *testing.T) {
	skipIfShared(t, "gc of a shared store keeps every pack younger than ReceivedGrace")
	s := TestStore(t, Options{})
	kept := bytes.Repeat([]byte("kept upload "), 1000)
	lost := bytes.Repeat([]byte("lost upload "), 1000)
	resKept, err := s.IngestFile(ctx, "kept.bin", bytes.NewReader(kept), int64(len(kept)), IngestOptions{UploadRepo: "org/repo"})
	if err != nil {
		t.Fatal(err)
	}
	resLost, err := s.IngestFile(ctx, "lost.bin", bytes.NewReader(lost), int64(len(lost)), IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, GCOptions{Grace: -1}); err != nil {
		t.Fatal(err)
	}
	id, ok, err := s.Uploaded("org/repo", resKept.SHA256)
	if err != nil || !ok || id != resKept.ID {
		t.Fatalf("uploaded: %v %v %v", id, ok, err)
	}
	if _, err := s.LoadFile(resKept.ID); err != nil {
		t.Fatalf("the recorded upload was reclaimed: %v", err)
	}
	if err := s.RecordUpload("org/repo", resLost.SHA256, resLost.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("recording a reclaimed file: %v, want ErrNotFound", err)
	}
	if _, ok, _ := s.Uploaded("org/repo", resLost.SHA256); ok {
		t.Fatal("a reclaimed file was recorded as uploaded")
	}
}

// TestRefUpdateRemovesStaleTemps: a refs temp file left by a writer killed
// before its rename (found by the kill tests; gc only sweeps packs/) is removed
// by the next ref update, which holds the lock every refs writer takes.
func TestRefUpdateRemovesStaleTemps(t *testing.T) {
	skipIfShared(t, "a shared store keeps its refs in the backend, not in a local file")
	s := TestStore(t, Options{})
	stale := filepath.Join(s.dir, ".tmp-refs-12345")
	if err := os.WriteFile(stale, []byte("half-written refs"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := s.IngestFile(ctx, "a.bin", bytes.NewReader([]byte("a")), 1, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, CommitRequest{Ref: mustRef(t, "org/a"), Files: []ManifestEntry{{Path: "a.bin", File: res.ID}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale refs temp file still there: %v", err)
	}
}
