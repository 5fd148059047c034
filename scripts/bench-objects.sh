#!/usr/bin/env bash
# Issue 9's benchmark: the same job from S3 to S3 (moto's server on this machine) against local
# disk to local disk, interleaved runs, with `video-worker transcode`. S3 runs both ways of
# reading the source (`--source-read download`: whole first, then decoded; `overlap`: decoded
# while it arrives). Reports end-to-end time for each, and for S3 the time to the first segment
# stored and to the master (commit point).
#
#   scripts/bench-objects.sh [--runs N] [--seconds S] [--quality LIST] [--preset P] [--source FILE]
#                            [--link-mbps M]
#
# --link-mbps M: the worker reaches moto through scripts/bench/link.py, one shaped link of M
# Mbit/s shared by both directions (a network instead of loopback).
# Defaults: 3 runs, the first 10 s of the bench footage (target/footage, 1080p24; a synthetic
# 1080p25 clip when it is missing), qualities 1080p,720p,480p, preset medium. The binary is
# $VW_BIN, else target/release/video-worker (build it first: cargo build --release).
# Smoke run: scripts/bench-objects.sh --runs 1 --seconds 2 --quality 240p --preset ultrafast
# Needs an idle machine for figures worth quoting.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

runs=3 seconds=10 quality="1080p,720p,480p" preset=medium source="" link_mbps=""
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --quality) quality="$2"; shift 2 ;;
    --preset) preset="$2"; shift 2 ;;
    --source) source="$2"; shift 2 ;;
    --link-mbps) link_mbps="$2"; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

bin="${VW_BIN:-$VW_ROOT/target/release/video-worker}"
[ -x "$bin" ] || die "$bin missing: cargo build --release (or set VW_BIN)"
venv="$VW_TOOLS_DIR/storage-venv/bin"
[ -x "$venv/moto_server" ] || die "moto missing: run scripts/setup.sh"
peer="$VW_ROOT/tests/object_store/peer.py"

work="$(mktemp -d "${TMPDIR:-/tmp}/vw-bench-objects-XXXXXX")"
moto_pid="" link_pid=""
cleanup() {
    [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
    [ -n "$link_pid" ] && kill "$link_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

clip="$work/source.mp4"
footage="$VW_ROOT/target/footage/big-buck-bunny-1080p24-30s.mp4"
if [ -n "$source" ]; then
    ffmpeg -hide_banner -nostdin -v error -y -i "$source" -t "$seconds" -c copy "$clip"
elif [ -f "$footage" ]; then
    ffmpeg -hide_banner -nostdin -v error -y -i "$footage" -t "$seconds" -c copy "$clip"
else
    warn "no footage: a synthetic 1080p clip (run scripts/fetch-footage.sh for the real one)"
    ffmpeg -hide_banner -nostdin -v error -y -f lavfi -i "testsrc2=size=1920x1080:rate=25:duration=$seconds" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$seconds" \
        -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -shortest "$clip"
fi

port="$("$venv/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$venv/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
endpoint="http://127.0.0.1:$port"
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
"$venv/python" "$peer" s3-put "$endpoint" bench source.mp4 "$clip" >/dev/null
link="loopback"
if [ -n "$link_mbps" ]; then
    link_port="$("$venv/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    "$venv/python" "$VW_ROOT/scripts/bench/link.py" "$link_port" "$port" "$link_mbps" >"$work/link.log" 2>&1 &
    link_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$link_port") 2>/dev/null && break
        sleep 0.1
    done
    endpoint="http://127.0.0.1:$link_port"
    link="a $link_mbps Mbit/s link"
fi

export AWS_ENDPOINT_URL="$endpoint" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
    AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
common=(--quality "$quality" --preset "$preset" --json --scratch "$work")

now() { date +%s.%N; }
results="$work/results.tsv"
: >"$results"
for i in $(seq "$runs"); do
    t0="$(now)"
    "$bin" transcode "$clip" "$work/local-$i" "${common[@]}" >"$work/local-$i.json"
    t1="$(now)"
    echo "local	$i	$(echo "$t1 - $t0" | bc -l)	-	-" >>"$results"
    rm -rf "$work/local-$i"
    for mode in download overlap; do
        t0="$(now)"
        "$bin" transcode s3://bench/source.mp4 "s3://bench/out-$mode-$i" "${common[@]}" \
            --source-read "$mode" >"$work/s3-$mode-$i.json"
        t1="$(now)"
        read -r first master < <("$venv/python" -c 'import json,sys; u=json.load(open(sys.argv[1]))["upload"]; print(u["first_segment_seconds"], u["master_seconds"])' "$work/s3-$mode-$i.json")
        echo "s3-$mode	$i	$(echo "$t1 - $t0" | bc -l)	$first	$master" >>"$results"
    done
done

"$venv/python" - "$results" "$seconds" "$quality" "$preset" "$link" "$(stat -c %s "$clip")" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def med(kind, col):
    v = [float(r[col]) for r in rows if r[0] == kind and r[col] != "-"]
    return statistics.median(v) if v else None
local = med("local", 2)
print(f"{sys.argv[2]} s source ({int(sys.argv[6]) / 1e6:.1f} MB), {sys.argv[3]}, preset {sys.argv[4]}, moto over {sys.argv[5]}, {len(rows)//3} interleaved runs (medians)")
print("| path | end to end (s) | first segment stored (s) | master stored (s) | / local |")
print("|---|---|---|---|---|")
print(f"| local → local | {local:.2f} | – | – | 1.000× |")
for mode in ("download", "overlap"):
    s3 = med(f"s3-{mode}", 2)
    print(f"| S3 → S3, --source-read {mode} | {s3:.2f} | {med(f's3-{mode}', 3):.2f} | {med(f's3-{mode}', 4):.2f} | {s3 / local:.3f}× |")
EOF
