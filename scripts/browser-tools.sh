#!/usr/bin/env bash
# Installs what the console's browser test (tests/console.rs) needs when missing: Debian's
# chromium (as root, with apt-get) and the pinned Playwright package (npm ci, from
# tests/console/package-lock.json; Playwright downloads no browser of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "browser-tools: /usr/bin/chromium is missing: install Debian's chromium package (or set CHROMIUM)" >&2
    exit 1
  fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "browser-tools: Node.js 20+ and npm are needed" >&2
    exit 1
  fi
fi
if [ ! -d tests/console/node_modules/playwright-core ]; then
  npm ci --prefix tests/console --no-audit --no-fund --loglevel=error
fi
