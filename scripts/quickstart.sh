#!/usr/bin/env bash
# Quick start, command 1: set up this (Debian 12) machine, build video-worker, make a 10 s 1080p25
# H.264 + AAC sample, and run the real thing: a local nats-server (JetStream, temporary store,
# loopback) when none is reachable, `video-worker run`, then `video-worker submit --wait` of the
# sample, then the same sample through the NATS object store (`submit --upload`, output written
# back to the store); prints the results and the output tree, and stops what it started.
#
#   ./scripts/quickstart.sh
#
# NATS_URL (default nats://127.0.0.1:4222): a server already reachable there is used as it is.
# Output: target/sample/hls/ (master.m3u8, <quality>.m3u8, segments, thumbnail.jpg, manifest.json).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

SAMPLE_DIR="$VW_ROOT/target/sample"
SAMPLE="$SAMPLE_DIR/sample.mp4"
OUTPUT="$SAMPLE_DIR/hls"
WORKER="$VW_ROOT/target/release/video-worker"
# The object-store half of the demo: a JetStream object store bucket on the same server.
OBJECTS="nats-object://quickstart"

build_worker() {
    log "building video-worker (release)"
    (cd "$VW_ROOT" && cargo build --release --locked)
}

# The sample is made with Debian's ffmpeg CLI (a fixture, like the tests'); the worker itself never
# runs ffmpeg. Kept between runs; written to a temporary name first so an interrupted run does not
# leave a truncated sample behind.
make_sample() {
    if [ -s "$SAMPLE" ]; then
        log "sample: $SAMPLE (already there)"
        return
    fi
    log "sample: generating $SAMPLE (10 s, 1920x1080, 25 fps, H.264 High + AAC-LC stereo 48 kHz)"
    mkdir -p "$SAMPLE_DIR"
    local partial="$SAMPLE_DIR/.sample.partial.mp4"
    ffmpeg -hide_banner -loglevel error -nostdin -y \
        -f lavfi -i "testsrc2=size=1920x1080:rate=25:duration=10" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=10" \
        -map 0:v -map 1:a \
        -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p -g 50 \
        -c:a aac -b:a 128k -ac 2 \
        -movflags +faststart -shortest "$partial"
    mv -f "$partial" "$SAMPLE"
}

NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
RUN_DIR=""
SERVER_PID=""
WORKER_PID=""

# True when a NATS server answers at host:port (it greets with INFO).
nats_reachable() {
    local hostport="${1#*://}"
    hostport="${hostport%%,*}"
    hostport="${hostport##*@}"
    local host="${hostport%:*}" port="${hostport##*:}"
    [ "$host" != "$hostport" ] || port=4222
    timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port && head -c 4 <&3" 2>/dev/null | grep -q INFO
}

# Stops what this script started, worker first (SIGTERM: it finishes or hands back its job).
cleanup() {
    if [ -n "$WORKER_PID" ] && kill -0 "$WORKER_PID" 2>/dev/null; then
        kill -TERM "$WORKER_PID" 2>/dev/null || true
        wait "$WORKER_PID" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    [ -z "$RUN_DIR" ] || rm -rf "$RUN_DIR"
}

start_local_nats() {
    local bin
    if [ -x "$VW_NATS_DEBIAN_LINK" ]; then
        bin="$VW_NATS_DEBIAN_LINK"
    else
        bin="$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)"
    fi
    [ -x "$bin" ] || die "no nats-server found (Debian package nats-server; scripts/setup.sh installs it)"
    case "$NATS_URL" in
    nats://127.0.0.1:4222 | nats://localhost:4222) ;;
    *) die "no NATS server reachable at $NATS_URL (unset NATS_URL to let the quick start start one)" ;;
    esac
    log "no NATS server at $NATS_URL: starting one ($(vw_nats_version "$bin"), JetStream, loopback, temporary store)"
    "$bin" -a 127.0.0.1 -p 4222 -js -sd "$RUN_DIR/jetstream" >"$RUN_DIR/nats-server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        nats_reachable "$NATS_URL" && return
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$RUN_DIR/nats-server.log" >&2
    die "the local nats-server did not start"
}

# Issue 3's demo: the JetStream worker fed by `submit`, as deployed.
demo_queue() {
    RUN_DIR="$(mktemp -d -t video-worker-quickstart.XXXXXX)"
    trap cleanup EXIT
    if nats_reachable "$NATS_URL"; then
        log "using the NATS server at $NATS_URL"
    else
        start_local_nats
    fi
    log "starting the worker: video-worker run --nats-url $NATS_URL --allow-root $SAMPLE_DIR --allow-root $OBJECTS --create-buckets"
    VW_LOG="${VW_LOG:-info}" "$WORKER" run --nats-url "$NATS_URL" --allow-root "$SAMPLE_DIR" \
        --allow-root "$OBJECTS" --create-buckets --scratch "$RUN_DIR/scratch" \
        --grace 60 >"$RUN_DIR/worker.log" 2>&1 &
    WORKER_PID=$!
    for _ in $(seq 1 100); do
        grep -q "serving" "$RUN_DIR/worker.log" 2>/dev/null && break
        if ! kill -0 "$WORKER_PID" 2>/dev/null; then
            cat "$RUN_DIR/worker.log" >&2
            die "the worker stopped at start"
        fi
        sleep 0.1
    done
    log "submitting: video-worker submit --video-id quickstart-sample --source $SAMPLE --output $OUTPUT --wait"
    local status=0
    "$WORKER" submit --nats-url "$NATS_URL" --video-id quickstart-sample \
        --source "$SAMPLE" --output "$OUTPUT" --quality 1080p,720p,480p \
        --thumbnail-time 00:00:05 --wait --timeout 600 || status=$?
    # Issue 9's path, end to end with nothing mounted: the sample is uploaded into the NATS
    # object store (the same server, no second system), and the ladder is written back there.
    if [ "$status" -eq 0 ]; then
        log "submitting through the NATS object store: video-worker submit --upload $OBJECTS/uploads/sample.mp4 --output $OBJECTS/hls/sample --wait"
        "$WORKER" submit --nats-url "$NATS_URL" --video-id quickstart-objects \
            --source "$SAMPLE" --upload "$OBJECTS/uploads/sample.mp4" --create-buckets \
            --output "$OBJECTS/hls/sample" --quality 720p,480p --wait --timeout 600 || status=$?
    fi
    echo
    log "stream and consumer state: video-worker streams"
    "$WORKER" streams --nats-url "$NATS_URL" || true
    echo
    log "worker log"
    sed 's/^/    /' "$RUN_DIR/worker.log"
    [ "$status" -eq 0 ] || die "the job did not succeed (exit status $status)"
}

show_output() {
    log "output tree of $OUTPUT"
    (cd "$OUTPUT" && find . -type f -printf '%12s bytes  %P\n' | sort -V -k3)
    echo
    echo "HLS output: $OUTPUT/master.m3u8"
    echo "Play it with any HLS player, e.g.: ffplay $OUTPUT/master.m3u8"
}

main() {
    "$VW_ROOT/scripts/setup.sh"
    vw_ensure_cargo_on_path
    build_worker
    make_sample
    demo_queue
    show_output
}

main "$@"
