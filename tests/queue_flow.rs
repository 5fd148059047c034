//! The worker's happy paths against a real nats-server (issue 3, tests 1, 3, 7, 9, plus
//! thumbnail and metadata jobs): each test starts its own server and worker processes and
//! checks the broker's state and the output tree.

mod nats;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use nats::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

/// A one-shot HTTP endpoint for `callback_url`: returns the URL and a receiver of the body.
fn callback_endpoint() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/api/videos/process-complete",
        listener.local_addr().unwrap().port()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(serde_json::from_slice(&body).unwrap());
        }
    });
    (url, rx)
}

/// Test 1: the guide's payload end to end through `submit --wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_payload_end_to_end() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let source = s.uploads().join("video-123.mp4");
    make_video(&source, 640, 360, 3.0);
    let output = s.hls().join("video-123");
    let (callback_url, callback_rx) = callback_endpoint();
    let mut args = base_args(&server.url(), &s.root());
    args.extend(["--callback-allow-host".into(), "127.0.0.1".into()]);
    let worker = Worker::spawn("w1", &s.logs(), &args);
    worker.wait_log("serving", T);

    let video_id = "d94b4f37-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    let job = serde_json::json!({
        "video_id": video_id,
        "source_path": source,
        "output_path": output,
        "user_id": "user-456",
        "quality": ["240p", "144p"],
        "thumbnail_time": "00:00:01",
        "callback_url": callback_url,
        "metadata": { "title": "My Video", "duration": 4, "size_bytes": 1234 },
        "segment_seconds": 2
    });
    let job_file = s.root().join("job.json");
    std::fs::write(&job_file, job.to_string()).unwrap();
    let (status, stdout, stderr) = run_cli(
        &[
            "submit".into(),
            "--nats-url".into(),
            server.url(),
            "--file".into(),
            job_file.display().to_string(),
            "--wait".into(),
            "--timeout".into(),
            "60".into(),
            "--json".into(),
        ],
        T,
    );
    assert!(
        status.success(),
        "submit failed: {stdout}\n{stderr}\n{}",
        worker.log()
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["duplicate"], false);
    let processed = &report["processed"];
    assert_eq!(processed["video_id"], video_id);
    assert_eq!(processed["job"], "process");
    assert_eq!(processed["attempt"], 1);
    assert_eq!(processed["reused_output"], false);
    assert_eq!(processed["user_id"], "user-456");
    assert_eq!(processed["metadata"]["title"], "My Video");
    assert_eq!(processed["worker"], "w1");
    assert_eq!(processed["stream_sequence"], report["sequence"]);
    assert_eq!(
        processed["master_playlist"],
        output.join("master.m3u8").display().to_string()
    );
    assert_eq!(
        processed["result"]["renditions"].as_array().unwrap().len(),
        2
    );

    let manifest = assert_valid_output(&output, &["240p", "144p"]);
    assert_eq!(manifest["video_id"], video_id);
    assert_eq!(manifest["fingerprint"], processed["fingerprint"]);

    let body = callback_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("callback POST received");
    assert_eq!(body["video_id"], video_id);
    assert_eq!(body["status"], "completed");

    let (_c, js) = jetstream(&server.url()).await;
    let info = eventually(T, "the job acked", || async {
        let i = consumer_info(&js, CONSUMER).await;
        (i.num_ack_pending == 0).then_some(i)
    })
    .await;
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(info.delivered.consumer_sequence, 1, "delivered once");
    assert_eq!(info.ack_floor.consumer_sequence, 1);
    assert_eq!(events(&js, "video.process").await.len(), 1);
    assert_eq!(events(&js, "video.processed").await.len(), 1);
    assert!(events(&js, "video.failed").await.is_empty());
    assert!(messages(&js, DLQ, "video.dlq").await.is_empty());

    // `streams` shows the same state.
    let (status, stdout, stderr) = run_cli(
        &[
            "streams".into(),
            "--nats-url".into(),
            server.url(),
            "--json".into(),
        ],
        T,
    );
    assert!(status.success(), "{stderr}");
    let st: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(st["stream"]["messages"], 2);
    assert_eq!(st["dlq"]["messages"], 0);
    let c = &st["consumers"][0];
    assert_eq!(c["name"], "VIDEO_WORKER");
    assert_eq!(c["num_pending"], 0);
    assert_eq!(c["num_ack_pending"], 0);
    assert_eq!(c["num_redelivered"], 0);
    drop(worker);
}

