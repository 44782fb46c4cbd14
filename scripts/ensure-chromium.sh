#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium when missing, for
# `pgphi report --format pdf` and the browser test of the HTML report
# (internal/report/browser_test.go). That test skips without Chromium unless
# CI is set: then it fails. As root: apt-get install chromium (apt-get update
# once first when the package is not known yet). Not root: says how to
# install it and exits 0, so a developer's `make test` goes on (the browser
# test then skips with the same message).
set -euo pipefail

log() { printf 'ensure-chromium: %s\n' "$*" >&2; }

for b in "${PGPHI_CHROMIUM:-}" chromium chromium-browser google-chrome-stable google-chrome; do
	if [[ -n "$b" ]] && command -v "$b" >/dev/null 2>&1; then
		log "$b present ($("$b" --version 2>/dev/null || echo unknown version))"
		exit 0
	fi
done
if ! command -v apt-get >/dev/null 2>&1; then
	log "chromium is missing and apt-get is not available: install Chromium (the browser test skips without it unless CI is set)"
	exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
	log "chromium is missing and this is not root: skipping its installation; run \`sudo apt-get install chromium\` for the browser test and \`pgphi report --format pdf\`"
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show chromium >/dev/null 2>&1; then
	log "updating the package lists (chromium is not known yet)"
	apt-get update -q
fi
log "installing chromium with apt-get"
if ! apt-get install -y -q --no-install-recommends chromium fonts-liberation; then
	# Stale package lists (a mirror moved on): update once and retry.
	apt-get update -q
	apt-get install -y -q --no-install-recommends chromium fonts-liberation
fi
command -v chromium >/dev/null 2>&1 || { log "chromium installed but not on PATH"; exit 1; }
log "installed $(chromium --version 2>/dev/null || echo chromium)"
