//! A job whose source or output is in object storage (`s3://`, `nats-object://`): the same
//! steps as [`super::execute`], around an [`ObjectRun`] that gives the media work local
//! files (scratch), uploads the output as it is made and deletes it if the job fails.
//! While bytes move (download, uploads after the media work), the heartbeat keeps the
//! message in progress as the media work's ticks do.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::execute::{
    base_event, describe_output, finished_output, transcode_request, with_progress, Success,
};
use super::lane::Heartbeat;
use super::outcome::Delivery;
use super::{seconds, Shared};
use crate::error::JobError;
use crate::isolation::{ChildResult, MediaJob};
use crate::job::{self, Job, JobKind, ProcessedEvent, ProgressEvent};
use crate::media::{self, hls::playlist::MASTER, Stage as MediaStage, TranscodeRequest};
use crate::storage::{ObjectRun, ObjectUrl, Transfer};
use crate::telemetry::{self, Stage};

/// The job's transcode request on local (scratch) paths, with the fingerprint of what the
/// producer named (URLs, the source's size and version): stable across deliveries.
async fn request(
    shared: &Shared,
    job: &Job,
    run: &ObjectRun,
) -> Result<TranscodeRequest, JobError> {
    let mut req = transcode_request(&shared.args, job, shared.limits)?;
    let (source, output) = job.public_paths();
    let mut public = req.clone();
    public.source = source;
    public.output_dir = output;
    let fingerprint = match &run.source_meta {
        Some(meta) => media::manifest::fingerprint_of(&public, meta.size, &meta.version),
        None => tokio::task::spawn_blocking(move || media::manifest::fingerprint(&public))
            .await
            .map_err(|e| JobError::internal(format!("blocking task failed: {e}")))??,
    };
    req.fingerprint = Some(fingerprint);
    Ok(req)
}

/// The event's paths for an object output: the URLs a reader uses.
fn describe_object_output(event: &mut ProcessedEvent, url: &ObjectUrl) {
    let at = |name: &str| PathBuf::from(url.join(name).to_string());
    event.output_path = Some(PathBuf::from(url.to_string()));
    if event.job == JobKind::Process {
        event.master_playlist = Some(at(MASTER));
    }
    event.thumbnail = Some(at(media::thumbnail::FILE_NAME));
}

/// Runs `work`, beating the heartbeat each second in which bytes moved.
async fn beating<T>(
    work: impl Future<Output = T>,
    transfer: &Transfer,
    heartbeat: &Heartbeat,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = 0;
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = tick.tick() => {
                let moved = transfer.downloaded.load(Ordering::Relaxed)
                    + transfer.uploaded.load(Ordering::Relaxed);
                if moved != last {
                    last = moved;
                    heartbeat.beat();
                }
            }
        }
    }
}

/// A `video.progress.<id>` event of the download of an object source: at its start, every
/// progress interval, and at its end (100 %).
async fn download_progress(
    shared: &Shared,
    job: &Job,
    attempt: u64,
    transfer: &Transfer,
    size: Option<u64>,
    done: bool,
) {
    let downloaded = transfer.downloaded.load(Ordering::Relaxed);
    let percent = match (done, size) {
        (true, _) => 100.0,
        (false, Some(size)) if size > 0 => {
            (downloaded as f64 * 1000.0 / size as f64).round() / 10.0
        }
        _ => 0.0,
    };
    let event = ProgressEvent {
        video_id: job.video_id.clone(),
        job: job.kind,
        stage: MediaStage::Downloading,
        percent,
        frames: 0,
        total_frames: None,
        fps: 0.0,
        eta_seconds: None,
        attempt,
        bytes_downloaded: Some(downloaded),
        bytes_uploaded: Some(transfer.uploaded.load(Ordering::Relaxed)),
    };
    let subject = shared.topology.progress_subject(&job.video_id);
    shared.publisher.progress(&subject, &event).await;
}

async fn begin(shared: &Shared, job: &mut Job) -> Result<ObjectRun, JobError> {
    let run = ObjectRun::begin(
        Arc::clone(&shared.stores),
        &job.video_id,
        &job.source_location(),
        job.output_location().as_ref(),
    )
    .await?;
    // From here on the media side sees local files only.
    job.source = run.source.clone();
    if job.output_object.is_some() {
        job.output = run.output_dir.clone();
    }
    Ok(run)
}

