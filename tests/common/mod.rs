//! Helpers shared by the integration tests of `video-worker transcode`.
//!
//! Fixtures are made at test time with Debian's `ffmpeg` CLI from lavfi sources (STYLE.md point 6),
//! and every output is checked with an independent decoder, `ffprobe`, down to each segment
//! (point 7). Only the tests run these tools; the pipeline under test must never spawn them.
//!
//! The contract the assertions come from is the "The pipeline" list and the `--json`
//! object described in the crate's CLI contract.

// Each test binary (`transcode`, `bad_input`) uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use m3u8_rs::{MasterPlaylist, MediaPlaylist, MediaPlaylistType, VariantStream};
use serde_json::Value;
use tempfile::TempDir;

/// A worker run longer than this is a hang: fixtures are a few seconds of 360p.
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(60);

/// The MPEG-TS clock every segment timestamp is expressed in.
const TS_CLOCK: f64 = 90_000.0;

/// One AAC-LC frame (1024 samples at 48 kHz): the granularity of the audio timeline.
const AAC_FRAME_SECONDS: f64 = 1024.0 / 48_000.0;

/// Known qualities from the contract: name (shorter side) → nominal video bitrate in bit/s.
pub const KNOWN_QUALITIES: &[(&str, u64)] = &[
    ("1080p", 5_000_000),
    ("720p", 2_800_000),
    ("480p", 1_400_000),
    ("360p", 800_000),
    ("240p", 400_000),
    ("144p", 200_000),
];

/// A fresh directory per test: tests run in parallel and must not see each other's files.
pub fn scratch_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("video-worker-test-")
        .tempdir()
        .expect("create a temporary directory")
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Runs Debian's `ffmpeg` CLI to make (or cut) a fixture; a failure is a broken test setup.
pub fn ffmpeg<S: AsRef<OsStr>>(args: &[S]) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg (Debian package `ffmpeg`)");
    assert!(
        output.status.success(),
        "fixture command `ffmpeg {}` failed: {}",
        display_args(args),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Input arguments for a lavfi `testsrc2` picture: `rate` is an ffmpeg rate ("25", "30000/1001").
pub fn test_picture(width: u32, height: u32, rate: &str, seconds: f64) -> Vec<String> {
    lavfi(format!(
        "testsrc2=size={width}x{height}:rate={rate}:duration={seconds}"
    ))
}

/// Input arguments for a lavfi 440 Hz mono tone.
pub fn test_tone(sample_rate: u32, seconds: f64) -> Vec<String> {
    lavfi(format!(
        "sine=frequency=440:sample_rate={sample_rate}:duration={seconds}"
    ))
}

fn lavfi(graph: String) -> Vec<String> {
    vec!["-f".into(), "lavfi".into(), "-i".into(), graph]
}

/// Encodes `inputs` (lavfi input argument groups) with `output_args` into `dir/name`.
pub fn make_fixture(
    dir: &Path,
    name: &str,
    inputs: &[Vec<String>],
    output_args: &[&str],
) -> PathBuf {
    let path = dir.join(name);
    let mut args: Vec<OsString> = inputs.iter().flatten().map(OsString::from).collect();
    args.extend(output_args.iter().map(OsString::from));
    args.push(path.clone().into_os_string());
    ffmpeg(&args);
    path
}

/// The common upload: H.264 (x264 ultrafast, yuv420p) + AAC-LC stereo 48 kHz in MP4.
pub fn h264_aac_mp4(dir: &Path, name: &str, width: u32, height: u32, seconds: f64) -> PathBuf {
    make_fixture(
        dir,
        name,
        &[
            test_picture(width, height, "25", seconds),
            test_tone(48_000, seconds),
        ],
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
            "-b:a",
            "96k",
        ],
    )
}

