//! Operating the worker (issue 10): the Prometheus scrape passes `promtool check metrics` and
//! counts what the test did; `/readyz` follows the connection and the drain; JSON logs carry
//! each job's video_id on every line of it. Real nats-server, real binary, real promtool
//! (Debian's `prometheus` package, unpacked by scripts/setup.sh into target/tools).

mod nats;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nats::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

/// `GET path` on the worker's listener: (status code, body), or None while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `path` until `check` accepts the answer; returns it.
fn wait_for(port: u16, path: &str, what: &str, check: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + T;
    loop {
        if let Some((status, body)) = get(port, path) {
            if check(status, &body) {
                return body;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/promtool");
    if local.exists() {
        return local;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool not found: run scripts/setup.sh (target/tools/promtool) or set PROMTOOL"
            )
        })
}

/// `promtool check metrics` on a scrape: it must pass with no lint problem at all.
fn assert_promtool_passes(scrape: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed ({}):\n{}{}\n--- scrape ---\n{scrape}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of a scrape: (name, labels) → value.
fn samples(scrape: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    for line in scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("label");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.insert((name.to_string(), labels), value.parse().expect("value"));
    }
    out
}

/// The value of one series (exactly these labels), or None when it is not in the scrape.
fn value(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples(scrape).get(&(name.to_string(), want)).copied()
}

fn worker_args(url: &str, root: &Path, metrics_port: u16) -> Vec<String> {
    let mut args = base_args(url, root);
    args.extend(
        [
            "--kinds",
            "process",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
            "--log-format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args
}

/// The worker's log as JSON objects, one a line; every line must be one.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
            assert!(v.is_object(), "log line is not an object: {l}");
            for key in ["timestamp", "level", "message"] {
                assert!(v.get(key).is_some(), "log line without {key}: {l}");
            }
            v
        })
        .collect()
}

/// The `job` span of a log line, if it happened in one.
fn job_span(line: &Value) -> Option<&Value> {
    line.get("spans")?
        .as_array()?
        .iter()
        .find(|s| s["name"] == "job")
}

