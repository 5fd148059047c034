//! Mutation fuzzing of the media path on stable Rust: seed media made at test time with
//! Debian's `ffmpeg` CLI (tiny MP4, MKV, MPEG-TS and WebM, each with audio), mutated by a
//! deterministic driver (bit flips, byte sets, chunk duplicate/delete, splices between seeds,
//! truncation, overwrites of MP4 box / EBML element / MPEG-TS header fields), and every mutant
//! pushed through open, probe, decode and encode by the real binary:
//! `video-worker transcode <in> <out> --quality 144p --preset ultrafast --threads 1 --json`.
//!
//! A run fails on any signal death (what a crash inside the FFmpeg libraries looks like), any
//! hang (no exit within [`CASE_TIMEOUT`]), any staging directory or parked old output left beside
//! the output, and any exit that is not a job outcome (status 0 or 1 with one JSON object, no
//! panic). An `internal` error kind is printed as a finding but does not fail the run: it says
//! our classification is wrong, not that the worker is unsafe.
//!
//! CI runs [`CI_ITERATIONS`] mutants with the fixed [`CI_SEED`], two at a time. A longer run:
//! `scripts/fuzz.sh 20000 7` (see the script). Every input that killed or hung the binary, ended
//! without a job outcome or got `internal` is written to `tests/fuzz_corpus/` (or
//! `VW_FUZZ_CRASH_DIR`) under a name that says what happened;
//! `saved_crashers_end_as_job_outcomes` replays that folder.
//! One case is replayed alone with `VW_FUZZ_ONLY=<case number>` (same seed): the mutant of case
//! N depends only on the seed and N, never on the order cases ran in.

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{make_fixture, scratch_dir, test_picture, test_tone};
use serde_json::Value;

/// Mutants in the CI pass (the issue asks for at least 500 through open, probe and decode).
const CI_ITERATIONS: usize = 600;
/// The CI pass's seed: fixed, so a failure in CI reproduces on any machine.
const CI_SEED: u64 = 0x7669_6465_6f2d_7731; // "video-w1"
/// Cases run at once: the CI machine has two cores and each case uses one encoder thread.
const DEFAULT_JOBS: usize = 2;
/// A tiny input that runs longer than this is a hang: an intact seed takes well under 1 s.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// A finished case slower than this is listed, to see how close the others come to the timeout.
const SLOW: Duration = Duration::from_secs(5);
/// Address-space cap of each case: a mutant that makes the worker allocate gigabytes shows as a
/// failed allocation (an abort, counted as a signal death) instead of pushing the machine into
/// the kernel's OOM killer. The intact seeds peak near 80 MB resident; x264 and the FFmpeg
/// thread pools reserve far more address space than they touch, hence the margin.
const CASE_ADDRESS_SPACE: u64 = 4 << 30;

// ---------------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to choose mutations.
struct SplitMix64(u64);

