// Package e2e holds end-to-end tests of the pgphi binary against a real
// PostgreSQL: the binary is built once, every test gets a fresh database and
// drives pgphi the way an operator would, through its command line, exit
// codes and output; the Python examples run against it as separate processes
// (Debian's python3, see scripts/ensure-python.sh), the Felicity service
// beside a real `pgphi serve`. Run with `go test ./e2e/`.
package e2e
