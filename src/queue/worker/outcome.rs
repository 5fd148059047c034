//! What happens to a job message, decided as a value: [`disposition`] is a pure function of
//! the job's [`Outcome`], its [`Delivery`] and whether the worker is stopping, tested as a
//! table below; `settle` is the one place that performs it.

use std::time::Duration;

use crate::error::{ErrorKind, JobError};
use crate::queue::events::PublishError;

/// A graceful hand-back republishes the job as a fresh message (it must not use up a
/// delivery). This bounds how often one job may be handed back, so that a job which makes
/// every worker stop (or a restart loop) cannot circulate for ever.
pub(crate) const MAX_HANDBACKS: u32 = 100;

/// One delivery of a job message, as the worker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Stream sequence of this message.
    pub seq: u64,
    /// Stream sequence the job was first stored at: its identity in events and msg-ids
    /// (a hand-back stores the job again under a new sequence).
    pub origin_seq: u64,
    /// Tries of this job, this one included: the deliveries of this message plus those of
    /// the copies it was handed back from (not counting the handed-back ones themselves).
    pub attempt: u64,
    /// The consumer's max_deliver (≤ 0: unlimited).
    pub max_deliver: i64,
    /// How often this job has been handed back already.
    pub handbacks: u32,
}

impl Delivery {
    /// No delivery follows this one: a failure must be recorded now.
    pub fn is_last(&self) -> bool {
        self.max_deliver > 0 && self.attempt >= self.max_deliver as u64
    }
}

/// How a job ended, from the queue's point of view.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The job succeeded and its `video.processed` is stored.
    Recorded,
    /// The job succeeded but its `video.processed` could not be stored.
    NotRecorded(PublishError),
    /// The job failed.
    Failed(JobError),
    /// Pulled while the worker was stopping: never started.
    NotStarted,
}

/// What is done with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Done (the callback, if any, follows the Ack).
    Ack,
    /// Redelivered after the delay (uses up a delivery).
    Nak(Option<Duration>),
    /// Stored again as a fresh message (PubAck awaited), then the original is terminated:
    /// the job keeps all its deliveries.
    HandBack,
    /// `video.failed` and the DLQ copy stored, then Term.
    DeadLetterThenTerm,
}

impl Outcome {
    /// The error kind of a failure, as metrics and logs name it (None: no failure).
    pub fn error_kind(&self) -> Option<&'static str> {
        match self {
            Outcome::Failed(e) => Some(e.kind.as_str()),
            Outcome::NotRecorded(_) => Some("not_recorded"),
            Outcome::Recorded | Outcome::NotStarted => None,
        }
    }
}

impl Disposition {
    /// The `outcome` label of `video_worker_jobs_total` (`telemetry::metrics::OUTCOMES`).
    pub fn label(&self) -> &'static str {
        match self {
            Disposition::Ack => "succeeded",
            Disposition::Nak(_) => "retried",
            Disposition::HandBack => "handed_back",
            Disposition::DeadLetterThenTerm => "dead_lettered",
        }
    }
}

/// Nak delays of transient failures: `first · 2^(attempt-1)`, capped at `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, attempt: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(20) as i32;
        let s = self.first.as_secs_f64() * 2f64.powi(exp);
        Duration::from_secs_f64(s.min(self.max.as_secs_f64()))
    }
}

