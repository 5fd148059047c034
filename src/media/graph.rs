//! libavfilter graphs, built in one place for the decode, the audio chain and the thumbnail.
//!
//! FFmpeg 5.1's buffer sources only *warn* when a frame's size, pixel format, aspect, sample
//! rate or channel layout differs from what the graph was configured with, and the filters then
//! read the new frame with the old geometry (out-of-bounds reads: a crash in `transpose`, heap
//! bytes in the picture). So every frame is compared with the graph's input first, as the ffmpeg
//! CLI does (`ifilter_send_frame` / `need_reinit` in 5.1's `fftools/ffmpeg.c`), and a changed
//! frame gets a new graph: [`VideoParams`] and [`AudioParams`] are those comparisons.

use ffmpeg::{filter, format, frame, ChannelLayout, Rational};
use ffmpeg_next as ffmpeg;

/// `<source>(args) → spec → sink`, configured: `source` is `buffer` (video) or `abuffer`
/// (audio); the sink is the matching buffer sink. The endpoints are named `in` and `out`.
pub(crate) fn simple(source: &str, args: &str, spec: &str) -> Result<filter::Graph, ffmpeg::Error> {
    let sink = if source == "abuffer" {
        "abuffersink"
    } else {
        "buffersink"
    };
    let mut graph = filter::Graph::new();
    let src = filter::find(source).ok_or(ffmpeg::Error::FilterNotFound)?;
    let sink = filter::find(sink).ok_or(ffmpeg::Error::FilterNotFound)?;
    graph.add(&src, "in", args)?;
    graph.add(&sink, "out", "")?;
    graph.output("in", 0)?.input("out", 0)?.parse(spec)?;
    graph.validate()?;
    Ok(graph)
}

/// The sample aspect ratio to use: a missing or invalid one means square pixels.
pub(crate) fn sar_or_square(sar: Rational) -> Rational {
    if sar.numerator() > 0 && sar.denominator() > 0 {
        sar
    } else {
        Rational::new(1, 1)
    }
}

/// The filters that turn a picture rotated clockwise by `rotation` degrees upright.
pub(crate) fn orientation(rotation: u32) -> Option<&'static str> {
    match rotation {
        90 => Some("transpose=clock"),
        180 => Some("hflip,vflip"),
        270 => Some("transpose=cclock"),
        _ => None,
    }
}

/// How interlaced pictures become progressive in the decode graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deinterlace {
    /// One output frame per field (50i → 50p), or one per frame (50i → 25p).
    pub field_rate: bool,
    /// Which field comes first, when the stream says; `None`: each frame's own flag.
    pub top_field_first: Option<bool>,
    /// Every frame (the stream says it is interlaced), or only frames flagged interlaced
    /// (found while decoding a stream that did not say).
    pub all_frames: bool,
}

impl Deinterlace {
    /// The filter: `bwdif` (motion-adaptive, FFmpeg's best built-in deinterlacer), or `yadif`
    /// in a build without it. Both take the same options.
    pub fn filter(&self) -> String {
        let name = if filter::find("bwdif").is_some() {
            "bwdif"
        } else {
            "yadif"
        };
        let mode = if self.field_rate {
            "send_field"
        } else {
            "send_frame"
        };
        let parity = match self.top_field_first {
            Some(true) => "tff",
            Some(false) => "bff",
            None => "auto",
        };
        let deint = if self.all_frames { "all" } else { "interlaced" };
        format!("{name}=mode={mode}:parity={parity}:deint={deint}")
    }
}

/// What a video buffer source is configured with; a frame that differs needs a new graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VideoParams {
    pub width: u32,
    pub height: u32,
    pub format: format::Pixel,
    pub sar: Rational,
    pub time_base: Rational,
}

impl VideoParams {
    pub fn of(frame: &frame::Video, time_base: Rational) -> VideoParams {
        VideoParams {
            width: frame.width(),
            height: frame.height(),
            format: frame.format(),
            sar: sar_or_square(frame.aspect_ratio()),
            time_base,
        }
    }

