//! Hostile media gets a clean outcome, in bounded time and memory: sources whose frame size,
//! audio layout or timing changes mid-stream, audio that starts an hour late, gaps in the
//! timestamps, truncated Matroska, a source replaced while the job reads it. Each case is the
//! reliability review's repro (C2, C3, C13, C14, C15, C17), built at test time.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_refused, concat_files, h264_aac_mp4, h264_ts_part, make_fixture, mean_rgb, num_of,
    rotated_size_change_mp4, scratch_dir, stream_span, test_picture, transcode, transcode_ok,
    uint_of,
};
use serde_json::Value;

/// One small rung, fast: a wrongly accepted input fails fast, not slowly.
const QUICK: &[&str] = &[
    "--quality",
    "144p",
    "--preset",
    "ultrafast",
    "--threads",
    "1",
];

fn warnings(result: &Value) -> Vec<String> {
    result["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The decoded output's frames and duration, with every packet decoding cleanly.
fn output_video(out: &Path, quality: &str) -> (u64, f64) {
    let (start, end) = stream_span(out, quality, "v:0");
    let playlist = fs::read_to_string(out.join(format!("{quality}.m3u8"))).expect("playlist");
    let mut frames = 0;
    for line in playlist.lines().filter(|l| l.ends_with(".ts")) {
        let v = common::ffprobe(
            &out.join(line),
            &[
                "-count_frames",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=nb_read_frames",
            ],
        );
        frames += v["streams"][0]["nb_read_frames"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (frames, end - start)
}

#[test]
fn frame_size_shrinking_mid_stream_in_a_rotated_mp4_transcodes_cleanly() {
    let tmp = scratch_dir();
    // The review's 22 KB crasher: 480x360 then 4096x16, rotated 90°.
    let source = rotated_size_change_mp4(
        tmp.path(),
        "crash_rot.mp4",
        "testsrc=size=4096x16:rate=25:duration=1",
    );
    let out = tmp.path().join("out");
    let result = transcode_ok(&source, &out, QUICK);
    assert_eq!(uint_of(&result, "frames_decoded"), 35, "{result}");
    assert_eq!(uint_of(&result, "frames_encoded"), 35, "{result}");
    let (frames, duration) = output_video(&out, "144p");
    assert_eq!(frames, 35, "every output frame decodes");
    common::assert_close(duration, 1.4, 0.05, "output duration");
}

#[test]
fn pictures_after_a_size_change_show_the_new_picture_not_memory() {
    let tmp = scratch_dir();
    // 480x360 blue, then 16x16 red: the red part read with the first geometry was heap bytes.
    let source = rotated_size_change_mp4(
        tmp.path(),
        "shrink.mp4",
        "color=c=red:size=16x16:rate=25:duration=1",
    );
    let out = tmp.path().join("out");
    let options = [QUICK, &["--thumbnail-time", "1.2"]].concat();
    transcode_ok(&source, &out, &options);
    let is_red = |(r, g, b): (u8, u8, u8)| r > 200 && g < 60 && b < 60;
    let thumb = mean_rgb(&out.join("thumbnail.jpg"), "1");
    assert!(
        is_red(thumb),
        "thumbnail at 1.2 s must be the red part: {thumb:?}"
    );
    let last = mean_rgb(&out.join("144p_000.ts"), "eq(n,34)");
    assert!(
        is_red(last),
        "the last output frame must be the red part: {last:?}"
    );
    let first = mean_rgb(&out.join("144p_000.ts"), "eq(n,0)");
    assert!(
        first.2 > 200 && first.0 < 60,
        "the first frame is blue: {first:?}"
    );
}

/// 320x240 in the header, 2000x64 from 2 s on: the header alone passes a 640x480 limit.
fn widening_ts(dir: &Path) -> std::path::PathBuf {
    let p1 = h264_ts_part(dir, "p1.ts", "testsrc=size=320x240:rate=25:duration=2", 0.0);
    let p2 = h264_ts_part(dir, "p2.ts", "testsrc=size=2000x64:rate=25:duration=1", 2.0);
    concat_files(dir, "sizechange.ts", &[p1, p2])
}

#[test]
fn frame_over_the_size_limit_mid_stream_is_limit_exceeded() {
    let tmp = scratch_dir();
    let source = widening_ts(tmp.path());
    let options = [QUICK, &["--max-width", "640", "--max-height", "480"]].concat();
    let error = assert_refused(
        &source,
        &tmp.path().join("out"),
        &options,
        &["limit_exceeded"],
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("2000x64"),
        "{error}"
    );
}

#[test]
fn frame_over_the_default_limits_mid_stream_is_refused_without_decoding_it() {
    let tmp = scratch_dir();
    // 320x240, then three 8192x8192 frames (236 KB): 470 MB of RSS to decode them before.
    let p1 = h264_ts_part(
        tmp.path(),
        "b1.ts",
        "testsrc=size=320x240:rate=25:duration=1",
        0.0,
    );
    let p2 = h264_ts_part(
        tmp.path(),
        "b2.ts",
        "color=c=red:size=8192x8192:rate=25:duration=0.12",
        1.0,
    );
    let source = concat_files(tmp.path(), "big_mid.ts", &[p1, p2]);
    let error = assert_refused(&source, &tmp.path().join("out"), QUICK, &["limit_exceeded"]);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("8192x8192"),
        "{error}"
    );
}

#[test]
fn source_exactly_at_the_size_limits_is_accepted() {
    let tmp = scratch_dir();
    // 1000 px is not a multiple of the decoder's stride alignment: its padded picture is
    // larger than 1000x562, and must not count against the limits.
    let source = common::h264_mp4(tmp.path(), "odd.mp4", 1000, 562, 1.0);
    let options = [QUICK, &["--max-width", "1000", "--max-height", "562"]].concat();
    let result = transcode_ok(&source, &tmp.path().join("out"), &options);
    assert_eq!(uint_of(&result, "frames_encoded"), 25, "{result}");
}

/// `testsrc` for 1 s with a 1 s tone that starts `offset` seconds later, in `name`'s container.
fn late_audio(dir: &Path, name: &str, offset: u32) -> std::path::PathBuf {
    let mut inputs = vec![test_picture(160, 120, "25", 1.0)];
    inputs.push(vec![
        "-itsoffset".into(),
        offset.to_string(),
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        "sine=duration=1".into(),
    ]);
    make_fixture(
        dir,
        name,
        &inputs,
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    )
}

#[test]
fn audio_starting_an_hour_late_is_refused_over_max_duration() {
    let tmp = scratch_dir();
    let source = late_audio(tmp.path(), "late3600.mp4", 3600);
    let options = [QUICK, &["--max-duration", "60"]].concat();
    assert_refused(
        &source,
        &tmp.path().join("out"),
        &options,
        &["limit_exceeded"],
    );
}

#[test]
fn audio_starting_an_hour_late_is_trimmed_to_the_video() {
    let tmp = scratch_dir();
    for name in ["late3600.mp4", "late3600.mkv"] {
        let source = late_audio(tmp.path(), name, 3600);
        let out = tmp.path().join(format!("out-{name}"));
        let run = transcode(&source, &out, QUICK);
        assert!(run.status.success(), "{}", run.describe());
        // A second of 120p: not the 12 s of CPU an hour of silence cost.
        assert!(run.elapsed < Duration::from_secs(20), "{}", run.describe());
        let (vstart, vend) = stream_span(&out, "120p", "v:0");
        let (astart, aend) = stream_span(&out, "120p", "a:0");
        common::assert_close(vend - vstart, 1.0, 0.05, "video duration");
        // Audio starts with the video (AAC priming: one frame earlier) and ends with it.
        assert!(
            astart >= vstart - 0.05,
            "{name}: audio {astart}..{aend}, video {vstart}..{vend}"
        );
        assert!(
            aend <= vend + 0.05,
            "{name}: audio {astart}..{aend}, video {vstart}..{vend}"
        );
        let playlist = fs::read_to_string(out.join("120p.m3u8")).expect("playlist");
        assert_eq!(playlist.matches(".ts").count(), 1, "{playlist}");
    }
}

#[test]
fn audio_far_longer_than_the_video_is_trimmed_to_it_with_a_warning() {
    let tmp = scratch_dir();
    // One second of video, seventy of sound: the sound past the video is not published, and
    // is not held in memory either (at most a minute of it waits for video that never comes).
    let source = make_fixture(
        tmp.path(),
        "long_audio.mp4",
        &[
            test_picture(160, 120, "25", 1.0),
            common::test_tone(48_000, 70.0),
        ],
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    let out = tmp.path().join("out");
    let result = transcode_ok(&source, &out, QUICK);
    let (vstart, vend) = stream_span(&out, "120p", "v:0");
    let (astart, aend) = stream_span(&out, "120p", "a:0");
    assert!(
        astart >= vstart - 0.05 && aend <= vend + 0.05,
        "audio {astart}..{aend}, video {vstart}..{vend}"
    );
    let w = warnings(&result);
    assert!(
        w.len() == 1 && w[0].contains("ahead of the video"),
        "the outcome says audio was left out: {result}"
    );
}

#[test]
fn nine_channel_pcm_is_downmixed_to_stereo() {
    let tmp = scratch_dir();
    let tones: Vec<String> = (0..9)
        .map(|i| format!("sine=f={}:d=2[a{i}]", 300 + 100 * i))
        .collect();
    let inputs: String = (0..9).map(|i| format!("[a{i}]")).collect();
    let graph = format!("{};{inputs}amerge=inputs=9[a]", tones.join(";"));
    let source = make_fixture(
        tmp.path(),
        "nine.mkv",
        &[test_picture(320, 240, "25", 2.0)],
        &[
            "-filter_complex",
            &graph,
            "-map",
            "0:v",
            "-map",
            "[a]",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "pcm_s16le",
        ],
    );
    let out = tmp.path().join("out");
    let result = transcode_ok(&source, &out, QUICK);
    assert_eq!(result["has_audio"], true, "{result}");
    assert!(warnings(&result).is_empty(), "{result}");
    // Audio is its own rendition (the default layout).
    let a = common::ffprobe(
        &out.join("audio_000.ts"),
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=channels,sample_rate",
        ],
    );
    assert_eq!(a["streams"][0]["channels"], 2, "{a}");
    assert_eq!(a["streams"][0]["sample_rate"], "48000", "{a}");
    let (start, end) = stream_span(&out, "144p", "a:0");
    common::assert_close(end - start, 2.0, 0.05, "audio duration");
}

#[test]
fn audio_layout_and_rate_changing_mid_stream_is_followed() {
    let tmp = scratch_dir();
    let part = |name: &str, rate: u32, channels: &str, offset: &str| {
        make_fixture(
            tmp.path(),
            name,
            &[
                test_picture(320, 240, "25", 2.0),
                common::test_tone(rate, 2.0),
            ],
            &[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "mp2",
                "-ac",
                channels,
                "-output_ts_offset",
                offset,
            ],
        )
    };
    // Stereo 48 kHz, then mono 44.1 kHz: a broadcast recording across a programme change.
    let a1 = part("a1.ts", 48_000, "2", "0");
    let a2 = part("a2.ts", 44_100, "1", "2");
    let source = concat_files(tmp.path(), "achange.ts", &[a1, a2]);
    let out = tmp.path().join("out");
    let result = transcode_ok(&source, &out, QUICK);
    assert!(warnings(&result).is_empty(), "{result}");
    common::assert_close(num_of(&result, "duration"), 4.0, 0.05, "video duration");
    let (start, end) = stream_span(&out, "144p", "a:0");
    common::assert_close(end - start, 4.0, 0.1, "audio duration");
}

/// Two frames of `width`x`height`, `gap` seconds apart, in Matroska (which keeps the gap).
fn two_frames_apart(
    dir: &Path,
    name: &str,
    width: u32,
    height: u32,
    gap: u32,
) -> std::path::PathBuf {
    let setpts = format!("setpts='if(eq(N,0),0,{gap}/TB)'");
    make_fixture(
        dir,
        name,
        &[test_picture(width, height, "25", 0.08)],
        &["-vf", &setpts, "-vsync", "passthrough", "-c:v", "libx264"],
    )
}

#[test]
fn timestamp_gap_of_two_minutes_is_invalid_media() {
    let tmp = scratch_dir();
    // Two frames 120 s apart (11 KB): 3001 encoded frames per rendition before.
    let source = two_frames_apart(tmp.path(), "gap2.mkv", 160, 120, 120);
    let error = assert_refused(&source, &tmp.path().join("out"), QUICK, &["invalid_media"]);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("jump"),
        "{error}"
    );
}

#[test]
fn truncated_mkv_with_audio_is_invalid_media() {
    let tmp = scratch_dir();
    let long = h264_aac_mp4(tmp.path(), "long.mp4", 320, 180, 10.0);
    let mkv = tmp.path().join("long.mkv");
    common::ffmpeg(&[
        OsString::from("-i"),
        long.into_os_string(),
        "-c".into(),
        "copy".into(),
        mkv.clone().into_os_string(),
    ]);
    let bytes = fs::read(&mkv).expect("read mkv");
    let cut = tmp.path().join("trunc.mkv");
    fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write the cut");
    let error = assert_refused(&cut, &tmp.path().join("out"), QUICK, &["invalid_media"]);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("truncated"),
        "{error}"
    );
}

#[test]
fn presets_slower_than_max_preset_are_invalid_request() {
    let tmp = scratch_dir();
    let source = common::h264_mp4(tmp.path(), "upload.mp4", 160, 90, 1.0);
    let options = ["--quality", "144p", "--preset", "slower"];
    let error = assert_refused(
        &source,
        &tmp.path().join("out"),
        &options,
        &["invalid_request"],
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("slow"),
        "{error}"
    );
    let options = [
        "--quality",
        "144p",
        "--preset",
        "veryslow",
        "--max-preset",
        "veryslow",
    ];
    transcode_ok(&source, &tmp.path().join("out"), &options);
}

#[test]
fn source_replaced_during_the_job_is_source_changed_and_publishes_nothing() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 854, 480, 10.0);
    let other = h264_aac_mp4(tmp.path(), "other.mp4", 640, 360, 10.0);
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_video-worker"))
        .arg("transcode")
        .arg(&source)
        .arg(&out)
        .args(["--json", "--quality", "480p,360p", "--preset", "slow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn video-worker");
    // Wait until the job is under way (its staging directory exists), then overwrite in place.
    let started = Instant::now();
    let staging = || {
        fs::read_dir(tmp.path())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("staging"))
    };
    while !staging() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no staging directory appeared"
        );
        assert!(
            child.try_wait().expect("poll").is_none(),
            "the job ended too early"
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    fs::write(&source, fs::read(&other).expect("read other")).expect("overwrite the source");
    let output = child.wait_with_output().expect("wait for video-worker");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["error"]["kind"], "source_changed", "{v}");
    assert!(
        fs::symlink_metadata(&out).is_err(),
        "nothing may be published"
    );
    common::assert_no_staging_left(tmp.path());
}

