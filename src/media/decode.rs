//! The single decode of a job, on the calling thread: demux → video decode → orientation and
//! constant frame rate (libavfilter `transpose` + `fps`) → `Arc<Frame>` to every rendition;
//! audio packets → the shared AAC chain → every rendition; the thumbnail on the way.
//! Rendition threads live in a scope: all are joined before `run` returns.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use ffmpeg::{codec, decoder, filter, frame, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{ErrorKind, JobError, Result};
use crate::ladder::Ladder;
use crate::media::audio::AudioChain;
use crate::media::probe::{Source, SourceInfo};
use crate::media::rendition::{self, RenditionJob, RenditionResult, SourceFrame};
use crate::media::{ffi, split_threads, thumbnail, ProgressTick, Stage, TranscodeRequest};

/// Decoded frames waiting per rendition. A 1080p frame is 3 MB; the frames are shared, so
/// this bounds memory at roughly (depth + decoder delay) frames whatever the video's length.
/// Measured on the 10 s 1080p ladder: depths 1, 2, 3 and 8 give the same wall time (x264's
/// own lookahead is the buffer that matters); 8 cost ~15 MB more peak RSS than 3.
pub const FRAME_QUEUE: usize = 2;
/// AAC packets waiting per rendition (~5 s of audio at 1024 samples/48 kHz; packets are small).
pub const AUDIO_QUEUE: usize = 256;
/// Progress callbacks at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub struct Decoded {
    pub frames_decoded: u64,
    pub frames_encoded: u64,
    pub has_audio: bool,
    pub renditions: Vec<RenditionResult>,
}

