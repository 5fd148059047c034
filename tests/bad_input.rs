//! Bad input never panics, never hangs and never leaves a partial output: every case below must
//! exit with status 1 within the timeout, print one `{"error": {"kind", "message"}}` object with
//! the expected stable kind, and leave neither OUTPUT_DIR nor a staging directory behind
//! (`common::assert_refused`).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{
    assert_refused, h264_aac_mp4, h264_mp4, make_fixture, mp4_box_payload, pseudo_random_bytes,
    scratch_dir, test_picture, test_tone,
};

/// Options that make any accepted job quick, so a wrongly accepted input fails fast, not slowly.
const QUICK: &[&str] = &["--quality", "144p", "--segment-seconds", "2"];

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write fixture");
    path
}

/// A video-only MP4 whose `mdat` payload is replaced by `fill(len)`: the container and its sample
/// tables are intact, but no sample holds a decodable picture.
fn mp4_with_video_payload(dir: &Path, fill: impl Fn(usize) -> Vec<u8>) -> PathBuf {
    let source = make_fixture(
        dir,
        "intact.mp4",
        &[test_picture(640, 360, "25", 2.0)],
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
        ],
    );
    let mut bytes = fs::read(&source).expect("read fixture");
    let payload = mp4_box_payload(&bytes, b"mdat").expect("the fixture has an mdat box");
    assert!(
        payload.len() > 10_000,
        "fixture mdat too small: {payload:?}"
    );
    let replacement = fill(payload.len());
    bytes[payload].copy_from_slice(&replacement);
    fs::remove_file(&source).expect("remove intact fixture");
    write(dir, "undecodable.mp4", &bytes)
}

#[test]
fn missing_source_is_source_not_found() {
    let tmp = scratch_dir();
    let missing = tmp.path().join("no-such-upload.mp4");
    assert_refused(
        &missing,
        &tmp.path().join("out"),
        QUICK,
        &["source_not_found"],
    );
}

#[test]
fn empty_file_is_invalid_media() {
    let tmp = scratch_dir();
    let empty = write(tmp.path(), "empty.mp4", &[]);
    assert_refused(&empty, &tmp.path().join("out"), QUICK, &["invalid_media"]);
}

#[test]
fn random_bytes_are_invalid_media() {
    let tmp = scratch_dir();
    let noise = write(
        tmp.path(),
        "noise.mp4",
        &pseudo_random_bytes(256 * 1024, 0x5eed_cafe_f00d_0001),
    );
    assert_refused(&noise, &tmp.path().join("out"), QUICK, &["invalid_media"]);
}

#[test]
fn mp4_cut_in_half_before_its_moov_is_invalid_media() {
    let tmp = scratch_dir();
    // Without +faststart the moov box is written last, so the first half has no sample tables.
    let whole = h264_aac_mp4(tmp.path(), "whole.mp4", 640, 360, 4.0);
    let bytes = fs::read(&whole).expect("read fixture");
    let moov = mp4_box_payload(&bytes, b"moov").expect("moov box");
    let half = bytes.len() / 2;
    assert!(moov.start > half, "fixture must keep moov at the end");
    let truncated = write(tmp.path(), "truncated.mp4", &bytes[..half]);
    fs::remove_file(&whole).expect("remove whole fixture");
    assert_refused(
        &truncated,
        &tmp.path().join("out"),
        QUICK,
        &["invalid_media"],
    );
}

#[test]
fn audio_only_file_is_no_video_stream() {
    let tmp = scratch_dir();
    let song = make_fixture(
        tmp.path(),
        "song.m4a",
        &[test_tone(48_000, 3.0)],
        &["-c:a", "aac", "-ac", "2"],
    );
    assert_refused(&song, &tmp.path().join("out"), QUICK, &["no_video_stream"]);
}

#[test]
fn audio_with_only_cover_art_is_no_video_stream() {
    let tmp = scratch_dir();
    // A single MJPEG picture flagged attached_pic is album art, not a video.
    let song = make_fixture(
        tmp.path(),
        "album.m4a",
        &[test_tone(48_000, 3.0), test_picture(320, 320, "1", 1.0)],
        &[
            "-map",
            "0",
            "-map",
            "1",
            "-c:a",
            "aac",
            "-c:v",
            "mjpeg",
            "-frames:v",
            "1",
            "-disposition:v:0",
            "attached_pic",
        ],
    );
    assert_refused(&song, &tmp.path().join("out"), QUICK, &["no_video_stream"]);
}

#[test]
fn mp4_with_zeroed_video_samples_is_refused_as_undecodable() {
    let tmp = scratch_dir();
    let source = mp4_with_video_payload(tmp.path(), |len| vec![0; len]);
    assert_refused(
        &source,
        &tmp.path().join("out"),
        QUICK,
        &["invalid_media", "unsupported_codec"],
    );
}

#[test]
fn mp4_with_garbage_video_samples_is_refused_as_undecodable() {
    let tmp = scratch_dir();
    let source = mp4_with_video_payload(tmp.path(), |len| {
        pseudo_random_bytes(len, 0x0bad_f00d_dead_beef)
    });
    assert_refused(
        &source,
        &tmp.path().join("out"),
        QUICK,
        &["invalid_media", "unsupported_codec"],
    );
}

