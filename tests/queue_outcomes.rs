//! Every outcome is recorded once, truthfully (issue 7 §4): the review's repros C4-C10 as
//! tests against a real nats-server. Each says what must hold; each failed on the code the
//! review was made against.

mod nats;

use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use nats::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn worker_args(url: &str, scratch: &Scratch, extra: &[&str]) -> Vec<String> {
    let mut args = base_args(url, &scratch.root());
    args.extend(s(extra));
    args
}

/// Nothing recorded as failed: no `video.failed`, no dead letter.
async fn assert_no_failure(js: &async_nats::jetstream::Context, log: &str) {
    assert!(events(js, "video.failed").await.is_empty(), "{log}");
    assert_eq!(stream_len(js, DLQ).await, 0, "{log}");
}

/// A worker with `extra` flags, once it serves; its arguments (for the next worker); a
/// JetStream client of the same server.
async fn serving(
    server: &NatsServer,
    sc: &Scratch,
    extra: &[&str],
) -> (
    Worker,
    Vec<String>,
    async_nats::Client,
    async_nats::jetstream::Context,
) {
    let args = worker_args(&server.url(), sc, extra);
    let w = Worker::spawn("w1", &sc.logs(), &args);
    w.wait_log("serving", T);
    let (c, js) = jetstream(&server.url()).await;
    (w, args, c, js)
}

/// C5: SIGTERM mid-job on the job's only delivery, three times in a row (rolling restarts
/// with a short grace): the job is never dead-lettered, and the fourth worker completes it.
/// Its events name the job's first sequence, and no try was counted for the hand-backs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restarts_never_dead_letter_a_healthy_job() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let source = sc.uploads().join("long.mp4");
    make_video(&source, 640, 360, LONG_SECONDS);
    let output = sc.hls().join("roll-1");
    let mut job = job("roll-1", &source, &output, &["360p", "240p"]);
    job["preset"] = LONG_PRESET.into();
    let args = worker_args(
        &server.url(),
        &sc,
        &[
            "--kinds",
            "process",
            "--max-deliver",
            "1",
            "--ack-wait",
            "6",
            "--grace",
            "0.5",
        ],
    );
    let (_c, js) = jetstream(&server.url()).await;
    let mut seq = None;
    for round in 1..=3u64 {
        let mut w = Worker::spawn(&format!("w{round}"), &sc.logs(), &args);
        if seq.is_none() {
            w.wait_log("serving", T);
            seq = Some(
                publish_job(&js, "video.process", "roll-1", job.to_string().into_bytes()).await,
            );
        }
        // Running: the worker holds a delivery of the job (the original or a hand-back copy).
        eventually(T, "the job running", || async {
            let i = consumer_info(&js, CONSUMER).await;
            (i.num_ack_pending == 1 && i.delivered.consumer_sequence == round).then_some(())
        })
        .await;
        std::thread::sleep(Duration::from_millis(1000));
        w.signal(libc::SIGTERM);
        let status = w.wait(T);
        assert!(status.success(), "round {round}: {status}\n{}", w.log());
        assert!(
            events(&js, "video.failed").await.is_empty(),
            "round {round}:\n{}",
            w.log()
        );
    }
    let w = Worker::spawn("final", &sc.logs(), &args);
    let processed = eventually(T, "video.processed", || async {
        events(&js, "video.processed").await.pop()
    })
    .await;
    assert_eq!(processed["worker"], "final");
    assert_eq!(processed["stream_sequence"], seq.unwrap());
    assert_eq!(processed["attempt"], 1, "hand-backs are not tries");
    assert_no_failure(&js, "").await;
    let copies = messages(&js, STREAM, "video.process").await;
    assert_eq!(copies.len(), 4, "the job and three hand-back copies");
    let last = &copies[3];
    assert_eq!(
        last.headers.get("Vw-Handbacks").map(|v| v.to_string()),
        Some("3".into())
    );
    assert_eq!(
        last.headers
            .get("Vw-Original-Msg-Id")
            .map(|v| v.to_string()),
        Some("roll-1".into())
    );
    eventually(T, "acked", || async {
        let i = consumer_info(&js, CONSUMER).await;
        (i.num_ack_pending == 0 && i.num_pending == 0).then_some(())
    })
    .await;
    assert_valid_output(&output, &["360p", "240p"]);
    drop(w);
}

