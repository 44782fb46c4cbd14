#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries (initdb, pg_ctl, postgres) are
# installed, installing Debian's postgresql packages if they are not.
# Idempotent. The tests and `pgphi demo` start their own throwaway clusters
# (internal/pgcluster); the distribution's cluster service is not used.
set -euo pipefail

log() { printf 'ensure-postgres: %s\n' "$*" >&2; }

find_initdb() {
	if [[ -n "${PGPHI_PG_BINDIR:-}" && -x "${PGPHI_PG_BINDIR}/initdb" ]]; then
		echo "${PGPHI_PG_BINDIR}/initdb"
		return 0
	fi
	if command -v initdb >/dev/null 2>&1; then
		command -v initdb
		return 0
	fi
	local f
	for f in /usr/lib/postgresql/*/bin/initdb; do
		if [[ -x "$f" ]]; then
			echo "$f"
			return 0
		fi
	done
	return 1
}

# As root, the server runs as the unprivileged "postgres" OS user
# (PostgreSQL refuses to run as root).
ensure_postgres_user() {
	if [[ "$(id -u)" -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
		log "creating OS user postgres"
		if getent group postgres >/dev/null 2>&1; then
			useradd --system --no-create-home --gid postgres postgres
		else
			useradd --system --no-create-home --user-group postgres
		fi
	fi
}

# pg_repack lets cleanup purge old row versions online instead of with
# VACUUM FULL. Optional: failure to install it is not an error.
ensure_repack() {
	local bindir major
	bindir="$(dirname "$(readlink -f "$initdb_path")")"
	if [[ -x "$bindir/pg_repack" ]]; then
		return 0
	fi
	major="$("$initdb_path" --version 2>/dev/null | grep -oE '[0-9]+' | head -n 1)"
	[[ -n "$major" ]] || return 0
	local sudo=()
	if [[ "$(id -u)" -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 || { log "pg_repack not installed (no root): cleanup will use VACUUM FULL"; return 0; }
		sudo=(sudo -n)
	fi
	command -v apt-get >/dev/null 2>&1 || return 0
	log "installing postgresql-$major-repack (optional)"
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "postgresql-$major-repack" >/dev/null 2>&1; then
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "postgresql-$major-repack" >/dev/null 2>&1 \
			|| log "pg_repack could not be installed: cleanup will use VACUUM FULL"
	fi
	return 0
}

if initdb_path="$(find_initdb)"; then
	log "PostgreSQL server binaries found: $("$initdb_path" --version 2>/dev/null || echo "$initdb_path")"
	ensure_postgres_user
	ensure_repack
	exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
	SUDO=()
elif command -v sudo >/dev/null 2>&1; then
	SUDO=(sudo)
else
	log "PostgreSQL server binaries (initdb) not found, and not root and no sudo to install them."
	log "Install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql postgresql-contrib)"
	log "or set PGPHI_PG_BINDIR to the directory containing initdb."
	exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
	log "PostgreSQL server binaries (initdb) not found and apt-get is not available;"
	log "install the PostgreSQL server with your package manager or set PGPHI_PG_BINDIR."
	exit 1
fi

log "installing postgresql and postgresql-contrib with apt-get"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	postgresql postgresql-contrib

if ! initdb_path="$(find_initdb)"; then
	log "postgresql was installed but initdb is still not found under /usr/lib/postgresql/*/bin"
	exit 1
fi
log "installed: $("$initdb_path" --version 2>/dev/null || echo "$initdb_path")"
ensure_postgres_user
ensure_repack
