//! Workers and servers that stop mid-job (issue 3, tests 4, 5 and 8): the job is still
//! completed once, with a complete output and nothing left in staging.

mod nats;

use std::time::{Duration, Instant};

use nats::*;

const T: Duration = Duration::from_secs(120);

fn long_job(s: &Scratch, id: &str) -> (serde_json::Value, std::path::PathBuf) {
    let source = s.uploads().join(format!("{id}.mp4"));
    make_video(&source, 640, 360, LONG_SECONDS);
    let output = s.hls().join(id);
    let mut job = job(id, &source, &output, &["360p", "240p"]);
    job["preset"] = LONG_PRESET.into();
    (job, output)
}

fn staging_dirs(s: &Scratch) -> Vec<String> {
    std::fs::read_dir(s.hls())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".staging-"))
        .collect()
}

/// Test 4: the worker is SIGKILLed mid-job; another worker completes it after the ack wait;
/// the output is complete and valid and the dead worker's staging directory is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_job_is_completed_by_another() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let (job, output) = long_job(&s, "kill-1");
    let mut args = base_args(&server.url(), &s.root());
    args.extend(
        ["--ack-wait", "2", "--kinds", "process"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut w1 = Worker::spawn("w1", &s.logs(), &args);
    w1.wait_log("serving", T);
    let (_c, js) = jetstream(&server.url()).await;
    publish_job(&js, "video.process", "kill-1", job.to_string().into_bytes()).await;
    w1.wait_log("job valid", T);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(staging_dirs(&s).len(), 1, "w1 is writing its staging dir");
    w1.signal(libc::SIGKILL);
    w1.wait(T);
    assert!(!output.exists(), "nothing published by the killed worker");

    let w2 = Worker::spawn("w2", &s.logs(), &args);
    let processed = eventually(T, "video.processed", || async {
        events(&js, "video.processed").await.pop()
    })
    .await;
    assert_eq!(processed["worker"], "w2");
    assert_eq!(processed["attempt"], 2);
    assert_eq!(processed["reused_output"], false);
    let info = eventually(T, "acked", || async {
        let i = consumer_info(&js, CONSUMER).await;
        (i.num_ack_pending == 0).then_some(i)
    })
    .await;
    assert_eq!(
        info.delivered.consumer_sequence, 2,
        "delivered twice: w1, then w2"
    );
    assert_eq!(info.num_pending, 0);
    assert_valid_output(&output, &["360p", "240p"]);
    assert!(staging_dirs(&s).is_empty(), "left: {:?}", staging_dirs(&s));
    assert_eq!(events(&js, "video.processed").await.len(), 1);
    assert!(events(&js, "video.failed").await.is_empty());
    drop(w2);
}

/// Test 5: the NATS server restarts while a job runs; the worker reconnects, the job
/// completes and is acked exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_during_a_job() {
    let mut server = NatsServer::start();
    let s = Scratch::new();
    let (job, output) = long_job(&s, "restart-1");
    let mut args = base_args(&server.url(), &s.root());
    args.extend(["--kinds", "process"].iter().map(|s| s.to_string()));
    let w1 = Worker::spawn("w1", &s.logs(), &args);
    w1.wait_log("serving", T);
    {
        let (_c, js) = jetstream(&server.url()).await;
        publish_job(
            &js,
            "video.process",
            "restart-1",
            job.to_string().into_bytes(),
        )
        .await;
    }
    w1.wait_log("job valid", T);
    std::thread::sleep(Duration::from_millis(1000));
    server.restart(Duration::from_millis(500));
    w1.wait_log("NATS connection lost", T);

    let (_c, js) = jetstream(&server.url()).await;
    let processed = eventually(T, "video.processed", || async {
        events(&js, "video.processed").await.pop()
    })
    .await;
    assert_eq!(processed["attempt"], 1);
    let info = eventually(T, "acked", || async {
        let i = consumer_info(&js, CONSUMER).await;
        (i.num_ack_pending == 0).then_some(i)
    })
    .await;
    assert_eq!(info.delivered.consumer_sequence, 1, "delivered once");
    assert_eq!(info.ack_floor.consumer_sequence, 1, "acked");
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(info.num_pending, 0);
    assert_eq!(events(&js, "video.processed").await.len(), 1);
    assert_eq!(w1.log().matches("job done and acked").count(), 1);
    assert_valid_output(&output, &["360p", "240p"]);
    drop(w1);
}

