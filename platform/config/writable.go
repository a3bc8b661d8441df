package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"
)

// Writable is a Source millrace can write: `millrace config set` and
// rollbacks write to it, and its changes are recorded in the history.
// File and ConsulKV are Writable. Implementations must be safe for
// concurrent use.
type Writable interface {
	Source
	// ID names the document in the history of changes: the same document
	// has the same ID in every process and across restarts.
	ID() string
	// ReadRevision returns the document and its revision, a string that
	// changes whenever the document is written. A document that does not
	// exist is an error wrapping fs.ErrNotExist.
	ReadRevision(ctx context.Context) (data []byte, revision string, err error)
	// Write replaces the document with data if its revision is still
	// ifRevision ("" for a document that does not exist yet), else fails
	// with an error wrapping ErrConflict. It stores note with the document,
	// so that whoever records the change can tell who made it (NoteFor),
	// and returns the new revision.
	Write(ctx context.Context, data []byte, ifRevision string, note Note) (revision string, err error)
	// NoteFor returns the note stored by the Write of data at revision, or
	// ok false when that document was not written by millrace (someone
	// edited the file or wrote the key directly).
	NoteFor(ctx context.Context, data []byte, revision string) (note Note, ok bool, err error)
}

// Note says who changed a document, how and why. It travels with the
// document (beside a Consul key, in the memory of the process that wrote a
// file) and ends in the history of changes.
type Note struct {
	// Who made the change: `millrace config set --as`, else $USER.
	Who string `json:"who"`
	// Via says how: "config set gateway.max_in_flight", "rollback to version 3".
	Via string `json:"via"`
	// Reason is the free text of --reason, if any.
	Reason string `json:"reason,omitempty"`
	// At is when the document was written.
	At time.Time `json:"at"`
	// SHA256 is the hex SHA-256 of the document written; Write sets it.
	SHA256 string `json:"sha256"`
}

// ErrConflict is wrapped by the error of a Write that lost a race: the
// document changed since it was read. Read it again and retry.
var ErrConflict = errors.New("the document changed since it was read")

// ErrNotWritable is wrapped by the error of a Set or Rollback on a
// configuration that has no writable source.
var ErrNotWritable = errors.New("no writable configuration source")

// SourceState is the health of a source that talks to a remote store.
type SourceState struct {
	// Source is the source's name.
	Source string `json:"source"`
	// Healthy is false while the store cannot be reached or refuses.
	Healthy bool `json:"healthy"`
	// Error says why, while not healthy.
	Error string `json:"error,omitempty"`
	// Since is when the source became healthy or not.
	Since time.Time `json:"since"`
	// Revision is the revision of the document read last.
	Revision string `json:"revision,omitempty"`
}

// digest is the hex SHA-256 of data.
func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
