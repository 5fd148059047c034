//! `video-worker submit`: publishes a job with `Nats-Msg-Id` = `<kind>:<video_id>` (a second
//! submit of the same job within the duplicate window is stored once; a thumbnail and a
//! process job of one video are two jobs), awaits the PubAck, and with `--wait` follows that
//! job to its `video.processed` / `video.failed` event, showing progress. A duplicate PubAck
//! is checked: when the message stored under the id is a job of another kind (another
//! subject), the submit fails instead of reporting someone else's job as ours.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::job::{self, FailedEvent, JobKind, JobRequest, ProcessedEvent, ProgressEvent};
use crate::queue::connect::NatsConfig;
use crate::queue::events::{self, Publisher};
use crate::queue::setup::{self, Topology};
use crate::queue::QueueError;
use crate::storage::{ObjectUrl, StorageConfig, Stores};

/// What to submit and how (`video-worker submit`). Fields left `None` keep the job file's
/// value (or stay out of the job: the worker's default applies).
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    pub nats: NatsConfig,
    pub topology: Topology,
    /// Job JSON from this file (`-`: standard input); the fields below override its fields.
    pub file: Option<PathBuf>,
    /// The subject the job goes to (`video.process`, `video.thumbnail`, `video.metadata`).
    pub kind: JobKind,
    pub video_id: Option<String>,
    /// Source file path, as the worker sees it.
    pub source: Option<String>,
    /// Output directory, as the worker sees it.
    pub output: Option<String>,
    /// Qualities; empty: the job's (or the worker's default ladder).
    pub quality: Vec<String>,
    pub thumbnail_time: Option<String>,
    pub user_id: Option<String>,
    pub callback_url: Option<String>,
    pub segment_seconds: Option<f64>,
    pub gop_seconds: Option<f64>,
    pub preset: Option<String>,
    /// `Nats-Msg-Id` of the job (default `<kind>:<video_id>`): a second submit with the same
    /// id within the duplicate window is not stored again.
    pub msg_id: Option<String>,
    /// Follow the job to its outcome.
    pub wait: bool,
    /// Give up waiting after this many seconds.
    pub timeout: f64,
    /// Do not create the stream when it is missing.
    pub no_setup: bool,
    /// Upload the local `source` file to this object URL first (`s3://BUCKET/KEY`,
    /// `nats-object://BUCKET/NAME`), and submit the job with the URL as its source.
    pub upload: Option<String>,
    /// Where `upload` goes.
    pub storage: StorageConfig,
}

/// How long `submit --wait` follows a job by default.
pub const DEFAULT_WAIT_TIMEOUT_SECONDS: f64 = 3600.0;

/// How a submit ended.
#[derive(Debug, Serialize)]
pub struct SubmitReport {
    pub video_id: String,
    pub subject: String,
    pub stream: String,
    pub sequence: u64,
    /// True when the same video_id was submitted within the duplicate window: not stored
    /// again.
    pub duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processed: Option<ProcessedEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedEvent>,
    pub timed_out: bool,
}

impl SubmitReport {
    /// Success: stored, and with --wait, processed.
    pub fn succeeded(&self, waited: bool) -> bool {
        !waited || self.processed.is_some()
    }
}

/// What `--upload` sends before the job: a local file and its object URL.
struct Upload {
    local: PathBuf,
    url: ObjectUrl,
}

