// Command pgphi encrypts the PHI columns of a live PostgreSQL database. See
// README.md and `pgphi --help`.
package main

import (
	"os"
	"runtime/debug"

	"github.com/pgphi/pgphi/cli"
)

func main() {
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
