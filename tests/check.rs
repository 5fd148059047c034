//! `video-worker check` against real ladders: our own output keeps every rule; a copy of it
//! broken by hand for each rule fails that rule (every rule can fail); the ffmpeg CLI's own HLS
//! ladder of the same source (Debian's FFmpeg 5.1 and FFmpeg 7) is measured and its breaks
//! recorded. The playlists are edited through m3u8-rs, the media with Debian's `ffmpeg` CLI.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use m3u8_rs::{MasterPlaylist, MediaPlaylist, Playlist};
use serde_json::Value;
use tempfile::TempDir;

use common::{ffmpeg, h264_aac_mp4, run_worker, scratch_dir, transcode_ok};

/// Where the fixtures shared by this binary's tests live: statics are never dropped, so a
/// `TempDir` would leak; this folder under target/tmp is emptied once per run instead.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-fixtures");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the fixtures folder");
        dir
    })
}

/// The source every ladder here is made from: 14 s of 320x240 at 25 fps with stereo AAC, so
/// that 6 s segments give two full segments and a 2 s tail.
fn source() -> &'static Path {
    static SOURCE: OnceLock<PathBuf> = OnceLock::new();
    SOURCE.get_or_init(|| h264_aac_mp4(fixtures(), "source.mp4", 320, 240, 14.0))
}

/// The options of our ladders here: 240p + 144p, quick.
const LADDER_OPTIONS: &[&str] = &[
    "--quality",
    "240p,144p",
    "--preset",
    "ultrafast",
    "--thumbnail-time",
    "1",
];

/// Our ladder of the source as the worker makes it by default (240p + 144p, Apple's 6 s
/// segments and 2 s GOP, MPEG-TS, audio as its own rendition, I-frame playlists).
fn good_ladder() -> PathBuf {
    static LADDER: OnceLock<PathBuf> = OnceLock::new();
    LADDER
        .get_or_init(|| {
            let out = fixtures().join("ladder");
            transcode_ok(source(), &out, LADDER_OPTIONS);
            out
        })
        .clone()
}

/// A fresh copy of the good ladder for one test to break.
fn copy_of_good() -> (TempDir, PathBuf) {
    let dir = scratch_dir();
    let to = dir.path().join("ladder");
    fs::create_dir(&to).unwrap();
    for entry in fs::read_dir(good_ladder()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    (dir, to)
}

/// `video-worker check <target> --json` (a folder or a URL): the report and the exit status.
fn check(target: impl AsRef<std::ffi::OsStr>) -> (Value, i32) {
    let run = run_worker(&["check".as_ref(), target.as_ref(), "--json".as_ref()]);
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "check --json must print one object ({e}): {}",
            run.describe()
        )
    });
    (report, run.status.code().unwrap_or(-1))
}

fn verdict(report: &Value, rule: &str) -> String {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["rule"] == rule)
        .unwrap_or_else(|| panic!("no finding for rule {rule}: {report}"))["verdict"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How many rules the report passes.
fn passed(report: &Value) -> usize {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["verdict"] == "pass")
        .count()
}

fn failed(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["verdict"] == "fail")
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

fn failed_musts(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["verdict"] == "fail" && f["level"] == "MUST")
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Playlist editing (m3u8-rs) and media editing (ffmpeg CLI)
// ---------------------------------------------------------------------------------------------

fn read_master(dir: &Path) -> MasterPlaylist {
    match m3u8_rs::parse_playlist_res(&fs::read(dir.join("master.m3u8")).unwrap()).unwrap() {
        Playlist::MasterPlaylist(m) => m,
        Playlist::MediaPlaylist(_) => panic!("master.m3u8 is a media playlist"),
    }
}

fn write_master(dir: &Path, m: &MasterPlaylist) {
    let mut out = Vec::new();
    m.write_to(&mut out).unwrap();
    fs::write(dir.join("master.m3u8"), out).unwrap();
}

fn edit_master(dir: &Path, edit: impl FnOnce(&mut MasterPlaylist)) {
    let mut m = read_master(dir);
    edit(&mut m);
    write_master(dir, &m);
}

fn read_media(path: &Path) -> MediaPlaylist {
    match m3u8_rs::parse_playlist_res(&fs::read(path).unwrap()).unwrap() {
        Playlist::MediaPlaylist(m) => m,
        Playlist::MasterPlaylist(_) => panic!("{} is a master playlist", path.display()),
    }
}

