//! `video-worker run`: the JetStream worker.
//!
//! - [`lane`]: one lane per job kind (its durable consumer and its job slots): a message is
//!   pulled only with a free slot in hand, with a bounded wait, and the pull is dropped at
//!   once (a prefetching consumer would hold jobs it cannot start); in-progress acks go out
//!   while the job makes progress; a deleted consumer or stream is recreated.
//! - [`execute`]: one job: parse and validate, reuse a finished output, run the media work
//!   (the one function [`execute::run_media`] starts it), build the `video.processed` event.
//! - [`outcome`]: what happens to the message, as a pure, table-tested function of the
//!   outcome, the delivery and whether the worker is stopping.
//! - [`settle`]: the one executor of that decision (Ack, Nak, hand-back, dead letter + Term).
//! - [`backstop`]: the max-deliveries advisory of a job whose worker died.
//! - [`concurrency`]: `--jobs N|auto`: how many transcodes at once, how many threads each.
//!
//! The outcome decides the ack:
//! - success → `video.processed` stored → Ack (confirmed) → callback (its own retries, an
//!   `Idempotency-Key`);
//! - permanent error, or any error on the last allowed delivery → `video.failed` → DLQ copy
//!   → Term;
//! - transient error → Nak with a delay that grows per delivery;
//! - shutdown → the job is stored again as a fresh message and the original terminated, so
//!   that a hand-back never uses up one of the job's deliveries.

mod backstop;
pub mod concurrency;
mod execute;
mod lane;
mod objects;
mod outcome;
mod settle;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use serde::{Deserialize, Serialize};

use crate::isolation::{ChildCommand, ChildLimits};
use crate::job::{JobKind, PathPolicy};
use crate::media::{self, Limits};
use crate::queue::callback::CallbackPolicy;
use crate::queue::connect::NatsConfig;
use crate::queue::dlq;
use crate::queue::events::Publisher;
use crate::queue::setup::{self, Topology};
use crate::queue::QueueError;
use crate::storage::{StorageConfig, Stores};
use crate::telemetry::{self, health::Health};

pub use concurrency::Concurrency;
use lane::Lane;
use outcome::Backoff;

