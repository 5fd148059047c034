#!/usr/bin/env bash
# Soak (not in CI): many short jobs through `video-worker run` against a real nats-server, to show
# that the worker's memory and open file descriptors stay flat, that no staging directory is left
# behind, and that every job is processed exactly once.
#
#   scripts/soak.sh [jobs]          (default 200)
#
# 1. Starts a nats-server (JetStream, its own store, a free loopback port) and `video-worker run`
#    (--jobs 2, one encoder thread each) with a scratch root.
# 2. Makes four tiny sources with the ffmpeg CLI (160x120 MP4, 320x240 MP4, 320x240 MKV,
#    256x144 MPEG-TS; 1 s, with audio) and submits the jobs in batches of 4 concurrent
#    `submit --wait --json` (144p, ultrafast), each with its own video_id and output folder.
# 3. Every 20 jobs prints the worker's RSS (/proc/<pid>/status VmRSS) and open fds
#    (/proc/<pid>/fd); at the end checks:
#    - every submit reported `processed`, on attempt 1, none `failed`;
#    - each video_id was logged "job done and acked" exactly once by the worker;
#    - the stream holds exactly one job and one video.processed per job, nothing else (each
#      submit found its own video.processed, so 2 x jobs messages leaves room for no second one); the
#      consumer has nothing pending, unacked or redelivered; the DLQ is empty;
#    - no `.staging` directory is left; every output has its master.m3u8;
#    - fds at the end = fds at the first sample; RSS at the end <= 1.25 x RSS at the first sample
#      (the first sample is taken after 20 jobs, once the allocator and codec caches are warm);
#      no job process (child of the worker, zombie or not) left after the last job.
# Exit 0 when all hold.
#
# Environment: VW_BIN (default target/release/video-worker if built, else target/debug),
#              NATS_SERVER_BIN (default: target/tools/nats-server-current, else nats-server on
#              PATH), VW_SOAK_SAMPLE_EVERY (default 20), VW_SOAK_KEEP=1 keeps the scratch directory.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

JOBS="${1:-200}"
SAMPLE_EVERY="${VW_SOAK_SAMPLE_EVERY:-20}"
BATCH=4

BIN="${VW_BIN:-}"
if [ -z "$BIN" ]; then
    BIN="$VW_ROOT/target/release/video-worker"
    [ -x "$BIN" ] || BIN="$VW_ROOT/target/debug/video-worker"
fi
[ -x "$BIN" ] || die "no video-worker binary (cargo build --release, or set VW_BIN)"
NATS="${NATS_SERVER_BIN:-}"
if [ -z "$NATS" ]; then
    if [ -x "$VW_NATS_CURRENT_LINK" ]; then NATS="$(readlink -f "$VW_NATS_CURRENT_LINK")"; else NATS="$(command -v nats-server || echo /usr/sbin/nats-server)"; fi
fi
[ -x "$NATS" ] || die "no nats-server (scripts/setup.sh installs one)"

WORK="$(mktemp -d -t vw-soak.XXXXXX)"
ROOT="$WORK/root"
mkdir -p "$ROOT/uploads" "$ROOT/hls" "$WORK/store" "$WORK/reports"
NATS_PID="" WORKER_PID=""
cleanup() {
    # Only the two processes this script started.
    [ -n "$WORKER_PID" ] && kill -TERM "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null
    [ -n "$NATS_PID" ] && kill -TERM "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null
    if [ "${VW_SOAK_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
URL="nats://127.0.0.1:$PORT"
"$NATS" -a 127.0.0.1 -p "$PORT" -js -sd "$WORK/store" >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

src() {
    local name="$1" size="$2"
    shift 2
    ffmpeg -hide_banner -nostdin -v error -y \
        -f lavfi -i "testsrc2=size=$size:rate=25:duration=1" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=1" \
        -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -shortest "$@" "$ROOT/uploads/$name"
}
src a.mp4 160x120
src b.mp4 320x240
src c.mkv 320x240
src d.ts 256x144
SOURCES=(a.mp4 b.mp4 c.mkv d.ts)

VW_LOG=info "$BIN" run --nats-url "$URL" --allow-root "$ROOT" --kinds process --jobs 2 \
    --threads 1 --preset ultrafast --pull-wait 1 --worker-name soak >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 300); do
    grep -q serving "$WORK/worker.log" && break
    kill -0 "$WORKER_PID" 2>/dev/null || die "worker exited: $(tail -n 5 "$WORK/worker.log")"
    sleep 0.1
done
grep -q serving "$WORK/worker.log" || die "worker not serving: $(tail -n 5 "$WORK/worker.log")"

sample() {
    local rss fds
    rss="$(awk '/^VmRSS/{print $2}' "/proc/$WORKER_PID/status")"
    fds="$(find "/proc/$WORKER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)"
    # Job processes (media work runs in a child per job); a zombie counts too.
    children="$(pgrep -c -P "$WORKER_PID" || true)"
    echo "$1 $rss $fds $children" >>"$WORK/curve"
    printf '%6s  %9s kB  %8s  %8s\n' "$1" "$rss" "$fds" "$children"
}

