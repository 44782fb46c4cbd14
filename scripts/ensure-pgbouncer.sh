#!/usr/bin/env bash
# Installs PgBouncer when missing, for the test that pgphi refuses a
# transaction-pooling proxy (internal/dbconn/pooler_test.go). The test skips
# without it, unless CI is set: then it fails. Debian/Ubuntu: apt-get install
# pgbouncer (the package's own service is not needed; the test starts its own).
set -euo pipefail

log() { printf 'ensure-pgbouncer: %s\n' "$*" >&2; }

if command -v pgbouncer >/dev/null 2>&1 || [[ -x /usr/sbin/pgbouncer ]]; then
	log "pgbouncer present"
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	log "pgbouncer is missing and apt-get is not available: install PgBouncer (the pooler test skips without it unless CI is set)"
	exit 1
fi
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo -n)
	else
		log "pgbouncer is missing and this is not root: apt-get install pgbouncer"
		exit 1
	fi
fi
log "installing pgbouncer with apt-get"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends pgbouncer \
	|| { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends pgbouncer; }
