//! A lane: one durable consumer and its job slots. It pulls one message only with a free
//! slot in hand, turns the message into a [`Delivery`], runs the job, and hands the outcome
//! to `settle`. While a job runs, [`KeepAlive`] sends in-progress acks, but only while the
//! job's [`Heartbeat`] says it is making progress.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use tokio::sync::{oneshot, Semaphore};
use tracing::Instrument;

use super::outcome::{self, Delivery, Outcome};
use super::settle;
use super::{execute, seconds, Shared};
use crate::job::JobKind;
use crate::queue::setup::{self, Topology};
use crate::queue::QueueError;
use crate::telemetry::{self, metrics::SlotGauges, Stage};

/// One durable consumer and its job slots.
pub(super) struct Lane {
    pub kind: JobKind,
    /// The consumer handle; replaced when the consumer had to be recreated.
    consumer: std::sync::Mutex<PullConsumer>,
    pub slots: Arc<Semaphore>,
    pub capacity: u32,
    /// Effective ack wait (the first backoff value when backoff is set: the server uses it
    /// as the ack wait).
    pub ack_wait: Duration,
    pub max_deliver: i64,
    /// Jobs in flight and free slots, as metrics.
    gauges: SlotGauges,
}

impl Lane {
    pub async fn open(
        js: &jetstream::Context,
        topology: &Topology,
        kind: JobKind,
        capacity: u32,
    ) -> Result<Lane, QueueError> {
        let name = topology.consumer_name(kind);
        let consumer = get_consumer(js, topology, kind).await?;
        let cfg = &consumer.cached_info().config;
        let ack_wait = cfg
            .backoff
            .first()
            .copied()
            .unwrap_or(cfg.ack_wait)
            .max(Duration::from_millis(300));
        tracing::info!(
            consumer = name, %kind, slots = capacity, ack_wait = ?ack_wait,
            max_deliver = cfg.max_deliver, "serving"
        );
        Ok(Lane {
            kind,
            max_deliver: cfg.max_deliver,
            consumer: std::sync::Mutex::new(consumer),
            slots: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            ack_wait,
            gauges: SlotGauges::new(kind, capacity),
        })
    }

