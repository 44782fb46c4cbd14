#!/usr/bin/env bash
# Installs SoftHSM 2 (a PKCS#11 token in files) when missing, for the tests of
# the pkcs11 KEK provider (keys/pkcs11_test.go). Those tests skip without it,
# unless CI is set: then they fail. Debian/Ubuntu: apt-get install softhsm2.
set -euo pipefail

log() { printf 'ensure-softhsm: %s\n' "$*" >&2; }

module_present() {
	local m
	for m in "${PGPHI_TEST_SOFTHSM_MODULE:-}" /usr/lib/softhsm/libsofthsm2.so \
		/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so \
		/usr/local/lib/softhsm/libsofthsm2.so; do
		[[ -n "$m" && -f "$m" ]] && return 0
	done
	return 1
}

# The provider uses cgo (github.com/miekg/pkcs11): go disables cgo when no C
# compiler is found, and the PKCS#11 tests would then not be built.
need=()
command -v "${CC:-gcc}" >/dev/null 2>&1 || need+=(gcc libc6-dev)
if module_present && command -v softhsm2-util >/dev/null 2>&1 && [[ ${#need[@]} -eq 0 ]]; then
	log "softhsm2 present ($(softhsm2-util --version 2>/dev/null || echo unknown version))"
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	log "softhsm2 is missing and apt-get is not available: install SoftHSM 2 (the PKCS#11 tests skip without it unless CI is set)"
	exit 1
fi
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo -n)
	else
		log "softhsm2 is missing and this is not root: apt-get install softhsm2"
		exit 1
	fi
fi
log "installing softhsm2 ${need[*]} with apt-get"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends softhsm2 "${need[@]}"
module_present || { log "softhsm2 installed but libsofthsm2.so not found: set PGPHI_TEST_SOFTHSM_MODULE"; exit 1; }
