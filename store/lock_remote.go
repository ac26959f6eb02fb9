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
// repair) an exclusive one, each under a fresh unique name that starts with its
// creation time, so that names order the lockers into a queue. Each then lists
// the others and waits, keeping its object (refreshed) while it does:
//
//   - a shared locker waits while an exclusive lock older than its own exists;
//     it is created "waiting" and, once nothing older blocks it, rewrites itself
//     as active and lists once more before it proceeds (an exclusive locker that
//     listed in between saw it waiting and newer, and so is older: the second
//     listing finds it);
//   - an exclusive locker waits while an older exclusive lock exists, or a
//     shared one that is older or active (writers in flight finish; writers that
//     queued behind it wait for it).
//
// So neither side starves the other: a gc run back to back with itself lets
// the writers that queued meanwhile through, and a stream of writers lets a
// waiting gc through. Of two lockers that conflict, the newer waits for the
// older; both create before they list, so at least one sees the other (this
// needs a listing that includes every write that returned before it:
// Properties.ConsistentList, true of AWS S3, versitygw and SeaweedFS). A lock
// is rewritten with a later expiry every RemoteLockTTL/4 while held and while
// waiting; a lock whose holder died expires after RemoteLockTTL (plus a minute
// of allowance for clocks that disagree) and is deleted by whoever finds it.

// lockObject is a lock's content.
type lockObject struct {
	Exclusive bool `json:"exclusive"`
	// Waiting marks a shared lock queued behind an exclusive one: it does not
	// hold anything yet, so newer exclusive lockers may pass it.
	Waiting bool      `json:"waiting,omitempty"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
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
	l := &remoteLock{s: s, name: newLockName(time.Now()), obj: lockObject{Exclusive: exclusive, Waiting: !exclusive, Host: host, PID: os.Getpid(), Created: time.Now().UTC()}}
	if err := l.write(ctx); err != nil {
		return nil, err
	}
	for {
		blocked, holder, err := s.lockBlockers(ctx, l)
		if err != nil {
			l.delete()
			return nil, err
		}
		switch {
		case !blocked && l.obj.Waiting:
			// Nothing older blocks this writer: become active, then look again
			// for an exclusive locker that saw it waiting.
			l.obj.Waiting = false
			if err := l.write(ctx); err != nil {
				l.delete()
				return nil, err
			}
			continue
		case !blocked:
			l.stop = make(chan struct{})
			l.done.Add(1)
			go l.keepAlive()
			return l, nil
		case !exclusive && !l.obj.Waiting:
			// An older gc appeared between the two listings: queue behind it.
			l.obj.Waiting = true
			if err := l.write(ctx); err != nil {
				l.delete()
				return nil, err
			}
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
		if time.Until(l.obj.Expires) < s.lockTTL()/2 {
			if err := l.write(ctx); err != nil {
				l.delete()
				return nil, err
			}
		}
	}
}

// lockBlockers lists the other lock objects and reports whether one blocks l
// (see the rules above), and which. Expired locks are deleted on the way.
func (s *Store) lockBlockers(ctx context.Context, l *remoteLock) (blocked bool, holder string, err error) {
	be := s.remote.be
	var names []string
	err = be.List(ctx, remoteLocksDir, func(oi backend.ObjectInfo) error {
		if oi.Name != l.name && strings.HasSuffix(oi.Name, ".lock") {
			names = append(names, oi.Name)
		}
		return nil
	})
	if err != nil {
		return false, "", fmt.Errorf("list locks: %w", err)
	}
	now := time.Now()
	for _, name := range names {
		data, _, err := backend.ReadAll(ctx, be, name)
		if errors.Is(err, backend.ErrNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return false, "", fmt.Errorf("read lock %s: %w", name, err)
		}
		var o lockObject
		if json.Unmarshal(data, &o) != nil || now.After(o.Expires.Add(lockClockSlack)) {
			// Its holder died (or never finished writing it): it no longer
			// protects anything.
			_ = be.Delete(ctx, name)
			continue
		}
		older := name < l.name
		var blocks bool
		if l.obj.Exclusive {
			blocks = (o.Exclusive && older) || (!o.Exclusive && (older || !o.Waiting))
		} else {
			blocks = o.Exclusive && older
		}
		if blocks {
			return true, fmt.Sprintf("%s held by %s pid %d since %s", name, o.Host, o.PID, o.Created.Format(time.RFC3339)), nil
		}
	}
	return false, "", nil
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
