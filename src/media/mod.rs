//! Everything that touches FFmpeg. No tokio here: `transcode` blocks its calling thread,
//! starts one thread per rendition inside a scope and joins them all before it returns.
//!
//! ```text
//! probe::open ─► pipeline::run: threads, channels, one rendition thread per quality
//!   demux::{Reader, VideoDecoder} ─► decode::DecodeLoop (calling thread)
//!        ├► graph (orientation + fps, rebuilt on a mid-stream change) ──Arc<Frame>──►
//!        │      rendition threads: scale → x264 → hls::Segmenter
//!        ├► audio::AudioChain: decode → stereo 48k → AAC (once), no further than the video
//!        │      ──Packet──► every rendition's segmenter
//!        └► thumbnail at thumbnail_time
//! then: playlists + master + manifest into the staging dir; the source re-checked (changed
//! during the job: nothing is published) → renamed into place
//! ```

pub mod arriving;
pub mod audio;
pub(crate) mod confine;
pub(crate) mod decode;
pub(crate) mod demux;
pub mod ffi;
pub(crate) mod graph;
pub mod hls;
pub(crate) mod manifest;
pub(crate) mod output;
pub mod pipeline;
pub mod probe;
pub mod quality;
pub mod rendition;
pub mod thumbnail;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{JobError, Result};
use crate::ladder::{Ladder, Quality, Skipped};
pub use probe::{probe, Limits, SourceInfo};

/// Apple's HLS authoring spec: 6 s segments, keyframes every 2 s.
pub const DEFAULT_SEGMENT_SECONDS: f64 = 6.0;
pub const DEFAULT_GOP_SECONDS: f64 = 2.0;
/// The platform's original worker's thumbnail time (00:00:05), clamped to the video.
pub const DEFAULT_THUMBNAIL_SECONDS: f64 = 5.0;
/// libx264 preset: `medium`, x264's own default and the platform's original worker's.
pub const DEFAULT_PRESET: &str = "medium";
/// The platform's original worker used AAC at 128 kb/s.
pub const DEFAULT_AUDIO_BITRATE: u64 = 128_000;
/// RFC 6381 name of the AAC-LC audio every output carries.
const AAC_LC: &str = "mp4a.40.2";

/// Initialises the FFmpeg libraries once per process and keeps their logging quiet (errors
/// reach the caller as `JobError`s, not as lines on stderr).
pub fn init() -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg_next::init().map_err(|e| e.to_string())?;
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
        Ok(())
    })
    .clone()
    .map_err(|e| JobError::internal(format!("FFmpeg initialisation failed: {e}")))
}

/// Tunes glibc's allocator for a process that lives for one job (`transcode`, the job process
/// of `isolation`): memory a thread frees is kept for its next frame instead of being handed
/// back to the kernel. By default glibc trims a thread's heap whenever its top is free, so the
/// encoders' per-frame buffers fault in freshly zeroed (huge) pages again and again, and blocks
/// over 128 KiB are mapped and unmapped one by one once trimming is tuned. On the 30 s 1080p
/// ladder this took the job's system time from 0.8–1.6 s to 0.4–0.5 s; its peak RSS did not
/// grow (the process exits after the job). Call it before the job's threads start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two parameters of the allocator; the values are in range
    // (the mmap threshold's ceiling is 32 MiB on 64-bit glibc).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// Where the audio goes: its own rendition, listed once in the master as an `EXT-X-MEDIA`
/// group that every variant names (Apple's layout: stored once, fetched once), or muxed into
/// every video rendition's segments (for players that cannot take a separate audio group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioLayout {
    #[default]
    Separate,
    Muxed,
}

impl AudioLayout {
    /// The layout of outputs recorded before the layout was a choice.
    pub(crate) fn before_layouts() -> AudioLayout {
        AudioLayout::Muxed
    }
}

named_enum!(AudioLayout, "audio layout", { Separate => "separate", Muxed => "muxed" });

