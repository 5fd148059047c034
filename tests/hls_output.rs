//! HLS output as Apple's authoring spec and RFC 8216 want it (issue 11, output side): audio as
//! one rendition stored once, I-frame playlists into the existing segments, bit rates as the
//! RFC defines them. Each test makes a short low-resolution source with the `ffmpeg` CLI and
//! checks the whole output with `common::assert_valid_hls` (ffprobe decodes every segment and
//! every I-frame byte range; playlists parsed with m3u8-rs), then what is particular to it.

mod common;

use std::fs;
use std::path::Path;

use common::{
    assert_valid_hls, h264_aac_mp4, make_fixture, scratch_dir, test_picture, test_tone,
    transcode_ok, uint_of, Expect,
};

/// 2 s segments, low qualities: a few seconds per test on 2 cores.
fn options<'a>(quality: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut o = vec![
        "--quality",
        quality,
        "--segment-seconds",
        "2",
        "--thumbnail-time",
        "1",
        "--preset",
        "veryfast",
    ];
    o.extend_from_slice(extra);
    o
}

/// Bytes of every file in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .expect("read output")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum()
}

#[test]
fn audio_is_one_rendition_in_its_own_segments_that_every_variant_names() {
    let tmp = scratch_dir();
    let source = make_fixture(
        tmp.path(),
        "english.mp4",
        &[test_picture(640, 360, "25", 5.0), test_tone(48_000, 5.0)],
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
            "-metadata:s:a:0",
            "language=eng",
        ],
    );
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,240p,144p", &[]));
    // The audio group (EXT-X-MEDIA attributes, audio-only segments on the video's grid, AAC-LC
    // stereo 48 kHz), video-only segments, AUDIO= on every variant, CODECS with mp4a.40.2,
    // BANDWIDTH = video peak + audio peak: all checked there.
    let hls = assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["360p", "240p", "144p"]),
    );
    let audio = hls.audio.expect("audio rendition");
    assert_eq!(audio.media.language.as_deref(), Some("en"), "eng → en");
    assert_eq!(audio.media.name, "English");
    assert_eq!(audio.segments.len(), 3, "5 s on a 2 s grid");
    assert_eq!(result["audio_layout"], "separate");
    // The master, whole: the audio group first, then the variants, then the I-frame variants.
    let master = fs::read_to_string(out.join("master.m3u8")).expect("master");
    let lines: Vec<&str> = master.lines().collect();
    assert!(
        lines[3].starts_with("#EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio.m3u8\",GROUP-ID=\"audio\""),
        "{master}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("AUDIO=\"audio\""))
            .count(),
        3,
        "{master}"
    );
}

#[test]
fn muxed_audio_keeps_todays_layout_and_costs_a_copy_of_the_audio_per_rendition() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 640, 360, 4.0);
    let separate = tmp.path().join("separate");
    let separate_result = transcode_ok(&source, &separate, &options("360p,240p,144p", &[]));
    let hls_separate = assert_valid_hls(
        &source,
        &separate,
        &separate_result,
        &Expect::ladder(&["360p", "240p", "144p"]),
    );
    let audio = hls_separate.audio.expect("audio rendition");
    // No language tag in the fixture (the MP4 muxer writes `und`).
    assert_eq!(audio.media.language.as_deref(), Some("und"));

    let muxed = tmp.path().join("muxed");
    let muxed_result = transcode_ok(
        &source,
        &muxed,
        &options("360p,240p,144p", &["--audio", "muxed"]),
    );
    let hls_muxed = assert_valid_hls(
        &source,
        &muxed,
        &muxed_result,
        &Expect::ladder(&["360p", "240p", "144p"]).muxed_audio(),
    );
    assert!(!muxed.join("audio.m3u8").exists());
    assert_eq!(muxed_result["audio_layout"], "muxed");

    // The audio rendition holds the very AAC packets each muxed rendition carries a copy of.
    let once: Vec<String> = audio
        .segments
        .iter()
        .flat_map(|s| s.packets.iter().map(|p| p.2.clone()))
        .collect();
    for r in &hls_muxed.renditions {
        let copy: Vec<String> = r
            .segments
            .iter()
            .flat_map(|s| s.audio_packets.iter().map(|p| p.2.clone()))
            .collect();
        assert_eq!(copy, once, "{}: the same AAC packets (CRC32)", r.quality);
    }
    // Stored once instead of three times: the separate layout is smaller by about two copies.
    let audio_bytes: u64 = audio.segments.iter().map(|s| s.bytes).sum();
    let (a, b) = (dir_bytes(&separate), dir_bytes(&muxed));
    assert!(
        a + audio_bytes < b,
        "separate {a} B + one audio copy {audio_bytes} B must stay under muxed {b} B"
    );
}

