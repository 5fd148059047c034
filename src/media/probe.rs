//! Opening a source safely (file protocol and known containers only) and describing it:
//! the video stream to transcode, the audio stream if any, orientation and frame rate.

use std::path::{Path, PathBuf};

use ffmpeg::{format, media, Rational};
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

use crate::error::{JobError, Result};

/// Containers we accept. Playlists (`hls`), `concat`, image sequences and network formats
/// are left out on purpose: they make libavformat open other files or URLs.
const FORMAT_WHITELIST: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,asf,\
ogg,mxf,nut,h264,hevc,m4v,mpegvideo,yuv4mpegpipe,wav,mp3,aac,flac,w64";

/// Output frame rates are capped here: players and the platform's ladder stop at 60 fps.
const MAX_FRAME_RATE: f64 = 60.0;

/// libx264's presets, fastest first.
pub const PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Where `preset` stands from fastest (0) to slowest; `None` if it is not a libx264 preset.
pub fn preset_rank(preset: &str) -> Option<usize> {
    PRESETS.iter().position(|p| *p == preset)
}

/// Parses a preset name for the command line (`--max-preset`).
pub fn parse_preset(name: &str) -> std::result::Result<&'static str, String> {
    PRESETS
        .iter()
        .find(|p| **p == name)
        .copied()
        .ok_or_else(|| {
            format!(
                "unknown x264 preset {name:?} (known: {})",
                PRESETS.join(", ")
            )
        })
}

/// Limits on what a job may ask of this worker, checked before decoding and while decoding
/// (headers can lie).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    pub max_width: u32,
    pub max_height: u32,
    /// Seconds.
    pub max_duration: f64,
    /// The slowest libx264 preset a job may ask for: `placebo` costs ~10× `slow` for a few
    /// percent of bitrate, and a job could otherwise hold a worker for that long.
    pub slowest_preset: &'static str,
}

/// `Limits` as read back (the job process's request): the preset by name, mapped to the known
/// `&'static str`.
#[derive(Deserialize)]
struct LimitsOnTheWire {
    max_width: u32,
    max_height: u32,
    max_duration: f64,
    slowest_preset: String,
}

