//! `video-worker run`: the JetStream worker.
//!
//! One lane per job kind (its durable consumer and its job slots). A lane pulls one message
//! only when it holds a free slot, with a bounded wait, and drops the pull at once
//! (Pitfall 3). A job runs on its own OS thread (the media side never runs on tokio); while
//! it runs, an in-progress ack goes out every ack_wait/3 (Pitfall 4) and progress events at
//! most once a second. The outcome decides the ack:
//!
//! - success → `video.processed` stored → callback → Ack (confirmed: `double_ack_with`);
//! - permanent error, or any error on the last allowed delivery → `video.failed` → DLQ copy
//!   → Term;
//! - transient error → Nak with a delay that grows per delivery;
//! - shutdown → Nak without delay.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::Instrument;

use crate::error::{ErrorKind, JobError};
use crate::job::{self, Job, JobKind, PathPolicy, ProcessedEvent, ProgressEvent};
use crate::ladder::Quality;
use crate::media::{self, Limits, ProgressTick, TranscodeRequest};
use crate::queue::callback::CallbackPolicy;
use crate::queue::connect::ConnectArgs;
use crate::queue::dlq::{self, DeadLetter};
use crate::queue::events::Publisher;
use crate::queue::setup::{self, Topology};
use crate::queue::QueueError;

/// `video-worker run` options.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub topology: Topology,
    /// Do not create or check streams and consumers (operator-managed setups).
    #[arg(long)]
    pub no_setup: bool,
    /// Exit when an existing stream or consumer differs from the expected config.
    #[arg(long)]
    pub fail_on_drift: bool,
    /// Job kinds to serve (each has its own consumer), comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "process,thumbnail,metadata"
    )]
    pub kinds: Vec<JobKind>,
    /// Concurrent transcodes (one transcode already uses every core).
    #[arg(long, env = "VW_JOBS", default_value_t = 1)]
    pub jobs: usize,
    /// Concurrent thumbnail jobs.
    #[arg(long, default_value_t = 1)]
    pub thumbnail_jobs: usize,
    /// Concurrent metadata jobs.
    #[arg(long, default_value_t = 1)]
    pub metadata_jobs: usize,
    /// Directory that source_path and output_path must lie in (repeatable; resolved, so `..`
    /// and symlinks cannot leave it). None: any path (a warning is logged).
    #[arg(long = "allow-root", env = "VW_ALLOW_ROOTS", value_delimiter = ':')]
    pub allow_roots: Vec<PathBuf>,
    /// Seconds running jobs get to finish after SIGTERM/SIGINT before they are cancelled and
    /// handed back (Nak).
    #[arg(long, env = "VW_GRACE", default_value_t = 30.0)]
    pub grace: f64,
    /// Longest wait of one pull request, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub pull_wait: f64,
    /// Nak delay after the first failed delivery of a transient error, seconds; doubles per
    /// delivery.
    #[arg(long, default_value_t = 5.0)]
    pub nak_delay: f64,
    /// Longest Nak delay, seconds.
    #[arg(long, default_value_t = 300.0)]
    pub nak_max_delay: f64,
    /// Seconds between two progress events of one job (at least 1).
    #[arg(long, default_value_t = 1.0)]
    pub progress_interval: f64,
    /// Host (or host:port) callbacks may go to (repeatable). None: any host.
    #[arg(
        long = "callback-allow-host",
        env = "VW_CALLBACK_HOSTS",
        value_delimiter = ','
    )]
    pub callback_allow_hosts: Vec<String>,
    /// Timeout of one callback POST, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub callback_timeout: f64,
    /// Tries of one callback POST.
    #[arg(long, default_value_t = 3)]
    pub callback_attempts: u32,
    /// libx264 preset (a job's `preset` field overrides it).
    #[arg(long, default_value = "medium")]
    pub preset: String,
    /// Encoder threads per transcode (default: cores / --jobs).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Segment length, seconds (a job's `segment_seconds` overrides it).
    #[arg(long, default_value_t = media::DEFAULT_SEGMENT_SECONDS)]
    pub segment_seconds: f64,
    /// Keyframe interval, seconds (a job's `gop_seconds` overrides it).
    #[arg(long, default_value_t = media::DEFAULT_GOP_SECONDS)]
    pub gop_seconds: f64,
    #[arg(long, default_value_t = Limits::default().max_width)]
    pub max_width: u32,
    #[arg(long, default_value_t = Limits::default().max_height)]
    pub max_height: u32,
    #[arg(long, default_value_t = Limits::default().max_duration)]
    pub max_duration: f64,
    /// The slowest libx264 preset a job may ask for (ultrafast … placebo).
    #[arg(long, default_value = Limits::default().slowest_preset, value_parser = media::probe::parse_preset)]
    pub max_preset: &'static str,
    /// Name in events and logs (default: <hostname>-<pid>).
    #[arg(long)]
    pub worker_name: Option<String>,
}

