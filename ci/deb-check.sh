#!/usr/bin/env bash
# Builds the Debian package (tools/deb.sh), installs it, checks it and removes
# it: the unit passes `systemd-analyze verify` where the package put it,
# `peerline-server --check` accepts the packaged config, every file is
# root-owned with the mode the package means, and purge leaves nothing.
# Installing needs root and dpkg (CI has both); elsewhere it builds the
# package only and says why it stops there.
set -euo pipefail
cd "$(dirname "$0")/.."

deb="$(bash tools/deb.sh)"
echo "deb-check: built $deb"
dpkg-deb --info "$deb" | sed -n '1,12p'
dpkg-deb --contents "$deb"

if [ "$(id -u)" -ne 0 ] || ! command -v dpkg >/dev/null; then
    echo "deb-check: SKIP install checks (needs root and dpkg; CI runs them)"
    exit 0
fi
if dpkg-query -W -f='${Status}' peerline 2>/dev/null | grep -q "install ok installed"; then
    echo "deb-check: a peerline package is already installed here; not touching it" >&2
    exit 1
fi

fail() { echo "deb-check: FAIL: $*" >&2; exit 1; }
data="$(mktemp -d)"
cleanup() {
    dpkg --purge peerline >/dev/null 2>&1 || true
    rm -rf "$data"
}
trap cleanup EXIT

dpkg -i "$deb"

# Owners and modes, as installed.
expect() { # path mode
    [ -e "$1" ] || fail "$1 not installed"
    got="$(stat -c '%U:%G %a' "$1")"
    [ "$got" = "root:root $2" ] || fail "$1 is $got, want root:root $2"
}
expect /usr/bin/peerline-server 755
expect /usr/bin/peerline-client 755
expect /etc/peerline/peerline.toml 644
expect /lib/systemd/system/peerline-server.service 644
expect /usr/share/man/man8/peerline-server.8.gz 644
expect /usr/share/bash-completion/completions/peerline-server 644
expect /usr/share/doc/peerline/ADMIN.md 644
grep -qx /etc/peerline/peerline.toml /var/lib/dpkg/info/peerline.conffiles \
    || fail "peerline.toml is not a conffile"
dpkg -L peerline | while read -r f; do
    [ -e "$f" ] || continue
    [ "$(stat -c '%U:%G' "$f")" = root:root ] || fail "$f is not root-owned"
    [ -d "$f" ] || [ "$(( 0$(stat -c '%a' "$f") & 022 ))" = 0 ] || fail "$f is group/world writable"
done

# The unit where the package put it, against the installed binary.
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/peerline-server.service
    echo "deb-check: systemd-analyze verify: ok"
else
    fail "systemd-analyze is missing (ci/apt-packages.txt lists systemd)"
fi

# The packaged config, read the way the unit reads it (PEERLINE_CONFIG).
out="$(PEERLINE_CONFIG=/etc/peerline/peerline.toml /usr/bin/peerline-server --check --data-dir "$data")" \
    || fail "peerline-server --check refused the packaged config"
grep -q "/etc/peerline/peerline.toml" <<<"$out" || fail "--check does not name the packaged config: $out"
/usr/bin/peerline-server --config /etc/peerline/peerline.toml --check --data-dir "$data" >/dev/null \
    || fail "--config /etc/peerline/peerline.toml --check failed"
man -l /usr/share/man/man8/peerline-server.8.gz >/dev/null 2>&1 || zcat /usr/share/man/man8/peerline-server.8.gz | grep -q '^\.TH' \
    || fail "the man page does not read"

dpkg --purge peerline
[ ! -e /usr/bin/peerline-server ] || fail "purge left /usr/bin/peerline-server"
[ ! -e /etc/peerline/peerline.toml ] || fail "purge left the conffile"
[ ! -e /lib/systemd/system/peerline-server.service ] || fail "purge left the unit"
echo "deb-check: ok"