/// Test 3: a job longer than the ack wait (2 s) completes with exactly one delivery; progress
/// events arrive at most once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_longer_than_ack_wait_is_delivered_once() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let source = s.uploads().join("long.mp4");
    make_video(&source, 640, 360, LONG_SECONDS);
    let output = s.hls().join("long");
    let mut args = base_args(&server.url(), &s.root());
    args.extend([
        "--ack-wait".into(),
        "2".into(),
        "--kinds".into(),
        "process".into(),
    ]);
    let worker = Worker::spawn("w1", &s.logs(), &args);
    worker.wait_log("serving", T);

    let (client, js) = jetstream(&server.url()).await;
    let mut progress = client.subscribe("video.progress.long-1").await.unwrap();
    let mut job = job("long-1", &source, &output, &["360p", "240p"]);
    job["preset"] = LONG_PRESET.into();
    publish_job(&js, "video.process", "long-1", job.to_string().into_bytes()).await;

    let processed = eventually(T, "video.processed", || async {
        events(&js, "video.processed").await.pop()
    })
    .await;
    let elapsed = processed["result"]["elapsed_seconds"].as_f64().unwrap();
    assert!(
        elapsed > 4.0,
        "the job took {elapsed:.1} s: not longer than twice the ack wait, the test proves nothing"
    );
    assert_eq!(processed["attempt"], 1);
    let info = eventually(T, "the job acked", || async {
        let i = consumer_info(&js, CONSUMER).await;
        (i.num_ack_pending == 0).then_some(i)
    })
    .await;
    assert_eq!(info.config.ack_wait, Duration::from_secs(2));
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(info.delivered.consumer_sequence, 1, "exactly one delivery");
    assert_eq!(info.num_pending, 0);
    assert_eq!(events(&js, "video.processed").await.len(), 1);
    assert_valid_output(&output, &["360p", "240p"]);

    // Progress: several events, never two within a second.
    let mut stamps = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), progress.next()).await
    {
        let ev: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(ev["video_id"], "long-1");
        assert!(ev["percent"].as_f64().unwrap() <= 100.0);
        stamps.push(ev);
    }
    assert!(stamps.len() >= 2, "progress events: {stamps:?}");
    assert!(
        stamps.len() as f64 <= elapsed + 2.0,
        "{} progress events in {elapsed:.1} s: more than one a second",
        stamps.len()
    );
    drop(worker);
}

/// Test 7: two workers, several jobs: each processed once, all outputs valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_jobs() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let source = s.uploads().join("in.mp4");
    make_video(&source, 640, 360, 3.0);
    let args = base_args(&server.url(), &s.root());
    let w1 = Worker::spawn("w1", &s.logs(), &args);
    w1.wait_log("serving", T);
    let w2 = Worker::spawn("w2", &s.logs(), &args);
    w2.wait_log("serving", T);

    let (_c, js) = jetstream(&server.url()).await;
    let n = 6;
    for i in 0..n {
        let id = format!("multi-{i}");
        let job = job(&id, &source, &s.hls().join(&id), &["240p", "144p"]);
        publish_job(&js, "video.process", &id, job.to_string().into_bytes()).await;
    }
    let processed = eventually(T, "all jobs processed", || async {
        let ev = events(&js, "video.processed").await;
        (ev.len() >= n).then_some(ev)
    })
    .await;
    let mut ids: Vec<&str> = processed
        .iter()
        .map(|e| e["video_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "each job processed once: {processed:?}");
    assert!(processed.iter().all(|e| e["attempt"] == 1));
    let by_w1 = processed.iter().filter(|e| e["worker"] == "w1").count();
    let by_w2 = processed.iter().filter(|e| e["worker"] == "w2").count();
    assert_eq!(by_w1 + by_w2, n);
    assert!(by_w1 > 0 && by_w2 > 0, "w1 did {by_w1}, w2 did {by_w2}");
    let info = eventually(T, "all acked", || async {
        let i = consumer_info(&js, CONSUMER).await;
        (i.num_ack_pending == 0).then_some(i)
    })
    .await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(
        info.delivered.consumer_sequence, n as u64,
        "no job delivered twice"
    );
    assert_eq!(info.num_pending, 0);
    for i in 0..n {
        assert_valid_output(&s.hls().join(format!("multi-{i}")), &["240p", "144p"]);
    }
    drop((w1, w2));
}

/// Test 9: the same video_id submitted twice within the duplicate window is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_submit_is_stored_once() {
    let server = NatsServer::start();
    let submit = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "submit",
            "--nats-url",
            &server.url(),
            "--video-id",
            "dup-1",
            "--source",
            "/uploads/videos/raw/video-123.mp4",
            "--output",
            "/uploads/videos/hls/video-123",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        let (status, stdout, stderr) = run_cli(&a, T);
        assert!(status.success(), "{stderr}");
        serde_json::from_str::<Value>(stdout.trim()).unwrap()
    };
    let first = submit(&[]);
    let second = submit(&["--quality", "720p"]);
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["sequence"], second["sequence"]);
    let (_c, js) = jetstream(&server.url()).await;
    let stored = messages(&js, STREAM, "video.process").await;
    assert_eq!(stored.len(), 1);
    let job: Value = serde_json::from_slice(&stored[0].payload).unwrap();
    assert_eq!(job["video_id"], "dup-1");
    assert!(
        job.get("quality").is_none(),
        "the first submit is the one kept"
    );
    assert_eq!(
        stored[0]
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string())
            .as_deref(),
        Some("process:dup-1"),
        "msg-id <kind>:<video_id>"
    );
}