/// What every job task shares.
struct Shared {
    publisher: Publisher,
    topology: Arc<Topology>,
    policy: PathPolicy,
    args: WorkerArgs,
    callback: CallbackPolicy,
    worker: String,
    /// Set after the grace period: running transcodes stop with a Cancelled error.
    cancel: Arc<AtomicBool>,
    /// True once shutdown began: nothing new starts, cancelled jobs are handed back.
    stopping: watch::Receiver<bool>,
}

/// One durable consumer and its job slots.
struct Lane {
    kind: JobKind,
    consumer: PullConsumer,
    slots: Arc<Semaphore>,
    capacity: u32,
    /// Effective ack wait (the first backoff value when backoff is set: Pitfall 4).
    ack_wait: Duration,
    max_deliver: i64,
}

fn seconds(s: f64, min: f64) -> Duration {
    Duration::from_secs_f64(s.max(min).min(86_400.0))
}

/// Runs the worker until `shutdown` resolves, then drains: no new pulls, running jobs get
/// `--grace` seconds, the rest are cancelled and Nak'd. Returns after every job task ended.
pub async fn run(
    args: WorkerArgs,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), QueueError> {
    if args.kinds.is_empty() {
        return Err(QueueError::Config("--kinds is empty".into()));
    }
    let policy =
        PathPolicy::new(&args.allow_roots).map_err(|e| QueueError::Config(e.to_string()))?;
    if policy.roots.is_empty() {
        tracing::warn!("no --allow-root given: jobs may read and write any path");
    }
    if args.callback_allow_hosts.is_empty() {
        tracing::warn!("no --callback-allow-host given: callbacks may go to any host");
    }
    media::init().map_err(|e| QueueError::Config(e.to_string()))?;
    let (client, _events) = args.connect.connect().await?;
    let publisher = Publisher::new(client.clone());
    let topology = Arc::new(args.topology.clone());

    if !args.no_setup {
        let report = setup::ensure(&publisher.js, &topology, &args.kinds).await?;
        for c in &report.created {
            tracing::info!("created {c}");
        }
        for d in &report.drift {
            tracing::warn!("config drift, left as it is: {d}");
        }
        if args.fail_on_drift && !report.drift.is_empty() {
            return Err(QueueError::Drift(report.drift));
        }
    }

    let stream = publisher
        .js
        .get_stream_no_info(&topology.stream)
        .await
        .map_err(QueueError::setup(&topology.stream))?;
    let mut lanes = Vec::new();
    for &kind in &args.kinds {
        let name = topology.consumer_name(kind);
        let consumer: PullConsumer = stream
            .get_consumer(name)
            .await
            .map_err(QueueError::setup(name))?;
        let cfg = &consumer.cached_info().config;
        let ack_wait = cfg
            .backoff
            .first()
            .copied()
            .unwrap_or(cfg.ack_wait)
            .max(Duration::from_millis(300));
        let capacity = match kind {
            JobKind::Process => args.jobs,
            JobKind::Thumbnail => args.thumbnail_jobs,
            JobKind::Metadata => args.metadata_jobs,
        }
        .clamp(1, 1024) as u32;
        tracing::info!(
            consumer = name, %kind, slots = capacity, ack_wait = ?ack_wait,
            max_deliver = cfg.max_deliver, "serving"
        );
        lanes.push(Arc::new(Lane {
            kind,
            max_deliver: cfg.max_deliver,
            consumer,
            slots: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            ack_wait,
        }));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        publisher: publisher.clone(),
        topology: Arc::clone(&topology),
        policy,
        callback: CallbackPolicy {
            allow_hosts: args.callback_allow_hosts.clone(),
            timeout: seconds(args.callback_timeout, 0.1),
            attempts: args.callback_attempts,
        },
        worker: args
            .worker_name
            .clone()
            .unwrap_or_else(crate::queue::default_worker_name),
        args,
        cancel: Arc::new(AtomicBool::new(false)),
        stopping: stop_rx.clone(),
    });

    let mut watchers = Vec::new();
    for lane in &lanes {
        // Subscribed here, before any pull (see `subscribe_max_deliveries`).
        let sub = dlq::subscribe_max_deliveries(&publisher, &topology, lane.kind).await?;
        watchers.push(tokio::spawn(dlq::watch_max_deliveries(
            sub,
            publisher.clone(),
            Arc::clone(&topology),
            lane.kind,
            lane.max_deliver,
            shared.worker.clone(),
            stop_rx.clone(),
        )));
    }
    let pullers: Vec<_> = lanes
        .iter()
        .map(|lane| tokio::spawn(pull_loop(Arc::clone(&shared), Arc::clone(lane))))
        .collect();

    shutdown.await;
    let deadline = Instant::now() + seconds(shared.args.grace, 0.0);
    tracing::info!(grace = shared.args.grace, "shutting down: no new jobs");
    let _ = stop_tx.send(true);
    for p in pullers {
        let _ = p.await;
    }
    // Every slot free again = every job task has ended.
    let all_idle = async {
        for lane in &lanes {
            let _ = lane.slots.acquire_many(lane.capacity).await;
        }
    };
    tokio::pin!(all_idle);
    if tokio::time::timeout_at(deadline.into(), &mut all_idle)
        .await
        .is_err()
    {
        tracing::warn!("grace period over: cancelling running jobs and handing them back");
        shared.cancel.store(true, Ordering::Relaxed);
        if tokio::time::timeout(Duration::from_secs(30), &mut all_idle)
            .await
            .is_err()
        {
            tracing::error!("jobs did not stop 30 s after cancellation; exiting anyway");
        }
    }
    for w in watchers {
        w.abort();
    }
    let _ = client.flush().await;
    tracing::info!("stopped");
    Ok(())
}

