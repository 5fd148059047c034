#!/usr/bin/env bash
# Proves the container image where no container daemon runs and no registry is reachable
# (issue 10). As root, on Debian 12, after scripts/setup.sh:
#
#   scripts/container-check.sh [--binary PATH] [--keep]
#
# 1. lints the Dockerfile with hadolint (.hadolint.yaml) and validates docker-compose.yml
#    (`docker compose config` when a client is installed, else the compose-spec JSON schema that
#    check-jsonschema vendors);
# 2. checks the binary links only the FFmpeg libraries it uses (no libavdevice, hence no SDL);
# 3. builds the runtime stage's root filesystem with mmdebstrap from Debian's packages, exactly
#    the list the Dockerfile installs (docker/runtime-packages.txt), with bookworm-slim's
#    excludes (docs, man pages, locales), the image's user and the binary at its place;
# 4. inside it (chroot, as the image's non-root uid from the Dockerfile's USER, a clean
#    environment, tini as PID 1 of the worker as in the ENTRYPOINT): every shared library
#    resolves (ldd), `video-worker --version`, a `transcode` of a small generated clip, and
#    `run` against a nats-server on the host's loopback that completes a `submit --wait`ed job;
#    then SIGTERM drains the worker, which must exit 0;
# 5. prints the root filesystem's size and the binary's.
#
# --binary PATH: the video-worker to put in the root (default target/release/video-worker, built
#                with `cargo build --release` when missing). --keep: leave the root filesystem in
#                target/container-check/rootfs. Takes about a minute (mmdebstrap downloads ~40 MB).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

PACKAGES_FILE="$VW_ROOT/docker/runtime-packages.txt"
DOCKERFILE="$VW_ROOT/Dockerfile"
COMPOSE_FILE="$VW_ROOT/docker-compose.yml"
CHECK_DIR="$VW_ROOT/target/container-check"
ROOTFS="$CHECK_DIR/rootfs"
DEB_CACHE="$CHECK_DIR/debs"
VENV="$VW_TOOLS_DIR/container-venv"
SUITE=bookworm

binary="$VW_ROOT/target/release/video-worker"
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
    --binary)
        binary="$(realpath "${2:?--binary needs a path}")"
        shift
        ;;
    --keep) keep=1 ;;
    -h | --help)
        sed -n '2,25p' "$0"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

started=$(date +%s)
step() { printf '\n=== %s  (+%ss)\n' "$*" "$(($(date +%s) - started))"; }

NATS_PID=""
WORKER_PID=""
RUN_DIR=""
cleanup() {
    local pid
    # A worker still running (a failed check): its own children first (tini cannot pass
    # SIGKILL on), then tini, then the server.
    if [ -n "$WORKER_PID" ]; then
        for pid in $(pgrep -P "$WORKER_PID" 2>/dev/null || true); do
            kill -KILL "$pid" 2>/dev/null || true
        done
    fi
    for pid in "$WORKER_PID" "$NATS_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    [ -z "$RUN_DIR" ] || rm -rf "$RUN_DIR"
    if [ "$keep" = 0 ] && [ -d "$ROOTFS" ]; then
        rm -rf "$ROOTFS"
    fi
}
trap cleanup EXIT

# The packages of docker/runtime-packages.txt, one a line, comments and blanks dropped (the same
# `sed` the Dockerfile runs).
runtime_packages() {
    sed -e 's/#.*//' "$PACKAGES_FILE" | xargs -n1
}

# uid:gid of the Dockerfile's (last) USER line: the image's user, numeric.
image_user() {
    local user
    user="$(sed -n 's/^USER[[:space:]]\{1,\}\([0-9]\{1,\}:[0-9]\{1,\}\)[[:space:]]*$/\1/p' "$DOCKERFILE" | tail -n1)"
    [ -n "$user" ] || die "the Dockerfile has no numeric USER uid:gid line"
    grep -q -- "--uid ${user%%:*} " "$DOCKERFILE" ||
        die "the Dockerfile's useradd does not create uid ${user%%:*} (its USER)"
    echo "$user"
}

