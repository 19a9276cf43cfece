#!/usr/bin/env bash
# What the browser tests of tests/test_tiles.py need beyond the Python test extra (which
# brings Playwright's Python client): Debian's chromium, which Playwright drives instead of
# a browser build of its own, and the viewers OpenSeadragon and Leaflet from the npm
# registry, at the versions .ci/npm/package-lock.json pins, into .ci/npm/node_modules.
# Without them those tests skip, saying which is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
npm ci --prefix .ci/npm --no-audit --no-fund --loglevel=error
