package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// fileLock is an advisory flock(2) on a lock file. The kernel drops it when the
// process dies, so a crashed heft never leaves a stale lock behind.
type fileLock struct {
	f *os.File
}

// lockFile takes a shared or exclusive lock on path, retrying until timeout. what
// describes the lock for the busy message.
func lockFile(path string, exclusive bool, timeout time.Duration, what string) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	deadline := time.Now().Add(timeout)
	for {
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("%w: %s (waited %s for %s)", ErrBusy, what, timeout, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *fileLock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	_ = l.f.Close()
	l.f = nil
}

// The gc lock: writers hold locks/gc.lock shared for their whole run, gc and
// repair hold it exclusively. flock has no fairness, so with writers overlapping one
// another an exclusive locker could wait forever; a turnstile (locks/gc.turnstile)
// gives it its turn: the exclusive locker holds the turnstile while it waits for the
// writers in flight to finish, and a new writer passes the turnstile (shared, for
// an instant) before taking its shared lock, so it queues behind a waiting gc.

func (s *Store) lockPath(name string) string { return filepath.Join(s.dir, "locks", name) }

// storeLock is the gc lock as one operation holds it: the flock between this
// node's processes and, in a shared store, a lock object in the backend between
// nodes (lock_remote.go).
type storeLock struct {
	file   *fileLock
	remote *remoteLock
}

// Unlock releases both halves; it may be called more than once.
func (l *storeLock) Unlock() {
	if l == nil {
		return
	}
	l.remote.release()
	l.remote = nil
	l.file.Unlock()
}

// writerLock is taken (shared) by every operation that adds objects; gc takes it
// exclusively. It closes the race where an import reuses a chunk that gc has just
// decided is garbage: while any writer runs, gc waits. In a shared store the
// writer then refreshes the index, so it dedups against every pack in the
// backend and never against one that gc on another node removed.
func (s *Store) writerLock() (*storeLock, error) {
	turn, err := lockFile(s.lockPath("gc.turnstile"), false, s.opts.LockTimeout, "gc is waiting to run")
	if err != nil {
		return nil, err
	}
	turn.Unlock()
	f, err := lockFile(s.lockPath("gc.lock"), false, s.opts.LockTimeout, "gc is running")
	if err != nil {
		return nil, err
	}
	return s.withRemoteLock(f, false, true)
}

// exclusiveLock takes the gc lock exclusively (gc, repair), holding the turnstile
// while it waits so that new writers queue behind it.
func (s *Store) exclusiveLock() (*storeLock, error) { return s.exclusiveLockRefresh(true) }

// exclusiveLockRefresh is exclusiveLock, refreshing the index of a shared store
// under it only if refresh (repair rebuilds the index instead).
func (s *Store) exclusiveLockRefresh(refresh bool) (*storeLock, error) {
	turn, err := lockFile(s.lockPath("gc.turnstile"), true, s.opts.LockTimeout, "another gc or repair is waiting")
	if err != nil {
		return nil, err
	}
	defer turn.Unlock()
	f, err := lockFile(s.lockPath("gc.lock"), true, s.opts.LockTimeout, "imports are running")
	if err != nil {
		return nil, err
	}
	return s.withRemoteLock(f, true, refresh)
}

// withRemoteLock adds the backend's lock object to a held flock (shared stores)
// and refreshes the index under it.
func (s *Store) withRemoteLock(f *fileLock, exclusive, refresh bool) (*storeLock, error) {
	l := &storeLock{file: f}
	if s.remote == nil {
		return l, nil
	}
	ctx := context.Background()
	rl, err := s.acquireRemoteLock(ctx, exclusive)
	if err != nil {
		f.Unlock()
		return nil, err
	}
	l.remote = rl
	if !refresh {
		return l, nil
	}
	if err := s.refreshIndex(ctx, true); err != nil {
		l.Unlock()
		return nil, err
	}
	return l, nil
}
