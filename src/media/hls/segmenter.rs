//! Cuts one rendition into MPEG-TS segments.
//!
//! One mpegts muxer per rendition for the whole job, its output file swapped at each cut
//! (what FFmpeg's `libavformat/hlsenc.c` does): timestamps and continuity counters stay
//! continuous across segments, and no per-file `avoid_negative_ts` shift can make segments
//! overlap. A cut happens only before a video IDR whose frame index lies on the segment grid.
//!
//! Video and audio packets arrive separately (the encoder in this thread, the shared audio
//! from the decode thread); the segmenter interleaves them by time, and puts all audio that
//! is presented before a cut into the segment that ends there.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use ffmpeg::{format, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{JobError, Result};
use crate::media::audio::AudioStreamSpec;
use crate::media::ffi;

/// How far (seconds) one stream may run ahead of the other before its packets are written
/// anyway. Bounds the memory held for badly interleaved sources (libavformat's own default
/// `max_interleave_delta` is 10 s).
const MAX_SKEW: f64 = 10.0;

/// One written segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub file_name: String,
    /// First output frame of the segment (its IDR).
    pub start_frame: u64,
    /// One past its last frame.
    pub end_frame: u64,
}

pub struct Segmenter {
    octx: format::context::Output,
    dir: PathBuf,
    name: String,
    video_tb: Rational,
    video_out_tb: Rational,
    audio: Option<(Rational, Rational)>,
    /// Segment length in frames: cuts happen at multiples of it.
    seg_frames: u64,
    segments: Vec<Segment>,
    pending_video: VecDeque<Packet>,
    pending_audio: VecDeque<Packet>,
    video_done: bool,
    audio_done: bool,
    /// Latest time (s) seen on each input, to bound the skew.
    video_seen: f64,
    audio_seen: f64,
    /// Frames of video presented so far (max pts + 1), for the last segment's end.
    frames_seen: u64,
}

fn secs(ts: i64, tb: Rational) -> f64 {
    ts as f64 * f64::from(tb)
}

fn segment_name(name: &str, index: usize) -> String {
    format!("{name}_{index:03}.ts")
}

fn io_err(path: &Path, what: &str, e: ffmpeg::Error) -> JobError {
    JobError::output_io(format!("{what} {}: {e}", path.display()))
}

