//! `thumbnail.jpg`: one decoded frame, taken from the job's single decode, at most 1280 px wide.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use ffmpeg::software::scaling;
use ffmpeg::{codec, encoder, format, frame, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{JobError, Result};
use crate::ladder::even;
use crate::media::demux::{Reader, VideoDecoder};
use crate::media::graph::{self, VideoParams};
use crate::media::{ffi, probe};

pub const FILE_NAME: &str = "thumbnail.jpg";
/// Wide enough for a player's poster frame on a desktop page.
pub const MAX_WIDTH: u32 = 1280;

/// Encodes `src` as a JPEG at `path` (scaled down to `MAX_WIDTH` when wider).
pub fn write_jpeg(src: &frame::Video, path: &Path) -> Result<()> {
    let err = |what: &str, e: ffmpeg::Error| JobError::internal(format!("thumbnail {what}: {e}"));
    let sar = f64::from(graph::sar_or_square(src.aspect_ratio()));
    let display_w = src.width() as f64 * sar;
    let (mut w, mut h) = (display_w, src.height() as f64);
    if w > MAX_WIDTH as f64 {
        h = h * MAX_WIDTH as f64 / w;
        w = MAX_WIDTH as f64;
    }
    let (w, h) = (even(w), even(h));

    let mut scaler = scaling::Context::get(
        src.format(),
        src.width(),
        src.height(),
        format::Pixel::YUVJ420P,
        w,
        h,
        scaling::Flags::BICUBIC,
    )
    .map_err(|e| err("scaler", e))?;
    let mut pic = frame::Video::empty();
    scaler.run(src, &mut pic).map_err(|e| err("scaling", e))?;
    pic.set_pts(Some(0));

    let mjpeg = encoder::find(codec::Id::MJPEG)
        .ok_or_else(|| JobError::internal("this FFmpeg build has no MJPEG encoder"))?;
    let mut enc = codec::Context::new_with_codec(mjpeg)
        .encoder()
        .video()
        .map_err(|e| err("encoder", e))?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(format::Pixel::YUVJ420P);
    enc.set_time_base(Rational::new(1, 25));
    // Fixed quality (qscale 3 ≈ the CLI's `-q:v 3`): a poster frame, not a bitrate target.
    enc.set_flags(codec::Flags::QSCALE);
    enc.set_global_quality(3 * 118);
    let mut enc = enc.open_as(mjpeg).map_err(|e| err("open", e))?;
    enc.send_frame(&pic).map_err(|e| err("encode", e))?;
    enc.send_eof().map_err(|e| err("flush", e))?;
    let mut packet = Packet::empty();
    enc.receive_packet(&mut packet)
        .map_err(|e| err("receive", e))?;
    let data = packet
        .data()
        .ok_or_else(|| JobError::internal("thumbnail encoder produced no data"))?;
    std::fs::write(path, data)
        .map_err(|e| JobError::output_io(format!("writing {}: {e}", path.display())))
}

/// What a thumbnail-only job produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThumbnailOutcome {
    /// `<output_dir>/thumbnail.jpg`.
    pub path: std::path::PathBuf,
    /// Where the frame was taken (seconds from the video's start), after clamping.
    pub time: f64,
    pub bytes: u64,
    pub source: crate::media::SourceInfo,
}

/// `video.thumbnail` jobs: decodes the source up to `time` (clamped to the last frame), and
/// writes `<output_dir>/thumbnail.jpg` upright, under the output's lock and through the
/// directory opened without following symlinks (see `output::add_file`). The rest of
/// `output_dir` (an HLS ladder made earlier) is left as it is.
pub fn thumbnail_only(
    source: &Path,
    output_dir: &Path,
    time: f64,
    limits: &crate::media::Limits,
    cancel: &AtomicBool,
) -> Result<ThumbnailOutcome> {
    if !time.is_finite() || time < 0.0 {
        return Err(JobError::invalid_request("thumbnail time must be ≥ 0"));
    }
    let probe::Source { mut input, info } = probe::open_confined(source, limits)?;
    let mut video = VideoDecoder::open(&input, info.video.index, limits, 1)?;
    let (frame, taken_at) = decode_until(&mut input, &mut video, &info, time, cancel)?;
    let upright = upright(&frame, info.video.rotation)?;
    probe::check_unchanged(&info)?;

    let bytes = crate::media::output::add_file(output_dir, FILE_NAME, |tmp| {
        write_jpeg(upright.as_ref().unwrap_or(&frame), tmp)
    })?;
    Ok(ThumbnailOutcome {
        path: output_dir.join(FILE_NAME),
        time: taken_at,
        bytes,
        source: info,
    })
}

/// The first frame at or after `time` (seconds from the video's start), or the last one, and
/// where it was taken.
fn decode_until(
    input: &mut ffmpeg::format::context::Input,
    video: &mut VideoDecoder,
    info: &crate::media::SourceInfo,
    time: f64,
    cancel: &AtomicBool,
) -> Result<(frame::Video, f64)> {
    let mut chosen: Option<(frame::Video, f64)> = None;
    let mut take = |video: &mut VideoDecoder| -> Result<bool> {
        while let Some((f, ts)) = video.receive()? {
            let t = video.seconds(ts) - info.video.start_time;
            chosen = Some((f, t.max(0.0)));
            if t >= time {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let mut reader = Reader::default();
    let mut reached = false;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(JobError::cancelled("cancelled while decoding"));
        }
        let Some(packet) = reader.next(input)? else {
            break;
        };
        if packet.stream() != video.index {
            continue;
        }
        video.send(&packet)?;
        if take(video)? {
            reached = true;
            break;
        }
    }
    if !reached {
        video.send_eof();
        take(video)?;
    }
    chosen.ok_or_else(|| JobError::invalid_media("no decodable video frame in the source"))
}

/// The frame turned upright for a rotated source (`None`: already upright), through a
/// graph built for this very frame.
fn upright(src: &frame::Video, rotation: u32) -> Result<Option<frame::Video>> {
    let Some(orient) = graph::orientation(rotation) else {
        return Ok(None);
    };
    let err = |e: ffmpeg::Error| JobError::invalid_media(format!("thumbnail orientation: {e}"));
    let params = VideoParams::of(src, Rational::new(1, 25));
    let mut graph = graph::simple("buffer", &params.buffer_args(), orient).map_err(err)?;
    // A new reference to the same pixels: only the timestamp differs.
    let mut input = ffi::frame_ref(src).map_err(err)?;
    input.set_pts(Some(0));
    if let Some(mut s) = graph.get("in") {
        s.source().add(&input).map_err(err)?;
        s.source().flush().map_err(err)?;
    }
    let mut out = frame::Video::empty();
    match graph.get("out") {
        Some(mut s) => s.sink().frame(&mut out).map_err(err)?,
        None => return Err(JobError::internal("thumbnail orientation: no sink")),
    }
    Ok(Some(out))
}
