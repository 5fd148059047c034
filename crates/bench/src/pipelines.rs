//! The command lines the bench runs: the synthetic source, the three pipelines, the floor
//! and the quality measurement. Pure functions of the bench's settings, so the exact
//! commands are testable and written into report.json.
//!
//! The baselines and the measurements use the `ffmpeg` CLI; our own pipeline runs as
//! `video-worker transcode` and never calls it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The kinds of pipeline, in the order they run within each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pipeline {
    /// The CLI worker as the platform ran it: one `ffmpeg` per quality, one after another.
    SeedCli,
    /// The best a CLI user can do: one `ffmpeg`, one decode, `split` + `scale` per quality.
    FfmpegSingle,
    /// Ours: `video-worker transcode` as a child process.
    InProcess,
}

impl Pipeline {
    pub fn label(self) -> &'static str {
        match self {
            Pipeline::SeedCli => "seed-cli",
            Pipeline::FfmpegSingle => "ffmpeg-single",
            Pipeline::InProcess => "in-process",
        }
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How a single-command peer is threaded. Both run, and the faster is that FFmpeg's peer: a
/// baseline is compared at its best, not at settings nobody running ffmpeg would pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Threading {
    /// No `-threads` anywhere: ffmpeg's and x264's own choices, what a CLI user gets.
    Default,
    /// Our plan spelled out: decoder frame threads and our per-rendition x264 thread split.
    Tuned,
}

impl Threading {
    pub const ALL: [Threading; 2] = [Threading::Default, Threading::Tuned];

    pub fn label(self) -> &'static str {
        match self {
            Threading::Default => "default",
            Threading::Tuned => "tuned",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Threading::Default => "ffmpeg's default threading",
            Threading::Tuned => "our thread split",
        }
    }
}

/// An `ffmpeg` CLI the bench runs, with the tag that names it in labels and file names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ffmpeg {
    pub path: PathBuf,
    /// As `ffmpeg -version` says: `5.1.9-0+deb12u1`, `7.0.2-static`.
    pub version: String,
    /// `ffmpeg5.1`: major.minor, made unique among the bench's FFmpegs.
    pub tag: String,
}

impl Ffmpeg {
    /// `ffmpeg5.1` from `5.1.9-0+deb12u1`, `ffmpeg7.0` from `7.0.2-static`, `ffmpeg` when the
    /// version does not start with a number (a git build: `N-112345-g…`).
    pub fn tag_of(version: &str) -> String {
        let numbers: Vec<&str> = version
            .split(['.', '-'])
            .take(2)
            .take_while(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        match numbers.as_slice() {
            [] => "ffmpeg".into(),
            parts => format!("ffmpeg{}", parts.join(".")),
        }
    }
}

/// One competitor of a round: a pipeline, the ffmpeg it runs (the CLI ones), and for a single
/// command its threading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contender {
    /// `seed-cli`, `ffmpeg7.0-single-default`, `in-process`: its name in tables, logs and
    /// output directories.
    pub label: String,
    pub pipeline: Pipeline,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ffmpeg: Option<Ffmpeg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threading: Option<Threading>,
}

impl Contender {
    pub fn seed_cli(ffmpeg: &Ffmpeg) -> Contender {
        Contender {
            label: Pipeline::SeedCli.label().into(),
            pipeline: Pipeline::SeedCli,
            ffmpeg: Some(ffmpeg.clone()),
            threading: None,
        }
    }

    pub fn single(ffmpeg: &Ffmpeg, threading: Threading) -> Contender {
        Contender {
            label: format!("{}-single-{}", ffmpeg.tag, threading.label()),
            pipeline: Pipeline::FfmpegSingle,
            ffmpeg: Some(ffmpeg.clone()),
            threading: Some(threading),
        }
    }

    pub fn in_process() -> Contender {
        Contender {
            label: Pipeline::InProcess.label().into(),
            pipeline: Pipeline::InProcess,
            ffmpeg: None,
            threading: None,
        }
    }

