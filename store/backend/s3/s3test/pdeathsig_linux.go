package s3test

import (
	"os/exec"
	"syscall"
)

// setPdeathsig has the kernel kill the server if the test process dies without
// running its cleanups, so no server outlives its test on a shared machine.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
