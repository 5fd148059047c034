//! One job, from payload to `video.processed` event: parse and validate (off the async
//! threads: path checks touch the filesystem), reuse a finished output, else run the media
//! work through [`run_media`], the one place it is started (in a job process).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::sync::mpsc;

use super::lane::Heartbeat;
use super::outcome::Delivery;
use super::{seconds, Shared, WorkerConfig};
use crate::error::JobError;
use crate::isolation::{self, ChildEvent, ChildResult, MediaJob};
use crate::job::{self, Job, JobKind, ProcessedEvent, ProgressEvent};
use crate::ladder::Quality;
use crate::media::{self, Limits, ProgressTick, Stage as MediaStage, TranscodeRequest};
use crate::storage::Transfer;
use crate::telemetry::{self, Stage};

/// What a successful job hands to the success path.
pub(super) struct Success {
    pub event: ProcessedEvent,
    pub callback_url: Option<String>,
}

/// Runs blocking filesystem work (path resolution, manifest reads, stat) on tokio's
/// blocking pool: a hung NFS mount must not stall the async threads that send every job's
/// in-progress acks.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .unwrap_or_else(|e| Err(JobError::internal(format!("blocking task failed: {e}"))))
}

/// The event of a job of `kind`, before its result is known.
pub(super) fn base_event(
    shared: &Shared,
    job: &Job,
    kind: JobKind,
    d: &Delivery,
) -> ProcessedEvent {
    ProcessedEvent {
        video_id: job.video_id.clone(),
        job: kind,
        status: "completed".into(),
        user_id: job.user_id.clone(),
        output_path: None,
        master_playlist: None,
        thumbnail: None,
        result: Value::Null,
        reused_output: false,
        fingerprint: None,
        metadata: job.metadata.clone(),
        attempt: d.attempt,
        stream_sequence: d.origin_seq,
        worker: shared.worker.clone(),
        completed_at_unix: 0,
    }
}

pub(super) fn describe_output(event: &mut ProcessedEvent, req: &TranscodeRequest) {
    event.output_path = Some(req.output_dir.clone());
    event.master_playlist = Some(req.output_dir.join(media::hls::playlist::MASTER));
    event.thumbnail = Some(req.output_dir.join(media::thumbnail::FILE_NAME));
    event.fingerprint = req.fingerprint.clone();
}

/// Parses a payload off the async threads.
async fn parse(shared: &Arc<Shared>, kind: JobKind, payload: &[u8]) -> Result<Job, JobError> {
    let shared = Arc::clone(shared);
    let payload = payload.to_vec();
    blocking(move || Job::parse(kind, &payload, &shared.policy)).await
}

/// The request of a process job and, when its output is already complete for the same
/// request, the result stored with it.
async fn request_and_finished(
    shared: &Arc<Shared>,
    job: &Job,
) -> Result<(TranscodeRequest, Option<Value>), JobError> {
    let shared = Arc::clone(shared);
    let job = job.clone();
    blocking(move || {
        let req = transcode_request(&shared.args, &job, shared.limits)?;
        let finished = finished_output(&req);
        Ok((req, finished))
    })
    .await
}

/// Parses, validates and runs one job; never panics on bad input.
pub(super) async fn execute(
    shared: &Arc<Shared>,
    kind: JobKind,
    payload: &[u8],
    d: &Delivery,
    heartbeat: &Arc<Heartbeat>,
) -> Result<Success, JobError> {
    let job = parse(shared, kind, payload).await?;
    if job.uses_objects() {
        return super::objects::execute(shared, job, d, heartbeat).await;
    }
    tracing::info!(video_id = %job.video_id, source = %job.source.display(), "job valid");
    let mut event = base_event(shared, &job, kind, d);
    let limits = shared.limits;
    let work = match kind {
        JobKind::Process => {
            let (req, finished) = request_and_finished(shared, &job).await?;
            describe_output(&mut event, &req);
            if let Some(result) = finished {
                tracing::info!("output already complete for this request: not transcoding again");
                event.reused_output = true;
                event.result = result;
                None
            } else {
                Some(MediaJob::transcode(&req))
            }
        }
        JobKind::Thumbnail => {
            event.output_path = Some(job.output.clone());
            Some(MediaJob::thumbnail(
                &job.source,
                &job.output,
                job.thumbnail_time,
                &limits,
            ))
        }
        JobKind::Metadata => Some(MediaJob::probe(&job.source, &limits)),
    };
    if let Some(work) = work {
        let result = with_progress(shared, &job, d.attempt, heartbeat, work, None).await?;
        telemetry::metrics::media_done(kind, &result);
        event.result = result.to_value();
        if let ChildResult::Thumbnail(t) = &result {
            event.thumbnail = t.get("path").and_then(|p| p.as_str()).map(PathBuf::from);
        }
    }
    event.completed_at_unix = job::unix_now();
    Ok(Success {
        event,
        callback_url: job.callback_url,
    })
}

/// The `video.processed` event of a job whose output is already complete (the worker that
/// made it died before recording it), or None. Only process jobs leave a manifest to check.
pub(super) async fn finished_event(
    shared: &Arc<Shared>,
    kind: JobKind,
    payload: &[u8],
    d: &Delivery,
) -> Option<ProcessedEvent> {
    if kind != JobKind::Process {
        return None;
    }
    let job = parse(shared, kind, payload).await.ok()?;
    if job.uses_objects() {
        return super::objects::finished_event(shared, job, d).await;
    }
    let (req, finished) = request_and_finished(shared, &job).await.ok()?;
    let mut event = base_event(shared, &job, kind, d);
    describe_output(&mut event, &req);
    event.reused_output = true;
    event.result = finished?;
    event.completed_at_unix = job::unix_now();
    Some(event)
}

