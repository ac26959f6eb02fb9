package linalg

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// numWorkers is how many goroutines parallelFor uses for n tasks.
func numWorkers(n int) int {
	return max(1, min(runtime.GOMAXPROCS(0), n))
}

// parallelFor calls f(w, t) once for every task t in [0, n), on
// numWorkers(n) goroutines that claim tasks in increasing order; w in
// [0, numWorkers(n)) identifies the calling worker so that f can use
// per-worker scratch. It returns when every call has returned. Which worker
// runs which task varies, so f must write only to data owned by task t:
// then the results do not depend on scheduling or on GOMAXPROCS. With one
// worker (or one task) everything runs on the calling goroutine.
func parallelFor(n int, f func(w, t int)) {
	nw := numWorkers(n)
	if nw == 1 {
		serialFor(n, f)
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(nw)
	for w := range nw {
		go func() {
			defer wg.Done()
			for {
				t := int(next.Add(1) - 1)
				if t >= n {
					return
				}
				f(w, t)
			}
		}()
	}
	wg.Wait()
}

// serialFor is parallelFor on the calling goroutine: f(0, t) for t in
// increasing order.
func serialFor(n int, f func(w, t int)) {
	for t := range n {
		f(0, t)
	}
}

// reduceChunk is the chunk length of deterministic parallel reductions.
const reduceChunk = 1 << 16

// parallelSum splits [0, n) into fixed chunks of reduceChunk, computes
// part(lo, hi) for each chunk in parallel and adds the partial results in
// chunk order, so the sum is independent of GOMAXPROCS. part returns k
// partial sums at once (e.g. Σxy, Σxx, Σyy).
func parallelSum(n, k int, part func(lo, hi int, acc []float64)) []float64 {
	chunks := (n + reduceChunk - 1) / reduceChunk
	parts := make([]float64, chunks*k)
	parallelFor(chunks, func(_, c int) {
		lo := c * reduceChunk
		part(lo, min(lo+reduceChunk, n), parts[c*k:(c+1)*k])
	})
	sum := make([]float64, k)
	for c := range chunks {
		for j := range k {
			sum[j] += parts[c*k+j]
		}
	}
	return sum
}
