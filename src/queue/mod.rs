//! Everything that touches NATS (no FFmpeg here): the JetStream half of the worker.
//!
//! - [`connect`]: connection options (auth, TLS), first connect with backoff, events;
//! - [`setup`]: the stream/consumer topology, created when missing, drift reported field by field;
//! - [`worker`]: `video-worker run`: one pull per free job slot, in-progress acks, outcome → ack;
//! - [`events`]: `video.processed` / `video.failed` (stored, PubAck awaited) and progress events;
//! - [`dlq`]: dead-letter copies and the max-deliveries advisory backstop;
//! - [`callback`]: the optional `callback_url` POST (allowlist, timeout, retries);
//! - [`submit`]: `video-worker submit` (dedupe by `<kind>:<video_id>`, `--wait`);
//! - [`redact`]: secrets out of URLs before they are logged or shown;
//! - [`status`]: `video-worker streams`.

pub(crate) mod callback;
pub mod connect;
pub(crate) mod dlq;
pub(crate) mod events;
pub(crate) mod redact;
pub mod setup;
pub mod status;
pub mod submit;
pub mod worker;

pub use connect::NatsConfig;
pub use setup::{Drift, Topology};

/// Failures of the queue side itself (not of a job): they end a command.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A flag or file is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The first connect failed (after its retries, or at once for credentials and TLS).
    #[error("cannot connect to NATS at {servers}: {message}")]
    Connect {
        servers: String,
        kind: async_nats::ConnectErrorKind,
        message: String,
    },
    /// Creating or reading a stream or consumer failed.
    #[error("JetStream setup of {object}: {message}")]
    Setup { object: String, message: String },
    /// An existing stream or consumer differs from ours and `--fail-on-drift` was given.
    #[error("existing JetStream config differs ({} field(s)): {}", .0.len(), .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))]
    Drift(Vec<Drift>),
    /// A stored publish got no PubAck (after retries, or at once when it cannot succeed).
    #[error(transparent)]
    Publish(#[from] events::PublishError),
    /// `submit`: the msg-id was already used, within the duplicate window, by a job of another
    /// kind.
    #[error(
        "msg-id {msg_id:?} is already stored at sequence {sequence} for a job on \
         {stored_subject}: this job was NOT stored; wait for the duplicate window to pass or \
         give another --msg-id"
    )]
    DuplicateId {
        msg_id: String,
        sequence: u64,
        stored_subject: String,
    },
    /// Any other NATS request.
    #[error("{0}")]
    Nats(String),
}

impl QueueError {
    pub(crate) fn setup<E: std::fmt::Display>(object: &str) -> impl Fn(E) -> QueueError + '_ {
        move |e| QueueError::Setup {
            object: object.to_string(),
            message: e.to_string(),
        }
    }

    pub(crate) fn nats<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> QueueError + '_ {
        move |e| QueueError::Nats(format!("{what}: {e}"))
    }
}

/// `<host>-<pid>`: which worker did what, in events and logs.
pub fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}