/// `video.thumbnail` and `video.metadata` jobs: only a thumbnail; only a probe. Same ack rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnail_and_metadata_jobs() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let source = s.uploads().join("in.mp4");
    make_video(&source, 640, 360, 3.0);
    let worker = Worker::spawn("w1", &s.logs(), &base_args(&server.url(), &s.root()));
    worker.wait_log("serving", T);
    let (_c, js) = jetstream(&server.url()).await;
    let thumb_dir = s.hls().join("thumb-1");
    let thumb = serde_json::json!({"video_id": "thumb-1", "source_path": source,
        "output_path": thumb_dir, "thumbnail_time": "00:00:02"});
    publish_job(
        &js,
        "video.thumbnail",
        "thumb-1",
        thumb.to_string().into_bytes(),
    )
    .await;
    let meta = serde_json::json!({"video_id": "meta-1", "source_path": source});
    publish_job(
        &js,
        "video.metadata",
        "meta-1",
        meta.to_string().into_bytes(),
    )
    .await;

    let processed = eventually(T, "both processed", || async {
        let ev = events(&js, "video.processed").await;
        (ev.len() >= 2).then_some(ev)
    })
    .await;
    let t = processed.iter().find(|e| e["job"] == "thumbnail").unwrap();
    assert_eq!(t["video_id"], "thumb-1");
    assert!((t["result"]["time"].as_f64().unwrap() - 2.0).abs() < 0.1);
    let names: Vec<String> = std::fs::read_dir(&thumb_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["thumbnail.jpg".to_string()]);
    let probe = ffprobe(&thumb_dir.join("thumbnail.jpg"));
    assert_eq!(probe["streams"][0]["codec_name"], "mjpeg");
    assert_eq!(probe["streams"][0]["width"], 640);

    let m = processed.iter().find(|e| e["job"] == "metadata").unwrap();
    assert_eq!(m["video_id"], "meta-1");
    assert_eq!(m["result"]["video"]["width"], 640);
    assert_eq!(m["result"]["video"]["codec"], "h264");
    assert!(m["result"]["audio"].is_object());

    for name in ["VIDEO_THUMBNAILER", "VIDEO_METADATA"] {
        let info = eventually(T, "acked", || async {
            let i = consumer_info(&js, name).await;
            (i.num_ack_pending == 0 && i.delivered.consumer_sequence == 1).then_some(i)
        })
        .await;
        assert_eq!(info.num_pending, 0);
        assert_eq!(info.num_redelivered, 0);
    }
    drop(worker);
}

/// `VW_JOBS=auto` (the container's setting): the worker plans one transcode per 8 cores, at
/// least one, each with its share of the cores as encoder threads, says so at start, and
/// completes a job with that plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_auto_plans_from_the_cores_and_completes_a_job() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let source = s.uploads().join("in.mp4");
    make_video(&source, 320, 180, 2.0);
    let mut args = base_args(&server.url(), &s.root());
    let at = args.iter().position(|a| a == "--threads").unwrap();
    args.drain(at..at + 2);
    let w = Worker::spawn_env("auto", &s.logs(), &args, &[("VW_JOBS", "auto")]);
    w.wait_log("serving", T);
    let cores = std::thread::available_parallelism().unwrap().get();
    let slots = (cores / 8).max(1);
    w.wait_log(
        &format!(
            "transcodes (--jobs auto): {slots} at once, {} encoder thread(s) each, on {cores} core(s)",
            cores / slots
        ),
        T,
    );

    let (_c, js) = jetstream(&server.url()).await;
    let out = s.hls().join("auto");
    let job = job("auto-1", &source, &out, &["144p"]);
    publish_job(&js, "video.process", "auto-1", job.to_string().into_bytes()).await;
    eventually(T, "the job processed", || async {
        let ev = events(&js, "video.processed").await;
        (!ev.is_empty()).then_some(ev)
    })
    .await;
    assert_valid_output(&out, &["144p"]);
    drop(w);
}