#[test]
fn thumbnail_job_after_a_size_change_shows_the_new_picture_and_checks_the_limits() {
    use std::sync::atomic::AtomicBool;
    use video_worker::media::{thumbnail, Limits};
    let tmp = scratch_dir();
    let source = rotated_size_change_mp4(
        tmp.path(),
        "shrink.mp4",
        "color=c=red:size=16x16:rate=25:duration=1",
    );
    let out = tmp.path().join("thumb");
    let cancel = AtomicBool::new(false);
    let done = thumbnail::thumbnail_only(&source, &out, 1.2, &Limits::default(), &cancel)
        .expect("thumbnail job");
    let (r, g, b) = mean_rgb(&done.path, "1");
    assert!(r > 200 && g < 60 && b < 60, "the red part: {:?}", (r, g, b));

    let limits = Limits {
        max_width: 400,
        max_height: 400,
        ..Limits::default()
    };
    let source = widening_ts(tmp.path());
    let e = thumbnail::thumbnail_only(&source, &out, 2.5, &limits, &cancel)
        .expect_err("a frame over the limits");
    assert_eq!(e.kind, video_worker::ErrorKind::LimitExceeded, "{e}");
}

#[test]
fn cancel_stops_a_job_while_it_fills_a_timestamp_gap() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use video_worker::ladder::Quality;
    use video_worker::media::{self, TranscodeRequest};
    let tmp = scratch_dir();
    // Two frames 50 s apart (under the gap bound): 1250 repeated pictures to encode.
    let source = two_frames_apart(tmp.path(), "gap50.mkv", 640, 360, 50);
    let out = tmp.path().join("out");
    let mut req = TranscodeRequest::new(&source, &out).expect("request");
    req.qualities = Quality::parse_list(&["360p".to_string()]).expect("quality");
    req.preset = "medium".into();
    req.threads = 1;
    let cancel = Arc::new(AtomicBool::new(false));
    let job = {
        let cancel = Arc::clone(&cancel);
        thread::spawn(move || media::transcode(&req, &cancel, &|_| {}))
    };
    let started = Instant::now();
    while !fs::read_dir(tmp.path())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("staging"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the job never started"
        );
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(500));
    assert!(!job.is_finished(), "the job must still be filling the gap");
    cancel.store(true, Ordering::Relaxed);
    let cancelled_at = Instant::now();
    let result = job.join().expect("the job thread");
    let took = cancelled_at.elapsed();
    let e = result.expect_err("a cancelled job fails");
    assert_eq!(e.kind, video_worker::ErrorKind::Cancelled, "{e}");
    assert!(took < Duration::from_secs(2), "cancellation took {took:?}");
    assert!(fs::symlink_metadata(&out).is_err(), "nothing published");
    common::assert_no_staging_left(tmp.path());
}

