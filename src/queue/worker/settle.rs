//! The one executor of a [`Disposition`]: it records what must be recorded (the
//! `video.processed` event before, the dead letter or the hand-back copy during), stops the
//! in-progress acks, then sends the one final Ack, Nak or Term.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;

use super::execute::Success;
use super::lane::{Heartbeat, KeepAlive, Lane};
use super::outcome::{Delivery, Disposition, Outcome};
use super::{seconds, Shared};
use crate::error::{ErrorKind, JobError};
use crate::queue::dlq::{self, DeadLetter};
use crate::queue::events::{self, Patience};
use crate::queue::redact;
use crate::telemetry::{self, Stage};

/// Headers a hand-back copy carries: which job it is and how far it got.
pub(crate) const H_ORIGIN_SEQ: &str = "Vw-Origin-Seq";
pub(crate) const H_HANDBACKS: &str = "Vw-Handbacks";
pub(crate) const H_ATTEMPTS: &str = "Vw-Attempts-Before";

/// What a hand-back copy says about the job it continues (absent on a producer's message).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HandBackMark {
    /// Stream sequence of the job's first copy.
    pub origin_seq: Option<u64>,
    pub handbacks: u32,
    /// Tries before this copy (a hand-back does not count as one).
    pub attempts_before: u64,
    /// The producer's `Nats-Msg-Id` of the first copy.
    pub original_msg_id: Option<String>,
}

impl HandBackMark {
    pub fn read(h: &HeaderMap) -> Option<HandBackMark> {
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.as_str().trim().parse::<u64>().ok())
        };
        let origin_seq = num(H_ORIGIN_SEQ)?;
        Some(HandBackMark {
            origin_seq: Some(origin_seq),
            handbacks: num(H_HANDBACKS).unwrap_or(0).min(u32::MAX as u64) as u32,
            attempts_before: num(H_ATTEMPTS).unwrap_or(0),
            original_msg_id: h.get(dlq::H_ORIGINAL_MSG_ID).map(|v| v.to_string()),
        })
    }

    fn write(&self, h: &mut HeaderMap) {
        if let Some(seq) = self.origin_seq {
            h.insert(H_ORIGIN_SEQ, seq.to_string().as_str());
        }
        h.insert(H_HANDBACKS, self.handbacks.to_string().as_str());
        h.insert(H_ATTEMPTS, self.attempts_before.to_string().as_str());
        if let Some(id) = &self.original_msg_id {
            h.insert(dlq::H_ORIGINAL_MSG_ID, id.as_str());
        }
    }
}

/// The hand-back mark of a message, if it is one we can trust: headers can be written by
/// any producer, so the job's first copy is read back and must carry the same payload
/// (otherwise a producer could make its job's events claim another job's sequence).
pub(super) async fn trusted_mark(
    publisher: &crate::queue::events::Publisher,
    stream: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> HandBackMark {
    let Some(mark) = headers.and_then(HandBackMark::read) else {
        return HandBackMark::default();
    };
    let origin = match publisher.js.get_stream_no_info(stream).await {
        Ok(s) => s.get_raw_message(mark.origin_seq.unwrap_or(0)).await.ok(),
        Err(_) => None,
    };
    match origin {
        Some(m) if m.payload.as_ref() == payload => mark,
        _ => {
            tracing::warn!(
                origin_seq = ?mark.origin_seq,
                "hand-back headers that do not match the job they name: ignored"
            );
            HandBackMark::default()
        }
    }
}

/// The producer's msg-id of the job's first copy.
pub(super) fn original_msg_id(headers: Option<&HeaderMap>) -> Option<String> {
    let h = headers?;
    match HandBackMark::read(h) {
        Some(mark) => mark.original_msg_id,
        None => h
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string()),
    }
}

/// How long the final Ack/Nak/Term keeps trying to get a real confirmation.
const FINAL_ACK_PATIENCE: Duration = Duration::from_secs(30);
/// How long one try waits for the server's answer.
const FINAL_ACK_TRY: Duration = Duration::from_secs(5);