impl Segmenter {
    /// Opens the first segment and writes the stream header. `video` is the opened encoder
    /// (its parameters and time base); `audio` the shared AAC stream, if any.
    pub fn new(
        dir: &Path,
        name: &str,
        video: &ffmpeg::codec::encoder::Video,
        audio: Option<&AudioStreamSpec>,
        seg_frames: u64,
    ) -> Result<Segmenter> {
        let first = dir.join(segment_name(name, 0));
        let mut octx =
            format::output_as(&first, "mpegts").map_err(|e| io_err(&first, "creating", e))?;
        let video_tb = video.time_base();
        {
            let mut st = octx
                .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::H264))
                .map_err(|e| JobError::internal(format!("mpegts video stream: {e}")))?;
            st.set_parameters(ffmpeg::codec::Parameters::from(&**video));
            st.set_time_base(video_tb);
        }
        if let Some(a) = audio {
            let mut st = octx
                .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::AAC))
                .map_err(|e| JobError::internal(format!("mpegts audio stream: {e}")))?;
            st.set_parameters(a.parameters.clone());
            st.set_time_base(a.time_base);
        }
        let mut opts = ffmpeg::Dictionary::new();
        // Timestamps are ours and continuous across segments: no per-file shifting. The mpegts
        // muxer adds 2 × max_delay to every timestamp; 0.7 s (the ffmpeg CLI's `-muxdelay`
        // default; the library's is 0) keeps B-frame DTS and the AAC priming packet (-1024
        // samples) above zero instead of wrapping the 33-bit clock.
        opts.set("avoid_negative_ts", "disabled");
        opts.set("max_delay", "700000");
        // PAT/PMT once per segment (written at its start by `resend_headers` on each swap),
        // not every 0.1 s as the muxer's default: hlsenc.c does the same. The default costs
        // ~27 kb/s per rendition, 5 % of a 240p stream.
        opts.set("pat_period", "1000000");
        opts.set("sdt_period", "1000000");
        octx.write_header_with(opts)
            .map_err(|e| io_err(&first, "writing the header of", e))?;
        let video_out_tb = octx
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(Rational::new(1, 90_000));
        let audio = audio.map(|a| {
            let out_tb = octx
                .stream(1)
                .map(|s| s.time_base())
                .unwrap_or(Rational::new(1, 90_000));
            (a.time_base, out_tb)
        });
        Ok(Segmenter {
            octx,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            video_tb,
            video_out_tb,
            audio_done: audio.is_none(),
            audio,
            seg_frames: seg_frames.max(1),
            segments: vec![Segment {
                file_name: segment_name(name, 0),
                start_frame: 0,
                end_frame: 0,
            }],
            pending_video: VecDeque::new(),
            pending_audio: VecDeque::new(),
            video_done: false,
            video_seen: 0.0,
            audio_seen: 0.0,
            frames_seen: 0,
        })
    }

    fn is_cut(&self, p: &Packet) -> bool {
        p.is_key()
            && p.pts()
                .is_some_and(|pts| pts > 0 && pts as u64 % self.seg_frames == 0)
    }

    /// The time a video packet is ordered by: its DTS, except a cut IDR, which is ordered by
    /// its presentation time so that all audio presented before the cut lands before it.
    fn video_key(&self, p: &Packet) -> f64 {
        let ts = if self.is_cut(p) { p.pts() } else { p.dts() };
        secs(ts.or(p.pts()).unwrap_or(0), self.video_tb)
    }

    fn audio_key(&self, p: &Packet) -> f64 {
        let tb = self.audio.map(|a| a.0).unwrap_or(Rational::new(1, 48_000));
        secs(p.dts().or(p.pts()).unwrap_or(0), tb)
    }

    pub fn push_video(&mut self, p: Packet) -> Result<()> {
        if let Some(pts) = p.pts() {
            self.frames_seen = self.frames_seen.max(pts.max(0) as u64 + 1);
        }
        self.video_seen = self.video_seen.max(self.video_key(&p));
        self.pending_video.push_back(p);
        self.drain(false)
    }

    pub fn push_audio(&mut self, p: Packet) -> Result<()> {
        self.audio_seen = self.audio_seen.max(self.audio_key(&p));
        self.pending_audio.push_back(p);
        self.drain(false)
    }

    pub fn end_audio(&mut self) -> Result<()> {
        self.audio_done = true;
        self.drain(false)
    }

    /// Writes every packet whose turn has come. With `all`, writes everything left.
    fn drain(&mut self, all: bool) -> Result<()> {
        loop {
            let v = self.pending_video.front().map(|p| self.video_key(p));
            let a = self.pending_audio.front().map(|p| self.audio_key(p));
            let take_video = match (v, a) {
                (None, None) => return Ok(()),
                (Some(v), Some(a)) => v <= a,
                (Some(v), None) => {
                    if all || self.audio_done || v - self.audio_seen > MAX_SKEW {
                        true
                    } else {
                        return Ok(());
                    }
                }
                (None, Some(a)) => {
                    if all || self.video_done || a - self.video_seen > MAX_SKEW {
                        false
                    } else {
                        return Ok(());
                    }
                }
            };
            if take_video {
                if let Some(p) = self.pending_video.pop_front() {
                    self.write_video(p)?;
                }
            } else if let Some(p) = self.pending_audio.pop_front() {
                self.write_audio(p)?;
            }
        }
    }

    fn write_video(&mut self, mut p: Packet) -> Result<()> {
        if self.is_cut(&p) {
            let start = p.pts().unwrap_or(0).max(0) as u64;
            self.cut(start)?;
        }
        p.set_stream(0);
        p.rescale_ts(self.video_tb, self.video_out_tb);
        p.write(&mut self.octx)
            .map_err(|e| JobError::output_io(format!("writing {} video: {e}", self.name)))?;
        Ok(())
    }

    fn write_audio(&mut self, mut p: Packet) -> Result<()> {
        let Some((tb, out_tb)) = self.audio else {
            return Ok(());
        };
        p.set_stream(1);
        p.rescale_ts(tb, out_tb);
        p.write(&mut self.octx)
            .map_err(|e| JobError::output_io(format!("writing {} audio: {e}", self.name)))?;
        Ok(())
    }

    fn cut(&mut self, start_frame: u64) -> Result<()> {
        if let Some(last) = self.segments.last_mut() {
            last.end_frame = start_frame;
        }
        let file_name = segment_name(&self.name, self.segments.len());
        let path = self.dir.join(&file_name);
        ffi::swap_output(&mut self.octx, &path).map_err(|e| io_err(&path, "starting", e))?;
        self.segments.push(Segment {
            file_name,
            start_frame,
            end_frame: start_frame,
        });
        Ok(())
    }

    /// Writes what is left, the trailer, closes the last file and returns the segments.
    pub fn finish(mut self) -> Result<Vec<Segment>> {
        self.video_done = true;
        self.audio_done = true;
        self.drain(true)?;
        let last = self
            .dir
            .join(segment_name(&self.name, self.segments.len() - 1));
        self.octx
            .write_trailer()
            .map_err(|e| io_err(&last, "finishing", e))?;
        ffi::close_output(&mut self.octx).map_err(|e| io_err(&last, "closing", e))?;
        let frames = self.frames_seen;
        if let Some(last) = self.segments.last_mut() {
            last.end_frame = frames;
        }
        // A final segment without frames (cannot happen with a cut only before a frame, but
        // cheap to guard) is dropped from the list and the disk.
        let mut segments = self.segments;
        if let Some(last) = segments.last() {
            if last.end_frame <= last.start_frame && segments.len() > 1 {
                let _ = std::fs::remove_file(self.dir.join(&last.file_name));
                segments.pop();
            }
        }
        Ok(segments)
    }
}