/// The fuzz driver's finds (seed 0x766964656f2d7731, see tests/fuzz_corpus/): MPEG-TS files in
/// which one decoded picture has no timestamp.
const UNTIMED_PICTURE_CASES: [&str; 5] = [
    "hang-766964656f2d7731-15.ts",
    "hang-766964656f2d7731-304.ts",
    "hang-766964656f2d7731-465.ts",
    "hang-766964656f2d7731-510.ts",
    "hang-766964656f2d7731-549.ts",
];

#[test]
fn pictures_without_a_timestamp_end_the_job_in_bounded_time() {
    use std::os::unix::process::ExitStatusExt;
    // Each once ran without end (the picture reached the `fps` filter untimed and was repeated
    // forever, ~16 MB/s more memory); each now takes well under a second.
    const LIMIT: Duration = Duration::from_secs(20);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus");
    for name in UNTIMED_PICTURE_CASES {
        let tmp = scratch_dir();
        let out = tmp.path().join("out");
        let (stdout_path, stderr_path) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_video-worker"))
            .arg("transcode")
            .arg(corpus.join(name))
            .arg(&out)
            .arg("--json")
            .args(QUICK)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn video-worker");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll video-worker") {
                break status;
            }
            if started.elapsed() > LIMIT {
                // Only the child this test started.
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name}: still running after {LIMIT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        let what = format!(
            "{name}: {status:?} after {:.1?}\n{stdout}\n{stderr}",
            started.elapsed()
        );
        assert_eq!(status.signal(), None, "{what}");
        assert!(!stderr.contains("panicked"), "{what}");
        let v: Value = serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
        match status.code() {
            Some(0) => assert!(v.get("error").is_none(), "{what}"),
            Some(1) => {
                let kind = v["error"]["kind"].as_str().unwrap_or_default();
                assert!(!kind.is_empty() && kind != "internal", "{what}");
                assert!(fs::symlink_metadata(&out).is_err(), "{what}");
            }
            _ => panic!("exit status neither 0 nor 1: {what}"),
        }
        common::assert_no_staging_left(tmp.path());
    }
}

#[test]
fn thumbnail_of_an_untimed_last_picture_is_timed_after_the_picture_before_it() {
    use std::sync::atomic::AtomicBool;
    use video_worker::media::{thumbnail, Limits};
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus");
    let cancel = AtomicBool::new(false);
    // Their last picture (the 15th, 0.56 s after the first) has no timestamp; a thumbnail
    // asked for past the end is that picture. It was reported as taken at 0 s.
    for name in [
        "hang-766964656f2d7731-304.ts",
        "hang-766964656f2d7731-549.ts",
    ] {
        let tmp = scratch_dir();
        let done = thumbnail::thumbnail_only(
            &corpus.join(name),
            &tmp.path().join("thumb"),
            10.0,
            &Limits::default(),
            &cancel,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        common::assert_close(done.time, 0.56, 0.005, name);
        assert!(done.bytes > 0, "{name}: {done:?}");
    }
}