/// Builds the payload: file or stdin first, flags on top; with `upload`, the job's source is
/// the URL and the local source is returned to be uploaded first.
fn payload(args: &SubmitOptions) -> Result<(String, Vec<u8>, Option<Upload>), QueueError> {
    let mut req: JobRequest = match &args.file {
        Some(path) => {
            let mut text = Vec::new();
            if path.as_os_str() == "-" {
                std::io::stdin()
                    .read_to_end(&mut text)
                    .map_err(|e| QueueError::Config(format!("reading stdin: {e}")))?;
            } else {
                text = std::fs::read(path)
                    .map_err(|e| QueueError::Config(format!("{}: {e}", path.display())))?;
            }
            serde_json::from_slice(&text)
                .map_err(|e| QueueError::Config(format!("job JSON: {e}")))?
        }
        None => JobRequest::default(),
    };
    let set = |field: &mut Option<String>, v: &Option<String>| {
        if v.is_some() {
            field.clone_from(v);
        }
    };
    set(&mut req.video_id, &args.video_id);
    set(&mut req.source_path, &args.source);
    set(&mut req.output_path, &args.output);
    set(&mut req.user_id, &args.user_id);
    set(&mut req.callback_url, &args.callback_url);
    set(&mut req.preset, &args.preset);
    if !args.quality.is_empty() {
        req.quality = Some(args.quality.clone());
    }
    if let Some(t) = &args.thumbnail_time {
        req.thumbnail_time = Some(Value::String(t.clone()));
    }
    if args.segment_seconds.is_some() {
        req.segment_seconds = args.segment_seconds;
    }
    if args.gop_seconds.is_some() {
        req.gop_seconds = args.gop_seconds;
    }
    let video_id = req.video_id.clone().ok_or_else(|| {
        QueueError::Config("video_id is required (--video-id or in the JSON)".into())
    })?;
    job::check_video_id(&video_id).map_err(|e| QueueError::Config(e.message))?;
    if req.source_path.is_none() {
        return Err(QueueError::Config(
            "source_path is required (--source or in the JSON)".into(),
        ));
    }
    let upload = match &args.upload {
        Some(text) => {
            let url = ObjectUrl::parse(text, false).map_err(|e| QueueError::Config(e.message))?;
            let local = PathBuf::from(req.source_path.take().unwrap_or_default());
            req.source_path = Some(url.to_string());
            Some(Upload { local, url })
        }
        None => None,
    };
    if req.output_path.is_none() && args.kind != JobKind::Metadata {
        return Err(QueueError::Config(
            "output_path is required (--output or in the JSON)".into(),
        ));
    }
    let bytes = serde_json::to_vec(&req).map_err(|e| QueueError::Config(e.to_string()))?;
    Ok((video_id, bytes, upload))
}

/// `--msg-id`, or `<kind>:<video_id>`. The worker's reserved namespace is refused.
fn msg_id(args: &SubmitOptions, video_id: &str) -> Result<String, QueueError> {
    let id = match &args.msg_id {
        Some(id) => id.trim().to_string(),
        None => format!("{}:{video_id}", args.kind),
    };
    if id.is_empty() || id.starts_with(events::RESERVED_PREFIX) {
        return Err(QueueError::Config(format!(
            "--msg-id {id:?}: empty, or in the worker's reserved namespace {:?}",
            events::RESERVED_PREFIX
        )));
    }
    Ok(id)
}

/// A duplicate PubAck: the job stored under `msg_id` must be this one.
async fn check_duplicate(
    publisher: &Publisher,
    ack: &async_nats::jetstream::publish::PublishAck,
    msg_id: &str,
    subject: &str,
    payload: &[u8],
) -> Result<(), QueueError> {
    let stored = publisher
        .js
        .get_stream_no_info(&ack.stream)
        .await
        .map_err(QueueError::nats("opening the stream"))?
        .get_raw_message(ack.sequence)
        .await
        .map_err(QueueError::nats("reading the stored duplicate"))?;
    if stored.payload.as_ref() != payload && stored.subject.as_str() == subject {
        // The same job kind and id within the window: the first submit is the one kept.
        tracing::warn!(
            msg_id,
            sequence = ack.sequence,
            "a job with this msg-id is already stored with other parameters: kept as it is"
        );
    }
    if stored.subject.as_str() != subject {
        return Err(QueueError::DuplicateId {
            msg_id: msg_id.to_string(),
            sequence: ack.sequence,
            stored_subject: stored.subject.to_string(),
        });
    }
    Ok(())
}