#[test]
fn every_rendition_has_an_iframe_playlist_of_byte_ranges_into_its_segments() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 640, 360, 5.0);
    let out = tmp.path().join("hls");
    // Keyframes every second on 2 s segments: half of them in the middle of a segment.
    let result = transcode_ok(
        &source,
        &out,
        &options("360p,144p", &["--gop-seconds", "1"]),
    );
    // Every entry: whole TS packets of the video PID from its PES start to its end, decoded
    // by ffprobe (with the segment's PAT/PMT) to one IDR; BANDWIDTH per RFC 8216.
    let hls = assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["360p", "144p"]).gop_seconds(1.0),
    );
    for (r, json) in hls
        .renditions
        .iter()
        .zip(result["renditions"].as_array().expect("renditions"))
    {
        let q = &r.quality;
        let files: Vec<&str> = r.iframes.segments.iter().map(|s| s.uri.as_str()).collect();
        let expected: Vec<String> = [0, 0, 1, 1, 2]
            .iter()
            .map(|n| format!("{q}_{n:03}.ts"))
            .collect();
        assert_eq!(
            files, expected,
            "{q}: 5 s, a keyframe a second, two per segment"
        );
        for pair in r.iframes.segments.windows(2) {
            let (a, b) = (
                pair[0].byte_range.clone().expect("range"),
                pair[1].byte_range.clone().expect("range"),
            );
            if pair[0].uri == pair[1].uri {
                assert!(
                    a.offset.expect("offset") + a.length <= b.offset.expect("offset"),
                    "{q}: keyframes of one segment in order, not overlapping"
                );
            }
        }
        // A segment's first keyframe comes right after its headers (SDT, PAT, PMT).
        let first = r.iframes.segments[0].byte_range.clone().expect("range");
        let offset = first.offset.expect("offset");
        assert!(
            offset > 0 && offset <= 4 * 188,
            "{q}: first keyframe at {offset}, after the headers only"
        );
        let iframes = &json["iframes"];
        assert_eq!(uint_of(iframes, "keyframes"), 5, "{q}");
        assert!(uint_of(iframes, "bandwidth") >= uint_of(iframes, "average_bandwidth"));
    }
}

#[test]
fn video_only_source_has_no_audio_group_and_still_iframe_playlists() {
    let tmp = scratch_dir();
    let source = common::h264_mp4(tmp.path(), "silent.mp4", 640, 360, 3.0);
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("240p", &[]));
    let hls = assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["240p"]).without_audio(),
    );
    assert!(hls.master.alternatives.is_empty());
    assert!(hls.audio.is_none());
    assert!(!out.join("audio.m3u8").exists());
}

/// A source whose audio ends 0.6 s before its video (common in uploads cut without
/// re-encoding): the audio rendition is padded with silence to the video's end, so both
/// playlists last as long (Apple's rule 8.3, which the publish hook enforces).
#[test]
fn audio_that_ends_before_the_video_is_padded_to_the_videos_end() {
    let tmp = scratch_dir();
    let source = tmp.path().join("short_audio.mp4");
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25:duration=3",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000:duration=2.4",
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        source.to_str().unwrap(),
    ]);
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("240p", &[]));
    let length = |playlist: &str| -> f64 {
        let text = fs::read(out.join(playlist)).expect("playlist");
        m3u8_rs::parse_media_playlist_res(&text)
            .expect("media playlist")
            .segments
            .iter()
            .map(|s| f64::from(s.duration))
            .sum()
    };
    let (video, audio) = (length("240p.m3u8"), length("audio.m3u8"));
    assert!(
        (video - audio).abs() <= 1024.0 / 48_000.0 + 0.001,
        "video {video:.3} s, audio {audio:.3} s: {result}"
    );
}

