//! Good inputs: each test makes a small source with the `ffmpeg` CLI, runs
//! `video-worker transcode … --json`, and checks the whole HLS output with `ffprobe` through
//! `common::assert_valid_hls` (playlists, every segment decoded, renditions against each other,
//! thumbnail, manifest, directory listing), then what is particular to its source.

mod common;

use std::fs;

use common::{
    assert_valid_hls, h264_aac_mp4, h264_mp4, make_fixture, probe_source, scratch_dir,
    test_picture, test_tone, transcode_ok, uint_of, Expect, HlsOutput,
};

/// Short segments and low qualities keep each test to a few seconds on 2 cores.
fn options(quality: &str) -> Vec<&str> {
    vec![
        "--quality",
        quality,
        "--segment-seconds",
        "2",
        "--thumbnail-time",
        "1",
    ]
}

fn sizes(hls: &HlsOutput) -> Vec<(u64, u64)> {
    hls.renditions.iter().map(|r| (r.width, r.height)).collect()
}

/// x264 output options for a fixture: fast, and the pixel format under test.
fn x264(pix_fmt: &str) -> Vec<&str> {
    vec![
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        pix_fmt,
    ]
}

#[test]
fn h264_aac_stereo_mp4_becomes_a_complete_three_rung_ladder() {
    let tmp = scratch_dir();
    // 5 s at 2 s segments: two full segments and a short last one.
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 640, 360, 5.0);
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,240p,144p"));
    let hls = assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["360p", "240p", "144p"]),
    );
    let s = sizes(&hls);
    assert_eq!(s[0], (640, 360));
    assert!(
        s[1] == (426, 240) || s[1] == (428, 240),
        "240p is {:?}",
        s[1]
    );
    assert_eq!(s[2], (256, 144));
    for r in &hls.renditions {
        let counts: Vec<u64> = r.segments.iter().map(|s| s.video_frames).collect();
        assert_eq!(
            counts,
            [50, 50, 25],
            "{}: 125 frames cut every 50",
            r.quality
        );
    }
}

#[test]
fn surround_ac3_5_1_is_downmixed_to_stereo_aac_48k() {
    let tmp = scratch_dir();
    // AC-3 decodes to 1536-sample frames while AAC takes 1024: this exercises the audio FIFO.
    let mut output = x264("yuv420p");
    output.extend(["-c:a", "ac3", "-ac", "6"]);
    let source = make_fixture(
        tmp.path(),
        "surround.mkv",
        &[test_picture(640, 360, "25", 4.0), test_tone(48_000, 4.0)],
        &output,
    );
    let probe = probe_source(&source);
    assert_eq!(probe.audio_streams.len(), 1);
    assert_eq!(probe.audio_streams[0]["codec_name"], "ac3");
    assert_eq!(probe.audio_streams[0]["channels"], 6, "fixture must be 5.1");

    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,144p"));
    // Every segment is checked for AAC-LC, 2 channels, 48 kHz.
    assert_valid_hls(&source, &out, &result, &Expect::ladder(&["360p", "144p"]));
}

#[test]
fn source_without_audio_gives_video_only_renditions() {
    let tmp = scratch_dir();
    let source = h264_mp4(tmp.path(), "silent.mp4", 640, 360, 4.0);
    assert!(probe_source(&source).audio_streams.is_empty());
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,240p"));
    let hls = assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["360p", "240p"]).without_audio(),
    );
    for variant in &hls.master.variants {
        let codecs = variant.codecs.as_deref().unwrap_or_default();
        assert!(!codecs.contains("mp4a"), "CODECS {codecs:?} names audio");
    }
}

#[test]
fn portrait_source_gives_portrait_renditions() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "phone.mp4", 360, 640, 4.0);
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,240p"));
    let hls = assert_valid_hls(&source, &out, &result, &Expect::ladder(&["360p", "240p"]));
    let s = sizes(&hls);
    assert_eq!(s[0], (360, 640), "360p of a 360x640 source");
    assert!(
        s[1] == (240, 426) || s[1] == (240, 428),
        "240p is {:?}",
        s[1]
    );
}

