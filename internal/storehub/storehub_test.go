package storehub_test

import (
	"testing"

	"github.com/heft-dev/heft/hub/hubtest"
	"github.com/heft-dev/heft/internal/storehub"
	"github.com/heft-dev/heft/store"
)

// TestStoreAdapterConformance runs the hub's conformance suites for Repos and
// Writer against the real store adapter.
func TestStoreAdapterConformance(t *testing.T) {
	s := store.TestStore(t, store.Options{ChunkSize: 64 << 10})
	hubtest.CheckWriter(t, storehub.NewRepos(s), storehub.NewWriter(s))
}