/// The 50 fps progressive picture the interlaced fixture is woven from: testsrc2 (colour bars,
/// digits, sharp edges) scrolled by 1.2 % of its width and 0.8 % of its height a picture, so
/// that every edge moves ~8 px across and ~3 px down between two fields and a woven frame
/// combs on every edge; a 1-pixel Gaussian blur removes the line-to-line detail that `idet`
/// would take for combing in the progressive picture (measured: idet calls all of its frames
/// progressive, and every woven frame TFF).
const MOVING_PICTURE: &str = "testsrc2=s=640x360:r=50:d=4,scroll=h=0.012:v=0.008,gblur=sigma=1";

/// A 25 fps interlaced (top field first) H.264 + AAC MPEG-TS source, interlaced-coded
/// (`+ildct+ilme`, field order `tt` in the stream): each frame weaves two pictures of
/// [`MOVING_PICTURE`] taken 1/50 s apart.
fn interlaced_source(dir: &Path) -> std::path::PathBuf {
    make_fixture(
        dir,
        "interlaced.ts",
        &[
            vec![
                "-f".into(),
                "lavfi".into(),
                "-i".into(),
                MOVING_PICTURE.into(),
            ],
            test_tone(48_000, 4.0),
        ],
        &[
            "-t",
            "4",
            "-vf",
            "tinterlace=interleave_top,fieldorder=tff",
            "-flags",
            "+ilme+ildct",
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
        ],
    )
}

/// Runs the ffmpeg CLI (the independent checker) with `args` at log level info and returns
/// the line of its log that holds `summary` (a filter's report at the end).
fn ffmpeg_summary(args: &[&std::ffi::OsStr], summary: &str) -> String {
    let output = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "info"])
        .args(args)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg (Debian package `ffmpeg`)");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ffmpeg {args:?}: {log}");
    log.lines()
        .find(|l| l.contains(summary))
        .unwrap_or_else(|| panic!("no {summary:?} in the log of ffmpeg {args:?}: {log}"))
        .to_owned()
}

/// The number after `key` in a filter's summary line.
fn value_after(line: &str, key: &str) -> f64 {
    let at = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
    line[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} value in {line}"))
}

/// The `idet` filter's multi-frame verdict on `input` (a file or a playlist): (TFF, BFF,
/// progressive) frame counts.
fn idet(input: &Path) -> (u64, u64, u64) {
    idet_of(&["-i".as_ref(), input.as_os_str()])
}

/// [`idet`] of the video an ffmpeg input (its arguments) gives.
fn idet_of(input: &[&std::ffi::OsStr]) -> (u64, u64, u64) {
    let mut args = input.to_vec();
    args.extend::<[&std::ffi::OsStr; 4]>([
        "-map".as_ref(),
        "0:v:0".as_ref(),
        "-vf".as_ref(),
        "idet".as_ref(),
    ]);
    let line = ffmpeg_summary(&args, "Multi frame detection:");
    let count = |key: &str| value_after(&line, key) as u64;
    (count("TFF:"), count("BFF:"), count("Progressive:"))
}