pub(super) async fn execute(
    shared: &Arc<Shared>,
    mut job: Job,
    d: &Delivery,
    heartbeat: &Arc<Heartbeat>,
) -> Result<Success, JobError> {
    let kind = job.kind;
    let (source, output) = job.public_paths();
    tracing::info!(video_id = %job.video_id, source = %source.display(),
        output = %output.display(), "job valid (object storage)");
    let mut run = begin(shared, &mut job).await?;
    let mut event = base_event(shared, &job, kind, d);
    let limits = shared.limits;
    let work = match kind {
        JobKind::Process => {
            let mut req = request(shared, &job, &run).await?;
            describe_output(&mut event, &req);
            let fingerprint = req.fingerprint.clone().unwrap_or_default();
            let finished = match run.output_url() {
                Some(_) => run
                    .finished(&fingerprint)
                    .await?
                    .and_then(|o| serde_json::to_value(o).ok()),
                None => {
                    let r = req.clone();
                    tokio::task::spawn_blocking(move || finished_output(&r))
                        .await
                        .ok()
                        .flatten()
                }
            };
            if let Some(url) = run.output_url() {
                describe_object_output(&mut event, url);
            }
            if let Some(result) = finished {
                tracing::info!("output already complete for this request: not transcoding again");
                event.reused_output = true;
                event.result = result;
                event.completed_at_unix = job::unix_now();
                return Ok(Success {
                    event,
                    callback_url: job.callback_url,
                });
            }
            run.claim_output(Some(&job.video_id)).await?;
            req.arriving = run.read_as_it_arrives()?;
            MediaJob::transcode(&req)
        }
        JobKind::Thumbnail => {
            event.output_path = Some(job.output.clone());
            MediaJob::thumbnail(&job.source, &job.output, job.thumbnail_time, &limits)
        }
        JobKind::Metadata => MediaJob::probe(&job.source, &limits),
    };
    // A shutdown past its grace stops a download as it stops the media work.
    let mut cancel = shared.cancel.clone();
    let download = async {
        tokio::select! {
            r = run.fetch_source() => r,
            Ok(_) = cancel.wait_for(|c| *c) => {
                Err(JobError::cancelled("cancelled while downloading the source"))
            }
        }
    };
    // Read as it arrives: the download runs alongside the media work, whose progress
    // events carry the bytes downloaded.
    let overlapped = run.overlapped();
    telemetry::enter(if overlapped {
        Stage::Transcode
    } else {
        Stage::Fetch
    });
    let size = run
        .source_meta
        .as_ref()
        .map(|m| m.size)
        .filter(|_| !overlapped);
    let report = |done: bool| download_progress(shared, &job, d.attempt, &run.transfer, size, done);
    if size.is_some() {
        report(false).await;
    }
    let downloading = beating(download, &run.transfer, heartbeat);
    tokio::pin!(downloading);
    let mut tick = tokio::time::interval(seconds(shared.args.progress_interval, 1.0));
    // An interval's first tick is immediate: the start was reported above.
    tick.tick().await;
    if !overlapped {
        let fetched = loop {
            tokio::select! {
                r = &mut downloading => break r,
                _ = tick.tick() => report(false).await,
            }
        };
        fetched?;
    }
    if size.is_some() {
        report(true).await;
    }
    let media = with_progress(
        shared,
        &job,
        d.attempt,
        heartbeat,
        work,
        Some(Arc::clone(&run.transfer)),
    );
    // What `produce` does after the media work is the rest of the upload.
    let media = async {
        let r = media.await;
        telemetry::enter(Stage::Upload);
        r
    };
    let (mut result, report) = match overlapped {
        true => {
            let both = run.alongside(downloading, media);
            beating(run.produce(both), &run.transfer, heartbeat).await?
        }
        false => beating(run.produce(media), &run.transfer, heartbeat).await?,
    };
    telemetry::metrics::media_done(job.kind, &result);
    if let ChildResult::Transcode(outcome) = &mut result {
        run.publicise(outcome);
    }
    event.result = result.to_value();
    if let ChildResult::Thumbnail(t) = &result {
        event.thumbnail = t.get("path").and_then(|p| p.as_str()).map(PathBuf::from);
    }
    if let Some(url) = run.output_url() {
        describe_object_output(&mut event, url);
    }
    if let (Some(report), Some(result)) = (report, event.result.as_object_mut()) {
        result.insert(
            "upload".into(),
            serde_json::to_value(report).unwrap_or_default(),
        );
    }
    event.completed_at_unix = job::unix_now();
    Ok(Success {
        event,
        callback_url: job.callback_url,
    })
}

/// The `video.processed` event of an object job whose output is already complete, or None.
pub(super) async fn finished_event(
    shared: &Arc<Shared>,
    mut job: Job,
    d: &Delivery,
) -> Option<ProcessedEvent> {
    let run = begin(shared, &mut job).await.ok()?;
    let req = request(shared, &job, &run).await.ok()?;
    let fingerprint = req.fingerprint.clone()?;
    let result = match run.output_url() {
        Some(_) => serde_json::to_value(run.finished(&fingerprint).await.ok()??).ok()?,
        None => tokio::task::spawn_blocking(move || finished_output(&req))
            .await
            .ok()??,
    };
    let mut event = base_event(shared, &job, job.kind, d);
    if let Some(url) = run.output_url() {
        describe_object_output(&mut event, url);
    }
    event.reused_output = true;
    event.result = result;
    event.completed_at_unix = job::unix_now();
    Some(event)
}
