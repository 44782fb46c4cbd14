#!/usr/bin/env bash
# Makes sure Debian's Python 3 with SQLAlchemy, psycopg2, cryptography and
# phonenumbers is present, for the Python examples (examples/decrypt-python,
# examples/felicity-python), the independent phone term check
# (testdata/independent/phone.py) and the tests that run them. The tests use
# /usr/bin/python3 (or $PGPHI_PYTHON), never a python3 found on PATH: a
# pyenv or virtualenv interpreter there usually lacks Debian's modules.
# The tests skip without these modules, unless CI is set: then they fail.
set -euo pipefail

log() { printf 'ensure-python: %s\n' "$*" >&2; }

PY="${PGPHI_PYTHON:-/usr/bin/python3}"
PACKAGES=(python3 python3-sqlalchemy python3-psycopg2 python3-cryptography python3-phonenumbers)
MODULES="sqlalchemy, psycopg2, cryptography or phonenumbers"

have_modules() {
	[[ -x "$PY" ]] && "$PY" -c 'import sqlalchemy, psycopg2, cryptography.hazmat.primitives.ciphers.aead, phonenumbers' >/dev/null 2>&1
}

if have_modules; then
	log "$PY present ($("$PY" -c 'import sys, sqlalchemy, psycopg2, cryptography, phonenumbers; print("Python", sys.version.split()[0], "SQLAlchemy", sqlalchemy.__version__, "psycopg2", psycopg2.__version__.split()[0], "cryptography", cryptography.__version__, "phonenumbers", phonenumbers.__version__)'))"
	exit 0
fi
if [[ -n "${PGPHI_PYTHON:-}" ]]; then
	log "$PY (PGPHI_PYTHON) lacks $MODULES: install them for that interpreter, or unset PGPHI_PYTHON to use Debian's /usr/bin/python3"
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	log "$PY lacks $MODULES and apt-get is not available: install ${PACKAGES[*]} (or set PGPHI_PYTHON to an interpreter that has them)"
	exit 1
fi
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
		SUDO=(sudo -n)
	else
		log "$PY lacks $MODULES and this is not root: run, as root, apt-get install ${PACKAGES[*]}"
		exit 1
	fi
fi
log "installing ${PACKAGES[*]} with apt-get"
install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; }
if ! install; then
	log "apt-get install failed; updating the package lists once and retrying"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	install
fi
have_modules || { log "installed ${PACKAGES[*]} but $PY still cannot import sqlalchemy, psycopg2, cryptography and phonenumbers"; exit 1; }
log "$PY ready"