/// Test 8a: SIGTERM during a job with enough grace: the job finishes and is acked, the
/// worker exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_job_finish() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let (job, output) = long_job(&s, "term-1");
    let mut args = base_args(&server.url(), &s.root());
    args.extend(["--grace", "60"].iter().map(|s| s.to_string()));
    let mut w1 = Worker::spawn("w1", &s.logs(), &args);
    w1.wait_log("serving", T);
    let (_c, js) = jetstream(&server.url()).await;
    publish_job(&js, "video.process", "term-1", job.to_string().into_bytes()).await;
    w1.wait_log("job valid", T);
    w1.signal(libc::SIGTERM);
    let status = w1.wait(Duration::from_secs(60));
    assert!(status.success(), "exit status {status}\n{}", w1.log());
    assert!(w1.log().contains("job done and acked"));
    let info = consumer_info(&js, CONSUMER).await;
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.ack_floor.consumer_sequence, 1);
    assert_eq!(events(&js, "video.processed").await.len(), 1);
    assert_valid_output(&output, &["360p", "240p"]);
}

/// Test 8b: SIGTERM with a short grace: the job is cancelled, its staging directory removed,
/// the job handed back at once (stored again, original terminated), exit 0 within the grace
/// period (plus the time the cancellation takes); another worker then completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_back_a_job_that_cannot_finish_in_time() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let (job, output) = long_job(&s, "term-2");
    let mut args = base_args(&server.url(), &s.root());
    args.extend(["--grace", "1"].iter().map(|s| s.to_string()));
    let mut w1 = Worker::spawn("w1", &s.logs(), &args);
    w1.wait_log("serving", T);
    let (_c, js) = jetstream(&server.url()).await;
    publish_job(&js, "video.process", "term-2", job.to_string().into_bytes()).await;
    w1.wait_log("job valid", T);
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    w1.signal(libc::SIGTERM);
    let status = w1.wait(Duration::from_secs(30));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}\n{}", w1.log());
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM with --grace 1"
    );
    assert!(w1.log().contains("handing it back"), "{}", w1.log());
    assert!(!output.exists());
    assert!(staging_dirs(&s).is_empty(), "left: {:?}", staging_dirs(&s));
    assert!(events(&js, "video.failed").await.is_empty());

    // Handed back as a fresh message (seq 2) and the original terminated: the next worker
    // gets it at once, not after the 30 s ack wait, and it has not used up a delivery.
    let copy = messages(&js, STREAM, "video.process").await;
    assert_eq!(copy.len(), 2, "the job and its hand-back copy");
    assert_eq!(
        copy[1].headers.get("Vw-Origin-Seq").map(|v| v.to_string()),
        Some("1".to_string())
    );
    let started = Instant::now();
    let w2 = Worker::spawn("w2", &s.logs(), &base_args(&server.url(), &s.root()));
    eventually(T, "the hand-back copy delivered", || async {
        let i = consumer_info(&js, CONSUMER).await;
        (i.delivered.stream_sequence >= 2).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "redelivered {:?} after the handover: it was not handed back",
        started.elapsed()
    );
    let processed = eventually(T, "video.processed", || async {
        events(&js, "video.processed").await.pop()
    })
    .await;
    assert_eq!(processed["worker"], "w2");
    assert_eq!(
        processed["attempt"], 1,
        "a hand-back is not a failed attempt"
    );
    assert_eq!(
        processed["stream_sequence"], 1,
        "events name the job's first sequence"
    );
    assert_valid_output(&output, &["360p", "240p"]);
    drop(w2);
}
