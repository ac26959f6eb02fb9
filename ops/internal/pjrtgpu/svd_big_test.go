//go:build cgo && linux

package pjrtgpu

import (
	"os"
	"testing"
	"time"

	"github.com/heft-dev/heft/ops/internal/linalg"
)

// TestBigRank256 decomposes at LoRA's rank 256 (l = 320), against the CPU's
// power iterations and the optimum. About a minute on the XLA CPU plugin:
// set HEFT_TEST_BIG=1.
func TestBigRank256(t *testing.T) {
	if os.Getenv("HEFT_TEST_BIG") == "" {
		t.Skip("HEFT_TEST_BIG is not set")
	}
	d := testDevice(t)
	a := LowRankPlusNoise(1024, 768, 64, 0.5, 3)
	for i := 0; i < 2; i++ {
		d.ResetStats()
		t0 := time.Now()
		res, err := CheckSVD(d, SVDCase{Name: "big", A: a, Rank: 256})
		if err != nil {
			t.Fatal(err)
		}
		st := d.Stats()
		t.Logf("ratio %.5f orth %.2g q %d; %v; host %v wait %v checks %d spec %d compiles %d (%v)", res.Ratio, res.Orthogonality, res.PowerIters, time.Since(t0), st.HostTime, st.HostWait, st.Checks, st.Speculative, st.Compiles, st.CompileTime)
		if res.Ratio > 1.01 || res.Orthogonality > 1e-4 {
			t.Errorf("ratio %.5f, orthogonality %.3g", res.Ratio, res.Orthogonality)
		}
		for k, v := range st.Programs {
			t.Logf("  %s %d %v", k, v.Executes, v.Time)
		}
	}
	t0 := time.Now()
	cpu, err := linalg.TruncatedSVD(a, 256, linalg.SVDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cpu: q %d in %v", cpu.PowerIters, time.Since(t0))
}
