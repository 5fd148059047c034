//! The production shape of NATS: three nats-servers routed on loopback, the job stream, the
//! dead-letter stream and the consumer replicated on all three (R3). A node dies mid-job — first
//! the one the worker is connected to, then the job stream's leader — and each job is still
//! acked exactly once, its output is complete, and its `video.processed` event is stored once,
//! with no `video.failed`.
//!
//! The worker gets every node's URL, as a deployment would, and `--replicas 3`: its own setup
//! creates the R3 streams, and the consumer inherits the stream's replicas.

mod nats;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use nats::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);
const REPLICAS: usize = 3;

/// A test client that knows every node, so it outlives the loss of any one.
async fn cluster_client(cluster: &NatsCluster) -> (async_nats::Client, jetstream::Context) {
    let servers: Vec<async_nats::ServerAddr> = cluster
        .nodes
        .iter()
        .map(|n| n.server.url().parse().expect("server URL"))
        .collect();
    let client = async_nats::connect(servers)
        .await
        .expect("test client connects");
    (client.clone(), jetstream::new(client))
}

/// Stream info that tolerates a cluster in the middle of a leader election.
async fn stream_info(js: &jetstream::Context, name: &str) -> Option<stream::Info> {
    let mut s = js.get_stream(name).await.ok()?;
    s.info().await.ok().cloned()
}

/// The stream's leader and whether every replica has caught up with it.
async fn stream_leader(js: &jetstream::Context, name: &str) -> Option<(String, bool)> {
    let cluster = stream_info(js, name).await?.cluster?;
    let leader = cluster.leader?;
    let current = cluster.replicas.len() == REPLICAS - 1
        && cluster.replicas.iter().all(|r| r.current && !r.offline);
    Some((leader, current))
}

/// Bodies of every message on `subject` in the job stream; None while the cluster cannot answer.
async fn try_events(js: &jetstream::Context, subject: &str) -> Option<Vec<Value>> {
    let info = stream_info(js, STREAM).await?;
    let s = js.get_stream_no_info(STREAM).await.ok()?;
    let mut out = Vec::new();
    if info.state.messages == 0 {
        return Some(out);
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        let m = s.get_raw_message(seq).await.ok()?;
        if m.subject.as_str() == subject {
            out.push(serde_json::from_slice(&m.payload).expect("event JSON"));
        }
    }
    Some(out)
}

async fn try_consumer_info(
    js: &jetstream::Context,
) -> Option<async_nats::jetstream::consumer::Info> {
    js.get_stream_no_info(STREAM)
        .await
        .ok()?
        .consumer_info(CONSUMER)
        .await
        .ok()
}

/// The `video.processed` events of one video.
fn processed_of<'a>(events: &'a [Value], video_id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["video_id"] == video_id)
        .collect()
}

/// A job that runs for several seconds: long enough to lose a node in the middle of it.
fn long_job(s: &Scratch, id: &str) -> (Value, std::path::PathBuf) {
    let source = s.uploads().join(format!("{id}.mp4"));
    make_video(&source, 640, 360, LONG_SECONDS);
    let output = s.hls().join(id);
    let mut job = job(id, &source, &output, &["360p", "240p"]);
    job["preset"] = LONG_PRESET.into();
    (job, output)
}

