//! The fan-out of one job: the audio chain, the encoder thread budget, one bounded channel pair
//! and one thread per rendition, the single decode on the calling thread, then every thread
//! joined and the errors ranked so that the cause is reported, not its echo.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::bounded;
use ffmpeg::{Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{ErrorKind, JobError, Result};
use crate::ladder::{Ladder, RenditionPlan};
use crate::media::audio::AudioChain;
use crate::media::audio::AudioStreamSpec;
use crate::media::decode::{AudioLane, DecodeLoop, Decoded, Outputs};
use crate::media::graph::Deinterlace;
use crate::media::hls::{Segment, SegmentFormat, Segmenter};
use crate::media::probe::Source;
use crate::media::probe::SourceInfo;
use crate::media::rendition::{self, RenditionJob, SourceFrame};
use crate::media::{
    decoder_threads, split_threads, AudioLayout, ProgressTick, ThreadPlan, TranscodeRequest,
};

/// Decoded frames waiting per rendition. A 1080p frame is 3 MB; the frames are shared, so
/// this bounds memory at roughly (depth + decoder delay) frames whatever the video's length.
/// Measured on the 10 s 1080p ladder: depths 1, 2, 3 and 8 give the same wall time (x264's
/// own lookahead is the buffer that matters); 8 cost ~15 MB more peak RSS than 3.
pub const FRAME_QUEUE: usize = 2;
/// AAC packets waiting per rendition (~5 s of audio at 1024 samples/48 kHz; packets are small).
pub const AUDIO_QUEUE: usize = 256;

/// Runs the whole pipeline of one job into `dir`.
pub(crate) fn run(
    source: Source,
    ladder: &Ladder,
    req: &TranscodeRequest,
    dir: &Path,
    cancel: &AtomicBool,
    progress: &dyn Fn(&ProgressTick),
) -> Result<Decoded> {
    let Source { mut input, info } = source;
    let mut warnings = Vec::new();
    let audio = open_audio(&input, &info, req, &mut warnings);

    let budget = req.thread_budget();
    let pixels: Vec<u64> = ladder
        .renditions
        .iter()
        .map(|r| r.width as u64 * r.height as u64)
        .collect();
    let threads = split_threads(budget, &pixels);
    let plan = ThreadPlan {
        budget,
        decoder: decoder_threads(budget),
        x264: ladder
            .renditions
            .iter()
            .map(|r| r.name.clone())
            .zip(threads.iter().copied())
            .collect(),
    };
    let scan = Scan::plan(&info, ladder, req.field_rate_up_to);
    let fps = scan.rate;
    // With renditions at half the decoded rate, the grid must land on frames they keep.
    let frames = |seconds: f64| {
        let n = ((seconds * f64::from(fps)).round() as u64).max(1);
        match scan.halved {
            true => (n.div_ceil(2) * 2).max(2),
            false => n,
        }
    };
    let gop_frames = frames(req.gop_seconds);
    let seg_frames = frames(req.segment_seconds);

    let abort = AtomicBool::new(false);
    let mut frame_txs = Vec::new();
    let mut audio_txs = Vec::new();
    let mut jobs = Vec::new();
    let muxed = req.audio_layout == AudioLayout::Muxed;
    // Separate audio: one segmenter of its own, fed like a rendition.
    let audio_rendition = match (&audio, muxed) {
        (Some(chain), false) => {
            let (atx, arx) = bounded::<Arc<Packet>>(AUDIO_QUEUE);
            audio_txs.push(atx);
            Some((chain.spec(), arx))
        }
        _ => None,
    };
    for (plan, threads) in ladder.renditions.iter().zip(threads) {
        let (ftx, frx) = bounded::<SourceFrame>(FRAME_QUEUE);
        let arx = audio.as_ref().filter(|_| muxed).map(|_| {
            let (atx, arx) = bounded::<Arc<Packet>>(AUDIO_QUEUE);
            audio_txs.push(atx);
            arx
        });
        frame_txs.push(ftx);
        let step = scan.step(plan, req.field_rate_up_to);
        jobs.push((
            RenditionJob {
                plan: plan.clone(),
                frame_rate: Rational::new(fps.numerator(), fps.denominator() * step as i32)
                    .reduce(),
                frame_step: step,
                gop_frames: gop_frames / step,
                seg_frames: seg_frames / step,
                preset: req.preset.clone(),
                threads,
                dir: dir.to_path_buf(),
                audio: audio.as_ref().filter(|_| muxed).map(|a| a.spec()),
                color: info.video.color.for_sdr_output(),
                measure_quality: req.measure_quality,
                segments: req.segments,
            },
            frx,
            arx,
        ));
    }
    let has_audio = audio.is_some();
    let audio = audio.map(|chain| AudioLane::new(chain, audio_txs));

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
        let audio_handle = audio_rendition.map(|(spec, arx)| {
            std::thread::Builder::new()
                .name("rendition-audio".into())
                .spawn_scoped(scope, move || {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        run_audio(dir, spec, (seg_frames, fps), req.segments, arx, abort)
                    }));
                    let r = r.unwrap_or_else(|panic| {
                        Err(JobError::internal(format!(
                            "audio rendition panicked: {}",
                            panic_message(&panic)
                        )))
                    });
                    if r.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    r
                })
        });

        let outputs = Outputs {
            frames: frame_txs,
            audio,
            gop_frames,
            seg_frames,
            frame_rate: fps,
            deinterlace: scan.deinterlace,
        };
        let mut decode = DecodeLoop::new(&info, req, dir, cancel, progress, outputs);
        let decoded = catch_unwind(AssertUnwindSafe(|| decode.run(&mut input, plan.decoder)))
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
        let counts = decode.finish();
        warnings.extend(counts.warnings.iter().cloned());

        let mut results = Vec::new();
        let mut first_error: Option<JobError> = None;
        let mut note = |e: JobError| {
            // A rendition "aborted" only because another part failed is not the cause.
            if first_error.is_none() && e.kind != ErrorKind::Cancelled {
                first_error = Some(e);
            }
        };
        for h in handles {
            match join(h) {
                Ok(r) => results.push(r),
                Err(e) => note(e),
            }
        }
        let audio_segments = match audio_handle.map(join) {
            Some(Ok(segments)) => Some(segments),
            Some(Err(e)) => {
                note(e);
                None
            }
            None => None,
        };
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
        if has_audio && !muxed && audio_segments.is_none() {
            return Err(JobError::internal(
                "the audio rendition stopped without a result",
            ));
        }
        Ok(Decoded {
            frames_decoded: counts.frames_decoded,
            frames_encoded: counts.frames_out,
            has_audio,
            frame_rate: fps,
            audio: audio_segments,
            renditions: results,
            warnings,
            threads: plan,
        })
    })
}