/// C4: the worker is killed while the job's callback hangs, on the job's only delivery.
/// The Ack went out before the callback: the outcome is one `video.processed`, no
/// `video.failed`, no dead letter. The callback carried a stable `Idempotency-Key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_callback_leaves_one_processed_and_no_failure() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let source = sc.uploads().join("in.mp4");
    make_video(&source, 320, 240, 2.0);
    let (hook, heads) = hanging_http_endpoint();
    let (mut w1, args, _c, js) = serving(
        &server,
        &sc,
        &[
            "--kinds",
            "process",
            "--max-deliver",
            "1",
            "--ack-wait",
            "2",
            "--callback-timeout",
            "60",
        ],
    )
    .await;
    let mut job = job("cb-1", &source, &sc.hls().join("cb-1"), &["144p"]);
    job["callback_url"] = hook.clone().into();
    let seq = publish_job(&js, "video.process", "cb-1", job.to_string().into_bytes()).await;
    let head = heads.recv_timeout(T).expect("the callback arrives");
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "idempotency-key: {}-{seq}-processed",
            STREAM.to_ascii_lowercase()
        )),
        "{head}"
    );
    w1.signal(libc::SIGKILL);
    w1.wait(T);
    let w2 = Worker::spawn("w2", &sc.logs(), &args);
    w2.wait_log("serving", T);
    // Longer than the ack wait and a pull: a message still pending would now be at the
    // max-deliveries advisory.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let info = consumer_info(&js, CONSUMER).await;
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(
        info.ack_floor.stream_sequence, seq,
        "acked before the callback"
    );
    assert_eq!(events(&js, "video.processed").await.len(), 1);
    assert_no_failure(&js, &w2.log()).await;
    drop(w2);
}

/// C4 backstop: a job whose delivery was taken by a worker that died after the output was
/// complete reaches max deliveries. The backstop finds the complete output and records
/// `video.processed` (reused_output) instead of a failure and a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backstop_records_a_finished_output_as_processed() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let source = sc.uploads().join("in.mp4");
    make_video(&source, 320, 240, 2.0);
    let output = sc.hls().join("done-1");
    let job = job("done-1", &source, &output, &["144p"]);
    // The output is made once by a worker, which then stops.
    let (mut w1, args, _c, js) = serving(
        &server,
        &sc,
        &[
            "--kinds",
            "process",
            "--max-deliver",
            "1",
            "--ack-wait",
            "2",
        ],
    )
    .await;
    publish_job(
        &js,
        "video.process",
        "done-1-a",
        job.to_string().into_bytes(),
    )
    .await;
    eventually(T, "first run processed", || async {
        events(&js, "video.processed").await.pop()
    })
    .await;
    w1.signal(libc::SIGTERM);
    w1.wait(T);
    // The same job again; a "worker" takes its only delivery and dies without an outcome.
    let seq = publish_job(
        &js,
        "video.process",
        "done-1-b",
        job.to_string().into_bytes(),
    )
    .await;
    let stolen = steal_delivery(&js, CONSUMER).await;
    assert_eq!(stolen.info().unwrap().stream_sequence, seq);
    let w2 = Worker::spawn("w2", &sc.logs(), &args);
    let processed = eventually(T, "video.processed from the backstop", || async {
        events(&js, "video.processed")
            .await
            .into_iter()
            .find(|e| e["stream_sequence"] == seq)
    })
    .await;
    assert_eq!(processed["worker"], "w2");
    assert_eq!(processed["reused_output"], true);
    assert_eq!(processed["video_id"], "done-1");
    assert_no_failure(&js, &w2.log()).await;
    assert_valid_output(&output, &["144p"]);
    drop(w2);
}