/// Pulls one message at a time, only with a free slot in hand.
async fn pull_loop(shared: Arc<Shared>, lane: Arc<Lane>) {
    let mut stop = shared.stopping.clone();
    let wait = seconds(shared.args.pull_wait, 0.5);
    let mut retry = Duration::from_millis(500);
    loop {
        if *stop.borrow() {
            return;
        }
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            p = Arc::clone(&lane.slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        // Not interrupted by shutdown: a pull dropped mid-way could still be answered by a
        // message nobody reads, held until its ack wait runs out. It ends within `wait`.
        let pulled =
            tokio::time::timeout(wait + Duration::from_secs(5), pull_one(&lane, wait)).await;
        match pulled {
            Ok(Ok(Some(msg))) => {
                retry = Duration::from_millis(500);
                if *stop.borrow() {
                    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
                        tracing::warn!(error = %e, "handing back a job pulled during shutdown");
                    }
                    return;
                }
                tokio::spawn(handle(Arc::clone(&shared), Arc::clone(&lane), msg, permit));
            }
            Ok(Ok(None)) => drop(permit),
            Ok(Err(e)) => {
                drop(permit);
                tracing::warn!(consumer = %lane.consumer.cached_info().name, error = %e, "pull failed");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(retry) => {},
                }
                retry = (retry * 2).min(Duration::from_secs(10));
            }
            Err(_) => {
                drop(permit);
                tracing::warn!("pull request timed out; retrying");
            }
        }
    }
}

async fn pull_one(lane: &Lane, wait: Duration) -> Result<Option<jetstream::Message>, String> {
    let mut batch = lane
        .consumer
        .batch()
        .max_messages(1)
        .expires(wait)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    match batch.next().await {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(e)) => Err(e.to_string()),
    }
}