/// One transcode: a source, where its ladder goes, and how to encode it.
/// Serialisable: it is the request a job process reads on its stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscodeRequest {
    pub source: PathBuf,
    pub output_dir: PathBuf,
    pub qualities: Vec<Quality>,
    /// Seconds from the start of the video; clamped to the video.
    pub thumbnail_time: f64,
    pub segment_seconds: f64,
    pub gop_seconds: f64,
    /// libx264 preset (`medium` is the CLI worker's default).
    pub preset: String,
    /// Total encoder threads to share between the renditions; 0 = one per core.
    pub threads: usize,
    pub audio_bitrate: u64,
    pub limits: Limits,
    /// Written into manifest.json so a redelivered job can recognise its own finished output.
    pub fingerprint: Option<String>,
    pub video_id: Option<String>,
    /// Replace an existing output folder even if this worker did not make it (the command
    /// line's `--force`); a folder that holds the source is refused all the same.
    pub force: bool,
    /// Audio as its own rendition (default) or muxed into every video rendition.
    #[serde(default)]
    pub audio_layout: AudioLayout,
    /// An interlaced source keeps its field rate (50i → 50p) in renditions whose shorter
    /// side is at most this; larger ones get its frame rate (50i → 25p). 0: never.
    #[serde(default = "default_field_rate_up_to")]
    pub field_rate_up_to: u32,
    /// Measure each rendition's PSNR against the scaled source while encoding.
    #[serde(default)]
    pub measure_quality: bool,
    /// MPEG-TS segments (default) or fragmented MP4 (CMAF) ones.
    #[serde(default)]
    pub segments: hls::SegmentFormat,
    /// The source is still being downloaded into `source` (object storage, `--source-read
    /// overlap`): read it as it arrives, and publish only once it is whole and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arriving: Option<arriving::Arriving>,
}

fn default_field_rate_up_to() -> u32 {
    crate::ladder::DEFAULT_FIELD_RATE_UP_TO
}

impl TranscodeRequest {
    /// The encoder threads this job shares out: `threads`, or one per core when it is 0.
    pub fn thread_budget(&self) -> usize {
        match self.threads {
            0 => num_cpus::get(),
            n => n,
        }
    }

    pub fn new(source: impl Into<PathBuf>, output_dir: impl Into<PathBuf>) -> Result<Self> {
        Ok(TranscodeRequest {
            source: source.into(),
            output_dir: output_dir.into(),
            qualities: Quality::parse_list(crate::ladder::DEFAULT_QUALITIES)?,
            thumbnail_time: DEFAULT_THUMBNAIL_SECONDS,
            segment_seconds: DEFAULT_SEGMENT_SECONDS,
            gop_seconds: DEFAULT_GOP_SECONDS,
            preset: DEFAULT_PRESET.into(),
            threads: 0,
            audio_bitrate: DEFAULT_AUDIO_BITRATE,
            limits: Limits::default(),
            fingerprint: None,
            video_id: None,
            force: false,
            audio_layout: AudioLayout::default(),
            field_rate_up_to: crate::ladder::DEFAULT_FIELD_RATE_UP_TO,
            measure_quality: false,
            segments: hls::SegmentFormat::default(),
            arriving: None,
        })
    }

    fn validate(&self) -> Result<()> {
        let rank = probe::preset_rank(&self.preset).ok_or_else(|| {
            JobError::invalid_request(format!(
                "unknown x264 preset {:?} (known: {})",
                self.preset,
                probe::PRESETS.join(", ")
            ))
        })?;
        if probe::preset_rank(self.limits.slowest_preset).is_some_and(|max| rank > max) {
            return Err(JobError::invalid_request(format!(
                "x264 preset {:?} is slower than this worker allows (at most {:?})",
                self.preset, self.limits.slowest_preset
            )));
        }
        if !(0.5..=60.0).contains(&self.segment_seconds) {
            return Err(JobError::invalid_request(format!(
                "segment length {} s is outside 0.5–60 s",
                self.segment_seconds
            )));
        }
        if !(0.1..=60.0).contains(&self.gop_seconds) {
            return Err(JobError::invalid_request(format!(
                "GOP length {} s is outside 0.1–60 s",
                self.gop_seconds
            )));
        }
        if !self.thumbnail_time.is_finite() || self.thumbnail_time < 0.0 {
            return Err(JobError::invalid_request("thumbnail time must be ≥ 0"));
        }
        if self.output_dir.file_name().is_none() {
            return Err(JobError::invalid_request(format!(
                "output directory {:?} has no name",
                self.output_dir
            )));
        }
        Ok(())
    }
}

/// Where the pipeline is, for progress bars and `video.progress.<id>` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// An object source streaming to scratch (object jobs; before the media work).
    Downloading,
    Transcoding,
    Publishing,
}

