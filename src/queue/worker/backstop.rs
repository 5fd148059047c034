//! The max-deliveries backstop: a job whose worker died on its last delivery has nobody to
//! record its outcome. The server's advisory names its stream sequence; the job is fetched
//! back and, before anything is declared failed, its output is checked: a worker killed
//! after publishing the output (or before its event was stored) did finish the job, and
//! then `video.processed` is stored (same msg-id as the worker's own) instead of a failure.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::Instrument;

use super::outcome::Delivery;
use super::settle::{self, original_msg_id};
use super::{execute, seconds, Shared};
use crate::error::{ErrorKind, JobError};
use crate::job::JobKind;
use crate::queue::dlq::{self, DeadLetter, MaxDeliveries};
use crate::queue::events::{self, Patience};
use crate::queue::QueueError;

/// Handles the max-deliveries advisories of one consumer until the connection closes or
/// the worker stops. Every worker listens; the msg-ids make their copies one.
pub(super) async fn watch(
    mut sub: async_nats::Subscriber,
    shared: Arc<Shared>,
    kind: JobKind,
    max_deliver: i64,
) {
    let mut stop = shared.stopping.clone();
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            m = sub.next() => match m {
                Some(m) => m,
                None => return,
            },
        };
        let adv: MaxDeliveries = match serde_json::from_slice(&msg.payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable max-deliveries advisory");
                continue;
            }
        };
        tracing::warn!(
            stream = %adv.stream, consumer = %adv.consumer, seq = adv.stream_seq,
            deliveries = adv.deliveries,
            "job reached max deliveries without an outcome: recording one"
        );
        // Each job on its own task: one that cannot be recorded yet does not hold up the
        // advisories of others. Its lines go in a job span like a worker's own (video_id once
        // the job is read back).
        let span = tracing::info_span!(
            "job", video_id = tracing::field::Empty, kind = %kind, stream_seq = adv.stream_seq,
            attempt = adv.deliveries, backstop = true
        );
        tokio::spawn(
            record_patiently(Arc::clone(&shared), kind, adv, max_deliver).instrument(span),
        );
    }
}

/// Records the job's outcome, retried for `--record-patience`: nothing else ever will.
async fn record_patiently(
    shared: Arc<Shared>,
    kind: JobKind,
    adv: MaxDeliveries,
    max_deliver: i64,
) {
    let mut stop = shared.stopping.clone();
    let patience = seconds(shared.args.record_patience, 1.0);
    let mut delay = Duration::from_secs(1);
    let started = std::time::Instant::now();
    loop {
        match record(&shared, kind, &adv, max_deliver).await {
            Ok(()) => return,
            Err(QueueError::Publish(e)) if e.is_permanent() => {
                tracing::error!(seq = adv.stream_seq, error = %e, "backstop cannot record the job's outcome, ever");
                return;
            }
            Err(e) if started.elapsed() + delay < patience => {
                tracing::error!(seq = adv.stream_seq, error = %e, retry_in = ?delay, "backstop could not record the job's outcome");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(seq = adv.stream_seq, error = %e, "backstop gave up: the job has no recorded outcome");
                return;
            }
        }
    }
}

async fn record(
    shared: &Arc<Shared>,
    kind: JobKind,
    adv: &MaxDeliveries,
    max_deliver: i64,
) -> Result<(), QueueError> {
    let stream = shared
        .publisher
        .js
        .get_stream_no_info(&adv.stream)
        .await
        .map_err(QueueError::nats("reading the job stream"))?;
    let original = stream
        .get_raw_message(adv.stream_seq)
        .await
        .map_err(QueueError::nats("fetching the job by sequence"))?;
    tracing::Span::current().record(
        "video_id",
        crate::job::peek_video_id(&original.payload).as_deref(),
    );
    let mark = settle::trusted_mark(
        &shared.publisher,
        &adv.stream,
        Some(&original.headers),
        &original.payload,
    )
    .await;
    let d = Delivery {
        seq: adv.stream_seq,
        origin_seq: mark.origin_seq.unwrap_or(adv.stream_seq),
        attempt: mark.attempts_before + adv.deliveries,
        max_deliver,
        handbacks: mark.handbacks,
    };
    if let Some(event) = execute::finished_event(shared, kind, &original.payload, &d).await {
        let subject = shared.topology.processed_subject();
        let msg_id = events::event_msg_id("processed", &shared.topology.stream, d.origin_seq);
        let is_ours = |m: &async_nats::jetstream::message::StreamMessage| {
            events::same_job_event(m, &subject, Some(&event.video_id), d.origin_seq)
        };
        shared
            .publisher
            .stored_json_event(&subject, &msg_id, &event, Patience::Short, &|| (), &is_ours)
            .await?;
        tracing::info!(
            seq = d.origin_seq, video_id = %event.video_id,
            "the job's output is complete: video.processed recorded, not a failure"
        );
        return Ok(());
    }
    let error = JobError::new(
        ErrorKind::Internal,
        format!(
            "delivered {} times without an outcome: the worker processing it stopped \
             (crash, out-of-memory kill?)",
            adv.deliveries
        ),
    );
    dlq::fail_for_good(
        &shared.publisher,
        &shared.topology,
        &DeadLetter {
            kind,
            stream: &adv.stream,
            consumer: &adv.consumer,
            subject: original.subject.as_str(),
            stream_seq: d.origin_seq,
            message_seq: d.seq,
            deliveries: d.attempt,
            max_deliver,
            payload: &original.payload,
            original_msg_id: original_msg_id(Some(&original.headers)),
            error: &error,
            worker: &shared.worker,
        },
        Patience::Short,
        &|| (),
    )
    .await?;
    crate::telemetry::metrics::dead_lettered(kind);
    Ok(())
}
