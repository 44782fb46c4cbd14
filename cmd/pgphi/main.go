// Command pgphi encrypts the PHI columns of a live PostgreSQL database. See
// README.md and `pgphi --help`.
package main

import (
	"os"

	"github.com/pgphi/pgphi/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