/// A progress report from the decode loop (at most a few per second).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressTick {
    pub stage: Stage,
    /// Output frames handed to the encoders so far.
    pub frames: u64,
    pub total_frames: Option<u64>,
    pub percent: f64,
    pub fps: f64,
    pub eta_seconds: Option<f64>,
}

/// One rendition as produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenditionOutcome {
    pub quality: String,
    pub width: u32,
    pub height: u32,
    /// Target bitrate (bit/s).
    pub bitrate: u64,
    /// The master's BANDWIDTH: the peak segment bit rate (RFC 8216 §4.3.4.2) of this
    /// rendition plus that of its audio rendition, if audio is separate.
    pub bandwidth: u64,
    /// The master's AVERAGE-BANDWIDTH, the same way.
    pub average_bandwidth: u64,
    /// Video and audio codecs (RFC 6381), as in the master's CODECS.
    pub codecs: String,
    pub frame_rate: f64,
    pub segments: usize,
    pub playlist: String,
    /// Bytes of this rendition's own segments (not counting a separate audio rendition).
    pub bytes: u64,
    /// Frames this rendition encoded.
    #[serde(default)]
    pub frames: u64,
    /// Peak and average bit rates of this rendition's own segments.
    #[serde(default)]
    pub video_bandwidth: u64,
    #[serde(default)]
    pub video_average_bandwidth: u64,
    /// Its I-frame playlist (keyframes as byte ranges of the segments above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iframes: Option<IFramesOutcome>,
    /// PSNR against the scaled source (`--measure-quality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psnr: Option<quality::Psnr>,
}

/// A rendition's I-frame playlist, as the master lists it (`EXT-X-I-FRAME-STREAM-INF`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IFramesOutcome {
    pub playlist: String,
    /// Peak and average bit rates of the keyframes alone (their byte ranges over the time
    /// each stands for).
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    /// The video codec only.
    pub codecs: String,
    pub keyframes: usize,
}

/// The audio rendition, when audio is its own (`EXT-X-MEDIA TYPE=AUDIO`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AudioOutcome {
    pub playlist: String,
    pub group_id: String,
    /// RFC 5646 tag from the source's language tag, `und` when it has none.
    pub language: String,
    pub name: String,
    pub channels: u32,
    pub codecs: String,
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub segments: usize,
    pub bytes: u64,
}

/// The result of a successful transcode (printed by `--json`, stored in manifest.json,
/// published in `video.processed`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub source: PathBuf,
    pub output_dir: PathBuf,
    /// Seconds of output video.
    pub duration: f64,
    pub frame_rate: f64,
    pub frames_decoded: u64,
    pub frames_encoded: u64,
    /// Size of the source, read once, whole (the worker's bytes-read metric).
    #[serde(default)]
    pub source_bytes: u64,
    pub has_audio: bool,
    /// How the audio was laid out (`separate`: the `audio` rendition below). Outcomes
    /// recorded before there was a choice were muxed.
    #[serde(default = "AudioLayout::before_layouts")]
    pub audio_layout: AudioLayout,
    /// The audio rendition, when audio is separate (boxed: the outcome travels in enums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Box<AudioOutcome>>,
    /// The segments' container (`ts`, or `fmp4` with an init segment per rendition).
    #[serde(default)]
    pub segment_format: hls::SegmentFormat,
    pub renditions: Vec<RenditionOutcome>,
    pub skipped: Vec<Skipped>,
    pub thumbnail: String,
    pub master_playlist: String,
    pub elapsed_seconds: f64,
    /// Seconds each rendition's thread spent scaling, encoding and muxing (not waiting for
    /// frames), by quality: its encode speed, for the worker's metrics. A measurement like
    /// `elapsed_seconds`, kept out of `renditions` (which describe the output).
    #[serde(default)]
    pub encode_seconds: std::collections::BTreeMap<String, f64>,
    /// The threads this run was given (a fact of the run, like `encode_seconds`).
    #[serde(default)]
    pub threads: ThreadPlan,
    /// What was left out of the output and why (e.g. audio that could not be used).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Encoder threads one decoder thread keeps fed. One thread decodes the 1080p H.264 footage at