/// H.264 only, no audio stream at all, in MP4.
pub fn h264_mp4(dir: &Path, name: &str, width: u32, height: u32, seconds: f64) -> PathBuf {
    make_fixture(
        dir,
        name,
        &[test_picture(width, height, "25", seconds)],
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
    )
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failing run can be reproduced.
pub fn pseudo_random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        bytes.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Byte range of the payload of the first top-level ISO-BMFF box of type `kind` (e.g. `mdat`).
pub fn mp4_box_payload(file: &[u8], kind: &[u8; 4]) -> Option<std::ops::Range<usize>> {
    let mut at = 0usize;
    while at + 8 <= file.len() {
        let size32 = u32::from_be_bytes(file[at..at + 4].try_into().ok()?) as usize;
        let (header, size) = match size32 {
            0 => (8, file.len() - at),
            1 => {
                let large = u64::from_be_bytes(file.get(at + 8..at + 16)?.try_into().ok()?);
                (16, usize::try_from(large).ok()?)
            }
            n => (8, n),
        };
        if size < header || at + size > file.len() {
            return None;
        }
        if &file[at + 4..at + 8] == kind {
            return Some(at + header..at + size);
        }
        at += size;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Running the worker
// ---------------------------------------------------------------------------------------------

/// What one `video-worker` process did.
#[derive(Debug)]
pub struct WorkerRun {
    pub args: Vec<OsString>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl WorkerRun {
    /// The command line, stdout and stderr, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`video-worker {}` → {:?} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            display_args(&self.args),
            self.status,
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs the binary under test with `args`; fails the test if it runs longer than [`WORKER_TIMEOUT`].
pub fn run_worker<S: AsRef<OsStr>>(args: &[S]) -> WorkerRun {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_video-worker"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .spawn()
        .expect("spawn the video-worker binary");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for video-worker") {
            break status;
        }
        if started.elapsed() > WORKER_TIMEOUT {
            // Kill only the child this test started.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`video-worker {}` hung: still running after {WORKER_TIMEOUT:?}; stderr so far is \
                 not available until it exits",
                display_args(&args)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    WorkerRun {
        args,
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed: started.elapsed(),
    }
}

fn drain<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `video-worker transcode <source> <out> --json <options…>`.
pub fn transcode(source: impl AsRef<OsStr>, out: &Path, options: &[&str]) -> WorkerRun {
    let mut args: Vec<OsString> = vec!["transcode".into(), source.as_ref().to_owned()];
    args.push(out.as_os_str().to_owned());
    args.push("--json".into());
    args.extend(options.iter().map(OsString::from));
    run_worker(&args)
}

/// Runs a transcode that must succeed and returns its `--json` result object.
pub fn transcode_ok(source: &Path, out: &Path, options: &[&str]) -> Value {
    let run = transcode(source, out, options);
    assert!(
        run.status.success(),
        "transcode must succeed: {}",
        run.describe()
    );
    assert!(
        !run.stderr.contains("panicked"),
        "a successful run must not panic: {}",
        run.describe()
    );
    let result = one_json_object(&run);
    assert!(
        result.get("error").is_none(),
        "success object must not carry an error: {}",
        run.describe()
    );
    result
}

/// Stdout must be exactly one JSON object (whitespace around it is fine).
pub fn one_json_object(run: &WorkerRun) -> Value {
    let mut values = serde_json::Deserializer::from_str(&run.stdout).into_iter::<Value>();
    let first = match values.next() {
        Some(Ok(value)) => value,
        Some(Err(e)) => panic!("stdout is not JSON ({e}): {}", run.describe()),
        None => panic!(
            "stdout is empty, expected one JSON object: {}",
            run.describe()
        ),
    };
    assert!(
        values.next().is_none(),
        "stdout must hold exactly one JSON value: {}",
        run.describe()
    );
    assert!(
        first.is_object(),
        "stdout JSON must be an object: {}",
        run.describe()
    );
    first
}

/// Runs a transcode that must fail as a job failure: exit status 1 (no signal, no panic, no hang),
/// stdout one `{"error": {"kind", "message"}}` object with `kind` in `kinds`, no OUTPUT_DIR and no
/// staging directory left. Returns the `error` object.
pub fn assert_refused(
    source: impl AsRef<OsStr>,
    out: &Path,
    options: &[&str],
    kinds: &[&str],
) -> Value {
    let run = transcode(source, out, options);
    if let Some(signal) = run.status.signal() {
        panic!("worker died from signal {signal}: {}", run.describe());
    }
    assert_eq!(
        run.status.code(),
        Some(1),
        "a job failure must exit with status 1: {}",
        run.describe()
    );
    assert!(
        !run.stderr.contains("panicked"),
        "bad input must never panic: {}",
        run.describe()
    );
    let object = one_json_object(&run);
    let error = object
        .get("error")
        .unwrap_or_else(|| panic!("failure object has no `error`: {}", run.describe()));
    let kind = error["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("error.kind must be a string: {}", run.describe()));
    assert!(
        kinds.contains(&kind),
        "error.kind is {kind:?}, expected one of {kinds:?}: {}",
        run.describe()
    );
    let message = error["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error.message must be a string: {}", run.describe()));
    assert!(
        !message.trim().is_empty(),
        "error.message must say what went wrong: {}",
        run.describe()
    );
    assert!(
        fs::symlink_metadata(out).is_err(),
        "a failed job must not create OUTPUT_DIR {}: {}",
        out.display(),
        run.describe()
    );
    if let Some(parent) = out.parent() {
        assert_no_staging_left(parent);
    }
    error.clone()
}

/// No `.<name>.staging-*` directory may be left beside an output, whatever the outcome.
pub fn assert_no_staging_left(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let leftovers: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".staging") || name.contains("staging-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging directories left in {}: {leftovers:?}",
        parent.display()
    );
}

// ---------------------------------------------------------------------------------------------
// ffprobe
// ---------------------------------------------------------------------------------------------

/// `ffprobe -v error -of json <args> <path>`; it must succeed and print nothing on stderr (with
/// `-count_frames` that means every packet decoded cleanly).
pub fn ffprobe(path: &Path, args: &[&str]) -> Value {
    let output = Command::new("ffprobe")
        .args(["-hide_banner", "-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe (Debian package `ffmpeg`)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "`ffprobe {} {}` reported errors ({:?}): {stderr}",
        args.join(" "),
        path.display(),
        output.status
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe prints JSON")
}

/// What the tests need to know about a source, from `ffprobe -count_frames`.
#[derive(Debug, Clone)]
pub struct SourceProbe {
    /// The first video stream that is not cover art.
    pub video: Option<SourceVideo>,
    pub audio_streams: Vec<Value>,
    /// Container duration in seconds.
    pub duration: f64,
}

#[derive(Debug, Clone)]
pub struct SourceVideo {
    pub codec: String,
    pub profile: String,
    pub pix_fmt: String,
    pub width: u64,
    pub height: u64,
    /// Degrees from the display matrix (or the legacy `rotate` tag); 0 when absent.
    pub rotation: i64,
    /// `r_frame_rate`: the rate a constant-frame-rate output keeps.
    pub frame_rate: f64,
    /// `avg_frame_rate`: below `frame_rate` when frames are missing (variable frame rate).
    pub avg_frame_rate: f64,
    /// Frames the decoder produced (`nb_read_frames`).
    pub frames: u64,
}

impl SourceVideo {
    /// Width and height of the picture as displayed, after rotation metadata.
    pub fn display_size(&self) -> (u64, u64) {
        if self.rotation.rem_euclid(180) == 90 {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

pub fn probe_source(path: &Path) -> SourceProbe {
    let probe = ffprobe(path, &["-count_frames", "-show_streams", "-show_format"]);
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"] != 1)
        .map(|s| SourceVideo {
            codec: str_of(s, "codec_name"),
            profile: s["profile"].as_str().unwrap_or("").to_owned(),
            pix_fmt: str_of(s, "pix_fmt"),
            width: uint_of(s, "width"),
            height: uint_of(s, "height"),
            rotation: rotation_of(s),
            frame_rate: {
                let r = parse_rate(s["r_frame_rate"].as_str().unwrap_or("0/0"));
                if r > 0.0 {
                    r
                } else {
                    parse_rate(&str_of(s, "avg_frame_rate"))
                }
            },
            avg_frame_rate: parse_rate(s["avg_frame_rate"].as_str().unwrap_or("0/0")),
            frames: s["nb_read_frames"]
                .as_str()
                .and_then(|n| n.parse().ok())
                .expect("ffprobe -count_frames gives nb_read_frames"),
        });
    let audio_streams = streams
        .iter()
        .filter(|s| s["codec_type"] == "audio")
        .cloned()
        .collect();
    let duration = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(f64::NAN);
    SourceProbe {
        video,
        audio_streams,
        duration,
    }
}

fn rotation_of(stream: &Value) -> i64 {
    let from_matrix = stream["side_data_list"].as_array().and_then(|list| {
        list.iter()
            .find_map(|sd| sd.get("rotation").and_then(Value::as_f64))
    });
    let from_tag = stream["tags"]["rotate"]
        .as_str()
        .and_then(|r| r.parse::<f64>().ok());
    from_matrix.or(from_tag).unwrap_or(0.0).round() as i64
}

/// "30000/1001" → 29.97…; "0/0" → 0.
pub fn parse_rate(rate: &str) -> f64 {
    match rate.split_once('/') {
        Some((n, d)) => {
            let (n, d): (f64, f64) = (n.parse().unwrap_or(0.0), d.parse().unwrap_or(0.0));
            if d == 0.0 {
                0.0
            } else {
                n / d
            }
        }
        None => rate.parse().unwrap_or(0.0),
    }
}

/// One `.ts` segment as an independent decoder sees it.
#[derive(Debug, Clone)]
pub struct SegmentProbe {
    pub uri: String,
    pub bytes: u64,
    pub video: Value,
    pub audio: Vec<Value>,
    /// Frames the video decoder produced from this segment alone.
    pub video_frames: u64,
    /// Video presentation timestamps in 90 kHz ticks, in decode order.
    pub video_pts: Vec<i64>,
    /// Audio packets (pts, duration in 90 kHz ticks, CRC32 of the payload), in order.
    pub audio_packets: Vec<(i64, i64, String)>,
    pub first_frame_key: bool,
    pub first_frame_pict_type: String,
    /// NAL unit types of the first video packet (access unit).
    pub first_access_unit_nals: Vec<u8>,
    /// profile_idc, constraint flags, level_idc of the SPS in the first access unit.
    pub sps: Option<[u8; 3]>,
}

/// Decodes a segment on its own and reads its first access unit.
pub fn probe_segment(path: &Path) -> SegmentProbe {
    // Full decode of every stream: any decoder error fails `ffprobe` above (stderr must be empty).
    let probe = ffprobe(
        path,
        &[
            "-count_frames",
            "-show_streams",
            "-show_packets",
            "-show_data_hash",
            "CRC32",
        ],
    );
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    let videos: Vec<&Value> = streams
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .collect();
    assert_eq!(
        videos.len(),
        1,
        "{}: exactly one video stream expected, ffprobe sees {streams:#?}",
        path.display()
    );
    let video = videos[0].clone();
    let audio: Vec<Value> = streams
        .iter()
        .filter(|s| s["codec_type"] == "audio")
        .cloned()
        .collect();
    assert_eq!(
        streams.len(),
        1 + audio.len(),
        "{}: only video and audio streams belong in a segment: {streams:#?}",
        path.display()
    );
    for s in &streams {
        assert_eq!(
            s["time_base"],
            "1/90000",
            "{}: MPEG-TS streams run on the 90 kHz clock",
            path.display()
        );
    }
    let video_index = video["index"].clone();
    let packets = probe["packets"].as_array().cloned().unwrap_or_default();
    let video_pts = packets
        .iter()
        .filter(|p| p["stream_index"] == video_index)
        .map(|p| {
            p["pts"]
                .as_i64()
                .unwrap_or_else(|| panic!("{}: video packet without pts: {p}", path.display()))
        })
        .collect();
    let audio_packets = packets
        .iter()
        .filter(|p| p["codec_type"] == "audio")
        .map(|p| {
            (
                p["pts"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("{}: audio packet without pts: {p}", path.display())),
                p["duration"].as_i64().unwrap_or(0),
                str_of(p, "data_hash"),
            )
        })
        .collect();
    let video_frames = video["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);

    // The first video packet and the frame decoded from it alone. A leading non-key packet gives
    // no frame (the decoder drops it), which fails the key-frame check below as it should.
    let first = ffprobe(
        path,
        &[
            "-select_streams",
            "v:0",
            "-show_packets",
            "-show_frames",
            "-show_data",
            "-read_intervals",
            "%+#1",
        ],
    );
    let items = first["packets_and_frames"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first_packet = items
        .iter()
        .find(|i| i["type"] == "packet")
        .unwrap_or_else(|| panic!("{}: no video packet", path.display()));
    let first_frame = items
        .iter()
        .find(|i| i["type"] == "frame")
        .cloned()
        .unwrap_or(Value::Null);
    let first_au = parse_hexdump(&str_of(first_packet, "data"));
    let nals = nal_units(&first_au);
    let first_access_unit_nals = nals.iter().map(|n| n[0] & 0x1f).collect();
    let sps = nals
        .iter()
        .find(|n| n[0] & 0x1f == 7 && n.len() >= 4)
        .map(|n| [n[1], n[2], n[3]]);

    SegmentProbe {
        uri: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes: fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        video,
        audio,
        video_frames,
        video_pts,
        audio_packets,
        first_frame_key: first_frame["key_frame"] == 1,
        first_frame_pict_type: first_frame["pict_type"].as_str().unwrap_or("").to_owned(),
        first_access_unit_nals,
        sps,
    }
}

/// Bytes of ffprobe's `-show_data` hexdump (`00000010: 40a0 2ff9 …  @./.`).
fn parse_hexdump(dump: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in dump.lines() {
        let Some((_, rest)) = line.split_once(": ") else {
            continue;
        };
        // Hex groups end at the first double space, where the ASCII column begins.
        let hex: String = rest
            .split("  ")
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for pair in hex.as_bytes().chunks(2) {
            let text = std::str::from_utf8(pair).expect("ASCII hexdump");
            bytes.push(u8::from_str_radix(text, 16).expect("hex byte in ffprobe's dump"));
        }
    }
    bytes
}

/// Splits an Annex B stream at its start codes; each item starts with the NAL header byte.
fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let mut end = starts.get(k + 1).map_or(stream.len(), |&next| next - 3);
            // A 4-byte start code leaves its leading zero on the previous unit; trailing zeros
            // are never part of a NAL unit's payload.
            while end > start && stream[end - 1] == 0 {
                end -= 1;
            }
            &stream[start..end]
        })
        .filter(|n| !n.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The whole HLS output
// ---------------------------------------------------------------------------------------------

/// What a successful transcode of a given source must produce.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Rendition names in master-playlist order (highest first).
    pub renditions: &'a [&'a str],
    /// Requested qualities that must be reported as skipped (order not significant).
    pub skipped: &'a [&'a str],
    /// Whether the renditions carry audio (the source has an audio stream).
    pub audio: bool,
    /// The `--segment-seconds` the job ran with.
    pub segment_seconds: f64,
    /// Frames in each rendition after CFR conversion; `None`: the source's frame count, which
    /// is right for every constant-frame-rate source.
    pub frames_encoded: Option<u64>,
    /// The job ran with `--audio muxed`: audio in every video segment, no audio rendition.
    pub muxed_audio: bool,
    /// The `--gop-seconds` the job ran with (keyframes: the I-frame playlists' entries).
    pub gop_seconds: f64,
    /// The output frame rate when it is not the source's (an interlaced source at its field
    /// rate).
    pub output_rate: Option<f64>,
}

impl<'a> Expect<'a> {
    /// `renditions` with audio, nothing skipped, 2 s segments, a constant-frame-rate source.
    pub fn ladder(renditions: &'a [&'a str]) -> Self {
        Expect {
            renditions,
            skipped: &[],
            audio: true,
            segment_seconds: 2.0,
            frames_encoded: None,
            muxed_audio: false,
            gop_seconds: 2.0,
            output_rate: None,
        }
    }

    pub fn output_rate(self, rate: f64) -> Self {
        Expect {
            output_rate: Some(rate),
            ..self
        }
    }

    pub fn muxed_audio(self) -> Self {
        Expect {
            muxed_audio: true,
            ..self
        }
    }

    pub fn segment_seconds(self, segment_seconds: f64) -> Self {
        Expect {
            segment_seconds,
            ..self
        }
    }

    pub fn gop_seconds(self, gop_seconds: f64) -> Self {
        Expect {
            gop_seconds,
            ..self
        }
    }

    /// Audio in its own rendition (the default layout).
    fn separate_audio(&self) -> bool {
        self.audio && !self.muxed_audio
    }

    pub fn without_audio(self) -> Self {
        Expect {
            audio: false,
            ..self
        }
    }

    pub fn skipping(self, skipped: &'a [&'a str]) -> Self {
        Expect { skipped, ..self }
    }

    pub fn frames_encoded(self, frames: u64) -> Self {
        Expect {
            frames_encoded: Some(frames),
            ..self
        }
    }
}

/// The parsed output, for test-specific assertions after [`assert_valid_hls`].
#[derive(Debug)]
pub struct HlsOutput {
    pub source: SourceProbe,
    pub master: MasterPlaylist,
    pub renditions: Vec<RenditionOutput>,
    /// The audio rendition, when audio is separate.
    pub audio: Option<AudioOutput>,
    /// ffprobe's stream entry for thumbnail.jpg.
    pub thumbnail: Value,
}

#[derive(Debug)]
pub struct RenditionOutput {
    pub quality: String,
    pub width: u64,
    pub height: u64,
    pub playlist: MediaPlaylist,
    pub segments: Vec<SegmentProbe>,
    /// Its I-frame playlist (parsed), every entry checked.
    pub iframes: MediaPlaylist,
}

/// The audio rendition of the separate layout.
#[derive(Debug)]
pub struct AudioOutput {
    pub media: m3u8_rs::AlternativeMedia,
    pub playlist: MediaPlaylist,
    pub segments: Vec<AudioSegmentProbe>,
}

/// One audio-only segment, decoded on its own by ffprobe.
#[derive(Debug, Clone)]
pub struct AudioSegmentProbe {
    pub uri: String,
    pub bytes: u64,
    pub stream: Value,
    /// (pts, duration in 90 kHz ticks, CRC32 of the payload), in order.
    pub packets: Vec<(i64, i64, String)>,
}

/// Decodes an audio-only segment and lists its packets.
pub fn probe_audio_segment(path: &Path) -> AudioSegmentProbe {
    let probe = ffprobe(
        path,
        &[
            "-count_frames",
            "-show_streams",
            "-show_packets",
            "-show_data_hash",
            "CRC32",
        ],
    );
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        streams.len(),
        1,
        "{}: an audio segment holds one stream, ffprobe sees {streams:#?}",
        path.display()
    );
    let stream = streams[0].clone();
    assert_eq!(stream["codec_type"], "audio", "{}", path.display());
    assert_eq!(stream["time_base"], "1/90000", "{}", path.display());
    let packets = probe["packets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["pts"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("{}: audio packet without pts: {p}", path.display())),
                p["duration"].as_i64().unwrap_or(0),
                str_of(p, "data_hash"),
            )
        })
        .collect();
    AudioSegmentProbe {
        uri: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes: fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        stream,
        packets,
    }
}

/// The peak segment bit rate of RFC 8216 §4.3.4.2, computed independently of the worker:
/// the largest rate of any run of contiguous segments lasting 0.5–1.5 × the target duration.
pub fn rfc_peak_bit_rate(segments: &[(f64, u64)], target_duration: f64) -> f64 {
    let mut best: Option<f64> = None;
    for i in 0..segments.len() {
        for j in i..segments.len() {
            let seconds: f64 = segments[i..=j].iter().map(|s| s.0).sum();
            let bits: f64 = segments[i..=j].iter().map(|s| s.1 as f64 * 8.0).sum();
            if seconds >= 0.5 * target_duration - 1e-3 && seconds <= 1.5 * target_duration + 1e-3 {
                best = Some(best.map_or(bits / seconds, |b: f64| b.max(bits / seconds)));
            }
        }
    }
    best.unwrap_or_else(|| {
        let seconds: f64 = segments.iter().map(|s| s.0).sum();
        segments.iter().map(|s| s.1 as f64 * 8.0).sum::<f64>() / seconds
    })
}

/// (EXTINF, file size) of each segment of a playlist in `out`.
fn sized_segments(out: &Path, playlist: &MediaPlaylist) -> Vec<(f64, u64)> {
    playlist
        .segments
        .iter()
        .map(|s| {
            let bytes = match &s.byte_range {
                Some(r) => r.length,
                None => fs::metadata(out.join(&s.uri))
                    .map(|m| m.len())
                    .unwrap_or_else(|e| panic!("{}: {e}", s.uri)),
            };
            (s.duration as f64, bytes)
        })
        .collect()
}

/// The TS packets at the start of a segment before its first video packet (PAT, PMT…): what a
/// player that fetched only an I-frame byte range has from earlier requests.
fn ts_headers(segment: &[u8], video_pid: u16) -> Vec<u8> {
    segment
        .chunks_exact(188)
        .take_while(|p| ts_pid(p) != video_pid)
        .flatten()
        .copied()
        .collect()
}

fn ts_pid(packet: &[u8]) -> u16 {
    (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2])
}

/// Checks the whole output of a successful job against its source and the contract, with ffprobe
/// as the independent decoder: the `--json` result, master and media playlists (parsed with
/// m3u8-rs, attribute by attribute), every segment decoded on its own, the renditions against
/// each other, the thumbnail, the manifest, and the directory listing.
pub fn assert_valid_hls(source: &Path, out: &Path, result: &Value, expect: &Expect) -> HlsOutput {
    let src = probe_source(source);
    let video = src.video.clone().expect("the fixture has a video stream");
    let check = Check {
        ctx: format!("output {} of {}", out.display(), source.display()),
        out,
        video: &video,
        expect,
        // EXTINF is parsed as f32 and printed with a few decimals: allow that on top of a frame.
        one_frame: 1.0 / expect.output_rate.unwrap_or(video.frame_rate) + 1e-3,
        output_frames: expect.frames_encoded.unwrap_or(video.frames),
    };
    let ctx = &check.ctx;

    check.result_object(result, &src, source);

    let master_bytes = fs::read(out.join("master.m3u8")).expect("master.m3u8 exists");
    assert!(
        master_bytes.starts_with(b"#EXTM3U"),
        "{ctx}: master starts with #EXTM3U"
    );
    let master = m3u8_rs::parse_master_playlist_res(&master_bytes)
        .unwrap_or_else(|e| panic!("{ctx}: master.m3u8 does not parse: {e:?}"));
    assert!(
        master.independent_segments,
        "{ctx}: master must declare EXT-X-INDEPENDENT-SEGMENTS"
    );
    let audio = if expect.separate_audio() {
        Some(check.audio_rendition(&master, result))
    } else {
        assert!(
            master.alternatives.is_empty(),
            "{ctx}: audio muxed into each rendition (or none): no EXT-X-MEDIA groups"
        );
        assert!(
            result.get("audio").is_none(),
            "{ctx}: no audio rendition in {result:#}"
        );
        None
    };
    let (iframe_variants, variants): (Vec<&VariantStream>, Vec<&VariantStream>) =
        master.variants.iter().partition(|v| v.is_i_frame);
    assert_eq!(
        variants.len(),
        expect.renditions.len(),
        "{ctx}: one EXT-X-STREAM-INF per rendition"
    );
    assert_eq!(
        iframe_variants.len(),
        expect.renditions.len(),
        "{ctx}: one EXT-X-I-FRAME-STREAM-INF per rendition"
    );

    let json_renditions = result["renditions"].as_array().cloned().unwrap_or_default();
    let renditions: Vec<RenditionOutput> = variants
        .iter()
        .zip(&iframe_variants)
        .zip(&json_renditions)
        .zip(expect.renditions)
        .map(|(((variant, iframes), json), quality)| {
            check.rendition(quality, variant, iframes, json, result, audio.as_ref())
        })
        .collect();
    for pair in renditions.windows(2) {
        let short = |r: &RenditionOutput| r.width.min(r.height);
        assert!(
            short(&pair[0]) > short(&pair[1]),
            "{ctx}: renditions ordered highest first: {} then {}",
            pair[0].quality,
            pair[1].quality
        );
    }
    check.renditions_agree(&renditions, audio.as_ref());
    let thumbnail = check.thumbnail();

    let manifest: Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).expect("manifest.json exists"))
            .unwrap_or_else(|e| panic!("{ctx}: manifest.json does not parse: {e}"));
    assert!(
        manifest.is_object(),
        "{ctx}: manifest.json is a JSON object"
    );

    let mut expected_files: BTreeSet<String> = ["master.m3u8", "thumbnail.jpg", "manifest.json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for r in &renditions {
        expected_files.insert(format!("{}.m3u8", r.quality));
        expected_files.insert(format!("{}_iframes.m3u8", r.quality));
        expected_files.extend(r.segments.iter().map(|s| s.uri.clone()));
    }
    if let Some(a) = &audio {
        expected_files.insert("audio.m3u8".to_owned());
        expected_files.extend(a.segments.iter().map(|s| s.uri.clone()));
    }
    let present: BTreeSet<String> = fs::read_dir(out)
        .expect("read the output directory")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        present, expected_files,
        "{ctx}: the output directory holds exactly the contract's layout, nothing else"
    );
    if let Some(parent) = out.parent() {
        assert_no_staging_left(parent);
    }

    HlsOutput {
        source: src,
        master,
        renditions,
        audio,
        thumbnail,
    }
}

