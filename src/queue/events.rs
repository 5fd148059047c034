//! Publishing the worker's events: stored ones (`video.processed`, `video.failed`,
//! `video.dlq`) with a `Nats-Msg-Id` and their PubAck awaited, retried across a reconnect;
//! progress on core NATS, fire and forget.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, publish::PublishAck};
use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Serialize;

use crate::queue::QueueError;

/// Attempts for one stored publish: long enough to ride out a server restart (about 15 s).
const PUBLISH_ATTEMPTS: u32 = 6;

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

    /// Publishes to a stream and waits for the PubAck (Pitfall 7), retrying with backoff;
    /// `msg_id` makes a retry (or a second worker's copy) a duplicate, not a second message.
    pub async fn stored(
        &self,
        subject: &str,
        msg_id: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<PublishAck, QueueError> {
        let mut delay = Duration::from_millis(250);
        let mut last = String::new();
        for attempt in 1..=PUBLISH_ATTEMPTS {
            let mut msg = PublishMessage::build()
                .payload(payload.clone())
                .message_id(msg_id);
            if let Some(h) = &headers {
                let mut all = h.clone();
                all.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
                msg = msg.headers(all);
            }
            let result = async {
                self.js
                    .send_publish(subject.to_string(), msg)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match result {
                Ok(ack) => return Ok(ack),
                Err(e) => {
                    tracing::warn!(subject, msg_id, attempt, error = %e, "stored publish failed");
                    last = e;
                }
            }
            if attempt < PUBLISH_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        Err(QueueError::Publish {
            subject: subject.to_string(),
            message: last,
        })
    }

    pub async fn stored_json<T: Serialize>(
        &self,
        subject: &str,
        msg_id: &str,
        value: &T,
    ) -> Result<PublishAck, QueueError> {
        let payload = serde_json::to_vec(value).map_err(|e| QueueError::Publish {
            subject: subject.to_string(),
            message: format!("serialising the event: {e}"),
        })?;
        self.stored(subject, msg_id, None, payload.into()).await
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
