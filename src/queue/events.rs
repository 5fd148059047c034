//! Publishing the worker's events: stored ones (`video.processed`, `video.failed`,
//! `video.dlq`, hand-backs) with a `Nats-Msg-Id` and their PubAck awaited, retried across a
//! reconnect; progress on core NATS, fire and forget.
//!
//! The worker's own msg-ids live under [`RESERVED_PREFIX`] (`vw.`), a namespace neither
//! `submit` (`<kind>:<video_id>`) nor a `video_id` (`[A-Za-z0-9_-]`) can produce. A producer
//! can still set any `Nats-Msg-Id` header by hand, so a PubAck that says `duplicate` on one
//! of our events is checked against the message stored under that id: if it is not ours, the
//! event is published again under a suffixed id instead of being silently dropped.

use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishError as NatsPublishError, PublishErrorKind};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, message::PublishMessage, publish::PublishAck};
use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Serialize;

/// Attempts for one stored publish: long enough to ride out a server restart (about 15 s).
const PUBLISH_ATTEMPTS: u32 = 6;

/// Every msg-id the worker gives its own messages starts with this. `.` cannot appear in a
/// `video_id` nor in `submit`'s `<kind>:<video_id>`, so no producer using them can take one.
pub const RESERVED_PREFIX: &str = "vw.";

/// `vw.<what>.<stream>.<seq>`: one id per event and job, whoever sends it.
pub fn event_msg_id(what: &str, stream: &str, seq: u64) -> String {
    format!("{RESERVED_PREFIX}{what}.{stream}.{seq}")
}

/// How many suffixed ids are tried when a producer took ours (`<id>.2`, `<id>.3` …).
const TAKEN_ID_TRIES: u32 = 4;

/// A stored publish that did not get a PubAck. The kind from async-nats is kept: it decides
/// whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publishing to {subject}: {source}")]
    Nats {
        subject: String,
        #[source]
        source: NatsPublishError,
    },
    #[error("serialising the event for {subject}: {source}")]
    Encode {
        subject: String,
        #[source]
        source: serde_json::Error,
    },
    /// Our msg-id (and its suffixed variants) are stored with someone else's message.
    #[error(
        "publishing to {subject}: msg-id {msg_id} and {TAKEN_ID_TRIES} variants are taken by \
         other messages in the duplicate window"
    )]
    IdTaken { subject: String, msg_id: String },
}

impl PublishError {
    /// A publish that cannot succeed by trying again: too big for the server, refused by an
    /// expectation header, an event that does not serialise, an id taken by a producer.
    /// A missing stream is transient: an operator (or our own setup) can recreate it.
    pub fn is_permanent(&self) -> bool {
        match self {
            PublishError::Nats { source, .. } => matches!(
                source.kind(),
                PublishErrorKind::MaxPayloadExceeded
                    | PublishErrorKind::WrongLastMessageId
                    | PublishErrorKind::WrongLastSequence
            ),
            PublishError::Encode { .. } | PublishError::IdTaken { .. } => true,
        }
    }

    /// The message (headers + payload) is larger than the server's `max_payload`.
    pub fn is_too_large(&self) -> bool {
        matches!(self, PublishError::Nats { source, .. }
            if source.kind() == PublishErrorKind::MaxPayloadExceeded)
    }
}

/// How long a stored publish keeps trying.
#[derive(Debug, Clone, Copy)]
pub enum Patience {
    /// [`PUBLISH_ATTEMPTS`] tries, about 15 s.
    Short,
    /// Until this much time has passed (the last delivery of a job: nothing retries after us).
    For(Duration),
}

/// Whether a stored message under our msg-id is the one we meant to store.
pub type IsOurs<'a> = &'a (dyn Fn(&StreamMessage) -> bool + Send + Sync);

#[derive(Clone)]
pub struct Publisher {
    pub js: jetstream::Context,
    pub client: async_nats::Client,
}

impl Publisher {
    pub fn new(client: async_nats::Client) -> Publisher {
        Publisher {
            js: jetstream::new(client.clone()),
            client,
        }
    }