lint() {
    step "hadolint Dockerfile"
    [ -x "$VENV/bin/hadolint" ] || die "no hadolint at $VENV (run scripts/setup.sh)"
    "$VENV/bin/hadolint" --version
    "$VENV/bin/hadolint" --config "$VW_ROOT/.hadolint.yaml" "$DOCKERFILE"
    echo "hadolint: no findings"
    step "docker-compose.yml"
    if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
        docker compose -f "$COMPOSE_FILE" config --quiet
        echo "docker compose config: valid"
    else
        [ -x "$VENV/bin/check-jsonschema" ] || die "no check-jsonschema at $VENV (run scripts/setup.sh)"
        # No compose client here: the compose-spec schema that check-jsonschema vendors.
        "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE_FILE"
    fi
}

check_binary() {
    step "binary: $binary"
    if [ ! -x "$binary" ]; then
        [ "$binary" = "$VW_ROOT/target/release/video-worker" ] || die "no binary at $binary"
        vw_ensure_cargo_on_path || die "cargo not found"
        log "building it: cargo build --release --locked --package video-worker --bin video-worker"
        (cd "$VW_ROOT" && cargo build --release --locked --package video-worker --bin video-worker)
    fi
    local needed
    needed="$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort)"
    printf 'linked (NEEDED): %s\n' "$(echo "$needed" | xargs)"
    if echo "$needed" | grep -E '^lib(avdevice|SDL|X11|xcb|asound|pulse)'; then
        die "the binary links a library it does not use (above): check ffmpeg-next's features in Cargo.toml"
    fi
    local lib
    for lib in libavcodec libavformat libavfilter libavutil libswscale; do
        echo "$needed" | grep -q "^$lib\.so" || die "the binary does not link $lib"
    done
}

build_rootfs() {
    step "root filesystem: mmdebstrap $SUITE, minbase + $(runtime_packages | xargs)"
    command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap not found (run scripts/setup.sh)"
    [ "$(id -u)" -eq 0 ] || die "run as root: mmdebstrap's root mode, chroot and mounts need it"
    local user uid gid sources=()
    user="$(image_user)"
    uid="${user%%:*}"
    gid="${user##*:}"
    # This machine's own Debian sources (its mirror, its keyring).
    [ ! -s /etc/apt/sources.list.d/debian.sources ] || sources+=(/etc/apt/sources.list.d/debian.sources)
    [ ! -s /etc/apt/sources.list ] || sources+=(/etc/apt/sources.list)
    [ "${#sources[@]}" -gt 0 ] || die "no Debian sources in /etc/apt"
    rm -rf "$ROOTFS"
    mkdir -p "$DEB_CACHE"
    # minbase and these excludes are what the official debian:bookworm-slim image is made with.
    # The downloaded packages are kept in $DEB_CACHE (mmdebstrap's sync-in/sync-out recipe): a
    # second run downloads only what changed. They do not stay in the root filesystem.
    # merged-usr hook: /usr merged as in the official image, without the usrmerge package (and
    # the perl it depends on, 55 MB the image does not have).
    mmdebstrap --mode=root --variant=minbase --quiet --skip=essential/unlink \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
        --setup-hook="sync-in $DEB_CACHE /var/cache/apt/archives/" \
        --include="$(runtime_packages | paste -sd, -)" \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/groff/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook="sync-out /var/cache/apt/archives $DEB_CACHE" \
        --customize-hook="chroot \"\$1\" groupadd --system --gid $gid vworker" \
        --customize-hook="chroot \"\$1\" useradd --system --uid $uid --gid vworker --create-home --home-dir /home/vworker --shell /usr/sbin/nologin vworker" \
        "$SUITE" "$ROOTFS" "${sources[@]}" >"$CHECK_DIR/mmdebstrap.log" 2>&1 || {
        tail -n 40 "$CHECK_DIR/mmdebstrap.log" >&2
        die "mmdebstrap failed (whole log: $CHECK_DIR/mmdebstrap.log)"
    }
    echo "$(chroot "$ROOTFS" dpkg-query -W | wc -l) packages installed (log: $CHECK_DIR/mmdebstrap.log)"
    ROOTFS_BYTES="$(du -sb "$ROOTFS" | cut -f1)"
    # As the Dockerfile's builder installs it: line tables kept, compressed.
    grep -q 'objcopy --compress-debug-sections=zlib' "$DOCKERFILE" ||
        die "the Dockerfile no longer installs the binary with objcopy --compress-debug-sections=zlib: update this check"
    mkdir -p "$ROOTFS/usr/local/bin"
    objcopy --compress-debug-sections=zlib "$binary" "$ROOTFS/usr/local/bin/video-worker"
    chmod 0755 "$ROOTFS/usr/local/bin/video-worker"
    install -D -m 0644 -t "$ROOTFS/usr/share/doc/video-worker" \
        "$VW_ROOT/LICENSE" "$VW_ROOT/README.md" "$VW_ROOT/vendor-notes.md"
    mkdir -p "$ROOTFS/home/vworker/jobs"
    chown -R "$uid:$gid" "$ROOTFS/home/vworker"
}

