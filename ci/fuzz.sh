#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through libfuzzer-sys) of the line
# reader, every parser (commands, typed client input, server lines,
# plaintext and sealed datagrams, resumption tickets, peer-link lines and
# the link wire with its Noise framing) and the data file loaders; bounded.
#
# Stable toolchain only: cargo-fuzz would need nightly (-Zsanitizer), so this
# passes the SanitizerCoverage flags itself (what cargo-fuzz passes, minus
# AddressSanitizer, which safe Rust does not need: bounds and overflow are
# checked, debug assertions are on in fuzz/Cargo.toml's profile). libFuzzer
# reports `cov:`/`ft:` growing, i.e. it is guided by coverage.
#
# Each target runs FUZZ_SECONDS (default 12) from its corpus in
# fuzz/corpus/<target>, into a scratch copy so CI never dirties the tree
# (FUZZ_KEEP=1 merges what it found back into the corpus). A crash fails
# the step; its input is kept in fuzz/artifacts/<target>/ and replays with
#   fuzz/target/<triple>/release/<target> fuzz/artifacts/<target>/crash-…
# FUZZ_TARGETS="a b" picks targets. Longer sessions: see docs/FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-12}"
all=(line_reader command client_input server_line datagram sealed ticket link_line link_wire data_files)
read -r -a targets <<<"${FUZZ_TARGETS:-${all[*]}}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros.
echo "fuzz: building ${#targets[@]} targets (stable, sancov)"
cargo build --manifest-path fuzz/Cargo.toml --release --locked --target "$triple" \
    $(printf -- '--bin %s ' "${targets[@]}")
bin="fuzz/target/$triple/release"
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    work="$(mktemp -d)"
    cp -r "fuzz/corpus/$t/." "$work/"
    log="$(mktemp)"
    status=0
    "$bin/$t" "$work" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
        >"$log" 2>&1 || status=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    cov="$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)"
    echo "fuzz: $t ${seconds}s: ${execs:-?} executions, ${cov:-no coverage line}, corpus $(ls "$work" | wc -l)"
    if [ -z "$cov" ] && [ "$status" -eq 0 ]; then
        # No cov: line means the binary was built without the sancov flags:
        # it would run blind, so it is a failure, not a pass.
        echo "fuzz: $t reported no coverage; the instrumentation is missing" >&2
        status=1
    fi
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "fuzz: $t failed (exit $status); the input is in fuzz/artifacts/$t/" >&2
    elif [ "${FUZZ_KEEP:-0}" = 1 ]; then
        "$bin/$t" -merge=1 "fuzz/corpus/$t" "$work" >/dev/null 2>&1
    fi
    rm -rf "$work" "$log"
    [ "$status" -eq 0 ] || exit 1
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