/// How the worker runs (`video-worker run`): the configuration file's top level and its
/// `[nats]` and `[topology]` tables; the binary lays flags and environment variables over it.
/// Every default is in `Default` (or a constant it names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Do not create or check streams and consumers (operator-managed setups).
    pub no_setup: bool,
    /// Exit when an existing stream or consumer differs from the expected config.
    pub fail_on_drift: bool,
    /// Job kinds to serve (each has its own consumer).
    pub kinds: Vec<JobKind>,
    /// Concurrent transcodes: a number (the cores are split evenly between them), or `auto`
    /// (one job per 8 cores, at least one, each on its share: what the container runs).
    pub jobs: Concurrency,
    /// Concurrent thumbnail jobs.
    pub thumbnail_jobs: usize,
    /// Concurrent metadata jobs.
    pub metadata_jobs: usize,
    /// Directories that source_path and output_path must lie in (resolved, so `..` and
    /// symlinks cannot leave them), or object prefixes (`s3://bucket/prefix/`,
    /// `nats-object://bucket/`). Empty: any path (a warning is logged).
    pub allow_roots: Vec<PathBuf>,
    /// Seconds running jobs get to finish after SIGTERM/SIGINT before they are cancelled and
    /// handed back (stored again as a fresh message, so no delivery is used up).
    pub grace: f64,
    /// Longest wait of one pull request, seconds.
    pub pull_wait: f64,
    /// Nak delay after the first failed delivery of a transient error, seconds; doubles per
    /// delivery.
    pub nak_delay: f64,
    /// Longest Nak delay, seconds.
    pub nak_max_delay: f64,
    /// Seconds between two progress events of one job (at least 1).
    pub progress_interval: f64,
    /// Hosts (or host:port) callbacks may go to. Empty: any host, but never a link-local
    /// address (see `callback_allow_link_local`).
    pub callback_allow_hosts: Vec<String>,
    /// Allow callbacks to link-local addresses (169.254.0.0/16, fe80::/10: where clouds serve
    /// instance metadata and credentials). Off: refused even when the host is listed.
    pub callback_allow_link_local: bool,
    /// Timeout of one callback POST, seconds.
    pub callback_timeout: f64,
    /// Tries of one callback POST.
    pub callback_attempts: u32,
    /// libx264 preset (a job's `preset` field overrides it).
    pub preset: String,
    /// Encoder threads per transcode; 0: `jobs`' share of the cores.
    pub threads: usize,
    /// Segment length, seconds (a job's `segment_seconds` overrides it).
    pub segment_seconds: f64,
    /// Keyframe interval, seconds (a job's `gop_seconds` overrides it).
    pub gop_seconds: f64,
    /// Audio as its own rendition (`separate`) or muxed into every video rendition (`muxed`).
    pub audio: media::AudioLayout,
    /// Segment container: MPEG-TS (`ts`) or fragmented MP4 / CMAF (`fmp4`).
    pub segments: media::hls::SegmentFormat,
    /// Measure each rendition's PSNR against the scaled source while encoding; reported in
    /// `video.processed`.
    pub measure_quality: bool,
    /// Refuse sources wider than this.
    pub max_width: u32,
    /// Refuse sources taller than this.
    pub max_height: u32,
    /// Refuse sources longer than this many seconds.
    pub max_duration: f64,
    /// The slowest libx264 preset a job may ask for (ultrafast … placebo).
    pub max_preset: String,
    /// Memory a job process may map beyond the loaded binary, MiB (RLIMIT_AS; virtual size:
    /// a 1080p three-rung ladder peaks near 2 GiB with 8 to 32 encoder threads). 0: no limit.
    pub job_memory_mib: u64,
    /// CPU seconds a job process may use, all threads together (RLIMIT_CPU). 0: no limit.
    pub job_cpu_seconds: u64,
    /// Wall-clock seconds a job may run. 0: no limit.
    pub job_wall_seconds: u64,
    /// Seconds without progress after which a job process is killed (`stalled`); it also
    /// ends the job's in-progress acks. Thumbnail and metadata jobs report no progress: for
    /// them it bounds the whole job.
    pub job_stall_seconds: u64,
    /// Seconds the last delivery of a job keeps retrying to store its outcome (event, dead
    /// letter) while holding the message in progress: nothing retries after it.
    pub record_patience: f64,
    /// Consecutive failed recoveries of a lane's consumer (deleted, stream recreated) after
    /// which the worker exits non-zero so that its supervisor restarts it.
    pub recover_attempts: u32,
    /// Name in events and logs (default: <hostname>-<pid>).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_name: Option<String>,
    /// How to reach NATS.
    pub nats: NatsConfig,
    /// Streams, subjects and consumers.
    pub topology: Topology,
    /// Sources and outputs in S3 and the NATS object store.
    pub storage: StorageConfig,
    /// Address to serve Prometheus `/metrics`, `/healthz` and `/readyz` on (e.g.
    /// 0.0.0.0:9090). Off by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let limits = Limits::default();
        let child = ChildLimits::default();
        WorkerConfig {
            no_setup: false,
            fail_on_drift: false,
            kinds: JobKind::ALL.to_vec(),
            jobs: Concurrency::default(),
            thumbnail_jobs: 1,
            metadata_jobs: 1,
            allow_roots: Vec::new(),
            grace: 30.0,
            pull_wait: 5.0,
            nak_delay: 5.0,
            nak_max_delay: 300.0,
            progress_interval: 1.0,
            callback_allow_hosts: Vec::new(),
            callback_allow_link_local: false,
            callback_timeout: 10.0,
            callback_attempts: 3,
            preset: media::DEFAULT_PRESET.into(),
            threads: 0,
            segment_seconds: media::DEFAULT_SEGMENT_SECONDS,
            gop_seconds: media::DEFAULT_GOP_SECONDS,
            audio: media::AudioLayout::default(),
            segments: media::hls::SegmentFormat::default(),
            measure_quality: false,
            max_width: limits.max_width,
            max_height: limits.max_height,
            max_duration: limits.max_duration,
            max_preset: limits.slowest_preset.into(),
            job_memory_mib: child.memory_bytes >> 20,
            job_cpu_seconds: child.cpu_seconds,
            job_wall_seconds: child.wall_seconds,
            job_stall_seconds: child.stall_seconds,
            record_patience: 600.0,
            recover_attempts: 10,
            worker_name: None,
            nats: NatsConfig::default(),
            topology: Topology::default(),
            storage: StorageConfig::default(),
            metrics_addr: None,
        }
    }
}