/// The fixture is one that idet judges right: the progressive picture it is woven from reads
/// as progressive (so a progressive rendition can read as progressive), and the woven frames
/// read as interlaced, top field first (so combing in a rendition would be seen). Its
/// stream says `tt`, and its frames are flagged interlaced.
fn assert_idet_judges_the_fixture(source: &Path) {
    let (tff, bff, progressive) = idet_of(&[
        "-f".as_ref(),
        "lavfi".as_ref(),
        "-i".as_ref(),
        MOVING_PICTURE.as_ref(),
    ]);
    assert_eq!(
        (tff, bff),
        (0, 0),
        "idet on the progressive picture ({progressive} progressive)"
    );
    let (tff, bff, progressive) = idet(source);
    assert!(
        tff >= 9 * (tff + bff + progressive) / 10,
        "idet must see the woven frames as TFF: {tff} TFF, {bff} BFF, {progressive} progressive"
    );
    assert_eq!(
        field_order_and_flagged_frames(source),
        ("tt".to_owned(), true),
        "the fixture's field order, and its first frames all flagged interlaced"
    );
}

/// ffprobe's `field_order` of `source`'s video stream, and whether its first 5 frames are all
/// flagged interlaced.
fn field_order_and_flagged_frames(source: &Path) -> (String, bool) {
    let probe = common::ffprobe(
        source,
        &[
            "-select_streams",
            "v:0",
            "-show_streams",
            "-show_frames",
            "-read_intervals",
            "%+#5",
        ],
    );
    let frames = probe["frames"].as_array().expect("ffprobe's frames");
    (
        common::str_of(&probe["streams"][0], "field_order"),
        !frames.is_empty() && frames.iter().all(|f| f["interlaced_frame"] == 1),
    )
}

#[test]
fn interlaced_source_gives_progressive_output_at_the_field_rate_up_to_720p() {
    let tmp = scratch_dir();
    let source = interlaced_source(tmp.path());
    assert_idet_judges_the_fixture(&source);

    let out = tmp.path().join("hls");
    // One encoder thread: libx264's frame threads with VBV do not give the same bits twice,
    // and idet judges the coded pictures.
    let result = transcode_ok(&source, &out, &options("360p,144p", &["--threads", "1"]));
    // 4 s of 25 interlaced frames a second: 200 progressive frames at 50 fps, one per field.
    assert_valid_hls(
        &source,
        &out,
        &result,
        &Expect::ladder(&["360p", "144p"])
            .output_rate(50.0)
            .frames_encoded(200),
    );
    for r in result["renditions"].as_array().expect("renditions") {
        assert_deinterlaced_as_the_cli(&out, r, &source, EVERY_FIELD, EVERY_FIELD_BOTTOM_FIRST);
    }
}

#[test]
fn interlaced_source_above_the_field_rate_limit_gives_one_frame_per_source_frame() {
    let tmp = scratch_dir();
    let source = interlaced_source(tmp.path());
    let out = tmp.path().join("hls");
    // 360p is above a 200-line limit: 25p; 144p keeps the field rate: 50p. Same grid.
    let result = transcode_ok(
        &source,
        &out,
        &options(
            "360p,144p",
            &["--field-rate-up-to", "200", "--threads", "1"],
        ),
    );
    let rates: Vec<f64> = result["renditions"]
        .as_array()
        .expect("renditions")
        .iter()
        .map(|r| common::num_of(r, "frame_rate"))
        .collect();
    assert_eq!(rates, [25.0, 50.0]);
    let master =
        m3u8_rs::parse_master_playlist_res(&fs::read(out.join("master.m3u8")).expect("master"))
            .expect("master parses");
    let listed: Vec<Option<f64>> = master
        .variants
        .iter()
        .filter(|v| !v.is_i_frame)
        .map(|v| v.frame_rate)
        .collect();
    assert_eq!(listed, [Some(25.0), Some(50.0)]);
    for (q, frames) in [("360p", 50u64), ("144p", 100)] {
        for n in 0..2 {
            let segment = common::probe_segment(&out.join(format!("{q}_{n:03}.ts")));
            assert_eq!(segment.video_frames, frames, "{q} segment {n}: 2 s");
            assert!(
                segment.first_frame_key,
                "{q} segment {n} starts with an IDR"
            );
        }
    }
}

