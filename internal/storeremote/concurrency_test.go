package storeremote_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heft-dev/heft/hub/remote"
	"github.com/heft-dev/heft/internal/storeremote"
	"github.com/heft-dev/heft/store"
)

// TestConcurrentPushesPullsGCOverTheServer: eight clients push models to one
// server store over HTTP while two others pull from it and gc runs there again
// and again with a 50 ms grace. Nothing committed is lost or corrupted: every
// pushed ref and every pulled copy exports its source's bytes, and the server
// store verifies clean (TestStore's cleanup runs verify --read-data). Run under
// -race by .ci/run.
func TestConcurrentPushesPullsGCOverTheServer(t *testing.T) {
	baseDir, tunedDir, otherDir := testModels(t)
	dirs := []string{baseDir, tunedDir, otherDir}
	sv := newServer(t, remote.Options{})
	importModel(t, sv.s, baseDir, "acme/base")

	const pushers, rounds, pullers = 8, 2, 2
	locals := make([]*store.Store, pushers)
	commits := make([]store.ID, pushers)
	for i := range locals {
		locals[i] = newStore(t)
		commits[i] = importModel(t, locals[i], dirs[i%len(dirs)], "acme/m")
	}
	done := make(chan struct{})
	var gcRuns atomic.Int32
	var gcWG sync.WaitGroup
	gcWG.Add(1)
	go func() {
		defer gcWG.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := sv.s.GC(ctx, store.GCOptions{Grace: 50 * time.Millisecond}); err != nil {
				t.Errorf("gc: %v", err)
				return
			}
			gcRuns.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for i := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client(t, sv.url, sv.write, remote.ClientOptions{Retries: 5, BatchBytes: 1 << 20})
			for r := range rounds {
				name := fmt.Sprintf("acme/p%d-%d", i, r)
				if _, err := c.Push(ctx, storeremote.New(locals[i]), remote.ID(commits[i]), name, remote.PushOptions{}); err != nil {
					t.Errorf("push %s: %v", name, err)
					return
				}
			}
		}()
	}
	pulled := make([][]*store.Store, pullers)
	for i := range pullers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client(t, sv.url, sv.read, remote.ClientOptions{Retries: 5})
			for range rounds {
				local := newStore(t)
				if _, err := c.Pull(ctx, storeremote.New(local), "acme/base", remote.PullOptions{}); err != nil {
					t.Errorf("pull: %v", err)
					return
				}
				pulled[i] = append(pulled[i], local)
			}
		}()
	}
	wg.Wait()
	close(done)
	gcWG.Wait()
	if t.Failed() {
		return
	}
	t.Logf("%d pushes and %d pulls with %d gc runs of the server store alongside", pushers*rounds, pullers*rounds, gcRuns.Load())
	if gcRuns.Load() < 2 {
		t.Errorf("gc ran %d times during the transfers", gcRuns.Load())
	}
	for i := range pushers {
		for r := range rounds {
			exportMatches(t, sv.s, fmt.Sprintf("acme/p%d-%d", i, r), dirs[i%len(dirs)])
		}
	}
	exportMatches(t, sv.s, "acme/base", baseDir)
	for _, stores := range pulled {
		for _, local := range stores {
			exportMatches(t, local, "acme/base", baseDir)
		}
	}
}