impl WorkerConfig {
    /// Refuses what `run` could not start with (also what `config` checks before printing).
    pub fn validate(&self) -> Result<(), QueueError> {
        if self.kinds.is_empty() {
            return Err(QueueError::Config("kinds is empty".into()));
        }
        self.limits()?;
        self.nats.validate()?;
        self.topology.validate()
    }

    /// What a job may ask of this worker.
    pub fn limits(&self) -> Result<Limits, QueueError> {
        Ok(Limits {
            max_width: self.max_width,
            max_height: self.max_height,
            max_duration: self.max_duration,
            slowest_preset: media::probe::parse_preset(&self.max_preset)
                .map_err(|e| QueueError::Config(format!("max_preset: {e}")))?,
        })
    }

    /// The limits of each job process.
    pub fn child_limits(&self) -> ChildLimits {
        ChildLimits {
            memory_bytes: self.job_memory_mib.saturating_mul(1 << 20),
            cpu_seconds: self.job_cpu_seconds,
            wall_seconds: self.job_wall_seconds,
            stall_seconds: self.job_stall_seconds,
            ..ChildLimits::default()
        }
    }

    /// The same configuration with its secrets replaced (for `video-worker config`).
    pub fn redacted(&self) -> WorkerConfig {
        WorkerConfig {
            nats: self.nats.redacted(),
            storage: self.storage.redacted(),
            ..self.clone()
        }
    }
}

/// What every job task shares.
struct Shared {
    publisher: Publisher,
    topology: Arc<Topology>,
    /// Where jobs may read and write.
    policy: PathPolicy,
    args: WorkerConfig,
    /// What a job may ask of this worker (from `args`, checked once at start).
    limits: Limits,
    /// Where callbacks may go, and how patiently.
    callback: CallbackPolicy,
    /// Name in events and logs.
    worker: String,
    /// True after the grace period: running jobs' processes are told to stop (they end with
    /// a Cancelled error).
    cancel: watch::Receiver<bool>,
    /// How a job process is started, and its limits.
    child: ChildCommand,
    child_limits: ChildLimits,
    /// True once shutdown began: nothing new starts, cancelled jobs are handed back.
    stopping: watch::Receiver<bool>,
    /// Nak delays of transient failures.
    backoff: Backoff,
    /// Object stores (S3, the JetStream object store) for object sources and outputs.
    stores: Arc<Stores>,
    /// A lane that cannot recover its consumer reports here; the worker then stops and
    /// exits non-zero.
    fatal: mpsc::Sender<QueueError>,
    /// Readiness (`/readyz`): connected, consumers bound, not draining.
    health: Arc<Health>,
}

fn seconds(s: f64, min: f64) -> Duration {
    Duration::from_secs_f64(s.max(min).min(86_400.0))
}

