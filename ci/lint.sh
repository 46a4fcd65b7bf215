#!/usr/bin/env bash
# Formatting and lints, as CI enforces them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
# The fuzz crate is a workspace of its own (docs/FUZZING.md); ci/fuzz.sh
# builds it, so its compiler warnings fail there; here, its formatting.
cargo fmt --manifest-path fuzz/Cargo.toml --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