/// Sends the final ack and waits until the consumer's leader confirms it.
///
/// async-nats' `double_ack_with` takes any reply as the confirmation, including the
/// "503 no responders" status the server sends while the consumer has no leader (seen in a
/// 3-node cluster when the stream leader was killed mid-job): the Ack was then lost and the
/// job redelivered after its ack wait. Here a status reply or a timeout is retried with a
/// short backoff until a real answer arrives or the patience runs out.
async fn confirmed_ack(
    client: &async_nats::Client,
    msg: &jetstream::Message,
    kind: AckKind,
) -> Result<(), String> {
    let Some(reply) = msg.reply.clone() else {
        return Err("no reply subject: not a JetStream message".into());
    };
    let deadline = Instant::now() + FINAL_ACK_PATIENCE;
    let mut pause = Duration::from_millis(250);
    loop {
        let inbox = client.new_inbox();
        let answer = async {
            let mut sub = client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| e.to_string())?;
            client
                .publish_with_reply(reply.clone(), inbox, kind.into())
                .await
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(FINAL_ACK_TRY, sub.next()).await {
                Err(_) => Err("no answer".to_string()),
                Ok(None) => Err("subscription closed".to_string()),
                Ok(Some(m)) => match m.status {
                    None => Ok(()),
                    Some(status) => Err(format!("answered with status {status}")),
                },
            }
        };
        let last = match answer.await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() + pause >= deadline {
            return Err(format!(
                "not confirmed within {FINAL_ACK_PATIENCE:?}: {last}"
            ));
        }
        tracing::debug!(error = %last, ack = ?kind, "final ack not confirmed yet; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// One job message being settled.
pub(super) struct JobMessage<'a> {
    pub shared: &'a Arc<Shared>,
    pub lane: &'a Lane,
    pub msg: &'a jetstream::Message,
    pub delivery: Delivery,
    pub heartbeat: &'a Arc<Heartbeat>,
}

impl JobMessage<'_> {
    /// How long a publish of the outcome keeps trying: on the last delivery nothing
    /// retries after us, so for minutes (the message held in progress meanwhile).
    fn patience(&self) -> Patience {
        if self.delivery.is_last() {
            Patience::For(seconds(self.shared.args.record_patience, 1.0))
        } else {
            Patience::Short
        }
    }

    /// Stores `video.processed`. An event too large for the server is stored again without
    /// the producer's `metadata` echo (the one part of it a producer controls).
    pub async fn record(&self, s: &Success) -> Outcome {
        let shared = self.shared;
        let subject = shared.topology.processed_subject();
        let msg_id = events::event_msg_id(
            "processed",
            &shared.topology.stream,
            s.event.stream_sequence,
        );
        let is_ours = |m: &async_nats::jetstream::message::StreamMessage| {
            events::same_job_event(
                m,
                &subject,
                Some(&s.event.video_id),
                s.event.stream_sequence,
            )
        };
        let heartbeat = Arc::clone(self.heartbeat);
        let on_retry = move || heartbeat.beat();
        let mut event = s.event.clone();
        loop {
            let stored = shared
                .publisher
                .stored_json_event(
                    &subject,
                    &msg_id,
                    &event,
                    self.patience(),
                    &on_retry,
                    &is_ours,
                )
                .await;
            match stored {
                Ok(_) => return Outcome::Recorded,
                Err(e) if e.is_too_large() && event.metadata.is_some() => {
                    tracing::warn!(
                        error = %e,
                        "video.processed too large for the server: stored without the metadata echo"
                    );
                    event.metadata = None;
                }
                Err(e) => {
                    tracing::error!(error = %e, permanent = e.is_permanent(), "video.processed not stored");
                    return Outcome::NotRecorded(e);
                }
            }
        }
    }

    /// Performs the disposition; the in-progress acks stop before the final ack.
    pub async fn settle(
        &self,
        disposition: Disposition,
        outcome: Outcome,
        keepalive: KeepAlive,
        started: Instant,
        success: Option<&Success>,
    ) {
        telemetry::enter(Stage::Record);
        let final_ack = match disposition {
            Disposition::Ack => AckKind::Ack,
            Disposition::Nak(delay) => {
                if let Outcome::Failed(e) = &outcome {
                    tracing::warn!(error = %e, retry_in = ?delay, "transient failure: job handed back");
                }
                AckKind::Nak(delay)
            }
            Disposition::HandBack => match self.hand_back(&outcome).await {
                Ok(seq) => {
                    tracing::info!(
                        new_seq = seq,
                        "job handed back as a fresh message (no delivery used up)"
                    );
                    AckKind::Term
                }
                Err(e) => {
                    tracing::error!(error = %e, "hand-back copy not stored: handing back by Nak");
                    AckKind::Nak(None)
                }
            },
            Disposition::DeadLetterThenTerm => {
                let error = match outcome {
                    Outcome::Failed(e) => e,
                    Outcome::NotRecorded(e) => JobError::new(
                        ErrorKind::Internal,
                        format!(
                            "the output is complete but its video.processed event cannot be stored: {e}"
                        ),
                    ),
                    Outcome::Recorded | Outcome::NotStarted => {
                        JobError::internal("dead-lettered without a failure (bug)")
                    }
                };
                tracing::warn!(
                    error = %error, last_attempt = self.delivery.is_last(),
                    "job failed for good: video.failed + dead letter"
                );
                match self.dead_letter(&error).await {
                    Ok(()) => {
                        telemetry::metrics::dead_lettered(self.lane.kind);
                        AckKind::Term
                    }
                    // Retrying cannot help (and a redelivery would only repeat this).
                    Err(e) if e.is_permanent() => {
                        tracing::error!(error = %e, "dead letter cannot be stored; job terminated");
                        AckKind::Term
                    }
                    Err(e) => {
                        // Not stored: keep the job. Its next delivery tries again; after the
                        // last one the max-deliveries advisory brings it to the backstop.
                        tracing::error!(error = %e, "dead letter not stored; handing the job back");
                        AckKind::Nak(Some(self.shared.backoff.delay(self.delivery.attempt)))
                    }
                }
            }
        };
        telemetry::enter(Stage::Ack);
        keepalive.stop().await;
        match confirmed_ack(&self.shared.publisher.client, self.msg, final_ack).await {
            Ok(()) => {
                if let (AckKind::Ack, Some(s)) = (final_ack, success) {
                    tracing::info!(
                        video_id = %s.event.video_id,
                        reused = s.event.reused_output,
                        seconds = started.elapsed().as_secs_f64(),
                        "job done and acked"
                    );
                }
            }
            // Redelivered later, the job finds its output and only republishes (idempotent).
            Err(e) => tracing::warn!(
                error = %e, ack = ?final_ack,
                "final ack not confirmed; a redelivery will be recognised"
            ),
        }
    }

    /// Stores the job again as a fresh message on its subject, with headers that carry its
    /// identity and count; the PubAck is awaited. Its msg-id is derived from the job and the
    /// hand-back count, so a retried publish (or a second attempt to stop) is stored once.
    async fn hand_back(&self, outcome: &Outcome) -> Result<u64, events::PublishError> {
        match outcome {
            Outcome::Failed(_) => tracing::info!("job cancelled by shutdown: handing it back"),
            Outcome::NotStarted => tracing::info!("job pulled during shutdown: handing it back"),
            _ => tracing::warn!("job's outcome not recorded on its last delivery: handing it back"),
        }
        let d = &self.delivery;
        let mark = HandBackMark {
            origin_seq: Some(d.origin_seq),
            handbacks: d.handbacks + 1,
            attempts_before: d.attempt.saturating_sub(1),
            original_msg_id: original_msg_id(self.msg.headers.as_ref()),
        };
        let mut headers = HeaderMap::new();
        mark.write(&mut headers);
        let msg_id = format!(
            "{}.{}",
            events::event_msg_id("handback", &self.shared.topology.stream, d.origin_seq),
            mark.handbacks
        );
        let ack = self
            .shared
            .publisher
            .stored(
                self.msg.subject.as_str(),
                &msg_id,
                Some(headers),
                self.msg.payload.clone(),
            )
            .await?;
        Ok(ack.sequence)
    }

    async fn dead_letter(&self, error: &JobError) -> Result<(), events::PublishError> {
        let shared = self.shared;
        let d = &self.delivery;
        let dl = DeadLetter {
            kind: self.lane.kind,
            stream: &shared.topology.stream,
            consumer: shared.topology.consumer_name(self.lane.kind),
            subject: self.msg.subject.as_str(),
            stream_seq: d.origin_seq,
            message_seq: d.seq,
            deliveries: d.attempt,
            max_deliver: self.lane.max_deliver,
            payload: &self.msg.payload,
            original_msg_id: original_msg_id(self.msg.headers.as_ref()),
            error,
            worker: &shared.worker,
        };
        let heartbeat = Arc::clone(self.heartbeat);
        dlq::fail_for_good(
            &shared.publisher,
            &shared.topology,
            &dl,
            self.patience(),
            &move || heartbeat.beat(),
        )
        .await
    }

    /// POSTs the event to the job's `callback_url` (after the Ack). The `Idempotency-Key`
    /// is the same for every delivery and hand-back of one job, so a receiver can drop the
    /// repeat after a redelivery.
    pub async fn callback(&self, s: Success) {
        let Some(url) = s.callback_url else { return };
        let shown = redact::url(&url);
        let body = match serde_json::to_vec(&s.event) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "callback body not serialisable: not sent");
                return;
            }
        };
        let key = format!(
            "{}-{}-processed",
            self.shared.topology.stream, s.event.stream_sequence
        );
        let policy = self.shared.callback.clone();
        let sent = tokio::task::spawn_blocking(move || policy.post(&url, &body, &key)).await;
        telemetry::metrics::callback(matches!(sent, Ok(Ok(_))));
        match sent {
            Ok(Ok(status)) => tracing::info!(url = %shown, status, "callback delivered"),
            Ok(Err(e)) => {
                tracing::warn!(url = %shown, error = %e, "callback not delivered (job still succeeds)")
            }
            Err(e) => tracing::warn!(url = %shown, error = %e, "callback task failed"),
        }
    }
}
