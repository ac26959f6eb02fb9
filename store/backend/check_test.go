package backend_test

import (
	"context"
	"io"
	"testing"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/mem"
)

func TestCheck(t *testing.T) {
	b := mem.New(mem.Options{})
	rep := backend.Check(context.Background(), b, "doctor/")
	if !rep.OK || len(rep.Steps) != 9 {
		t.Fatalf("check of a working backend: %+v", rep)
	}
	n := 0
	if err := b.List(context.Background(), "", func(backend.ObjectInfo) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("check left %d objects (%v)", n, err)
	}
	// A backend that ignores conditions is reported, at the step that shows it.
	rep = backend.Check(context.Background(), ignoresConditions{b}, "doctor/")
	if rep.OK || rep.Steps[len(rep.Steps)-1].Op != "put-if-absent refuses an existing object" {
		t.Fatalf("check of a backend without conditional writes: %+v", rep)
	}
}

// ignoresConditions overwrites where it should refuse, as a server that drops
// If-None-Match does.
type ignoresConditions struct{ backend.Backend }

func (b ignoresConditions) PutIfAbsent(ctx context.Context, name string, r io.ReaderAt, size int64) (backend.ObjectInfo, error) {
	return b.Put(ctx, name, r, size)
}
