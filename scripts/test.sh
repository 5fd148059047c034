#!/usr/bin/env bash
# Quick start, command 2 (and CI's test step): set up this machine, then run every test.
#
#   ./scripts/test.sh [extra cargo test arguments, e.g. a name filter or -- --nocapture]
#
# 1. `cargo test --all-targets` (plus doc tests) with NATS_SERVER_BIN = Debian's nats-server
#    2.9.10 (unless NATS_SERVER_BIN is already set). Besides the unit and integration tests this
#    runs issue 7's proof as ordinary cargo tests, so the summary counts them: tests/fuzz.rs (a
#    fixed-seed pass of 600 mutated media through `transcode`; the long run is scripts/fuzz.sh),
#    tests/memcheck.rs (scripts/valgrind.sh) and tests/queue_cluster.rs (a 3-node cluster);
# 2. run_current_server_suite: the NATS tests (tests/queue*.rs) again against a current
#    nats-server (>= 2.10, from setup.sh), when one is installed; CI requires it.
# 3. run_player_tests (issue 11): hls.js and shaka-player (with mux.js) in headless Chromium play
#    a ladder made by the binary (ts; fmp4 too once `transcode --segments` exists), switch levels,
#    seek, play to the end (tests/players/run.mjs). Its cargo-style result line is counted; when
#    Chromium cannot start its tests count as skipped and the line before the total says so.
# Ends with one line "total: N passed, N failed, N skipped" summing every run above.
#
# Environment: VW_TEST_PROFILE=dev|release. dev is the default: from a clean target/ on the
#              2-core build machine, with issue 2's suite (49 tests), `cargo test --all-targets`
#              took 155 s in dev and 221 s with --release (the release build costs more than its
#              faster tests save); re-measure when the suite grows.
#              VW_REQUIRE_CURRENT_NATS=1 to fail when no current nats-server can be installed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

VW_TEST_PROFILE="${VW_TEST_PROFILE:-dev}"
cargo_args=(--no-fail-fast)
case "$VW_TEST_PROFILE" in
dev) ;;
release) cargo_args+=(--release) ;;
*) die "VW_TEST_PROFILE must be dev or release, not '$VW_TEST_PROFILE'" ;;
esac

TEST_LOG="$(mktemp -t video-worker-test.XXXXXX)"
trap 'rm -f "$TEST_LOG"' EXIT
failed_runs=()

# Runs one cargo test invocation, keeping its output for the final summary; a failure is recorded,
# not fatal, so the later runs still report.
run_cargo_test() {
    local label="$1"
    shift
    log "$label: cargo test $*"
    if ! (cd "$VW_ROOT" && cargo test "$@") 2>&1 | tee -a "$TEST_LOG"; then
        failed_runs+=("$label")
    fi
}

run_main_suite() {
    if [ -z "${NATS_SERVER_BIN:-}" ] && [ -x "$VW_NATS_DEBIAN_LINK" ]; then
        NATS_SERVER_BIN="$(readlink -f "$VW_NATS_DEBIAN_LINK")"
    fi
    export NATS_SERVER_BIN="${NATS_SERVER_BIN:-}"
    log "NATS_SERVER_BIN=${NATS_SERVER_BIN:-<unset: tests look on PATH>}"
    run_cargo_test "all tests" --all-targets "${cargo_args[@]}" "$@"
    # --all-targets leaves out doc tests; they need a library target.
    if [ -f "$VW_ROOT/src/lib.rs" ]; then
        run_cargo_test "doc tests" --doc "${cargo_args[@]}" "$@"
    fi
}