/// Runs the whole pipeline of one job into `dir`.
pub fn run(
    source: Source,
    ladder: &Ladder,
    req: &TranscodeRequest,
    dir: &Path,
    cancel: &AtomicBool,
    progress: &dyn Fn(&ProgressTick),
) -> Result<Decoded> {
    let Source { mut input, info } = source;
    let fps = info.video.frame_rate;
    let fps_f = f64::from(fps);
    let gop_frames = ((req.gop_seconds * fps_f).round() as u64).max(1);
    let seg_frames = ((req.segment_seconds * fps_f).round() as u64).max(1);

    let mut audio = match &info.audio {
        Some(a) => match input.stream(a.index) {
            Some(st) => match AudioChain::new(&st, info.video.start_time, req.audio_bitrate) {
                Ok(chain) => Some(chain),
                Err(e) => {
                    tracing::warn!(error = %e, "audio stream cannot be decoded: video-only output");
                    None
                }
            },
            None => None,
        },
        None => None,
    };

    let budget = if req.threads == 0 {
        num_cpus::get()
    } else {
        req.threads
    };
    let pixels: Vec<u64> = ladder
        .renditions
        .iter()
        .map(|r| r.width as u64 * r.height as u64)
        .collect();
    let threads = split_threads(budget, &pixels);

    let abort = AtomicBool::new(false);
    let mut frame_txs = Vec::new();
    let mut audio_txs = Vec::new();
    let mut jobs = Vec::new();
    for (plan, threads) in ladder.renditions.iter().zip(threads) {
        let (ftx, frx) = bounded::<SourceFrame>(FRAME_QUEUE);
        let arx = match &audio {
            Some(_) => {
                let (atx, arx) = bounded::<Arc<Packet>>(AUDIO_QUEUE);
                audio_txs.push(atx);
                Some(arx)
            }
            None => None,
        };
        frame_txs.push(ftx);
        jobs.push((
            RenditionJob {
                plan: plan.clone(),
                frame_rate: fps,
                gop_frames,
                seg_frames,
                preset: req.preset.clone(),
                threads,
                dir: dir.to_path_buf(),
                audio: audio.as_ref().map(|a| a.spec()),
                color: info.video.color.for_sdr_output(),
            },
            frx,
            arx,
        ));
    }

    std::thread::scope(|scope| {
        let abort = &abort;
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(job, frx, arx)| {
                let name = job.plan.name.clone();
                std::thread::Builder::new()
                    .name(format!("rendition-{name}"))
                    .spawn_scoped(scope, move || {
                        let r =
                            catch_unwind(AssertUnwindSafe(|| rendition::run(job, frx, arx, abort)));
                        let r = r.unwrap_or_else(|panic| {
                            Err(JobError::internal(format!(
                                "rendition {name} panicked: {}",
                                panic_message(&panic)
                            )))
                        });
                        if r.is_err() {
                            // Stop the others early: the job has failed.
                            abort.store(true, Ordering::Relaxed);
                        }
                        r
                    })
            })
            .collect();

        let mut loop_state = DecodeLoop {
            info: &info,
            req,
            dir,
            cancel,
            progress,
            fps,
            gop_frames,
            seg_frames,
            frame_txs,
            audio_txs,
            frames_decoded: 0,
            frames_out: 0,
            graph: None,
            thumbnail_taken: false,
            last_frame: None,
            started: Instant::now(),
            last_tick: Instant::now(),
            decode_errors: 0,
            last_decode_error: None,
            end_pts: None,
        };
        let decoded = catch_unwind(AssertUnwindSafe(|| {
            loop_state.demux(&mut input, audio.as_mut())
        }))
        .unwrap_or_else(|panic| {
            Err(JobError::internal(format!(
                "decode loop panicked: {}",
                panic_message(&panic)
            )))
        });
        if decoded.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        // Closing the channels tells the renditions the source has ended.
        let (frames_decoded, frames_out) = (loop_state.frames_decoded, loop_state.frames_out);
        drop(loop_state);

        let mut results = Vec::new();
        let mut first_error: Option<JobError> = None;
        for h in handles {
            let r = match h {
                Ok(h) => h.join().unwrap_or_else(|_| {
                    Err(JobError::internal("rendition thread could not be joined"))
                }),
                Err(e) => Err(JobError::internal(format!(
                    "starting a rendition thread: {e}"
                ))),
            };
            match r {
                Ok(r) => results.push(r),
                Err(e) => {
                    // A rendition "aborted" only because another part failed is not the cause.
                    if first_error.is_none() && e.kind != ErrorKind::Cancelled {
                        first_error = Some(e);
                    }
                }
            }
        }
        // The cause comes first: when a rendition failed (disk full…), the decode loop only saw
        // its channel close and reports "cancelled"; the rendition's error is the real one.
        match (decoded, first_error) {
            (Err(d), Some(r))
                if d.kind == ErrorKind::Cancelled && !cancel.load(Ordering::Relaxed) =>
            {
                return Err(r)
            }
            (Err(d), _) => return Err(d),
            (Ok(()), Some(r)) => return Err(r),
            (Ok(()), None) => {}
        }
        if results.len() != ladder.renditions.len() {
            return Err(JobError::internal("a rendition stopped without a result"));
        }
        Ok(Decoded {
            frames_decoded,
            frames_encoded: frames_out,
            has_audio: audio.is_some(),
            renditions: results,
        })
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

struct DecodeLoop<'a> {
    info: &'a SourceInfo,
    req: &'a TranscodeRequest,
    dir: &'a Path,
    cancel: &'a AtomicBool,
    progress: &'a dyn Fn(&ProgressTick),
    fps: Rational,
    gop_frames: u64,
    seg_frames: u64,
    frame_txs: Vec<Sender<SourceFrame>>,
    audio_txs: Vec<Sender<Arc<Packet>>>,
    frames_decoded: u64,
    frames_out: u64,
    /// Orientation + constant frame rate, built on the first decoded frame.
    graph: Option<filter::Graph>,
    thumbnail_taken: bool,
    last_frame: Option<Arc<frame::Video>>,
    started: Instant,
    last_tick: Instant,
    decode_errors: u64,
    last_decode_error: Option<String>,
    /// Where the video ends (source time base): last frame's timestamp + one frame.
    end_pts: Option<i64>,
}

impl DecodeLoop<'_> {
    fn demux(
        &mut self,
        input: &mut ffmpeg::format::context::Input,
        mut audio: Option<&mut AudioChain>,
    ) -> Result<()> {
        let vindex = self.info.video.index;
        let (mut decoder, vtb) = {
            let st = input
                .stream(vindex)
                .ok_or_else(|| JobError::internal("video stream vanished"))?;
            let mut ctx = codec::Context::from_parameters(st.parameters())
                .map_err(|e| JobError::invalid_media(format!("video stream: {e}")))?;
            // One decoder thread: decoding is ~10 % of the job's CPU and the encoders keep every
            // core busy; frame threads would only add pictures in flight (measured: -11 MB
            // peak RSS on the 10 s 1080p ladder, same wall time).
            ffi::set_thread_count(&mut ctx, 1);
            let dec = ctx.decoder().video().map_err(|e| {
                JobError::unsupported_codec(format!("cannot open the video decoder: {e}"))
            })?;
            (dec, st.time_base())
        };
        let aindex = audio.as_ref().map(|a| a.stream_index);
        let mut audio_out = Vec::new();

        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(JobError::cancelled("cancelled while decoding"));
            }
            // A fresh packet per read (rust-ffmpeg #260: reading into a reused packet leaks).
            let mut packet = Packet::empty();
            match packet.read(input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => break,
                Err(ffmpeg::Error::InvalidData) => {
                    self.decode_errors += 1;
                    continue;
                }
                Err(e) => {
                    return Err(JobError::invalid_media(format!(
                        "reading the source failed: {e}"
                    )))
                }
            }
            let index = packet.stream();
            if index == vindex {
                if let Err(e) = decoder.send_packet(&packet) {
                    self.note_decode_error(e);
                    continue;
                }
                self.receive_video(&mut decoder, vtb)?;
            } else if Some(index) == aindex {
                if let Some(a) = audio.as_deref_mut() {
                    a.push(&packet, &mut audio_out)?;
                    self.send_audio(&mut audio_out)?;
                }
            }
        }
        let _ = decoder.send_eof();
        self.receive_video(&mut decoder, vtb)?;
        self.flush_graph()?;
        if let Some(a) = audio {
            a.finish(&mut audio_out)?;
            self.send_audio(&mut audio_out)?;
        }
        self.check_complete()?;
        if !self.thumbnail_taken {
            if let Some(last) = self.last_frame.take() {
                self.write_thumbnail(&last)?;
            }
        }
        Ok(())
    }

    fn note_decode_error(&mut self, e: ffmpeg::Error) {
        self.decode_errors += 1;
        self.last_decode_error = Some(e.to_string());
    }

    fn receive_video(&mut self, decoder: &mut decoder::Video, vtb: Rational) -> Result<()> {
        loop {
            let mut f = frame::Video::empty();
            match decoder.receive_frame(&mut f) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(e) => {
                    self.note_decode_error(e);
                    return Ok(());
                }
            }
            if f.width() == 0 || f.height() == 0 {
                continue;
            }
            self.frames_decoded += 1;
            let ts = f.timestamp().or(f.pts());
            if let Some(ts) = ts {
                let t = ts as f64 * f64::from(vtb) - self.info.video.start_time;
                if t > self.req.limits.max_duration {
                    return Err(JobError::limit_exceeded(format!(
                        "video runs past the limit of {:.0} s",
                        self.req.limits.max_duration
                    )));
                }
            }
            f.set_pts(ts);
            if let Some(ts) = ts {
                // One nominal frame past the last timestamp (per-frame durations are not
                // exposed the same way across FFmpeg versions).
                let step = (1.0 / (f64::from(self.fps) * f64::from(vtb)))
                    .round()
                    .max(1.0) as i64;
                self.end_pts = Some(self.end_pts.unwrap_or(i64::MIN).max(ts + step));
            }
            if self.graph.is_none() {
                self.graph = Some(self.build_graph(&f, vtb)?);
            }
            if let Some(mut src) = self.graph.as_mut().and_then(|g| g.get("in")) {
                src.source()
                    .add(&f)
                    .map_err(|e| JobError::internal(format!("video filter input: {e}")))?;
            }
            self.drain_graph()?;
        }
    }

    /// `buffer → [transpose|hflip,vflip] → fps → buffersink`: upright pictures at a constant
    /// rate starting at the video's time zero (VFR sources get frames duplicated or dropped
    /// as the ffmpeg CLI's `-vsync cfr` would).
    fn build_graph(&self, first: &frame::Video, vtb: Rational) -> Result<filter::Graph> {
        let err = |e: ffmpeg::Error| JobError::internal(format!("video filter graph: {e}"));
        let mut graph = filter::Graph::new();
        let sar = first.aspect_ratio();
        let sar = if sar.numerator() > 0 && sar.denominator() > 0 {
            sar
        } else {
            Rational::new(1, 1)
        };
        let args = format!(
            "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
            first.width(),
            first.height(),
            ffmpeg::ffi::AVPixelFormat::from(first.format()) as i32,
            vtb.numerator(),
            vtb.denominator(),
            sar.numerator(),
            sar.denominator()
        );
        let buffer = filter::find("buffer").ok_or_else(|| err(ffmpeg::Error::FilterNotFound))?;
        let sink = filter::find("buffersink").ok_or_else(|| err(ffmpeg::Error::FilterNotFound))?;
        graph.add(&buffer, "in", &args).map_err(err)?;
        graph.add(&sink, "out", "").map_err(err)?;
        let orient = match self.info.video.rotation {
            90 => "transpose=clock,",
            180 => "hflip,vflip,",
            270 => "transpose=cclock,",
            _ => "",
        };
        let spec = format!(
            "{orient}fps=fps={}/{}:start_time={}",
            self.fps.numerator(),
            self.fps.denominator(),
            self.info.video.start_time
        );
        graph
            .output("in", 0)
            .and_then(|p| p.input("out", 0))
            .and_then(|p| p.parse(&spec))
            .map_err(err)?;
        graph.validate().map_err(err)?;
        Ok(graph)
    }

    fn flush_graph(&mut self) -> Result<()> {
        let end = self.end_pts;
        if let Some(mut src) = self.graph.as_mut().and_then(|g| g.get("in")) {
            match end {
                Some(pts) => ffi::close_source(&mut src, pts)
                    .map_err(|e| JobError::internal(format!("video filter end: {e}")))?,
                None => {
                    let _ = src.source().flush();
                }
            }
        }
        self.drain_graph()
    }

    fn drain_graph(&mut self) -> Result<()> {
        loop {
            let mut out = frame::Video::empty();
            let got = match self.graph.as_mut().and_then(|g| g.get("out")) {
                Some(mut sink) => sink.sink().frame(&mut out).is_ok(),
                None => false,
            };
            if !got {
                return Ok(());
            }
            self.emit(Arc::new(out))?;
        }
    }

    /// Hands one output frame to every rendition, on the IDR grid when its number says so.
    fn emit(&mut self, frame: Arc<frame::Video>) -> Result<()> {
        let index = self.frames_out;
        self.frames_out += 1;
        let force_idr = index % self.gop_frames == 0 || index % self.seg_frames == 0;
        let t = index as f64 / f64::from(self.fps);
        if !self.thumbnail_taken && t >= self.req.thumbnail_time {
            self.write_thumbnail(&frame)?;
        }
        for tx in &self.frame_txs {
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

    fn send_audio(&mut self, packets: &mut Vec<Packet>) -> Result<()> {
        for p in packets.drain(..) {
            let p = Arc::new(p);
            for tx in &self.audio_txs {
                if tx.send(Arc::clone(&p)).is_err() {
                    return Err(JobError::new(ErrorKind::Cancelled, "a rendition stopped"));
                }
            }
        }
        Ok(())
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
    /// they declare (truncated uploads), instead of publishing a short video.
    fn check_complete(&self) -> Result<()> {
        if self.frames_out == 0 {
            let why = self
                .last_decode_error
                .clone()
                .unwrap_or_else(|| "no frame decoded".into());
            return Err(JobError::invalid_media(format!(
                "{}: the video stream has no decodable frames ({why}; {} decode errors)",
                self.info.path.display(),
                self.decode_errors
            )));
        }
        let declared = match (self.info.video.duration, &self.info.audio) {
            (Some(d), _) => Some(d),
            (None, None) => self.info.duration,
            (None, Some(_)) => None,
        };
        let decoded = self.frames_out as f64 / f64::from(self.fps);
        if let Some(d) = declared {
            if decoded < d * 0.9 - 0.5 {
                return Err(JobError::invalid_media(format!(
                    "{}: source is truncated or corrupt: decoded {decoded:.2} s of the {d:.2} s \
                     it declares ({} decode errors)",
                    self.info.path.display(),
                    self.decode_errors
                )));
            }
        }
        Ok(())
    }
}