/// Publishes the job and, with `--wait`, follows it. `on_progress` sees each progress event.
pub async fn submit(
    args: &SubmitOptions,
    on_progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<SubmitReport, QueueError> {
    let (video_id, bytes, upload) = payload(args)?;
    let (client, _events) = args.nats.connect().await?;
    if let Some(up) = &upload {
        let nats = match &args.storage.object_nats_url {
            Some(url) => crate::storage::connect_nats(url)
                .await
                .map_err(|e| QueueError::Config(e.message))?,
            None => client.clone(),
        };
        let stores = Stores::new(args.storage.clone(), Some(nats));
        let sent = std::sync::atomic::AtomicU64::new(0);
        let bytes = stores
            .put_file(&up.url, &up.local, &sent)
            .await
            .map_err(|e| {
                QueueError::Config(format!("uploading {}: {}", up.local.display(), e.message))
            })?;
        tracing::info!(url = %up.url, bytes, "source uploaded");
    }
    let publisher = Publisher::new(client.clone());
    let topology = &args.topology;
    if !args.no_setup {
        let mut report = setup::SetupReport::default();
        setup::ensure_stream(&publisher.js, &topology.stream_config(), &mut report).await?;
        setup::ensure_stream(&publisher.js, &topology.dlq_config(), &mut report).await?;
        for d in &report.drift {
            tracing::warn!("config drift, left as it is: {d}");
        }
    }
    // Subscribed before publishing, so no progress event is missed.
    let mut progress = client
        .subscribe(topology.progress_subject(&video_id))
        .await
        .map_err(QueueError::nats("subscribing to progress"))?;
    let subject = topology.job_subject(args.kind);
    let msg_id = msg_id(args, &video_id)?;
    let payload = bytes::Bytes::from(bytes);
    let ack = publisher
        .stored(&subject, &msg_id, None, payload.clone())
        .await?;
    if ack.duplicate {
        check_duplicate(&publisher, &ack, &msg_id, &subject, &payload).await?;
    }
    let mut report = SubmitReport {
        video_id: video_id.clone(),
        subject,
        stream: ack.stream.clone(),
        sequence: ack.sequence,
        duplicate: ack.duplicate,
        processed: None,
        failed: None,
        timed_out: false,
    };
    if !args.wait {
        return Ok(report);
    }

    // The outcome is stored after the job in the same stream and names the job's sequence:
    // read the stream from there (this also finds the outcome of a duplicate submit that
    // finished before we started).
    let stream = publisher
        .js
        .get_stream_no_info(&topology.stream)
        .await
        .map_err(QueueError::nats("opening the stream"))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: ack.sequence,
            },
            ..Default::default()
        })
        .await
        .map_err(QueueError::nats("creating an ordered consumer"))?;
    let reader = consumer.cached_info().name.clone();
    let mut events = consumer
        .messages()
        .await
        .map_err(QueueError::nats("reading events"))?;
    let (processed_subject, failed_subject) =
        (topology.processed_subject(), topology.failed_subject());
    let outcome = follow(
        &mut report,
        &mut events,
        &mut progress,
        (&processed_subject, &failed_subject),
        args.timeout,
        on_progress,
    )
    .await;
    drop(events);
    // Tidy: the ordered consumer would otherwise linger until its inactivity threshold.
    let _ = stream.delete_consumer(&reader).await;
    outcome.map(|()| report)
}

/// Reads the stream (and progress) until the job's outcome, or the timeout.
async fn follow(
    report: &mut SubmitReport,
    events: &mut async_nats::jetstream::consumer::pull::Ordered,
    progress: &mut async_nats::Subscriber,
    (processed_subject, failed_subject): (&str, &str),
    timeout: f64,
    on_progress: &(dyn Fn(&ProgressEvent) + Sync),
) -> Result<(), QueueError> {
    let sequence = report.sequence;
    let deadline = tokio::time::sleep(Duration::from_secs_f64(timeout.max(0.0)));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => {
                report.timed_out = true;
                return Ok(());
            }
            p = progress.next() => {
                if let Some(p) = p {
                    if let Ok(ev) = serde_json::from_slice::<ProgressEvent>(&p.payload) {
                        on_progress(&ev);
                    }
                }
            }
            m = events.next() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "reading events");
                        continue;
                    }
                    None => return Err(QueueError::Nats("event stream ended".into())),
                };
                let subject = m.subject.as_str();
                if subject == processed_subject {
                    if let Ok(ev) = serde_json::from_slice::<ProcessedEvent>(&m.payload) {
                        if ev.stream_sequence == sequence && ev.video_id == report.video_id {
                            report.processed = Some(ev);
                            return Ok(());
                        }
                    }
                } else if subject == failed_subject {
                    if let Ok(ev) = serde_json::from_slice::<FailedEvent>(&m.payload) {
                        let same_video = ev.video_id.as_deref().is_none_or(|v| v == report.video_id);
                        if ev.stream_sequence == sequence && same_video {
                            report.failed = Some(ev);
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}
