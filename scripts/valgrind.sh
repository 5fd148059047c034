#!/usr/bin/env bash
# Valgrind memcheck over `video-worker transcode` of four small fixtures made here with the ffmpeg
# CLI: a 160x120 0.5 s MP4 with AAC stereo, the same rotated 90° (display matrix: the transpose
# path), an MKV with 44.1 kHz AAC, and an MPEG-TS with mono MP2 audio (the downmix/resample path).
#
#   scripts/valgrind.sh [path/to/video-worker]    (default: target/debug/video-worker)
#
# Pass: every run exits 0 and no memcheck error is attributed to this crate. An error is ours when
# the innermost frame of its stack that is not valgrind's, libc's or the Rust standard library's
# is a `video_worker::` function, a file under this repository's src/, or a Rust dependency from
# the cargo registry (ffmpeg-next and the like run on our behalf): memory our code touched, or a
# leak our code allocated. Errors whose innermost such frame is inside a C library (libav*,
# libx264, libsw*) are printed and counted, and do not fail the check: they are the library's
# own, and a wrong argument of ours would also show in the FFmpeg CLI, which the tests use as
# the independent reference. No suppression file is needed today (0 errors in total with
# Debian 12's FFmpeg 5.1 and x264 0.164); if one is added, each entry must say why it is not ours.
# Leaks: only "definitely lost" blocks count as errors (Rust's runtime keeps a few "possibly
# lost" blocks, such as each thread's handle, for the life of the process).
#
# Prints one line per run and a last line "memcheck: N errors, N ours, N s"; exit 1 when ours > 0
# or a run failed. Environment: VW_VALGRIND_KEEP=1 keeps the scratch directory (XML reports).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

BIN="${1:-$VW_ROOT/target/debug/video-worker}"
[ -x "$BIN" ] || die "no video-worker binary at $BIN (cargo build first)"
command -v valgrind >/dev/null 2>&1 || die "valgrind not installed (scripts/setup.sh installs it)"
command -v ffmpeg >/dev/null 2>&1 || die "ffmpeg CLI not installed (scripts/setup.sh installs it)"

WORK="$(mktemp -d -t vw-memcheck.XXXXXX)"
if [ "${VW_VALGRIND_KEEP:-0}" = 1 ]; then
    log "keeping $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

fixture() {
    local name="$1" rate="$2"
    shift 2
    ffmpeg -hide_banner -nostdin -v error -y \
        -f lavfi -i "testsrc2=size=160x120:rate=25:duration=0.5" \
        -f lavfi -i "sine=frequency=440:sample_rate=$rate:duration=0.5" \
        -c:v libx264 -preset ultrafast -pix_fmt yuv420p -shortest "$@" "$WORK/$name"
}
fixture plain.mp4 48000 -c:a aac -ac 2
fixture rotated.mp4 48000 -c:a aac -ac 2 -metadata:s:v rotate=90
fixture plain.mkv 44100 -c:a aac -ac 2
fixture mono.ts 22050 -c:a mp2 -ac 1

started=$(date +%s)
failed=0
for input in plain.mp4 rotated.mp4 plain.mkv mono.ts; do
    xml="$WORK/$input.xml"
    # --error-exitcode is not used: the verdict is on our frames, read from the XML below.
    if ! valgrind --tool=memcheck --xml=yes --xml-file="$xml" --num-callers=50 \
        --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
        "$BIN" transcode "$WORK/$input" "$WORK/out-$input" --quality 144p --preset ultrafast \
        --threads 1 --thumbnail-time 0.2 --json >"$WORK/$input.json" 2>"$WORK/$input.err"; then
        warn "$input: transcode under valgrind failed: $(tail -n 3 "$WORK/$input.err")"
        failed=$((failed + 1))
    fi
done
elapsed=$(($(date +%s) - started))

python3 - "$VW_ROOT" "$elapsed" "$failed" "$WORK"/*.xml <<'PY'
import sys
import xml.etree.ElementTree as ET

root, elapsed, failed, reports = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
SYSTEM = ("vgpreload_", "libc.so", "libc-", "ld-linux", "libstdc++", "libgcc_s", "libpthread")
STD = ("std::", "core::", "alloc::", "<std::", "<core::", "<alloc::", "__rust", "rust_")


def innermost(stack):
    """The first frame that is neither valgrind/libc nor Rust's standard library."""
    for f in stack.findall("frame"):
        obj = f.findtext("obj", "")
        fn = f.findtext("fn", "")
        where = f.findtext("dir", "")
        if any(s in obj for s in SYSTEM) or fn.startswith(STD) or where.startswith("/rustc/"):
            continue
        return f
    return None


def is_ours(frame):
    """Our code, or a Rust dependency (ffmpeg-next, crossbeam...) running on our behalf."""
    if frame is None:
        return False
    fn = frame.findtext("fn", "")
    where = frame.findtext("dir", "")
    return (
        fn.startswith(("video_worker::", "<video_worker::"))
        or where.startswith(root + "/src")
        or "/.cargo/registry/" in where
    )


total = ours = 0
for report in reports:
    tree = ET.parse(report).getroot()
    name = report.rsplit("/", 1)[-1].removesuffix(".xml")
    errors = tree.findall("error")
    mine = 0
    for e in errors:
        frame = innermost(e.find("stack"))
        what = e.findtext("what") or e.findtext("xwhat/text") or "?"
        at = "?" if frame is None else "%s (%s)" % (frame.findtext("fn", "?"), frame.findtext("obj", "?").rsplit("/", 1)[-1])
        if is_ours(frame):
            mine += 1
            print("  OURS %s: %s: %s at %s" % (name, e.findtext("kind"), what, at))
        else:
            print("  library %s: %s: %s at %s" % (name, e.findtext("kind"), what, at))
    print("%s: %d errors, %d ours" % (name, len(errors), mine))
    total += len(errors)
    ours += mine
print("memcheck: %d errors, %d ours, %d runs failed, %s s" % (total, ours, failed, elapsed))
sys.exit(1 if ours or failed else 0)
PY