    fn consumer(&self) -> PullConsumer {
        match self.consumer.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace_consumer(&self, c: PullConsumer) {
        match self.consumer.lock() {
            Ok(mut g) => *g = c,
            Err(poisoned) => *poisoned.into_inner() = c,
        }
    }
}

async fn get_consumer(
    js: &jetstream::Context,
    topology: &Topology,
    kind: JobKind,
) -> Result<PullConsumer, QueueError> {
    let name = topology.consumer_name(kind);
    let stream = js
        .get_stream_no_info(&topology.stream)
        .await
        .map_err(QueueError::setup(&topology.stream))?;
    stream
        .get_consumer(name)
        .await
        .map_err(QueueError::setup(name))
}

/// After a failed pull: makes the lane's consumer usable again. The consumer (or its whole
/// stream) may have been deleted or recreated; unless `--no-setup`, the topology is ensured
/// again (the same create-if-missing as at start), then the consumer is looked up anew.
async fn recover(shared: &Shared, lane: &Lane) -> Result<(), QueueError> {
    let js = &shared.publisher.js;
    if !shared.args.no_setup {
        let report = setup::ensure(js, &shared.topology, &[lane.kind]).await?;
        for c in &report.created {
            tracing::warn!("recreated {c}");
        }
    }
    let consumer = get_consumer(js, &shared.topology, lane.kind).await?;
    lane.replace_consumer(consumer);
    Ok(())
}

/// How often an idle lane checks that its consumer still exists.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Pulls one message at a time, only with a free slot in hand.
pub(super) async fn pull_loop(shared: Arc<Shared>, lane: Arc<Lane>) {
    let mut stop = shared.stopping.clone();
    let wait = seconds(shared.args.pull_wait, 0.5);
    let mut retry = Duration::from_millis(500);
    let mut failed_recoveries = 0u32;
    // After a failed pull, until a pull or a check shows the consumer is there again.
    let mut suspect = false;
    let mut last_check = Instant::now();
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
        let error = match pulled {
            Ok(Ok(Some(msg))) => {
                shared.health.consumer(lane.kind, true);
                retry = Duration::from_millis(500);
                (failed_recoveries, suspect) = (0, false);
                tokio::spawn(handle(Arc::clone(&shared), Arc::clone(&lane), msg, permit));
                continue;
            }
            // An empty pull. nats-server 2.9 answers a pull on a deleted consumer with
            // nothing rather than an error, so the consumer's existence is checked after a
            // failure and every HEALTH_CHECK_EVERY.
            Ok(Ok(None)) if !suspect && last_check.elapsed() < HEALTH_CHECK_EVERY => continue,
            Ok(Ok(None)) => {
                last_check = Instant::now();
                match get_consumer(&shared.publisher.js, &shared.topology, lane.kind).await {
                    Ok(c) => {
                        shared.health.consumer(lane.kind, true);
                        lane.replace_consumer(c);
                        (failed_recoveries, suspect) = (0, false);
                        retry = Duration::from_millis(500);
                        continue;
                    }
                    Err(e) => e.to_string(),
                }
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "pull timed out".to_string(),
        };
        suspect = true;
        drop(permit);
        let consumer = lane.consumer().cached_info().name.clone();
        tracing::warn!(consumer, error, retry_in = ?retry, "pull failed");
        let connected =
            shared.publisher.client.connection_state() == async_nats::connection::State::Connected;
        let recovered = recover(&shared, &lane).await;
        shared.health.consumer(lane.kind, recovered.is_ok());
        match recovered {
            Ok(()) => failed_recoveries = 0,
            // Disconnected: the client reconnects by itself; the consumer is not at fault.
            Err(e) if !connected => {
                tracing::warn!(consumer, error = %e, "NATS not connected: waiting to reconnect");
            }
            Err(e) => {
                failed_recoveries += 1;
                tracing::error!(
                    consumer, error = %e, failed = failed_recoveries,
                    of = shared.args.recover_attempts, "cannot recover the consumer"
                );
                if failed_recoveries >= shared.args.recover_attempts.max(1) {
                    let _ = shared.fatal.send(e).await;
                    return;
                }
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(10));
    }
}

async fn pull_one(
    lane: &Lane,
    wait: Duration,
) -> Result<Option<jetstream::Message>, async_nats::Error> {
    let mut batch = lane
        .consumer()
        .batch()
        .max_messages(1)
        .expires(wait)
        .messages()
        .await?;
    match batch.next().await {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(e)) => Err(e),
    }
}

/// When the job last made progress. Progress ticks from the media work and retries of the
/// outcome's publishes beat it; [`KeepAlive`] reads it.
pub(crate) struct Heartbeat {
    start: Instant,
    /// Milliseconds after `start` of the last beat.
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn beat(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub fn since_last(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The task sending `AckKind::Progress` every third of the ack wait, so a long transcode is
/// not redelivered, but only while the heartbeat is younger than the stall timeout: a job
/// stuck without progress stops holding its message and the server redelivers it.
pub(super) struct KeepAlive {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    pub fn start(
        msg: Arc<jetstream::Message>,
        every: Duration,
        heartbeat: Arc<Heartbeat>,
        stall_after: Duration,
    ) -> KeepAlive {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut stalled = false;
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = tick.tick() => {
                            let quiet = heartbeat.since_last();
                            if quiet >= stall_after {
                                if !stalled {
                                    tracing::warn!(
                                        no_progress_for = ?quiet,
                                        "job makes no progress: in-progress acks stopped"
                                    );
                                }
                                stalled = true;
                                continue;
                            }
                            stalled = false;
                            if let Err(e) = msg.ack_with(AckKind::Progress).await {
                                tracing::warn!(error = %e, "in-progress ack not sent");
                            }
                        }
                    }
                }
            }
            .in_current_span(),
        );
        KeepAlive { stop, task }
    }

