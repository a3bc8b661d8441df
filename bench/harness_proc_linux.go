package bench

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill a server when the harness dies, so a
// crashed run leaves nothing listening.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