#[test]
fn rotation_metadata_gives_upright_portrait_output() {
    let tmp = scratch_dir();
    let landscape = h264_aac_mp4(tmp.path(), "sensor.mp4", 640, 360, 4.0);
    let rotated = tmp.path().join("rotated.mp4");
    // FFmpeg 5.1 turns the `rotate` stream tag into a display matrix on stream copy.
    common::ffmpeg(&[
        "-i",
        landscape.to_str().expect("UTF-8 temp path"),
        "-metadata:s:v:0",
        "rotate=90",
        "-c",
        "copy",
        rotated.to_str().expect("UTF-8 temp path"),
    ]);
    let video = probe_source(&rotated).video.expect("video");
    assert_eq!((video.width, video.height), (640, 360), "coded landscape");
    assert_eq!(
        video.rotation.abs(),
        90,
        "fixture must carry a 90° display matrix"
    );

    let out = tmp.path().join("hls");
    let result = transcode_ok(&rotated, &out, &options("360p,240p"));
    let hls = assert_valid_hls(&rotated, &out, &result, &Expect::ladder(&["360p", "240p"]));
    let s = sizes(&hls);
    assert_eq!(
        s[0],
        (360, 640),
        "a rotate=90 640x360 source displays as 360x640"
    );
    for (w, h) in s {
        assert!(w < h, "{w}x{h} must be portrait");
    }
    let thumb = &hls.thumbnail;
    assert!(
        uint_of(thumb, "width") < uint_of(thumb, "height"),
        "thumbnail must be upright too: {thumb}"
    );
}

#[test]
fn odd_sized_source_gives_even_sized_renditions() {
    let tmp = scratch_dir();
    // testsrc2 only makes even sizes and x264 refuses odd 4:2:0, so MPEG-4 Part 2 carries a true
    // 641x361 4:2:0 picture.
    let source = make_fixture(
        tmp.path(),
        "odd.mp4",
        &[test_picture(640, 360, "25", 4.0), test_tone(48_000, 4.0)],
        &[
            "-vf",
            "scale=641:361",
            "-c:v",
            "mpeg4",
            "-q:v",
            "4",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ac",
            "2",
        ],
    );
    let video = probe_source(&source).video.expect("video");
    assert_eq!((video.width, video.height), (641, 361));

    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,240p"));
    let hls = assert_valid_hls(&source, &out, &result, &Expect::ladder(&["360p", "240p"]));
    for (w, h) in sizes(&hls) {
        assert!(w % 2 == 0 && h % 2 == 0, "{w}x{h} must be even");
    }
    assert_eq!(hls.renditions[0].height, 360);
}

#[test]
fn ten_bit_source_gives_8bit_yuv420p_high_profile() {
    let tmp = scratch_dir();
    let mut output = x264("yuv420p10le");
    output.extend(["-c:a", "aac", "-ac", "2"]);
    let source = make_fixture(
        tmp.path(),
        "ten_bit.mp4",
        &[test_picture(640, 360, "25", 4.0), test_tone(48_000, 4.0)],
        &output,
    );
    let video = probe_source(&source).video.expect("video");
    assert_eq!(video.pix_fmt, "yuv420p10le");
    assert_eq!(video.profile, "High 10", "fixture must be 10-bit H.264");

    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,144p"));
    // Every segment is checked for yuv420p, High profile and SPS profile_idc 100.
    assert_valid_hls(&source, &out, &result, &Expect::ladder(&["360p", "144p"]));
}

#[test]
fn yuv444_source_gives_8bit_yuv420p_high_profile() {
    let tmp = scratch_dir();
    let source = make_fixture(
        tmp.path(),
        "full_chroma.mp4",
        &[test_picture(640, 360, "25", 4.0)],
        &x264("yuv444p"),
    );
    let video = probe_source(&source).video.expect("video");
    assert_eq!(video.pix_fmt, "yuv444p");
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("240p"));
    assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["240p"]).without_audio(),
    );
}

#[test]
fn webm_vp9_opus_source_is_transcoded() {
    let tmp = scratch_dir();
    let source = make_fixture(
        tmp.path(),
        "upload.webm",
        &[test_picture(640, 360, "25", 4.0), test_tone(48_000, 4.0)],
        &[
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "500k",
            "-c:a",
            "libopus",
            "-ac",
            "2",
        ],
    );
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,144p"));
    assert_valid_hls(&source, &out, &result, &Expect::ladder(&["360p", "144p"]));
}

