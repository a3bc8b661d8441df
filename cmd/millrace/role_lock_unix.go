//go:build unix

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// fileLock is an exclusive lock on a file, shared by the processes of one
// machine (flock(2)): the instances of a role that share a data directory
// take turns with it, and the kernel releases it when its holder exits, a
// kill -9 included. It is not safe for concurrent use; one goroutine of a
// process holds it.
type fileLock struct {
	path string
	f    *os.File
}

// newFileLock returns the lock of the file at path, created when missing.
func newFileLock(path string) *fileLock { return &fileLock{path: path} }

// tryLock takes the lock if no other process holds it, without waiting.
// It reports whether this process holds it now.
func (l *fileLock) tryLock() (bool, error) {
	if l.f != nil {
		return true, nil
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false, fmt.Errorf("open lock file %s: %w", l.path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil
		}
		return false, fmt.Errorf("lock %s: %w", l.path, err)
	}
	l.f = f
	return true, nil
}

// lock waits until it holds the lock, polling every interval, or ctx ends.
func (l *fileLock) lock(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		held, err := l.tryLock()
		if err != nil || held {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for lock %s: %w", l.path, ctx.Err())
		case <-tick.C:
		}
	}
}

// unlock releases the lock; releasing a lock not held does nothing.
func (l *fileLock) unlock() error {
	if l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	// Closing the file releases the lock.
	if err := f.Close(); err != nil {
		return fmt.Errorf("release lock %s: %w", l.path, err)
	}
	return nil
}