/// Everything the individual checks share.
struct Check<'a> {
    /// Prefix of every assertion message: which output of which source.
    ctx: String,
    out: &'a Path,
    video: &'a SourceVideo,
    expect: &'a Expect<'a>,
    /// One frame of the source, in seconds, plus rounding slack: the duration tolerance.
    one_frame: f64,
    /// Frames every rendition must hold.
    output_frames: u64,
}

impl Check<'_> {
    fn fps(&self) -> f64 {
        self.expect.output_rate.unwrap_or(self.video.frame_rate)
    }

    /// Duration of each rendition: its frames at the constant output rate.
    fn output_duration(&self) -> f64 {
        self.output_frames as f64 / self.fps()
    }

    /// One frame in MPEG-TS ticks.
    fn frame_ticks(&self) -> f64 {
        TS_CLOCK / self.fps()
    }

    /// The `--json` success object, against ffprobe's view of the source.
    fn result_object(&self, result: &Value, src: &SourceProbe, source: &Path) {
        let (ctx, expect) = (&self.ctx, self.expect);
        assert_eq!(
            result["has_audio"],
            Value::Bool(expect.audio),
            "{ctx}: has_audio in {result:#}"
        );
        assert_eq!(
            uint_of(result, "frames_decoded"),
            self.video.frames,
            "{ctx}: frames_decoded must equal the source's frame count from ffprobe -count_frames"
        );
        assert_eq!(
            uint_of(result, "frames_encoded"),
            self.output_frames,
            "{ctx}: frames_encoded (constant frame rate at the source's rate)"
        );
        assert_close(
            num_of(result, "frame_rate"),
            self.fps(),
            1e-3,
            &format!("{ctx}: frame_rate"),
        );
        assert_close(
            num_of(result, "duration"),
            src.duration,
            0.1,
            &format!("{ctx}: duration vs ffprobe's container duration"),
        );
        assert_eq!(result["thumbnail"], "thumbnail.jpg", "{ctx}: thumbnail");
        let elapsed = num_of(result, "elapsed_seconds");
        assert!(
            elapsed.is_finite() && elapsed >= 0.0,
            "{ctx}: elapsed_seconds {elapsed}"
        );
        assert_same_file(
            &str_of(result, "output_dir"),
            self.out,
            &format!("{ctx}: output_dir"),
        );
        assert_same_file(&str_of(result, "source"), source, &format!("{ctx}: source"));

        let renditions = result["renditions"]
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: renditions must be an array: {result:#}"));
        let names: Vec<String> = renditions.iter().map(|r| str_of(r, "quality")).collect();
        assert_eq!(
            names, expect.renditions,
            "{ctx}: renditions (highest first)"
        );
        let skipped = result["skipped"]
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: skipped must be an array: {result:#}"));
        let mut skipped_names: Vec<String> = skipped.iter().map(|s| str_of(s, "quality")).collect();
        skipped_names.sort();
        let mut expected_skipped: Vec<&str> = expect.skipped.to_vec();
        expected_skipped.sort();
        assert_eq!(skipped_names, expected_skipped, "{ctx}: skipped qualities");
        for s in skipped {
            assert!(
                !str_of(s, "reason").trim().is_empty(),
                "{ctx}: a skipped quality says why: {s}"
            );
        }
    }

    /// One variant: its size, media playlist, segments, timeline, CODECS and bandwidths.
    fn rendition(
        &self,
        q: &str,
        variant: &VariantStream,
        iframes: &VariantStream,
        json: &Value,
        result: &Value,
        audio: Option<&AudioOutput>,
    ) -> RenditionOutput {
        let ctx = format!("{}, rendition {q}", self.ctx);
        assert!(!variant.is_i_frame, "{ctx}: not an I-frame playlist");
        let playlist_name = format!("{q}.m3u8");
        assert_eq!(variant.uri, playlist_name, "{ctx}: variant URI");
        assert_eq!(
            str_of(json, "playlist"),
            playlist_name,
            "{ctx}: JSON playlist"
        );
        if let Some(&(_, bitrate)) = KNOWN_QUALITIES.iter().find(|(name, _)| *name == q) {
            assert_eq!(uint_of(json, "bitrate"), bitrate, "{ctx}: nominal bitrate");
        }

        let res = variant
            .resolution
            .unwrap_or_else(|| panic!("{ctx}: RESOLUTION missing"));
        let (w, h) = (res.width, res.height);
        assert_eq!(
            (uint_of(json, "width"), uint_of(json, "height")),
            (w, h),
            "{ctx}: JSON size vs RESOLUTION"
        );
        self.size(&ctx, q, w, h);

        let playlist = self.media_playlist(&ctx, &playlist_name);
        assert_eq!(
            uint_of(json, "segments"),
            playlist.segments.len() as u64,
            "{ctx}: JSON segment count"
        );
        let segments: Vec<SegmentProbe> = playlist
            .segments
            .iter()
            .enumerate()
            .map(|(n, seg)| self.segment(&ctx, q, n, seg, w, h))
            .collect();
        self.timeline(&ctx, &segments, uint_of(result, "frames_encoded"), audio);
        self.codecs(&ctx, variant, json, &segments);
        assert_eq!(
            variant.audio.as_deref(),
            audio.map(|a| a.media.group_id.as_str()),
            "{ctx}: AUDIO names the audio group (separate audio) or is absent"
        );
        self.bandwidth(&ctx, variant, json, &playlist, audio);
        let iframes = self.iframes(&ctx, q, variant, iframes, json, &playlist);

        RenditionOutput {
            quality: q.to_owned(),
            width: w,
            height: h,
            playlist,
            segments,
            iframes,
        }
    }

    /// The audio rendition: one EXT-X-MEDIA TYPE=AUDIO (group, name, language, default,
    /// autoselect, channels), its playlist on the video's grid, its audio-only segments.
    fn audio_rendition(&self, master: &MasterPlaylist, result: &Value) -> AudioOutput {
        let ctx = format!("{}, audio rendition", self.ctx);
        assert_eq!(
            master.alternatives.len(),
            1,
            "{ctx}: one EXT-X-MEDIA: {:?}",
            master.alternatives
        );
        let media = master.alternatives[0].clone();
        assert_eq!(
            media.media_type,
            m3u8_rs::AlternativeMediaType::Audio,
            "{ctx}: TYPE"
        );
        assert_eq!(media.group_id, "audio", "{ctx}: GROUP-ID");
        assert_eq!(media.uri.as_deref(), Some("audio.m3u8"), "{ctx}: URI");
        assert!(
            media.default && media.autoselect,
            "{ctx}: DEFAULT=YES, AUTOSELECT=YES"
        );
        assert!(!media.name.is_empty(), "{ctx}: NAME");
        let language = media.language.clone().unwrap_or_default();
        assert!(
            (2..=3).contains(&language.len()) && language.chars().all(|c| c.is_ascii_lowercase()),
            "{ctx}: LANGUAGE {language:?} is a language code (`und` when unknown)"
        );
        assert_eq!(media.channels.as_deref(), Some("2"), "{ctx}: CHANNELS");
        let json = &result["audio"];
        assert_eq!(str_of(json, "playlist"), "audio.m3u8", "{ctx}: JSON");
        assert_eq!(str_of(json, "language"), language, "{ctx}: JSON language");

        let playlist = self.media_playlist(&ctx, "audio.m3u8");
        assert_eq!(
            uint_of(json, "segments"),
            playlist.segments.len() as u64,
            "{ctx}: JSON segment count"
        );
        let segments: Vec<AudioSegmentProbe> = playlist
            .segments
            .iter()
            .enumerate()
            .map(|(n, seg)| {
                let uri = format!("audio_{n:03}.ts");
                assert_eq!(seg.uri, uri, "{ctx}: segment {n} name");
                let probe = probe_audio_segment(&self.out.join(&uri));
                let a = &probe.stream;
                assert_eq!(a["codec_name"], "aac", "{ctx}: {uri} audio codec");
                assert_eq!(a["profile"], "LC", "{ctx}: {uri} AAC profile");
                assert_eq!(a["channels"], 2, "{ctx}: {uri} audio channels");
                assert_eq!(a["sample_rate"], "48000", "{ctx}: {uri} sample rate");
                assert!(!probe.packets.is_empty(), "{ctx}: {uri} carries audio");
                // EXTINF is what the packets present (the first segment from time zero).
                let first = if n == 0 { None } else { probe.packets.first() };
                let last = probe.packets.last().expect("packets");
                let start = first.map_or(0.0, |p| p.0 as f64);
                let presented = if n == 0 {
                    probe.packets.iter().map(|p| p.1 as f64).sum::<f64>()
                        - AAC_FRAME_SECONDS * TS_CLOCK
                } else {
                    (last.0 + last.1) as f64 - start
                };
                // ffprobe gives every AAC packet a whole frame; the encoder's last one may
                // be shorter (the audio ends with the video).
                let slack = if n + 1 == playlist.segments.len() {
                    AAC_FRAME_SECONDS + 2e-3
                } else {
                    2e-3
                };
                assert_close(
                    seg.duration as f64,
                    presented / TS_CLOCK,
                    slack,
                    &format!("{ctx}: {uri} EXTINF vs its packets"),
                );
                probe
            })
            .collect();
        let grid = (self.expect.segment_seconds * self.fps()).round() / self.fps();
        let last = segments.len() - 1;
        for (n, seg) in playlist.segments.iter().enumerate() {
            if n < last {
                // Cut at the first packet presented at or after each grid time.
                assert_close(
                    seg.duration as f64,
                    grid,
                    AAC_FRAME_SECONDS + 2e-3,
                    &format!("{ctx}: segment {n} lasts one grid step"),
                );
            }
        }
        AudioOutput {
            media,
            playlist,
            segments,
        }
    }

    /// The I-frame playlist: listed with BANDWIDTH, CODECS (video only) and RESOLUTION; each
    /// entry a byte range of one of the rendition's segments that holds exactly the keyframe's
    /// TS packets, and decodes (with the segment's PAT/PMT) to one IDR picture.
    fn iframes(
        &self,
        ctx: &str,
        q: &str,
        variant: &VariantStream,
        iframes: &VariantStream,
        json: &Value,
        playlist: &MediaPlaylist,
    ) -> MediaPlaylist {
        let ctx = format!("{ctx}, I-frames");
        let name = format!("{q}_iframes.m3u8");
        assert_eq!(iframes.uri, name, "{ctx}: URI");
        assert_eq!(iframes.resolution, variant.resolution, "{ctx}: RESOLUTION");
        let video_codec = variant
            .codecs
            .as_deref()
            .and_then(|c| c.split(',').next())
            .map(str::to_owned);
        assert_eq!(
            iframes.codecs, video_codec,
            "{ctx}: CODECS is the video's only"
        );
        assert_eq!(
            str_of(&json["iframes"], "playlist"),
            name,
            "{ctx}: JSON playlist"
        );
        assert_eq!(uint_of(&json["iframes"], "bandwidth"), iframes.bandwidth);

        let bytes =
            fs::read(self.out.join(&name)).unwrap_or_else(|e| panic!("{ctx}: read {name}: {e}"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("#EXT-X-VERSION:4\n"),
            "{ctx}: EXT-X-BYTERANGE needs EXT-X-VERSION 4:\n{text}"
        );
        let list = m3u8_rs::parse_media_playlist_res(&bytes)
            .unwrap_or_else(|e| panic!("{ctx}: {name} does not parse: {e:?}"));
        assert!(list.i_frames_only, "{ctx}: EXT-X-I-FRAMES-ONLY");
        assert!(list.end_list, "{ctx}: EXT-X-ENDLIST");
        assert_eq!(list.playlist_type, Some(MediaPlaylistType::Vod), "{ctx}");
        let gop = (self.expect.gop_seconds * self.fps()).round() as u64;
        let keyframes = self.output_frames.div_ceil(gop);
        assert_eq!(
            list.segments.len() as u64,
            keyframes,
            "{ctx}: one entry per keyframe ({} frames, one every {gop})",
            self.output_frames
        );
        let total: f64 = list.segments.iter().map(|s| s.duration as f64).sum();
        assert_close(
            total,
            self.output_duration(),
            self.one_frame,
            &format!("{ctx}: the keyframes' EXTINF cover the video"),
        );
        let names: Vec<&str> = playlist.segments.iter().map(|s| s.uri.as_str()).collect();
        let scratch = tempfile::tempdir().expect("scratch dir");
        for (n, entry) in list.segments.iter().enumerate() {
            assert!(
                names.contains(&entry.uri.as_str()),
                "{ctx}: entry {n} points into {}, not one of the rendition's segments",
                entry.uri
            );
            let range = entry
                .byte_range
                .clone()
                .unwrap_or_else(|| panic!("{ctx}: entry {n} has no EXT-X-BYTERANGE"));
            let offset = range
                .offset
                .unwrap_or_else(|| panic!("{ctx}: entry {n} has no byte offset"));
            let file = fs::read(self.out.join(&entry.uri)).expect("segment");
            let end = (offset + range.length) as usize;
            assert!(
                end <= file.len(),
                "{ctx}: entry {n} runs past {}",
                entry.uri
            );
            let slice = &file[offset as usize..end];
            assert!(
                offset % 188 == 0 && range.length % 188 == 0 && slice[0] == 0x47,
                "{ctx}: entry {n} ({}@{offset}) is not whole TS packets",
                range.length
            );
            let pid = ts_pid(slice);
            assert!(
                slice[1] & 0x40 != 0 && (0x20..0x1fff).contains(&pid),
                "{ctx}: entry {n} must start with the video PES start (PUSI), pid {pid:#x}"
            );
            assert!(
                slice.chunks_exact(188).all(|p| ts_pid(p) == pid),
                "{ctx}: entry {n} holds only the keyframe's packets"
            );
            if end < file.len() {
                let next = &file[end..end + 188];
                assert!(
                    ts_pid(next) != pid || next[1] & 0x40 != 0,
                    "{ctx}: entry {n} stops before the end of its access unit"
                );
            }
            let mut alone = ts_headers(&file, pid);
            alone.extend_from_slice(slice);
            let path = scratch.path().join(format!("iframe_{n}.ts"));
            fs::write(&path, &alone).expect("write the I-frame");
            let probe = ffprobe(
                &path,
                &["-select_streams", "v:0", "-count_frames", "-show_frames"],
            );
            let frames = probe["frames"].as_array().cloned().unwrap_or_default();
            assert_eq!(
                frames.len(),
                1,
                "{ctx}: entry {n} ({}@{offset} of {}) decodes to one picture",
                range.length,
                entry.uri
            );
            assert!(
                frames[0]["key_frame"] == 1 && frames[0]["pict_type"] == "I",
                "{ctx}: entry {n} is a keyframe: {}",
                frames[0]
            );
        }
        let sized = sized_segments(self.out, &list);
        let peak = rfc_peak_bit_rate(&sized, list.target_duration as f64);
        assert!(
            (iframes.bandwidth as f64 - peak).abs() <= 1.0 + 1e-3 * peak,
            "{ctx}: BANDWIDTH {} vs the keyframes' peak rate {peak:.0}",
            iframes.bandwidth
        );
        list
    }

    /// Quality number on the shorter displayed side, even sizes, no upscale, the source's
    /// orientation and aspect ratio.
    fn size(&self, ctx: &str, q: &str, w: u64, h: u64) {
        let (display_w, display_h) = self.video.display_size();
        assert!(
            w % 2 == 0 && h % 2 == 0,
            "{ctx}: {w}x{h} must be even for 4:2:0"
        );
        assert_eq!(
            h > w,
            display_h > display_w,
            "{ctx}: {w}x{h} keeps the displayed orientation of {display_w}x{display_h}"
        );
        let (short, long) = (w.min(h), w.max(h));
        let (src_short, src_long) = (display_w.min(display_h), display_w.max(display_h));
        let nominal: u64 = q
            .strip_suffix('p')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{ctx}: quality name must be <n>p"));
        assert!(
            short.abs_diff(nominal) <= 1 && short <= src_short + 1,
            "{ctx}: shorter side {short} must be the quality's {nominal} and not above the \
             source's {src_short}"
        );
        let expected_long = src_long as f64 * short as f64 / src_short as f64;
        assert!(
            (long as f64 - expected_long).abs() <= 2.0,
            "{ctx}: {w}x{h} must keep the aspect of {display_w}x{display_h} \
             (longer side ≈ {expected_long:.1})"
        );
    }

    /// A VOD media playlist with the contract's segment names and sane TARGETDURATION.
    fn media_playlist(&self, ctx: &str, name: &str) -> MediaPlaylist {
        let bytes =
            fs::read(self.out.join(name)).unwrap_or_else(|e| panic!("{ctx}: read {name}: {e}"));
        assert!(bytes.starts_with(b"#EXTM3U"), "{ctx}: starts with #EXTM3U");
        let playlist = m3u8_rs::parse_media_playlist_res(&bytes)
            .unwrap_or_else(|e| panic!("{ctx}: {name} does not parse: {e:?}"));
        assert!(playlist.end_list, "{ctx}: EXT-X-ENDLIST");
        assert_eq!(
            playlist.playlist_type,
            Some(MediaPlaylistType::Vod),
            "{ctx}: EXT-X-PLAYLIST-TYPE:VOD"
        );
        assert_eq!(playlist.media_sequence, 0, "{ctx}: EXT-X-MEDIA-SEQUENCE");
        assert!(!playlist.segments.is_empty(), "{ctx}: no segments");
        let longest = playlist
            .segments
            .iter()
            .map(|s| s.duration as f64)
            .fold(0.0, f64::max);
        assert!(
            playlist.target_duration as f64 >= longest.round(),
            "{ctx}: TARGETDURATION {} below the longest EXTINF {longest} (RFC 8216 4.3.3.1)",
            playlist.target_duration
        );
        assert!(
            playlist.target_duration as f64 <= self.expect.segment_seconds.ceil() + 1.0,
            "{ctx}: TARGETDURATION {} far above --segment-seconds {}",
            playlist.target_duration,
            self.expect.segment_seconds
        );
        playlist
    }

    /// One segment decodes on its own, starts with an IDR carrying SPS and PPS, and holds the
    /// rendition's video (and the job's audio) format.
    fn segment(
        &self,
        ctx: &str,
        q: &str,
        n: usize,
        seg: &m3u8_rs::MediaSegment,
        w: u64,
        h: u64,
    ) -> SegmentProbe {
        let uri = format!("{q}_{n:03}.ts");
        assert_eq!(seg.uri, uri, "{ctx}: segment {n} name");
        assert!(seg.duration > 0.0, "{ctx}: {uri} EXTINF {}", seg.duration);
        assert!(!seg.discontinuity, "{ctx}: {uri} no discontinuity");
        let probe = probe_segment(&self.out.join(&uri));
        let v = &probe.video;
        assert_eq!(v["codec_name"], "h264", "{ctx}: {uri} codec");
        assert_eq!(v["profile"], "High", "{ctx}: {uri} profile");
        assert_eq!(
            v["pix_fmt"], "yuv420p",
            "{ctx}: {uri} pixel format (8-bit 4:2:0)"
        );
        assert_eq!(
            (uint_of(v, "width"), uint_of(v, "height")),
            (w, h),
            "{ctx}: {uri} size vs master RESOLUTION"
        );
        assert!(
            probe.first_frame_key && probe.first_frame_pict_type == "I",
            "{ctx}: {uri} must start with a keyframe, first frame is key={} type={:?}",
            probe.first_frame_key,
            probe.first_frame_pict_type
        );
        for (nal, what) in [(7u8, "SPS"), (8, "PPS"), (5, "IDR slice")] {
            assert!(
                probe.first_access_unit_nals.contains(&nal),
                "{ctx}: {uri} first access unit lacks an {what}: NAL types {:?}",
                probe.first_access_unit_nals
            );
        }
        if self.expect.audio && self.expect.muxed_audio {
            assert_eq!(probe.audio.len(), 1, "{ctx}: {uri} one audio stream");
            let a = &probe.audio[0];
            assert_eq!(a["codec_name"], "aac", "{ctx}: {uri} audio codec");
            assert_eq!(a["profile"], "LC", "{ctx}: {uri} AAC profile");
            assert_eq!(a["channels"], 2, "{ctx}: {uri} audio channels");
            assert_eq!(a["sample_rate"], "48000", "{ctx}: {uri} sample rate");
            assert!(
                !probe.audio_packets.is_empty(),
                "{ctx}: {uri} carries audio"
            );
        } else {
            assert!(
                probe.audio.is_empty(),
                "{ctx}: {uri} must be video-only (no audio, or audio in its own rendition)"
            );
        }
        assert_eq!(
            probe.video_pts.len() as u64,
            probe.video_frames,
            "{ctx}: {uri} every video packet decodes to one frame"
        );
        assert_close(
            seg.duration as f64,
            probe.video_frames as f64 / self.fps(),
            self.one_frame,
            &format!("{ctx}: {uri} EXTINF vs its {} frames", probe.video_frames),
        );
        probe
    }

    /// The segments together: frame count, the cut grid, constant frame rate, continuous video
    /// and audio timelines that start together and cover the whole source.
    fn timeline(
        &self,
        ctx: &str,
        segments: &[SegmentProbe],
        frames_encoded: u64,
        audio_rendition: Option<&AudioOutput>,
    ) {
        let frame_ticks = self.frame_ticks();
        let total_frames: u64 = segments.iter().map(|s| s.video_frames).sum();
        assert_eq!(
            total_frames, frames_encoded,
            "{ctx}: frames in all segments vs frames_encoded"
        );
        let grid = (self.expect.segment_seconds * self.fps()).round() as u64;
        let last = segments.len() - 1;
        for (n, s) in segments.iter().enumerate() {
            if n < last {
                assert_eq!(
                    s.video_frames,
                    grid,
                    "{ctx}: {} must hold one grid step, round({} s × {} fps) frames",
                    s.uri,
                    self.expect.segment_seconds,
                    self.fps()
                );
            } else {
                assert!(
                    (1..=grid).contains(&s.video_frames),
                    "{ctx}: last segment {} holds {} frames, at most one grid step ({grid})",
                    s.uri,
                    s.video_frames
                );
            }
            let mut pts = s.video_pts.clone();
            pts.sort_unstable();
            for pair in pts.windows(2) {
                assert!(
                    ((pair[1] - pair[0]) as f64 - frame_ticks).abs() <= 1.0,
                    "{ctx}: {} is not constant frame rate: pts step {} ticks, expected \
                     {frame_ticks}",
                    s.uri,
                    pair[1] - pair[0]
                );
            }
        }
        for pair in segments.windows(2) {
            let end = *pair[0].video_pts.iter().max().expect("frames");
            let next = *pair[1].video_pts.iter().min().expect("frames");
            assert!(
                ((next - end) as f64 - frame_ticks).abs() <= 1.0,
                "{ctx}: video timeline breaks between {} (last pts {end}) and {} (first pts \
                 {next})",
                pair[0].uri,
                pair[1].uri
            );
        }
        if !self.expect.audio {
            return;
        }
        let video_start = *segments[0].video_pts.iter().min().expect("frames") as f64 / TS_CLOCK;
        let audio: Vec<&(i64, i64, String)> = match audio_rendition {
            Some(a) => a.segments.iter().flat_map(|s| &s.packets).collect(),
            None => segments.iter().flat_map(|s| &s.audio_packets).collect(),
        };
        for pair in audio.windows(2) {
            assert!(
                (pair[1].0 - (pair[0].0 + pair[0].1)).abs() <= 2,
                "{ctx}: audio timeline breaks: packet at {} lasting {} then one at {}",
                pair[0].0,
                pair[0].1,
                pair[1].0
            );
        }
        let (first, last) = (audio[0], audio[audio.len() - 1]);
        let audio_start = first.0 as f64 / TS_CLOCK;
        let audio_end = (last.0 + last.1) as f64 / TS_CLOCK;
        // AAC priming may put the first packet one AAC frame early; nothing more.
        assert!(
            (audio_start - video_start).abs() <= 1.0 / self.fps() + AAC_FRAME_SECONDS + 1e-3,
            "{ctx}: audio starts at {audio_start:.3} s, video at {video_start:.3} s: they must \
             start together"
        );
        assert_close(
            audio_end - audio_start,
            self.output_duration(),
            0.1,
            &format!("{ctx}: audio covers the whole video"),
        );
    }

    /// CODECS comes from the real SPS (avc1.PPCCLL) and agrees with ffprobe's profile and level.
    fn codecs(&self, ctx: &str, variant: &VariantStream, json: &Value, segments: &[SegmentProbe]) {
        let sps = segments[0]
            .sps
            .unwrap_or_else(|| panic!("{ctx}: no SPS in the first access unit"));
        let avc1 = format!("avc1.{:02x}{:02x}{:02x}", sps[0], sps[1], sps[2]);
        assert_eq!(sps[0], 100, "{ctx}: SPS profile_idc must be High (100)");
        assert_eq!(
            segments[0].video["level"].as_u64(),
            Some(u64::from(sps[2])),
            "{ctx}: ffprobe level vs SPS level_idc"
        );
        let codecs = variant
            .codecs
            .clone()
            .unwrap_or_else(|| panic!("{ctx}: CODECS missing"));
        assert_eq!(
            str_of(json, "codecs"),
            codecs,
            "{ctx}: JSON codecs vs master CODECS"
        );
        let parts: Vec<&str> = codecs.split(',').map(str::trim).collect();
        assert!(
            parts[0].eq_ignore_ascii_case(&avc1),
            "{ctx}: CODECS {codecs:?} must start with {avc1} from the stream's SPS"
        );
        if self.expect.audio {
            assert_eq!(
                parts[1..],
                ["mp4a.40.2"],
                "{ctx}: CODECS {codecs:?} names AAC-LC audio"
            );
        } else {
            assert_eq!(parts.len(), 1, "{ctx}: CODECS {codecs:?} without audio");
        }
    }

    /// FRAME-RATE, and BANDWIDTH / AVERAGE-BANDWIDTH against the segment files on disk, as RFC
    /// 8216 §4.3.4.2 defines them: the peak over runs of 0.5–1.5 target durations, plus the
    /// audio rendition's when audio is separate.
    fn bandwidth(
        &self,
        ctx: &str,
        variant: &VariantStream,
        json: &Value,
        playlist: &MediaPlaylist,
        audio: Option<&AudioOutput>,
    ) {
        let rate = variant
            .frame_rate
            .unwrap_or_else(|| panic!("{ctx}: FRAME-RATE missing"));
        assert_close(rate, self.fps(), 1.5e-3, &format!("{ctx}: FRAME-RATE"));
        assert_close(
            num_of(json, "frame_rate"),
            self.fps(),
            1.5e-3,
            &format!("{ctx}: JSON frame_rate"),
        );
        let average = variant
            .average_bandwidth
            .unwrap_or_else(|| panic!("{ctx}: AVERAGE-BANDWIDTH missing"));
        assert!(
            variant.bandwidth >= average && average > 0,
            "{ctx}: BANDWIDTH {} >= AVERAGE-BANDWIDTH {average} > 0",
            variant.bandwidth
        );
        assert_eq!(
            uint_of(json, "bandwidth"),
            variant.bandwidth,
            "{ctx}: JSON bandwidth"
        );
        assert_eq!(
            uint_of(json, "average_bandwidth"),
            average,
            "{ctx}: JSON average_bandwidth"
        );
        let rates = |list: &MediaPlaylist| {
            let sized = sized_segments(self.out, list);
            let bits: f64 = sized.iter().map(|s| s.1 as f64 * 8.0).sum();
            let seconds: f64 = sized.iter().map(|s| s.0).sum();
            (
                rfc_peak_bit_rate(&sized, list.target_duration as f64),
                bits / seconds,
            )
        };
        let (mut peak, mut measured_average) = rates(playlist);
        if let Some(a) = audio {
            let (audio_peak, audio_average) = rates(&a.playlist);
            peak += audio_peak;
            measured_average += audio_average;
        }
        // EXTINF are printed to the millisecond: a few bit/s either way.
        let close = |a: f64, b: f64| (a - b).abs() <= 2.0 + 1e-3 * b;
        assert!(
            close(average as f64, measured_average),
            "{ctx}: AVERAGE-BANDWIDTH {average} vs {measured_average:.0} bit/s measured on the \
             segment files (video + its audio)"
        );
        assert!(
            close(variant.bandwidth as f64, peak),
            "{ctx}: BANDWIDTH {} vs the peak segment bit rate {peak:.0} bit/s (RFC 8216 \
             §4.3.4.2, video + its audio)",
            variant.bandwidth
        );
    }

    /// Same cuts, same start, same audio packets in every rendition; total = source duration.
    fn renditions_agree(&self, renditions: &[RenditionOutput], audio: Option<&AudioOutput>) {
        let ctx = &self.ctx;
        let reference = &renditions[0];
        for other in &renditions[1..] {
            let (a_name, b_name) = (&reference.quality, &other.quality);
            assert_eq!(
                other.segments.len(),
                reference.segments.len(),
                "{ctx}: {a_name} and {b_name} must have the same number of segments"
            );
            for (n, (a, b)) in reference
                .playlist
                .segments
                .iter()
                .zip(&other.playlist.segments)
                .enumerate()
            {
                assert_close(
                    a.duration as f64,
                    b.duration as f64,
                    self.one_frame,
                    &format!("{ctx}: EXTINF of segment {n} in {a_name} vs {b_name}"),
                );
            }
            for (a, b) in reference.segments.iter().zip(&other.segments) {
                assert_eq!(
                    a.video_pts.iter().min(),
                    b.video_pts.iter().min(),
                    "{ctx}: {} and {} must start at the same timestamp",
                    a.uri,
                    b.uri
                );
            }
            if self.expect.audio && self.expect.muxed_audio {
                let audio = |r: &RenditionOutput| -> Vec<(i64, i64, String)> {
                    r.segments
                        .iter()
                        .flat_map(|s| s.audio_packets.clone())
                        .collect()
                };
                assert!(
                    audio(reference) == audio(other),
                    "{ctx}: audio is encoded once, so {a_name} and {b_name} must carry the same \
                     AAC packets (timestamps, sizes, CRC32)"
                );
            }
        }
        if let Some(a) = audio {
            assert_eq!(
                a.playlist.segments.len(),
                reference.playlist.segments.len(),
                "{ctx}: the audio rendition has the video's segments"
            );
        }
        for r in renditions {
            let total: f64 = r.playlist.segments.iter().map(|s| s.duration as f64).sum();
            assert_close(
                total,
                self.output_duration(),
                self.one_frame,
                &format!(
                    "{ctx}: sum of EXTINF in {} vs the source's duration ({} frames at {} fps)",
                    r.quality,
                    self.output_frames,
                    self.fps()
                ),
            );
        }
    }

    /// thumbnail.jpg is one decodable JPEG picture, at most 1280 wide, upright like the video.
    fn thumbnail(&self) -> Value {
        let ctx = &self.ctx;
        let path = self.out.join("thumbnail.jpg");
        let jpeg = fs::read(&path).expect("thumbnail.jpg exists");
        assert!(
            jpeg.starts_with(&[0xff, 0xd8, 0xff]) && jpeg.ends_with(&[0xff, 0xd9]),
            "{ctx}: thumbnail.jpg is not a complete JPEG file"
        );
        let probe = ffprobe(&path, &["-count_frames", "-show_streams"]);
        let stream = probe["streams"][0].clone();
        assert_eq!(stream["codec_name"], "mjpeg", "{ctx}: thumbnail codec");
        assert_eq!(
            stream["nb_read_frames"], "1",
            "{ctx}: thumbnail decodes to one picture"
        );
        let (tw, th) = (uint_of(&stream, "width"), uint_of(&stream, "height"));
        assert!(
            tw > 0 && tw <= 1280,
            "{ctx}: thumbnail width {tw} must be 1..=1280"
        );
        assert!(th > 0, "{ctx}: thumbnail height {th}");
        let (display_w, display_h) = self.video.display_size();
        if display_w != display_h {
            assert_eq!(
                th > tw,
                display_h > display_w,
                "{ctx}: thumbnail {tw}x{th} must be upright like the video ({display_w}x{display_h})"
            );
        }
        stream
    }
}

// ---------------------------------------------------------------------------------------------
// Small JSON and number helpers with messages that say what was missing
// ---------------------------------------------------------------------------------------------

pub fn str_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("`{key}` must be a string in {v:#}"))
        .to_owned()
}