fn edit_media(dir: &Path, name: &str, edit: impl FnOnce(&mut MediaPlaylist)) {
    let path = dir.join(name);
    let mut m = read_media(&path);
    edit(&mut m);
    let mut out = Vec::new();
    m.write_to(&mut out).unwrap();
    fs::write(path, out).unwrap();
}

/// The media playlists players play: the variants' (not I-frame) and the audio renditions'.
fn playback_playlists(dir: &Path) -> Vec<String> {
    let master = read_master(dir);
    let variants = master
        .variants
        .iter()
        .filter(|v| !v.is_i_frame)
        .map(|v| v.uri.clone());
    let renditions = master.alternatives.iter().filter_map(|a| a.uri.clone());
    variants.chain(renditions).collect()
}

fn edit_all_media(dir: &Path, edit: impl Fn(&mut MediaPlaylist)) {
    for uri in playback_playlists(dir) {
        edit_media(dir, &uri, &edit);
    }
}

/// Re-muxes one segment through the ffmpeg CLI with `args` between input and output, keeping
/// its timestamps.
fn remux_segment(dir: &Path, segment: &str, args: &[&str]) {
    let from = dir.join(segment);
    let tmp = dir.join(format!("tmp-{segment}"));
    let mut all: Vec<String> = vec!["-copyts".into(), "-i".into(), from.display().to_string()];
    all.extend(["-map", "0"].iter().map(|s| s.to_string()));
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend(
        ["-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts"]
            .iter()
            .map(|s| s.to_string()),
    );
    all.push(tmp.display().to_string());
    ffmpeg(&all);
    fs::rename(tmp, from).unwrap();
}

