// Command pgphi encrypts the PHI columns of a live PostgreSQL database. See
// README.md and `pgphi --help`.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/pgphi/pgphi/internal/cli"
	"github.com/pgphi/pgphi/keys"
)

func main() {
	// Before anything else: other processes of the same OS user (a hook,
	// anything the hook starts) must not read this process's memory or its
	// /proc/PID/environ, which keeps PGPHI_PASSPHRASE and PGPASSWORD even
	// after os.Unsetenv; this also turns core dumps off.
	if err := keys.ProtectProcess(); err != nil {
		fmt.Fprintf(os.Stderr, "pgphi: cannot protect the process (prctl PR_SET_DUMPABLE): %v\n", err)
		os.Exit(cli.ExitFailed)
	}
	// Read the passphrase once and take it out of the environment, so no
	// child inherits it. A passphrase source that cannot be read is
	// reported by the first command that needs a key.
	_ = keys.CaptureSecrets()
	// pgphi's live heap is small (a few batches of rows), so with the default
	// GOGC=100 a backfill collects many times a second and the collector
	// takes CPU from the database server on the same machine. A larger
	// target costs some MiB, not growth with the table. GOGC set in the
	// environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