# The command line that runs a command in the root as the image's user, with a clean
# environment, in a private mount namespace (its /proc and /dev go away with it). exec all the
# way down: started in the background, its $! is the command itself and gets the signals.
in_root_argv() {
    IN_ROOT=(unshare --mount --propagation private -- bash -c '
        set -e
        mount -t proc proc "$1/proc" 2>/dev/null || mount --rbind /proc "$1/proc"
        mount --bind /dev "$1/dev"
        root="$1" user="$2"
        shift 2
        exec chroot --userspec="$user" "$root" \
            env -i HOME=/home/vworker PATH=/usr/local/bin:/usr/bin:/bin "$@"' \
        in_root "$ROOTFS" "$(image_user)")
}

in_root() {
    "${IN_ROOT[@]}" "$@"
}

# A local nats-server with JetStream on a free port of the host's loopback.
start_nats() {
    local bin port
    for bin in "$VW_NATS_CURRENT_LINK" "$VW_NATS_DEBIAN_LINK" "$(command -v nats-server || true)"; do
        [ -n "$bin" ] && [ -x "$bin" ] && break
    done
    [ -x "$bin" ] || die "no nats-server (run scripts/setup.sh)"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$bin" -a 127.0.0.1 -p "$port" -js -sd "$RUN_DIR/jetstream" >"$RUN_DIR/nats-server.log" 2>&1 &
    NATS_PID=$!
    NATS_URL="nats://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        grep -q "Server is ready" "$RUN_DIR/nats-server.log" && {
            log "nats-server $(vw_nats_version "$bin") at $NATS_URL"
            return
        }
        sleep 0.1
    done
    cat "$RUN_DIR/nats-server.log" >&2
    die "nats-server did not start"
}

