package store

import (
	"context"
	"testing"

	"github.com/heft-dev/heft/store/backend"
)

// TestStore opens a new store in a temporary directory for a test and registers a
// cleanup that checks the store's invariants: verify --read-data must find nothing
// damaged (bbolt's btesting pattern). Tests that damage a store on purpose call
// SkipCleanupCheck.
func TestStore(t testing.TB, opts Options) *Store {
	t.Helper()
	if sharedTestBackend != nil && opts.Backend == nil && opts.BackendURL == "" {
		opts.Backend = sharedTestBackend(t)
	}
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatalf("open test store: %v", err)
	}
	t.Cleanup(func() {
		defer s.Close()
		if s.skipCheck || t.Failed() {
			return
		}
		CheckStore(t, s)
	})
	return s
}

// sharedTestBackend, when set, gives every TestStore a fresh shared backend:
// the store's own tests set it from HEFT_TEST_STORE_BACKEND (mem or s3), so
// that the suite also runs with packs and refs in an object store.
var sharedTestBackend func(t testing.TB) backend.Backend

// SkipCleanupCheck turns off TestStore's final verify for a store a test damaged.
func (s *Store) SkipCleanupCheck() { s.skipCheck = true }

// CheckStore fails the test unless verify --read-data finds the store intact.
func CheckStore(t testing.TB, s *Store) {
	t.Helper()
	res, err := s.Verify(context.Background(), VerifyOptions{ReadData: true})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if !res.OK {
		for _, d := range res.Damaged {
			t.Errorf("verify: damaged %s %s: %s (refs %v)", d.Kind, d.ID.Short(), d.Reason, d.Refs)
		}
	}
}