/// The decision. A success whose event is not stored never becomes a failure while the
/// output can still be recorded by a later try: on the last delivery it is handed back
/// (the next try finds the output and only publishes the event).
pub(crate) fn disposition(
    outcome: &Outcome,
    d: &Delivery,
    stopping: bool,
    backoff: &Backoff,
) -> Disposition {
    let hand_back = if d.handbacks < MAX_HANDBACKS {
        Disposition::HandBack
    } else {
        Disposition::Nak(None)
    };
    match outcome {
        Outcome::Recorded => Disposition::Ack,
        Outcome::NotStarted => hand_back,
        Outcome::Failed(e) if e.kind == ErrorKind::Cancelled && stopping => hand_back,
        Outcome::Failed(e) if e.kind.is_permanent() || d.is_last() => {
            Disposition::DeadLetterThenTerm
        }
        Outcome::Failed(_) => Disposition::Nak(Some(backoff.delay(d.attempt))),
        Outcome::NotRecorded(e) if e.is_permanent() => Disposition::DeadLetterThenTerm,
        Outcome::NotRecorded(_) if d.is_last() => hand_back,
        Outcome::NotRecorded(_) => Disposition::Nak(Some(Duration::from_secs(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind::*;

    fn failed(kind: ErrorKind) -> Outcome {
        Outcome::Failed(JobError::new(kind, "x"))
    }

    /// A publish error of a given async-nats kind, made the way async-nats makes them.
    fn not_recorded(kind: async_nats::jetstream::context::PublishErrorKind) -> Outcome {
        Outcome::NotRecorded(PublishError::Nats {
            subject: "video.processed".into(),
            source: async_nats::jetstream::context::PublishError::new(kind),
        })
    }

    #[test]
    fn disposition_table() {
        use async_nats::jetstream::context::PublishErrorKind as P;
        let b = Backoff {
            first: Duration::from_secs(5),
            max: Duration::from_secs(300),
        };
        let d = |attempt, max_deliver, handbacks| Delivery {
            seq: 9,
            origin_seq: 4,
            attempt,
            max_deliver,
            handbacks,
        };
        let secs = |s| Disposition::Nak(Some(Duration::from_secs(s)));
        use Disposition::*;
        #[rustfmt::skip]
        let table: Vec<(Outcome, Delivery, bool, Disposition)> = vec![
            // outcome                     delivery       stopping  disposition
            (Outcome::Recorded,            d(1, 3, 0),    false,    Ack),
            (Outcome::Recorded,            d(3, 3, 0),    true,     Ack),
            (failed(InvalidRequest),       d(1, 3, 0),    false,    DeadLetterThenTerm),
            (failed(SourceNotFound),       d(1, 3, 0),    true,     DeadLetterThenTerm),
            (failed(Internal),             d(1, 3, 0),    false,    secs(5)),
            (failed(OutputIo),             d(2, 3, 0),    false,    secs(10)),
            (failed(Internal),             d(3, 3, 0),    false,    DeadLetterThenTerm),
            (failed(Internal),             d(7, 0, 0),    false,    secs(300)),
            (failed(Internal),             d(1, 3, 0),    true,     secs(5)),
            // Cancelled by shutdown: handed back, never a Nak that uses a delivery...
            (failed(Cancelled),            d(3, 3, 0),    true,     HandBack),
            (failed(Cancelled),            d(1, 1, 99),   true,     HandBack),
            // ...up to a bound.
            (failed(Cancelled),            d(1, 3, 100),  true,     Nak(None)),
            // Cancelled without shutdown (a stall, later): an ordinary transient failure.
            (failed(Cancelled),            d(1, 3, 0),    false,    secs(5)),
            (failed(Cancelled),            d(3, 3, 0),    false,    DeadLetterThenTerm),
            (Outcome::NotStarted,          d(3, 3, 0),    true,     HandBack),
            (Outcome::NotStarted,          d(1, 3, 100),  true,     Nak(None)),
            // The output is complete but its event is not stored.
            (not_recorded(P::MaxPayloadExceeded), d(1, 3, 0), false, DeadLetterThenTerm),
            (not_recorded(P::TimedOut),    d(1, 3, 0),    false,    secs(1)),
            (not_recorded(P::TimedOut),    d(3, 3, 0),    false,    HandBack),
            (not_recorded(P::StreamNotFound), d(3, 3, 0), true,     HandBack),
        ];
        for (i, (outcome, delivery, stopping, want)) in table.iter().enumerate() {
            assert_eq!(
                disposition(outcome, delivery, *stopping, &b),
                *want,
                "row {i}: {outcome:?} {delivery:?} stopping={stopping}"
            );
        }
    }

    #[test]
    fn last_delivery() {
        let d = |attempt, max_deliver| Delivery {
            seq: 1,
            origin_seq: 1,
            attempt,
            max_deliver,
            handbacks: 0,
        };
        assert!(!d(2, 3).is_last());
        assert!(d(3, 3).is_last());
        assert!(d(4, 3).is_last());
        assert!(!d(1000, -1).is_last());
    }
}
