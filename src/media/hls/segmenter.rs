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
//!
//! The same segmenter writes the three layouts: video + audio (`--audio muxed`), video only
//! (a rendition whose audio is its own rendition), and audio only (that audio rendition, cut
//! at the first packet presented at or after each grid time, as the muxed layout cuts it).
//!
//! Each video keyframe's byte range is recorded as it is written (the AVIO position before
//! and after the muxer writes its access unit), then narrowed to its own TS packets once the
//! file is closed: that is the I-frame playlist's EXT-X-BYTERANGE, with no second encode.

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

/// MPEG-TS packet size.
const TS_PACKET: u64 = 188;

/// The container of the segments: MPEG-TS (`.ts`), or fragmented MP4 / CMAF (an init segment
/// `<name>_init.mp4` with the codec setup, then `.m4s` media segments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentFormat {
    #[default]
    Ts,
    Fmp4,
}

impl SegmentFormat {
    fn extension(self) -> &'static str {
        match self {
            SegmentFormat::Ts => "ts",
            SegmentFormat::Fmp4 => "m4s",
        }
    }

    /// The init segment of rendition `name` (fMP4 only).
    pub fn init_name(self, name: &str) -> Option<String> {
        (self == SegmentFormat::Fmp4).then(|| format!("{name}_init.mp4"))
    }
}

named_enum!(SegmentFormat, "segment format", { Ts => "ts", Fmp4 => "fmp4" });

/// fMP4 timestamps are shifted by this much (seconds), as the mpegts muxer shifts its own by
/// 2 × max_delay: B-frame DTS and the AAC priming packet start before zero, and a track
/// fragment's decode time (`tfdt`) cannot be negative.
const FMP4_SHIFT: f64 = 1.4;

/// One written segment.
#[derive(Debug, Clone)]
pub struct Segment {
    pub file_name: String,
    /// First output frame of the segment (its IDR); for an audio-only segment, its first
    /// sample.
    pub start_frame: u64,
    /// One past its last frame (sample).
    pub end_frame: u64,
    /// Seconds of media it presents: frames (samples) over the stream's rate.
    pub duration: f64,
}

/// A video keyframe where an I-frame playlist points: the TS packets that carry its access
/// unit, from the one holding its PES start to the last one of that PES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IFrame {
    /// Index of the segment (file) that holds it.
    pub segment: usize,
    pub offset: u64,
    pub length: u64,
    /// Its output frame number (presentation order).
    pub frame: u64,
}

/// What a segmenter wrote: the segments, and the keyframes (video only) in order.
#[derive(Debug, Clone, Default)]
pub struct Segmented {
    pub segments: Vec<Segment>,
    pub iframes: Vec<IFrame>,
}