/// C6: a job of almost 1 MiB (the server's max_payload) whose `metadata` would make every
/// event larger than the server accepts. It is refused at once as `invalid_request` (payloads
/// are bounded at parse), dead-lettered on its first delivery (the copy without the payload,
/// which no longer fits beside the dead letter's headers), and terminated: never retried as
/// transient, never the "worker died" backstop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_too_large_to_echo_is_refused_once_and_dead_lettered() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let source = sc.uploads().join("in.mp4");
    make_video(&source, 320, 240, 1.0);
    let (w, _args, _c, js) = serving(
        &server,
        &sc,
        &[
            "--kinds",
            "metadata",
            "--max-deliver",
            "2",
            "--ack-wait",
            "5",
        ],
    )
    .await;
    let job = serde_json::json!({
        "video_id": "big-1", "source_path": source,
        "metadata": { "blob": "x".repeat(1024 * 1024 - 300) }
    });
    let bytes = job.to_string().into_bytes();
    assert!(bytes.len() + 100 < 1024 * 1024);
    let seq = publish_job(&js, "video.metadata", "big-1", bytes).await;
    let failed = eventually(T, "video.failed", || async {
        events(&js, "video.failed").await.pop()
    })
    .await;
    assert_eq!(failed["kind"], "invalid_request", "{failed}");
    assert_eq!(failed["video_id"], "big-1");
    assert_eq!(failed["attempt"], 1, "not retried");
    let dl = eventually(T, "the dead letter", || async {
        messages(&js, DLQ, "video.dlq").await.pop()
    })
    .await;
    let header = |name: &str| dl.headers.get(name).map(|v| v.to_string());
    assert_eq!(header("Vw-Stream-Seq"), Some(seq.to_string()));
    assert!(header("Vw-Payload-Omitted").is_some(), "{:?}", dl.headers);
    let info = eventually(T, "terminated", || async {
        let i = consumer_info(&js, "VIDEO_METADATA").await;
        (i.num_ack_pending == 0).then_some(i)
    })
    .await;
    assert_eq!(info.delivered.consumer_sequence, 1, "one delivery");
    assert!(events(&js, "video.processed").await.is_empty());
    assert_eq!(events(&js, "video.failed").await.len(), 1, "{}", w.log());
    drop(w);
}

/// C8: producers publish jobs whose `Nats-Msg-Id`s are the ids the worker gives the next
/// job's event (the old `processed-<stream>-<seq>` and the new reserved `vw.` form). The
/// victim's `video.processed` is still stored: a duplicate PubAck on our own event is
/// checked against the stored message and the event republished under another id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_cannot_suppress_another_jobs_event() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let source = sc.uploads().join("in.mp4");
    make_video(&source, 320, 240, 1.0);
    // Topology first (a worker that exits once it serves).
    let (mut w0, args, _c, js) = serving(&server, &sc, &["--kinds", "metadata"]).await;
    w0.signal(libc::SIGTERM);
    w0.wait(T);
    let meta = |id: &str| serde_json::json!({"video_id": id, "source_path": source}).to_string();
    let victim_seq = 3;
    let decoy_ids = [
        format!("vw.processed.{STREAM}.{victim_seq}"),
        format!("processed-{STREAM}-{victim_seq}"),
    ];
    for (i, id) in decoy_ids.iter().enumerate() {
        let seq = publish_job(
            &js,
            "video.metadata",
            id,
            meta(&format!("decoy-{i}")).into_bytes(),
        )
        .await;
        assert_eq!(seq, i as u64 + 1);
    }
    let seq = publish_job(&js, "video.metadata", "victim", meta("victim").into_bytes()).await;
    assert_eq!(seq, victim_seq);
    let w = Worker::spawn("w1", &sc.logs(), &args);
    let processed = eventually(T, "three video.processed", || async {
        let ev = events(&js, "video.processed").await;
        (ev.len() >= 3).then_some(ev)
    })
    .await;
    let victim: Vec<&Value> = processed
        .iter()
        .filter(|e| e["video_id"] == "victim")
        .collect();
    assert_eq!(victim.len(), 1, "{processed:?}\n{}", w.log());
    assert_eq!(victim[0]["stream_sequence"], victim_seq);
    drop(w);
}

