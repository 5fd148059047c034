//! `video-worker streams`: the state of the job stream, its consumers and the dead-letter
//! stream (what `nats stream info` / `nats consumer info` show in the platform guide).

use serde::Serialize;

use crate::job::JobKind;
use crate::queue::connect::NatsConfig;
use crate::queue::events::Publisher;
use crate::queue::setup::Topology;
use crate::queue::QueueError;

#[derive(Debug, Serialize)]
pub struct StreamState {
    pub name: String,
    pub exists: bool,
    pub subjects: Vec<String>,
    pub messages: u64,
    pub bytes: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub consumers: usize,
}

#[derive(Debug, Serialize)]
pub struct ConsumerState {
    pub name: String,
    pub exists: bool,
    pub filter_subject: String,
    /// Messages not yet delivered.
    pub num_pending: u64,
    /// Delivered, not yet acked (jobs running now, or held by a dead worker until ack wait).
    pub num_ack_pending: usize,
    pub num_redelivered: usize,
    /// Pull requests waiting (idle worker slots).
    pub num_waiting: usize,
    pub delivered_stream_seq: u64,
    pub ack_floor_stream_seq: u64,
    pub ack_wait_seconds: f64,
    pub max_deliver: i64,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub stream: StreamState,
    pub consumers: Vec<ConsumerState>,
    pub dlq: StreamState,
}

async fn stream_state(p: &Publisher, name: &str) -> Result<StreamState, QueueError> {
    match p.js.get_stream(name).await {
        Ok(mut s) => {
            let info = s
                .info()
                .await
                .map_err(QueueError::nats("stream info"))?
                .clone();
            Ok(StreamState {
                name: name.to_string(),
                exists: true,
                subjects: info.config.subjects.clone(),
                messages: info.state.messages,
                bytes: info.state.bytes,
                first_sequence: info.state.first_sequence,
                last_sequence: info.state.last_sequence,
                consumers: info.state.consumer_count,
            })
        }
        Err(e) if crate::queue::setup::stream_missing(&e) => Ok(StreamState {
            name: name.to_string(),
            exists: false,
            subjects: vec![],
            messages: 0,
            bytes: 0,
            first_sequence: 0,
            last_sequence: 0,
            consumers: 0,
        }),
        Err(e) => Err(QueueError::Nats(format!("stream {name}: {e}"))),
    }
}

/// Reads the state of everything the worker uses.
pub async fn status(p: &Publisher, topology: &Topology) -> Result<Status, QueueError> {
    let stream = stream_state(p, &topology.stream).await?;
    let dlq = stream_state(p, &topology.dlq_stream).await?;
    let mut consumers = Vec::new();
    if stream.exists {
        let s =
            p.js.get_stream_no_info(&topology.stream)
                .await
                .map_err(QueueError::nats("stream"))?;
        for kind in JobKind::ALL {
            let name = topology.consumer_name(kind);
            match s.consumer_info(name).await {
                Ok(i) => consumers.push(ConsumerState {
                    name: name.to_string(),
                    exists: true,
                    filter_subject: i.config.filter_subject.clone(),
                    num_pending: i.num_pending,
                    num_ack_pending: i.num_ack_pending,
                    num_redelivered: i.num_redelivered,
                    num_waiting: i.num_waiting,
                    delivered_stream_seq: i.delivered.stream_sequence,
                    ack_floor_stream_seq: i.ack_floor.stream_sequence,
                    ack_wait_seconds: i.config.ack_wait.as_secs_f64(),
                    max_deliver: i.config.max_deliver,
                }),
                Err(_) => consumers.push(ConsumerState {
                    name: name.to_string(),
                    exists: false,
                    filter_subject: topology.job_subject(kind),
                    num_pending: 0,
                    num_ack_pending: 0,
                    num_redelivered: 0,
                    num_waiting: 0,
                    delivered_stream_seq: 0,
                    ack_floor_stream_seq: 0,
                    ack_wait_seconds: 0.0,
                    max_deliver: 0,
                }),
            }
        }
    }
    Ok(Status {
        stream,
        consumers,
        dlq,
    })
}

/// Connects and reads the status (the `streams` command).
pub async fn streams(nats: &NatsConfig, topology: &Topology) -> Result<Status, QueueError> {
    let (client, _events) = nats.connect().await?;
    let p = Publisher::new(client);
    status(&p, topology).await
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in [&self.stream, &self.dlq] {
            if !s.exists {
                writeln!(f, "stream {}: does not exist", s.name)?;
                continue;
            }
            writeln!(
                f,
                "stream {}: {} messages, {} bytes, sequences {}..{}, {} consumer(s); subjects {}",
                s.name,
                s.messages,
                s.bytes,
                s.first_sequence,
                s.last_sequence,
                s.consumers,
                s.subjects.join(", ")
            )?;
        }
        for c in &self.consumers {
            if !c.exists {
                writeln!(
                    f,
                    "  consumer {} ({}): does not exist",
                    c.name, c.filter_subject
                )?;
                continue;
            }
            writeln!(
                f,
                "  consumer {} ({}): {} pending, {} ack pending, {} redelivered, {} waiting pulls; \
                 ack wait {} s, max deliver {}",
                c.name,
                c.filter_subject,
                c.num_pending,
                c.num_ack_pending,
                c.num_redelivered,
                c.num_waiting,
                c.ack_wait_seconds,
                c.max_deliver
            )?;
        }
        write!(f, "dead letters: {}", self.dlq.messages)
    }
}