/// Apart from the encoder's losses, a rendition of an interlaced source must be the ffmpeg
/// CLI's own deinterlacing of it (bwdif, one frame per field, top field first; every other
/// frame, the first field's, for a rendition at the frame rate), scaled as the worker scales:
/// measured on the fixture with `--threads 1`, 360p at 25p is 45.0 dB from that reference
/// while the woven frames are 22.7 dB from it and the second fields' pictures 19.9 dB; 144p at
/// 50p is 35.9 dB from it, the woven frames (each shown twice) 25.9 dB and the bottom-first
/// reading 20.1 dB. A rendition nearer its reference than the nearest wrong reading by this
/// much (a quarter of the squared error) is the right one.
const NEARER_BY_DB: f64 = 6.0;

#[test]
fn interlaced_source_above_the_field_rate_limit_has_no_combing_in_either_rendition() {
    let tmp = scratch_dir();
    let source = interlaced_source(tmp.path());
    assert_idet_judges_the_fixture(&source);
    let out = tmp.path().join("hls");
    // 360p is above a 200-line limit: 25p, every other field's picture; 144p keeps the field
    // rate: 50p.
    let result = transcode_ok(
        &source,
        &out,
        &options(
            "360p,144p",
            &["--field-rate-up-to", "200", "--threads", "1"],
        ),
    );
    let renditions = result["renditions"].as_array().expect("renditions");
    assert_eq!(renditions.len(), 2, "{result}");
    for r in renditions {
        let (reference, wrong) = match common::num_of(r, "frame_rate") {
            25.0 => (FIRST_FIELDS, SECOND_FIELDS),
            50.0 => (EVERY_FIELD, EVERY_FIELD_BOTTOM_FIRST),
            rate => panic!("{r}: {rate} fps is neither the field rate nor the frame rate"),
        };
        assert_deinterlaced_as_the_cli(&out, r, &source, reference, wrong);
    }
}

/// The CLI's bwdif readings of the top-field-first fixture: one picture per field,
const EVERY_FIELD: &str = "bwdif=mode=send_field:parity=tff:deint=all";
/// the first field's of each frame (what `mode=send_frame` gives),
const FIRST_FIELDS: &str = "bwdif=mode=send_field:parity=tff:deint=all,select=not(mod(n\\,2))";
/// and the wrong readings: the second field's of each frame, and the fields in the wrong order.
const SECOND_FIELDS: &str = "bwdif=mode=send_field:parity=tff:deint=all,select=mod(n\\,2)";
const EVERY_FIELD_BOTTOM_FIRST: &str = "bwdif=mode=send_field:parity=bff:deint=all";

/// The rendition `r` (an entry of the result's `renditions`) in `out` is progressive to idet
/// (every frame) and is the CLI's `reference` reading of `source` (a filter chain, scaled as
/// the worker scales) by [`NEARER_BY_DB`] more than the woven frames or the `wrong` reading.
fn assert_deinterlaced_as_the_cli(
    out: &Path,
    r: &serde_json::Value,
    source: &Path,
    reference: &str,
    wrong: &str,
) {
    let q = common::str_of(r, "quality");
    let rate = common::num_of(r, "frame_rate");
    let rendition = out.join(format!("{q}.m3u8"));
    let (tff, bff, progressive) = idet(&rendition);
    assert_eq!(
        (tff, bff, progressive),
        (0, 0, uint_of(r, "frames")),
        "{q} ({rate} fps): idet's TFF, BFF and progressive frames"
    );
    let scale = format!(
        "scale={}:{}:flags=bicubic",
        uint_of(r, "width"),
        uint_of(r, "height")
    );
    let scaled = |chain: &str| format!("{chain},{scale}");
    let ours = psnr_between(&rendition, "null", source, &scaled(reference)).1;
    let woven = psnr_between(
        source,
        &format!("{scale},fps={rate}"),
        source,
        &scaled(reference),
    )
    .1;
    let other = psnr_between(&rendition, "null", source, &scaled(wrong)).1;
    assert!(
        ours >= woven.max(other) + NEARER_BY_DB,
        "{q} ({rate} fps): {ours:.1} dB from the CLI's {reference}, the woven frames {woven:.1} dB \
         from it, ours {other:.1} dB from {wrong}"
    );
}

