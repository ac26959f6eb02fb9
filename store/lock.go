package store

import (
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

// writerLock is taken (shared) by every operation that adds objects; gc takes it
// exclusively. It closes the race where an import reuses a chunk that gc has just
// decided is garbage: while any writer runs, gc waits.
func (s *Store) writerLock() (*fileLock, error) {
	turn, err := lockFile(s.lockPath("gc.turnstile"), false, s.opts.LockTimeout, "gc is waiting to run")
	if err != nil {
		return nil, err
	}
	turn.Unlock()
	return lockFile(s.lockPath("gc.lock"), false, s.opts.LockTimeout, "gc is running")
}

// exclusiveLock takes the gc lock exclusively (gc, repair), holding the turnstile
// while it waits so that new writers queue behind it.
func (s *Store) exclusiveLock() (*fileLock, error) {
	turn, err := lockFile(s.lockPath("gc.turnstile"), true, s.opts.LockTimeout, "another gc or repair is waiting")
	if err != nil {
		return nil, err
	}
	defer turn.Unlock()
	return lockFile(s.lockPath("gc.lock"), true, s.opts.LockTimeout, "imports are running")
}
