#!/usr/bin/env bash
# The project's test command (README): formatting, lints, then every test of the workspace,
# including end-to-end tests that run the real gateway and agent binaries over loopback mTLS.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== browser test tools (headless Chromium + Playwright for the console test)"
scripts/browser-tools.sh
# The Node.js that browser-tools.sh unpacked when the system's was missing or older than 20
# (tests/console.rs runs `node` from PATH).
if [ -x target/tools/node/bin/node ]; then
  export PATH="$PWD/target/tools/node/bin:$PATH"
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build binaries used by end-to-end tests"
cargo build --workspace --bins --locked
echo "== cargo test"
cargo test --workspace --locked
