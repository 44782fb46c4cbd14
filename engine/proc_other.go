//go:build !linux

package engine

import "os/exec"

// dieWithPgphi does nothing where the kernel has no parent-death signal; a
// rerun waits for a leftover pg_repack instead (runRepack).
func dieWithPgphi(*exec.Cmd) {}