log "soak: $JOBS jobs, binary $BIN, nats-server $(vw_nats_version "$NATS"), work dir $WORK"
started=$(date +%s)
printf '%6s  %12s  %8s  %8s\n' jobs 'RSS' 'open fds' children
sample 0
i=0
while [ "$i" -lt "$JOBS" ]; do
    pids=()
    for _ in $(seq "$BATCH"); do
        [ "$i" -lt "$JOBS" ] || break
        i=$((i + 1))
        id="soak-$i"
        source_file="${SOURCES[$((i % ${#SOURCES[@]}))]}"
        "$BIN" submit --nats-url "$URL" --no-setup --video-id "$id" \
            --source "$ROOT/uploads/$source_file" --output "$ROOT/hls/$id" --quality 144p \
            --preset ultrafast --wait --timeout 120 --json >"$WORK/reports/$id.json" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    if [ $((i % SAMPLE_EVERY)) -eq 0 ] || [ "$i" -eq "$JOBS" ]; then sample "$i"; fi
done
elapsed=$(($(date +%s) - started))

"$BIN" streams --nats-url "$URL" --json >"$WORK/streams.json"
python3 - "$WORK" "$JOBS" "$elapsed" <<'PY'
import json, os, re, sys
work, jobs, elapsed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
problems = []
for i in range(1, jobs + 1):
    path = f"{work}/reports/soak-{i}.json"
    try:
        r = json.loads(open(path).read().strip().splitlines()[-1])
    except Exception as e:
        problems.append(f"soak-{i}: no report ({e}): {open(path).read()[-300:]!r}")
        continue
    p = r.get("processed")
    if r.get("duplicate"):
        problems.append(f"soak-{i}: the job was not stored (duplicate)")
    if not p or r.get("failed") or r.get("timed_out"):
        problems.append(f"soak-{i}: not processed: {r}")
    elif p.get("attempt") != 1:
        problems.append(f"soak-{i}: processed on attempt {p.get('attempt')}")
acked = re.findall(r"job done and acked.*?video_id=(soak-\d+)", open(f"{work}/worker.log").read())
counts = {}
for v in acked:
    counts[v] = counts.get(v, 0) + 1
for i in range(1, jobs + 1):
    n = counts.get(f"soak-{i}", 0)
    if n != 1:
        problems.append(f"soak-{i}: acked {n} times by the worker")
st = json.load(open(f"{work}/streams.json"))
if st["stream"]["messages"] != 2 * jobs:
    problems.append(f"stream holds {st['stream']['messages']} messages, expected {jobs} jobs + {jobs} video.processed")
for c in st["consumers"]:
    if c["num_pending"] or c["num_ack_pending"] or c["num_redelivered"]:
        problems.append(f"consumer {c['name']}: {c}")
if st["dlq"]["messages"]:
    problems.append(f"DLQ holds {st['dlq']['messages']} messages")
hls = f"{work}/root/hls"
left = [n for n in os.listdir(hls) if "staging" in n]
if left:
    problems.append(f"staging left: {left}")
missing = [i for i in range(1, jobs + 1) if not os.path.isfile(f"{hls}/soak-{i}/master.m3u8")]
if missing:
    problems.append(f"outputs without master.m3u8: {missing[:10]}")
curve = [tuple(map(int, l.split())) for l in open(f"{work}/curve")]
first = next((c for c in curve if c[0] >= 20), curve[0])
last = curve[-1]
print(f"soak: {jobs} jobs in {elapsed} s; RSS {first[1]} kB after {first[0]} jobs -> {last[1]} kB after {last[0]}; "
      f"fds {first[2]} -> {last[2]}; children at the end {last[3]}; stream {st['stream']['messages']} messages, DLQ {st['dlq']['messages']}")
if last[2] != first[2]:
    problems.append(f"open fds grew: {first[2]} -> {last[2]}")
if last[3] != 0:
    problems.append(f"{last[3]} job processes left after the last job")
if last[1] > 1.25 * first[1]:
    problems.append(f"RSS grew: {first[1]} kB -> {last[1]} kB")
for p in problems:
    print("PROBLEM:", p)
print("soak:", "FAILED" if problems else "ok: every job processed exactly once, no staging left, RSS and fds flat")
sys.exit(1 if problems else 0)
PY
