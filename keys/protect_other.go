//go:build !linux

package keys

// ProtectProcess does nothing outside Linux: there is no /proc/PID/environ
// to protect there, and core dumps are left to the system's settings.
func ProtectProcess() error { return nil }
