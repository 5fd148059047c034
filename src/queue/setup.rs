//! The JetStream topology: stream `VIDEO_PROCESSING`, dead-letter stream
//! `VIDEO_PROCESSING_DLQ` and the durable pull consumers, created with their full config
//! when missing. An existing one is never updated: its config is compared field by field
//! with ours and every difference is reported (`create_consumer` is create-or-update, and
//! async-nats' `get_or_create_*` compare nothing).

use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::context::{
    ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};

use serde::{Deserialize, Serialize};

use crate::job::JobKind;
use crate::queue::QueueError;

const DAY: u64 = 24 * 3600;

/// Names and values of the topology (the `[topology]` table of the configuration file);
/// defaults are the platform guide's, in `Default`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topology {
    /// Job stream.
    pub stream: String,
    /// Dead-letter stream.
    pub dlq_stream: String,
    /// Subject prefix: jobs are `<prefix>.process` …, events `<prefix>.processed` ….
    pub prefix: String,
    /// Durable consumer of `<prefix>.process`.
    pub consumer: String,
    /// Durable consumer of `<prefix>.thumbnail`.
    pub thumbnail_consumer: String,
    /// Durable consumer of `<prefix>.metadata`.
    pub metadata_consumer: String,
    /// Consumer ack wait, seconds (a running job sends in-progress acks every third of it).
    pub ack_wait: f64,
    /// Deliveries of one job before it goes to the dead-letter stream.
    pub max_deliver: i64,
    /// Consumer redelivery backoff, seconds (none by default; when set, the server uses its
    /// first value as the ack wait).
    pub backoff: Vec<f64>,
    /// Maximum age of stored jobs and events, days.
    pub max_age_days: u64,
    /// Maximum age of dead letters, days.
    pub dlq_max_age_days: u64,
    /// Largest message the stream accepts, bytes.
    pub max_msg_size: i32,
    /// Duplicate window, seconds (a re-submitted video_id within it is stored once).
    pub duplicate_window: u64,
    /// Replicas of the job and dead-letter streams (1 to 5; 3 on a three-node cluster); the
    /// consumers inherit the stream's.
    pub replicas: usize,
}

/// JetStream's limit on a stream's replicas.
pub const MAX_REPLICAS: usize = 5;

impl Default for Topology {
    fn default() -> Self {
        Topology {
            stream: "VIDEO_PROCESSING".into(),
            dlq_stream: "VIDEO_PROCESSING_DLQ".into(),
            prefix: "video".into(),
            consumer: "VIDEO_WORKER".into(),
            thumbnail_consumer: "VIDEO_THUMBNAILER".into(),
            metadata_consumer: "VIDEO_METADATA".into(),
            ack_wait: 30.0,
            max_deliver: 3,
            backoff: Vec::new(),
            max_age_days: 7,
            dlq_max_age_days: 30,
            max_msg_size: 10 * 1024 * 1024,
            duplicate_window: 120,
            // One copy on a single server; a cluster sets 3.
            replicas: 1,
        }
    }
}