#[test]
fn http_url_source_is_invalid_request() {
    let tmp = scratch_dir();
    assert_refused(
        "http://127.0.0.1:9/x.mp4",
        &tmp.path().join("out"),
        QUICK,
        &["invalid_request"],
    );
}

#[test]
fn concat_protocol_source_is_invalid_request() {
    let tmp = scratch_dir();
    // Both parts exist, so only a refusal of the protocol can make this fail.
    let a = h264_mp4(tmp.path(), "a.mp4", 320, 180, 1.0);
    let b = h264_mp4(tmp.path(), "b.mp4", 320, 180, 1.0);
    let source = format!("concat:{}|{}", a.display(), b.display());
    assert_refused(
        &source,
        &tmp.path().join("out"),
        QUICK,
        &["invalid_request"],
    );
}

/// A local HLS playlist naming a real local segment: libavformat would happily read it.
fn local_playlist(dir: &Path, name: &str) -> PathBuf {
    let segment = make_fixture(
        dir,
        "part0.ts",
        &[test_picture(320, 180, "25", 1.0)],
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let text = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:1.0,\n{}\n#EXT-X-ENDLIST\n",
        segment.display()
    );
    write(dir, name, text.as_bytes())
}

#[test]
fn local_m3u8_playlist_source_is_invalid_request() {
    let tmp = scratch_dir();
    let playlist = local_playlist(tmp.path(), "list.m3u8");
    assert_refused(
        &playlist,
        &tmp.path().join("out"),
        QUICK,
        &["invalid_request"],
    );
}

#[test]
fn playlist_disguised_as_mp4_is_refused_by_the_format_whitelist() {
    let tmp = scratch_dir();
    let playlist = local_playlist(tmp.path(), "looks_like_video.mp4");
    assert_refused(
        &playlist,
        &tmp.path().join("out"),
        QUICK,
        &["invalid_request", "invalid_media"],
    );
}

#[test]
fn unknown_quality_is_invalid_request() {
    let tmp = scratch_dir();
    let source = h264_mp4(tmp.path(), "upload.mp4", 320, 180, 1.0);
    assert_refused(
        &source,
        &tmp.path().join("out"),
        &["--quality", "360p,999p", "--segment-seconds", "2"],
        &["invalid_request"],
    );
}

#[test]
fn duration_over_max_duration_is_limit_exceeded() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "long.mp4", 320, 180, 4.0);
    let options = [QUICK, &["--max-duration", "1"]].concat();
    assert_refused(
        &source,
        &tmp.path().join("out"),
        &options,
        &["limit_exceeded"],
    );
}

#[test]
fn width_over_max_width_is_limit_exceeded() {
    let tmp = scratch_dir();
    let source = h264_mp4(tmp.path(), "wide.mp4", 320, 180, 1.0);
    let options = [QUICK, &["--max-width", "100"]].concat();
    assert_refused(
        &source,
        &tmp.path().join("out"),
        &options,
        &["limit_exceeded"],
    );
}

#[test]
fn height_over_max_height_is_limit_exceeded() {
    let tmp = scratch_dir();
    let source = h264_mp4(tmp.path(), "tall.mp4", 320, 180, 1.0);
    let options = [QUICK, &["--max-height", "100"]].concat();
    assert_refused(
        &source,
        &tmp.path().join("out"),
        &options,
        &["limit_exceeded"],
    );
}

#[test]
fn output_dir_under_a_regular_file_is_output_io() {
    let tmp = scratch_dir();
    let source = h264_mp4(tmp.path(), "upload.mp4", 320, 180, 1.0);
    let not_a_dir = write(
        tmp.path(),
        "not-a-dir",
        b"a file where a directory should be",
    );
    assert_refused(&source, &not_a_dir.join("out"), QUICK, &["output_io"]);
    assert_eq!(
        fs::read(&not_a_dir).expect("file still there"),
        b"a file where a directory should be",
        "the blocking file must be left alone"
    );
}

/// A small filesystem that fills up while segments are being written: the job must fail as
/// `output_io` with the disk's own reason (not as a rendition that merely "stopped"), and leave
/// nothing on the full disk. Mounting needs root, which CI has; elsewhere the test says so.
#[test]
fn disk_filling_up_mid_job_is_output_io_and_leaves_nothing() {
    // SAFETY: geteuid has no preconditions and only reads the process's credentials.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED disk_filling_up_mid_job…: mounting a tmpfs needs root (CI runs as root)"
        );
        return;
    }
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 640, 360, 5.0);
    let disk = tmp.path().join("small-disk");
    fs::create_dir(&disk).expect("mount point");
    // 300 KiB holds the first segments of a 640x360 ladder but not the whole job.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=300k", "tmpfs"])
        .arg(&disk)
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "root could not mount a tmpfs at {}",
        disk.display()
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&disk);

    let options = ["--quality", "360p,240p", "--segment-seconds", "1"];
    let error = assert_refused(&source, &disk.join("out"), &options, &["output_io"]);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("No space left on device"),
        "the error must name the cause: {message}"
    );
    let left: Vec<_> = fs::read_dir(&disk).expect("read disk").collect();
    assert!(
        left.is_empty(),
        "the full disk must be left empty: {left:?}"
    );
}
