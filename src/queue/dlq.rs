//! Dead letters: a job that failed for good is copied to `video.dlq` (stream
//! `VIDEO_PROCESSING_DLQ`) with its original payload and headers that say why, before it
//! is terminated (Pitfall 6). A job whose worker died on its last delivery has nobody to
//! copy it: the server's max-deliveries advisory is the backstop, and the original is
//! fetched from the stream by sequence.

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::error::{ErrorKind, JobError};
use crate::job::{self, FailedEvent, JobKind};
use crate::queue::events::Publisher;
use crate::queue::setup::Topology;
use crate::queue::QueueError;

/// Headers of a dead letter (the original payload is the body).
pub const H_ERROR_KIND: &str = "Vw-Error-Kind";
pub const H_ERROR_MESSAGE: &str = "Vw-Error-Message";
pub const H_STREAM: &str = "Vw-Stream";
pub const H_STREAM_SEQ: &str = "Vw-Stream-Seq";
pub const H_SUBJECT: &str = "Vw-Subject";
pub const H_CONSUMER: &str = "Vw-Consumer";
pub const H_DELIVERIES: &str = "Vw-Delivery-Count";
pub const H_ORIGINAL_MSG_ID: &str = "Vw-Original-Msg-Id";
pub const H_WORKER: &str = "Vw-Worker";

/// Everything a dead letter and its failed event say about one job message.
pub struct DeadLetter<'a> {
    pub kind: JobKind,
    pub stream: &'a str,
    pub consumer: &'a str,
    pub subject: &'a str,
    pub stream_seq: u64,
    pub deliveries: u64,
    pub max_deliver: i64,
    pub payload: &'a [u8],
    pub original_msg_id: Option<String>,
    pub error: &'a JobError,
    pub worker: &'a str,
}

/// Header values are one line of text.
fn header_value(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.chars().take(1000).collect()
}

/// `Nats-Msg-Id`s: one failed event and one dead letter per job message, whoever sends them.
pub fn failed_msg_id(stream: &str, seq: u64) -> String {
    format!("failed-{stream}-{seq}")
}
pub fn dlq_msg_id(seq: u64) -> String {
    format!("dlq-{seq}")
}

/// Publishes `video.failed`, then the DLQ copy, both with PubAck awaited. Only when both
/// are stored may the caller Term the message.
pub async fn fail_for_good(
    publisher: &Publisher,
    topology: &Topology,
    dl: &DeadLetter<'_>,
) -> Result<(), QueueError> {
    let payload_json: Option<serde_json::Value> = serde_json::from_slice(dl.payload).ok();
    let user_id = payload_json
        .as_ref()
        .and_then(|v| v.get("user_id"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let event = FailedEvent {
        video_id: job::peek_video_id(dl.payload),
        job: dl.kind,
        kind: dl.error.kind,
        message: dl.error.message.clone(),
        permanent: true,
        retries_exhausted: !dl.error.kind.is_permanent(),
        attempt: dl.deliveries,
        max_deliver: dl.max_deliver,
        stream_sequence: dl.stream_seq,
        user_id,
        worker: dl.worker.to_string(),
        failed_at_unix: job::unix_now(),
    };
    publisher
        .stored_json(
            &topology.failed_subject(),
            &failed_msg_id(dl.stream, dl.stream_seq),
            &event,
        )
        .await?;

    let mut h = HeaderMap::new();
    h.insert(H_ERROR_KIND, dl.error.kind.as_str());
    h.insert(H_ERROR_MESSAGE, header_value(&dl.error.message).as_str());
    h.insert(H_STREAM, dl.stream);
    h.insert(H_STREAM_SEQ, dl.stream_seq.to_string().as_str());
    h.insert(H_SUBJECT, dl.subject);
    h.insert(H_CONSUMER, dl.consumer);
    h.insert(H_DELIVERIES, dl.deliveries.to_string().as_str());
    h.insert(H_WORKER, header_value(dl.worker).as_str());
    if let Some(id) = &dl.original_msg_id {
        h.insert(H_ORIGINAL_MSG_ID, header_value(id).as_str());
    }
    publisher
        .stored(
            &topology.dlq_subject(),
            &dlq_msg_id(dl.stream_seq),
            Some(h),
            Bytes::copy_from_slice(dl.payload),
        )
        .await?;
    Ok(())
}

/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>` payload (the fields used).
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

pub fn advisory_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// Subscribes to the max-deliveries advisory of one consumer. Call it before the first pull:
/// a pull is what makes the server notice a job's deliveries are exhausted and send the
/// advisory, and the SUB must reach the server first (same connection, so in order).
pub async fn subscribe_max_deliveries(
    publisher: &Publisher,
    topology: &Topology,
    kind: JobKind,
) -> Result<async_nats::Subscriber, QueueError> {
    let subject = advisory_subject(&topology.stream, topology.consumer_name(kind));
    publisher
        .client
        .subscribe(subject)
        .await
        .map_err(QueueError::nats(
            "subscribing to the max-deliveries advisory",
        ))
}

/// Handles the max-deliveries advisories of one consumer until the connection closes or
/// `stop` fires. Every worker listens; the `Nats-Msg-Id`s make their copies one.
pub async fn watch_max_deliveries(
    mut sub: async_nats::Subscriber,
    publisher: Publisher,
    topology: std::sync::Arc<Topology>,
    kind: JobKind,
    max_deliver: i64,
    worker: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), QueueError> {
    loop {
        let msg = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            m = sub.next() => match m {
                Some(m) => m,
                None => return Ok(()),
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
            "job reached max deliveries without an outcome (its worker died?): dead-lettering it"
        );
        if let Err(e) =
            dead_letter_by_sequence(&publisher, &topology, kind, &adv, max_deliver, &worker).await
        {
            tracing::error!(seq = adv.stream_seq, error = %e, "dead-lettering from the advisory failed");
        }
    }
}

async fn dead_letter_by_sequence(
    publisher: &Publisher,
    topology: &Topology,
    kind: JobKind,
    adv: &MaxDeliveries,
    max_deliver: i64,
    worker: &str,
) -> Result<(), QueueError> {
    let stream = publisher
        .js
        .get_stream_no_info(&adv.stream)
        .await
        .map_err(QueueError::nats("reading the job stream"))?;
    let original = stream
        .get_raw_message(adv.stream_seq)
        .await
        .map_err(QueueError::nats("fetching the job by sequence"))?;
    let error = JobError::new(
        ErrorKind::Internal,
        format!(
            "delivered {} times without an outcome: the worker processing it stopped \
             (crash, out-of-memory kill?)",
            adv.deliveries
        ),
    );
    let original_msg_id = original
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.to_string());
    fail_for_good(
        publisher,
        topology,
        &DeadLetter {
            kind,
            stream: &adv.stream,
            consumer: &adv.consumer,
            subject: original.subject.as_str(),
            stream_seq: adv.stream_seq,
            deliveries: adv.deliveries,
            max_deliver,
            payload: &original.payload,
            original_msg_id,
            error: &error,
            worker,
        },
    )
    .await
}
