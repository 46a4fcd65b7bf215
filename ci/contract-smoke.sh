#!/usr/bin/env bash
# Builds the release binaries and runs the shared contract smoke test, when the
# shared/ folder sits beside the checkout (as it does for developers and CI).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=../shared/contract-smoke
if [ ! -f "$smoke" ]; then
  echo "contract smoke: $smoke not found; skipped"
  exit 0
fi
cargo build --release --locked
python3 "$smoke"