impl Topology {
    /// Refuses values JetStream would refuse later, less clearly.
    pub fn validate(&self) -> Result<(), QueueError> {
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(QueueError::Config(format!(
                "replicas {} is outside 1..={MAX_REPLICAS}",
                self.replicas
            )));
        }
        Ok(())
    }

    pub fn subject(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    pub fn job_subject(&self, kind: JobKind) -> String {
        self.subject(kind.as_str())
    }

    pub fn consumer_name(&self, kind: JobKind) -> &str {
        match kind {
            JobKind::Process => &self.consumer,
            JobKind::Thumbnail => &self.thumbnail_consumer,
            JobKind::Metadata => &self.metadata_consumer,
        }
    }

    pub fn processed_subject(&self) -> String {
        self.subject("processed")
    }
    pub fn failed_subject(&self) -> String {
        self.subject("failed")
    }
    pub fn dlq_subject(&self) -> String {
        self.subject("dlq")
    }
    pub fn progress_subject(&self, video_id: &str) -> String {
        format!("{}.progress.{video_id}", self.prefix)
    }

    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: [
                "upload",
                "process",
                "processed",
                "failed",
                "thumbnail",
                "metadata",
            ]
            .iter()
            .map(|s| self.subject(s))
            .collect(),
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            max_messages: -1,
            max_bytes: -1,
            max_age: Duration::from_secs(self.max_age_days * DAY),
            max_message_size: self.max_msg_size,
            discard: DiscardPolicy::Old,
            duplicate_window: Duration::from_secs(self.duplicate_window),
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    pub fn dlq_config(&self) -> stream::Config {
        stream::Config {
            name: self.dlq_stream.clone(),
            subjects: vec![self.dlq_subject()],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            max_messages: -1,
            max_bytes: -1,
            max_age: Duration::from_secs(self.dlq_max_age_days * DAY),
            // A dead letter carries the original payload plus headers.
            max_message_size: self.max_msg_size.saturating_add(64 * 1024),
            discard: DiscardPolicy::Old,
            duplicate_window: Duration::from_secs(self.duplicate_window),
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    pub fn consumer_config(&self, kind: JobKind) -> pull::Config {
        pull::Config {
            durable_name: Some(self.consumer_name(kind).to_string()),
            description: Some(format!("video-worker {kind} jobs")),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: secs(self.ack_wait),
            max_deliver: self.max_deliver,
            // Singular: nats-server 2.9 silently drops the plural `filter_subjects`, which
            // would leave the consumer unfiltered.
            filter_subject: self.job_subject(kind),
            replay_policy: ReplayPolicy::Instant,
            backoff: self.backoff.iter().map(|&s| secs(s)).collect(),
            // `num_replicas` stays 0 (not sent): the server gives the consumer the stream's.
            ..Default::default()
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.001, 365.0 * DAY as f64))
}

/// One field of an existing stream or consumer that differs from what we would create.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// `stream VIDEO_PROCESSING` or `consumer VIDEO_PROCESSING/VIDEO_WORKER`.
    pub object: String,
    pub field: &'static str,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} is {} (video-worker would set {})",
            self.object, self.field, self.actual, self.expected
        )
    }
}

struct Compare {
    object: String,
    drift: Vec<Drift>,
}

impl Compare {
    fn field<T: std::fmt::Debug + PartialEq>(&mut self, field: &'static str, want: T, have: T) {
        if want != have {
            self.drift.push(Drift {
                object: self.object.clone(),
                field,
                expected: format!("{want:?}"),
                actual: format!("{have:?}"),
            });
        }
    }
}

/// Fields of a stream we set, compared one by one.
pub fn stream_drift(want: &stream::Config, have: &stream::Config) -> Vec<Drift> {
    let mut c = Compare {
        object: format!("stream {}", want.name),
        drift: Vec::new(),
    };
    let mut ws = want.subjects.clone();
    let mut hs = have.subjects.clone();
    ws.sort();
    hs.sort();
    c.field("subjects", ws, hs);
    c.field("storage", want.storage, have.storage);
    c.field("retention", want.retention, have.retention);
    c.field("max_msgs", want.max_messages, have.max_messages);
    c.field("max_bytes", want.max_bytes, have.max_bytes);
    c.field("max_age", want.max_age, have.max_age);
    c.field("max_msg_size", want.max_message_size, have.max_message_size);
    c.field("discard", want.discard, have.discard);
    c.field("num_replicas", want.num_replicas, have.num_replicas);
    if have.duplicate_window < want.duplicate_window {
        c.field(
            "duplicate_window (at least)",
            want.duplicate_window,
            have.duplicate_window,
        );
    }
    c.drift
}

/// Fields of a consumer we set, compared one by one.
pub fn consumer_drift(stream: &str, want: &pull::Config, have: &consumer::Config) -> Vec<Drift> {
    let mut c = Compare {
        object: format!(
            "consumer {stream}/{}",
            want.durable_name.as_deref().unwrap_or("?")
        ),
        drift: Vec::new(),
    };
    c.field("durable_name", &want.durable_name, &have.durable_name);
    c.field(
        "deliver_subject (pull consumer)",
        None,
        have.deliver_subject.as_deref(),
    );
    c.field("deliver_policy", want.deliver_policy, have.deliver_policy);
    c.field("ack_policy", want.ack_policy, have.ack_policy);
    c.field("ack_wait", want.ack_wait, have.ack_wait);
    c.field("max_deliver", want.max_deliver, have.max_deliver);
    c.field("filter_subject", &want.filter_subject, &have.filter_subject);
    c.field(
        "filter_subjects",
        &Vec::<String>::new(),
        &have.filter_subjects,
    );
    c.field("replay_policy", want.replay_policy, have.replay_policy);
    c.field("backoff", &want.backoff, &have.backoff);
    c.drift
}

/// What `ensure` found: one line per object, plus the drift.
#[derive(Debug, Default)]
pub struct SetupReport {
    pub created: Vec<String>,
    pub existing: Vec<String>,
    pub drift: Vec<Drift>,
}

fn js_code(e: &jetstream::Error, code: ErrorCode) -> bool {
    e.error_code() == code
}