#[test]
fn frames_flagged_interlaced_in_a_stream_that_says_progressive_are_deinterlaced() {
    let tmp = scratch_dir();
    let woven = interlaced_source(tmp.path());
    // The same interlaced-coded H.264, in Matroska with FieldOrder = progressive: the stream
    // says progressive, each decoded frame is flagged interlaced.
    let source = tmp.path().join("says-progressive.mkv");
    common::ffmpeg(&[
        "-i".as_ref(),
        woven.as_os_str(),
        "-map".as_ref(),
        "0".as_ref(),
        "-c".as_ref(),
        "copy".as_ref(),
        "-field_order".as_ref(),
        "progressive".as_ref(),
        source.as_os_str(),
    ]);
    assert_eq!(
        field_order_and_flagged_frames(&source),
        ("progressive".to_owned(), true),
        "the stream's field order, and its first frames all flagged interlaced"
    );

    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,144p", &["--threads", "1"]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("manifest parses");
    assert_eq!(
        manifest["source"]["video"]["interlaced"], false,
        "the probe believed the stream"
    );
    // Found while decoding, after the renditions' rates were set: the frame rate in every
    // rendition (the stream's own `tt` would have given 50p up to 720p).
    let renditions = result["renditions"].as_array().expect("renditions");
    assert_eq!(renditions.len(), 2, "{result}");
    for r in renditions {
        assert_eq!(common::num_of(r, "frame_rate"), 25.0, "{r}");
        assert_deinterlaced_as_the_cli(&out, r, &source, FIRST_FIELDS, SECOND_FIELDS);
    }
}

/// The ffmpeg CLI's `psnr` filter between `first` through the filter chain `first_chain` and
/// `second` through `second_chain`, timestamps from zero: (y, average) in dB.
fn psnr_between(first: &Path, first_chain: &str, second: &Path, second_chain: &str) -> (f64, f64) {
    let graph = format!(
        "[0:v]{first_chain},setpts=PTS-STARTPTS[first];\
         [1:v]{second_chain},setpts=PTS-STARTPTS[second];\
         [first][second]psnr"
    );
    let args: [&std::ffi::OsStr; 6] = [
        "-i".as_ref(),
        first.as_os_str(),
        "-i".as_ref(),
        second.as_os_str(),
        "-lavfi".as_ref(),
        graph.as_ref(),
    ];
    let line = ffmpeg_summary(&args, "PSNR y:");
    (value_after(&line, "y:"), value_after(&line, "average:"))
}

/// The ffmpeg CLI's `psnr` filter between a rendition and the source scaled the way the
/// worker scales it (bicubic, 8-bit 4:2:0): (y, average) in dB.
fn cli_psnr(rendition: &Path, source: &Path, width: u64, height: u64) -> (f64, f64) {
    psnr_between(
        rendition,
        "null",
        source,
        &format!("scale={width}:{height}:flags=bicubic,format=yuv420p"),
    )
}

#[test]
fn measure_quality_reports_each_renditions_psnr_as_the_psnr_filter_measures_it() {
    let tmp = scratch_dir();
    let source = common::h264_mp4(tmp.path(), "upload.mp4", 640, 360, 2.0);
    let out = tmp.path().join("hls");
    let result = transcode_ok(&source, &out, &options("360p,144p", &["--measure-quality"]));
    for r in result["renditions"].as_array().expect("renditions") {
        let q = common::str_of(r, "quality");
        let psnr = &r["psnr"];
        assert_eq!(
            uint_of(psnr, "frames"),
            50,
            "{q}: every frame measured: {r}"
        );
        let (y, average) = (common::num_of(psnr, "y"), common::num_of(psnr, "average"));
        assert!((20.0..99.0).contains(&y), "{q}: PSNR Y {y}");
        let (cli_y, cli_average) = cli_psnr(
            &out.join(format!("{q}.m3u8")),
            &source,
            uint_of(r, "width"),
            uint_of(r, "height"),
        );
        assert!(
            (y - cli_y).abs() < 0.3 && (average - cli_average).abs() < 0.3,
            "{q}: ours Y {y:.2} / avg {average:.2} dB vs the psnr filter's {cli_y:.2} / \
             {cli_average:.2} dB"
        );
    }
    // Without the option, no figure (and no cost).
    let plain = tmp.path().join("plain");
    let result = transcode_ok(&source, &plain, &options("144p", &[]));
    assert!(result["renditions"][0].get("psnr").is_none(), "{result}");
}

