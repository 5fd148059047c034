//! Jobs that fail (issue 3, tests 2 and 6, and the crash backstop): one `video.failed`, one
//! dead letter with the original payload, Term instead of retries for permanent errors;
//! transient errors retried until max deliver.

mod nats;

use std::time::Duration;

use nats::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

fn header(m: &async_nats::jetstream::message::StreamMessage, name: &str) -> String {
    m.headers
        .get(name)
        .map(|v| v.to_string())
        .unwrap_or_else(|| panic!("dead letter without header {name}: {:?}", m.headers))
}

/// Test 2: malformed JSON, missing field, bad id, path outside the roots, missing source,
/// garbage media: each one failed event of the right kind, one dead letter, no retry, no
/// output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_are_dead_lettered_without_retry() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let good = s.uploads().join("good.mp4");
    make_video(&good, 640, 360, 2.0);
    let garbage = s.uploads().join("garbage.mp4");
    std::fs::write(
        &garbage,
        (0..200_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let out = |n: &str| s.hls().join(n).display().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> =
        vec![
        ("malformed", b"{\"video_id\": \"bad-1\", \"source_path\": ".to_vec(), "invalid_request"),
        (
            "missing-field",
            serde_json::json!({"video_id": "bad-2", "source_path": good}).to_string().into_bytes(),
            "invalid_request",
        ),
        (
            "bad-id",
            serde_json::json!({"video_id": "../../etc", "source_path": good,
                "output_path": out("bad-3")}).to_string().into_bytes(),
            "invalid_request",
        ),
        (
            "outside-roots",
            serde_json::json!({"video_id": "bad-4", "source_path": "/etc/hostname",
                "output_path": out("bad-4")}).to_string().into_bytes(),
            "invalid_request",
        ),
        (
            "missing-source",
            serde_json::json!({"video_id": "bad-5", "source_path": s.uploads().join("nope.mp4"),
                "output_path": out("bad-5")}).to_string().into_bytes(),
            "source_not_found",
        ),
        (
            "garbage-media",
            serde_json::json!({"video_id": "bad-6", "source_path": garbage,
                "output_path": out("bad-6")}).to_string().into_bytes(),
            "invalid_media",
        ),
    ];
    let worker = Worker::spawn("w1", &s.logs(), &base_args(&server.url(), &s.root()));
    worker.wait_log("serving", T);
    let (_c, js) = jetstream(&server.url()).await;
    let mut seqs = Vec::new();
    for (id, payload, _) in &cases {
        seqs.push(publish_job(&js, "video.process", id, payload.clone()).await);
    }
    let failed = eventually(T, "a failed event per bad job", || async {
        let ev = events(&js, "video.failed").await;
        (ev.len() >= cases.len()).then_some(ev)
    })
    .await;
    // No retry: give a redelivery time to happen, then count deliveries.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = consumer_info(&js, CONSUMER).await;
    assert_eq!(
        info.delivered.consumer_sequence,
        cases.len() as u64,
        "one delivery each"
    );
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_pending, 0);
    assert_eq!(events(&js, "video.failed").await.len(), cases.len());
    assert!(events(&js, "video.processed").await.is_empty());

    let dlq = messages(&js, DLQ, "video.dlq").await;
    assert_eq!(dlq.len(), cases.len());
    for ((name, payload, kind), seq) in cases.iter().zip(&seqs) {
        let ev: &Value = failed
            .iter()
            .find(|e| e["stream_sequence"] == *seq)
            .unwrap_or_else(|| panic!("no failed event for {name}: {failed:?}"));
        assert_eq!(ev["kind"], *kind, "{name}: {ev}");
        assert_eq!(ev["permanent"], true);
        assert_eq!(ev["retries_exhausted"], false);
        assert_eq!(ev["attempt"], 1);
        assert_eq!(ev["job"], "process");
        assert!(!ev["message"].as_str().unwrap().is_empty());
        let dl = dlq
            .iter()
            .find(|m| header(m, "Vw-Stream-Seq") == seq.to_string())
            .unwrap_or_else(|| panic!("no dead letter for {name}"));
        assert_eq!(
            dl.payload.as_ref(),
            payload.as_slice(),
            "{name}: original payload"
        );
        assert_eq!(header(dl, "Vw-Error-Kind"), *kind);
        assert_eq!(header(dl, "Vw-Delivery-Count"), "1");
        assert_eq!(header(dl, "Vw-Subject"), "video.process");
        assert_eq!(header(dl, "Vw-Stream"), STREAM);
        assert_eq!(header(dl, "Nats-Msg-Id"), format!("vw.dlq.{STREAM}.{seq}"));
        assert_eq!(header(dl, "Vw-Original-Msg-Id"), *name);
    }
    let bad3 = failed
        .iter()
        .find(|e| e["stream_sequence"] == seqs[2])
        .unwrap();
    assert!(
        bad3["video_id"].is_null(),
        "an invalid id is not echoed as an id"
    );
    let bad4 = failed
        .iter()
        .find(|e| e["stream_sequence"] == seqs[3])
        .unwrap();
    assert_eq!(bad4["video_id"], "bad-4");
    assert!(bad4["message"]
        .as_str()
        .unwrap()
        .contains("outside the allowed roots"));
    let outputs: Vec<_> = std::fs::read_dir(s.hls()).unwrap().collect();
    assert!(outputs.is_empty(), "no output at all: {outputs:?}");
    drop(worker);
}

