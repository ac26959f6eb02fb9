package mem_test

import (
	"testing"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/backendtest"
	"github.com/heft-dev/heft/store/backend/mem"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b := mem.New(mem.Options{})
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}
