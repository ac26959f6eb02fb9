package ops_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
)

// deviceStandIn stands in for an accelerated backend: it computes with the
// CPU's kernels, counts the dequantizations it is asked for and, when flip is
// set, returns a result one bit off.
type deviceStandIn struct {
	ops.Backend
	calls atomic.Int64
	flip  bool
}

func (d *deviceStandIn) Name() string { return "stand-in device" }

func (d *deviceStandIn) Dequantize(ctx context.Context, dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error {
	d.calls.Add(1)
	if err := d.Backend.Dequantize(ctx, dst, mod, tensors, dtype); err != nil {
		return err
	}
	if d.flip {
		dst[len(dst)/2] ^= 1
	}
	return nil
}

// TestDequantOnBackend: `heft dequant` evaluates its recipes on the backend it
// is given, records exactly what the CPU records, reports where the time went,
// and refuses — recording nothing — when the backend disagrees with the CPU.
func TestDequantOnBackend(t *testing.T) {
	s, m := testStore(t)
	importFP8Block(t, s)
	cpu, err := ops.Dequant(ctx, m, ops.DequantOptions{Source: "org/fp8", Name: "org/bridge-cpu"})
	if err != nil {
		t.Fatal(err)
	}
	if cpu.Device != "cpu" {
		t.Fatalf("device %q, want cpu", cpu.Device)
	}
	dev := &deviceStandIn{Backend: ops.CPUBackend()}
	got, err := ops.Dequant(ctx, m, ops.DequantOptions{Source: "org/fp8", Name: "org/bridge-dev", Backend: dev})
	if err != nil {
		t.Fatal(err)
	}
	if got.Device != dev.Name() || dev.calls.Load() != int64(got.Modules) {
		t.Fatalf("device %q computed %d of %d modules", got.Device, dev.calls.Load(), got.Modules)
	}
	if got.Stages.Inputs <= 0 || got.Stages.Compute <= 0 || got.Stages.Store <= 0 {
		t.Fatalf("stages not measured: %+v", got.Stages)
	}
	// Same recipes, same files: the bridges are the same objects.
	if filesOf(t, m, "org/bridge-cpu") != filesOf(t, m, "org/bridge-dev") {
		t.Fatal("the bridge computed on the backend differs from the CPU's")
	}
	// Materialized on the backend: the same bytes as data.
	if _, err := ops.Dequant(ctx, m, ops.DequantOptions{Source: "org/fp8", Name: "org/bridge-dev-data", Backend: dev, Materialize: true}); err != nil {
		t.Fatal(err)
	}
	a, b := readTensors(t, export(t, s, "org/bridge-cpu")), readTensors(t, export(t, s, "org/bridge-dev-data"))
	for name, ta := range a {
		if string(ta.Data) != string(b[name].Data) {
			t.Fatalf("%s: materialized bridge differs", name)
		}
	}
	// A backend one bit off is caught before anything is recorded.
	bad := &deviceStandIn{Backend: ops.CPUBackend(), flip: true}
	before, _ := s.Stats(nil)
	_, err = ops.Dequant(ctx, m, ops.DequantOptions{Source: "org/fp8", Name: "org/bridge-bad", Backend: bad})
	if !errors.Is(err, store.ErrKernelMismatch) {
		t.Fatalf("dequant on a wrong backend: %v, want ErrKernelMismatch", err)
	}
	if head, err := m.Head("org/bridge-bad"); err != nil || head != "" {
		t.Fatalf("a ref was written for the refused bridge: %q %v", head, err)
	}
	after, _ := s.Stats(nil)
	if after.Refs != before.Refs {
		t.Fatalf("refs %d → %d after a refused dequant", before.Refs, after.Refs)
	}
}

// filesOf lists a ref's files as path=id lines.
func filesOf(t *testing.T, m ops.Models, ref string) string {
	t.Helper()
	commit, err := m.Resolve(ref)
	if err != nil {
		t.Fatal(err)
	}
	files, err := m.Files(commit)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	for _, f := range files {
		out += f.Path + "=" + f.ID + "\n"
	}
	return out
}