pub struct Segmenter {
    octx: format::context::Output,
    dir: PathBuf,
    name: String,
    format: SegmentFormat,
    /// fMP4: [`FMP4_SHIFT`] in the muxer's video and audio time bases.
    shift: (i64, i64),
    /// The video's time base (one tick a frame) and the muxer's; `None`: audio only.
    video: Option<(Rational, Rational)>,
    /// The TS PID the muxer gave the video stream.
    video_pid: u16,
    audio: Option<(Rational, Rational)>,
    /// Stream indices in the muxer.
    video_index: usize,
    audio_index: usize,
    /// Segment length in frames: cuts happen at multiples of it.
    seg_frames: u64,
    /// Audio only: segment length in seconds, and the next cut time (seconds).
    seg_seconds: f64,
    next_audio_cut: f64,
    /// Audio only: the end of the last packet written (samples), for the last segment.
    audio_end: i64,
    segments: Vec<Segment>,
    iframes: Vec<IFrame>,
    /// Keyframes of the open file whose ranges still hold the headers written before them.
    unresolved: Vec<IFrame>,
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

fn segment_name(name: &str, index: usize, format: SegmentFormat) -> String {
    format!("{name}_{index:03}.{}", format.extension())
}

fn io_err(path: &Path, what: &str, e: ffmpeg::Error) -> JobError {
    JobError::output_io(format!("{what} {}: {e}", path.display()))
}

impl Segmenter {
    /// Opens the first segment and writes the stream header. `video` is the opened encoder
    /// (its parameters and time base) and `frame_rate` its rate; `audio` the shared AAC
    /// stream. At least one of them must be given.
    pub fn new(
        dir: &Path,
        name: &str,
        video: Option<&ffmpeg::codec::encoder::Video>,
        audio: Option<&AudioStreamSpec>,
        seg_frames: u64,
        frame_rate: Rational,
        segments: SegmentFormat,
    ) -> Result<Segmenter> {
        let first = dir.join(segment_name(name, 0, segments));
        // fMP4: the header (ftyp + an empty moov) goes into the init segment, then the output
        // moves on to the first media segment.
        let (header_path, muxer) = match segments.init_name(name) {
            Some(init) => (dir.join(init), "mp4"),
            None => (first.clone(), "mpegts"),
        };
        let mut octx = format::output_as(&header_path, muxer)
            .map_err(|e| io_err(&header_path, "creating", e))?;
        let mut next_index = 0;
        let video_tb = match video {
            Some(video) => {
                let mut st = octx
                    .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::H264))
                    .map_err(|e| JobError::internal(format!("{muxer} video stream: {e}")))?;
                st.set_parameters(ffmpeg::codec::Parameters::from(&**video));
                st.set_time_base(video.time_base());
                next_index += 1;
                Some(video.time_base())
            }
            None => None,
        };
        if let Some(a) = audio {
            let mut st = octx
                .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::AAC))
                .map_err(|e| JobError::internal(format!("{muxer} audio stream: {e}")))?;
            st.set_parameters(a.parameters.clone());
            st.set_time_base(a.time_base);
        }
        if video.is_none() && audio.is_none() {
            return Err(JobError::internal("a segmenter needs video or audio"));
        }
        let mut opts = ffmpeg::Dictionary::new();
        // Timestamps are ours and continuous across segments: no per-file shifting.
        opts.set("avoid_negative_ts", "disabled");
        match segments {
            SegmentFormat::Ts => {
                // The mpegts muxer adds 2 × max_delay to every timestamp; 0.7 s (the ffmpeg
                // CLI's `-muxdelay` default; the library's is 0) keeps B-frame DTS and the AAC
                // priming packet (-1024 samples) above zero instead of wrapping the 33-bit
                // clock. The same value in every segmenter of a job keeps separate audio and
                // video renditions on one clock.
                opts.set("max_delay", "700000");
                // PAT/PMT once per segment (written at its start by `resend_headers` on each
                // swap), not every 0.1 s as the muxer's default: hlsenc.c does the same. The
                // default costs ~27 kb/s per rendition, 5 % of a 240p stream.
                opts.set("pat_period", "1000000");
                opts.set("sdt_period", "1000000");
            }
            SegmentFormat::Fmp4 => {
                // A fragment at every keyframe (each I-frame playlist entry is a moof and its
                // keyframe), the moov written up front without samples (the init segment),
                // sample offsets from their moof (CMAF), each track's decode time in `tfdt`
                // as given (`frag_discont`, without an edit list), no trailer boxes.
                opts.set(
                    "movflags",
                    "+frag_keyframe+empty_moov+default_base_moof+frag_discont+skip_trailer",
                );
                opts.set("use_editlist", "0");
            }
        }
        octx.write_header_with(opts)
            .map_err(|e| io_err(&header_path, "writing the header of", e))?;
        if segments == SegmentFormat::Fmp4 {
            ffi::swap_output(&mut octx, &first).map_err(|e| io_err(&first, "starting", e))?;
        }
        let out_tb = |i: usize| {
            octx.stream(i)
                .map(|s| s.time_base())
                .unwrap_or(Rational::new(1, 90_000))
        };
        let video = video_tb.map(|tb| (tb, out_tb(0)));
        let audio = audio.map(|a| (a.time_base, out_tb(next_index)));
        // libavformat's mpegts muxer numbers PIDs from 0x100 and stores each in the stream id.
        let video_pid = octx
            .stream(0)
            .map(|s| s.id())
            .filter(|id| (0x10..0x1fff).contains(id))
            .unwrap_or(0x100) as u16;
        let seg_frames = seg_frames.max(1);
        let seg_seconds = seg_frames as f64 / f64::from(frame_rate).max(1e-9);
        let shift_in = |tb: Option<(Rational, Rational)>| match (segments, tb) {
            (SegmentFormat::Fmp4, Some((_, out))) => {
                (FMP4_SHIFT / f64::from(out).max(1e-12)).round() as i64
            }
            _ => 0,
        };
        Ok(Segmenter {
            octx,
            dir: dir.to_path_buf(),
            name: name.to_string(),
            format: segments,
            shift: (shift_in(video), shift_in(audio)),
            video_done: video.is_none(),
            video,
            video_pid,
            audio_done: audio.is_none(),
            audio,
            video_index: 0,
            audio_index: next_index,
            seg_frames,
            seg_seconds,
            next_audio_cut: seg_seconds,
            audio_end: 0,
            segments: vec![Segment {
                file_name: segment_name(name, 0, segments),
                start_frame: 0,
                end_frame: 0,
                duration: 0.0,
            }],
            iframes: Vec::new(),
            unresolved: Vec::new(),
            pending_video: VecDeque::new(),
            pending_audio: VecDeque::new(),
            video_seen: 0.0,
            audio_seen: 0.0,
            frames_seen: 0,
        })
    }

    fn video_tb(&self) -> Rational {
        self.video.map(|v| v.0).unwrap_or(Rational::new(1, 25))
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
        secs(ts.or(p.pts()).unwrap_or(0), self.video_tb())
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
        let Some((tb, out_tb)) = self.video else {
            return Ok(());
        };
        if self.is_cut(&p) {
            let start = p.pts().unwrap_or(0).max(0) as u64;
            self.cut(start)?;
        }
        let key = p.is_key();
        let frame = p.pts().unwrap_or(0).max(0) as u64;
        // One frame: libx264's packets carry no duration, and an MP4 fragment's last sample
        // needs one.
        if p.duration() <= 0 {
            p.set_duration(1);
        }
        p.set_stream(self.video_index);
        p.rescale_ts(tb, out_tb);
        self.shift_packet(&mut p, self.shift.0);
        let before = ffi::output_position(&mut self.octx);
        p.write(&mut self.octx)
            .map_err(|e| JobError::output_io(format!("writing {} video: {e}", self.name)))?;
        let after = ffi::output_position(&mut self.octx);
        if !key {
            return Ok(());
        }
        let segment = self.segments.len() - 1;
        let range = match (self.format, before, after) {
            // The mpegts muxer writes a video packet at once, as one PES (only audio is
            // gathered into larger PES packets): what it adds to the file during this call is
            // this access unit, after any PAT/PMT it resends first.
            (SegmentFormat::Ts, Some(before), Some(after)) => Some((before, after - before)),
            // The mp4 muxer wrote the previous fragment when this keyframe came (a fragment
            // starts at each keyframe) and holds this one: its moof starts where the file
            // ends now; its length is read back once the file is closed.
            (SegmentFormat::Fmp4, _, Some(after)) => Some((after, 0)),
            _ => None,
        };
        if let Some((offset, length)) = range {
            self.unresolved.push(IFrame {
                segment,
                offset,
                length,
                frame,
            });
        }
        Ok(())
    }

    /// fMP4: moves a packet (in the muxer's time base) by the constant shift.
    fn shift_packet(&self, p: &mut Packet, shift: i64) {
        if shift != 0 {
            p.set_pts(p.pts().map(|t| t + shift));
            p.set_dts(p.dts().map(|t| t + shift));
        }
    }

    fn write_audio(&mut self, mut p: Packet) -> Result<()> {
        let Some((tb, out_tb)) = self.audio else {
            return Ok(());
        };
        if self.video.is_none() {
            // Audio only: the packet presented at or after the grid time opens the segment,
            // as in the muxed layout (where the cut IDR is ordered by its presentation time).
            let pts = p.pts().unwrap_or(0);
            if secs(pts, tb) >= self.next_audio_cut - 1e-9 {
                while secs(pts, tb) >= self.next_audio_cut - 1e-9 {
                    self.next_audio_cut += self.seg_seconds;
                }
                self.cut(pts.max(0) as u64)?;
            }
            let duration = if p.duration() > 0 { p.duration() } else { 1024 };
            self.audio_end = self.audio_end.max(pts + duration);
        }
        p.set_stream(self.audio_index);
        p.rescale_ts(tb, out_tb);
        self.shift_packet(&mut p, self.shift.1);
        p.write(&mut self.octx)
            .map_err(|e| JobError::output_io(format!("writing {} audio: {e}", self.name)))?;
        Ok(())
    }

    /// Seconds that `ticks` of this segmenter's main stream last.
    fn seconds(&self, ticks: u64) -> f64 {
        match self.video.or(self.audio) {
            Some((tb, _)) => ticks as f64 * f64::from(tb),
            None => 0.0,
        }
    }

    /// Ends the open segment at `end` (frames, or samples for audio only).
    fn close_segment(&mut self, end: u64) {
        let tick = self.seconds(1);
        if let Some(last) = self.segments.last_mut() {
            last.end_frame = end;
            last.duration = end.saturating_sub(last.start_frame) as f64 * tick;
        }
    }

    fn cut(&mut self, start_frame: u64) -> Result<()> {
        self.close_segment(start_frame);
        let file_name = segment_name(&self.name, self.segments.len(), self.format);
        let path = self.dir.join(&file_name);
        ffi::swap_output(&mut self.octx, &path).map_err(|e| io_err(&path, "starting", e))?;
        self.resolve_iframes()?;
        self.segments.push(Segment {
            file_name,
            start_frame,
            end_frame: start_frame,
            duration: 0.0,
        });
        Ok(())
    }

    /// The previous file is closed: narrows its keyframes' ranges to their own TS packets.
    fn resolve_iframes(&mut self) -> Result<()> {
        if self.unresolved.is_empty() {
            return Ok(());
        }
        let mut frames = std::mem::take(&mut self.unresolved);
        let Some(segment) = frames.first().map(|f| f.segment) else {
            return Ok(());
        };
        let path = self
            .dir
            .join(segment_name(&self.name, segment, self.format));
        for f in &mut frames {
            match self.format {
                SegmentFormat::Ts => narrow_to_pes(&path, self.video_pid, f)?,
                // The video is the muxer's first track: track_ID 1.
                SegmentFormat::Fmp4 => keyframe_fragment(&path, 1, f)?,
            }
        }
        self.iframes.extend(frames);
        Ok(())
    }

    /// Writes what is left, the trailer, closes the last file and returns what was written.
    pub fn finish(mut self) -> Result<Segmented> {
        self.video_done = true;
        self.audio_done = true;
        self.drain(true)?;
        let last = self.dir.join(segment_name(
            &self.name,
            self.segments.len() - 1,
            self.format,
        ));
        // The last fragment (fMP4) or the muxer's buffered PES packets (TS) into the file.
        ffi::flush_output(&mut self.octx).map_err(|e| io_err(&last, "finishing", e))?;
        self.octx
            .write_trailer()
            .map_err(|e| io_err(&last, "finishing", e))?;
        ffi::close_output(&mut self.octx).map_err(|e| io_err(&last, "closing", e))?;
        self.resolve_iframes()?;
        let end = match self.video {
            Some(_) => self.frames_seen,
            None => self.audio_end.max(0) as u64,
        };
        self.close_segment(end);
        // A final segment without frames (cannot happen with a cut only before a frame, but
        // cheap to guard) is dropped from the list and the disk.
        let mut segments = std::mem::take(&mut self.segments);
        if let Some(last) = segments.last() {
            if last.end_frame <= last.start_frame && segments.len() > 1 {
                let _ = std::fs::remove_file(self.dir.join(&last.file_name));
                segments.pop();
            }
        }
        Ok(Segmented {
            segments,
            iframes: std::mem::take(&mut self.iframes),
        })
    }
}