pub(super) fn transcode_request(
    args: &WorkerConfig,
    job: &Job,
    limits: Limits,
) -> Result<TranscodeRequest, JobError> {
    let mut req = TranscodeRequest::new(&job.source, &job.output)?;
    req.qualities = job.qualities.clone();
    if req.qualities.is_empty() {
        req.qualities = Quality::parse_list(crate::ladder::DEFAULT_QUALITIES)?;
    }
    req.thumbnail_time = job.thumbnail_time;
    req.segment_seconds = job.segment_seconds.unwrap_or(args.segment_seconds);
    req.gop_seconds = job.gop_seconds.unwrap_or(args.gop_seconds);
    req.audio_layout = args.audio;
    req.measure_quality = args.measure_quality;
    req.segments = args.segments;
    req.preset = job.preset.clone().unwrap_or_else(|| args.preset.clone());
    req.threads = if args.threads > 0 {
        args.threads
    } else {
        args.jobs.plan(num_cpus::get()).threads_per_job
    };
    req.limits = limits;
    req.video_id = Some(job.video_id.clone());
    if !job.uses_objects() {
        req.fingerprint = Some(media::manifest::fingerprint(&req)?);
    }
    Ok(req)
}

/// The manifest's `result` when `req.output_dir` holds a complete output made for the same
/// request (same fingerprint): a redelivered job whose ack was lost. Blocking (reads files).
pub(super) fn finished_output(req: &TranscodeRequest) -> Option<Value> {
    let outcome =
        media::manifest::Manifest::finished(&req.output_dir, req.fingerprint.as_deref()?)?;
    serde_json::to_value(outcome).ok()
}

/// Starts the media work of one job and awaits it: the one place where it is started. It
/// runs in a job process of this binary (`isolation`): a crash, an out-of-memory end or a
/// stall there ends this job with a typed error, not the worker. `on_progress` is called
/// for each progress line of the job process (never while it is stuck) and must not block.
pub(crate) async fn run_media(
    shared: &Shared,
    work: &MediaJob,
    mut on_progress: impl FnMut(&ProgressTick),
) -> Result<ChildResult, JobError> {
    let mut cancel = shared.cancel.clone();
    // What the job process does once it is ready, until its first progress line.
    let first = match work {
        MediaJob::Thumbnail { .. } => Stage::Thumbnail,
        MediaJob::Transcode(_) | MediaJob::Probe { .. } => Stage::Probe,
    };
    isolation::run(
        work,
        &shared.child,
        &shared.child_limits,
        |event| match event {
            ChildEvent::Spawned { pid } => {
                telemetry::enter(Stage::Start);
                tracing::debug!(pid, "job process started");
            }
            ChildEvent::Ready => telemetry::enter(first),
            ChildEvent::Progress(t) => {
                telemetry::enter(match t.stage {
                    MediaStage::Downloading => Stage::Fetch,
                    MediaStage::Transcoding => Stage::Transcode,
                    MediaStage::Publishing => Stage::Publish,
                });
                on_progress(&t);
            }
        },
        async move {
            let _ = cancel.wait_for(|c| *c).await;
        },
    )
    .await
}

/// The media work with its progress: every tick beats the heartbeat (which keeps the
/// message in progress), and goes out as a progress event at most once per
/// `--progress-interval` (a full channel drops a tick, never blocks the media thread).
pub(super) async fn with_progress(
    shared: &Arc<Shared>,
    job: &Job,
    attempt: u64,
    heartbeat: &Arc<Heartbeat>,
    work: MediaJob,
    transfer: Option<Arc<Transfer>>,
) -> Result<ChildResult, JobError> {
    let (tick_tx, mut tick_rx) = mpsc::channel::<ProgressTick>(16);
    let beat = Arc::clone(heartbeat);
    let media = async move {
        let r = run_media(shared, &work, |t: &ProgressTick| {
            beat.beat();
            let _ = tick_tx.try_send(t.clone());
        })
        .await;
        // The progress loop ends when the sender is gone.
        drop(tick_tx);
        r
    };
    let subject = shared.topology.progress_subject(&job.video_id);
    let every = seconds(shared.args.progress_interval, 1.0);
    let publisher = shared.publisher.clone();
    let (video_id, kind) = (job.video_id.clone(), job.kind);
    let progress = async move {
        let mut last_sent: Option<Instant> = None;
        while let Some(t) = tick_rx.recv().await {
            let due = last_sent.is_none_or(|at| at.elapsed() >= every);
            if !due {
                continue;
            }
            last_sent = Some(Instant::now());
            let event = ProgressEvent {
                video_id: video_id.clone(),
                job: kind,
                stage: t.stage,
                percent: (t.percent * 10.0).round() / 10.0,
                frames: t.frames,
                total_frames: t.total_frames,
                fps: (t.fps * 10.0).round() / 10.0,
                eta_seconds: t.eta_seconds.map(|e| e.round()),
                attempt,
                bytes_downloaded: transfer
                    .as_ref()
                    .map(|t| t.downloaded.load(std::sync::atomic::Ordering::Relaxed)),
                bytes_uploaded: transfer
                    .as_ref()
                    .map(|t| t.uploaded.load(std::sync::atomic::Ordering::Relaxed)),
            };
            publisher.progress(&subject, &event).await;
        }
    };
    let (result, ()) = tokio::join!(media, progress);
    result
}