// By hand: a derived impl would borrow the `&'static str` from the input ('de: 'static).
impl<'de> Deserialize<'de> for Limits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let l = LimitsOnTheWire::deserialize(d)?;
        Ok(Limits {
            max_width: l.max_width,
            max_height: l.max_height,
            max_duration: l.max_duration,
            slowest_preset: parse_preset(&l.slowest_preset).map_err(serde::de::Error::custom)?,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        // 8K UHD and six hours: above any upload the platform accepts, below what would tie a
        // worker up for a day.
        Limits {
            max_width: 7680,
            max_height: 4320,
            max_duration: 6.0 * 3600.0,
            slowest_preset: "slow",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VideoInfo {
    pub index: usize,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub pixel_format: String,
    /// Clockwise rotation to apply for display: 0, 90, 180 or 270.
    pub rotation: u32,
    /// Size of the displayed picture (after rotation and sample aspect ratio).
    pub display_width: f64,
    pub display_height: f64,
    /// Output frame rate (num/den), from the stream's average rate, snapped and capped.
    #[serde(skip)]
    pub frame_rate: Rational,
    pub fps: f64,
    /// Start of the video in seconds (the job's time zero).
    pub start_time: f64,
    /// The stream says its pictures are interlaced (field order top or bottom first): the
    /// output is deinterlaced (frames flagged interlaced are caught again while decoding).
    pub interlaced: bool,
    /// Top field first, when interlaced (bottom field first otherwise).
    #[serde(skip)]
    pub top_field_first: bool,
    /// Colour description to carry into the renditions' VUI.
    #[serde(skip)]
    pub color: ColorTags,
    /// Duration of the video stream in seconds, when the container says.
    pub duration: Option<f64>,
    pub frames: Option<u64>,
}

/// The source's colour description (matrix, primaries, transfer), as the ffmpeg CLI carries it
/// from decoder to encoder. Scaling keeps the matrix, so the tags stay true for every rendition.
#[derive(Debug, Clone, Copy)]
pub struct ColorTags {
    pub space: ffmpeg::color::Space,
    pub primaries: ffmpeg::color::Primaries,
    pub transfer: ffmpeg::color::TransferCharacteristic,
}

impl ColorTags {
    /// The tags to write into an 8-bit SDR rendition: PQ and HLG sources are not tone-mapped
    /// here, so claiming their transfer (or BT.2020) would mislead players; those stay unset.
    pub fn for_sdr_output(self) -> Option<ColorTags> {
        use ffmpeg::color::TransferCharacteristic as T;
        match self.transfer {
            T::SMPTE2084 | T::ARIB_STD_B67 => None,
            _ => Some(self),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AudioInfo {
    pub index: usize,
    pub codec: String,
    pub channels: u16,
    pub sample_rate: u32,
    /// The stream's `language` tag as the container gives it (ISO 639-2 in MP4 and MKV).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Modification time when it was opened: with the size, how a replaced source is noticed.
    #[serde(skip)]
    pub modified: Option<std::time::SystemTime>,
    pub container: String,
    pub duration: Option<f64>,
    pub bit_rate: Option<u64>,
    pub video: VideoInfo,
    pub audio: Option<AudioInfo>,
}

/// Refuses what is not a plain local file path before libavformat sees it.
fn check_path(path: &Path) -> Result<()> {
    let s = path.to_string_lossy();
    if s.is_empty() {
        return Err(JobError::invalid_request("source path is empty"));
    }
    // `http://…`, `concat:…`, `pipe:…`, `data:…`: a protocol prefix, refused whatever it is.
    // (A path that merely contains a colon later on, like `/a/b:c.mp4`, is allowed.)
    if let Some((scheme, _)) = s.split_once(':') {
        if !scheme.is_empty()
            && !scheme.contains('/')
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
        {
            return Err(JobError::invalid_request(format!(
                "source {s:?} looks like a URL or protocol ({scheme}:); only local files are read"
            )));
        }
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if matches!(ext.as_deref(), Some("m3u8" | "m3u" | "txt" | "ffconcat")) {
        return Err(JobError::invalid_request(format!(
            "source {s:?} is a playlist or list file; only single media files are read"
        )));
    }
    Ok(())
}

fn seconds(ts: i64, tb: Rational) -> Option<f64> {
    if ts == ffmpeg::ffi::AV_NOPTS_VALUE || tb.denominator() == 0 {
        None
    } else {
        Some(ts as f64 * f64::from(tb))
    }
}

/// Rotation in degrees clockwise from a display matrix (libavutil/display.c's
/// `av_display_rotation_get`, negated and rounded to a quarter turn as the ffmpeg CLI does).
fn rotation_from_matrix(bytes: &[u8]) -> u32 {
    if bytes.len() < 36 {
        return 0;
    }
    let m: Vec<f64> = bytes
        .chunks_exact(4)
        .take(9)
        .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]) as f64 / 65536.0)
        .collect();
    let s0 = m[0].hypot(m[3]);
    let s1 = m[1].hypot(m[4]);
    if s0 == 0.0 || s1 == 0.0 {
        return 0;
    }
    let rotation = -(m[1] / s1).atan2(m[0] / s0).to_degrees();
    let theta = (-rotation).round() as i64;
    let quarter = ((theta.rem_euclid(360) + 45) / 90) % 4;
    (quarter * 90) as u32
}

fn snap_frame_rate(r: Rational) -> Rational {
    let fps = f64::from(r);
    const COMMON: &[(i32, i32)] = &[
        (24000, 1001),
        (24, 1),
        (25, 1),
        (30000, 1001),
        (30, 1),
        (48, 1),
        (50, 1),
        (60000, 1001),
        (60, 1),
    ];
    for &(n, d) in COMMON {
        if (fps - n as f64 / d as f64).abs() < 0.01 {
            return Rational::new(n, d);
        }
    }
    if fps > MAX_FRAME_RATE {
        return Rational::new(MAX_FRAME_RATE as i32, 1);
    }
    // Keep odd rates, but with a small denominator.
    let den = 1000;
    Rational::new((fps * den as f64).round() as i32, den).reduce()
}

fn valid_rate(r: Rational) -> bool {
    r.numerator() > 0 && r.denominator() > 0 && {
        let f = f64::from(r);
        (1.0..=1000.0).contains(&f)
    }
}

/// An opened source: the demuxer and what we learned about it.
pub struct Source {
    pub input: format::context::Input,
    pub info: SourceInfo,
}

/// Opens `path` for reading with a protocol whitelist (`file`) and a container whitelist,
/// and describes it. Errors carry the kind the job fails with.
pub fn open(path: &Path, limits: &Limits) -> Result<Source> {
    open_reading(path, path, limits)
}

/// [`open`] for a checked, absolute path that must not be swapped for a symlink in between:
/// the file is opened without following any symlink on its path and libavformat reads that
/// open file (through `/proc/self/fd`), not whatever the path names a moment later. `path`
/// still names the source in messages and in `SourceInfo`.
pub(crate) fn open_confined(path: &Path, limits: &Limits) -> Result<Source> {
    // URL-like and playlist names are refused as such before anything is opened.
    check_path(path)?;
    let pinned = crate::media::confine::open_file(path).map_err(|e| match e {
        crate::media::confine::WalkError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            JobError::source_not_found(format!("source {} does not exist", path.display()))
        }
        e => JobError::invalid_request(format!("source {}: {e}", path.display())),
    })?;
    open_reading(path, &crate::media::confine::fd_path(&pinned), limits)
}

/// [`open_confined`] for a source still being downloaded into `path` (see
/// [`crate::media::arriving`]): libavformat reads it through a custom AVIO that waits for each
/// chunk as it arrives.
pub(crate) fn open_arriving(
    path: &Path,
    arriving: &crate::media::arriving::Arriving,
    limits: &Limits,
) -> Result<Source> {
    check_path(path)?;
    let pinned = crate::media::confine::open_file(path)
        .map_err(|e| JobError::internal(format!("arriving source {}: {e}", path.display())))?;
    let reader = crate::media::arriving::Reader::new(pinned, arriving)
        .map_err(|e| JobError::internal(format!("arriving source {}: {e}", path.display())))?;
    let meta = check_file(path)?;
    crate::media::init()?;
    let input = format::context::StreamIo::from_read_seek(reader)
        .and_then(|io| {
            format::input_from_stream(io, Some(&path.to_string_lossy()), Some(input_options()))
        })
        .map_err(|e| not_media(path, e))?;
    describe(path, meta, input, limits)
}

/// Opens `read` (the file itself) and describes it as the source `path`.
fn open_reading(path: &Path, read: &Path, limits: &Limits) -> Result<Source> {
    let meta = check_file(path)?;
    crate::media::init()?;
    let input = open_input(read, path)?;
    describe(path, meta, input, limits)
}

/// What an opened source holds, checked against the limits.
fn describe(
    path: &Path,
    meta: std::fs::Metadata,
    input: format::context::Input,
    limits: &Limits,
) -> Result<Source> {
    let duration = (input.duration() > 0)
        .then(|| input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE));
    let video = describe_video(&input, path, limits, duration)?;
    let info = SourceInfo {
        path: path.to_path_buf(),
        size_bytes: meta.len(),
        modified: meta.modified().ok(),
        container: input.format().name().to_string(),
        duration,
        bit_rate: (input.bit_rate() > 0).then(|| input.bit_rate() as u64),
        audio: describe_audio(&input),
        video,
    };
    Ok(Source { input, info })
}

/// A plain local file path that exists, is a regular file and is not empty.
fn check_file(path: &Path) -> Result<std::fs::Metadata> {
    check_path(path)?;
    let meta = std::fs::metadata(path).map_err(|e| {
        JobError::source_not_found(if e.kind() == std::io::ErrorKind::NotFound {
            format!("source {} does not exist", path.display())
        } else {
            format!("source {} cannot be read: {e}", path.display())
        })
    })?;
    if !meta.is_file() {
        return Err(JobError::source_not_found(format!(
            "source {} is not a regular file",
            path.display()
        )));
    }
    if meta.len() == 0 {
        return Err(JobError::invalid_media(format!(
            "source {} is empty (0 bytes)",
            path.display()
        )));
    }
    Ok(meta)
}

/// Protocols and containers a source may use.
fn input_options() -> ffmpeg::Dictionary<'static> {
    let mut options = ffmpeg::Dictionary::new();
    options.set("protocol_whitelist", "file");
    options.set("format_whitelist", FORMAT_WHITELIST);
    options
}

fn not_media(path: &Path, e: ffmpeg::Error) -> JobError {
    JobError::invalid_media(format!(
        "{} is not a readable media file ({e}); accepted containers: MP4/MOV, Matroska/WebM, \
         AVI, MPEG-TS/PS, FLV, ASF, Ogg, MXF, raw H.264/HEVC",
        path.display()
    ))
}

fn open_input(read: &Path, path: &Path) -> Result<format::context::Input> {
    // The `file:` prefix makes libavformat treat every path as a file, whatever it contains.
    let url = format!("file:{}", read.display());
    format::input_with_dictionary(&url, input_options()).map_err(|e| not_media(path, e))
}

/// The video stream to transcode (the first that is not cover art), checked against the
/// limits: its size, and its duration or the container's, whichever is longer.
fn describe_video(
    input: &format::context::Input,
    path: &Path,
    limits: &Limits,
    container_duration: Option<f64>,
) -> Result<VideoInfo> {
    let video = input
        .streams()
        .filter(|s| s.parameters().medium() == media::Type::Video)
        .find(|s| {
            !s.disposition()
                .contains(format::stream::Disposition::ATTACHED_PIC)
        })
        .ok_or_else(|| {
            JobError::no_video_stream(format!(
                "{} has no video stream (audio-only or cover art only)",
                path.display()
            ))
        })?;

    let vindex = video.index();
    let codec_id = video.parameters().id();
    if ffmpeg::decoder::find(codec_id).is_none() {
        return Err(JobError::unsupported_codec(format!(
            "no decoder for video codec {codec_id:?} in this FFmpeg build"
        )));
    }
    let vctx = ffmpeg::codec::Context::from_parameters(video.parameters())
        .map_err(|e| JobError::invalid_media(format!("video stream parameters: {e}")))?;
    let (interlaced, top_field_first) = match crate::media::ffi::field_order(&vctx) {
        ffmpeg::FieldOrder::TT | ffmpeg::FieldOrder::TB => (true, true),
        ffmpeg::FieldOrder::BB | ffmpeg::FieldOrder::BT => (true, false),
        _ => (false, true),
    };
    let vdec = vctx
        .decoder()
        .video()
        .map_err(|e| JobError::invalid_media(format!("video stream: {e}")))?;
    let (width, height) = (vdec.width(), vdec.height());
    if width == 0 || height == 0 {
        return Err(JobError::invalid_media(format!(
            "{}: video stream has no picture size (corrupt or undecodable)",
            path.display()
        )));
    }
    if width > limits.max_width || height > limits.max_height {
        return Err(JobError::limit_exceeded(format!(
            "video is {width}x{height}, over the limit of {}x{}",
            limits.max_width, limits.max_height
        )));
    }

    let rotation = video
        .side_data()
        .find(|sd| sd.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix)
        .map(|sd| rotation_from_matrix(sd.data()))
        .unwrap_or(0);
    let sar = f64::from(crate::media::graph::sar_or_square(vdec.aspect_ratio()));
    let (mut dw, mut dh) = (width as f64 * sar, height as f64);
    if rotation % 180 == 90 {
        std::mem::swap(&mut dw, &mut dh);
    }

    let guessed = crate::media::ffi::guess_frame_rate(input, vindex);
    let rate = [guessed, video.avg_frame_rate(), video.rate()]
        .into_iter()
        .find(|r| valid_rate(*r))
        .unwrap_or(Rational::new(25, 1));
    let frame_rate = snap_frame_rate(rate);

    let tb = video.time_base();
    let start_time = seconds(video.start_time(), tb).unwrap_or(0.0);
    let vduration = seconds(video.duration(), tb).filter(|d| *d > 0.0);
    // The container's duration counts too: a stream that starts late (audio an hour after a
    // one-second video) makes the job that long.
    let longest = match (vduration, container_duration) {
        (Some(v), Some(c)) => Some(v.max(c)),
        (v, c) => v.or(c),
    };
    if let Some(d) = longest {
        if d > limits.max_duration {
            return Err(JobError::limit_exceeded(format!(
                "video lasts {d:.1} s, over the limit of {:.0} s",
                limits.max_duration
            )));
        }
    }

    Ok(VideoInfo {
        index: vindex,
        codec: codec_id_name(codec_id),
        width,
        height,
        pixel_format: format!("{:?}", vdec.format()).to_lowercase(),
        rotation,
        display_width: dw,
        display_height: dh,
        frame_rate,
        fps: f64::from(frame_rate),
        start_time,
        interlaced,
        top_field_first,
        color: ColorTags {
            space: vdec.color_space(),
            primaries: vdec.color_primaries(),
            transfer: vdec.color_transfer_characteristic(),
        },
        duration: vduration,
        frames: (video.frames() > 0).then(|| video.frames() as u64),
    })
}

/// The best audio stream this build can decode, if any.
fn describe_audio(input: &format::context::Input) -> Option<AudioInfo> {
    input
        .streams()
        .best(media::Type::Audio)
        .filter(|s| ffmpeg::decoder::find(s.parameters().id()).is_some())
        .and_then(|s| {
            let ctx = ffmpeg::codec::Context::from_parameters(s.parameters()).ok()?;
            let a = ctx.decoder().audio().ok()?;
            Some(AudioInfo {
                index: s.index(),
                codec: codec_id_name(s.parameters().id()),
                channels: a.channels(),
                sample_rate: a.rate(),
                language: s.metadata().get("language").map(str::to_owned),
            })
        })
        .filter(|a| a.sample_rate > 0)
}

/// Fails with `source_changed` (worth retrying) when the source's size or modification time
/// differs from when it was opened: it was replaced or rewritten while the job read it.
pub fn check_unchanged(info: &SourceInfo) -> Result<()> {
    let now = std::fs::metadata(&info.path).ok();
    let same = now
        .as_ref()
        .is_some_and(|m| m.len() == info.size_bytes && m.modified().ok() == info.modified);
    if same {
        return Ok(());
    }
    Err(JobError::source_changed(format!(
        "source {} changed while the job read it ({} bytes when opened, {} now): nothing was \
         published; a retry reads the new file",
        info.path.display(),
        info.size_bytes,
        now.map(|m| m.len().to_string())
            .unwrap_or_else(|| "gone".into())
    )))
}

fn codec_id_name(id: ffmpeg::codec::Id) -> String {
    format!("{id:?}").to_lowercase()
}

/// Probes a source without decoding it (the `video.metadata` job and the manifest).
pub fn probe(path: &Path, limits: &Limits) -> Result<SourceInfo> {
    open(path, limits).map(|s| s.info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_swapped_for_a_symlink_after_its_check_is_refused_and_the_opened_file_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let real = root.join("real.mp4");
        let made = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg("testsrc=size=64x48:rate=25:duration=0.4")
            .args(["-c:v", "libx264", "-preset", "ultrafast"])
            .arg(&real)
            .status()
            .expect("run ffmpeg");
        assert!(made.success(), "ffmpeg failed");

        // The checked path's file, then its folder, replaced by symlinks to another file.
        std::fs::create_dir(root.join("jobs")).unwrap();
        std::os::unix::fs::symlink(&real, root.join("jobs/in.mp4")).unwrap();
        std::fs::create_dir(root.join("other")).unwrap();
        std::fs::copy(&real, root.join("other/in.mp4")).unwrap();
        std::os::unix::fs::symlink(root.join("other"), root.join("jobs2")).unwrap();
        for swapped in [root.join("jobs/in.mp4"), root.join("jobs2/in.mp4")] {
            let err = open_confined(&swapped, &Limits::default())
                .err()
                .expect("a symlink on a checked source path is refused");
            assert_eq!(err.kind, crate::ErrorKind::InvalidRequest, "{err}");
            assert!(err.message.contains("symbolic link"), "{err}");
        }

        // A plain path opens; libavformat reads the file opened then, named by its own path,
        // even when the path is renamed away right after.
        let source = open_confined(&real, &Limits::default()).unwrap();
        assert_eq!(source.info.path, real);
        std::fs::rename(&real, root.join("moved.mp4")).unwrap();
        let mut input = source.input;
        assert!(
            input.packets().next().is_some(),
            "the opened file is still read"
        );
        assert_eq!(
            open_confined(&real, &Limits::default())
                .err()
                .map(|e| e.kind),
            Some(crate::ErrorKind::SourceNotFound)
        );
    }

    #[test]
    fn url_like_and_playlist_sources_are_refused() {
        for p in [
            "http://example.com/a.mp4",
            "concat:a.mp4|b.mp4",
            "pipe:0",
            "/tmp/list.m3u8",
            "file:/etc/passwd",
        ] {
            let e = check_path(Path::new(p)).unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::InvalidRequest, "{p}");
        }
        assert!(check_path(Path::new("/uploads/raw/video:1.mp4")).is_ok());
        assert!(check_path(Path::new("relative/video.mp4")).is_ok());
    }

    fn matrix(a: i32, b: i32, c: i32, d: i32) -> Vec<u8> {
        let m = [a, b, 0, c, d, 0, 0, 0, 1 << 30];
        m.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn display_matrix_rotation_is_read_as_the_ffmpeg_cli_does() {
        let one = 1 << 16;
        assert_eq!(rotation_from_matrix(&matrix(one, 0, 0, one)), 0);
        // av_display_rotation_set(m, -90) — what a phone writes for portrait (rotate=90).
        assert_eq!(rotation_from_matrix(&matrix(0, one, -one, 0)), 90);
        assert_eq!(rotation_from_matrix(&matrix(0, -one, one, 0)), 270);
        assert_eq!(rotation_from_matrix(&matrix(-one, 0, 0, -one)), 180);
    }

    #[test]
    fn frame_rates_snap_to_broadcast_rates_and_cap_at_60() {
        assert_eq!(
            snap_frame_rate(Rational::new(1_800_000, 60_061)),
            Rational::new(30000, 1001)
        );
        assert_eq!(snap_frame_rate(Rational::new(120, 1)), Rational::new(60, 1));
        assert_eq!(snap_frame_rate(Rational::new(25, 1)), Rational::new(25, 1));
    }
}
