package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/heft-dev/heft/store/backend"
)

// Locks between the nodes of a shared store are objects under locks/ in the
// backend, as restic keeps them: a writer creates a shared lock object, gc (and
// repair) an exclusive one, each under a fresh unique name, and then lists the
// others:
//
//   - a shared locker that sees any live exclusive lock deletes its own and
//     tries again later, so a waiting gc is not starved by a stream of writers;
//   - an exclusive locker waits while live shared locks exist (the writers in
//     flight finish), and yields to an older exclusive lock (names start with
//     the creation time, so the older one wins and the newer deletes its own).
//
// Both sides create before they list, so of a writer and a gc that lock at the
// same time at least one sees the other (this needs a listing that includes
// every write that returned before it: Properties.ConsistentList, true of AWS
// S3, versitygw and SeaweedFS). A held lock is rewritten with a later expiry
// every RemoteLockTTL/4; a lock whose holder died expires after RemoteLockTTL
// (plus a minute of allowance for clocks that disagree) and is then deleted by
// whoever finds it.

// lockObject is a lock's content.
type lockObject struct {
	Exclusive bool      `json:"exclusive"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
}

// lockClockSlack is how far apart the nodes' clocks may be before a live lock
// looks expired to another node.
var lockClockSlack = time.Minute // a variable for tests

// remoteLock is one held lock object.
type remoteLock struct {
	s    *Store
	name string
	obj  lockObject
	stop chan struct{}
	done sync.WaitGroup
}

func newLockName(now time.Time) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s%020d-%s.lock", remoteLocksDir, now.UnixNano(), hex.EncodeToString(b[:]))
}

func (s *Store) lockTTL() time.Duration {
	if s.opts.RemoteLockTTL > 0 {
		return s.opts.RemoteLockTTL
	}
	return 2 * time.Minute
}

// acquireRemoteLock takes a shared or exclusive lock object, waiting up to the
// store's LockTimeout.
func (s *Store) acquireRemoteLock(ctx context.Context, exclusive bool) (*remoteLock, error) {
	host, _ := os.Hostname()
	deadline := time.Now().Add(s.opts.LockTimeout)
	for attempt := 0; ; attempt++ {
		l := &remoteLock{s: s, name: newLockName(time.Now()), obj: lockObject{Exclusive: exclusive, Host: host, PID: os.Getpid(), Created: time.Now().UTC()}}
		if err := l.write(ctx); err != nil {
			return nil, err
		}
		for {
			wait, yield, holder, err := s.lockConflicts(ctx, l)
			if err != nil {
				l.delete()
				return nil, err
			}
			if !wait && !yield {
				l.stop = make(chan struct{})
				l.done.Add(1)
				go l.keepAlive()
				return l, nil
			}
			if time.Now().After(deadline) {
				l.delete()
				what := "gc is running on another node"
				if exclusive {
					what = "imports are running on other nodes"
				}
				return nil, fmt.Errorf("%w: %s (lock %s, waited %s)", ErrBusy, what, holder, s.opts.LockTimeout)
			}
			time.Sleep(time.Duration(50+mrand.IntN(100)) * time.Millisecond)
			if yield {
				break // delete ours and queue again behind the other
			}
			// Waiting for writers to finish: keep ours fresh meanwhile.
			if time.Until(l.obj.Expires) < s.lockTTL()/2 {
				if err := l.write(ctx); err != nil {
					l.delete()
					return nil, err
				}
			}
		}
		l.delete()
	}
}

// lockConflicts lists the other lock objects and decides whether l must wait
// for them (an exclusive l and live shared locks) or yield to them (a shared l
// and a live exclusive lock, or an exclusive l and an older exclusive lock).
// Expired locks are deleted on the way.
func (s *Store) lockConflicts(ctx context.Context, l *remoteLock) (wait, yield bool, holder string, err error) {
	be := s.remote.be
	var names []string
	err = be.List(ctx, remoteLocksDir, func(oi backend.ObjectInfo) error {
		if oi.Name != l.name && strings.HasSuffix(oi.Name, ".lock") {
			names = append(names, oi.Name)
		}
		return nil
	})
	if err != nil {
		return false, false, "", fmt.Errorf("list locks: %w", err)
	}
	now := time.Now()
	for _, name := range names {
		data, _, err := backend.ReadAll(ctx, be, name)
		if errors.Is(err, backend.ErrNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return false, false, "", fmt.Errorf("read lock %s: %w", name, err)
		}
		var o lockObject
		if json.Unmarshal(data, &o) != nil || now.After(o.Expires.Add(lockClockSlack)) {
			// Its holder died (or never finished writing it): it no longer
			// protects anything.
			_ = be.Delete(ctx, name)
			continue
		}
		desc := fmt.Sprintf("%s held by %s pid %d since %s", name, o.Host, o.PID, o.Created.Format(time.RFC3339))
		switch {
		case !l.obj.Exclusive && o.Exclusive:
			return false, true, desc, nil
		case l.obj.Exclusive && o.Exclusive && name < l.name:
			return false, true, desc, nil
		case l.obj.Exclusive && !o.Exclusive:
			wait, holder = true, desc
		}
	}
	return wait, false, holder, nil
}

// write (re)writes the lock object with a fresh expiry.
func (l *remoteLock) write(ctx context.Context) error {
	l.obj.Expires = time.Now().Add(l.s.lockTTL()).UTC()
	data, _ := json.Marshal(l.obj)
	if _, err := l.s.remote.be.Put(ctx, l.name, bytes.NewReader(data), int64(len(data))); err != nil {
		return fmt.Errorf("write lock %s: %w", l.name, err)
	}
	return nil
}

// keepAlive rewrites the lock every quarter TTL until release.
func (l *remoteLock) keepAlive() {
	defer l.done.Done()
	t := time.NewTicker(l.s.lockTTL() / 4)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			// A failed refresh is tried again at the next tick; the lock
			// stays valid until its expiry.
			_ = l.write(context.Background())
		}
	}
}

func (l *remoteLock) delete() {
	_ = l.s.remote.be.Delete(context.Background(), l.name)
}

// release stops the refresher and deletes the lock object; nil is a no-op.
func (l *remoteLock) release() {
	if l == nil {
		return
	}
	if l.stop != nil {
		close(l.stop)
		l.done.Wait()
	}
	l.delete()
}