/// The decoded picture rate and how it is made progressive. An interlaced source (its stream
/// says so) is deinterlaced in the decode graph; when some rendition keeps the field rate
/// (see [`RenditionPlan::keeps_field_rate`]) and the field rate is within the 60 fps cap,
/// the graph emits one frame per field and the larger renditions take every other one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan {
    /// The decode graph's output rate.
    pub rate: Rational,
    /// The rate is the field rate, and some renditions take every other frame.
    pub halved: bool,
    pub deinterlace: Option<Deinterlace>,
}

impl Scan {
    pub fn plan(info: &SourceInfo, ladder: &Ladder, field_rate_up_to: u32) -> Scan {
        let frame_rate = info.video.frame_rate;
        if !info.video.interlaced {
            return Scan {
                rate: frame_rate,
                halved: false,
                deinterlace: None,
            };
        }
        let field_rate = Rational::new(frame_rate.numerator() * 2, frame_rate.denominator());
        let field = f64::from(field_rate) <= 60.0 + 1e-3
            && ladder
                .renditions
                .iter()
                .any(|r| r.keeps_field_rate(field_rate_up_to));
        Scan {
            rate: if field { field_rate } else { frame_rate },
            halved: field
                && ladder
                    .renditions
                    .iter()
                    .any(|r| !r.keeps_field_rate(field_rate_up_to)),
            deinterlace: Some(Deinterlace {
                field_rate: field,
                top_field_first: Some(info.video.top_field_first),
                all_frames: true,
            }),
        }
    }

    /// 1: the rendition takes every decoded frame; 2: every other one (field-rate decode,
    /// rendition above the field-rate limit).
    pub fn step(&self, plan: &RenditionPlan, field_rate_up_to: u32) -> u64 {
        if self.halved && !plan.keeps_field_rate(field_rate_up_to) {
            2
        } else {
            1
        }
    }
}

/// Joins a media thread; a thread that could not start or be joined is an internal error.
fn join<T>(h: std::io::Result<std::thread::ScopedJoinHandle<'_, Result<T>>>) -> Result<T> {
    match h {
        Ok(h) => h
            .join()
            .unwrap_or_else(|_| Err(JobError::internal("a media thread could not be joined"))),
        Err(e) => Err(JobError::internal(format!("starting a media thread: {e}"))),
    }
}

/// The audio rendition (separate layout): the shared AAC packets into audio-only segments on
/// the video's grid (`seg_frames` at `fps`).
fn run_audio(
    dir: &Path,
    spec: AudioStreamSpec,
    (seg_frames, fps): (u64, Rational),
    segments: SegmentFormat,
    packets: crossbeam_channel::Receiver<Arc<Packet>>,
    abort: &AtomicBool,
) -> Result<Vec<Segment>> {
    let name = crate::media::hls::playlist::AUDIO_NAME;
    let mut segmenter = Segmenter::new(dir, name, None, Some(&spec), seg_frames, fps, segments)?;
    for p in packets {
        if abort.load(Ordering::Relaxed) {
            return Err(JobError::cancelled("job aborted"));
        }
        segmenter.push_audio((*p).clone())?;
    }
    if abort.load(Ordering::Relaxed) {
        return Err(JobError::cancelled("job aborted"));
    }
    segmenter.end_audio()?;
    Ok(segmenter.finish()?.segments)
}

/// The audio chain, or `None` (video-only output, with a warning) when the source's audio
/// cannot be used.
fn open_audio(
    input: &ffmpeg::format::context::Input,
    info: &crate::media::SourceInfo,
    req: &TranscodeRequest,
    warnings: &mut Vec<String>,
) -> Option<AudioChain> {
    let Some(a) = info.audio.as_ref() else {
        // An audio stream that probing could not describe (no decoder in this build, no
        // sample rate): the output has no sound, and the outcome says so.
        if let Some(s) = input.streams().best(ffmpeg::media::Type::Audio) {
            warnings.push(format!(
                "audio left out: the source's audio stream ({:?}) cannot be decoded",
                s.parameters().id()
            ));
        }
        return None;
    };
    let stream = input.stream(a.index)?;
    match AudioChain::new(
        &stream,
        info.video.start_time,
        req.limits.max_duration,
        req.audio_bitrate,
    ) {
        Ok(chain) => Some(chain),
        Err(e) => {
            tracing::warn!(error = %e, "audio stream cannot be decoded: video-only output");
            warnings.push(format!("audio left out: {}", e.message));
            None
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