/// Runs the worker until `shutdown` resolves (or a lane cannot recover its consumer), then
/// drains: no new pulls, running jobs get `--grace` seconds, the rest are cancelled and
/// handed back. Returns after every job task ended.
pub async fn run(
    args: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), QueueError> {
    args.validate()?;
    let limits = args.limits()?;
    let policy =
        PathPolicy::new(&args.allow_roots).map_err(|e| QueueError::Config(e.to_string()))?;
    if !policy.is_confined() {
        tracing::warn!("no --allow-root given: jobs may read and write any path");
    }
    if args.callback_allow_hosts.is_empty() {
        tracing::warn!(
            "no --callback-allow-host given: callbacks may go to any host (never to a \
             link-local address unless --callback-allow-link-local)"
        );
    }
    // Served before connecting: /healthz answers, and /readyz says why it is not ready yet.
    let health = Arc::new(Health::default());
    let _endpoint = match args.metrics_addr {
        Some(addr) => Some(telemetry::serve(addr, Arc::clone(&health)).await?),
        None => None,
    };
    media::init().map_err(|e| QueueError::Config(e.to_string()))?;
    let (client, events) = args.nats.connect().await?;
    health.connected(client.clone(), events);
    let publisher = Publisher::new(client.clone());
    let object_nats = match &args.storage.object_nats_url {
        Some(url) => crate::storage::connect_nats(url)
            .await
            .map_err(|e| QueueError::Config(e.message))?,
        None => client.clone(),
    };
    let scratch = args.storage.scratch.clone();
    let _ = tokio::task::spawn_blocking(move || crate::storage::run::sweep_scratch(&scratch)).await;
    let stores = Arc::new(Stores::new(args.storage.clone(), Some(object_nats)));
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

    let mut lanes = Vec::new();
    if args.kinds.contains(&JobKind::Process) {
        let plan = args.jobs.plan(num_cpus::get());
        let threads = match args.threads {
            0 => plan.threads_per_job,
            n => n,
        };
        tracing::info!(
            "transcodes (--jobs {}): {} at once, {threads} encoder thread(s) each, on {} core(s)",
            args.jobs,
            plan.slots,
            num_cpus::get()
        );
    }
    for &kind in &args.kinds {
        let capacity = match kind {
            JobKind::Process => args.jobs.plan(num_cpus::get()).slots,
            JobKind::Thumbnail => args.thumbnail_jobs,
            JobKind::Metadata => args.metadata_jobs,
        }
        .clamp(1, 1024) as u32;
        lanes.push(Arc::new(
            Lane::open(&publisher.js, &topology, kind, capacity).await?,
        ));
    }

    let child = ChildCommand::current_exe().map_err(|e| QueueError::Config(e.to_string()))?;
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (fatal_tx, mut fatal_rx) = mpsc::channel(lanes.len().max(1));
    let shared = Arc::new(Shared {
        publisher: publisher.clone(),
        topology: Arc::clone(&topology),
        policy,
        callback: CallbackPolicy {
            allow_hosts: args.callback_allow_hosts.clone(),
            allow_link_local: args.callback_allow_link_local,
            timeout: seconds(args.callback_timeout, 0.1),
            attempts: args.callback_attempts,
        },
        backoff: Backoff {
            first: seconds(args.nak_delay, 0.0),
            max: seconds(args.nak_max_delay, 0.0),
        },
        fatal: fatal_tx,
        stores,
        worker: args
            .worker_name
            .clone()
            .unwrap_or_else(crate::queue::default_worker_name),
        child_limits: args.child_limits(),
        limits,
        args,
        cancel: cancel_rx,
        child,
        stopping: stop_rx.clone(),
        health: Arc::clone(&health),
    });

    let mut watchers = Vec::new();
    for lane in &lanes {
        // Subscribed here, before any pull (see `subscribe_max_deliveries`).
        let sub = dlq::subscribe_max_deliveries(&publisher, &topology, lane.kind).await?;
        watchers.push(tokio::spawn(backstop::watch(
            sub,
            Arc::clone(&shared),
            lane.kind,
            lane.max_deliver,
        )));
    }
    let pullers: Vec<_> = lanes
        .iter()
        .map(|lane| tokio::spawn(lane::pull_loop(Arc::clone(&shared), Arc::clone(lane))))
        .collect();
    for lane in &lanes {
        health.consumer(lane.kind, true);
    }

    let failure = tokio::select! {
        () = shutdown => None,
        e = fatal_rx.recv() => e,
    };
    // Not ready first, so that no new work is routed here while the drain runs.
    health.drain();
    if let Some(e) = &failure {
        tracing::error!(error = %e, "a lane cannot recover its consumer: stopping");
    }
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
        let _ = cancel_tx.send(true);
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
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