/// ~180 frames/s and a core of libx264 medium encodes ~10.7 source frames/s of the
/// 1080p/720p/480p ladder (README, "Scaling with cores"): a decoder thread feeds some 16 cores
/// of that ladder. 8 leaves room for what costs the decoder more or the encoders less (higher
/// bitrates, 4K, faster presets, a ladder of small renditions).
pub const ENCODER_THREADS_PER_DECODER_THREAD: usize = 8;

/// Decoder threads for a job whose encoders share `budget` threads: one, as long as one keeps
/// up (`budget` ≤ 8: every job of `run --jobs auto`), then one more per 8 encoder threads
/// (libavcodec's frame threading; its output is the same pictures in the same order). On a big
/// host, a job given every core would otherwise be bound by one decoder thread.
pub fn decoder_threads(budget: usize) -> usize {
    budget.div_ceil(ENCODER_THREADS_PER_DECODER_THREAD).max(1)
}

/// How a job's threads were planned (in its outcome): the budget, the decoder's threads and each
/// rendition's libx264 threads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadPlan {
    /// Encoder threads shared by the renditions (`--threads`; 0 there: one per core).
    pub budget: usize,
    pub decoder: usize,
    /// libx264 threads by quality ([`split_threads`]).
    pub x264: std::collections::BTreeMap<String, usize>,
}

/// Splits the encoder thread budget between renditions in proportion to their pixel counts,
/// at least one each (x264's cost per frame is roughly proportional to pixels; the largest
/// rendition is the critical path, so it gets the most threads).
pub fn split_threads(budget: usize, pixels: &[u64]) -> Vec<usize> {
    let max = pixels.iter().copied().max().unwrap_or(1).max(1);
    pixels
        .iter()
        .map(|&p| {
            let share = (budget as f64 * p as f64 / max as f64).ceil() as usize;
            share.clamp(1, budget.max(1))
        })
        .collect()
}

/// Opens the source without following a symlink swapped onto its (checked, canonical) path
/// since it was checked: libavformat reads the file that was opened, not the path.
fn open_checked_source(req: &TranscodeRequest) -> Result<probe::Source> {
    match &req.arriving {
        Some(a) => probe::open_arriving(&req.source, a, &req.limits),
        None => probe::open_confined(&req.source, &req.limits),
    }
}