#[test]
fn mpegts_mpeg2_mp2_source_at_29_97_fps_and_44_1_khz_is_transcoded() {
    let tmp = scratch_dir();
    // A broadcast-style capture: timestamps start at 1.4 s, NTSC rate, audio needs resampling.
    let source = make_fixture(
        tmp.path(),
        "capture.ts",
        &[
            test_picture(640, 360, "30000/1001", 4.0),
            test_tone(44_100, 4.0),
        ],
        &[
            "-c:v",
            "mpeg2video",
            "-q:v",
            "4",
            "-c:a",
            "mp2",
            "-ac",
            "2",
            "-b:a",
            "192k",
        ],
    );
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,240p"));
    let hls = assert_valid_hls(&source, &out, &result, &Expect::ladder(&["360p", "240p"]));
    // The I-frame variants (EXT-X-I-FRAME-STREAM-INF) carry no FRAME-RATE.
    for variant in hls.master.variants.iter().filter(|v| !v.is_i_frame) {
        let rate = variant.frame_rate.expect("FRAME-RATE");
        assert!(
            (rate - 29.97).abs() < 1e-3,
            "FRAME-RATE {rate} for 30000/1001"
        );
    }
    for r in &hls.renditions {
        // round(2 s × 29.97) = 60 frames per segment, 120 frames in all.
        let counts: Vec<u64> = r.segments.iter().map(|s| s.video_frames).collect();
        assert_eq!(counts, [60, 60], "{}", r.quality);
    }
}

#[test]
fn variable_frame_rate_source_gives_constant_frame_rate_output() {
    let tmp = scratch_dir();
    // Drop frames 30..=44 and keep the others' timestamps: a 0.6 s hole in a 25 fps stream.
    let mut output = vec!["-vf", "select='not(between(n,30,44))'", "-fps_mode", "vfr"];
    output.extend(x264("yuv420p"));
    output.extend(["-c:a", "aac", "-ac", "2"]);
    let source = make_fixture(
        tmp.path(),
        "vfr.mp4",
        &[test_picture(640, 360, "25", 4.0), test_tone(48_000, 4.0)],
        &output,
    );
    let video = probe_source(&source).video.expect("video");
    assert_eq!(video.frames, 85, "fixture has 85 of 100 frames");
    assert!(
        video.avg_frame_rate < video.frame_rate - 1.0,
        "fixture must be variable frame rate: avg {} vs r {}",
        video.avg_frame_rate,
        video.frame_rate
    );

    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("240p"));
    // 4 s at a constant 25 fps: the hole is filled, every segment has evenly spaced frames.
    assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["240p"]).frames_encoded(100),
    );
    assert_eq!(uint_of(&result, "frames_decoded"), 85);
}

#[test]
fn source_smaller_than_every_quality_gives_one_rendition_at_source_size() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "small.mp4", 320, 180, 4.0);
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,240p"));
    let hls = assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["180p"]).skipping(&["360p", "240p"]),
    );
    assert_eq!(
        sizes(&hls),
        [(320, 180)],
        "no upscale: one rendition at the source's size"
    );
}

#[test]
fn qualities_taller_than_the_source_are_skipped() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "medium.mp4", 640, 360, 4.0);
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("1080p,720p,360p,144p"));
    let hls = assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["360p", "144p"]).skipping(&["1080p", "720p"]),
    );
    assert_eq!(sizes(&hls), [(640, 360), (256, 144)]);
}

#[test]
fn thumbnail_of_a_1080p_source_is_at_most_1280_wide() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "full_hd.mp4", 1920, 1080, 2.0);
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("144p"));
    let hls = assert_valid_hls(&source, &out, &result, &Expect::ladder(&["144p"]));
    let (w, h) = (
        uint_of(&hls.thumbnail, "width"),
        uint_of(&hls.thumbnail, "height"),
    );
    assert!(w <= 1280, "thumbnail {w}x{h}");
    assert!(
        (w as f64 / h as f64 - 16.0 / 9.0).abs() < 0.02,
        "thumbnail {w}x{h} keeps 16:9"
    );
}

#[test]
fn thumbnail_time_past_the_end_is_clamped_to_the_video() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "short.mp4", 640, 360, 2.0);
    let out = tmp.path().join("hls");
    let opts = [
        "--quality",
        "144p",
        "--segment-seconds",
        "2",
        "--thumbnail-time",
        "00:01:00.500",
    ];
    let result = transcode_ok(&source, &out, &opts);
    // assert_valid_hls checks the thumbnail decodes as one JPEG picture.
    assert_valid_hls(&source, &out, &result, &Expect::ladder(&["144p"]));
}

