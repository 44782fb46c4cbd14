//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package audit

import "os"

// lockFile is a no-op where flock is unavailable: Log's mutex still
// serializes one process; processes sharing a mirror file there must not
// append at the same time (Sync repairs order only if lines are missing, not
// misordered).
func lockFile(*os.File) error { return nil }

func unlockFile(*os.File) {}