/// Test 6: a job that fails every attempt with a transient error (its output directory
/// cannot be created) is retried, then on the last allowed delivery dead-lettered with a
/// failed event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failure_every_attempt_ends_in_the_dlq() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let source = s.uploads().join("in.mp4");
    make_video(&source, 640, 360, 2.0);
    // A regular file where the output's parent directory should be: creating it fails with
    // an output I/O error, on every attempt.
    let blocker = s.hls().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let worker = Worker::spawn("w1", &s.logs(), &base_args(&server.url(), &s.root()));
    worker.wait_log("serving", T);
    let (_c, js) = jetstream(&server.url()).await;
    let job = job("flaky-1", &source, &blocker.join("out"), &["144p"]);
    let seq = publish_job(
        &js,
        "video.process",
        "flaky-1",
        job.to_string().into_bytes(),
    )
    .await;

    let failed = eventually(T, "the failed event", || async {
        events(&js, "video.failed").await.pop()
    })
    .await;
    assert_eq!(failed["kind"], "output_io", "{failed}");
    assert_eq!(failed["attempt"], 3);
    assert_eq!(failed["max_deliver"], 3);
    assert_eq!(failed["permanent"], true);
    assert_eq!(failed["retries_exhausted"], true);
    assert_eq!(failed["video_id"], "flaky-1");
    let dlq = eventually(T, "the dead letter", || async {
        let m = messages(&js, DLQ, "video.dlq").await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(header(&dlq[0], "Vw-Delivery-Count"), "3");
    assert_eq!(header(&dlq[0], "Vw-Stream-Seq"), seq.to_string());
    assert_eq!(header(&dlq[0], "Vw-Error-Kind"), "output_io");
    let info = eventually(T, "terminated", || async {
        let i = consumer_info(&js, CONSUMER).await;
        (i.num_ack_pending == 0).then_some(i)
    })
    .await;
    assert_eq!(
        info.delivered.consumer_sequence, 3,
        "three deliveries, no fourth"
    );
    assert_eq!(info.num_pending, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        consumer_info(&js, CONSUMER)
            .await
            .delivered
            .consumer_sequence,
        3
    );
    assert_eq!(events(&js, "video.failed").await.len(), 1);
    assert_eq!(
        worker
            .log()
            .matches("transient failure: job handed back")
            .count(),
        2
    );
    drop(worker);
}

/// The crash backstop: a worker killed on a job's last allowed delivery cannot dead-letter
/// it; the max-deliveries advisory makes another worker do it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_killing_its_worker_on_the_last_delivery_reaches_the_dlq() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let source = s.uploads().join("long.mp4");
    make_video(&source, 640, 360, LONG_SECONDS);
    let mut args = base_args(&server.url(), &s.root());
    args.extend(
        [
            "--ack-wait",
            "2",
            "--max-deliver",
            "1",
            "--kinds",
            "process",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut victim = Worker::spawn("victim", &s.logs(), &args);
    victim.wait_log("serving", T);
    let (_c, js) = jetstream(&server.url()).await;
    let mut job = job(
        "crash-1",
        &source,
        &s.hls().join("crash-1"),
        &["360p", "240p"],
    );
    job["preset"] = LONG_PRESET.into();
    let seq = publish_job(
        &js,
        "video.process",
        "crash-1",
        job.to_string().into_bytes(),
    )
    .await;
    victim.wait_log("job valid", T);
    std::thread::sleep(Duration::from_millis(500));
    victim.signal(libc::SIGKILL);
    victim.wait(T);
    // The survivor listens to the advisory the server sends when it would redeliver.
    let survivor = Worker::spawn("survivor", &s.logs(), &args);
    let failed = eventually(T, "failed event from the advisory", || async {
        events(&js, "video.failed").await.pop()
    })
    .await;
    assert_eq!(failed["kind"], "internal");
    assert_eq!(failed["stream_sequence"], seq);
    assert_eq!(failed["video_id"], "crash-1");
    assert_eq!(failed["worker"], "survivor");
    let dlq = messages(&js, DLQ, "video.dlq").await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].payload.as_ref(), job.to_string().as_bytes());
    assert_eq!(header(&dlq[0], "Vw-Stream-Seq"), seq.to_string());
    assert!(events(&js, "video.processed").await.is_empty());
    drop(survivor);
}
