#!/usr/bin/env bash
# Figures for links across NATs (docs/NAT.md): success rate over N attempts
# per case and time to link p50/p99, in network namespaces the test builds
# itself. Needs root, iproute2 and nftables (ci/install-deps.sh). Takes a few
# minutes (the symmetric case waits out each no-path window).
#
#   bash tools/nat-figures.sh            # 20 attempts per case
#   PEERLINE_NAT_ATTEMPTS=5 bash tools/nat-figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PEERLINE_NAT_ATTEMPTS="${PEERLINE_NAT_ATTEMPTS:-20}"
cargo test --locked --test e2e nat::nat_figures -- --ignored --nocapture --test-threads 1 2>&1 |
    grep -E '^(\||nat |SKIPPED)'
