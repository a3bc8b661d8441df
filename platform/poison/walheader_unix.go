//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package poison

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// walHeader is SQLite's WAL-index header of one database, mapped read-only
// from its -shm file: the memory every SQLite connection on this machine
// reads and writes it in (https://sqlite.org/walformat.html, "The WAL-Index
// Header"). The header is 48 bytes, kept twice: a commit writes the second
// copy, then the first, and a reader that finds the two equal has read a
// header no commit was changing. Read-only: the index never writes it.
type walHeader struct {
	mem []byte
}

// walHeaderSnapshot is one read of the header: the transaction counter
// (iChange), the last valid frame, the page count, the checksums and the
// salts that a WAL reset changes.
type walHeaderSnapshot [walHeaderWords]uint32

const (
	walHeaderWords = 12 // one copy: 48 bytes
	walHeaderBytes = 2 * walHeaderWords * 4
)

// errNoMmap says the header cannot be mapped on this platform.
var errNoMmap = errors.New("mapping the WAL-index header is not supported on this platform")

// mapWALHeader maps the header of the -shm file at path. The file must be in
// use by an open connection (which keeps SQLite from truncating it) for as
// long as the mapping is read.
func mapWALHeader(path string) (*walHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open the WAL index %s: %w", path, err)
	}
	defer f.Close() // the mapping outlives the descriptor
	if st, err := f.Stat(); err != nil || st.Size() < walHeaderBytes {
		return nil, fmt.Errorf("open the WAL index %s: too short to hold a header", path)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, walHeaderBytes, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the WAL index %s: %w", path, err)
	}
	return &walHeader{mem: mem}, nil
}

// read returns the header, and false when its two copies differ (a commit
// is writing it) or it was never initialised.
func (h *walHeader) read() (walHeaderSnapshot, bool) {
	var a, b walHeaderSnapshot
	for i := range a {
		a[i] = atomic.LoadUint32((*uint32)(unsafe.Pointer(&h.mem[4*i])))
	}
	for i := range b {
		b[i] = atomic.LoadUint32((*uint32)(unsafe.Pointer(&h.mem[4*(walHeaderWords+i)])))
	}
	return a, a == b && a[0] != 0 // a[0] is iVersion, 3007000 once initialised
}

// close unmaps the header.
func (h *walHeader) close() error {
	if h == nil || h.mem == nil {
		return nil
	}
	err := syscall.Munmap(h.mem)
	h.mem = nil
	return err
}