/// C7: `submit` dedupes per job kind: a thumbnail job for a video that has a process job is
/// stored; the same kind and id again is a duplicate; an id taken by a job of another kind
/// is refused with a non-zero exit instead of reporting the other job as ours; the worker's
/// reserved id namespace is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_dedupes_per_kind_and_refuses_an_id_taken_by_another_kind() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let source = sc.uploads().join("b.mp4").display().to_string();
    let out = |n: &str| sc.hls().join(n).display().to_string();
    let submit = |kind: &str, output: &str, extra: &[&str]| {
        let mut a = s(&[
            "submit",
            "--nats-url",
            &server.url(),
            "--kind",
            kind,
            "--video-id",
            "vid-b",
            "--source",
            &source,
            "--output",
            output,
            "--json",
        ]);
        a.extend(s(extra));
        run_cli(&a, T)
    };
    let (st, o1, e1) = submit("process", &out("vid-b"), &[]);
    assert!(st.success(), "{o1}{e1}");
    let (st, o2, e2) = submit("thumbnail", &out("vid-b-thumb"), &[]);
    assert!(st.success(), "{o2}{e2}");
    let r1: Value = serde_json::from_str(o1.trim()).unwrap();
    let r2: Value = serde_json::from_str(o2.trim()).unwrap();
    assert_eq!(r2["duplicate"], false, "a thumbnail job is another job");
    assert_ne!(r1["sequence"], r2["sequence"]);
    let (st, o3, _) = submit("process", &out("vid-b"), &[]);
    assert!(st.success());
    let r3: Value = serde_json::from_str(o3.trim()).unwrap();
    assert_eq!(r3["duplicate"], true);
    assert_eq!(r3["sequence"], r1["sequence"]);
    let (st, _, e5) = submit("metadata", &out("x"), &["--msg-id", "process:vid-b"]);
    assert_eq!(st.code(), Some(1), "{e5}");
    assert!(
        e5.contains("was NOT stored") && e5.contains("video.process"),
        "{e5}"
    );
    let (st, _, e6) = submit("process", &out("x"), &["--msg-id", "vw.processed.S.1"]);
    assert_eq!(st.code(), Some(1), "{e6}");
    let (_c, js) = jetstream(&server.url()).await;
    assert_eq!(stream_len(&js, STREAM).await, 2);
}

/// C9: the consumer is deleted while the worker runs: it is recreated and the next job is
/// processed. With `--no-setup` it cannot be, and the worker exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_recreated_or_the_worker_exits_non_zero() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let source = sc.uploads().join("in.mp4");
    make_video(&source, 320, 240, 1.0);
    let (w, _args, _c, js) = serving(&server, &sc, &["--kinds", "metadata"]).await;
    let stream = js.get_stream_no_info(STREAM).await.unwrap();
    assert!(
        stream
            .delete_consumer("VIDEO_METADATA")
            .await
            .unwrap()
            .success
    );
    let meta = serde_json::json!({"video_id": "after-1", "source_path": source});
    publish_job(
        &js,
        "video.metadata",
        "after-1",
        meta.to_string().into_bytes(),
    )
    .await;
    let processed = eventually(T, "processed after the consumer was recreated", || async {
        events(&js, "video.processed").await.pop()
    })
    .await;
    assert_eq!(processed["video_id"], "after-1");
    drop(w);

    let no_setup = worker_args(
        &server.url(),
        &sc,
        &[
            "--kinds",
            "metadata",
            "--no-setup",
            "--recover-attempts",
            "2",
        ],
    );
    let mut w2 = Worker::spawn("w2", &sc.logs(), &no_setup);
    w2.wait_log("serving", T);
    assert!(
        stream
            .delete_consumer("VIDEO_METADATA")
            .await
            .unwrap()
            .success
    );
    let status = w2.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", w2.log());
}

/// C10: the DLQ stream is missing when a job fails on its last delivery. The dead letter is
/// retried (the message held in progress) until the stream is back, then stored, and the
/// job terminated: never parked without a DLQ copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_waits_for_a_missing_dlq_stream() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let (w, _args, _c, js) = serving(
        &server,
        &sc,
        &[
            "--kinds",
            "metadata",
            "--max-deliver",
            "1",
            "--ack-wait",
            "2",
        ],
    )
    .await;
    let dlq_config = js
        .get_stream(DLQ)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    js.delete_stream(DLQ).await.unwrap();
    let missing = sc.uploads().join("missing.mp4");
    let meta = serde_json::json!({"video_id": "nosrc-1", "source_path": missing});
    let seq = publish_job(
        &js,
        "video.metadata",
        "nosrc-1",
        meta.to_string().into_bytes(),
    )
    .await;
    eventually(T, "video.failed", || async {
        events(&js, "video.failed").await.pop()
    })
    .await;
    // Longer than the ack wait (the message is kept in progress meanwhile) and than the
    // ~15 s an ordinary publish retries.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let info = consumer_info(&js, "VIDEO_METADATA").await;
    assert_eq!(
        info.num_ack_pending, 1,
        "held while the dead letter is retried"
    );
    js.create_stream(stream::Config { ..dlq_config })
        .await
        .unwrap();
    let started = Instant::now();
    let dl = eventually(T, "the dead letter", || async {
        messages(&js, DLQ, "video.dlq").await.pop()
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        dl.headers.get("Vw-Stream-Seq").map(|v| v.to_string()),
        Some(seq.to_string())
    );
    eventually(T, "terminated", || async {
        let i = consumer_info(&js, "VIDEO_METADATA").await;
        (i.num_ack_pending == 0).then_some(())
    })
    .await;
    assert_eq!(events(&js, "video.failed").await.len(), 1);
    drop(w);
}