impl SplitMix64 {
    /// The generator of case `case` of a run seeded with `seed`.
    fn for_case(seed: u64, case: usize) -> SplitMix64 {
        let mut g = SplitMix64(seed ^ (case as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
        g.next();
        g
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    /// A length that is usually small and sometimes large, up to `max`.
    fn length(&mut self, max: usize) -> usize {
        let cap = match self.below(4) {
            0 => 4,
            1 => 64,
            2 => 1024,
            _ => max,
        };
        1 + self.below(cap.clamp(1, max.max(1)))
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

/// One intact input the mutants start from.
struct Seed {
    name: &'static str,
    bytes: Vec<u8>,
    /// Offsets worth overwriting: box and element headers and the fields just after them.
    fields: Vec<Field>,
}

/// A header field of a container: where it starts and how wide it is.
#[derive(Clone, Copy, Debug)]
struct Field {
    at: usize,
    width: usize,
}

/// The seeds: 160x120, 0.6 s, H.264 or VP8 with AAC, MP2 or Opus audio, in the four containers
/// uploads come in; plus a rotated MP4 (its display matrix sends frames through transpose) and a
/// TS of another frame size, so splices can put two geometries in one stream.
fn make_seeds(dir: &Path) -> Vec<Seed> {
    let video = || test_picture(160, 120, "25", 0.6);
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&'static str> = vec![
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "5",
            "-pix_fmt",
            "yuv420p",
        ];
        v.extend_from_slice(extra);
        v
    };
    // (file name, lavfi inputs, encoder arguments)
    type Spec = (&'static str, Vec<Vec<String>>, Vec<&'static str>);
    let specs: Vec<Spec> = vec![
        (
            "seed.mp4",
            vec![video(), test_tone(48_000, 0.6)],
            with(&["-c:a", "aac", "-b:a", "32k", "-shortest"]),
        ),
        (
            "seed.mkv",
            vec![video(), test_tone(44_100, 0.6)],
            with(&["-c:a", "aac", "-b:a", "32k", "-shortest"]),
        ),
        (
            "seed.ts",
            vec![video(), test_tone(48_000, 0.6)],
            with(&["-c:a", "mp2", "-b:a", "64k", "-shortest"]),
        ),
        (
            "seed.webm",
            vec![video(), test_tone(48_000, 0.6)],
            vec![
                "-c:v",
                "libvpx",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-b:v",
                "100k",
                "-g",
                "5",
                "-c:a",
                "libopus",
                "-b:a",
                "32k",
                "-shortest",
            ],
        ),
        (
            "seed-rotated.mp4",
            vec![video(), test_tone(48_000, 0.6)],
            with(&[
                "-c:a",
                "aac",
                "-b:a",
                "32k",
                "-shortest",
                "-metadata:s:v",
                "rotate=90",
            ]),
        ),
        (
            "seed-wide.ts",
            vec![test_picture(240, 48, "25", 0.4), test_tone(22_050, 0.4)],
            with(&["-c:a", "mp2", "-ac", "1", "-b:a", "64k", "-shortest"]),
        ),
    ];
    specs
        .into_iter()
        .map(|(name, inputs, args)| {
            let path = make_fixture(dir, name, &inputs, &args);
            let bytes = fs::read(&path).expect("read seed");
            let fields = header_fields(name, &bytes);
            Seed {
                name,
                bytes,
                fields,
            }
        })
        .collect()
}

fn extension(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or("bin")
}

/// Header fields of the seed's container, found by walking its structure.
fn header_fields(name: &str, bytes: &[u8]) -> Vec<Field> {
    let mut fields = Vec::new();
    match extension(name) {
        "mp4" => mp4_fields(bytes, 0, bytes.len(), 0, &mut fields),
        "mkv" | "webm" => ebml_fields(bytes, &mut fields),
        "ts" => ts_fields(bytes, &mut fields),
        _ => {}
    }
    fields
}

/// ISO-BMFF boxes that hold boxes.
const MP4_CONTAINERS: &[&[u8; 4]] = &[
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta", b"mvex", b"moof",
    b"traf",
];

/// Each box's size and type, and the first 32 bytes of each leaf box's payload (version/flags,
/// timescales, durations, entry counts, sample sizes and offsets), as 4-byte fields.
fn mp4_fields(bytes: &[u8], start: usize, end: usize, depth: usize, out: &mut Vec<Field>) {
    let mut at = start;
    while at + 8 <= end && depth < 8 {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind: &[u8; 4] = bytes[at + 4..at + 8].try_into().expect("4 bytes");
        if size < 8 || at + size > end {
            break;
        }
        out.push(Field { at, width: 4 });
        out.push(Field {
            at: at + 4,
            width: 4,
        });
        if MP4_CONTAINERS.contains(&kind) {
            mp4_fields(bytes, at + 8, at + size, depth + 1, out);
        } else if kind == b"stsd" && size > 16 {
            // version/flags + entry count, then sample entries (avc1/mp4a) holding avcC/esds.
            let entry = at + 16;
            out.extend(
                (at + 8..(at + size).min(entry + 96))
                    .step_by(2)
                    .map(|a| Field { at: a, width: 2 }),
            );
        } else if kind != b"mdat" {
            let payload_end = (at + size).min(at + 8 + 32);
            out.extend(
                (at + 8..payload_end.saturating_sub(3))
                    .step_by(4)
                    .map(|a| Field { at: a, width: 4 }),
            );
        }
        at += size;
    }
}

/// Matroska/WebM element IDs whose size or value is worth breaking: the headers, the track
/// geometry and audio format, the timestamps and the block framing.
const EBML_IDS: &[&[u8]] = &[
    &[0x1a, 0x45, 0xdf, 0xa3], // EBML
    &[0x18, 0x53, 0x80, 0x67], // Segment
    &[0x16, 0x54, 0xae, 0x6b], // Tracks
    &[0x1f, 0x43, 0xb6, 0x75], // Cluster
    &[0x2a, 0xd7, 0xb1],       // TimestampScale
    &[0x44, 0x89],             // Duration
    &[0x23, 0xe3, 0x83],       // DefaultDuration
    &[0x63, 0xa2],             // CodecPrivate
    &[0xae],                   // TrackEntry
    &[0xd7],                   // TrackNumber
    &[0xb0],                   // PixelWidth
    &[0xba],                   // PixelHeight
    &[0x9f],                   // Channels
    &[0xb5],                   // SamplingFrequency
    &[0xe7],                   // Cluster Timestamp
    &[0xa3],                   // SimpleBlock
    &[0xa0],                   // BlockGroup
];

/// Each known element ID found in the file: the size byte(s) after it and the first value bytes.
/// One-byte IDs also match inside payloads; a wrong match is just one more random overwrite.
fn ebml_fields(bytes: &[u8], out: &mut Vec<Field>) {
    for at in 0..bytes.len() {
        for id in EBML_IDS {
            if bytes[at..].starts_with(id) && at + id.len() + 4 <= bytes.len() {
                let size_at = at + id.len();
                // The width of an EBML variable-length integer is its leading zero bits + 1.
                let width = (bytes[size_at].leading_zeros() as usize + 1).min(8);
                out.push(Field {
                    at: size_at,
                    width: 1,
                });
                let value_at = size_at + width;
                if value_at + 4 <= bytes.len() {
                    out.push(Field {
                        at: value_at,
                        width: 4,
                    });
                }
            }
        }
    }
    // Keep the one-byte-ID noise bounded so that structural fields keep their odds.
    if out.len() > 4096 {
        let step = out.len() / 4096 + 1;
        let kept: Vec<Field> = out.iter().step_by(step).copied().collect();
        *out = kept;
    }
}

/// MPEG-TS: every packet's header (PID, continuity counter, adaptation field), the PES header
/// (stream id, length, PTS/DTS) when a payload starts, and the start of each H.264 NAL unit.
fn ts_fields(bytes: &[u8], out: &mut Vec<Field>) {
    for at in (0..bytes.len().saturating_sub(187)).step_by(188) {
        if bytes[at] != 0x47 {
            continue;
        }
        out.push(Field {
            at: at + 1,
            width: 2,
        });
        out.push(Field {
            at: at + 3,
            width: 1,
        });
        if bytes[at + 1] & 0x40 != 0 {
            out.extend(
                (at + 4..at + 24)
                    .step_by(2)
                    .map(|a| Field { at: a, width: 2 }),
            );
        }
    }
    for at in 0..bytes.len().saturating_sub(8) {
        if bytes[at..at + 3] == [0, 0, 1] {
            out.push(Field {
                at: at + 3,
                width: 4,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

/// Values that make parsers take their edge paths.
const INTERESTING_U32: &[u32] = &[
    0,
    1,
    2,
    7,
    8,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

/// One mutant of case `case`: which seed it came from, the bytes, and what was done (printed
/// with each finding so it can be understood without replaying).
struct Mutant {
    seed: &'static str,
    bytes: Vec<u8>,
    steps: Vec<String>,
}

fn mutate(seeds: &[Seed], rng: &mut SplitMix64) -> Mutant {
    let seed = &seeds[rng.below(seeds.len())];
    let mut bytes = seed.bytes.clone();
    let mut steps = Vec::new();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        if bytes.len() < 16 {
            break;
        }
        let len = bytes.len();
        let step = match rng.below(9) {
            0 => {
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    let at = rng.below(len);
                    bytes[at] ^= 1 << rng.below(8);
                }
                format!("flip {n} bits")
            }
            1 => {
                let at = rng.below(len);
                let n = rng.length(16).min(len - at);
                let value = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.below(5)];
                bytes[at..at + n].fill(value);
                format!("set {n} bytes at {at} to {value:#04x}")
            }
            2 => {
                let at = rng.below(len);
                let n = rng.length(len / 4).min(len - at);
                let chunk = bytes[at..at + n].to_vec();
                let to = rng.below(len);
                bytes.splice(to..to, chunk);
                format!("duplicate {n} bytes from {at} to {to}")
            }
            3 => {
                let at = rng.below(len);
                let n = rng.length(len / 4).min(len - at);
                bytes.drain(at..at + n);
                format!("delete {n} bytes at {at}")
            }
            4 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.bytes.len());
                let n = rng
                    .length(other.bytes.len() / 2)
                    .min(other.bytes.len() - from);
                let to = rng.below(len);
                if rng.chance(50) {
                    let end = (to + n).min(len);
                    bytes.splice(to..end, other.bytes[from..from + n].iter().copied());
                    format!(
                        "overwrite {n} bytes at {to} with {} from {from}",
                        other.name
                    )
                } else {
                    bytes.splice(to..to, other.bytes[from..from + n].iter().copied());
                    format!("insert {n} bytes of {} from {from} at {to}", other.name)
                }
            }
            5 => {
                // A tail from another seed: a stream that changes mid-way (what `cat a.ts
                // b.ts` does to broadcast captures).
                let other = &seeds[rng.below(seeds.len())];
                let cut = len / 4 + rng.below(len / 2);
                let from = rng.below(other.bytes.len() / 2);
                bytes.truncate(cut);
                bytes.extend_from_slice(&other.bytes[from..]);
                format!("cut at {cut}, then {} from {from}", other.name)
            }
            6 => {
                let keep = rng.below(len);
                bytes.truncate(keep);
                format!("truncate to {keep}")
            }
            _ => match seed.fields.get(rng.below(seed.fields.len().max(1))) {
                Some(field) if field.at + field.width <= bytes.len() => {
                    let value = if rng.chance(70) {
                        INTERESTING_U32[rng.below(INTERESTING_U32.len())]
                    } else {
                        rng.next() as u32
                    };
                    let be = value.to_be_bytes();
                    bytes[field.at..field.at + field.width].copy_from_slice(&be[4 - field.width..]);
                    format!(
                        "header field at {} ({} bytes) = {value:#x}",
                        field.at, field.width
                    )
                }
                _ => {
                    let at = rng.below(len);
                    bytes[at] = rng.next() as u8;
                    format!("set byte {at}")
                }
            },
        };
        steps.push(step);
    }
    Mutant {
        seed: seed.name,
        bytes,
        steps,
    }
}

// ---------------------------------------------------------------------------------------------
// Running one case
// ---------------------------------------------------------------------------------------------

/// How one mutant ended.
#[derive(Debug, Clone, PartialEq)]
enum Ending {
    /// Exit 0: the mutant was still a usable video.
    Transcoded,
    /// Exit 1 with `{"error": {"kind", "message"}}`: the kind and the message.
    Refused(String, String),
    /// Killed by a signal (crash or abort), with the last lines of stderr.
    Signal(i32, String),
    /// Still running after [`CASE_TIMEOUT`]; killed by the driver.
    Hang,
    /// Any other exit: a panic, an unexpected status, or stdout that is not one JSON outcome.
    NotAnOutcome(String),
}

struct CaseResult {
    ending: Ending,
    staging_left: Vec<String>,
    elapsed: Duration,
}

fn case_args(input: &Path, out: &Path) -> Vec<OsString> {
    vec![
        "transcode".into(),
        input.into(),
        out.into(),
        "--quality".into(),
        "144p".into(),
        "--preset".into(),
        "ultrafast".into(),
        "--threads".into(),
        "1".into(),
        "--json".into(),
    ]
}

/// Runs the binary on `input` in `dir` (output `dir/out`) and classifies the ending.
fn run_case(input: &Path, dir: &Path) -> CaseResult {
    let out = dir.join("out");
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_video-worker"));
    command
        .args(case_args(input, &out))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    limit_address_space(&mut command);
    let mut child = command.spawn().expect("spawn the video-worker binary");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status: Option<ExitStatus> = loop {
        if let Some(status) = child.try_wait().expect("wait for video-worker") {
            break Some(status);
        }
        if started.elapsed() > CASE_TIMEOUT {
            // Only the child this case started.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let ending = match status {
        None => Ending::Hang,
        Some(s) => classify(s, &stdout, &stderr),
    };
    let staging_left = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // A staging dir, or a previous output parked during the publish.
                .filter(|n| n.contains("staging") || n.contains(".old-"))
                .collect()
        })
        .unwrap_or_default();
    CaseResult {
        ending,
        staging_left,
        elapsed,
    }
}

fn classify(status: ExitStatus, stdout: &str, stderr: &str) -> Ending {
    if let Some(signal) = status.signal() {
        return Ending::Signal(signal, tail(stderr, 5));
    }
    if stderr.contains("panicked") {
        return Ending::NotAnOutcome(format!("panic: {}", tail(stderr, 5)));
    }
    let json: Option<Value> = serde_json::from_str(stdout.trim()).ok();
    match (status.code(), json) {
        (Some(0), Some(v)) if v.get("master_playlist").is_some() => Ending::Transcoded,
        (Some(1), Some(v)) => match v["error"]["kind"].as_str() {
            Some(kind) => Ending::Refused(
                kind.to_string(),
                v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => Ending::NotAnOutcome(format!("exit 1 without error.kind: {stdout}")),
        },
        (code, _) => Ending::NotAnOutcome(format!(
            "exit {code:?}, stdout {:?}, stderr {}",
            stdout.trim(),
            tail(stderr, 5)
        )),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

fn drain<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn limit_address_space(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: CASE_ADDRESS_SPACE as libc::rlim_t,
        rlim_max: CASE_ADDRESS_SPACE as libc::rlim_t,
    };
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit(2),
    // which is async-signal-safe, on a value copied into the closure; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16)
                    .ok()
                    .and_then(|n| n.to_string().parse().ok()),
                None => v.parse().ok(),
            };
            parsed.unwrap_or_else(|| panic!("{name}={v} is not a number"))
        }
        _ => default,
    }
}

fn crash_dir() -> PathBuf {
    std::env::var_os("VW_FUZZ_CRASH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus"))
}

#[derive(Default)]
struct Tally {
    transcoded: usize,
    refused: std::collections::BTreeMap<String, usize>,
    signals: Vec<String>,
    hangs: Vec<String>,
    staging_leaks: Vec<String>,
    not_outcomes: Vec<String>,
    internal: Vec<String>,
    /// Finished, but slower than [`SLOW`]: printed, so that a timeout near the limit shows.
    slow: Vec<String>,
    slowest: Duration,
}

#[test]
fn mutated_media_ends_as_a_job_outcome_without_crash_hang_or_staging_leak() {
    let iterations: usize = env_or("VW_FUZZ_ITERATIONS", CI_ITERATIONS);
    let seed: u64 = env_or("VW_FUZZ_SEED", CI_SEED);
    let jobs: usize = env_or("VW_FUZZ_JOBS", DEFAULT_JOBS).max(1);
    let only: Option<usize> = std::env::var("VW_FUZZ_ONLY")
        .ok()
        .and_then(|v| v.parse().ok());
    let work = scratch_dir();
    let seeds = make_seeds(work.path());
    for s in &seeds {
        assert!(
            s.fields.len() > 8 || extension(s.name) == "bin",
            "{}: found only {} header fields; the container walker is broken",
            s.name,
            s.fields.len()
        );
    }
    let cases: Vec<usize> = match only {
        Some(n) => vec![n],
        None => (0..iterations).collect(),
    };
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    let crashers = crash_dir();
    let started = Instant::now();
    thread::scope(|scope| {
        for _ in 0..jobs.min(cases.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&case) = cases.get(i) else {
                    return;
                };
                let mut rng = SplitMix64::for_case(seed, case);
                let mutant = mutate(&seeds, &mut rng);
                let dir = work.path().join(format!("case-{case}"));
                fs::create_dir(&dir).expect("case dir");
                let input = dir.join(format!("in.{}", extension(mutant.seed)));
                fs::write(&input, &mutant.bytes).expect("write mutant");
                let result = run_case(&input, &dir);
                let what = format!(
                    "case {case} (VW_FUZZ_SEED={seed:#x} VW_FUZZ_ONLY={case}): {} {:?}",
                    mutant.seed, mutant.steps
                );
                let keep = |label: &str| -> String {
                    let _ = fs::create_dir_all(&crashers);
                    let name = format!("{label}-{seed:016x}-{case}.{}", extension(mutant.seed));
                    let path = crashers.join(name);
                    let _ = fs::write(&path, &mutant.bytes);
                    path.display().to_string()
                };
                let mut t = tally.lock().expect("tally");
                if result.ending != Ending::Hang && result.elapsed > SLOW {
                    t.slow.push(format!(
                        "{what}: {:?} after {:.1} s",
                        result.ending,
                        result.elapsed.as_secs_f64()
                    ));
                }
                if result.ending != Ending::Hang {
                    t.slowest = t.slowest.max(result.elapsed);
                }
                match &result.ending {
                    Ending::Transcoded => t.transcoded += 1,
                    Ending::Refused(kind, message) => {
                        *t.refused.entry(kind.clone()).or_default() += 1;
                        if kind == "internal" {
                            let saved = keep("internal");
                            t.internal
                                .push(format!("{what}: {message:?}; saved {saved}"));
                        }
                    }
                    Ending::Signal(sig, stderr) => {
                        let saved = keep(&format!("signal{sig}"));
                        t.signals.push(format!(
                            "{what}: signal {sig}, saved {saved}; stderr: {stderr}"
                        ));
                    }
                    Ending::Hang => {
                        let saved = keep("hang");
                        t.hangs.push(format!("{what}: saved {saved}"));
                    }
                    Ending::NotAnOutcome(why) => {
                        let saved = keep("not-an-outcome");
                        t.not_outcomes.push(format!("{what}: {why}; saved {saved}"));
                    }
                }
                // A case the driver killed cannot clean up; its staging dir is the hang's
                // consequence, not a leak (sweeping those is the worker's start-up job).
                if result.ending != Ending::Hang && !result.staging_left.is_empty() {
                    t.staging_leaks
                        .push(format!("{what}: left {:?}", result.staging_left));
                }
                drop(t);
                // Keep the scratch space small on long runs.
                let _ = fs::remove_dir_all(&dir);
            });
        }
    });
    let t = tally.into_inner().expect("tally");
    let wall = started.elapsed();
    println!(
        "fuzz: {} mutants (seed {seed:#x}, {jobs} at a time) in {:.1} s, slowest finished case {:.1} s: \
         {} transcoded, refused {:?}; {} signal deaths, {} hangs, {} staging leaks, {} not an \
         outcome, {} internal",
        cases.len(),
        wall.as_secs_f64(),
        t.slowest.as_secs_f64(),
        t.transcoded,
        t.refused,
        t.signals.len(),
        t.hangs.len(),
        t.staging_leaks.len(),
        t.not_outcomes.len(),
        t.internal.len()
    );
    for (label, list) in [
        ("signal death", &t.signals),
        ("hang", &t.hangs),
        ("staging leak", &t.staging_leaks),
        ("not an outcome", &t.not_outcomes),
        ("internal error kind (finding)", &t.internal),
        ("slow (information)", &t.slow),
    ] {
        for line in list {
            println!("fuzz finding, {label}: {line}");
        }
    }
    assert!(
        t.signals.is_empty()
            && t.hangs.is_empty()
            && t.staging_leaks.is_empty()
            && t.not_outcomes.is_empty(),
        "fuzzing found {} signal deaths, {} hangs, {} staging leaks and {} endings that are \
         not job outcomes (listed above; inputs saved in {})",
        t.signals.len(),
        t.hangs.len(),
        t.staging_leaks.len(),
        t.not_outcomes.len(),
        crashers.display()
    );
}