/// Transcodes one source into an HLS ladder at `req.output_dir`, which appears only when
/// complete. Blocks the calling thread; `cancel` stops it early (Cancelled error, nothing
/// published); `progress` is called from the calling thread.
pub fn transcode(
    req: &TranscodeRequest,
    cancel: &AtomicBool,
    progress: &dyn Fn(&ProgressTick),
) -> Result<Outcome> {
    let started = Instant::now();
    req.validate()?;
    // Refused before any work: an output folder this job may not replace.
    output::check_request(req)?;
    let source = open_checked_source(req)?;
    let info = source.info.clone();
    let ladder = Ladder::plan(
        &req.qualities,
        info.video.display_width,
        info.video.display_height,
    );
    let staging = output::Staging::create(req)?;

    let decoded = pipeline::run(source, &ladder, req, staging.path(), cancel, progress);
    // A source replaced while it was read explains any decode failure, and must not be
    // published under the request's fingerprint either way. An arriving source changes while
    // it is read by design: it must be whole and match the store's digest instead.
    match &req.arriving {
        Some(a) => arriving::wait_verified(a, cancel)?,
        None => probe::check_unchanged(&info)?,
    }
    let decoded = decoded?;

    progress(&ProgressTick {
        stage: Stage::Publishing,
        frames: decoded.frames_encoded,
        total_frames: Some(decoded.frames_encoded),
        percent: 100.0,
        fps: 0.0,
        eta_seconds: Some(0.0),
    });

    let fps = decoded.frame_rate;
    let audio = match &decoded.audio {
        Some(segments) => {
            let name = hls::playlist::AUDIO_NAME;
            let init = req.segments.init_name(name);
            let media =
                hls::playlist::MediaPlaylist::measure(staging.path(), name, segments, init)?;
            media.write_to(staging.path())?;
            let (language, name) = hls::playlist::audio_language(
                info.audio.as_ref().and_then(|a| a.language.as_deref()),
            );
            Some(Box::new(AudioOutcome {
                playlist: media.file_name(),
                group_id: hls::playlist::AUDIO_GROUP.to_string(),
                language,
                name,
                channels: 2,
                codecs: AAC_LC.to_string(),
                bandwidth: media.peak_bandwidth(),
                average_bandwidth: media.average_bandwidth(),
                segments: segments.len(),
                bytes: media.total_bytes(),
            }))
        }
        None => None,
    };
    let mut renditions = Vec::new();
    for r in &decoded.renditions {
        let init = req.segments.init_name(&r.name);
        let media =
            hls::playlist::MediaPlaylist::measure(staging.path(), &r.name, &r.segments, init)?;
        media.write_to(staging.path())?;
        let iframes = hls::playlist::MediaPlaylist::iframes(
            &r.name,
            &r.segments,
            &r.iframes,
            r.frame_rate,
            media.init.clone(),
        );
        iframes.write_to(staging.path())?;
        let codecs = match decoded.has_audio {
            true => format!("{},{AAC_LC}", r.avc_codec),
            false => r.avc_codec.clone(),
        };
        // A variant plays with its audio rendition: BANDWIDTH is the sum of both peaks (the
        // only combination the master offers), AVERAGE-BANDWIDTH the sum of both averages.
        let (audio_peak, audio_average) = audio
            .as_ref()
            .map_or((0, 0), |a| (a.bandwidth, a.average_bandwidth));
        renditions.push(RenditionOutcome {
            quality: r.name.clone(),
            width: r.width,
            height: r.height,
            bitrate: r.bitrate,
            bandwidth: media.peak_bandwidth() + audio_peak,
            average_bandwidth: media.average_bandwidth() + audio_average,
            codecs,
            frame_rate: f64::from(r.frame_rate),
            segments: r.segments.len(),
            playlist: media.file_name(),
            bytes: media.total_bytes(),
            frames: r.frames,
            video_bandwidth: media.peak_bandwidth(),
            video_average_bandwidth: media.average_bandwidth(),
            iframes: Some(IFramesOutcome {
                playlist: iframes.file_name(),
                bandwidth: iframes.peak_bandwidth(),
                average_bandwidth: iframes.average_bandwidth(),
                codecs: r.avc_codec.clone(),
                keyframes: iframes.entries.len(),
            }),
            psnr: r.psnr,
        });
    }
    hls::playlist::write_master(staging.path(), &renditions, audio.as_deref())?;

    let thumbnail = thumbnail::FILE_NAME.to_string();
    let outcome = Outcome {
        source: req.source.clone(),
        output_dir: req.output_dir.clone(),
        duration: decoded.frames_encoded as f64 / f64::from(fps),
        frame_rate: f64::from(fps),
        frames_decoded: decoded.frames_decoded,
        frames_encoded: decoded.frames_encoded,
        source_bytes: info.size_bytes,
        has_audio: decoded.has_audio,
        audio_layout: req.audio_layout,
        audio,
        segment_format: req.segments,
        renditions,
        skipped: ladder.skipped.clone(),
        thumbnail,
        master_playlist: hls::playlist::MASTER.to_string(),
        elapsed_seconds: started.elapsed().as_secs_f64(),
        encode_seconds: decoded
            .renditions
            .iter()
            .map(|r| (r.name.clone(), r.busy.as_secs_f64()))
            .collect(),
        threads: decoded.threads.clone(),
        warnings: decoded.warnings.clone(),
    };
    manifest::Manifest::new(req, &info, &outcome).write_to(staging.path())?;
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(JobError::cancelled("cancelled before publishing"));
    }
    // Apple's MUST rules on what is about to be published (issue 11): a break is our bug.
    crate::check::before_publish(staging.path(), req.thread_budget())?;
    staging.publish()?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_decoder_thread_feeds_up_to_eight_encoder_threads() {
        let plan: Vec<usize> = [0, 1, 2, 8, 9, 16, 17, 24, 64]
            .iter()
            .map(|&b| decoder_threads(b))
            .collect();
        assert_eq!(plan, [1, 1, 1, 1, 2, 2, 3, 3, 8]);
    }

    #[test]
    fn the_budget_is_the_requested_threads_or_one_per_core() {
        let mut req = TranscodeRequest::new("/in.mp4", "/out").unwrap();
        assert_eq!(req.thread_budget(), num_cpus::get());
        req.threads = 17;
        assert_eq!(req.thread_budget(), 17);
    }
}
