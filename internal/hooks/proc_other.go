//go:build !unix

package hooks

import "os/exec"

// ownProcessGroup: without process groups, a timeout kills the hook
// process only (exec.CommandContext's default).
func ownProcessGroup(cmd *exec.Cmd) {}