/// What a successful job hands to the success path.
struct Success {
    event: ProcessedEvent,
    callback_url: Option<String>,
}

/// A job's failure and what is known about the job for the failed event.
struct Failure {
    error: JobError,
}

/// Runs one job and acks it by its outcome; the slot is freed when this returns.
async fn handle(
    shared: Arc<Shared>,
    lane: Arc<Lane>,
    msg: jetstream::Message,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let msg = Arc::new(msg);
    let (stream_seq, attempt) = match msg.info() {
        Ok(i) => (i.stream_sequence, i.delivered.max(1) as u64),
        Err(e) => {
            tracing::error!(error = %e, subject = %msg.subject, "message without JetStream metadata; ignored");
            return;
        }
    };
    let span = tracing::info_span!("job", kind = %lane.kind, seq = stream_seq, attempt);
    run_job(shared, lane, msg, stream_seq, attempt)
        .instrument(span)
        .await;
}

async fn run_job(
    shared: Arc<Shared>,
    lane: Arc<Lane>,
    msg: Arc<jetstream::Message>,
    stream_seq: u64,
    attempt: u64,
) {
    let last_attempt = lane.max_deliver > 0 && attempt >= lane.max_deliver as u64;
    tracing::info!(payload_bytes = msg.payload.len(), "job received");

    // In-progress acks while the job runs and until its outcome is recorded, so a long
    // transcode (or a slow publish or callback after it) is never redelivered.
    let keepalive = KeepAlive::start(Arc::clone(&msg), lane.ack_wait / 3);
    let started = Instant::now();
    let result = execute(&shared, lane.kind, &msg, stream_seq, attempt).await;
    match result {
        Ok(success) => on_success(&shared, &msg, success, started, keepalive).await,
        Err(f) => {
            on_failure(
                &shared,
                &lane,
                &msg,
                f,
                (stream_seq, attempt, last_attempt),
                keepalive,
            )
            .await
        }
    }
}

/// The task sending `AckKind::Progress` every third of the ack wait (Pitfall 4).
struct KeepAlive {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    fn start(msg: Arc<jetstream::Message>, every: Duration) -> KeepAlive {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tick.tick() => {
                        if let Err(e) = msg.ack_with(AckKind::Progress).await {
                            tracing::warn!(error = %e, "in-progress ack not sent");
                        }
                    }
                }
            }
        });
        KeepAlive { stop, task }
    }

    /// Stops before the final Ack/Nak/Term, so no in-progress ack follows it.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn on_success(
    shared: &Shared,
    msg: &jetstream::Message,
    s: Success,
    started: Instant,
    keepalive: KeepAlive,
) {
    let subject = shared.topology.processed_subject();
    let msg_id = format!(
        "processed-{}-{}",
        shared.topology.stream, s.event.stream_sequence
    );
    if let Err(e) = shared
        .publisher
        .stored_json(&subject, &msg_id, &s.event)
        .await
    {
        // The output is in place: the redelivery finds it and only republishes.
        tracing::error!(error = %e, "video.processed not stored; handing the job back");
        keepalive.stop().await;
        nak(msg, Some(Duration::from_secs(1))).await;
        return;
    }
    if let Some(url) = s.callback_url {
        let policy = shared.callback.clone();
        let body = serde_json::to_vec(&s.event).unwrap_or_default();
        let url2 = url.clone();
        match tokio::task::spawn_blocking(move || policy.post(&url2, &body)).await {
            Ok(Ok(status)) => tracing::info!(%url, status, "callback delivered"),
            Ok(Err(e)) => {
                tracing::warn!(%url, error = %e, "callback not delivered (job still succeeds)")
            }
            Err(e) => tracing::warn!(%url, error = %e, "callback task failed"),
        }
    }
    keepalive.stop().await;
    match msg.double_ack_with(AckKind::Ack).await {
        Ok(()) => tracing::info!(
            video_id = %s.event.video_id,
            reused = s.event.reused_output,
            seconds = started.elapsed().as_secs_f64(),
            "job done and acked"
        ),
        // Redelivered later, the job finds its output and only republishes (idempotent).
        Err(e) => tracing::warn!(error = %e, "ack not confirmed; a redelivery will be recognised"),
    }
}

