//go:build linux

package engine

import (
	"os/exec"
	"syscall"
)

// dieWithPgphi asks the kernel to interrupt a helper process (pg_repack)
// when pgphi dies, even by SIGKILL: SIGINT lets pg_repack drop its
// temporary objects, and the rerun does not find it still running.
func dieWithPgphi(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
}