/// N jobs give `jobs_total` N; a dead letter increments once; frames and bytes match the
/// results; the scrape after the failed job passes promtool; every log line of a job is JSON
/// and carries the job's video_id, kind, sequence and attempt, the last one its stage timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_worker_did_and_json_logs_carry_each_jobs_video_id() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let source = s.uploads().join("clip.mp4");
    make_video(&source, 320, 240, 2.0);
    let port = free_port();
    let worker = Worker::spawn(
        "ops-count",
        &s.logs(),
        &worker_args(&server.url(), &s.root(), port),
    );
    let ready = wait_for(port, "/readyz", "ready", |status, _| status == 200);
    assert_eq!(ready, "ready\n");
    let (_c, js) = jetstream(&server.url()).await;

    let ids = ["ops-1", "ops-2", "ops-3"];
    for id in ids {
        let job = job(id, &source, &s.hls().join(id), &["240p", "144p"]);
        publish_job(&js, "video.process", id, job.to_string().into_bytes()).await;
    }
    let processed = eventually(T, "3 video.processed", || async {
        let e = events(&js, "video.processed").await;
        (e.len() == 3).then_some(e)
    })
    .await;
    let missing = job(
        "ops-missing",
        &s.uploads().join("nope.mp4"),
        &s.hls().join("x"),
        &["144p"],
    );
    publish_job(
        &js,
        "video.process",
        "ops-missing",
        missing.to_string().into_bytes(),
    )
    .await;
    eventually(T, "a dead letter", || async {
        (stream_len(&js, DLQ).await == 1).then_some(())
    })
    .await;

    let process = ("kind", "process");
    let scrape = wait_for(port, "/metrics", "4 settled jobs", |status, body| {
        status == 200
            && value(
                body,
                "video_worker_jobs_total",
                &[process, ("outcome", "dead_lettered")],
            ) == Some(1.0)
    });
    assert_promtool_passes(&scrape);
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&scrape, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape:\n{scrape}"))
    };
    let jobs = |outcome| v("video_worker_jobs_total", &[process, ("outcome", outcome)]);
    assert_eq!(jobs("succeeded"), 3.0);
    assert_eq!(jobs("dead_lettered"), 1.0);
    assert_eq!((jobs("retried"), jobs("handed_back")), (0.0, 0.0));
    assert_eq!(v("video_worker_dead_letters_total", &[process]), 1.0);
    assert_eq!(v("video_worker_redeliveries_total", &[process]), 0.0);
    assert_eq!(
        v(
            "video_worker_job_failures_total",
            &[process, ("error", "source_not_found")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "video_worker_job_duration_seconds_count",
            &[process, ("outcome", "succeeded")]
        ),
        3.0
    );
    for stage in [
        "validate",
        "start",
        "probe",
        "transcode",
        "publish",
        "record",
        "ack",
    ] {
        let n = v(
            "video_worker_job_stage_duration_seconds_count",
            &[process, ("stage", stage)],
        );
        assert!(n >= 3.0, "stage {stage}: {n}");
    }
    assert_eq!(v("video_worker_jobs_in_flight", &[process]), 0.0);
    assert_eq!(v("video_worker_job_slots", &[process]), 1.0);
    assert_eq!(v("video_worker_job_slots_free", &[process]), 1.0);
    assert_eq!(v("video_worker_nats_connected", &[]), 1.0);
    assert_eq!(v("video_worker_nats_reconnects_total", &[]), 0.0);

    // Frames and bytes: what the results say, summed.
    let results: Vec<&Value> = processed.iter().map(|e| &e["result"]).collect();
    let sum = |f: &dyn Fn(&Value) -> u64| results.iter().map(|r| f(r)).sum::<u64>() as f64;
    assert_eq!(
        v("video_worker_frames_decoded_total", &[]),
        sum(&|r| r["frames_decoded"].as_u64().unwrap())
    );
    assert_eq!(
        v("video_worker_source_read_bytes_total", &[]),
        3.0 * std::fs::metadata(&source).unwrap().len() as f64
    );
    let renditions = |r: &Value| r["renditions"].as_array().unwrap().clone();
    assert_eq!(
        v("video_worker_output_written_bytes_total", &[process]),
        sum(&|r| renditions(r)
            .iter()
            .map(|q| q["bytes"].as_u64().unwrap())
            .sum())
    );
    for q in ["240p", "144p"] {
        let frames = sum(&|r| {
            renditions(r)
                .iter()
                .filter(|x| x["quality"] == q)
                .map(|x| x["frames"].as_u64().unwrap())
                .sum()
        });
        // Each rendition encodes every output frame of its job.
        assert_eq!(
            frames,
            sum(&|r| r["frames_encoded"].as_u64().unwrap()),
            "{q}"
        );
        assert!(frames > 0.0);
        assert_eq!(
            v("video_worker_frames_encoded_total", &[("rendition", q)]),
            frames
        );
        assert_eq!(v("video_worker_encode_fps_count", &[("rendition", q)]), 3.0);
    }
    let build = samples(&scrape)
        .into_iter()
        .find(|((name, _), _)| name == "video_worker_build_info")
        .expect("build info");
    assert_eq!(build.1, 1.0);
    assert_eq!(build.0 .1["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build.0 .1["ffmpeg"].is_empty());

    // Logs: every line JSON; every line of a job carries its identity.
    let lines = json_lines(&worker.log());
    for line in &lines {
        if let Some(span) = job_span(line) {
            for key in ["video_id", "kind", "stream_seq", "attempt"] {
                assert!(span.get(key).is_some(), "job line without {key}: {line}");
            }
        }
        // A line that names a job's video_id anywhere is a line of that job.
        for id in ids.iter().chain(&["ops-missing"]) {
            if line.to_string().contains(&format!("\"{id}\"")) {
                let span = job_span(line).unwrap_or_else(|| panic!("outside its job: {line}"));
                assert_eq!(span["video_id"], *id, "{line}");
            }
        }
    }
    let of = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| job_span(l).is_some_and(|s| s["video_id"] == id))
            .collect()
    };
    for id in ids {
        let mine = of(id);
        let messages: Vec<&str> = mine.iter().filter_map(|l| l["message"].as_str()).collect();
        for m in [
            "job received",
            "job valid",
            "job done and acked",
            "job finished",
        ] {
            assert!(messages.contains(&m), "{id}: no {m:?} in {messages:?}");
        }
        let end = mine.last().expect("lines of the job");
        assert_eq!(end["message"], "job finished", "the last line: {end}");
        assert_eq!(end["outcome"], "succeeded");
        assert_eq!(job_span(end).unwrap()["kind"], "process");
        assert_eq!(job_span(end).unwrap()["attempt"], 1);
        for stage in ["probe_seconds", "transcode_seconds", "seconds"] {
            assert!(end[stage].as_f64().unwrap() > 0.0, "{stage}: {end}");
        }
    }
    let failed = of("ops-missing");
    let end = failed.last().expect("lines of the failed job");
    assert_eq!(end["message"], "job finished");
    assert_eq!(end["outcome"], "dead_lettered");
    assert_eq!(end["error"], "source_not_found");
    drop(worker);
}