pub fn uint_of(v: &Value, key: &str) -> u64 {
    match &v[key] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("`{key}` must be a non-negative integer in {v:#}"))
}

pub fn num_of(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` must be a number in {v:#}"))
}

pub fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not within {tolerance} of {expected}"
    );
}

fn assert_same_file(reported: &str, path: &Path, what: &str) {
    let reported = Path::new(reported);
    let same = match (reported.canonicalize(), path.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => reported == path,
    };
    assert!(
        same,
        "{what}: {} is not {}",
        reported.display(),
        path.display()
    );
}

fn display_args<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Output safety (tests/output_safety.rs): what an output may replace, locks, durability
// ---------------------------------------------------------------------------------------------

/// Every file under `dir` (relative path → bytes): "nothing here was touched" is then an
/// equality of two snapshots.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, into: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("read dir for snapshot") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(base, &path, into);
            } else {
                let rel = path.strip_prefix(base).expect("below base").to_path_buf();
                into.insert(rel, fs::read(&path).expect("read file for snapshot"));
            }
        }
    }
    let mut files = std::collections::BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// A transcode into an output that exists beforehand must be refused as `kind` (exit status 1,
/// one JSON error object naming the output). Returns the error object.
pub fn assert_refused_output(source: &Path, out: &Path, options: &[&str], kind: &str) -> Value {
    let run = transcode(source, out, options);
    assert_eq!(
        run.status.code(),
        Some(1),
        "the output must be refused: {}",
        run.describe()
    );
    let error = one_json_object(&run)["error"].clone();
    assert_eq!(error["kind"], kind, "{}", run.describe());
    error
}

/// Moves the modification time of `path` `ago` into the past (with `touch`), as if the
/// directory had last changed then.
pub fn age_by(path: &Path, ago: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    let then = now.saturating_sub(ago).as_secs();
    let status = Command::new("touch")
        .args(["-m", "-d", &format!("@{then}")])
        .arg(path)
        .status()
        .expect("run touch");
    assert!(status.success(), "touch {}", path.display());
}

/// The paths passed to `fsync` by a traced process, in order, with the index in the trace of
/// each (so that "after the rename" can be checked), from `strace -f -y -o <log>`.
pub fn traced_calls(log: &Path, call: &str) -> Vec<(usize, String)> {
    let text = fs::read_to_string(log).expect("read strace log");
    let open = format!("{call}(");
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let rest = &line[line.find(&open)? + open.len()..];
            Some((i, rest.split(')').next().unwrap_or_default().to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Hostile media (tests/hostile_media.rs): sources that change shape or timing mid-stream
// ---------------------------------------------------------------------------------------------

/// Concatenates files byte for byte (MPEG-TS parts make one stream whose parameters change).
pub fn concat_files(dir: &Path, name: &str, parts: &[PathBuf]) -> PathBuf {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend(fs::read(part).expect("read a part"));
    }
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write the concatenation");
    path
}

/// An H.264 MPEG-TS part from a lavfi `graph`, starting at `offset` seconds. The pixel format
/// is the source's (`testsrc` is RGB, so x264 writes 4:4:4): parts may differ in it too.
pub fn h264_ts_part(dir: &Path, name: &str, graph: &str, offset: f64) -> PathBuf {
    let offset = offset.to_string();
    make_fixture(
        dir,
        name,
        &[lavfi(graph.to_string())],
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-output_ts_offset",
            &offset,
        ],
    )
}

/// The review's crash: a 90°-rotated MP4 whose H.264 stream is 480x360 blue for 0.4 s, then
/// `second` (a lavfi source of another size) for 1 s.
pub fn rotated_size_change_mp4(dir: &Path, name: &str, second: &str) -> PathBuf {
    let s1 = h264_ts_part(
        dir,
        "part1.ts",
        "color=c=blue:size=480x360:rate=25:duration=0.4",
        0.0,
    );
    let s2 = h264_ts_part(dir, "part2.ts", second, 0.4);
    let joined = concat_files(dir, "joined.ts", &[s1, s2]);
    let path = dir.join(name);
    ffmpeg(&[
        OsString::from("-i"),
        joined.into_os_string(),
        "-c".into(),
        "copy".into(),
        "-metadata:s:v".into(),
        "rotate=90".into(),
        path.clone().into_os_string(),
    ]);
    path
}

/// A picture's average colour (R, G, B), decoded by the ffmpeg CLI; `frame` selects the
/// `select` filter's expression (e.g. "eq(n,34)"), for a video.
pub fn mean_rgb(path: &Path, select: &str) -> (u8, u8, u8) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            &format!("select='{select}',scale=1:1:flags=area"),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    assert!(
        output.status.success() && output.stdout.len() == 3,
        "decoding {} to one pixel failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.stdout[0], output.stdout[1], output.stdout[2])
}

/// The presentation times (seconds) of one stream's packets in a file, in file order.
pub fn packet_times(path: &Path, stream: &str) -> Vec<(f64, f64)> {
    // An audio-only segment of a second of silence is a handful of TS packets: too few for
    // format probing to recognise MPEG-TS, so the format is named (players know it from the
    // playlist).
    let format: &[&str] = match path.extension().is_some_and(|e| e == "ts") {
        true => &["-f", "mpegts"],
        false => &[],
    };
    let v = ffprobe(
        path,
        &[
            format,
            &[
                "-select_streams",
                stream,
                "-show_entries",
                "packet=pts_time,duration_time",
            ],
        ]
        .concat(),
    );
    v["packets"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let f = |k: &str| {
                        p[k].as_str()
                            .and_then(|s| s.parse::<f64>().ok())
                            .unwrap_or(0.0)
                    };
                    (f("pts_time"), f("duration_time"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Start of the first and end of the last packet of a stream across an HLS rendition's
/// segments (the TS clock runs on across segments).
pub fn stream_span(out: &Path, quality: &str, stream: &str) -> (f64, f64) {
    // Separate audio (the default layout) lives in the audio rendition's segments.
    let quality = if stream.starts_with('a') && out.join("audio.m3u8").is_file() {
        "audio"
    } else {
        quality
    };
    let mut segments: Vec<PathBuf> = fs::read_dir(out)
        .expect("read output")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{quality}_")))
        })
        .collect();
    segments.sort();
    let times: Vec<(f64, f64)> = segments
        .iter()
        .flat_map(|s| packet_times(s, stream))
        .collect();
    let start = times.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
    let end = times
        .iter()
        .map(|t| t.0 + t.1)
        .fold(f64::NEG_INFINITY, f64::max);
    (start, end)
}