    /// Stops before the final Ack/Nak/Term, so no in-progress ack follows it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// How long without progress before in-progress acks stop: the job process's stall limit
/// (it is killed then). A limit of 0 (off) still stops the acks after an hour.
fn stall_window(stall_seconds: u64) -> Duration {
    match stall_seconds {
        0 => Duration::from_secs(3600),
        s => Duration::from_secs(s),
    }
}

/// The delivery as the worker counts it: the server's count for this message, plus what
/// a hand-back copy carries in its headers.
async fn delivery(
    shared: &Shared,
    msg: &jetstream::Message,
    max_deliver: i64,
) -> Result<Delivery, String> {
    let info = msg.info().map_err(|e| e.to_string())?;
    let mark = settle::trusted_mark(
        &shared.publisher,
        info.stream,
        msg.headers.as_ref(),
        &msg.payload,
    )
    .await;
    Ok(Delivery {
        seq: info.stream_sequence,
        origin_seq: mark.origin_seq.unwrap_or(info.stream_sequence),
        attempt: mark.attempts_before + info.delivered.max(1) as u64,
        max_deliver,
        handbacks: mark.handbacks,
    })
}

/// Runs one job and settles its message; the slot is freed when this returns.
async fn handle(
    shared: Arc<Shared>,
    lane: Arc<Lane>,
    msg: jetstream::Message,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let d = match delivery(&shared, &msg, lane.max_deliver).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, subject = %msg.subject, "message without JetStream metadata; ignored");
            return;
        }
    };
    // The video_id as the payload claims it (when valid), so that every line of the job,
    // the first ones included, carries it.
    let video_id = crate::job::peek_video_id(&msg.payload);
    let span = tracing::info_span!(
        "job", video_id = video_id.as_deref(), kind = %lane.kind, stream_seq = d.origin_seq,
        attempt = d.attempt
    );
    let _busy = lane.gauges.busy();
    let job = run_job(shared, Arc::clone(&lane), Arc::new(msg), d);
    telemetry::timed(job).instrument(span).await;
}

async fn run_job(shared: Arc<Shared>, lane: Arc<Lane>, msg: Arc<jetstream::Message>, d: Delivery) {
    if d.seq != d.origin_seq {
        tracing::info!(
            message_seq = d.seq,
            handbacks = d.handbacks,
            "job received (handed back earlier)"
        );
    }
    tracing::info!(payload_bytes = msg.payload.len(), "job received");
    if d.attempt > 1 {
        telemetry::metrics::redelivered(lane.kind);
    }
    let heartbeat = Arc::new(Heartbeat::new());
    heartbeat.beat();
    let keepalive = KeepAlive::start(
        Arc::clone(&msg),
        lane.ack_wait / 3,
        Arc::clone(&heartbeat),
        stall_window(shared.args.job_stall_seconds),
    );
    let started = Instant::now();
    let job = settle::JobMessage {
        shared: &shared,
        lane: &lane,
        msg: &msg,
        delivery: d,
        heartbeat: &heartbeat,
    };
    let (outcome, success) = if *shared.stopping.borrow() {
        (Outcome::NotStarted, None)
    } else {
        match execute::execute(&shared, lane.kind, &msg.payload, &d, &heartbeat).await {
            Ok(success) => {
                telemetry::enter(Stage::Record);
                (job.record(&success).await, Some(success))
            }
            Err(e) => (Outcome::Failed(e), None),
        }
    };
    let stopping = *shared.stopping.borrow();
    let disposition = outcome::disposition(&outcome, &d, stopping, &shared.backoff);
    // The callback is not part of the durable outcome: it follows the Ack, so a slow or
    // dead endpoint can never hold the message until it is redelivered or dead-lettered.
    let recorded = matches!(outcome, Outcome::Recorded);
    let error = outcome.error_kind();
    job.settle(disposition, outcome, keepalive, started, success.as_ref())
        .await;
    telemetry::job_finished(lane.kind, disposition.label(), error, started);
    if let (true, Some(success)) = (recorded, success) {
        job.callback(success).await;
    }
}