/// ffprobe's times are strings ("1.400000").
fn seconds(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {v}"))
}

/// The init segment followed by `parts` of media (whole segments or byte ranges), as one file
/// an MP4 demuxer can read.
fn with_init(dir: &Path, name: &str, init: &[u8], parts: &[&[u8]]) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut bytes = init.to_vec();
    for p in parts {
        bytes.extend_from_slice(p);
    }
    fs::write(&path, bytes).expect("write");
    path
}

/// The first video frame ffprobe decodes from `path` (it may be a keyframe's byte range whose
/// `mdat` header announces the rest of its fragment: only the first packet is read).
fn first_video_frame(path: &Path) -> serde_json::Value {
    let output = std::process::Command::new("ffprobe")
        .args([
            "-hide_banner",
            "-v",
            "error",
            "-of",
            "json",
            "-select_streams",
            "v:0",
        ])
        .args(["-read_intervals", "%+#1", "-show_frames"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(output.status.success(), "ffprobe {}", path.display());
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    v["frames"][0].clone()
}

#[test]
fn fmp4_segments_have_an_init_segment_the_same_grid_and_iframes_with_their_moof() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 640, 360, 5.0);
    let out = tmp.path().join("hls");
    let result = transcode_ok(
        &source,
        &out,
        &options("360p,144p", &["--segments", "fmp4"]),
    );
    assert_eq!(result["segment_format"], "fmp4");
    let mut names: Vec<String> = fs::read_dir(&out)
        .expect("output")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = ["master.m3u8", "thumbnail.jpg", "manifest.json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for r in ["360p", "144p", "audio"] {
        expected.push(format!("{r}.m3u8"));
        expected.push(format!("{r}_init.mp4"));
        expected.extend((0..3).map(|n| format!("{r}_{n:03}.m4s")));
        if r != "audio" {
            expected.push(format!("{r}_iframes.m3u8"));
        }
    }
    expected.sort();
    assert_eq!(names, expected, "the fMP4 layout");

    let scratch = tempfile::tempdir().expect("scratch");
    let media = |name: &str| {
        let bytes = fs::read(out.join(name)).expect("playlist");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(
            text.contains("#EXT-X-VERSION:6\n"),
            "{name}: EXT-X-MAP needs 6:\n{text}"
        );
        let list = m3u8_rs::parse_media_playlist_res(&bytes).expect("parses");
        let map = list.segments[0].map.clone().expect("EXT-X-MAP");
        (
            list,
            fs::read(out.join(&map.uri)).expect("init segment"),
            map.uri,
        )
    };
    let mut starts = Vec::new();
    for q in ["360p", "144p"] {
        let (list, init, map) = media(&format!("{q}.m3u8"));
        assert_eq!(map, format!("{q}_init.mp4"));
        let frames: Vec<u64> = list
            .segments
            .iter()
            .map(|s| {
                let seg = fs::read(out.join(&s.uri)).expect("segment");
                assert_eq!(
                    &seg[4..8],
                    b"moof",
                    "{}: starts with its first fragment",
                    s.uri
                );
                let alone = with_init(scratch.path(), &format!("{}.mp4", s.uri), &init, &[&seg]);
                let first = first_video_frame(&alone);
                assert!(
                    first["key_frame"] == 1 && first["pict_type"] == "I",
                    "{}: starts with an IDR: {first}",
                    s.uri
                );
                let probe = common::ffprobe(&alone, &["-count_frames", "-show_streams"]);
                let v = &probe["streams"][0];
                assert_eq!(v["codec_name"], "h264");
                assert_eq!(v["profile"], "High");
                v["nb_read_frames"]
                    .as_str()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            })
            .collect();
        assert_eq!(frames, [50, 50, 25], "{q}: the 2 s grid");
        let durations: Vec<f32> = list.segments.iter().map(|s| s.duration).collect();
        assert_eq!(durations, [2.0, 2.0, 1.0], "{q}");
        let whole: Vec<Vec<u8>> = list
            .segments
            .iter()
            .map(|s| fs::read(out.join(&s.uri)).expect("segment"))
            .collect();
        let parts: Vec<&[u8]> = whole.iter().map(Vec::as_slice).collect();
        let joined = with_init(scratch.path(), &format!("{q}_all.mp4"), &init, &parts);
        let probe = common::ffprobe(&joined, &["-show_streams"]);
        starts.push(seconds(&probe["streams"][0], "start_time"));

        // I-frames: each range is the fragment's moof, its mdat header and the keyframe.
        let (iframes, iinit, imap) = media(&format!("{q}_iframes.m3u8"));
        assert_eq!(
            imap, map,
            "{q}: the I-frames use the rendition's init segment"
        );
        assert!(iframes.i_frames_only);
        assert_eq!(iframes.segments.len(), 3, "{q}: a keyframe every 2 s");
        for (n, entry) in iframes.segments.iter().enumerate() {
            let range = entry.byte_range.clone().expect("EXT-X-BYTERANGE");
            let offset = range.offset.expect("offset") as usize;
            let seg = fs::read(out.join(&entry.uri)).expect("segment");
            let slice = &seg[offset..offset + range.length as usize];
            assert_eq!(&slice[4..8], b"moof", "{q} I-frame {n}: starts at its moof");
            let alone = with_init(scratch.path(), &format!("{q}_i{n}.mp4"), &iinit, &[slice]);
            let frame = first_video_frame(&alone);
            assert!(
                frame["key_frame"] == 1 && frame["pict_type"] == "I",
                "{q} I-frame {n}: {frame}"
            );
            // Not the whole fragment: only the keyframe's bytes after the headers.
            let fragment_end = seg.len();
            assert!(
                offset + (range.length as usize) < fragment_end,
                "{q} I-frame {n}"
            );
        }
    }

    let (audio, init, map) = media("audio.m3u8");
    assert_eq!(map, "audio_init.mp4");
    assert_eq!(audio.segments.len(), 3, "audio on the video's grid");
    let whole: Vec<Vec<u8>> = audio
        .segments
        .iter()
        .map(|s| fs::read(out.join(&s.uri)).expect("segment"))
        .collect();
    let parts: Vec<&[u8]> = whole.iter().map(Vec::as_slice).collect();
    let joined = with_init(scratch.path(), "audio_all.mp4", &init, &parts);
    let probe = common::ffprobe(&joined, &["-count_frames", "-show_streams"]);
    let a = &probe["streams"][0];
    assert_eq!(a["codec_name"], "aac");
    assert_eq!(a["profile"], "LC");
    assert_eq!(a["channels"], 2);
    assert_eq!(a["sample_rate"], "48000");
    let audio_start = seconds(a, "start_time");
    // ffprobe counts an MP4 stream's duration from 0, and the fragments' decode times start
    // at the 1.4 s shift.
    common::assert_close(
        seconds(a, "duration") - audio_start,
        5.0,
        0.05,
        "audio duration",
    );
    // One clock: video and audio start together (AAC priming: one frame early at most).
    for start in starts {
        assert!(
            (start - audio_start).abs() <= 0.04 + 1024.0 / 48_000.0,
            "video starts at {start}, audio at {audio_start}"
        );
    }
}
