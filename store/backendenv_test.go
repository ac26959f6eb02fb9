package store

import (
	"fmt"
	"os"
	"testing"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/mem"
	"github.com/heft-dev/heft/store/backend/s3"
	"github.com/heft-dev/heft/store/backend/s3/s3test"
)

// HEFT_TEST_STORE_BACKEND=mem or s3 runs the store's tests with every
// TestStore shared through a backend: an in-memory one, or a bucket on a
// versitygw server started for the store (CI runs the suite both ways).
// Tests that inspect or damage pack files on the local disk skip under it
// (skipIfShared), saying why.
func init() {
	switch kind := os.Getenv("HEFT_TEST_STORE_BACKEND"); kind {
	case "":
	case "mem":
		sharedTestBackend = func(testing.TB) backend.Backend { return mem.New(mem.Options{}) }
	case "s3":
		sharedTestBackend = func(t testing.TB) backend.Backend {
			srv := s3test.VersityGW(t)
			be, err := s3.New(srv.Config(srv.NewBucket(t), "store"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { be.Close() })
			return be
		}
	default:
		panic(fmt.Sprintf("HEFT_TEST_STORE_BACKEND=%q: want mem or s3", kind))
	}
}

// skipIfShared skips a test that works on the local pack files themselves
// when the suite runs over a shared backend.
func skipIfShared(t testing.TB, why string) {
	t.Helper()
	if sharedTestBackend != nil {
		t.Skipf("HEFT_TEST_STORE_BACKEND=%s: %s", os.Getenv("HEFT_TEST_STORE_BACKEND"), why)
	}
}
