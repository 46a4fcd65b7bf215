#!/usr/bin/env bash
# The whole test suite: unit tests, engine transcripts on a virtual clock, and
# end-to-end tests that run the real binaries over loopback. This is the
# command the README gives; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