/// The driver's baseline: every intact seed transcodes, so the mutants start from inputs that
/// reach decode and encode (a seed that failed to open would make every mutant a trivial
/// refusal).
#[test]
fn every_fuzz_seed_transcodes_intact() {
    let work = scratch_dir();
    for seed in make_seeds(work.path()) {
        let dir = work.path().join(format!("intact-{}", seed.name));
        fs::create_dir(&dir).expect("case dir");
        let input = dir.join(seed.name);
        fs::write(&input, &seed.bytes).expect("write seed");
        let result = run_case(&input, &dir);
        assert_eq!(
            result.ending,
            Ending::Transcoded,
            "intact seed {} must transcode",
            seed.name
        );
        assert!(result.staging_left.is_empty());
    }
}

/// The driver's own check: a process killed by SIGSEGV is counted as a signal death, and an
/// exit 1 without the error object is not taken for a job outcome.
#[test]
fn driver_tells_a_signal_death_from_a_job_outcome() {
    let crashed = Command::new("sh")
        .args(["-c", "kill -SEGV $$"])
        .status()
        .expect("run sh");
    assert!(matches!(
        classify(crashed, "", ""),
        Ending::Signal(libc::SIGSEGV, _)
    ));
    let refused = Command::new("sh")
        .args(["-c", "exit 1"])
        .status()
        .expect("run sh");
    assert_eq!(
        classify(
            refused,
            r#"{"error":{"kind":"invalid_media","message":"x"}}"#,
            ""
        ),
        Ending::Refused("invalid_media".into(), "x".into())
    );
    assert!(matches!(
        classify(refused, "not json", ""),
        Ending::NotAnOutcome(_)
    ));
}

