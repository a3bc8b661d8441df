//go:build !linux

package consultest

import "os/exec"

// setPdeathsig does nothing where the kernel cannot kill a child with its
// parent; Stop in the test's cleanup still ends the agent.
func setPdeathsig(*exec.Cmd) {}