fn wait_log_count(worker: &Worker, text: &str, count: usize) {
    let deadline = std::time::Instant::now() + T;
    while worker.log().matches(text).count() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not log {text:?} {count} times:\n{}",
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Job `n` must not be finished yet, or the node loss would not be mid-job.
fn assert_still_running(worker: &Worker, n: usize) {
    assert!(
        worker.log().matches("job done and acked").count() < n,
        "job {n} finished before the node was killed: make the job longer\n{}",
        worker.log()
    );
}

/// Waits until job `n` (1-based) is acked and its `video.processed` is stored, then checks the
/// consumer, the events and the output.
async fn assert_completed_once(
    js: &jetstream::Context,
    worker: &Worker,
    cluster: &NatsCluster,
    video_id: &str,
    n: u64,
    output: &std::path::Path,
) {
    let events = eventually(T, &format!("video.processed of {video_id}"), || async {
        let events = try_events(js, "video.processed").await?;
        (!processed_of(&events, video_id).is_empty()).then_some(events)
    })
    .await;
    let info = eventually(T, &format!("{video_id} acked"), || async {
        let i = try_consumer_info(js).await?;
        (i.num_ack_pending == 0 && i.ack_floor.consumer_sequence >= n).then_some(i)
    })
    .await;
    let context = format!("{video_id}\n{}", cluster.logs());
    assert_eq!(info.num_pending, 0, "{context}");
    assert_eq!(
        info.delivered.consumer_sequence, n,
        "each job delivered once, no redelivery after the node loss: {context}"
    );
    assert_eq!(info.ack_floor.consumer_sequence, n, "{context}");
    assert_eq!(info.num_redelivered, 0, "{context}");
    assert_eq!(
        worker.log().matches("job done and acked").count() as u64,
        n,
        "one ack per job:\n{}",
        worker.log()
    );
    // The event may still be replicating when the ack lands: read again after the ack.
    let events = try_events(js, "video.processed").await.unwrap_or(events);
    let processed = processed_of(&events, video_id);
    assert_eq!(
        processed.len(),
        1,
        "one video.processed for {video_id}: {events:?}"
    );
    assert_eq!(processed[0]["attempt"], 1);
    let failed = try_events(js, "video.failed")
        .await
        .expect("read video.failed");
    assert!(failed.is_empty(), "no video.failed: {failed:?}");
    assert_valid_output(output, &["360p", "240p"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_survives_losing_the_workers_node_and_then_the_stream_leader() {
    let mut cluster = NatsCluster::start(REPLICAS);
    let s = Scratch::new();
    let (_client, js) = cluster_client(&cluster).await;
    // The worker's setup needs the cluster's JetStream meta leader, elected after start-up.
    // It answers "stream not found" (rather than "temporarily unavailable") once there is one.
    eventually(T, "the JetStream meta leader", || async {
        use async_nats::jetstream::context::GetStreamErrorKind;
        match js.get_stream(STREAM).await.err()?.kind() {
            GetStreamErrorKind::JetStream(e)
                if e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Some(())
            }
            _ => None,
        }
    })
    .await;

    let mut args = base_args(&cluster.urls(), &s.root());
    args.extend(
        [
            "--kinds",
            "process",
            "--replicas",
            "3",
            "--nats-name",
            "vw-cluster-worker",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let worker = Worker::spawn("w1", &s.logs(), &args);
    worker.wait_log("serving", T);
    for name in [STREAM, DLQ] {
        let info = stream_info(&js, name).await.expect("stream info");
        assert_eq!(info.config.num_replicas, REPLICAS, "{name}");
        assert_eq!(
            info.cluster.map(|c| c.replicas.len()),
            Some(REPLICAS - 1),
            "{name} is replicated on every node"
        );
    }
    let consumer = try_consumer_info(&js).await.expect("consumer info");
    assert_eq!(
        consumer.cluster.as_ref().map(|c| c.replicas.len()),
        Some(REPLICAS - 1),
        "the consumer inherits the stream's replicas: on every node"
    );

    // Job 1: the node the worker is connected to dies mid-job (kill -9).
    let (job1, output1) = long_job(&s, "cluster-1");
    let workers_node = eventually(T, "the worker's node in /connz", || async {
        cluster.node_serving("vw-cluster-worker")
    })
    .await;
    publish_job(
        &js,
        "video.process",
        "cluster-1",
        job1.to_string().into_bytes(),
    )
    .await;
    wait_log_count(&worker, "job valid", 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_still_running(&worker, 1);
    cluster.node(&workers_node).server.stop();
    eprintln!("job 1: killed {workers_node}, the node the worker was connected to");
    assert_completed_once(&js, &worker, &cluster, "cluster-1", 1, &output1).await;
    assert!(
        worker.log().contains("NATS connection lost") || worker.log().contains("disconnect"),
        "the worker saw its node go:\n{}",
        worker.log()
    );

    // Back to three nodes, every replica caught up, before the next loss.
    cluster.node(&workers_node).server.restart(Duration::ZERO);
    eventually(T, "all stream replicas current", || async {
        match stream_leader(&js, STREAM).await {
            Some((_, true)) => Some(()),
            _ => None,
        }
    })
    .await;

    // Job 2: the job stream's leader dies mid-job.
    let (job2, output2) = long_job(&s, "cluster-2");
    let (leader, _) = stream_leader(&js, STREAM).await.expect("stream leader");
    publish_job(
        &js,
        "video.process",
        "cluster-2",
        job2.to_string().into_bytes(),
    )
    .await;
    wait_log_count(&worker, "job valid", 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_still_running(&worker, 2);
    cluster.node(&leader).server.stop();
    eprintln!("job 2: killed {leader}, the stream leader");
    let new_leader = eventually(T, "a new stream leader", || async {
        stream_leader(&js, STREAM)
            .await
            .map(|(l, _)| l)
            .filter(|l| *l != leader)
    })
    .await;
    eprintln!("job 2: new stream leader {new_leader}");
    assert_completed_once(&js, &worker, &cluster, "cluster-2", 2, &output2).await;

    // With the leader back, the stream still holds exactly two jobs and two outcomes.
    cluster.node(&leader).server.restart(Duration::ZERO);
    let processed = eventually(T, "stream readable after the restart", || async {
        try_events(&js, "video.processed").await
    })
    .await;
    assert_eq!(processed.len(), 2, "{processed:?}");
    let dead = stream_info(&js, DLQ)
        .await
        .expect("DLQ info")
        .state
        .messages;
    assert_eq!(dead, 0, "nothing dead-lettered");
    drop(worker);
}