async fn on_failure(
    shared: &Shared,
    lane: &Lane,
    msg: &jetstream::Message,
    f: Failure,
    (stream_seq, attempt, last_attempt): (u64, u64, bool),
    keepalive: KeepAlive,
) {
    let e = f.error;
    let stopping = *shared.stopping.borrow();
    if e.kind == ErrorKind::Cancelled && stopping {
        tracing::info!("job cancelled by shutdown: handing it back");
        keepalive.stop().await;
        nak(msg, None).await;
        return;
    }
    if !e.kind.is_permanent() && !last_attempt {
        let delay = nak_delay(&shared.args, attempt);
        tracing::warn!(error = %e, retry_in = ?delay, "transient failure: job handed back");
        keepalive.stop().await;
        nak(msg, Some(delay)).await;
        return;
    }
    tracing::warn!(error = %e, last_attempt, "job failed for good: video.failed + dead letter");
    let original_msg_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.to_string());
    let dl = DeadLetter {
        kind: lane.kind,
        stream: &shared.topology.stream,
        consumer: shared.topology.consumer_name(lane.kind),
        subject: msg.subject.as_str(),
        stream_seq,
        deliveries: attempt,
        max_deliver: lane.max_deliver,
        payload: &msg.payload,
        original_msg_id,
        error: &e,
        worker: &shared.worker,
    };
    let stored = dlq::fail_for_good(&shared.publisher, &shared.topology, &dl).await;
    keepalive.stop().await;
    match stored {
        Ok(()) => {
            if let Err(err) = msg.double_ack_with(AckKind::Term).await {
                tracing::warn!(error = %err, "term not confirmed (dead letter already stored)");
            }
        }
        Err(err) => {
            // Not stored: keep the job. If this was its last delivery, the max-deliveries
            // advisory brings it to the DLQ.
            tracing::error!(error = %err, "dead letter not stored; handing the job back");
            nak(msg, Some(nak_delay(&shared.args, attempt))).await;
        }
    }
}

async fn nak(msg: &jetstream::Message, delay: Option<Duration>) {
    if let Err(e) = msg.double_ack_with(AckKind::Nak(delay)).await {
        tracing::warn!(error = %e, "nak not confirmed; the job comes back after its ack wait");
    }
}

/// `nak_delay · 2^(attempt-1)`, capped.
fn nak_delay(args: &WorkerArgs, attempt: u64) -> Duration {
    let exp = attempt.saturating_sub(1).min(20) as i32;
    let s = args.nak_delay.max(0.0) * 2f64.powi(exp);
    Duration::from_secs_f64(s.min(args.nak_max_delay.max(0.0)))
}

