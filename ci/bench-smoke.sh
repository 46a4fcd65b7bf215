#!/usr/bin/env bash
# A 50-session, peerline-only smoke of the benchmark tool (no mosquitto, no
# pinning, bounded to about a minute). Exits non-zero if the tool or any
# scenario fails. Writes its report to a temp dir, never to docs/.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p peerline -p peerline-bench
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

timeout 90 target/release/peerline-bench run \
    --server target/release/peerline-server \
    --sizes 50 --reps 5 --burst 20 --burst-window 8 \
    --default-sessions 10 --storm 10 --pingers 5 --idle-secs 1 \
    --no-mosquitto --no-pin --strict \
    --out-md "$out/BENCHMARKS.md" --out-svg "$out/bench-fanout.svg"

grep -q '| 50 | peerline |' "$out/BENCHMARKS.md"
grep -q '<polyline' "$out/bench-fanout.svg"

# Scale mode: a tiny sessions axis (with the idle-after-logins window) and
# accounts axis, spliced into the report the run above wrote.
timeout 120 target/release/peerline-bench scale \
    --server target/release/peerline-server \
    --sizes 20,40 --accounts 100,2000 --online 20 --reps 2 --idle-secs 1 \
    --per-worker 30 --no-mosquitto --no-pin --out-md "$out/BENCHMARKS.md" > /dev/null
grep -q '<!-- scale:begin -->' "$out/BENCHMARKS.md"
grep -q '| 41 | peerline |' "$out/BENCHMARKS.md"
grep -q '| 2000 |' "$out/BENCHMARKS.md"
grep -q '| 50 | peerline |' "$out/BENCHMARKS.md"
grep -q '<polyline' "$out/bench-scale-accounts.svg"

# Direct links, encrypted vs plaintext: a few links and messages each way.
timeout 60 target/release/peerline-bench links \
    --server target/release/peerline-server --client target/release/peerline-client \
    --links 3 --messages 500 > "$out/links.md"
grep -q '| link setup' "$out/links.md"
# The restart storm: a few sessions killed with the server and back, by
# ticket and by password (cheap hashes here; the figures use the default cost).
timeout 120 target/release/peerline-bench restart \
    --server target/release/peerline-server \
    --sessions 20 --bystanders 2 --kdf-iterations 1000 --timeout-secs 60 > "$out/restart.md"
grep -q '| sessions back and logged in | 20 of 20 | 20 of 20 |' "$out/restart.md"
grep -q '| by ticket / by password / ticket refused → password | 20 / 0 / 0 | 0 / 20 / 0 |' "$out/restart.md"

# TLS beside plaintext (peerline only): a few handshakes, sessions with sealed
# datagrams, acknowledged deliveries; spliced into a copy of the report.
timeout 90 target/release/peerline-bench tls \
    --server target/release/peerline-server \
    --handshakes 40 --sessions 10 --broadcasts 5 \
    --no-mosquitto --no-pin --strict --out-md "$out/BENCHMARKS.md"
grep -q '| opens/s (TLS: handshakes/s) |' "$out/BENCHMARKS.md"
grep -q '| 50 | peerline |' "$out/BENCHMARKS.md"
echo "bench smoke: ok"
