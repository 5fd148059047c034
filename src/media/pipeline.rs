//! The fan-out of one job: the audio chain, the encoder thread budget, one bounded channel pair
//! and one thread per rendition, the single decode on the calling thread, then every thread
//! joined and the errors ranked so that the cause is reported, not its echo.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::bounded;
use ffmpeg::Packet;
use ffmpeg_next as ffmpeg;

use crate::error::{ErrorKind, JobError, Result};
use crate::ladder::Ladder;
use crate::media::audio::AudioChain;
use crate::media::decode::{AudioLane, DecodeLoop, Decoded, Outputs};
use crate::media::probe::Source;
use crate::media::rendition::{self, RenditionJob, SourceFrame};
use crate::media::{split_threads, ProgressTick, TranscodeRequest};

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
    let fps = info.video.frame_rate;
    let mut warnings = Vec::new();
    let audio = open_audio(&input, &info, req, &mut warnings);

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
    let gop_frames = ((req.gop_seconds * f64::from(fps)).round() as u64).max(1);
    let seg_frames = ((req.segment_seconds * f64::from(fps)).round() as u64).max(1);

    let abort = AtomicBool::new(false);
    let mut frame_txs = Vec::new();
    let mut audio_txs = Vec::new();
    let mut jobs = Vec::new();
    for (plan, threads) in ladder.renditions.iter().zip(threads) {
        let (ftx, frx) = bounded::<SourceFrame>(FRAME_QUEUE);
        let arx = audio.as_ref().map(|_| {
            let (atx, arx) = bounded::<Arc<Packet>>(AUDIO_QUEUE);
            audio_txs.push(atx);
            arx
        });
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

        let outputs = Outputs {
            frames: frame_txs,
            audio,
            gop_frames,
            seg_frames,
        };
        let mut decode = DecodeLoop::new(&info, req, dir, cancel, progress, outputs);
        let decoded =
            catch_unwind(AssertUnwindSafe(|| decode.run(&mut input))).unwrap_or_else(|panic| {
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
            frames_decoded: counts.frames_decoded,
            frames_encoded: counts.frames_out,
            has_audio,
            renditions: results,
            warnings,
        })
    })
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