fn first_segment_of(dir: &Path, playlist: &str, index: usize) -> String {
    read_media(&dir.join(playlist)).segments[index].uri.clone()
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

fn assert_keeps_every_rule(name: &str, ladder: &Path) {
    let (report, status) = check(ladder);
    let text = run_worker(&["check".as_ref(), ladder.as_os_str()]).stdout;
    println!("{text}");
    save_report(name, &text);
    // Every rule was measured and kept, none skipped for want of data.
    for f in report["findings"].as_array().unwrap() {
        assert_eq!(f["verdict"], "pass", "{f}\n{text}");
    }
    assert_eq!(status, 0, "exit status 0 when no MUST fails");
}

#[test]
fn our_ladder_keeps_every_rule() {
    assert_keeps_every_rule("ours", &good_ladder());
}

#[test]
fn our_fmp4_ladder_and_our_muxed_audio_ladder_keep_every_rule() {
    for (name, options) in [
        ("ours-fmp4", ["--segments", "fmp4"]),
        ("ours-muxed", ["--audio", "muxed"]),
    ] {
        let out = fixtures().join(name);
        transcode_ok(source(), &out, &[LADDER_OPTIONS, &options].concat());
        assert_keeps_every_rule(name, &out);
    }
}

/// The publish hook: a broken MUST is an `internal` error naming the rule, its text and its
/// measured value.
#[test]
fn the_publish_hook_refuses_a_ladder_that_breaks_a_must_as_internal() {
    let (_keep, dir) = copy_of_good();
    assert_eq!(video_worker::check::before_publish(&dir, 2), Ok(()));
    edit_master(&dir, |m| m.variants[0].average_bandwidth = None);
    let e = video_worker::check::before_publish(&dir, 2).expect_err("9.14 is broken");
    assert_eq!(e.kind, video_worker::ErrorKind::Internal);
    assert!(
        e.message
            .contains("rule 9.14 (MUST: You MUST include the AVERAGE-BANDWIDTH attribute)")
            && e.message.contains("no AVERAGE-BANDWIDTH")
            && e.message.contains("nothing published"),
        "{}",
        e.message
    );
}

#[test]
fn the_publish_hook_refuses_a_ladder_without_iframe_playlists() {
    let (_keep, dir) = copy_of_good();
    edit_master(&dir, |m| m.variants.retain(|v| !v.is_i_frame));
    let e = video_worker::check::before_publish(&dir, 2).expect_err("6.1 is broken");
    assert!(e.message.contains("rule 6.1"), "{}", e.message);
}

/// An unreadable segment fails the publish hook, in the audio rendition as in a video one.
#[test]
fn the_publish_hook_refuses_an_unreadable_segment_of_any_rendition() {
    let (_keep, dir) = copy_of_good();
    let audio = read_master(&dir).alternatives[0]
        .uri
        .clone()
        .expect("an audio rendition");
    let segment = first_segment_of(&dir, &audio, 0);
    // The same size (the bit rates stay true), no transport stream in it.
    let size = fs::metadata(dir.join(&segment)).unwrap().len() as usize;
    fs::write(dir.join(&segment), vec![0u8; size]).unwrap();
    assert_eq!(verdict(&check(&dir).0, "files"), "fail");
    let e =
        video_worker::check::before_publish(&dir, 2).expect_err("an audio segment is unreadable");
    assert!(e.message.contains("rule files"), "{}", e.message);

    let (_keep, dir) = copy_of_good();
    fs::remove_file(dir.join(first_segment_of(&dir, "144p.m3u8", 1))).unwrap();
    let e = video_worker::check::before_publish(&dir, 2).expect_err("a video segment is missing");
    assert!(e.message.contains("rule files"), "{}", e.message);
}

/// One hand-made break per rule, on a copy of the good ladder.
fn assert_breaks(rule: &str, mutate: impl FnOnce(&Path)) {
    let (_keep, dir) = copy_of_good();
    mutate(&dir);
    let (report, status) = check(&dir);
    let failed = failed(&report);
    assert!(
        failed.contains(&rule.to_string()),
        "rule {rule} must fail on its broken ladder; failed: {failed:?}\n{report:#}"
    );
    let must = !failed_musts(&report).is_empty();
    assert_eq!(
        status,
        if must { 2 } else { 0 },
        "exit status follows the MUSTs: {failed:?}"
    );
}

#[test]
fn a_missing_segment_fails_files() {
    assert_breaks("files", |d| {
        let seg = first_segment_of(d, "144p.m3u8", 1);
        fs::remove_file(d.join(seg)).unwrap();
    });
}

#[test]
fn an_average_bandwidth_half_again_too_high_fails_1_26() {
    assert_breaks("1.26", |d| {
        edit_master(d, |m| {
            let v = &mut m.variants[0];
            v.average_bandwidth = v.average_bandwidth.map(|a| a * 3 / 2);
        })
    });
}

#[test]
fn a_bandwidth_twice_the_peak_fails_1_27() {
    assert_breaks("1.27", |d| edit_master(d, |m| m.variants[0].bandwidth *= 2));
}

#[test]
fn one_segment_at_twenty_times_the_rate_of_the_others_fails_1_30() {
    assert_breaks("1.30", |d| {
        // MPEG-TS null packets (PID 0x1FFF), which demuxers skip: bytes without media.
        let seg = d.join(first_segment_of(d, "240p.m3u8", 1));
        let mut bytes = fs::read(&seg).unwrap();
        let size = bytes.len();
        let mut null = vec![0xffu8; 188];
        null[..4].copy_from_slice(&[0x47, 0x1f, 0xff, 0x10]);
        while bytes.len() < size * 20 {
            bytes.extend_from_slice(&null);
        }
        fs::write(seg, bytes).unwrap();
    });
}

#[test]
fn a_bandwidth_below_the_average_fails_9_13() {
    assert_breaks("9.13", |d| {
        edit_master(d, |m| {
            let v = &mut m.variants[0];
            v.bandwidth = v.average_bandwidth.unwrap() * 9 / 10;
        })
    });
}

#[test]
fn no_average_bandwidth_fails_9_14() {
    assert_breaks("9.14", |d| {
        edit_master(d, |m| m.variants[1].average_bandwidth = None)
    });
}

/// A ladder made with 4 s key frame intervals and 4 s segments breaks 1.13, 7.5 and 7.6.
fn long_gop_ladder() -> PathBuf {
    static LADDER: OnceLock<PathBuf> = OnceLock::new();
    LADDER
        .get_or_init(|| {
            let out = fixtures().join("long-gop");
            transcode_ok(
                source(),
                &out,
                &[
                    "--quality",
                    "144p",
                    "--preset",
                    "ultrafast",
                    "--thumbnail-time",
                    "1",
                    "--segment-seconds",
                    "4",
                    "--gop-seconds",
                    "4",
                ],
            );
            out
        })
        .clone()
}

#[test]
fn key_frames_every_4_s_fail_1_13() {
    let (report, _) = check(long_gop_ladder());
    assert_eq!(verdict(&report, "1.13"), "fail", "{report:#}");
}

#[test]
fn a_4_s_target_duration_fails_7_5_and_4_s_segments_fail_7_6() {
    let (report, status) = check(long_gop_ladder());
    assert_eq!(verdict(&report, "7.5"), "fail", "{report:#}");
    assert_eq!(verdict(&report, "7.6"), "fail", "{report:#}");
    // Only SHOULDs (and our missing I-frame playlists, if the output has none yet) break.
    let musts: Vec<String> = failed_musts(&report)
        .into_iter()
        .filter(|r| r != "6.1")
        .collect();
    assert!(musts.is_empty(), "{musts:?}");
    assert_eq!(
        status,
        if failed_musts(&report).is_empty() {
            0
        } else {
            2
        }
    );
}

#[test]
fn a_segment_that_starts_without_its_idr_fails_7_4() {
    assert_breaks("7.4", |d| {
        let seg = first_segment_of(d, "240p.m3u8", 1);
        // Drop the IDR slices (NAL type 5) of that segment: it starts with a P or B picture.
        remux_segment(
            d,
            &seg,
            &["-c", "copy", "-bsf:v", "filter_units=remove_types=5"],
        );
    });
}

#[test]
fn a_target_duration_of_7_s_fails_7_5() {
    assert_breaks("7.5", |d| edit_all_media(d, |m| m.target_duration = 7));
}

#[test]
fn segments_longer_than_the_target_by_more_than_half_a_second_fail_7_7() {
    assert_breaks("7.7", |d| edit_all_media(d, |m| m.target_duration = 5));
}

#[test]
fn extinf_durations_off_by_a_tenth_of_a_second_fail_8_1() {
    assert_breaks("8.1", |d| {
        edit_all_media(d, |m| {
            m.segments[0].duration += 0.1;
            m.segments[1].duration -= 0.1;
        })
    });
}

#[test]
fn different_target_durations_fail_8_2() {
    assert_breaks("8.2", |d| {
        edit_media(d, "144p.m3u8", |m| m.target_duration = 7)
    });
}

#[test]
fn a_playlist_without_its_last_segment_fails_8_3() {
    assert_breaks("8.3", |d| {
        edit_media(d, "144p.m3u8", |m| {
            m.segments.pop();
        })
    });
}

#[test]
fn boundaries_moved_in_one_rendition_fail_8_22() {
    assert_breaks("8.22", |d| {
        edit_media(d, "144p.m3u8", |m| {
            m.segments[0].duration -= 0.2;
            m.segments[1].duration += 0.2;
        })
    });
}

#[test]
fn a_media_playlist_without_playlist_type_fails_8_6() {
    assert_breaks("8.6", |d| {
        edit_media(d, "240p.m3u8", |m| m.playlist_type = None)
    });
}

#[test]
fn codecs_that_name_another_profile_fail_9_1() {
    assert_breaks("9.1", |d| {
        edit_master(d, |m| {
            m.variants[0].codecs = Some("avc1.42e00a,mp4a.40.2".into())
        })
    });
}

#[test]
fn no_codecs_fails_9_1() {
    assert_breaks("9.1", |d| edit_master(d, |m| m.variants[1].codecs = None));
}

#[test]
fn no_resolution_fails_9_2() {
    assert_breaks("9.2", |d| {
        edit_master(d, |m| m.variants[0].resolution = None)
    });
}

#[test]
fn no_independent_segments_tag_fails_9_11() {
    assert_breaks("9.11", |d| {
        edit_master(d, |m| m.independent_segments = false)
    });
}

#[test]
fn no_frame_rate_fails_9_15() {
    assert_breaks("9.15", |d| {
        edit_master(d, |m| m.variants[1].frame_rate = None)
    });
}

#[test]
fn no_iframe_playlists_fails_6_1() {
    assert_breaks("6.1", |d| {
        edit_master(d, |m| m.variants.retain(|v| !v.is_i_frame))
    });
}

#[test]
fn an_iframe_playlist_without_iframes_only_fails_6_8() {
    assert_breaks("6.8", |d| {
        let uri = read_master(d)
            .variants
            .iter()
            .find(|v| v.is_i_frame)
            .unwrap()
            .uri
            .clone();
        let text = fs::read_to_string(d.join(&uri)).unwrap();
        fs::write(d.join(&uri), text.replace("#EXT-X-I-FRAMES-ONLY\n", "")).unwrap();
    });
}

#[test]
fn an_iframe_stream_without_codecs_fails_9_3() {
    assert_breaks("9.3", |d| {
        edit_master(d, |m| {
            m.variants
                .iter_mut()
                .filter(|v| v.is_i_frame)
                .for_each(|v| v.codecs = None)
        })
    });
}

#[test]
fn an_iframe_stream_without_resolution_fails_9_4() {
    assert_breaks("9.4", |d| {
        edit_master(d, |m| {
            m.variants
                .iter_mut()
                .filter(|v| v.is_i_frame)
                .for_each(|v| v.resolution = None)
        })
    });
}

#[test]
fn avc3_in_codecs_fails_1_10() {
    assert_breaks("1.10", |d| {
        edit_master(d, |m| {
            for v in &mut m.variants {
                v.codecs = v.codecs.as_ref().map(|c| c.replace("avc1", "avc3"));
            }
        })
    });
}

#[test]
fn mono_audio_only_fails_2_3() {
    assert_breaks("2.3", |d| {
        for playlist in playback_playlists(d) {
            for s in read_media(&d.join(&playlist)).segments {
                remux_segment(d, &s.uri, &["-c:v", "copy", "-c:a", "aac", "-ac", "1"]);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The ffmpeg CLI's own ladder
// ---------------------------------------------------------------------------------------------

/// Where a run's text report is kept for the README (target/check-reports/<name>.txt).
fn save_report(name: &str, text: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/check-reports");
    let _ = fs::create_dir_all(&dir);
    let _ = fs::write(dir.join(format!("{name}.txt")), text);
}

/// A typical two-rung ladder command with the hls muxer: one encode, var_stream_map, a master
/// playlist, 2 s GOPs without scene cuts, 6 s VOD segments.
fn ffmpeg_ladder(ffmpeg_bin: &Path, out: &Path) {
    fs::create_dir_all(out).unwrap();
    let status = Command::new(ffmpeg_bin)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y", "-i"])
        .arg(source())
        .args([
            "-filter_complex",
            "[0:v]split=2[a][b];[a]scale=-2:240[v0];[b]scale=-2:144[v1]",
            "-map",
            "[v0]",
            "-map",
            "0:a",
            "-map",
            "[v1]",
            "-map",
            "0:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-profile:v",
            "high",
            "-b:v:0",
            "400k",
            "-maxrate:v:0",
            "440k",
            "-bufsize:v:0",
            "800k",
            "-b:v:1",
            "200k",
            "-maxrate:v:1",
            "220k",
            "-bufsize:v:1",
            "400k",
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ac",
            "2",
            "-ar",
            "48000",
            "-f",
            "hls",
            "-hls_time",
            "6",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
        ])
        .arg(out.join("v%v_%03d.ts"))
        .args([
            "-master_pl_name",
            "master.m3u8",
            "-var_stream_map",
            "v:0,a:0 v:1,a:1",
        ])
        .arg(out.join("v%v.m3u8"))
        .status()
        .expect("run the ffmpeg CLI");
    assert!(status.success(), "{} failed", ffmpeg_bin.display());
}

fn check_ffmpeg_ladder(name: &str, ffmpeg_bin: &Path) -> Value {
    let dir = scratch_dir();
    let out = dir.path().join("ladder");
    ffmpeg_ladder(ffmpeg_bin, &out);
    let (report, status) = check(&out);
    let text = run_worker(&["check".as_ref(), out.as_os_str()]).stdout;
    println!("{name}:\n{text}");
    save_report(name, &text);
    assert_eq!(verdict(&report, "files"), "pass", "{text}");
    // What both FFmpeg 5.1 and 7.0's hls muxer break with this command (README, "check"): no
    // AVERAGE-BANDWIDTH, FRAME-RATE or I-frame playlists, a BANDWIDTH under the measured peak,
    // no EXT-X-INDEPENDENT-SEGMENTS (a SHOULD); and the exit status says a MUST broke.
    assert_eq!(
        failed(&report),
        ["9.13", "9.14", "9.11", "9.15", "6.1"],
        "{text}"
    );
    assert_eq!(status, 2, "{text}");
    report
}

#[test]
fn debian_ffmpeg_cli_ladder_is_measured_and_its_breaks_reported() {
    let report = check_ffmpeg_ladder("ffmpeg5", Path::new("ffmpeg"));
    // Its segments start with IDRs on the 2 s grid it was told to use.
    assert_eq!(verdict(&report, "7.4"), "pass");
    assert_eq!(verdict(&report, "1.13"), "pass");
}

#[test]
fn ffmpeg7_cli_ladder_is_measured_and_its_breaks_reported() {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/ffmpeg7");
    if !bin.exists() {
        // setup.sh installs it; CI must not pass without it.
        assert!(
            std::env::var_os("CI").is_none(),
            "no {} (run scripts/setup.sh)",
            bin.display()
        );
        eprintln!("skipped: no {} (run scripts/setup.sh)", bin.display());
        return;
    }
    let report = check_ffmpeg_ladder("ffmpeg7", &bin);
    assert_eq!(verdict(&report, "7.4"), "pass");
}

// ---------------------------------------------------------------------------------------------
// Ladders on a web server (`check http://…`)
// ---------------------------------------------------------------------------------------------

/// A small HTTP/1.1 file server on 127.0.0.1 (a free port) for `check` to read a ladder from:
/// `GET /ladder/<file>` gives the file of `root` (Content-Length, then the connection closes;
/// `Range: bytes=a-b` gives those bytes, 206), anything else a 404; every request is noted as
/// its path and its range. Stopped and joined on drop.
struct WebServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    fn serve(root: &Path) -> WebServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the server's address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (root, noted, stopping) = (root.to_path_buf(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, noted) = (root.clone(), noted.clone());
                // One thread a connection: libavformat's concat protocol holds an init
                // section's connection open while it opens the segment's.
                std::thread::spawn(move || {
                    let _ = respond(conn, &root, &noted);
                });
            }
        });
        WebServer {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, file: &str) -> String {
        format!("http://{}/ladder/{file}", self.addr)
    }

    fn requested(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(conn: TcpStream, root: &Path, noted: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut range: Option<(usize, usize)> = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        let lower = header.trim().to_ascii_lowercase();
        if let Some((first, last)) = lower
            .strip_prefix("range: bytes=")
            .and_then(|r| r.split_once('-'))
        {
            range = first.parse().ok().zip(last.parse().ok());
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or_default();
    noted.lock().unwrap().push(match range {
        Some((first, last)) => format!("{path} bytes={first}-{last}"),
        None => path.to_string(),
    });
    let body = path
        .strip_prefix("/ladder/")
        .filter(|file| !file.split('/').any(|c| c == ".."))
        .and_then(|file| fs::read(root.join(file)).ok());
    let mut conn = conn;
    match (body, range) {
        (Some(body), Some((first, last))) if first <= last && last < body.len() => {
            write!(
                conn,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {first}-{last}/{}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len(),
                last + 1 - first
            )?;
            conn.write_all(&body[first..=last])
        }
        (Some(body), None) => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.write_all(&body)
        }
        (Some(_), Some(_)) => conn.write_all(
            b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        (None, _) => conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    }
}

/// Every playlist the master of `dir` names and every segment of the playback ones (those of
/// the I-frame playlists are byte ranges of the same files), as paths under `prefix` (relative
/// URIs resolved against their playlist's folder).
fn every_file_named(dir: &Path, prefix: &str) -> Vec<String> {
    let master = read_master(dir);
    let mut files: Vec<String> = master
        .variants
        .iter()
        .map(|v| format!("{prefix}{}", v.uri))
        .collect();
    for playlist in playback_playlists(dir) {
        let folder = Path::new(&playlist).parent().unwrap_or(Path::new(""));
        for segment in read_media(&dir.join(&playlist)).segments {
            files.push(format!("{prefix}{}", folder.join(segment.uri).display()));
        }
        files.push(format!("{prefix}{playlist}"));
    }
    files
}

/// The findings of two reports are the same (rule, level, verdict, measured value, failures).
fn assert_same_findings(from_web: &Value, from_folder: &Value) {
    assert_eq!(
        from_web["findings"], from_folder["findings"],
        "over http:\n{from_web:#}\nfrom the folder:\n{from_folder:#}"
    );
    assert_eq!(from_web["playlists"], from_folder["playlists"]);
    assert_eq!(from_web["segments"], from_folder["segments"]);
}

/// Serves `dir` and checks it over http and in the folder: the same findings, every rule kept,
/// exit status 0, and every playlist and segment named read over http. Returns the requests.
fn assert_kept_over_http_as_in_its_folder(dir: &Path) -> Vec<String> {
    let server = WebServer::serve(dir);
    let (from_web, status) = check(server.url("master.m3u8"));
    assert_eq!(from_web["master"], server.url("master.m3u8"), "{from_web}");
    assert_same_findings(&from_web, &check(dir).0);
    assert_eq!(failed(&from_web), Vec::<String>::new(), "{from_web:#}");
    assert_eq!(status, 0);
    let requested = server.requested();
    for file in every_file_named(dir, "/ladder/") {
        assert!(
            requested
                .iter()
                .any(|r| r.split(' ').next() == Some(file.as_str())),
            "{file} read over http: {requested:?}"
        );
    }
    requested
}

/// `check` given the URL of a master playlist reads the whole ladder over http (playlists and
/// every segment, through libavformat) and finds what it finds in the folder: MPEG-TS, and
/// fMP4 (each segment behind its init section).
#[test]
fn a_ladder_on_a_web_server_gets_the_findings_of_its_folder() {
    let tmp = scratch_dir();
    let fmp4 = tmp.path().join("fmp4");
    transcode_ok(
        source(),
        &fmp4,
        &[LADDER_OPTIONS, &["--segments", "fmp4"]].concat(),
    );
    for ladder in [good_ladder(), fmp4] {
        assert_kept_over_http_as_in_its_folder(&ladder);
    }
    let server = WebServer::serve(&good_ladder());
    // A URL ending in `/` names its master.m3u8.
    let (from_folder_url, status) = check(server.url(""));
    assert_eq!(from_folder_url["master"], server.url("master.m3u8"));
    assert_eq!(status, 0);
}

/// Relative URIs resolve against the URL of the playlist that holds them: the 144p rendition
/// (its playlists and segments) in a folder of its own below the master's.
#[test]
fn relative_uris_resolve_against_the_url_of_their_playlist() {
    let (_keep, dir) = copy_of_good();
    fs::create_dir(dir.join("low")).unwrap();
    for entry in fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("144p") {
            fs::rename(dir.join(&name), dir.join("low").join(&name)).unwrap();
        }
    }
    edit_master(&dir, |m| {
        for v in m.variants.iter_mut().filter(|v| v.uri.starts_with("144p")) {
            v.uri = format!("low/{}", v.uri);
        }
    });
    let requested = assert_kept_over_http_as_in_its_folder(&dir);
    assert!(
        requested.contains(&"/ladder/low/144p_001.ts".to_string()),
        "{requested:?}"
    );
}

/// A broken ladder on a web server fails the same rules as in its folder, with exit status
/// 2; a segment the server does not have is a `files` finding that says so.
#[test]
fn a_broken_ladder_on_a_web_server_fails_its_rules_and_a_missing_segment_is_a_finding() {
    let (_keep, dir) = copy_of_good();
    edit_master(&dir, |m| m.variants[0].average_bandwidth = None);
    let missing = first_segment_of(&dir, "144p.m3u8", 1);
    fs::remove_file(dir.join(&missing)).unwrap();
    let server = WebServer::serve(&dir);
    let (from_web, status) = check(server.url("master.m3u8"));
    let (from_folder, _) = check(&dir);
    assert_eq!(failed(&from_web), failed(&from_folder), "{from_web:#}");
    let failed = failed(&from_web);
    assert!(
        failed.contains(&"9.14".to_string()) && failed.contains(&"files".to_string()),
        "{failed:?}"
    );
    assert_eq!(status, 2, "a MUST is broken");
    let files = from_web["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "files")
        .unwrap();
    let failures = files["failures"].to_string();
    assert!(
        failures.contains(&format!("144p.m3u8: {missing}: ")) && failures.contains("404"),
        "{files}"
    );
    // A master playlist the server does not have: the ladder cannot be read (status 1).
    let (report, status) = check(server.url("gone.m3u8"));
    assert_eq!(status, 1, "{report}");
    assert!(
        report["error"].as_str().unwrap().contains("404"),
        "{report}"
    );
}

/// A ladder on the web names http(s) URLs only: a segment named by a `file://` URL of this
/// machine is not read, whether or not the file exists.
#[test]
fn a_ladder_on_a_web_server_may_not_name_files_of_this_machine() {
    let (_keep, dir) = copy_of_good();
    let segment = first_segment_of(&dir, "144p.m3u8", 0);
    let local = format!("file://{}", dir.join(&segment).display());
    edit_media(&dir, "144p.m3u8", |m| m.segments[0].uri = local.clone());
    let server = WebServer::serve(&dir);
    let (report, status) = check(server.url("master.m3u8"));
    assert!(failed(&report).contains(&"files".to_string()), "{report:#}");
    assert!(
        report.to_string().contains(&format!(
            "{local}: a ladder on the web names http(s) URLs only"
        )),
        "{report:#}"
    );
    assert_eq!(status, 2);
}

/// Segments that are byte ranges of one file (EXT-X-BYTERANGE) are read with HTTP Range
/// requests, one range each, and measured as in the folder (through `subfile` there).
#[test]
fn byte_range_segments_on_a_web_server_are_read_with_range_requests() {
    let (_keep, dir) = copy_of_good();
    // The 144p rendition's segments, one after the other in one file (one muxer wrote them:
    // continuity counters and timestamps continue), named by byte ranges.
    let segments = read_media(&dir.join("144p.m3u8")).segments;
    let mut whole = Vec::new();
    let mut ranges = Vec::new();
    for s in &segments {
        let bytes = fs::read(dir.join(&s.uri)).unwrap();
        ranges.push((whole.len() as u64, bytes.len() as u64));
        whole.extend(bytes);
    }
    fs::write(dir.join("144p_all.ts"), whole).unwrap();
    edit_media(&dir, "144p.m3u8", |m| {
        for (s, (start, length)) in m.segments.iter_mut().zip(&ranges) {
            s.uri = "144p_all.ts".into();
            s.byte_range = Some(m3u8_rs::ByteRange {
                length: *length,
                offset: Some(*start),
            });
        }
        m.version = Some(4);
    });
    let requested = assert_kept_over_http_as_in_its_folder(&dir);
    for (start, length) in ranges {
        let asked = format!("/ladder/144p_all.ts bytes={start}-{}", start + length - 1);
        assert!(requested.contains(&asked), "{asked}: {requested:?}");
    }
}

/// Over https the server's certificate is verified (libavformat's TLS does not, unless told):
/// a ladder served with a self-signed certificate (made with the `openssl` CLI, served by
/// Python's `http.server` over `ssl`) is not read, and the exit status says so.
#[test]
fn a_ladder_on_an_https_server_is_read_only_when_its_certificate_is_trusted() {
    let dir = scratch_dir();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "openssl: {made:?}");
    let script = "import http.server, ssl, sys\n\
        srv = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        ctx.load_cert_chain(sys.argv[1], sys.argv[2])\n\
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
        print(srv.server_address[1], flush=True)\n\
        srv.serve_forever()\n";
    let mut server = ChildProcess(
        Command::new("python3")
            .args(["-c", script])
            .arg(&cert)
            .arg(&key)
            .current_dir(good_ladder())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run python3 (scripts/setup.sh installs it)"),
    );
    let mut port = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let master = format!("https://127.0.0.1:{}/master.m3u8", port.trim());
    // Not signed by an authority this machine trusts: refused.
    let (report, status) = check(&master);
    assert_eq!(status, 1, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("reading https://127.0.0.1:"),
        "{report}"
    );
    // Trusted through --ca-file: read like the folder, every rule kept.
    let run = run_worker(&[
        "check".as_ref(),
        master.as_ref(),
        "--json".as_ref(),
        "--ca-file".as_ref(),
        cert.as_os_str(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", run.describe());
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(failed(&report), Vec::<String>::new(), "{report}");
    let (local, _) = check(good_ladder());
    assert_eq!(passed(&report), passed(&local), "{report}");
}

/// A process a test started, killed and reaped when the test ends, even by a panic.
struct ChildProcess(std::process::Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