/// `/readyz` is 503 while NATS is not there, 200 once connected with the consumer bound,
/// and 503 again as soon as SIGTERM starts the drain (the running job still finishes). A scrape
/// taken mid-job passes promtool. RUST_LOG is honoured (a debug line appears).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_nats_connects_and_again_while_draining() {
    let mut server = NatsServer::start();
    // Its port, with nothing listening on it yet.
    server.stop();
    let s = Scratch::new();
    let source = s.uploads().join("long.mp4");
    make_video(&source, 640, 360, LONG_SECONDS);
    let port = free_port();
    let mut args = worker_args(&server.url(), &s.root(), port);
    args.extend(["--grace".to_string(), "120".to_string()]);
    let mut worker = Worker::spawn_env(
        "ops-ready",
        &s.logs(),
        &args,
        &[("RUST_LOG", "debug,async_nats=warn")],
    );
    wait_for(port, "/healthz", "the listener", |status, _| status == 200);
    let (status, body) = get(port, "/readyz").expect("/readyz answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("NATS not connected"), "{body}");

    server.restart(Duration::ZERO);
    wait_for(port, "/readyz", "ready once connected", |status, _| {
        status == 200
    });
    let (_c, js) = jetstream(&server.url()).await;
    let mut job = job(
        "ops-long",
        &source,
        &s.hls().join("ops-long"),
        &["360p", "240p"],
    );
    job["preset"] = LONG_PRESET.into();
    publish_job(
        &js,
        "video.process",
        "ops-long",
        job.to_string().into_bytes(),
    )
    .await;
    let in_flight = [("kind", "process")];
    let mid_job = wait_for(port, "/metrics", "the job in flight", |_, body| {
        value(body, "video_worker_jobs_in_flight", &in_flight) == Some(1.0)
    });
    assert_promtool_passes(&mid_job);

    worker.signal(libc::SIGTERM);
    let body = wait_for(port, "/readyz", "503 while draining", |status, _| {
        status == 503
    });
    assert!(body.contains("draining"), "{body}");
    let (_, scrape) = get(port, "/metrics").expect("metrics while draining");
    assert_eq!(
        value(&scrape, "video_worker_jobs_in_flight", &in_flight),
        Some(1.0),
        "the job still runs while the worker drains"
    );
    assert!(worker.wait(T).success());
    assert_eq!(events(&js, "video.processed").await.len(), 1);
    assert!(
        worker.log().contains("\"job process started\""),
        "RUST_LOG=debug not honoured"
    );
    drop(server);
}
