package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"
)

// Source is where a configuration document lives: a file here, a Consul KV
// key later. Implementations must be safe for concurrent use.
type Source interface {
	// Name identifies the document in messages (a path, a key). Its
	// extension selects the format unless Options.Format is set.
	Name() string
	// Read returns the document as it is now.
	Read(ctx context.Context) ([]byte, error)
	// Watch calls changed whenever the document may have changed, and once
	// as soon as it is watching, so that a change made between a Read and
	// the start of Watch is not missed. It returns nil when ctx ends, or an
	// error when it cannot watch. Calls may be spurious: Live compares the
	// document with the last one it saw. changed does not block.
	Watch(ctx context.Context, changed func()) error
}

// MaxDocumentBytes bounds the size of a configuration document.
const MaxDocumentBytes = 1 << 20

// File is a configuration file. It watches the file's directory, not the
// file, so that it sees the ways editors and tools save: writing in place,
// writing a new file and renaming it over the old one, deleting and
// creating, and swapping a symbolic link (as Kubernetes does with mounted
// ConfigMaps). A File is Writable (see file_write.go). A File is safe for
// concurrent use.
type File struct {
	path string

	mu           sync.Mutex
	note         Note   // the note of the last Write
	noteRevision string // the revision it wrote, once known
}

// NewFile returns the file at path as a Source.
func NewFile(path string) *File { return &File{path: path} }

// Name returns the path as given.
func (f *File) Name() string { return f.path }

// Read returns the file's contents, refusing a file larger than
// MaxDocumentBytes.
func (f *File) Read(ctx context.Context) ([]byte, error) {
	data, _, err := f.ReadRevision(ctx)
	return data, err
}

// ReadRevision returns the file's contents and its revision: the
// modification time, in nanoseconds, of the file read.
func (f *File) ReadRevision(context.Context) ([]byte, string, error) {
	file, err := os.Open(f.path)
	if err != nil {
		return nil, "", fmt.Errorf("read configuration file: %w", err)
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("read configuration file %s: %w", f.path, err)
	}
	data, err := io.ReadAll(io.LimitReader(file, MaxDocumentBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("read configuration file %s: %w", f.path, err)
	}
	if len(data) > MaxDocumentBytes {
		return nil, "", fmt.Errorf("read configuration file %s: larger than %d bytes", f.path, MaxDocumentBytes)
	}
	return data, fileRevision(fi), nil
}

// Watch reports changes of the file until ctx ends. It reacts to every
// event on the file's name and, when that name is a symbolic link, to
// every event in its directory.
func (f *File) Watch(ctx context.Context, changed func()) error {
	abs, err := filepath.Abs(f.path)
	if err != nil {
		return fmt.Errorf("watch configuration file %s: %w", f.path, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch configuration file %s: %w", f.path, err)
	}
	defer w.Close()
	dir := filepath.Dir(abs)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch directory %s of configuration file %s: %w", dir, f.path, err)
	}
	changed()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) == abs || isSymlink(abs) {
				changed()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				changed() // events were lost: look again
				continue
			}
			return fmt.Errorf("watch configuration file %s: %w", f.path, err)
		}
	}
}

func isSymlink(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}
