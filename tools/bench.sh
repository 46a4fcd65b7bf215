#!/usr/bin/env bash
# The full benchmark in one command: peerline against mosquitto on this machine.
#   tools/bench.sh [extra `peerline-bench run` flags]
# Installs mosquitto (Debian package) if it is missing, builds release, runs every
# scenario (well under 30 minutes) and rewrites docs/BENCHMARKS.md and
# docs/bench-fanout.svg. Without mosquitto it says so and reports peerline alone.
set -euo pipefail
cd "$(dirname "$0")/.."

have_mosquitto() { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; }

note=""
if ! have_mosquitto; then
    echo "bench: mosquitto is missing; installing the Debian package" >&2
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; } >&2; then
            note="could not be installed (apt-get install mosquitto failed); peerline reported alone"
        fi
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        if ! { sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; } >&2; then
            note="could not be installed (apt-get install mosquitto failed); peerline reported alone"
        fi
    else
        note="not installed, and no root to install it; peerline reported alone"
    fi
    if [ -z "$note" ] && ! have_mosquitto; then
        note="not found after installing; peerline reported alone"
    fi
    [ -n "$note" ] && echo "bench: mosquitto $note" >&2
fi

# 10,000 sessions: the server needs one descriptor each, a worker two per session.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -p peerline -p peerline-bench >&2

args=(run --server target/release/peerline-server
      --out-md docs/BENCHMARKS.md --out-svg docs/bench-fanout.svg
      --shown-command "tools/bench.sh")
if [ -n "$note" ]; then
    args+=(--no-mosquitto --mosquitto-note "$note")
fi
target/release/peerline-bench "${args[@]}" "$@"

# TLS beside plaintext, and mosquitto over TLS beside both: its own section of
# docs/BENCHMARKS.md (spliced in after the tables above).
tls_args=(tls --server target/release/peerline-server --out-md docs/BENCHMARKS.md
          --shown-command "tools/bench.sh")
if [ -n "$note" ]; then
    tls_args+=(--no-mosquitto)
fi
exec target/release/peerline-bench "${tls_args[@]}"
