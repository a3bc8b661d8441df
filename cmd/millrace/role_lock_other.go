//go:build !unix

package main

import (
	"context"
	"errors"
	"time"
)

// fileLock needs flock(2); the roles that share a data directory run on
// Unix only (the image is Linux). See role_lock_unix.go.
type fileLock struct{ path string }

var errNoFileLock = errors.New("file locks need a Unix system: run the roles that share a data directory on Linux")

func newFileLock(path string) *fileLock                       { return &fileLock{path: path} }
func (l *fileLock) tryLock() (bool, error)                    { return false, errNoFileLock }
func (l *fileLock) lock(context.Context, time.Duration) error { return errNoFileLock }
func (l *fileLock) unlock() error                             { return nil }
