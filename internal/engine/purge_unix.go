//go:build unix

package engine

import (
	"os"
	"syscall"
)

// ownedByRootOrMe reports whether root or the user running pgphi owns fi.
func ownedByRootOrMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && (st.Uid == 0 || int(st.Uid) == os.Geteuid())
}
