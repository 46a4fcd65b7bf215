#!/usr/bin/env bash
# Builds target/debian/peerline_<version>-1_<arch>.deb: the binaries, the man
# page and bash completion (generated from the same clap definition as
# --help), the systemd unit, /etc/peerline/peerline.toml (a conffile) and the
# docs.
#
# What goes where is the [package.metadata.deb] table of Cargo.toml, read here
# (tools/deb-layout.py) and laid out with dpkg-deb, so only Debian's own tools
# are needed; `cargo deb --no-build` reads the same table if cargo-deb is
# installed. CI builds, installs, checks and removes the package
# (ci/deb-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
py=/usr/bin/python3
[ -x "$py" ] || py=python3
command -v dpkg-deb >/dev/null || { echo "tools/deb.sh: dpkg-deb is missing (Debian package dpkg)" >&2; exit 1; }

cargo build --release --locked -p peerline
mkdir -p target/deb-extra
target/release/peerline-server man > target/deb-extra/peerline-server.8
target/release/peerline-server completions bash > target/deb-extra/peerline-server.bash

root=target/debian/root
rm -rf "$root"
mkdir -p "$root"
deb="$("$py" tools/deb-layout.py Cargo.toml "$root" "$(dpkg --print-architecture)")"
mkdir -p target/debian
# Every file root-owned whoever builds it; modes are the table's.
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
