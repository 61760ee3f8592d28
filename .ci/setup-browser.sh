#!/usr/bin/env bash
# Installs what the browser tests of the web UI need: Debian's Chromium, and playwright-core
# (from ui/tests/browser/package-lock.json) to drive it. Both come from package registries; no
# browser build is downloaded. Run as root (CI is); does nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "ci: installing Debian's chromium for the UI browser tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
command -v chromium >/dev/null 2>&1 || { echo "ci: ERROR: chromium is not installed" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "ci: installing Node.js and npm for the UI browser tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

dir=ui/tests/browser
if [ ! -d "$dir/node_modules/playwright-core" ]; then
  echo "ci: npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "ci: browser tests ready ($(chromium --version 2>/dev/null | head -n1), node $(node --version))"
