//go:build !linux

package bench

import "os/exec"

// setPdeathsig does nothing where the kernel cannot kill a child with its
// parent; the harness stops its servers itself.
func setPdeathsig(*exec.Cmd) {}
