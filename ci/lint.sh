#!/usr/bin/env bash
# Formatting and lints, as CI enforces them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
# The fuzz crate is a workspace of its own (docs/FUZZING.md); ci/fuzz.sh
# builds it, so its compiler warnings fail there; here, its formatting.
cargo fmt --manifest-path fuzz/Cargo.toml --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# CI builds the fuzz crate --locked from its own Cargo.lock, which must list
# the library's dependencies as they are now: a dependency added to
# Cargo.toml and not here fails ci/fuzz.sh, so it fails here first, cheaply.
if ! cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null; then
    echo "lint: fuzz/Cargo.lock is stale; run: cargo update --manifest-path fuzz/Cargo.toml -p peerline" >&2
    exit 1
fi
