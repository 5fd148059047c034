//! One rendition, on its own thread: scale the shared decoded frames → libx264 → segmenter.
//! It also takes the shared AAC packets and muxes them in.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use ffmpeg::software::scaling;
use ffmpeg::{codec, encoder, format, frame, picture, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{JobError, Result};
use crate::ladder::RenditionPlan;
use crate::media::audio::AudioStreamSpec;
use crate::media::ffi::{self, EffectiveRate};
use crate::media::hls::{IFrame, Segment, SegmentFormat, Segmenter};
use crate::media::probe::ColorTags;
use crate::media::quality::{Psnr, QualityMeter};

/// A decoded (and oriented, constant-rate) source frame, shared read-only by every rendition.
pub struct SourceFrame {
    pub frame: Arc<frame::Video>,
    /// Output frame number: the encoder's pts.
    pub index: u64,
    /// On the keyframe grid: must become an IDR in every rendition.
    pub force_idr: bool,
}

/// What a rendition thread needs to know.
pub struct RenditionJob {
    pub plan: RenditionPlan,
    /// This rendition's rate: the decoded rate over `frame_step`.
    pub frame_rate: Rational,
    /// Take every decoded frame (1) or every other one (2: a field-rate decode of an
    /// interlaced source, for a rendition above the field-rate limit). The grid below is in
    /// this rendition's own frames.
    pub frame_step: u64,
    pub gop_frames: u64,
    pub seg_frames: u64,
    pub preset: String,
    pub threads: usize,
    pub dir: PathBuf,
    pub audio: Option<AudioStreamSpec>,
    /// Colour tags for the VUI (None: leave unspecified).
    pub color: Option<ColorTags>,
    /// Measure the rendition's PSNR against its input (the scaled source).
    pub measure_quality: bool,
    pub segments: SegmentFormat,
}

/// What a rendition thread produced.
#[derive(Debug)]
pub struct RenditionResult {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bitrate: u64,
    pub segments: Vec<Segment>,
    /// Every keyframe's byte range in the segments: the I-frame playlist.
    pub iframes: Vec<IFrame>,
    /// `avc1.PPCCLL` from the stream's own SPS.
    pub avc_codec: String,
    pub effective: EffectiveRate,
    pub frames: u64,
    /// Time this thread spent scaling, encoding and muxing (not waiting for frames): the
    /// rendition's own speed, for the worker's encode-fps metric.
    pub busy: Duration,
    /// Its frame rate (the decoded rate, or half of it).
    pub frame_rate: Rational,
    /// PSNR against the scaled source (with `measure_quality`).
    pub psnr: Option<Psnr>,
}

/// Finds the first SPS in an Annex B packet and returns `avc1.PPCCLL` (RFC 6381).
pub fn avc_codec_string(data: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 3 < data.len() {
        let start = if data[i..].starts_with(&[0, 0, 1]) {
            Some(i + 3)
        } else if data[i..].starts_with(&[0, 0, 0, 1]) {
            Some(i + 4)
        } else {
            None
        };
        if let Some(s) = start {
            if s + 3 < data.len() && data[s] & 0x1f == 7 {
                return Some(format!(
                    "avc1.{:02x}{:02x}{:02x}",
                    data[s + 1],
                    data[s + 2],
                    data[s + 3]
                ));
            }
            i = s;
        } else {
            i += 1;
        }
    }
    None
}

fn open_encoder(job: &RenditionJob) -> Result<(encoder::Video, EffectiveRate)> {
    let err = |what: &str, e: ffmpeg::Error| {
        JobError::internal(format!("libx264 for {}: {what}: {e}", job.plan.name))
    };
    let x264 = encoder::find_by_name("libx264")
        .ok_or_else(|| JobError::internal("this FFmpeg build has no libx264 encoder"))?;
    let mut ctx = codec::Context::new_with_codec(x264);
    ffi::set_thread_count(&mut ctx, job.threads);
    let mut enc = ctx.encoder().video().map_err(|e| err("context", e))?;
    if job.segments == SegmentFormat::Fmp4 {
        // SPS and PPS once, in the init segment's avcC (MP4), not in front of every IDR.
        enc.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let p = &job.plan;
    enc.set_width(p.width);
    enc.set_height(p.height);
    enc.set_format(format::Pixel::YUV420P);
    enc.set_aspect_ratio(Rational::new(1, 1));
    enc.set_time_base(job.frame_rate.invert());
    enc.set_frame_rate(Some(job.frame_rate));
    enc.set_bit_rate(p.bitrate as usize);
    // Capped VBR as in the platform's ladder: maxrate ≈ 1.1× the target, buffer ≈ 2×.
    enc.set_max_bit_rate((p.bitrate * 11 / 10) as usize);
    enc.set_gop(job.gop_frames as u32);
    // swscale writes limited-range 4:2:0; the source's matrix/primaries/transfer carry over.
    enc.set_color_range(ffmpeg::color::Range::MPEG);
    if let Some(c) = job.color {
        enc.set_colorspace(c.space);
        enc.set_color_primaries(c.primaries);
        enc.set_color_transfer_characteristic(c.transfer);
    }

    let mut opts = ffmpeg::Dictionary::new();
    opts.set("preset", &job.preset);
    opts.set("profile", "high");
    // rc_buffer_size has no setter in the wrapper: the generic `bufsize` option reaches it.
    opts.set("bufsize", &(p.bitrate * 2).to_string());
    // Keyframes only on our grid: no scene-cut IDRs that would differ between renditions,
    // closed GOPs, and a frame flagged I becomes an IDR.
    opts.set(
        "x264-params",
        &format!(
            "keyint={g}:min-keyint={g}:scenecut=0:open-gop=0",
            g = job.gop_frames
        ),
    );
    opts.set("forced-idr", "1");
    let opened = enc.open_as_with(x264, opts).map_err(|e| err("open", e))?;
    let effective = ffi::effective_rate(&opened);
    // avcodec_open2 ignores options it does not know: check the ones that shape the stream.
    if effective.buffer_size != (p.bitrate * 2) as i64
        || effective.max_rate != (p.bitrate * 11 / 10) as i64
    {
        return Err(JobError::internal(format!(
            "libx264 for {} did not take the rate control settings: {effective:?}",
            p.name
        )));
    }
    Ok((opened, effective))
}

/// Runs one rendition until its frame channel closes. `abort` set by the decode thread means
/// the job failed elsewhere: stop without finishing the files.
pub fn run(
    job: RenditionJob,
    frames: Receiver<SourceFrame>,
    audio: Option<Receiver<Arc<Packet>>>,
    abort: &AtomicBool,
) -> Result<RenditionResult> {
    let (mut encoder, effective) = open_encoder(&job)?;
    let mut segmenter = Segmenter::new(
        &job.dir,
        &job.plan.name,
        Some(&encoder),
        job.audio.as_ref(),
        job.seg_frames,
        job.frame_rate,
        job.segments,
    )?;
    let mut scaler: Option<scaling::Context> = None;
    // The previous output frame, kept for reuse once the encoder has released its buffers
    // (FFmpeg's scale filter recycles buffers from a pool the same way).
    let mut spare: Option<frame::Video> = None;
    let mut seen = Seen {
        // With a global header the SPS is in the encoder's extradata, not in the packets.
        avc_codec: avc_codec_string(&ffi::extradata(&encoder)),
        quality: match job.measure_quality {
            true => Some(QualityMeter::new(&encoder)?),
            false => None,
        },
    };
    let mut frames_in = 0u64;
    let mut busy = Duration::ZERO;
    let (w, h) = (job.plan.width, job.plan.height);

    let mut audio_rx = audio;
    let mut frames_open = true;
    while frames_open || audio_rx.is_some() {
        if abort.load(Ordering::Relaxed) {
            return Err(JobError::cancelled("job aborted"));
        }
        // Take whichever input is ready, so the decode thread never waits on us for audio
        // while we wait on it for video.
        let mut next_frame = None;
        match (&audio_rx, frames_open) {
            (Some(arx), true) => select! {
                recv(frames) -> msg => match msg {
                    Ok(f) => next_frame = Some(f),
                    Err(_) => frames_open = false,
                },
                recv(arx) -> msg => match msg {
                    Ok(p) => segmenter.push_audio((*p).clone())?,
                    Err(_) => { audio_rx = None; segmenter.end_audio()?; }
                },
            },
            (Some(arx), false) => match arx.recv() {
                Ok(p) => segmenter.push_audio((*p).clone())?,
                Err(_) => {
                    audio_rx = None;
                    segmenter.end_audio()?;
                }
            },
            (None, true) => match frames.recv() {
                Ok(f) => next_frame = Some(f),
                Err(_) => frames_open = false,
            },
            (None, false) => {}
        }
        if let Some(src) = next_frame.filter(|f| f.index % job.frame_step.max(1) == 0) {
            let working = Instant::now();
            frames_in += 1;
            let mut out = scale_into(&mut scaler, &src.frame, w, h, spare.take())?;
            out.set_pts(Some((src.index / job.frame_step.max(1)) as i64));
            out.set_kind(if src.force_idr {
                picture::Type::I
            } else {
                picture::Type::None
            });
            if let Some(q) = seen.quality.as_mut() {
                q.remember(&out)?;
            }
            encoder
                .send_frame(&out)
                .map_err(|e| JobError::internal(format!("libx264 {}: {e}", job.plan.name)))?;
            drain_encoder(&mut encoder, &mut segmenter, &mut seen, abort)?;
            if ffi::is_writable(&mut out) {
                spare = Some(out);
            }
            busy += working.elapsed();
        }
    }
    if abort.load(Ordering::Relaxed) {
        return Err(JobError::cancelled("job aborted"));
    }
    let flushing = Instant::now();
    encoder
        .send_eof()
        .map_err(|e| JobError::internal(format!("libx264 {} flush: {e}", job.plan.name)))?;
    drain_encoder(&mut encoder, &mut segmenter, &mut seen, abort)?;
    let written = segmenter.finish()?;
    busy += flushing.elapsed();
    let avc_codec = seen.avc_codec.ok_or_else(|| {
        JobError::internal(format!("no SPS found in the {} stream", job.plan.name))
    })?;
    Ok(RenditionResult {
        name: job.plan.name.clone(),
        width: w,
        height: h,
        bitrate: job.plan.bitrate,
        segments: written.segments,
        iframes: written.iframes,
        avc_codec,
        effective,
        frames: frames_in,
        busy,
        frame_rate: job.frame_rate,
        psnr: match seen.quality {
            Some(q) => q.finish()?,
            None => None,
        },
    })
}

/// Scales (and converts to 8-bit 4:2:0) into a new frame; a frame already at the right size
/// and format is referenced, not copied. The scaler is rebuilt when the input changes.
/// Public for the overhead micro-benchmark (benches/pipeline_overhead.rs).
pub fn scale(
    scaler: &mut Option<scaling::Context>,
    src: &frame::Video,
    w: u32,
    h: u32,
) -> Result<frame::Video> {
    scale_into(scaler, src, w, h, None)
}

/// `scale`, writing into `reuse` when it is a frame of the output size and format.
fn scale_into(
    scaler: &mut Option<scaling::Context>,
    src: &frame::Video,
    w: u32,
    h: u32,
    reuse: Option<frame::Video>,
) -> Result<frame::Video> {
    if src.format() == format::Pixel::YUV420P && src.width() == w && src.height() == h {
        return ffi::frame_ref(src).map_err(|e| JobError::internal(format!("frame ref: {e}")));
    }
    let fits = scaler.as_ref().is_some_and(|s| {
        let i = s.input();
        i.format == src.format() && i.width == src.width() && i.height == src.height()
    });
    if !fits {
        *scaler = Some(
            scaling::Context::get(
                src.format(),
                src.width(),
                src.height(),
                format::Pixel::YUV420P,
                w,
                h,
                // Bicubic: the ffmpeg CLI's default for `-vf scale`, so quality compares 1:1.
                scaling::Flags::BICUBIC,
            )
            .map_err(|e| JobError::internal(format!("scaler: {e}")))?,
        );
    }
    let mut out = reuse
        .filter(|f| f.width() == w && f.height() == h && f.format() == format::Pixel::YUV420P)
        .unwrap_or_else(frame::Video::empty);
    if let Some(s) = scaler.as_mut() {
        s.run(src, &mut out)
            .map_err(|e| JobError::internal(format!("scaling: {e}")))?;
    }
    Ok(out)
}

/// What the rendition learns from its encoded packets on their way to the segmenter.
#[derive(Default)]
struct Seen {
    /// `avc1.PPCCLL` of the first SPS.
    avc_codec: Option<String>,
    /// `--measure-quality`: the packets decoded again and compared with the encoder's input.
    quality: Option<QualityMeter>,
}

fn drain_encoder(
    encoder: &mut encoder::Video,
    segmenter: &mut Segmenter,
    seen: &mut Seen,
    abort: &AtomicBool,
) -> Result<()> {
    loop {
        // The flush at the end gives back a whole lookahead of frames (up to 250 at placebo).
        if abort.load(Ordering::Relaxed) {
            return Err(JobError::cancelled("job aborted"));
        }
        let mut p = Packet::empty();
        match encoder.receive_packet(&mut p) {
            Ok(()) => {
                if seen.avc_codec.is_none() {
                    seen.avc_codec = p.data().and_then(avc_codec_string);
                }
                if let Some(q) = seen.quality.as_mut() {
                    q.measure(&p)?;
                }
                segmenter.push_video(p)?;
            }
            Err(ffmpeg::Error::Eof) => return Ok(()),
            Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
            Err(e) => return Err(JobError::internal(format!("libx264: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_string_comes_from_the_first_sps() {
        // AUD, then SPS with profile 100 (High), constraints 0, level 31.
        let data = [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x67, 100, 0, 31, 0xac];
        assert_eq!(avc_codec_string(&data).as_deref(), Some("avc1.64001f"));
        assert_eq!(avc_codec_string(&[0, 0, 1, 0x65, 1, 2, 3]), None);
    }
}