    /// Publishes to a stream and waits for the PubAck, retrying transient failures with
    /// backoff; `msg_id` makes a retry (or a second worker's copy) a duplicate, not a second
    /// message. A permanent failure returns at once.
    pub async fn stored(
        &self,
        subject: &str,
        msg_id: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<PublishAck, PublishError> {
        self.stored_with(subject, msg_id, headers, payload, Patience::Short, &|| ())
            .await
    }

    /// [`Publisher::stored`] with a chosen patience; `on_retry` runs before each new try
    /// (the caller keeps its message in progress with it).
    pub async fn stored_with(
        &self,
        subject: &str,
        msg_id: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
        patience: Patience,
        on_retry: &(dyn Fn() + Send + Sync),
    ) -> Result<PublishAck, PublishError> {
        let started = Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut msg = PublishMessage::build()
                .payload(payload.clone())
                .message_id(msg_id);
            if let Some(h) = &headers {
                let mut all = h.clone();
                all.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
                msg = msg.headers(all);
            }
            let result =
                async { self.js.send_publish(subject.to_string(), msg).await?.await }.await;
            let e = match result {
                Ok(ack) => return Ok(ack),
                Err(source) => PublishError::Nats {
                    subject: subject.to_string(),
                    source,
                },
            };
            tracing::warn!(subject, msg_id, attempt, error = %e, "stored publish failed");
            let more = !e.is_permanent()
                && match patience {
                    Patience::Short => attempt < PUBLISH_ATTEMPTS,
                    Patience::For(total) => started.elapsed() + delay < total,
                };
            if !more {
                return Err(e);
            }
            tokio::time::sleep(delay).await;
            on_retry();
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// A worker event under one of our reserved msg-ids. A PubAck saying `duplicate` is
    /// checked: when the stored message is not ours (`is_ours` says no), the event goes out
    /// again under `<msg_id>.2`, `.3` … so it is never silently lost.
    #[allow(clippy::too_many_arguments)]
    pub async fn stored_event(
        &self,
        subject: &str,
        msg_id: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
        patience: Patience,
        on_retry: &(dyn Fn() + Send + Sync),
        is_ours: IsOurs<'_>,
    ) -> Result<PublishAck, PublishError> {
        for n in 1..=TAKEN_ID_TRIES {
            let id = if n == 1 {
                msg_id.to_string()
            } else {
                format!("{msg_id}.{n}")
            };
            let ack = self
                .stored_with(
                    subject,
                    &id,
                    headers.clone(),
                    payload.clone(),
                    patience,
                    on_retry,
                )
                .await?;
            if !ack.duplicate || self.stored_is_ours(&ack, is_ours).await {
                return Ok(ack);
            }
            tracing::error!(
                subject, msg_id = %id, stream = %ack.stream, sequence = ack.sequence,
                "our event's msg-id is taken by another message: publishing under another id"
            );
        }
        Err(PublishError::IdTaken {
            subject: subject.to_string(),
            msg_id: msg_id.to_string(),
        })
    }

    /// Reads the message a duplicate PubAck points at. Unreadable (deleted since, no
    /// permission): taken as ours, since the id was stored by a publish of this id.
    async fn stored_is_ours(&self, ack: &PublishAck, is_ours: IsOurs<'_>) -> bool {
        let stream = match self.js.get_stream_no_info(&ack.stream).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a duplicate PubAck");
                return true;
            }
        };
        match stream.get_raw_message(ack.sequence).await {
            Ok(m) => is_ours(&m),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a duplicate PubAck");
                true
            }
        }
    }

    /// A JSON event; see [`Publisher::stored_event`].
    pub async fn stored_json_event<T: Serialize>(
        &self,
        subject: &str,
        msg_id: &str,
        value: &T,
        patience: Patience,
        on_retry: &(dyn Fn() + Send + Sync),
        is_ours: IsOurs<'_>,
    ) -> Result<PublishAck, PublishError> {
        let payload = serde_json::to_vec(value).map_err(|source| PublishError::Encode {
            subject: subject.to_string(),
            source,
        })?;
        self.stored_event(
            subject,
            msg_id,
            None,
            payload.into(),
            patience,
            on_retry,
            is_ours,
        )
        .await
    }

    /// Core NATS, not stored, not acknowledged: a lost progress event costs nothing.
    pub async fn progress<T: Serialize>(&self, subject: &str, value: &T) {
        if let Ok(payload) = serde_json::to_vec(value) {
            if let Err(e) = self
                .client
                .publish(subject.to_string(), payload.into())
                .await
            {
                tracing::debug!(subject, error = %e, "progress event not sent");
            }
        }
    }
}

/// A JSON event stored at `m` is ours when it has our subject and names our job (video_id
/// and the job's stream sequence).
pub fn same_job_event(
    m: &StreamMessage,
    subject: &str,
    video_id: Option<&str>,
    stream_sequence: u64,
) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
        return false;
    };
    m.subject.as_str() == subject
        && v.get("video_id").and_then(|v| v.as_str()) == video_id
        && v.get("stream_sequence").and_then(|v| v.as_u64()) == Some(stream_sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ids_cannot_be_a_video_id_or_a_submit_id() {
        let id = event_msg_id("processed", "VIDEO_PROCESSING", 6);
        assert_eq!(id, "vw.processed.VIDEO_PROCESSING.6");
        assert!(crate::job::check_video_id(&id).is_err());
        assert!(!format!("process:{}", "abc-_1").starts_with(RESERVED_PREFIX));
    }
}
