//go:build linux

package keys

import "golang.org/x/sys/unix"

// ProtectProcess makes the process non-dumpable (prctl PR_SET_DUMPABLE 0):
// other processes of the same OS user (without CAP_SYS_PTRACE) can no
// longer read /proc/PID/environ or /proc/PID/mem nor attach a debugger, and
// no core dump is written. /proc/PID/cmdline stays readable by everyone. /proc/PID/environ keeps
// the environment pgphi started with even after os.Unsetenv, so this is what
// protects a passphrase given in PGPHI_PASSPHRASE from a hook or any other
// process of the same user. Children reset the flag when they exec, so it
// does not restrict them. Call it first thing in main.
func ProtectProcess() error {
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}
