package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/store/backend"
)

// currentRefs reads the refs for an answer about them. In a shared store it also
// refreshes the index when another node moved a ref since the last refresh, so
// that every commit a returned ref reaches is indexed here.
func (s *Store) currentRefs() (map[RefName]refState, error) {
	if s.remote == nil {
		return s.readRefs()
	}
	ctx := context.Background()
	refs, _, version, err := s.readRemoteRefs(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.refreshIfChanged(ctx, version); err != nil {
		return nil, err
	}
	return refs, nil
}

// refreshIfChanged refreshes the index unless the last refresh saw the refs
// object at version.
func (s *Store) refreshIfChanged(ctx context.Context, version string) error {
	s.remote.refreshMu.Lock()
	seen := s.remote.refsSeen
	s.remote.refreshMu.Unlock()
	if seen == version {
		return nil
	}
	return s.refreshIndex(ctx, false)
}

// readRemoteRefs reads the refs object with one GET and returns the refs,
// their generation and the version read (empty: no refs object yet).
func (s *Store) readRemoteRefs(ctx context.Context) (refs map[RefName]refState, generation uint64, version string, err error) {
	be := s.remote.be
	data, info, err := backend.ReadAll(ctx, be, remoteRefsName)
	if errors.Is(err, backend.ErrNotFound) {
		return map[RefName]refState{}, 0, "", nil
	}
	if err != nil {
		return nil, 0, "", fmt.Errorf("read refs: %w", err)
	}
	where := be.Properties().Location + "/" + remoteRefsName
	refs, err = parseRefs(data, where)
	if err != nil {
		return nil, 0, "", err
	}
	return refs, refsGeneration(data), info.Version, nil
}

// refsGeneration reads the "# generation N" line (0 when absent).
func refsGeneration(data []byte) uint64 {
	for _, line := range bytes.Split(data, []byte("\n")) {
		rest, ok := strings.CutPrefix(string(line), "# generation ")
		if !ok {
			continue
		}
		var g uint64
		if _, err := fmt.Sscanf(rest, "%d", &g); err == nil {
			return g
		}
	}
	return 0
}

// updateRemoteRefs applies updates to the refs object by compare-and-swap:
// read, check every update against what was read, write the next generation
// only if the object is still at the version read. A lost race with an update
// of other refs is retried; one that moved a ref this call expects elsewhere
// ends in ErrConflict, as in a local store.
func (s *Store) updateRemoteRefs(ctx context.Context, updates []RefUpdate, message string) error {
	be := s.remote.be
	deadline := time.Now().Add(s.opts.LockTimeout)
	for attempt := 0; ; attempt++ {
		refs, gen, version, err := s.readRemoteRefs(ctx)
		if err != nil {
			return err
		}
		if err := applyRefUpdates(refs, updates); err != nil {
			return err
		}
		data := encodeRefs(refs, gen+1)
		if version == "" {
			_, err = be.PutIfAbsent(ctx, remoteRefsName, bytes.NewReader(data), int64(len(data)))
		} else {
			_, err = be.CompareAndSwap(ctx, remoteRefsName, version, bytes.NewReader(data), int64(len(data)))
		}
		if err == nil {
			break
		}
		if !errors.Is(err, backend.ErrExists) && !errors.Is(err, backend.ErrPreconditionFailed) {
			return fmt.Errorf("write refs: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: the refs in %s changed under %d attempts to update them (waited %s)", ErrBusy, be.Properties().Location, attempt+1, s.opts.LockTimeout)
		}
		// Another writer won this round: back off a little, with jitter, and
		// try again on what it wrote.
		time.Sleep(time.Duration(rand.Int64N(int64(min(attempt+1, 20)) * int64(5*time.Millisecond))))
	}
	failpoint.Hit(failpoint.RefAfterUpdate)
	// The reflog is this node's record; the refs object is the truth.
	return s.logRefUpdates(updates, message)
}
