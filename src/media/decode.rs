//! The single decode of a job, on the calling thread: demux → video decode → orientation and
//! constant frame rate (libavfilter `transpose` + `fps`) → `Arc<Frame>` to every rendition;
//! audio packets → the shared AAC chain → every rendition; the thumbnail on the way.
//!
//! Every decoded frame is checked against the job's limits and against the filter graph's
//! input; a frame whose size, pixel format or aspect changed gets a new graph (the old one is
//! drained first), so output frames stay continuous whatever the source does mid-stream.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ffmpeg::{filter, format, frame, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{ErrorKind, JobError, Result};
use crate::media::audio::AudioChain;
use crate::media::demux::{ticks_per_frame, Reader, VideoDecoder};
use crate::media::graph::{self, VideoParams};
use crate::media::probe::SourceInfo;
use crate::media::rendition::{RenditionResult, SourceFrame};
use crate::media::{ffi, thumbnail, ProgressTick, Stage, TranscodeRequest};

/// Progress callbacks at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The longest jump allowed between consecutive video frames. The `fps` filter fills a gap
/// by repeating the last picture, so without a bound two frames 6 hours apart in a 10 KB file
/// would cost 6 hours of encoding for every rendition. A minute still lets slideshows through.
pub(crate) const MAX_GAP_SECONDS: f64 = 60.0;

pub(crate) struct Decoded {
    pub frames_decoded: u64,
    pub frames_encoded: u64,
    pub has_audio: bool,
    /// The decoded rate (the source's frame rate, or its field rate when deinterlaced to it).
    pub frame_rate: Rational,
    /// The audio rendition's segments, when audio is separate.
    pub audio: Option<Vec<crate::media::hls::Segment>>,
    pub renditions: Vec<RenditionResult>,
    /// What was left out of the output and why (audio that could not be used…).
    pub warnings: Vec<String>,
    pub threads: crate::media::ThreadPlan,
}

/// Where the decode sends its output, and the keyframe grid.
pub(crate) struct Outputs {
    pub frames: Vec<Sender<SourceFrame>>,
    pub audio: Option<AudioLane>,
    pub gop_frames: u64,
    pub seg_frames: u64,
    /// The graph's output rate (the source's frame rate, or its field rate).
    pub frame_rate: Rational,
    /// The stream is interlaced: how the graph deinterlaces it.
    pub deinterlace: Option<graph::Deinterlace>,
}

/// The audio chain and the renditions' audio channels.
pub(crate) struct AudioLane {
    chain: AudioChain,
    txs: Vec<Sender<Arc<Packet>>>,
}

impl AudioLane {
    pub fn new(chain: AudioChain, txs: Vec<Sender<Arc<Packet>>>) -> AudioLane {
        AudioLane { chain, txs }
    }
}

/// Sends one AAC packet to every rendition, as soon as it is made.
fn send_audio(txs: &[Sender<Arc<Packet>>], p: Packet, cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(JobError::cancelled("cancelled while encoding audio"));
    }
    let p = Arc::new(p);
    for tx in txs {
        if tx.send(Arc::clone(&p)).is_err() {
            // The rendition has stopped: its own error explains why.
            return Err(JobError::new(ErrorKind::Cancelled, "a rendition stopped"));
        }
    }
    Ok(())
}

/// What the decode counted, once its channels are closed.
pub(crate) struct Counts {
    pub frames_decoded: u64,
    pub frames_out: u64,
    pub warnings: Vec<String>,
}

pub(crate) struct DecodeLoop<'a> {
    info: &'a SourceInfo,
    req: &'a TranscodeRequest,
    dir: &'a Path,
    cancel: &'a AtomicBool,
    progress: &'a dyn Fn(&ProgressTick),
    fps: Rational,
    out: Outputs,
    frames_decoded: u64,
    frames_out: u64,
    /// Orientation + constant frame rate, and the frame parameters it was built for.
    graph: Option<(filter::Graph, VideoParams)>,
    /// The current graph deinterlaces.
    graph_deinterlaces: bool,
    thumbnail_taken: bool,
    last_frame: Option<Arc<frame::Video>>,
    started: Instant,
    last_tick: Instant,
    /// Where the video ends (source time base): last frame's timestamp + one frame.
    end_pts: Option<i64>,
    /// The latest video frame time seen (seconds from the video's start).
    latest: Option<f64>,
    /// Where the audio packets read so far end (seconds from the video's start).
    audio_end: f64,
    warnings: Vec<String>,
}