# ---------------------------------------------------------------------------------------------
# HOOK run_current_server_suite (issue 3): the NATS tests again, against a current nats-server.
# The tests start their own server from $NATS_SERVER_BIN (falling back to PATH). Test files named
# tests/queue*.rs are the NATS suite; rename the glob here if that naming changes.
# ---------------------------------------------------------------------------------------------
run_current_server_suite() {
    if ! compgen -G "$VW_ROOT/tests/queue*.rs" >/dev/null; then
        log "current-server suite: no tests/queue*.rs yet, skipped"
        return
    fi
    if [ ! -x "$VW_NATS_CURRENT_LINK" ]; then
        if [ "${VW_REQUIRE_CURRENT_NATS:-0}" = 1 ]; then
            die "no current nats-server at $VW_NATS_CURRENT_LINK (run scripts/setup.sh)"
        fi
        warn "no current nats-server at $VW_NATS_CURRENT_LINK: NATS tests ran against Debian's only"
        return
    fi
    local bin
    bin="$(readlink -f "$VW_NATS_CURRENT_LINK")"
    log "NATS_SERVER_BIN=$bin ($(vw_nats_version "$bin"))"
    NATS_SERVER_BIN="$bin" run_cargo_test "NATS tests, current server" \
        --test 'queue*' "${cargo_args[@]}" "$@"
}

# ---------------------------------------------------------------------------------------------
# HOOK run_player_tests (issue 11): real players on a ladder made by the binary under test.
# ---------------------------------------------------------------------------------------------
run_player_tests() {
    local bin="$VW_ROOT/target/debug/video-worker" build_args=()
    if [ "$VW_TEST_PROFILE" = release ]; then
        bin="$VW_ROOT/target/release/video-worker"
        build_args=(--release)
    fi
    log "player tests: cargo build --bin video-worker ${build_args[*]}"
    if ! (cd "$VW_ROOT" && cargo build --quiet --bin video-worker "${build_args[@]}"); then
        failed_runs+=("player tests (build)")
        return
    fi
    local work ladders=() kind
    work="$(mktemp -d -t video-worker-players.XXXXXX)"
    # 13 s of 640x360 with stereo AAC: three rungs, two full 6 s segments and a tail.
    ffmpeg -hide_banner -nostdin -v error -y \
        -f lavfi -i testsrc2=size=640x360:rate=25:duration=13 \
        -f lavfi -i sine=frequency=440:sample_rate=48000:duration=13 \
        -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -ac 2 "$work/source.mp4"
    local kinds=(ts)
    "$bin" transcode --help | grep -q -- '--segments' && kinds+=(fmp4)
    for kind in "${kinds[@]}"; do
        local extra=()
        [ "$kind" = fmp4 ] && extra=(--segments fmp4)
        if "$bin" transcode "$work/source.mp4" "$work/$kind" --quality 360p,240p,144p \
            --preset ultrafast --thumbnail-time 1 "${extra[@]}" >/dev/null; then
            "$bin" check "$work/$kind" || true
            ladders+=("$kind=$work/$kind")
        else
            failed_runs+=("player tests ($kind ladder)")
        fi
    done
    if [ "${#ladders[@]}" -gt 0 ]; then
        log "player tests: node tests/players/run.mjs ${ladders[*]}"
        if ! node "$VW_ROOT/tests/players/run.mjs" --modules "$VW_TOOLS_DIR/players" \
            "${ladders[@]}" 2>&1 | tee -a "$TEST_LOG"; then
            failed_runs+=("player tests")
        fi
    fi
    rm -rf "$work"
}

# One closing line over every run above, in the form CI reads ("N passed, N failed, N skipped").
print_summary() {
    # The closing line's form is fixed; a skip of the player tests is said on the line above it.
    grep -h '^players: skipped' "$TEST_LOG" || true
    awk '/^test result: /{
            for (i = 1; i <= NF; i++) {
                if ($(i+1) ~ /^passed/) p += $i
                if ($(i+1) ~ /^failed/) f += $i
                if ($(i+1) ~ /^ignored/) s += $i
            }
        }
        END { printf "total: %d passed, %d failed, %d skipped\n", p, f, s }' "$TEST_LOG"
}

main() {
    "$VW_ROOT/scripts/setup.sh"
    vw_ensure_cargo_on_path
    run_main_suite "$@"
    run_current_server_suite "$@"
    run_player_tests
    echo
    print_summary
    if [ "${#failed_runs[@]}" -gt 0 ]; then
        local IFS='|'
        die "failed: ${failed_runs[*]}"
    fi
}

main "$@"
