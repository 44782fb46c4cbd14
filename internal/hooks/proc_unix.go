//go:build unix

package hooks

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup puts the hook in a process group of its own and makes a
// timeout or cancellation kill the whole group, so children the hook
// started (a shell's sleep, a backgrounded job) die with it.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
