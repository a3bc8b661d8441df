//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package poison

import "errors"

// walHeader cannot be mapped here: the blocked index stays off and Admit
// asks the table for every message (see blockedIndex).
type walHeader struct{}

type walHeaderSnapshot struct{}

var errNoMmap = errors.New("mapping the WAL-index header is not supported on this platform")

func mapWALHeader(string) (*walHeader, error) { return nil, errNoMmap }

func (*walHeader) read() (walHeaderSnapshot, bool) { return walHeaderSnapshot{}, false }

func (*walHeader) close() error { return nil }