/// Moves `f.offset` forward to the TS packet that starts the video PES (skipping the PAT/PMT
/// the muxer resent before it), keeping the end where it was.
fn narrow_to_pes(path: &Path, pid: u16, f: &mut IFrame) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let end = f.offset + f.length;
    let err = |e: std::io::Error| JobError::output_io(format!("reading {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(err)?;
    file.seek(SeekFrom::Start(f.offset)).map_err(err)?;
    // Headers before a PES are a few packets (SDT, PAT, PMT): 16 is ample.
    let want = (end - f.offset).min(16 * TS_PACKET) as usize;
    let mut buf = vec![0u8; want];
    file.read_exact(&mut buf).map_err(err)?;
    let start = buf
        .chunks_exact(TS_PACKET as usize)
        .position(|ts| ts_pes_start(ts) == Some(pid))
        .ok_or_else(|| {
            JobError::internal(format!(
                "{}: no video PES start at byte {} (the keyframe's write)",
                path.display(),
                f.offset
            ))
        })?;
    f.offset += start as u64 * TS_PACKET;
    f.length = end - f.offset;
    Ok(())
}

/// Sets `f.length` to the keyframe's fragment from its moof to the end of its first video
/// sample (the keyframe): moof, mdat header, keyframe.
fn keyframe_fragment(path: &Path, track_id: u32, f: &mut IFrame) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let err = |e: std::io::Error| JobError::output_io(format!("reading {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(err)?;
    file.seek(SeekFrom::Start(f.offset)).map_err(err)?;
    // The moof of a fragment of a few seconds is a few kB (a trun entry per sample).
    let mut head = Vec::new();
    file.take(1 << 20).read_to_end(&mut head).map_err(err)?;
    f.length = super::fmp4::first_sample_end(&head, track_id).ok_or_else(|| {
        JobError::internal(format!(
            "{}: no fragment with a video sample at byte {} (the keyframe's write)",
            path.display(),
            f.offset
        ))
    })?;
    Ok(())
}

/// The PID of a TS packet that starts a PES (payload_unit_start_indicator set), if it does.
fn ts_pes_start(ts: &[u8]) -> Option<u16> {
    if ts.len() < 4 || ts[0] != 0x47 || ts[1] & 0x40 == 0 {
        return None;
    }
    Some((u16::from(ts[1] & 0x1f) << 8) | u16::from(ts[2]))
}
