#!/usr/bin/env bash
# The long fuzz run (CI runs a short fixed-seed pass of the same driver: tests/fuzz.rs).
#
#   scripts/fuzz.sh [iterations] [seed]
#
# Mutates the seed media (tiny MP4, MKV, TS and WebM made with the ffmpeg CLI) `iterations` times
# (default 5000) with a new seed each run unless one is given (printed first, so any run can be
# repeated exactly), and runs every mutant through `video-worker transcode` (open, probe, decode,
# encode) with a 20 s timeout. Prints a summary line and each finding; exits non-zero when a
# mutant killed the binary with a signal, hung, left a staging directory or ended without a job
# outcome. Those inputs are saved under tests/fuzz_corpus/ (or VW_FUZZ_CRASH_DIR): commit the
# small ones, they are replayed by `cargo test --test fuzz`.
#
# Replay one case:
#   VW_FUZZ_SEED=<seed> VW_FUZZ_ONLY=<case> cargo test --test fuzz mutated -- --nocapture
#
# Environment: VW_FUZZ_JOBS (mutants at once; default: the number of cores),
#              VW_FUZZ_CRASH_DIR (where findings are saved).
# Measured on the 2-core build machine (debug build, 2 jobs): 1500 mutants in 64 s when idle,
# ~0.2 s per mutant when the machine is busy; plus 20 s per hang.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

export VW_FUZZ_ITERATIONS="${1:-${VW_FUZZ_ITERATIONS:-5000}}"
export VW_FUZZ_SEED="${2:-${VW_FUZZ_SEED:-$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')}}"
export VW_FUZZ_JOBS="${VW_FUZZ_JOBS:-$(nproc)}"
vw_ensure_cargo_on_path || die "cargo not found (see scripts/setup.sh)"
log "fuzz: $VW_FUZZ_ITERATIONS mutants, VW_FUZZ_SEED=$VW_FUZZ_SEED, $VW_FUZZ_JOBS at a time"
cd "$VW_ROOT"
exec cargo test --test fuzz mutated_media -- --nocapture