/// Replays every saved crasher in `tests/fuzz_corpus/`: each must now end as a job outcome,
/// within [`SLOW`].
fn replay_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus");
    let mut inputs: Vec<PathBuf> = fs::read_dir(&corpus)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| !n.ends_with(".md"))
                })
                .collect()
        })
        .unwrap_or_default();
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no saved inputs in {}: the corpus is part of the repository",
        corpus.display()
    );
    let work = scratch_dir();
    let mut bad = Vec::new();
    for (n, input) in inputs.iter().enumerate() {
        let dir = work.path().join(format!("replay-{n}"));
        fs::create_dir(&dir).expect("case dir");
        let result = run_case(input, &dir);
        // A saved input is a few tens of KB: taking longer than SLOW means it still makes the
        // worker produce far more than it holds (a timestamp gap filled with duplicates).
        let quick = result.elapsed <= SLOW;
        match &result.ending {
            // `internal` means "our bug, retry": hostile media must get a media kind.
            Ending::Transcoded if quick && result.staging_left.is_empty() => {}
            Ending::Refused(kind, _)
                if kind != "internal" && quick && result.staging_left.is_empty() => {}
            other => bad.push(format!(
                "{}: {other:?} after {:.1} s, staging left {:?}",
                input.display(),
                result.elapsed.as_secs_f64(),
                result.staging_left
            )),
        }
    }
    assert!(
        bad.is_empty(),
        "saved fuzz inputs that still crash, hang or leak:\n{}",
        bad.join("\n")
    );
}

/// Every saved crasher (C2, C13, C15 and the untimed-frame hangs) must keep ending as a job
/// outcome.
#[test]
fn saved_crashers_end_as_job_outcomes() {
    replay_corpus();
}