pub(crate) fn stream_missing(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(js) if js_code(&js, ErrorCode::STREAM_NOT_FOUND))
}

fn stream_exists(e: &jetstream::context::CreateStreamError) -> bool {
    matches!(e.kind(), CreateStreamErrorKind::JetStream(js) if js_code(&js, ErrorCode::STREAM_NAME_EXIST))
}

/// Creates the stream if missing, else compares. Returns whether it was created.
pub async fn ensure_stream(
    js: &jetstream::Context,
    want: &stream::Config,
    report: &mut SetupReport,
) -> Result<(), QueueError> {
    let name = &want.name;
    let existing = match js.get_stream(name).await {
        Ok(mut s) => Some(s.info().await.map_err(QueueError::setup(name))?.clone()),
        Err(e) if stream_missing(&e) => None,
        Err(e) => return Err(QueueError::setup(name)(e)),
    };
    let info = match existing {
        Some(info) => {
            report.existing.push(format!("stream {name}"));
            info
        }
        None => match js.create_stream(want.clone()).await {
            Ok(mut s) => {
                report.created.push(format!("stream {name}"));
                s.info().await.map_err(QueueError::setup(name))?.clone()
            }
            // Another worker created it between our two requests.
            Err(e) if stream_exists(&e) => {
                report.existing.push(format!("stream {name}"));
                let mut s = js.get_stream(name).await.map_err(QueueError::setup(name))?;
                s.info().await.map_err(QueueError::setup(name))?.clone()
            }
            Err(e) => return Err(QueueError::setup(name)(e)),
        },
    };
    report.drift.extend(stream_drift(want, &info.config));
    Ok(())
}

/// Creates the consumer if missing (never updates one), then compares the server's config.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    want: &pull::Config,
    report: &mut SetupReport,
) -> Result<(), QueueError> {
    let name = want.durable_name.clone().unwrap_or_default();
    let what = format!("{stream_name}/{name}");
    let stream = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(QueueError::setup(&what))?;
    let info = match stream.consumer_info(&name).await {
        Ok(info) => {
            report.existing.push(format!("consumer {what}"));
            info
        }
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            // Full config on creation; whatever the server did with it is compared below
            // (nats-server 2.9 drops fields it does not know).
            let mut c = stream
                .create_consumer(want.clone())
                .await
                .map_err(QueueError::setup(&what))?;
            report.created.push(format!("consumer {what}"));
            c.info().await.map_err(QueueError::setup(&what))?.clone()
        }
        Err(e) => return Err(QueueError::setup(&what)(e)),
    };
    report
        .drift
        .extend(consumer_drift(stream_name, want, &info.config));
    Ok(())
}

/// Ensures the job stream, the DLQ stream and the consumers of `kinds`.
pub async fn ensure(
    js: &jetstream::Context,
    topology: &Topology,
    kinds: &[JobKind],
) -> Result<SetupReport, QueueError> {
    let mut report = SetupReport::default();
    ensure_stream(js, &topology.stream_config(), &mut report).await?;
    ensure_stream(js, &topology.dlq_config(), &mut report).await?;
    for &kind in kinds {
        ensure_consumer(
            js,
            &topology.stream,
            &topology.consumer_config(kind),
            &mut report,
        )
        .await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_with_other_replicas_than_the_option_is_reported_as_drift() {
        let single = Topology::default();
        let cluster = Topology {
            replicas: 3,
            ..Topology::default()
        };
        for (want, have) in [
            (single.stream_config(), cluster.stream_config()),
            (single.dlq_config(), cluster.dlq_config()),
        ] {
            assert_eq!(
                stream_drift(&want, &have),
                [Drift {
                    object: format!("stream {}", want.name),
                    field: "num_replicas",
                    expected: "1".into(),
                    actual: "3".into(),
                }]
            );
            assert_eq!(stream_drift(&have, &have), []);
        }
        assert_eq!(single.stream_config().num_replicas, 1);
    }

    #[test]
    fn replicas_are_bounded_and_left_to_the_consumers_to_inherit() {
        let with = |replicas| Topology {
            replicas,
            ..Topology::default()
        };
        assert!(Topology::default().validate().is_ok());
        assert!(with(5).validate().is_ok());
        assert!(with(0).validate().is_err());
        assert!(with(6).validate().is_err());
        let cluster = with(3);
        assert_eq!(cluster.stream_config().num_replicas, 3);
        assert_eq!(cluster.dlq_config().num_replicas, 3);
        assert_eq!(cluster.consumer_config(JobKind::Process).num_replicas, 0);
    }
}
