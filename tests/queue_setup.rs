//! The JetStream topology the worker creates, checked on the server (create-or-update consumers, fields 2.9 drops), and
//! drift in an operator's existing config reported field by field, never silently changed;
//! plus idempotent redelivery (the manifest fingerprint).

mod nats;

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use nats::*;

const T: Duration = Duration::from_secs(90);

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// What `run` creates is what the issue specifies, as the server reports it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_creates_the_specified_topology() {
    let server = NatsServer::start();
    let scratch = Scratch::new();
    let worker = Worker::spawn(
        "w1",
        &scratch.logs(),
        &base_args(&server.url(), &scratch.root()),
    );
    worker.wait_log("serving", T);
    let (_c, js) = jetstream(&server.url()).await;

    let mut st = js.get_stream(STREAM).await.unwrap();
    let cfg = st.info().await.unwrap().config.clone();
    let mut subjects = cfg.subjects.clone();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "video.failed",
            "video.metadata",
            "video.process",
            "video.processed",
            "video.thumbnail",
            "video.upload"
        ]
    );
    assert_eq!(cfg.storage, StorageType::File);
    assert_eq!(cfg.retention, RetentionPolicy::Limits);
    assert_eq!(cfg.max_messages, -1);
    assert_eq!(cfg.max_bytes, -1);
    assert_eq!(cfg.max_age, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(cfg.max_message_size, 10 * 1024 * 1024);
    assert_eq!(cfg.discard, DiscardPolicy::Old);
    assert!(cfg.duplicate_window >= Duration::from_secs(120));

    let mut dlq = js.get_stream(DLQ).await.unwrap();
    let dcfg = dlq.info().await.unwrap().config.clone();
    assert_eq!(dcfg.subjects, ["video.dlq"]);
    assert_eq!(dcfg.storage, StorageType::File);
    assert_eq!(dcfg.max_age, Duration::from_secs(30 * 24 * 3600));

    for (name, filter) in [
        ("VIDEO_WORKER", "video.process"),
        ("VIDEO_THUMBNAILER", "video.thumbnail"),
        ("VIDEO_METADATA", "video.metadata"),
    ] {
        let c = consumer_info(&js, name).await.config;
        assert_eq!(c.durable_name.as_deref(), Some(name));
        assert_eq!(
            c.filter_subject, filter,
            "{name}: filtered (2.9 drops filter_subjects)"
        );
        assert!(c.filter_subjects.is_empty());
        assert_eq!(c.deliver_policy, DeliverPolicy::All);
        assert_eq!(c.ack_policy, AckPolicy::Explicit);
        assert_eq!(c.ack_wait, Duration::from_secs(30));
        assert_eq!(c.max_deliver, 3);
        assert_eq!(c.replay_policy, ReplayPolicy::Instant);
        assert!(c.deliver_subject.is_none(), "pull consumer");
    }
    assert!(!worker.log().contains("drift"), "{}", worker.log());
    drop(worker);
}

/// An operator's consumer with another ack wait and max deliver is reported field by field
/// and left as it is; `--fail-on-drift` refuses to start; `--no-setup` does not look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_and_left_alone() {
    let server = NatsServer::start();
    let scratch = Scratch::new();
    let (_c, js) = jetstream(&server.url()).await;
    let topology = video_worker::queue::Topology::default();
    js.create_stream(topology.stream_config()).await.unwrap();
    js.get_stream_no_info(STREAM)
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("VIDEO_WORKER".into()),
            filter_subject: "video.process".into(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_deliver: 5,
            ..Default::default()
        })
        .await
        .unwrap();

    let mut strict = base_args(&server.url(), &scratch.root());
    strict.extend(s(&["--fail-on-drift", "--kinds", "process"]));
    let mut w = Worker::spawn("strict", &scratch.logs(), &strict);
    let status = w.wait(T);
    assert_eq!(status.code(), Some(1));
    let log = w.log();
    assert!(
        log.contains("ack_wait is 60s (video-worker would set 30s)"),
        "{log}"
    );
    assert!(
        log.contains("max_deliver is 5 (video-worker would set 3)"),
        "{log}"
    );

    let mut lenient = base_args(&server.url(), &scratch.root());
    lenient.extend(s(&["--kinds", "process"]));
    let w = Worker::spawn("lenient", &scratch.logs(), &lenient);
    w.wait_log("serving", T);
    assert!(
        w.log().contains("config drift, left as it is"),
        "{}",
        w.log()
    );
    // The worker reads the real values: max deliver 5 from the server, not its flag's 3.
    assert!(w.log().contains("max_deliver=5"), "{}", w.log());
    drop(w);
    let c = consumer_info(&js, "VIDEO_WORKER").await.config;
    assert_eq!(c.ack_wait, Duration::from_secs(60), "left alone");
    assert_eq!(c.max_deliver, 5, "left alone");

    let mut none = base_args(&server.url(), &scratch.root());
    none.extend(s(&["--no-setup", "--kinds", "process"]));
    let w = Worker::spawn("no-setup", &scratch.logs(), &none);
    w.wait_log("serving", T);
    assert!(!w.log().contains("drift"), "{}", w.log());
    drop(w);
}

/// A job whose complete output already exists for the same request (a redelivery after a
/// lost ack, or the same job sent again) is not transcoded again: `video.processed` is
/// republished with `reused_output` and the message acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_output_is_not_transcoded_again() {
    let server = NatsServer::start();
    let scratch = Scratch::new();
    let source = scratch.uploads().join("in.mp4");
    make_video(&source, 640, 360, 2.0);
    let output = scratch.hls().join("idem-1");
    let worker = Worker::spawn(
        "w1",
        &scratch.logs(),
        &base_args(&server.url(), &scratch.root()),
    );
    worker.wait_log("serving", T);
    let (_c, js) = jetstream(&server.url()).await;
    let job = job("idem-1", &source, &output, &["144p"])
        .to_string()
        .into_bytes();
    publish_job(&js, "video.process", "idem-1-a", job.clone()).await;
    let first = eventually(T, "first processed", || async {
        events(&js, "video.processed").await.pop()
    })
    .await;
    let segment = output.join("144p_000.ts");
    let before = std::fs::metadata(&segment).unwrap().modified().unwrap();
    publish_job(&js, "video.process", "idem-1-b", job).await;
    let both = eventually(T, "second processed", || async {
        let e = events(&js, "video.processed").await;
        (e.len() >= 2).then_some(e)
    })
    .await;
    assert_eq!(first["reused_output"], false);
    assert_eq!(both[1]["reused_output"], true);
    assert_eq!(both[1]["fingerprint"], first["fingerprint"]);
    assert_eq!(both[1]["result"], first["result"]);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().modified().unwrap(),
        before
    );
    let info = eventually(T, "acked", || async {
        let i = consumer_info(&js, "VIDEO_WORKER").await;
        (i.num_ack_pending == 0).then_some(i)
    })
    .await;
    assert_eq!(info.delivered.consumer_sequence, 2);
    assert_eq!(info.num_pending, 0);
    drop(worker);
}
