package consultest

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill the agent when the test process dies,
// so that a crashed or timed-out test leaves no agent behind.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