run_inside() {
    local jobs=/home/vworker/jobs
    RUN_DIR="$(mktemp -d -t video-worker-container-check.XXXXXX)"
    in_root_argv

    step "inside the root, as uid:gid $(image_user): ldd"
    local ldd_out
    ldd_out="$(in_root ldd /usr/local/bin/video-worker)"
    if echo "$ldd_out" | grep -E 'not found|libavdevice|libSDL'; then
        die "a library is missing from docker/runtime-packages.txt, or an unused one is linked (above)"
    fi
    echo "$(echo "$ldd_out" | wc -l) shared libraries, all found; none of libavdevice, SDL"

    step "video-worker --version"
    in_root video-worker --version

    step "video-worker transcode (2 s 320x240 clip, 240p)"
    ffmpeg -hide_banner -loglevel error -nostdin -y \
        -f lavfi -i "testsrc2=size=320x240:rate=25:duration=2" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=2" \
        -map 0:v -map 1:a -c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 25 \
        -c:a aac -shortest "$ROOTFS$jobs/clip.mp4"
    chown "$(image_user)" "$ROOTFS$jobs/clip.mp4"
    in_root video-worker transcode "$jobs/clip.mp4" "$jobs/transcoded" --quality 240p --json
    [ -s "$ROOTFS$jobs/transcoded/master.m3u8" ] || die "transcode left no master.m3u8"
    [ -s "$ROOTFS$jobs/transcoded/240p_000.ts" ] || die "transcode left no 240p_000.ts"

    step "video-worker run (tini as in the ENTRYPOINT) + submit --wait, NATS on the host's loopback"
    start_nats
    # TINI_SUBREAPER: tini reaps as it does as the container's PID 1, which it is not here.
    "${IN_ROOT[@]}" env VW_JOBS=1 TINI_SUBREAPER=1 tini -- video-worker run \
        --nats-url "$NATS_URL" --allow-root "$jobs" --grace 10 >"$RUN_DIR/worker.log" 2>&1 &
    WORKER_PID=$!
    for _ in $(seq 1 150); do
        grep -q "serving" "$RUN_DIR/worker.log" && break
        kill -0 "$WORKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "serving" "$RUN_DIR/worker.log" || {
        cat "$RUN_DIR/worker.log" >&2
        die "the worker did not start"
    }
    local status=0
    in_root video-worker submit --nats-url "$NATS_URL" --video-id container-check \
        --source "$jobs/clip.mp4" --output "$jobs/hls" --quality 240p --wait --timeout 120 ||
        status=$?
    [ "$status" -eq 0 ] && [ -s "$ROOTFS$jobs/hls/master.m3u8" ] || {
        sed 's/^/    /' "$RUN_DIR/worker.log" >&2
        die "the submitted job did not complete (submit exit status $status)"
    }
    kill -TERM "$WORKER_PID"
    for _ in $(seq 1 300); do
        kill -0 "$WORKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$WORKER_PID" 2>/dev/null && {
        sed 's/^/    /' "$RUN_DIR/worker.log" >&2
        die "the worker did not stop within 30 s of SIGTERM"
    }
    status=0
    wait "$WORKER_PID" || status=$?
    WORKER_PID=""
    [ "$status" -eq 0 ] || {
        sed 's/^/    /' "$RUN_DIR/worker.log" >&2
        die "the worker exited with status $status after SIGTERM"
    }
    echo "job completed; SIGTERM through tini: the worker drained and exited 0"
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

report_sizes() {
    step "sizes"
    local binary_bytes stripped stripped_bytes installed_bytes
    binary_bytes="$(stat -c %s "$binary")"
    installed_bytes="$(stat -c %s "$ROOTFS/usr/local/bin/video-worker")"
    printf 'root filesystem (minbase + runtime packages + user): %s MiB (%s bytes)\n' \
        "$(mib "$ROOTFS_BYTES")" "$ROOTFS_BYTES"
    # The release profile keeps line tables (debug = 1) for readable backtraces; stripped is what
    # the code itself weighs.
    stripped="$(mktemp)"
    strip -o "$stripped" "$binary"
    stripped_bytes="$(stat -c %s "$stripped")"
    rm -f "$stripped"
    printf 'video-worker binary: %s MiB as built, %s MiB installed (debug sections compressed), %s MiB stripped\n' \
        "$(mib "$binary_bytes")" "$(mib "$installed_bytes")" "$(mib "$stripped_bytes")"
    printf 'image estimate (root filesystem + installed binary): %s MiB\n' \
        "$(mib $((ROOTFS_BYTES + installed_bytes)))"
}

main() {
    lint
    check_binary
    build_rootfs
    run_inside
    report_sizes
    step "container check passed"
}

main