    /// Seed-cli with the first ffmpeg (the platform's), then each ffmpeg's single command in
    /// both threadings, then ours.
    pub fn round(ffmpegs: &[Ffmpeg]) -> Vec<Contender> {
        let mut all = Vec::new();
        if let Some(first) = ffmpegs.first() {
            all.push(Contender::seed_cli(first));
        }
        for f in ffmpegs {
            for t in Threading::ALL {
                all.push(Contender::single(f, t));
            }
        }
        all.push(Contender::in_process());
        all
    }
}

/// One rendition of the ladder as every pipeline must produce it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rung {
    pub name: String,
    /// Size our ladder gives it (ffmpeg-single and the floor scale to exactly this).
    pub width: u32,
    pub height: u32,
    /// Target video bit/s.
    pub bitrate: u64,
    /// `scale=-2:H` of the seed worker: the quality's number, whatever the orientation.
    pub seed_height: u32,
    /// libx264 threads, as `media::split_threads` gives our pipeline.
    pub threads: usize,
}

/// Everything the command lines depend on.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// The first `--ffmpeg`: seed-cli, the floor, the quality measurements, the clips.
    pub ffmpeg: PathBuf,
    pub source: PathBuf,
    pub rungs: Vec<Rung>,
    pub preset: String,
    /// Output frame rate as num/den.
    pub fps: (i32, i32),
    pub gop_frames: u64,
    pub segment_frames: u64,
    pub segment_seconds: f64,
    pub gop_seconds: f64,
    /// Decoder threads of the tuned single command and the floor's decode (frame threading).
    pub decoder_threads: usize,
    pub has_audio: bool,
    pub audio_bitrate: u64,
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

/// `ffmpeg` options every run starts with: no banner, no stdin, no periodic stats, overwrite.
fn ffmpeg_prelude() -> Vec<String> {
    ["-hide_banner", "-nostdin", "-nostats", "-y"]
        .map(s)
        .to_vec()
}

/// A synthetic source: `testsrc2` at `height` (16:9), `seconds` long, 25 fps, with a stereo
/// sine, H.264 `-preset fast` at a high bitrate (about 0.3 bit per pixel) and AAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Synthetic {
    pub height: u32,
    pub seconds: u32,
}

impl Synthetic {
    pub const FPS: u32 = 25;

    /// Parses `1080p:10` (the `p` is optional).
    pub fn parse(spec: &str) -> Result<Synthetic, String> {
        let bad = || format!("--synthetic {spec:?}: expected HEIGHTp:SECONDS, e.g. 1080p:10");
        let (h, secs) = spec.split_once(':').ok_or_else(bad)?;
        let h = h.trim().trim_end_matches(['p', 'P']);
        let height: u32 = h.parse().map_err(|_| bad())?;
        let seconds: u32 = secs.trim().parse().map_err(|_| bad())?;
        if !(16..=4320).contains(&height) || !(1..=3600).contains(&seconds) {
            return Err(format!(
                "--synthetic {spec:?}: height must be 16–4320 and seconds 1–3600"
            ));
        }
        Ok(Synthetic { height, seconds })
    }

    /// 16:9, rounded to an even width as our ladder rounds.
    pub fn width(&self) -> u32 {
        video_worker::ladder::even(self.height as f64 * 16.0 / 9.0)
    }

    pub fn file_name(&self) -> String {
        format!("synthetic-{}p-{}s.mp4", self.height, self.seconds)
    }

    pub fn video_bitrate(&self) -> u64 {
        (self.width() as u64 * self.height as u64 * Self::FPS as u64) * 3 / 10
    }

