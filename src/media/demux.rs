//! Reading a source, shared by the decode and the thumbnail: packets with a bound on read
//! errors, and the video decoder with the job's limits applied to every decoded frame.

use ffmpeg::{codec, decoder, format, frame, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{JobError, Result};
use crate::media::ffi;
use crate::media::probe::Limits;

/// Consecutive unreadable packets after which the source is taken as ended (the ffmpeg CLI
/// ends at the first read error); without a bound a broken file could spin forever.
pub(crate) const MAX_READ_ERRORS: u32 = 100;

/// Packets of one source, a fresh packet per read (reading into a reused packet leaks:
/// rust-ffmpeg issue #260).
#[derive(Default)]
pub(crate) struct Reader {
    consecutive_errors: u32,
    /// Packets that could not be read, over the whole source.
    pub errors: u64,
}

impl Reader {
    /// The next packet, or `None` at the end of the source (or after too many read errors).
    pub fn next(&mut self, input: &mut format::context::Input) -> Result<Option<Packet>> {
        loop {
            let mut packet = Packet::empty();
            match packet.read(input) {
                Ok(()) => {
                    self.consecutive_errors = 0;
                    return Ok(Some(packet));
                }
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::InvalidData) => {
                    self.errors += 1;
                    self.consecutive_errors += 1;
                    if self.consecutive_errors >= MAX_READ_ERRORS {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    return Err(JobError::invalid_media(format!(
                        "reading the source failed: {e}"
                    )))
                }
            }
        }
    }
}

/// One frame at `rate` in `time_base` ticks, at least 1 (1 for an unknown rate).
pub(crate) fn ticks_per_frame(rate: Rational, time_base: Rational) -> i64 {
    let ticks = 1.0 / (f64::from(rate) * f64::from(time_base));
    if ticks.is_finite() {
        (ticks.round() as i64).max(1)
    } else {
        1
    }
}

/// The source's video decoder. Every frame it returns is within the job's size limits and
/// has a timestamp.
pub(crate) struct VideoDecoder {
    decoder: decoder::Video,
    pub index: usize,
    pub time_base: Rational,
    limits: Limits,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Where the previous frame ended (its timestamp + its duration, stream time base): the
    /// timestamp given to a frame that comes out of the decoder without one.
    next_ts: i64,
    /// One frame at the stream's nominal rate, for frames whose duration is unknown.
    nominal_step: i64,
}

impl VideoDecoder {
    /// Opens the decoder of the video stream `index` on `threads` threads (frame threading
    /// beyond one).
    pub fn open(
        input: &format::context::Input,
        index: usize,
        limits: &Limits,
        threads: usize,
    ) -> Result<VideoDecoder> {
        let st = input
            .stream(index)
            .ok_or_else(|| JobError::internal("video stream vanished"))?;
        let mut ctx = codec::Context::from_parameters(st.parameters())
            .map_err(|e| JobError::invalid_media(format!("video stream: {e}")))?;
        // `threads` from `media::decoder_threads`: one for a job of up to 8 encoder threads
        // (decoding is ~5 % of the job's CPU and the encoders keep every core busy; frame
        // threads would only add pictures in flight: measured -11 MB peak RSS on the 10 s 1080p
        // ladder with one, same wall time), frame threads beyond.
        ffi::set_thread_count(&mut ctx, threads.max(1));
        let codec = decoder::find(st.parameters().id()).ok_or_else(|| {
            JobError::unsupported_codec("no decoder for the video codec in this FFmpeg build")
        })?;
        // The decoder itself refuses pictures larger than the limits allow (its buffers are
        // allocated before we see the frame): a few bytes of header cannot make it allocate GBs.
        // It checks its padded size (width aligned to the SIMD stride, up to 64, and the coded
        // height, up to 16 more), hence the margin; the exact limits are checked on every frame.
        let mut options = ffmpeg::Dictionary::new();
        let max_pixels = (u64::from(limits.max_width) + 128) * (u64::from(limits.max_height) + 128);
        options.set("max_pixels", &max_pixels.min(i32::MAX as u64).to_string());
        let decoder = ctx
            .decoder()
            .open_as_with(codec, options)
            .and_then(|d| d.video())
            .map_err(|e| {
                JobError::unsupported_codec(format!("cannot open the video decoder: {e}"))
            })?;
        let time_base = st.time_base();
        let nominal_step = ticks_per_frame(ffi::guess_frame_rate(input, index), time_base);
        Ok(VideoDecoder {
            decoder,
            index,
            time_base,
            limits: *limits,
            errors: 0,
            last_error: None,
            next_ts: st.start_time().max(0),
            nominal_step,
        })
    }

    /// Feeds one packet of the video stream; a packet the decoder refuses is counted, not fatal,
    /// unless it is refused for a picture size over the limits (the decoder has taken the new
    /// size from the stream headers by then, and refused to allocate it: `max_pixels`).
    pub fn send(&mut self, packet: &Packet) -> Result<()> {
        if let Err(e) = self.decoder.send_packet(packet) {
            self.note_error(e);
        }
        self.check_size(self.decoder.width(), self.decoder.height())
    }

    fn check_size(&self, width: u32, height: u32) -> Result<()> {
        if width > self.limits.max_width || height > self.limits.max_height {
            return Err(JobError::limit_exceeded(format!(
                "a frame of the video is {width}x{height}, over the limit of {}x{}",
                self.limits.max_width, self.limits.max_height
            )));
        }
        Ok(())
    }

    pub fn send_eof(&mut self) {
        let _ = self.decoder.send_eof();
    }

    fn note_error(&mut self, e: ffmpeg::Error) {
        self.errors += 1;
        self.last_error = Some(e.to_string());
    }

    /// The next decoded picture and its timestamp (stream time base, also set as the frame's
    /// pts), `None` when the decoder needs more input. A picture over the size limits fails
    /// the job: headers can lie, and sizes can change mid-stream.
    ///
    /// A picture the decoder could not time (no best-effort timestamp, no pts: a damaged or
    /// missing packet timestamp) is placed right after the previous one, as the ffmpeg CLI
    /// does (`fftools/ffmpeg_dec.c` extrapolates from the last frame's pts and duration).
    /// Left without one it would reach the `fps` filter as AV_NOPTS_VALUE, which the filter
    /// turns into a huge output time and fills with copies of the last picture, forever.
    pub fn receive(&mut self) -> Result<Option<(frame::Video, i64)>> {
        loop {
            let mut f = frame::Video::empty();
            match self.decoder.receive_frame(&mut f) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(None),
                Err(e) => {
                    self.note_error(e);
                    return Ok(None);
                }
            }
            if f.width() == 0 || f.height() == 0 {
                continue;
            }
            self.check_size(f.width(), f.height())?;
            let ts = f.timestamp().or(f.pts()).unwrap_or(self.next_ts);
            let duration = f.packet().duration;
            let step = if duration > 0 {
                duration
            } else {
                self.nominal_step
            };
            self.next_ts = ts.saturating_add(step);
            f.set_pts(Some(ts));
            return Ok(Some((f, ts)));
        }
    }

    /// A frame's time in seconds from the stream's zero (before subtracting the start time).
    pub fn seconds(&self, ts: i64) -> f64 {
        ts as f64 * f64::from(self.time_base)
    }
}
