package config

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// ID names the file in the history of changes: file://HOST/ABSOLUTE-PATH,
// since a file is a document of one machine.
func (f *File) ID() string {
	abs, err := filepath.Abs(f.path)
	if err != nil {
		abs = f.path
	}
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	return "file://" + host + filepath.ToSlash(abs)
}

// Write replaces the file's contents with data if its revision is still
// ifRevision (it does not exist, for ""), else fails with ErrConflict. It
// writes a new file beside the old one and renames it over it, so that a
// reader never sees half a document; a symbolic link is followed and its
// target replaced. The file keeps its permissions. note is kept in memory
// for NoteFor: the history of a file is recorded by the process that
// watches it, which is the one that writes it.
//
// The revision check and the rename are not one atomic step: a write by
// another program between the two is overwritten.
func (f *File) Write(_ context.Context, data []byte, ifRevision string, note Note) (string, error) {
	if len(data) > MaxDocumentBytes {
		return "", fmt.Errorf("write configuration file %s: larger than %d bytes", f.path, MaxDocumentBytes)
	}
	target, err := filepath.EvalSymlinks(f.path)
	if err != nil && !os.IsNotExist(err) {
		return "", fmt.Errorf("write configuration file %s: %w", f.path, err)
	}
	if err != nil {
		target = f.path
	}
	mode := fs.FileMode(0o644)
	switch fi, err := os.Stat(target); {
	case err == nil:
		if rev := fileRevision(fi); rev != ifRevision {
			return "", fmt.Errorf("write configuration file %s: %w (revision %s, expected %s)", f.path, ErrConflict, rev, orNone(ifRevision))
		}
		mode = fi.Mode().Perm()
	case os.IsNotExist(err):
		if ifRevision != "" {
			return "", fmt.Errorf("write configuration file %s: %w (it was removed)", f.path, ErrConflict)
		}
	default:
		return "", fmt.Errorf("write configuration file %s: %w", f.path, err)
	}

	note.SHA256 = digest(data)
	f.mu.Lock()
	// Before the rename: the watcher may read the file at once. Its
	// revision is known after the rename.
	f.note, f.noteRevision = note, ""
	f.mu.Unlock()

	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("write configuration file %s: %w", f.path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, nothing is left to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write configuration file %s: %w", f.path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write configuration file %s: %w", f.path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write configuration file %s: %w", f.path, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("write configuration file %s: %w", f.path, err)
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return "", fmt.Errorf("write configuration file %s: %w", f.path, err)
	}
	fi, err := os.Stat(target)
	if err != nil {
		return "", fmt.Errorf("write configuration file %s: %w", f.path, err)
	}
	rev := fileRevision(fi)
	f.mu.Lock()
	if f.note.SHA256 == note.SHA256 {
		f.noteRevision = rev
	}
	f.mu.Unlock()
	return rev, nil
}

// NoteFor returns the note of the last Write when it wrote data at
// revision.
func (f *File) NoteFor(_ context.Context, data []byte, revision string) (Note, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.note.SHA256 == "" || f.note.SHA256 != digest(data) || f.noteRevision != "" && f.noteRevision != revision {
		return Note{}, false, nil
	}
	return f.note, true, nil
}

// fileRevision is a file's modification time in nanoseconds since 1970.
func fileRevision(fi fs.FileInfo) string {
	return strconv.FormatInt(fi.ModTime().UnixNano(), 10)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

var _ Writable = (*File)(nil)