    /// Writes to `out` (an `.mp4` whatever its name says, so a partial file can be renamed).
    pub fn args(&self, out: &Path) -> Vec<String> {
        let mut a = ffmpeg_prelude();
        a.extend([
            s("-f"),
            s("lavfi"),
            s("-i"),
            format!(
                "testsrc2=size={}x{}:rate={}:duration={}",
                self.width(),
                self.height,
                Self::FPS,
                self.seconds
            ),
            s("-f"),
            s("lavfi"),
            s("-i"),
            format!(
                "sine=frequency=440:sample_rate=48000:duration={}",
                self.seconds
            ),
            s("-c:v"),
            s("libx264"),
            s("-preset"),
            s("fast"),
            s("-b:v"),
            s(self.video_bitrate()),
            s("-pix_fmt"),
            s("yuv420p"),
            s("-c:a"),
            s("aac"),
            s("-b:a"),
            s("192k"),
            s("-ac"),
            s("2"),
            s("-shortest"),
            s("-f"),
            s("mp4"),
            path(out),
        ]);
        a
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn kbps(bits: u64) -> String {
    format!("{}k", bits / 1000)
}

/// The seed worker's command for one quality, exactly as the platform ran it (x264 defaults:
/// preset medium, scene-cut keyframes, 10 s segments). A preset other than medium is passed
/// on, so that `--preset veryfast` compares like with like.
pub fn seed_cli_args(setup: &Setup, rung: &Rung, dir: &Path) -> Vec<String> {
    let mut a = ffmpeg_prelude();
    a.extend([
        s("-i"),
        path(&setup.source),
        s("-vf"),
        format!("scale=-2:{}", rung.seed_height),
        s("-c:v"),
        s("libx264"),
    ]);
    if setup.preset != "medium" {
        a.extend([s("-preset"), setup.preset.clone()]);
    }
    a.extend([
        s("-b:v"),
        kbps(rung.bitrate),
        s("-c:a"),
        s("aac"),
        s("-b:a"),
        kbps(setup.audio_bitrate),
        s("-hls_time"),
        s("10"),
        s("-hls_playlist_type"),
        s("vod"),
        s("-hls_segment_filename"),
        path(&dir.join(format!("{}_%03d.ts", rung.name))),
        path(&dir.join(format!("{}.m3u8", rung.name))),
    ]);
    a
}

/// Keyframes exactly where our pipeline forces them: every GOP and every segment start,
/// counted in frames (a time expression drifts off the grid at 29.97 fps).
fn force_key_frames(setup: &Setup) -> String {
    let g = setup.gop_frames.max(1);
    let seg = setup.segment_frames.max(1);
    if seg % g == 0 {
        format!("expr:eq(mod(n,{g}),0)")
    } else {
        format!("expr:eq(mod(n,{g}),0)+eq(mod(n,{seg}),0)")
    }
}

/// libx264 settings of our pipeline (`media::rendition::open_encoder`) as CLI options, with
/// `threads` x264 threads (`None`: x264's own choice); `spec` is the stream specifier suffix:
/// `:v:1` for one of several streams, `:v` for one.
fn x264_args(setup: &Setup, rung: &Rung, threads: Option<usize>, spec: &str) -> Vec<String> {
    let mut a = vec![
        format!("-b{spec}"),
        s(rung.bitrate),
        format!("-maxrate{spec}"),
        s(rung.bitrate * 11 / 10),
        format!("-bufsize{spec}"),
        s(rung.bitrate * 2),
    ];
    if let Some(threads) = threads {
        a.extend([format!("-threads{spec}"), s(threads)]);
    }
    a.extend([format!("-g{spec}"), s(setup.gop_frames)]);
    a
}

/// Options shared by every x264 stream: preset, High profile, 4:2:0, the keyframe grid.
fn x264_common(setup: &Setup) -> Vec<String> {
    let g = setup.gop_frames;
    vec![
        s("-c:v"),
        s("libx264"),
        s("-preset"),
        setup.preset.clone(),
        s("-profile:v"),
        s("high"),
        s("-pix_fmt"),
        s("yuv420p"),
        s("-x264-params"),
        format!("keyint={g}:min-keyint={g}:scenecut=0:open-gop=0"),
        s("-forced-idr"),
        s("1"),
        s("-force_key_frames:v"),
        force_key_frames(setup),
    ]
}

/// `[0:v]split=N[s0][s1];[s0]scale=W:H:flags=bicubic[v0];…`: one decode, one bicubic scale
/// per rendition (the scaler our pipeline uses).
fn split_scale_graph(rungs: &[Rung]) -> String {
    let n = rungs.len();
    let mut g = format!("[0:v]split={n}");
    for i in 0..n {
        g.push_str(&format!("[s{i}]"));
    }
    for (i, r) in rungs.iter().enumerate() {
        g.push_str(&format!(
            ";[s{i}]scale={}:{}:flags=bicubic[v{i}]",
            r.width, r.height
        ));
    }
    g
}

/// `-threads N -i SRC`: the source, decoded with the tuned decoder thread count.
fn decoded_source(setup: &Setup) -> [String; 4] {
    [
        s("-threads"),
        s(setup.decoder_threads),
        s("-i"),
        path(&setup.source),
    ]
}

/// One `ffmpeg` for the whole ladder with our settings: split + scale, x264 per rendition, AAC
/// mapped into every variant, 6 s segments on the same keyframe grid, `-var_stream_map` and a
/// master playlist. `Threading::Default` leaves every thread count to ffmpeg and x264;
/// `Threading::Tuned` sets decoder threads and gives each encoder our split.
pub fn ffmpeg_single_args(setup: &Setup, dir: &Path, threading: Threading) -> Vec<String> {
    let mut a = ffmpeg_prelude();
    match threading {
        Threading::Default => a.extend([s("-i"), path(&setup.source)]),
        Threading::Tuned => a.extend(decoded_source(setup)),
    }
    a.extend([s("-filter_complex"), split_scale_graph(&setup.rungs)]);
    for i in 0..setup.rungs.len() {
        a.extend([s("-map"), format!("[v{i}]")]);
    }
    if setup.has_audio {
        // The CLI cannot share one encoded stream between muxed variants: each variant gets
        // its own AAC encode of the same audio (small next to the video encodes).
        for _ in &setup.rungs {
            a.extend([s("-map"), s("0:a:0")]);
        }
    }
    a.extend(x264_common(setup));
    // The hls muxer makes the CLI ask for global headers, which turns off x264's in-band
    // SPS/PPS (`repeat-headers`); our encoders keep them in-band, as MPEG-TS wants. The
    // header bytes shift x264's rate control enough to move PSNR by tenths of a dB on a
    // short clip, so ffmpeg-single keeps them in-band too.
    a.extend([s("-flags:v"), s("-global_header")]);
    for (i, r) in setup.rungs.iter().enumerate() {
        let threads = (threading == Threading::Tuned).then_some(r.threads);
        a.extend(x264_args(setup, r, threads, &format!(":v:{i}")));
    }
    if setup.has_audio {
        a.extend([
            s("-c:a"),
            s("aac"),
            s("-b:a"),
            s(setup.audio_bitrate),
            s("-ac"),
            s("2"),
            s("-ar"),
            s("48000"),
        ]);
    }
    let var_stream_map = setup
        .rungs
        .iter()
        .enumerate()
        .map(|(i, r)| match setup.has_audio {
            true => format!("v:{i},a:{i},name:{}", r.name),
            false => format!("v:{i},name:{}", r.name),
        })
        .collect::<Vec<_>>()
        .join(" ");
    a.extend([
        s("-f"),
        s("hls"),
        s("-hls_time"),
        s(setup.segment_seconds),
        s("-hls_playlist_type"),
        s("vod"),
        s("-hls_segment_type"),
        s("mpegts"),
        s("-hls_segment_filename"),
        path(&dir.join("%v_%03d.ts")),
        s("-master_pl_name"),
        s("master.m3u8"),
        s("-var_stream_map"),
        var_stream_map,
        path(&dir.join("%v.m3u8")),
    ]);
    a
}

/// Ours: `video-worker transcode SRC OUT --quality … --preset … --json`, with the segment and
/// GOP lengths spelled out; `threads` is its encoder thread budget (`None`: one per core, as
/// the worker's own plan gives a single job).
pub fn in_process_args(
    setup: &Setup,
    qualities: &[String],
    dir: &Path,
    threads: Option<usize>,
) -> Vec<String> {
    let mut a = vec![
        s("transcode"),
        path(&setup.source),
        path(dir),
        s("--quality"),
        qualities.join(","),
        s("--preset"),
        setup.preset.clone(),
        s("--segment-seconds"),
        s(setup.segment_seconds),
        s("--gop-seconds"),
        s(setup.gop_seconds),
        // The CLI workers mux the audio into every rendition: so does ours here, so that the
        // per-rendition sizes compare like for like.
        s("--audio"),
        s("muxed"),
        s("--json"),
    ];
    if let Some(threads) = threads {
        a.extend([s("--threads"), s(threads)]);
    }
    a
}

/// One clip of the source for the throughput bench: `seconds` from `offset`, re-encoded once
/// (x264 veryfast at CRF 16, visually lossless; AAC 192k when there is audio) so that each
/// clip starts on a keyframe of its own wherever the source's keyframes are.
pub fn clip_args(source: &Path, offset: f64, seconds: f64, out: &Path) -> Vec<String> {
    let mut a = ffmpeg_prelude();
    a.extend([
        s("-ss"),
        format!("{offset:.3}"),
        s("-i"),
        path(source),
        s("-t"),
        format!("{seconds:.3}"),
        s("-map"),
        s("0:v:0"),
        s("-map"),
        s("0:a:0?"),
        s("-c:v"),
        s("libx264"),
        s("-preset"),
        s("veryfast"),
        s("-crf"),
        s("16"),
        s("-pix_fmt"),
        s("yuv420p"),
        s("-c:a"),
        s("aac"),
        s("-b:a"),
        s("192k"),
        s("-f"),
        s("mp4"),
        path(out),
    ]);
    a
}

/// Raw frames of each rendition for the floor: one decode, the same split + bicubic scale,
/// one `yuv420p` file per rendition.
pub fn prescale_args(setup: &Setup, raw: &[PathBuf]) -> Vec<String> {
    let mut a = ffmpeg_prelude();
    a.extend(decoded_source(setup));
    a.extend([s("-filter_complex"), split_scale_graph(&setup.rungs)]);
    for (i, file) in raw.iter().enumerate() {
        a.extend([
            s("-map"),
            format!("[v{i}]"),
            s("-pix_fmt"),
            s("yuv420p"),
            s("-f"),
            s("rawvideo"),
            path(file),
        ]);
    }
    a
}

/// The floor's decode: the source decoded once, with the baselines' decoder thread count,
/// nothing else.
pub fn floor_decode_args(setup: &Setup) -> Vec<String> {
    let mut a = ffmpeg_prelude();
    a.extend(decoded_source(setup));
    a.extend([s("-f"), s("null"), s("-")]);
    a
}

/// The floor's encode of one rendition: libx264 alone on the pre-scaled frames, with our
/// settings and thread count, into nothing.
pub fn floor_encode_args(setup: &Setup, rung: &Rung, raw: &Path) -> Vec<String> {
    let mut a = ffmpeg_prelude();
    a.extend([
        s("-f"),
        s("rawvideo"),
        s("-pix_fmt"),
        s("yuv420p"),
        s("-s"),
        format!("{}x{}", rung.width, rung.height),
        s("-framerate"),
        format!("{}/{}", setup.fps.0, setup.fps.1),
        s("-i"),
        path(raw),
    ]);
    a.extend(x264_common(setup));
    a.extend(x264_args(setup, rung, Some(rung.threads), ":v"));
    a.extend([s("-f"), s("null"), s("-")]);
    a
}

/// PSNR and SSIM of a rendition against the source scaled to its size with one fixed scaler
/// (bicubic); both sides start at time zero, so container offsets do not shift the pairing.
pub fn quality_args(
    ffmpeg_rendition: &Path,
    source: &Path,
    width: u32,
    height: u32,
) -> Vec<String> {
    let mut a = ffmpeg_prelude();
    a.extend([
        s("-i"),
        path(ffmpeg_rendition),
        s("-i"),
        path(source),
        s("-lavfi"),
        format!(
            "[0:v]setpts=PTS-STARTPTS[main];\
             [1:v]setpts=PTS-STARTPTS,scale={width}:{height}:flags=bicubic,split[ref1][ref2];\
             [main][ref1]psnr[scored];[scored][ref2]ssim"
        ),
        s("-an"),
        s("-f"),
        s("null"),
        s("-"),
    ]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            ffmpeg: "ffmpeg".into(),
            source: "/b/src.mp4".into(),
            rungs: vec![
                Rung {
                    name: "720p".into(),
                    width: 1280,
                    height: 720,
                    bitrate: 2_800_000,
                    seed_height: 720,
                    threads: 2,
                },
                Rung {
                    name: "480p".into(),
                    width: 854,
                    height: 480,
                    bitrate: 1_400_000,
                    seed_height: 480,
                    threads: 1,
                },
            ],
            preset: "medium".into(),
            fps: (25, 1),
            gop_frames: 50,
            segment_frames: 150,
            segment_seconds: 6.0,
            gop_seconds: 2.0,
            decoder_threads: 2,
            has_audio: true,
            audio_bitrate: 128_000,
        }
    }

    #[test]
    fn synthetic_specs_parse() {
        let s = Synthetic::parse("1080p:10").unwrap();
        assert_eq!((s.width(), s.height, s.seconds), (1920, 1080, 10));
        assert_eq!(Synthetic::parse("480:2").unwrap().width(), 854);
        assert_eq!(
            Synthetic::parse("360p:2").unwrap().file_name(),
            "synthetic-360p-2s.mp4"
        );
        assert!(Synthetic::parse("1080p").is_err());
        assert!(Synthetic::parse("1080p:0").is_err());
        assert!(Synthetic::parse("abc:10").is_err());
    }

    #[test]
    fn seed_cli_is_the_platform_command() {
        let su = setup();
        let a = seed_cli_args(&su, &su.rungs[1], Path::new("/o"));
        assert_eq!(
            a.join(" "),
            "-hide_banner -nostdin -nostats -y -i /b/src.mp4 -vf scale=-2:480 -c:v libx264 \
             -b:v 1400k -c:a aac -b:a 128k -hls_time 10 -hls_playlist_type vod \
             -hls_segment_filename /o/480p_%03d.ts /o/480p.m3u8"
        );
        let mut fast = su.clone();
        fast.preset = "veryfast".into();
        let a = seed_cli_args(&fast, &fast.rungs[1], Path::new("/o"));
        assert!(a
            .join(" ")
            .contains("-c:v libx264 -preset veryfast -b:v 1400k"));
    }

    #[test]
    fn ffmpeg_single_tuned_has_our_settings_per_stream() {
        let a = ffmpeg_single_args(&setup(), Path::new("/o"), Threading::Tuned).join(" ");
        for part in [
            "-threads 2 -i /b/src.mp4",
            "[0:v]split=2[s0][s1];[s0]scale=1280:720:flags=bicubic[v0];\
             [s1]scale=854:480:flags=bicubic[v1]",
            "-map [v0] -map [v1] -map 0:a:0 -map 0:a:0",
            "-preset medium -profile:v high",
            "-x264-params keyint=50:min-keyint=50:scenecut=0:open-gop=0 -forced-idr 1",
            "-force_key_frames:v expr:eq(mod(n,50),0) -flags:v -global_header",
            "-b:v:0 2800000 -maxrate:v:0 3080000 -bufsize:v:0 5600000 -threads:v:0 2 -g:v:0 50",
            "-b:v:1 1400000 -maxrate:v:1 1540000 -bufsize:v:1 2800000 -threads:v:1 1",
            "-c:a aac -b:a 128000 -ac 2 -ar 48000",
            "-hls_time 6 -hls_playlist_type vod",
            "-var_stream_map v:0,a:0,name:720p v:1,a:1,name:480p /o/%v.m3u8",
        ] {
            assert!(a.contains(part), "missing {part:?} in {a}");
        }
        let mut silent = setup();
        silent.has_audio = false;
        let a = ffmpeg_single_args(&silent, Path::new("/o"), Threading::Tuned).join(" ");
        assert!(!a.contains("0:a") && a.contains("v:0,name:720p v:1,name:480p"));
    }

    #[test]
    fn ffmpeg_single_default_leaves_every_thread_count_to_ffmpeg() {
        let su = setup();
        let default = ffmpeg_single_args(&su, Path::new("/o"), Threading::Default).join(" ");
        assert!(!default.contains("-threads"), "{default}");
        assert!(default.contains("-y -i /b/src.mp4 -filter_complex"));
        // Everything but the thread counts is the tuned command's.
        let tuned = ffmpeg_single_args(&su, Path::new("/o"), Threading::Tuned).join(" ");
        let stripped = tuned
            .replace("-threads 2 ", "")
            .replace(" -threads:v:0 2", "")
            .replace(" -threads:v:1 1", "");
        assert_eq!(stripped, default);
    }

    #[test]
    fn ffmpeg_tags_name_major_and_minor() {
        assert_eq!(Ffmpeg::tag_of("5.1.9-0+deb12u1"), "ffmpeg5.1");
        assert_eq!(Ffmpeg::tag_of("7.0.2-static"), "ffmpeg7.0");
        assert_eq!(Ffmpeg::tag_of("7-static"), "ffmpeg7");
        assert_eq!(Ffmpeg::tag_of("N-112345-gabcdef"), "ffmpeg");
    }

    #[test]
    fn a_round_has_seed_cli_once_and_both_threadings_per_ffmpeg() {
        let f = |tag: &str| Ffmpeg {
            path: tag.into(),
            version: "x".into(),
            tag: tag.into(),
        };
        let labels: Vec<String> = Contender::round(&[f("ffmpeg5.1"), f("ffmpeg7.0")])
            .into_iter()
            .map(|c| c.label)
            .collect();
        assert_eq!(
            labels,
            [
                "seed-cli",
                "ffmpeg5.1-single-default",
                "ffmpeg5.1-single-tuned",
                "ffmpeg7.0-single-default",
                "ffmpeg7.0-single-tuned",
                "in-process"
            ]
        );
    }

    #[test]
    fn floor_encodes_raw_frames_with_the_same_x264_settings() {
        let su = setup();
        let a = floor_encode_args(&su, &su.rungs[0], Path::new("/o/720p.yuv")).join(" ");
        assert!(
            a.contains("-f rawvideo -pix_fmt yuv420p -s 1280x720 -framerate 25/1 -i /o/720p.yuv")
        );
        assert!(
            a.contains("-b:v 2800000 -maxrate:v 3080000 -bufsize:v 5600000 -threads:v 2 -g:v 50")
        );
        assert!(a.ends_with("-f null -"));
        let mut odd = su.clone();
        odd.segment_frames = 125;
        assert!(force_key_frames(&odd).ends_with("+eq(mod(n,125),0)"));
    }

    #[test]
    fn clips_are_cut_exactly_and_reencoded_near_losslessly() {
        let a = clip_args(Path::new("/s.mp4"), 2.5, 5.0, Path::new("/c/clip.partial")).join(" ");
        assert!(a.contains("-ss 2.500 -i /s.mp4 -t 5.000 -map 0:v:0 -map 0:a:0?"));
        assert!(a.contains("-c:v libx264 -preset veryfast -crf 16"));
        assert!(a.ends_with("-f mp4 /c/clip.partial"));
    }

    #[test]
    fn quality_compares_against_the_bicubic_scaled_source() {
        let a = quality_args(Path::new("/o/720p.m3u8"), Path::new("/s.mp4"), 1280, 720).join(" ");
        assert!(a.contains("scale=1280:720:flags=bicubic"));
        assert!(a.contains("[main][ref1]psnr[scored];[scored][ref2]ssim"));
    }
}
