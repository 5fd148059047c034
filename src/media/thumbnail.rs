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
/// writes `<output_dir>/thumbnail.jpg` upright, through a temporary name and a rename. The
/// rest of `output_dir` (an HLS ladder made earlier) is left as it is.
pub fn thumbnail_only(
    source: &Path,
    output_dir: &Path,
    time: f64,
    limits: &crate::media::Limits,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<ThumbnailOutcome> {
    use std::sync::atomic::Ordering;
    if !time.is_finite() || time < 0.0 {
        return Err(JobError::invalid_request("thumbnail time must be ≥ 0"));
    }
    let crate::media::probe::Source { mut input, info } =
        crate::media::probe::open(source, limits)?;
    let vindex = info.video.index;
    let (mut decoder, vtb) = {
        let st = input
            .stream(vindex)
            .ok_or_else(|| JobError::internal("video stream vanished"))?;
        let ctx = codec::Context::from_parameters(st.parameters())
            .map_err(|e| JobError::invalid_media(format!("video stream: {e}")))?;
        let dec = ctx.decoder().video().map_err(|e| {
            JobError::unsupported_codec(format!("cannot open the video decoder: {e}"))
        })?;
        (dec, st.time_base())
    };
    let mut chosen: Option<(frame::Video, f64)> = None;
    let mut reached = false;
    let mut take = |decoder: &mut ffmpeg::decoder::Video| -> bool {
        loop {
            let mut f = frame::Video::empty();
            if decoder.receive_frame(&mut f).is_err() {
                return false;
            }
            if f.width() == 0 || f.height() == 0 {
                continue;
            }
            let t = f
                .timestamp()
                .or(f.pts())
                .map(|ts| ts as f64 * f64::from(vtb) - info.video.start_time)
                .unwrap_or(0.0);
            let done = t >= time;
            chosen = Some((f, t.max(0.0)));
            if done {
                return true;
            }
        }
    };
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(JobError::cancelled("cancelled while decoding"));
        }
        // A fresh packet per read (rust-ffmpeg #260).
        let mut packet = Packet::empty();
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(ffmpeg::Error::InvalidData) => continue,
            Err(e) => {
                return Err(JobError::invalid_media(format!(
                    "reading the source failed: {e}"
                )))
            }
        }
        if packet.stream() != vindex || decoder.send_packet(&packet).is_err() {
            continue;
        }
        if take(&mut decoder) {
            reached = true;
            break;
        }
    }
    if !reached {
        let _ = decoder.send_eof();
        take(&mut decoder);
    }
    let (frame, taken_at) =
        chosen.ok_or_else(|| JobError::invalid_media("no decodable video frame in the source"))?;
    let upright = upright(&frame, info.video.rotation)?;

    std::fs::create_dir_all(output_dir)
        .map_err(|e| JobError::output_io(format!("creating {}: {e}", output_dir.display())))?;
    let target = output_dir.join(FILE_NAME);
    let tmp = crate::media::output::staging_path(&target, "tmp");
    let written = write_jpeg(upright.as_ref().unwrap_or(&frame), &tmp).and_then(|()| {
        std::fs::rename(&tmp, &target)
            .map_err(|e| JobError::output_io(format!("renaming to {}: {e}", target.display())))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let bytes = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
    Ok(ThumbnailOutcome {
        path: target,
        time: taken_at,
        bytes,
        source: info,
    })
}

/// The frame turned upright for a rotated source (`None`: already upright), through a
/// one-filter libavfilter graph.
fn upright(src: &frame::Video, rotation: u32) -> Result<Option<frame::Video>> {
    let orient = match rotation {
        90 => "transpose=clock",
        180 => "hflip,vflip",
        270 => "transpose=cclock",
        _ => return Ok(None),
    };
    let err = |e: ffmpeg::Error| JobError::internal(format!("thumbnail orientation: {e}"));
    let sar = src.aspect_ratio();
    let sar = if sar.numerator() > 0 && sar.denominator() > 0 {
        sar
    } else {
        Rational::new(1, 1)
    };
    let mut graph = ffmpeg::filter::Graph::new();
    let args = format!(
        "video_size={}x{}:pix_fmt={}:time_base=1/25:pixel_aspect={}/{}",
        src.width(),
        src.height(),
        ffmpeg::ffi::AVPixelFormat::from(src.format()) as i32,
        sar.numerator(),
        sar.denominator()
    );
    let buffer =
        ffmpeg::filter::find("buffer").ok_or_else(|| err(ffmpeg::Error::FilterNotFound))?;
    let sink =
        ffmpeg::filter::find("buffersink").ok_or_else(|| err(ffmpeg::Error::FilterNotFound))?;
    graph.add(&buffer, "in", &args).map_err(err)?;
    graph.add(&sink, "out", "").map_err(err)?;
    graph
        .output("in", 0)
        .and_then(|p| p.input("out", 0))
        .and_then(|p| p.parse(orient))
        .map_err(err)?;
    graph.validate().map_err(err)?;
    let mut input = src.clone();
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
