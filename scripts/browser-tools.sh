#!/usr/bin/env bash
# Installs what the console's browser test (tests/console.rs) needs when missing: Debian's
# chromium (as root, with apt-get), Node.js 20 or later, and the pinned Playwright package
# (npm ci, from tests/console/package-lock.json; Playwright downloads no browser of its own).
#
# Node.js: the pinned playwright-core needs Node 20+ (its package.json `engines`, and
# lib/bootstrap.js exits on anything older), but Debian 12's `nodejs` package is Node 18. So
# when `node` is missing or older than 20, or `npm` is missing, this script installs the
# official nodejs.org binary of NODE_VERSION below, checks its SHA-256, and unpacks it into
# target/tools/node (no root needed). scripts/test.sh puts target/tools/node/bin first on PATH
# when it exists; to run the browser test by hand, do the same:
#   export PATH="$PWD/target/tools/node/bin:$PATH"
# NODE_DIST_URL overrides https://nodejs.org/dist (a mirror with the same layout).
set -euo pipefail
cd "$(dirname "$0")/.."

# Node.js 22 LTS; the SHA-256 of each archive is the one in nodejs.org's SHASUMS256.txt.
NODE_VERSION=22.12.0
NODE_MIN_MAJOR=20
NODE_DIR=target/tools/node

say() { echo "browser-tools: $*"; }
fail() {
  echo "browser-tools: $*" >&2
  exit 1
}
as_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  if as_root_with_apt; then
    say "installing Debian's chromium (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    fail "/usr/bin/chromium is missing: install Debian's chromium package (or set CHROMIUM)"
  fi
fi

# A Node.js unpacked here by an earlier run comes first, as in scripts/test.sh.
if [ -x "$NODE_DIR/bin/node" ]; then
  export PATH="$PWD/$NODE_DIR/bin:$PATH"
fi

# The major version of the `node` on PATH (0 when there is none or it does not run).
node_major() {
  local v
  v=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || v=0
  case "$v" in
    '' | *[!0-9]*) echo 0 ;;
    *) echo "$v" ;;
  esac
}

install_node() {
  local arch sha
  case "$(uname -m)" in
    x86_64 | amd64)
      arch=x64
      sha=22982235e1b71fa8850f82edd09cdae7e3f32df1764a9ec298c72d25ef2c164f
      ;;
    aarch64 | arm64)
      arch=arm64
      sha=8cfd5a8b9afae5a2e0bd86b0148ca31d2589c0ea669c2d0b11c132e35d90ed68
      ;;
    *) fail "no pinned Node.js build for $(uname -m): install Node.js $NODE_MIN_MAJOR+ and npm yourself" ;;
  esac
  local name="node-v$NODE_VERSION-linux-$arch"
  local url="${NODE_DIST_URL:-https://nodejs.org/dist}/v$NODE_VERSION/$name.tar.xz"
  if ! command -v curl >/dev/null || ! command -v xz >/dev/null; then
    if as_root_with_apt; then
      say "installing curl and xz-utils (apt-get) to fetch Node.js"
      apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl ca-certificates xz-utils >/dev/null
    else
      fail "curl and xz are needed to fetch Node.js $NODE_VERSION: install them (or Node.js $NODE_MIN_MAJOR+ and npm)"
    fi
  fi
  say "downloading $url"
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL --retry 3 -o "$tmp/$name.tar.xz" "$url" ||
    fail "cannot download $url: check the network or set NODE_DIST_URL to a mirror"
  echo "$sha  $tmp/$name.tar.xz" | sha256sum --check --status ||
    fail "$name.tar.xz does not have the pinned SHA-256 $sha: not installed"
  say "SHA-256 checked; unpacking into $NODE_DIR"
  tar -xJf "$tmp/$name.tar.xz" -C "$tmp"
  rm -rf "$NODE_DIR"
  mkdir -p "$(dirname "$NODE_DIR")"
  mv "$tmp/$name" "$NODE_DIR"
  rm -rf "$tmp"
  trap - EXIT
  export PATH="$PWD/$NODE_DIR/bin:$PATH"
}

have=$(node_major)
if [ "$have" -lt "$NODE_MIN_MAJOR" ] || ! command -v npm >/dev/null; then
  if [ "$have" = 0 ]; then
    say "Node.js is missing; Playwright needs $NODE_MIN_MAJOR or later"
  elif [ "$have" -lt "$NODE_MIN_MAJOR" ]; then
    say "$(command -v node) is Node.js $(node --version); Playwright needs $NODE_MIN_MAJOR or later"
  else
    say "npm is missing"
  fi
  say "installing the official Node.js $NODE_VERSION into $NODE_DIR (scripts/test.sh puts its bin/ first on PATH)"
  install_node
  have=$(node_major)
  [ "$have" -ge "$NODE_MIN_MAJOR" ] || fail "$NODE_DIR/bin/node does not run as Node.js $NODE_MIN_MAJOR+"
fi
say "using $(command -v node) ($(node --version)) and npm $(npm --version)"

if [ ! -d tests/console/node_modules/playwright-core ]; then
  say "npm ci in tests/console (the pinned playwright-core)"
  npm ci --prefix tests/console --no-audit --no-fund --loglevel=error
fi