/// Hand-back headers are written by the worker, but any producer can write headers too: a
/// job that claims to be a hand-back of another job (same `Vw-Origin-Seq`, other payload)
/// is treated as the job it is, and its events name its own sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_hand_back_headers_cannot_borrow_another_jobs_identity() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let source = sc.uploads().join("in.mp4");
    make_video(&source, 320, 240, 1.0);
    let (mut w0, args, _c, js) = serving(&server, &sc, &["--kinds", "metadata"]).await;
    w0.signal(libc::SIGTERM);
    w0.wait(T);
    let meta = |id: &str| serde_json::json!({"video_id": id, "source_path": source}).to_string();
    let victim = publish_job(&js, "video.metadata", "v", meta("victim").into_bytes()).await;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Vw-Origin-Seq", victim.to_string().as_str());
    h.insert("Vw-Handbacks", "1");
    let forged = js
        .publish_with_headers("video.metadata", h, meta("forger").into_bytes().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let w = Worker::spawn("w1", &sc.logs(), &args);
    let processed = eventually(T, "two video.processed", || async {
        let ev = events(&js, "video.processed").await;
        (ev.len() >= 2).then_some(ev)
    })
    .await;
    let seq_of = |id: &str| {
        processed
            .iter()
            .find(|e| e["video_id"] == id)
            .map(|e| e["stream_sequence"].clone())
    };
    assert_eq!(seq_of("victim"), Some(victim.into()), "{}", w.log());
    assert_eq!(seq_of("forger"), Some(forged.into()), "{}", w.log());
    drop(w);
}

/// A job whose process stops making progress (SIGSTOP: the media work frozen mid-way) no
/// longer holds its message (the stall limit leaves room for the encoders' final flush,
/// which reports no progress, on a loaded machine): the in-progress acks stop, the job process is killed as
/// `stalled`, the job is retried with a delay, and the same worker completes it on its
/// second delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_job_process_is_retried_and_the_worker_survives() {
    let server = NatsServer::start();
    let sc = Scratch::new();
    let source = sc.uploads().join("long.mp4");
    make_video(&source, 640, 360, LONG_SECONDS);
    let output = sc.hls().join("stall-1");
    let mut job = job("stall-1", &source, &output, &["360p", "240p"]);
    job["preset"] = LONG_PRESET.into();
    let (w, _args, _c, js) = serving(
        &server,
        &sc,
        &[
            "--kinds",
            "process",
            "--ack-wait",
            "2",
            "--job-stall-seconds",
            "15",
        ],
    )
    .await;
    publish_job(
        &js,
        "video.process",
        "stall-1",
        job.to_string().into_bytes(),
    )
    .await;
    let child = eventually(T, "the job process", || async {
        child_pids(w.pid()).first().copied()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SAFETY: kill(2) on the worker's child process; no memory is involved.
    assert_eq!(unsafe { libc::kill(child, libc::SIGSTOP) }, 0);
    let processed = eventually(T, "video.processed", || async {
        events(&js, "video.processed").await.pop()
    })
    .await;
    assert_eq!(processed["worker"], "w1");
    assert_eq!(processed["attempt"], 2, "{}", w.log());
    assert!(w.log().contains("stalled"), "{}", w.log());
    assert_no_failure(&js, &w.log()).await;
    assert_valid_output(&output, &["360p", "240p"]);
    drop(w);
}
