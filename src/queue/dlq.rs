//! Dead letters: a job that failed for good is copied to `video.dlq` (stream
//! `VIDEO_PROCESSING_DLQ`) with its original payload and headers that say why, before it
//! is terminated (Term counts as an ack, so the server would never dead-letter it
//! itself). A job whose worker died on its last delivery has nobody to
//! copy it: the server's max-deliveries advisory is the backstop (`worker::backstop`), and
//! the original is fetched from the stream by sequence.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;

use crate::error::JobError;
use crate::job::{self, FailedEvent, JobKind};
use crate::queue::events::{self, Patience, PublishError, Publisher};
use crate::queue::setup::Topology;
use crate::queue::QueueError;

/// Headers of a dead letter (the original payload is the body).
pub const H_ERROR_KIND: &str = "Vw-Error-Kind";
pub const H_ERROR_MESSAGE: &str = "Vw-Error-Message";
pub const H_STREAM: &str = "Vw-Stream";
/// The job's stream sequence (of its first copy, when it was handed back since).
pub const H_STREAM_SEQ: &str = "Vw-Stream-Seq";
/// The sequence of the copy that was dead-lettered, when it differs (a hand-back copy).
pub const H_MESSAGE_SEQ: &str = "Vw-Message-Seq";
pub const H_SUBJECT: &str = "Vw-Subject";
pub const H_CONSUMER: &str = "Vw-Consumer";
pub const H_DELIVERIES: &str = "Vw-Delivery-Count";
pub const H_ORIGINAL_MSG_ID: &str = "Vw-Original-Msg-Id";
pub const H_WORKER: &str = "Vw-Worker";
/// Set (to the payload's size in bytes) when the job's payload did not fit in the dead letter.
pub const H_PAYLOAD_OMITTED: &str = "Vw-Payload-Omitted";

/// Everything a dead letter and its failed event say about one job message.
pub struct DeadLetter<'a> {
    pub kind: JobKind,
    pub stream: &'a str,
    pub consumer: &'a str,
    pub subject: &'a str,
    /// The job's identity: the stream sequence of its first copy.
    pub stream_seq: u64,
    /// The sequence of the message being dead-lettered (differs after a hand-back).
    pub message_seq: u64,
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

/// `Nats-Msg-Id`s: one failed event and one dead letter per job, whoever sends them. The
/// stream name is part of both: job streams sharing one DLQ stream do not collide.
pub fn failed_msg_id(stream: &str, seq: u64) -> String {
    events::event_msg_id("failed", stream, seq)
}
pub fn dlq_msg_id(stream: &str, seq: u64) -> String {
    events::event_msg_id("dlq", stream, seq)
}

/// Publishes `video.failed`, then the DLQ copy, both with PubAck awaited (each checked to
/// be ours when the server says duplicate). Only when both are stored may the caller Term
/// the message. `on_retry` runs before each new try of a publish.
pub async fn fail_for_good(
    publisher: &Publisher,
    topology: &Topology,
    dl: &DeadLetter<'_>,
    patience: Patience,
    on_retry: &(dyn Fn() + Send + Sync),
) -> Result<(), PublishError> {
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
    let failed_subject = topology.failed_subject();
    let is_ours = |m: &async_nats::jetstream::message::StreamMessage| {
        events::same_job_event(m, &failed_subject, event.video_id.as_deref(), dl.stream_seq)
    };
    publisher
        .stored_json_event(
            &failed_subject,
            &failed_msg_id(dl.stream, dl.stream_seq),
            &event,
            patience,
            on_retry,
            &is_ours,
        )
        .await?;

    let mut h = HeaderMap::new();
    h.insert(H_ERROR_KIND, dl.error.kind.as_str());
    h.insert(H_ERROR_MESSAGE, header_value(&dl.error.message).as_str());
    h.insert(H_STREAM, dl.stream);
    h.insert(H_STREAM_SEQ, dl.stream_seq.to_string().as_str());
    if dl.message_seq != dl.stream_seq {
        h.insert(H_MESSAGE_SEQ, dl.message_seq.to_string().as_str());
    }
    h.insert(H_SUBJECT, dl.subject);
    h.insert(H_CONSUMER, dl.consumer);
    h.insert(H_DELIVERIES, dl.deliveries.to_string().as_str());
    h.insert(H_WORKER, header_value(dl.worker).as_str());
    if let Some(id) = &dl.original_msg_id {
        h.insert(H_ORIGINAL_MSG_ID, header_value(id).as_str());
    }
    let dlq_subject = topology.dlq_subject();
    let header = |m: &async_nats::jetstream::message::StreamMessage, name: &str| {
        m.headers.get(name).map(|v| v.to_string())
    };
    let is_ours = |m: &async_nats::jetstream::message::StreamMessage| {
        m.subject.as_str() == dlq_subject
            && header(m, H_STREAM).as_deref() == Some(dl.stream)
            && header(m, H_STREAM_SEQ) == Some(dl.stream_seq.to_string())
    };
    let msg_id = dlq_msg_id(dl.stream, dl.stream_seq);
    let stored = publisher
        .stored_event(
            &dlq_subject,
            &msg_id,
            Some(h.clone()),
            Bytes::copy_from_slice(dl.payload),
            patience,
            on_retry,
            &is_ours,
        )
        .await;
    match stored {
        // A payload near the server's max_payload does not fit with the dead letter's
        // headers, ever: the copy goes without it. The original stays in the job stream at
        // Vw-Stream-Seq (until the stream's max age).
        Err(e) if e.is_too_large() => {
            tracing::warn!(error = %e, "dead letter stored without the job's payload");
            h.insert(H_PAYLOAD_OMITTED, dl.payload.len().to_string().as_str());
            publisher
                .stored_event(
                    &dlq_subject,
                    &msg_id,
                    Some(h),
                    Bytes::new(),
                    patience,
                    on_retry,
                    &is_ours,
                )
                .await?;
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>` payload (the fields used).
#[derive(Debug, Deserialize)]
pub struct MaxDeliveries {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: u64,
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