impl<'a> DecodeLoop<'a> {
    pub fn new(
        info: &'a SourceInfo,
        req: &'a TranscodeRequest,
        dir: &'a Path,
        cancel: &'a AtomicBool,
        progress: &'a dyn Fn(&ProgressTick),
        out: Outputs,
    ) -> DecodeLoop<'a> {
        DecodeLoop {
            info,
            req,
            dir,
            cancel,
            progress,
            fps: out.frame_rate,
            out,
            frames_decoded: 0,
            frames_out: 0,
            graph: None,
            graph_deinterlaces: false,
            thumbnail_taken: false,
            last_frame: None,
            started: Instant::now(),
            // Due at once: the first frame out ticks, which tells the worker that the
            // transcode proper has begun (its stage timings split probe from transcode there).
            last_tick: Instant::now()
                .checked_sub(PROGRESS_EVERY)
                .unwrap_or_else(Instant::now),
            end_pts: None,
            latest: None,
            audio_end: 0.0,
            warnings: Vec::new(),
        }
    }

    /// Closes the renditions' channels (the source has ended, or the job failed).
    pub fn finish(mut self) -> Counts {
        if let Some(lane) = self.out.audio.as_mut() {
            self.warnings.extend(lane.chain.take_warnings());
        }
        Counts {
            frames_decoded: self.frames_decoded,
            frames_out: self.frames_out,
            warnings: self.warnings,
        }
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(JobError::cancelled("cancelled while decoding"));
        }
        Ok(())
    }

    /// Decodes the whole source on `threads` decoder threads, sending on as it goes.
    pub fn run(&mut self, input: &mut format::context::Input, threads: usize) -> Result<()> {
        let mut video =
            VideoDecoder::open(input, self.info.video.index, &self.req.limits, threads)?;
        let audio_stream = self
            .info
            .audio
            .as_ref()
            .and_then(|a| input.stream(a.index).map(|s| (a.index, s.time_base())));
        let mut reader = Reader::default();
        loop {
            self.check_cancel()?;
            let Some(packet) = reader.next(input)? else {
                break;
            };
            let index = packet.stream();
            if index == video.index {
                video.send(&packet)?;
                self.receive_video(&mut video)?;
            } else if let Some((_, atb)) = audio_stream.filter(|(i, _)| *i == index) {
                if let Some(pts) = packet.pts() {
                    let end = (pts + packet.duration().max(0)) as f64 * f64::from(atb)
                        - self.info.video.start_time;
                    self.audio_end = self.audio_end.max(end);
                }
                self.push_audio(&packet)?;
            }
        }
        video.send_eof();
        self.receive_video(&mut video)?;
        self.close_graph(self.end_pts)?;
        self.drain_graph()?;
        self.finish_audio()?;
        self.check_complete(video.errors + reader.errors, video.last_error.clone())?;
        if !self.thumbnail_taken {
            if let Some(last) = self.last_frame.take() {
                self.write_thumbnail(&last)?;
            }
        }
        Ok(())
    }

    fn receive_video(&mut self, video: &mut VideoDecoder) -> Result<()> {
        while let Some((f, ts)) = video.receive()? {
            self.on_video_frame(f, ts, video.time_base)?;
        }
        Ok(())
    }

    /// `ts` is the frame's timestamp (source time base), already set as its pts.
    fn on_video_frame(&mut self, f: frame::Video, ts: i64, vtb: Rational) -> Result<()> {
        self.check_cancel()?;
        self.frames_decoded += 1;
        let t = ts as f64 * f64::from(vtb) - self.info.video.start_time;
        if t > self.req.limits.max_duration {
            return Err(JobError::limit_exceeded(format!(
                "video runs past the limit of {:.0} s",
                self.req.limits.max_duration
            )));
        }
        // The video's start counts as a frame: a first picture an hour in is a gap too.
        let latest = self.latest.unwrap_or(0.0);
        if t - latest > MAX_GAP_SECONDS {
            return Err(JobError::invalid_media(format!(
                "{}: the video's timestamps jump by {:.1} s at {latest:.2} s (more than \
                 {MAX_GAP_SECONDS:.0} s without a frame)",
                self.info.path.display(),
                t - latest
            )));
        }
        self.latest = Some(self.latest.map_or(t, |l| l.max(t)));
        // One nominal frame past the last timestamp (per-frame durations are not
        // exposed the same way across FFmpeg versions): a source frame, both its fields.
        let step = ticks_per_frame(self.info.video.frame_rate, vtb);
        self.end_pts = Some(
            self.end_pts
                .unwrap_or(i64::MIN)
                .max(ts.saturating_add(step)),
        );
        let params = VideoParams::of(&f, vtb);
        // A stream that did not say it is interlaced gets a deinterlacer at its first frame
        // flagged interlaced (one frame per frame: the renditions' rates are already set).
        let newly_interlaced = f.is_interlaced() && !self.graph_deinterlaces;
        if self.graph.as_ref().map(|(_, p)| *p) != Some(params) || newly_interlaced {
            self.rebuild_graph(params, Some(ts), f.is_interlaced())?;
        }
        if let Some(mut src) = self.graph.as_mut().and_then(|(g, _)| g.get("in")) {
            src.source()
                .add(&f)
                .map_err(|e| JobError::invalid_media(format!("video filter input: {e}")))?;
        }
        self.drain_graph()?;
        self.advance_audio()
    }

    /// `buffer → [transpose|hflip,vflip] → fps → buffersink` for frames like `params`: upright
    /// pictures at a constant rate (VFR sources get frames duplicated or dropped as the ffmpeg
    /// CLI's `-vsync cfr` would). A graph built after a change starts where the previous one
    /// stopped (it was ended at the changed frame's time), so output frames stay continuous.
    fn rebuild_graph(
        &mut self,
        params: VideoParams,
        close_at: Option<i64>,
        frame_interlaced: bool,
    ) -> Result<()> {
        if self.graph.is_some() {
            self.close_graph(close_at)?;
            self.drain_graph()?;
        }
        let start = self.info.video.start_time + self.frames_out as f64 / f64::from(self.fps);
        // Deinterlace first: the fields are lines of the coded picture, before any rotation.
        let deinterlace = self.out.deinterlace.or_else(|| {
            (frame_interlaced || self.graph_deinterlaces).then_some(graph::Deinterlace {
                field_rate: false,
                top_field_first: None,
                all_frames: false,
            })
        });
        self.graph_deinterlaces = deinterlace.is_some();
        let deinterlace = deinterlace
            .map(|d| format!("{},", d.filter()))
            .unwrap_or_default();
        let orient = graph::orientation(self.info.video.rotation)
            .map(|o| format!("{o},"))
            .unwrap_or_default();
        let spec = format!(
            "{deinterlace}{orient}fps=fps={}/{}:start_time={start}",
            self.fps.numerator(),
            self.fps.denominator(),
        );
        let g = graph::simple("buffer", &params.buffer_args(), &spec).map_err(|e| {
            JobError::invalid_media(format!(
                "video filter graph for {}x{} {:?} frames: {e}",
                params.width, params.height, params.format
            ))
        })?;
        self.graph = Some((g, params));
        Ok(())
    }

    /// Ends the graph's input at `end` (source time base), so that `fps` knows where the last
    /// frame ends instead of cutting it off.
    fn close_graph(&mut self, end: Option<i64>) -> Result<()> {
        if let Some(mut src) = self.graph.as_mut().and_then(|(g, _)| g.get("in")) {
            match end {
                Some(pts) => ffi::close_source(&mut src, pts)
                    .map_err(|e| JobError::invalid_media(format!("video filter end: {e}")))?,
                None => {
                    let _ = src.source().flush();
                }
            }
        }
        Ok(())
    }

    fn drain_graph(&mut self) -> Result<()> {
        loop {
            let mut out = frame::Video::empty();
            let got = match self.graph.as_mut().and_then(|(g, _)| g.get("out")) {
                Some(mut sink) => sink.sink().frame(&mut out).is_ok(),
                None => false,
            };
            if !got {
                return Ok(());
            }
            self.check_output(&out)?;
            self.emit(Arc::new(out))?;
        }
    }

    /// The filter graph is trusted no further than its input: every frame it gives back is
    /// checked against the limits its input was checked against before it costs an encode
    /// ([`Self::emit`] then checks cancellation, per frame). A filter that misreads a
    /// timestamp then ends the job in bounded time and memory instead of emitting frames
    /// without end: `fps` computes `pts - start` without an overflow check, so an
    /// AV_NOPTS_VALUE (or a pts near i64::MIN) on a source that starts after 0 becomes a time
    /// far ahead, which it fills with copies of the last picture. Both the frame's place in
    /// the output (its number) and the time its own pts gives (`fps` outputs at 1/fps) count.
    fn check_output(&self, out: &frame::Video) -> Result<()> {
        let frame = 1.0 / f64::from(self.fps);
        let at = self.video_seconds();
        let stamped = out
            .pts()
            .map(|pts| pts as f64 * frame - self.info.video.start_time);
        let latest = self.latest.unwrap_or(0.0);
        for t in std::iter::once(at).chain(stamped) {
            // One frame of slack: the last picture lasts one frame past its timestamp.
            if t > self.req.limits.max_duration + frame {
                return Err(JobError::limit_exceeded(format!(
                    "the video filter's output runs to {t:.0} s, past the limit of {:.0} s",
                    self.req.limits.max_duration
                )));
            }
            if t - latest > MAX_GAP_SECONDS {
                return Err(JobError::invalid_media(format!(
                    "{}: the video filter's output runs to {t:.1} s, {:.1} s past the last \
                     decoded frame (more than {MAX_GAP_SECONDS:.0} s without a frame)",
                    self.info.path.display(),
                    t - latest
                )));
            }
        }
        Ok(())
    }

    /// Hands one output frame to every rendition, on the IDR grid when its number says so.
    fn emit(&mut self, frame: Arc<frame::Video>) -> Result<()> {
        // A gap is filled here one frame at a time: stop as soon as the job is cancelled.
        self.check_cancel()?;
        let index = self.frames_out;
        self.frames_out += 1;
        let force_idr = index % self.out.gop_frames == 0 || index % self.out.seg_frames == 0;
        let t = index as f64 / f64::from(self.fps);
        if !self.thumbnail_taken && t >= self.req.thumbnail_time {
            self.write_thumbnail(&frame)?;
        }
        for tx in &self.out.frames {
            let msg = SourceFrame {
                frame: Arc::clone(&frame),
                index,
                force_idr,
            };
            if tx.send(msg).is_err() {
                // The rendition has stopped: its own error explains why.
                return Err(JobError::new(ErrorKind::Cancelled, "a rendition stopped"));
            }
        }
        self.last_frame = Some(frame);
        self.tick();
        Ok(())
    }

    /// Seconds of video handed to the renditions so far.
    fn video_seconds(&self) -> f64 {
        self.frames_out as f64 / f64::from(self.fps)
    }

    fn push_audio(&mut self, packet: &Packet) -> Result<()> {
        let cancel = self.cancel;
        let r = match self.out.audio.as_mut() {
            Some(AudioLane { chain, txs }) => {
                chain.push(packet, &mut |p| send_audio(txs, p, cancel))
            }
            None => return Ok(()),
        };
        self.audio_outcome(r)
    }

    fn advance_audio(&mut self) -> Result<()> {
        let (cancel, seconds) = (self.cancel, self.video_seconds());
        let r = match self.out.audio.as_mut() {
            Some(AudioLane { chain, txs }) => {
                chain.advance(seconds, &mut |p| send_audio(txs, p, cancel))
            }
            None => return Ok(()),
        };
        self.audio_outcome(r)
    }

    fn finish_audio(&mut self) -> Result<()> {
        let (cancel, seconds) = (self.cancel, self.video_seconds());
        let r = match self.out.audio.as_mut() {
            Some(AudioLane { chain, txs }) => {
                chain.finish(seconds, &mut |p| send_audio(txs, p, cancel))
            }
            None => return Ok(()),
        };
        self.audio_outcome(r)
    }

    /// An audio failure that is the media's fault ends the audio, not the job: the output
    /// keeps the audio made so far, and the outcome says why the rest is missing.
    /// Cancellation and limits still end the job.
    fn audio_outcome(&mut self, r: Result<()>) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind, ErrorKind::Cancelled | ErrorKind::LimitExceeded) => Err(e),
            Err(e) => {
                let at = self.video_seconds();
                tracing::warn!(error = %e, at, "audio stopped: the rest of the output has no sound");
                if let Some(mut lane) = self.out.audio.take() {
                    self.warnings.extend(lane.chain.take_warnings());
                }
                self.warnings
                    .push(format!("audio stops at {at:.2} s: {}", e.message));
                Ok(())
            }
        }
    }

    fn write_thumbnail(&mut self, frame: &frame::Video) -> Result<()> {
        self.thumbnail_taken = true;
        thumbnail::write_jpeg(frame, &self.dir.join(thumbnail::FILE_NAME))
    }

    fn total_frames(&self) -> Option<u64> {
        let d = self.info.video.duration.or(self.info.duration)?;
        Some((d * f64::from(self.fps)).round() as u64)
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_tick) < PROGRESS_EVERY {
            return;
        }
        self.last_tick = now;
        let elapsed = now.duration_since(self.started).as_secs_f64().max(1e-6);
        let fps = self.frames_out as f64 / elapsed;
        let total = self.total_frames();
        let percent = total
            .map(|t| (self.frames_out as f64 / t.max(1) as f64 * 100.0).min(99.9))
            .unwrap_or(0.0);
        let eta = total.map(|t| (t.saturating_sub(self.frames_out)) as f64 / fps.max(1e-6));
        (self.progress)(&ProgressTick {
            stage: Stage::Transcoding,
            frames: self.frames_out,
            total_frames: total,
            percent,
            fps,
            eta_seconds: eta,
        });
    }

    /// After the last packet: refuse sources that decoded to nothing, or to much less than
    /// they declare (truncated uploads), instead of publishing a short video. Without a video
    /// duration of its own (Matroska, WebM) the container's is used, and what was read of
    /// the audio counts too: a video shorter than its audio is not a truncated file.
    fn check_complete(&self, errors: u64, last_error: Option<String>) -> Result<()> {
        if self.frames_out == 0 {
            let why = last_error.unwrap_or_else(|| "no frame decoded".into());
            return Err(JobError::invalid_media(format!(
                "{}: the video stream has no decodable frames ({why}; {errors} decode errors)",
                self.info.path.display(),
            )));
        }
        let decoded = self.video_seconds();
        let (declared, reached) = match self.info.video.duration {
            Some(d) => (Some(d), decoded),
            None => (self.info.duration, decoded.max(self.audio_end)),
        };
        if let Some(d) = declared {
            if reached < d * 0.9 - 0.5 {
                return Err(JobError::invalid_media(format!(
                    "{}: source is truncated or corrupt: decoded {reached:.2} s of the {d:.2} s \
                     it declares ({errors} decode errors)",
                    self.info.path.display(),
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::probe::{self, Limits};

    /// The first two pictures of a 1 s 64x48 H.264 MPEG-TS made by the ffmpeg CLI (its video
    /// starts at 1.4 s, as the muxer's default), the source's description, and the video
    /// time base.
    fn two_pictures(dir: &Path) -> (Vec<(frame::Video, i64)>, SourceInfo, Rational) {
        let path = dir.join("src.ts");
        let made = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg("testsrc=size=64x48:rate=25:duration=1")
            .args(["-c:v", "libx264", "-preset", "ultrafast"])
            .arg(&path)
            .status()
            .expect("run ffmpeg");
        assert!(made.success(), "ffmpeg failed");
        let probe::Source { mut input, info } = probe::open(&path, &Limits::default()).unwrap();
        let mut video =
            VideoDecoder::open(&input, info.video.index, &Limits::default(), 1).unwrap();
        let mut reader = Reader::default();
        let mut pictures = Vec::new();
        while pictures.len() < 2 {
            let packet = reader.next(&mut input).unwrap().expect("two pictures");
            if packet.stream() == video.index {
                video.send(&packet).unwrap();
                while let Some(p) = video.receive().unwrap() {
                    pictures.push(p);
                }
            }
        }
        (pictures, info, video.time_base)
    }

    /// Every picture of `path`, decoded on `threads` threads: its timestamp and a digest of its
    /// planes.
    fn decode_all(path: &Path, threads: usize) -> Vec<(i64, u64)> {
        use std::hash::{Hash, Hasher};
        let probe::Source { mut input, info } = probe::open(path, &Limits::default()).unwrap();
        let mut video =
            VideoDecoder::open(&input, info.video.index, &Limits::default(), threads).unwrap();
        let mut reader = Reader::default();
        let mut pictures = Vec::new();
        let take = |video: &mut VideoDecoder, pictures: &mut Vec<(i64, u64)>| {
            while let Some((f, ts)) = video.receive().unwrap() {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for plane in 0..f.planes() {
                    let (w, stride) = (f.plane_width(plane) as usize, f.stride(plane));
                    for row in f
                        .data(plane)
                        .chunks(stride)
                        .take(f.plane_height(plane) as usize)
                    {
                        row[..w].hash(&mut h);
                    }
                }
                pictures.push((ts, h.finish()));
            }
        };
        while let Some(packet) = reader.next(&mut input).unwrap() {
            if packet.stream() == video.index {
                video.send(&packet).unwrap();
                take(&mut video, &mut pictures);
            }
        }
        video.send_eof();
        take(&mut video, &mut pictures);
        pictures
    }

    /// A job given many threads decodes on frame threads (`media::decoder_threads`); what comes
    /// out must be the single thread's pictures, in the same order, none lost at the end.
    #[test]
    fn frame_threaded_decoding_gives_the_same_pictures_in_the_same_order() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("src.mp4");
        // B-frames (veryfast: 3) and a GOP shorter than the clip: pictures are reordered.
        let made = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x240:rate=25:duration=3")
            .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "20"])
            .arg(&path)
            .status()
            .expect("run ffmpeg");
        assert!(made.success(), "ffmpeg failed");
        let one = decode_all(&path, 1);
        assert_eq!(one.len(), 75);
        for threads in [2, 3, 8] {
            assert_eq!(decode_all(&path, threads), one, "{threads} decoder threads");
        }
    }

    /// Feeds two pictures to the decode loop, the second one without a pts (as a picture the
    /// decoder could not time once reached the `fps` filter), with `max_duration`. Returns what
    /// the loop said and how many frames it handed on. Frames without end are cut off by a
    /// cancel after ten minutes of output, so that the old behaviour fails instead of hanging.
    fn feed_an_untimed_picture(max_duration: f64) -> (Result<()>, usize) {
        let tmp = tempfile::tempdir().unwrap();
        let (pictures, info, vtb) = two_pictures(tmp.path());
        let mut req = TranscodeRequest::new(&info.path, tmp.path().join("out")).unwrap();
        req.limits.max_duration = max_duration;
        let cancel = AtomicBool::new(false);
        let (tx, rx) = crossbeam_channel::bounded::<SourceFrame>(8);
        std::thread::scope(|scope| {
            let counter = scope.spawn(|| {
                let mut n = 0;
                for _ in rx.iter() {
                    n += 1;
                    if n == 25 * 600 {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                n
            });
            let outputs = Outputs {
                frames: vec![tx],
                audio: None,
                gop_frames: 50,
                seg_frames: 150,
                frame_rate: info.video.frame_rate,
                deinterlace: None,
            };
            let mut decode = DecodeLoop::new(&info, &req, tmp.path(), &cancel, &|_| {}, outputs);
            let mut r = Ok(());
            for (i, (mut f, ts)) in pictures.into_iter().enumerate() {
                if r.is_ok() {
                    if i == 1 {
                        f.set_pts(None);
                    }
                    r = decode.on_video_frame(f, ts, vtb);
                }
            }
            decode.finish();
            (r, counter.join().unwrap())
        })
    }

    #[test]
    fn filter_output_running_past_the_last_picture_by_more_than_the_gap_bound_is_invalid_media() {
        let (r, frames) = feed_an_untimed_picture(Limits::default().max_duration);
        let e = r.expect_err("the filter's output runs away");
        assert_eq!(e.kind, ErrorKind::InvalidMedia, "{e}");
        assert!(e.message.contains("filter's output"), "{e}");
        // Up to the gap bound, at 25 fps, and not one frame more.
        assert!(
            frames <= 25 * MAX_GAP_SECONDS as usize + 2,
            "{frames} frames"
        );
    }

    #[test]
    fn filter_output_running_past_max_duration_is_limit_exceeded() {
        let (r, frames) = feed_an_untimed_picture(10.0);
        let e = r.expect_err("the filter's output runs away");
        assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
        assert!(e.message.contains("filter's output"), "{e}");
        assert!(frames <= 25 * 10 + 2, "{frames} frames");
    }
}
