//go:build unix

package keys

import (
	"os"
	"syscall"
)

// permsEnforced: Unix permission bits are meaningful.
const permsEnforced = true

// fileOwner returns the uid owning the file.
func fileOwner(fi os.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
