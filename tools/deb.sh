#!/usr/bin/env bash
# Builds target/debian/peerline_*.deb: the binaries, the man page and bash
# completion (generated from the same clap definition as --help), the systemd
# unit, /etc/peerline/peerline.toml (a conffile) and the docs.
# Needs cargo-deb (`cargo install cargo-deb`); not run in CI because installing
# cargo-deb compiles it from source, minutes on the 2-core CI machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
  echo "tools/deb.sh: cargo-deb is not installed (cargo install cargo-deb)" >&2
  exit 1
fi
cargo build --release --locked
mkdir -p target/deb-extra
target/release/peerline-server man > target/deb-extra/peerline-server.8
target/release/peerline-server completions bash > target/deb-extra/peerline-server.bash
cargo deb --no-build --locked