#[test]
fn frames_decoded_does_not_depend_on_the_number_of_qualities() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 640, 360, 4.0);
    let frames = probe_source(&source).video.expect("video").frames;

    let one = tmp.path().join("one");
    let result_one = transcode_ok(&source, &one, &options("144p"));
    assert_valid_hls(&source, &one, &result_one, &Expect::ladder(&["144p"]));
    let three = tmp.path().join("three");
    let result_three = transcode_ok(&source, &three, &options("360p,240p,144p"));
    assert_valid_hls(
        &source,
        &three,
        &result_three,
        &Expect::ladder(&["360p", "240p", "144p"]),
    );
    assert_eq!(uint_of(&result_one, "frames_decoded"), frames);
    assert_eq!(
        uint_of(&result_three, "frames_decoded"),
        frames,
        "the source is decoded once, however many renditions"
    );
}

/// A job given more than 8 encoder threads (a big host, `--jobs 1`) decodes on libavcodec's
/// frame threads, one per 8 (`media::decoder_threads`), so that one decoder thread does not
/// bound it. The outcome says how the threads were planned, and nothing is lost: every source
/// frame is in every rendition.
#[test]
fn a_job_given_many_threads_decodes_on_frame_threads_and_loses_no_frame() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 640, 360, 4.0);
    let frames = probe_source(&source).video.expect("video").frames;
    let out = tmp.path().join("hls");
    let mut opts = options("360p,240p");
    opts.extend(["--threads", "17"]);
    let result = transcode_ok(&source, &out, &opts);
    let hls = assert_valid_hls(&source, &out, &result, &Expect::ladder(&["360p", "240p"]));
    let plan = &result["threads"];
    assert_eq!(plan["budget"], 17, "{plan}");
    assert_eq!(plan["decoder"], 3, "{plan}");
    assert_eq!(plan["x264"]["360p"], 17, "{plan}");
    assert_eq!(uint_of(&result, "frames_decoded"), frames);
    for r in &hls.renditions {
        let total: u64 = r.segments.iter().map(|s| s.video_frames).sum();
        assert_eq!(total, frames, "{}", r.quality);
    }

    // The default budget, one per core, keeps one decoder thread on a small host.
    let small = tmp.path().join("small");
    let result = transcode_ok(&source, &small, &options("240p"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(result["threads"]["budget"], cores);
    assert_eq!(result["threads"]["decoder"], cores.div_ceil(8));
}

#[test]
fn rerun_into_an_existing_output_replaces_it() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 640, 360, 4.0);
    let out = tmp.path().join("hls");

    let first = transcode_ok(&source, &out, &options("360p,240p"));
    assert_valid_hls(&source, &out, &first, &Expect::ladder(&["360p", "240p"]));

    // A different ladder the second time: nothing of the first output may survive (the
    // directory listing in assert_valid_hls must be exactly the new layout).
    let second = transcode_ok(&source, &out, &options("144p"));
    assert_valid_hls(&source, &out, &second, &Expect::ladder(&["144p"]));
    assert!(!out.join("360p.m3u8").exists(), "old rendition left behind");
    let master = fs::read_to_string(out.join("master.m3u8")).expect("master");
    assert!(
        !master.contains("360p"),
        "master still names the old ladder:\n{master}"
    );

    // Nothing but the fixture and the output remain in the parent: no backup, no staging.
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .expect("read tempdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["hls", "upload.mp4"]);
}

#[test]
fn bt709_source_keeps_its_colour_description_in_every_rendition() {
    let tmp = scratch_dir();
    let mut output = x264("yuv420p");
    output.extend([
        "-colorspace",
        "bt709",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-color_range",
        "tv",
    ]);
    let source = make_fixture(
        tmp.path(),
        "hd.mp4",
        &[test_picture(1280, 720, "25", 2.0)],
        &output,
    );
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("480p,240p"));
    let hls = assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["480p", "240p"]).without_audio(),
    );
    // Without the tags a player assumes BT.601 for SD sizes and shifts the colours.
    for rendition in &hls.renditions {
        for segment in &rendition.segments {
            for key in ["color_space", "color_primaries", "color_transfer"] {
                assert_eq!(
                    segment.video[key], "bt709",
                    "{} {key}: {}",
                    segment.uri, segment.video
                );
            }
            assert_eq!(segment.video["color_range"], "tv", "{}", segment.uri);
        }
    }
}
