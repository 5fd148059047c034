//! `thumbnail.jpg`: one decoded frame, taken from the job's single decode, at most 1280 px wide.

use std::path::Path;

use ffmpeg::software::scaling;
use ffmpeg::{codec, encoder, format, frame, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{JobError, Result};

pub const FILE_NAME: &str = "thumbnail.jpg";
/// Wide enough for a player's poster frame on a desktop page.
pub const MAX_WIDTH: u32 = 1280;

/// Encodes `src` as a JPEG at `path` (scaled down to `MAX_WIDTH` when wider).
pub fn write_jpeg(src: &frame::Video, path: &Path) -> Result<()> {
    let err = |what: &str, e: ffmpeg::Error| JobError::internal(format!("thumbnail {what}: {e}"));
    let sar = src.aspect_ratio();
    let sar = if sar.numerator() > 0 && sar.denominator() > 0 {
        f64::from(sar)
    } else {
        1.0
    };
    let display_w = src.width() as f64 * sar;
    let (mut w, mut h) = (display_w, src.height() as f64);
    if w > MAX_WIDTH as f64 {
        h = h * MAX_WIDTH as f64 / w;
        w = MAX_WIDTH as f64;
    }
    let even = |x: f64| (((x / 2.0).round() * 2.0) as u32).max(2);
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