    pub fn buffer_args(&self) -> String {
        format!(
            "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
            self.width,
            self.height,
            ffmpeg::ffi::AVPixelFormat::from(self.format) as i32,
            self.time_base.numerator(),
            self.time_base.denominator(),
            self.sar.numerator(),
            self.sar.denominator()
        )
    }
}

/// The layout to give frames whose decoder reports only a channel count: the default layout
/// for that count, or, where FFmpeg has none (9 channels and more), the first N channel
/// positions. An empty layout makes the audio graph fail.
pub(crate) fn layout_for(layout: ChannelLayout, channels: u16) -> ChannelLayout {
    if !layout.is_empty() && layout.bits() != 0 && layout.channels() == i32::from(channels) {
        return layout;
    }
    let default = ChannelLayout::default(i32::from(channels));
    if !default.is_empty() && default.bits() != 0 {
        return default;
    }
    let mask = match channels {
        0 => 0,
        n if n >= 63 => u64::MAX >> 1,
        n => (1u64 << n) - 1,
    };
    ChannelLayout::from_bits_truncate(mask)
}

/// What an audio buffer source is configured with; a frame that differs needs a new graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AudioParams {
    pub rate: u32,
    pub format: format::Sample,
    pub layout: ChannelLayout,
}

impl AudioParams {
    /// The frame's parameters, with its layout made usable (see [`layout_for`]).
    pub fn of(frame: &frame::Audio) -> AudioParams {
        AudioParams {
            rate: frame.rate(),
            format: frame.format(),
            layout: layout_for(frame.channel_layout(), frame.channels()),
        }
    }

    pub fn abuffer_args(&self) -> String {
        format!(
            "time_base=1/{rate}:sample_rate={rate}:sample_fmt={}:channel_layout=0x{:x}",
            self.format.name(),
            self.layout.bits(),
            rate = self.rate
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_counts_without_a_default_layout_get_the_first_positions() {
        let nine = layout_for(ChannelLayout::empty(), 9);
        assert_eq!(nine.bits(), 0x1ff);
        assert_eq!(nine.channels(), 9);
        assert_eq!(layout_for(ChannelLayout::empty(), 2), ChannelLayout::STEREO);
        assert_eq!(layout_for(ChannelLayout::MONO, 1), ChannelLayout::MONO);
        // A layout that disagrees with the count is not trusted.
        assert_eq!(layout_for(ChannelLayout::STEREO, 1), ChannelLayout::MONO);
    }

    #[test]
    fn deinterlacer_follows_the_stream_or_the_frames() {
        crate::media::init().unwrap();
        let field = Deinterlace {
            field_rate: true,
            top_field_first: Some(true),
            all_frames: true,
        };
        assert_eq!(field.filter(), "bwdif=mode=send_field:parity=tff:deint=all");
        let flagged = Deinterlace {
            field_rate: false,
            top_field_first: None,
            all_frames: false,
        };
        assert_eq!(
            flagged.filter(),
            "bwdif=mode=send_frame:parity=auto:deint=interlaced"
        );
        // The graph takes it.
        let args = VideoParams {
            width: 64,
            height: 64,
            format: format::Pixel::YUV420P,
            sar: Rational::new(1, 1),
            time_base: Rational::new(1, 25),
        }
        .buffer_args();
        simple("buffer", &args, &format!("{},fps=fps=50", field.filter())).unwrap();
    }

    #[test]
    fn invalid_aspect_ratios_mean_square_pixels() {
        assert_eq!(sar_or_square(Rational::new(0, 1)), Rational::new(1, 1));
        assert_eq!(sar_or_square(Rational::new(1, 0)), Rational::new(1, 1));
        assert_eq!(sar_or_square(Rational::new(4, 3)), Rational::new(4, 3));
    }
}