/// Parses, validates and runs one job; never panics on bad input.
async fn execute(
    shared: &Arc<Shared>,
    kind: JobKind,
    msg: &jetstream::Message,
    stream_seq: u64,
    attempt: u64,
) -> Result<Success, Failure> {
    let fail = |error: JobError| Failure { error };
    let job = Job::parse(kind, &msg.payload, &shared.policy).map_err(fail)?;
    tracing::info!(video_id = %job.video_id, source = %job.source.display(), "job valid");
    let mut event = ProcessedEvent {
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
        attempt,
        stream_sequence: stream_seq,
        worker: shared.worker.clone(),
        completed_at_unix: 0,
    };
    let limits = Limits {
        max_width: shared.args.max_width,
        max_height: shared.args.max_height,
        max_duration: shared.args.max_duration,
        slowest_preset: shared.args.max_preset,
    };
    match kind {
        JobKind::Process => {
            let req = transcode_request(&shared.args, &job, limits).map_err(fail)?;
            event.output_path = Some(req.output_dir.clone());
            event.master_playlist = Some(req.output_dir.join(media::hls::playlist::MASTER));
            event.thumbnail = Some(req.output_dir.join(media::thumbnail::FILE_NAME));
            event.fingerprint = req.fingerprint.clone();
            if let Some(result) = finished_output(&req) {
                tracing::info!("output already complete for this request: not transcoding again");
                event.reused_output = true;
                event.result = result;
            } else {
                let outcome = run_transcode(shared, &job, req, attempt)
                    .await
                    .map_err(fail)?;
                event.result = serde_json::to_value(&outcome).unwrap_or(Value::Null);
            }
        }
        JobKind::Thumbnail => {
            let cancel = Arc::clone(&shared.cancel);
            let (source, output, time) =
                (job.source.clone(), job.output.clone(), job.thumbnail_time);
            let outcome = on_thread("thumbnail", move || {
                media::thumbnail::thumbnail_only(&source, &output, time, &limits, &cancel)
            })
            .await
            .map_err(fail)?;
            event.output_path = Some(job.output.clone());
            event.thumbnail = Some(outcome.path.clone());
            event.result = serde_json::to_value(&outcome).unwrap_or(Value::Null);
        }
        JobKind::Metadata => {
            let source = job.source.clone();
            let info = on_thread("probe", move || media::probe(&source, &limits))
                .await
                .map_err(fail)?;
            event.result = serde_json::to_value(&info).unwrap_or(Value::Null);
        }
    }
    event.completed_at_unix = job::unix_now();
    Ok(Success {
        event,
        callback_url: job.callback_url,
    })
}

fn transcode_request(
    args: &WorkerArgs,
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
    req.preset = job.preset.clone().unwrap_or_else(|| args.preset.clone());
    req.threads = if args.threads > 0 {
        args.threads
    } else {
        (num_cpus::get() / args.jobs.max(1)).max(1)
    };
    req.limits = limits;
    req.video_id = Some(job.video_id.clone());
    req.fingerprint = Some(media::manifest::fingerprint(&req)?);
    Ok(req)
}

/// The manifest's `result` when `req.output_dir` holds a complete output made for the same
/// request (same fingerprint): a redelivered job whose ack was lost.
fn finished_output(req: &TranscodeRequest) -> Option<Value> {
    let outcome =
        media::manifest::Manifest::finished(&req.output_dir, req.fingerprint.as_deref()?)?;
    serde_json::to_value(outcome).ok()
}

/// Runs blocking media work on its own OS thread (never on a tokio worker) and awaits it.
async fn on_thread<T: Send + 'static>(
    name: &'static str,
    work: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("job-{name}"))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err(JobError::internal(format!("{name} panicked"))));
            let _ = tx.send(r);
        })
        .map_err(|e| JobError::internal(format!("starting the {name} thread: {e}")))?;
    rx.await
        .unwrap_or_else(|_| Err(JobError::internal(format!("{name} thread vanished"))))
}

/// The transcode on its own thread; its progress ticks come back over a bounded channel
/// (a full channel drops a tick, never blocks the decode loop) and go out as progress
/// events at most once per `--progress-interval`.
async fn run_transcode(
    shared: &Arc<Shared>,
    job: &Job,
    req: TranscodeRequest,
    attempt: u64,
) -> Result<media::Outcome, JobError> {
    let (tick_tx, mut tick_rx) = mpsc::channel::<ProgressTick>(16);
    let cancel = Arc::clone(&shared.cancel);
    let work = on_thread("transcode", move || {
        let progress = move |t: &ProgressTick| {
            let _ = tick_tx.try_send(t.clone());
        };
        media::transcode(&req, &cancel, &progress)
    });
    let subject = shared.topology.progress_subject(&job.video_id);
    let every = seconds(shared.args.progress_interval, 1.0);
    let publisher = shared.publisher.clone();
    let video_id = job.video_id.clone();
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
                job: JobKind::Process,
                stage: t.stage,
                percent: (t.percent * 10.0).round() / 10.0,
                frames: t.frames,
                total_frames: t.total_frames,
                fps: (t.fps * 10.0).round() / 10.0,
                eta_seconds: t.eta_seconds.map(|e| e.round()),
                attempt,
            };
            publisher.progress(&subject, &event).await;
        }
    };
    let (result, ()) = tokio::join!(work, progress);
    result
}
