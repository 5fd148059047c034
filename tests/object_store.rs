//! Issue 9: sources and outputs in S3 and in the JetStream object store, against real servers
//! started here on free loopback ports: moto's S3 server and nats-server. The peer that puts
//! sources and reads ladders back is not ours: boto3 and nats-py (tests/object_store/peer.py,
//! in the venv scripts/setup.sh makes). Short, low-resolution clips keep every test quick.

mod nats;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nats::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);
const BUCKET: &str = "media";
/// What the worker is given as S3 credentials; never to be seen in a log.
const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";

// ---------------------------------------------------------------------------------------------
// Servers and the peer
// ---------------------------------------------------------------------------------------------

fn tools() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/storage-venv/bin")
}

fn python() -> PathBuf {
    let p = tools().join("python");
    assert!(
        p.is_file(),
        "{} missing: run scripts/setup.sh (installs moto[server], boto3, nats-py)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the peer (boto3 / nats-py); its one JSON line.
fn peer(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/object_store/peer.py");
    let out = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .expect("run the python peer");
    assert!(
        out.status.success(),
        "peer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "peer {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The peer (boto3) puts the file at `path` into S3 as `key`; what it reports (ETag, MD5).
fn s3_put(moto: &Moto, key: impl AsRef<str>, path: &Path) -> Value {
    peer(&[
        "s3-put",
        &moto.endpoint(),
        BUCKET,
        key.as_ref(),
        &path.display().to_string(),
    ])
}

/// moto's S3 server on a free port; killed on drop.
struct Moto {
    port: u16,
    child: Child,
}

impl Moto {
    fn start() -> Moto {
        Moto::start_env(&[])
    }

    fn start_env(env: &[(&str, &str)]) -> Moto {
        let port = free_port();
        let child = Command::new(tools().join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { port, child }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of a server that the test can take down (every connection cut, new
/// ones refused by closing them at once) and bring back: an S3 outage without losing moto's
/// in-memory state.
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        Relay::start_throttled(target, None)
    }

    /// With `pause`: a pause after every forwarded read of up to 64 KiB (a slow network).
    fn start_throttled(target: u16, pause: Option<Duration>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay port");
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&down);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = Arc::clone(&flag);
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            if flag.load(Ordering::SeqCst) {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                    if let Some(pause) = pause {
                                        std::thread::sleep(pause);
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, down }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// The environment AWS tools use, pointed at `endpoint`.
fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "AKIAWORKERTEST".into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

/// A worker, once it serves (its streams and consumers exist).
fn spawn_worker(
    name: &str,
    s: &Scratch,
    args: &[String],
    env: &[(&'static str, String)],
) -> Worker {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let w = Worker::spawn_env(name, &s.logs(), args, &env);
    w.wait_log("serving", T);
    w
}

/// The worker's flags: the test's local root, the given object roots, scratch under the root.
fn worker_args(url: &str, s: &Scratch, object_roots: &[&str]) -> Vec<String> {
    let mut args = base_args(url, &s.root());
    for r in object_roots {
        args.extend(["--allow-root".into(), r.to_string()]);
    }
    let scratch = s.root().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    args.extend([
        "--scratch".into(),
        scratch.display().to_string(),
        "--kinds".into(),
        "process".into(),
    ]);
    args
}

/// The guide's payload with object URLs.
fn object_job(video_id: &str, source: &str, output: &str) -> Value {
    serde_json::json!({
        "video_id": video_id,
        "source_path": source,
        "output_path": output,
        "user_id": "user-456",
        "quality": ["360p", "240p"],
        "thumbnail_time": "00:00:01",
        "segment_seconds": 1,
        "callback_url": null,
        "metadata": { "title": "My Video", "duration": 3, "size_bytes": 1000 }
    })
}

async fn submit(js: &async_nats::jetstream::Context, job: &Value, msg_id: &str) {
    publish_job(js, "video.process", msg_id, job.to_string().into_bytes()).await;
}

/// The `video.processed` (Ok) or `video.failed` (Err) event of `video_id`, the `n`-th one.
async fn outcome(
    js: &async_nats::jetstream::Context,
    video_id: &str,
    n: usize,
) -> Result<Value, Value> {
    eventually(T, "the job's outcome", || async {
        let done: Vec<Value> = events(js, "video.processed")
            .await
            .into_iter()
            .filter(|e| e["video_id"] == video_id)
            .collect();
        if done.len() >= n {
            return Some(Ok(done[n - 1].clone()));
        }
        let failed: Vec<Value> = events(js, "video.failed")
            .await
            .into_iter()
            .filter(|e| e["video_id"] == video_id)
            .collect();
        failed.first().cloned().map(Err)
    })
    .await
}

/// Checks a ladder read back by the peer: valid HLS (m3u8-rs, ffprobe, a decode), the
/// Content-Type of each object, and the digests the peer computed against the store's.
fn check_tree(tree: &Value, dir: &Path, qualities: &[&str]) -> Value {
    let files = tree.as_object().expect("tree");
    assert!(files.contains_key("master.m3u8"), "{tree}");
    for (name, f) in files {
        let want = match name.rsplit('.').next() {
            Some("m3u8") => "application/vnd.apple.mpegurl",
            Some("ts") => "video/mp2t",
            Some("jpg") => "image/jpeg",
            Some("json") => "application/json",
            _ => panic!("unexpected object {name}"),
        };
        assert_eq!(f["content_type"], want, "{name}");
        if let Some(ok) = f.get("etag_ok") {
            assert_eq!(ok, true, "{name}: ETag is not the MD5 of its content");
        }
        let local = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(f["size"], local.len(), "{name}");
    }
    assert_valid_output(dir, qualities)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_source_becomes_an_s3_ladder_that_boto3_reads_back_with_matching_digests() {
    let server = NatsServer::start();
    let moto = Moto::start();
    let s = Scratch::new();
    let source = s.uploads().join("v1.mp4");
    make_video(&source, 640, 360, 3.0);
    let put = s3_put(&moto, "uploads/v1.mp4", &source);
    assert_eq!(put["etag"], put["md5"]);
    let mut args = worker_args(
        &server.url(),
        &s,
        &["s3://media/uploads/", "s3://media/hls/"],
    );
    // Whole first, so that the download is its own stage in the progress events (read as it
    // arrives, its bytes ride on the transcode's events: the a1 test below).
    args.extend(["--source-read".into(), "download".into()]);
    let _w = spawn_worker("w1", &s, &args, &aws_env(&moto.endpoint()));
    let (client, js) = jetstream(&server.url()).await;
    let mut progress = client.subscribe("video.progress.v1").await.unwrap();
    let job = object_job("v1", "s3://media/uploads/v1.mp4", "s3://media/hls/v1");
    submit(&js, &job, "process:v1").await;
    let done = outcome(&js, "v1", 1).await.expect("processed");
    assert_eq!(done["output_path"], "s3://media/hls/v1");
    assert_eq!(done["master_playlist"], "s3://media/hls/v1/master.m3u8");
    assert_eq!(done["reused_output"], false);
    assert_eq!(done["result"]["source"], "s3://media/uploads/v1.mp4");
    assert!(
        done["result"]["upload"]["first_segment_seconds"]
            .as_f64()
            .is_some(),
        "{done}"
    );

    let back = s.root().join("back");
    let tree = peer(&[
        "s3-tree",
        &moto.endpoint(),
        BUCKET,
        "hls/v1",
        &back.display().to_string(),
    ]);
    let manifest = check_tree(&tree, &back, &["360p", "240p"]);
    assert_eq!(manifest["result"]["output_dir"], "s3://media/hls/v1");
    assert_eq!(manifest["result"]["source"], "s3://media/uploads/v1.mp4");
    assert_eq!(manifest["video_id"], "v1");
    // Progress events carry the bytes moved.
    use futures_util::StreamExt;
    let mut saw_bytes = false;
    let mut download_stages = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), progress.next()).await
    {
        let p: Value = serde_json::from_slice(&m.payload).unwrap();
        saw_bytes |= p["bytes_downloaded"].as_u64().is_some_and(|b| b > 0);
        if p["stage"] == "downloading" {
            download_stages.push((p["percent"].as_f64(), p["bytes_downloaded"].as_u64()));
        }
    }
    assert!(saw_bytes, "no progress event with bytes_downloaded");
    // The download itself is reported: from its start to all of the source's bytes.
    let size = std::fs::metadata(&source).unwrap().len();
    assert_eq!(
        download_stages.first(),
        Some(&(Some(0.0), Some(0))),
        "{download_stages:?}"
    );
    assert_eq!(
        download_stages.last(),
        Some(&(Some(100.0), Some(size))),
        "{download_stages:?}"
    );
    // Nothing left in scratch.
    let left: Vec<_> = std::fs::read_dir(s.root().join("scratch"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "scratch not cleaned: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_object_source_becomes_a_nats_object_ladder_that_nats_py_reads_back() {
    let server = NatsServer::start();
    let s = Scratch::new();
    let source = s.uploads().join("n1.mp4");
    make_video(&source, 640, 360, 3.0);
    let put = peer(&[
        "nats-put",
        &server.url(),
        "uploads",
        "raw/n1.mp4",
        &source.display().to_string(),
    ]);
    assert!(put["digest"].as_str().unwrap().starts_with("SHA-256="));
    let args = worker_args(
        &server.url(),
        &s,
        &["nats-object://uploads/", "nats-object://hls/"],
    );
    let mut with_create = args.clone();
    with_create.push("--create-buckets".into());
    let _w = spawn_worker("w1", &s, &with_create, &[]);
    let (_c, js) = jetstream(&server.url()).await;
    let job = object_job(
        "n1",
        "nats-object://uploads/raw/n1.mp4",
        "nats-object://hls/n1",
    );
    submit(&js, &job, "process:n1").await;
    let done = outcome(&js, "n1", 1).await.expect("processed");
    assert_eq!(done["master_playlist"], "nats-object://hls/n1/master.m3u8");
    let back = s.root().join("back");
    let tree = peer(&[
        "nats-tree",
        &server.url(),
        "hls",
        "n1",
        &back.display().to_string(),
    ]);
    let manifest = check_tree(&tree, &back, &["360p", "240p"]);
    assert_eq!(
        manifest["result"]["source"],
        "nats-object://uploads/raw/n1.mp4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_job_reads_a_nats_object_source_and_writes_an_s3_ladder_and_a_local_one() {
    let server = NatsServer::start();
    let moto = Moto::start();
    let s = Scratch::new();
    let source = s.uploads().join("m1.mp4");
    make_video(&source, 320, 240, 2.0);
    peer(&[
        "nats-put",
        &server.url(),
        "uploads",
        "m1.mp4",
        &source.display().to_string(),
    ]);
    // The output bucket exists (made by the peer); the worker never creates S3 buckets.
    s3_put(&moto, "marker", &source);
    let args = worker_args(
        &server.url(),
        &s,
        &["nats-object://uploads/", "s3://media/hls/"],
    );
    let _w = spawn_worker("w1", &s, &args, &aws_env(&moto.endpoint()));
    let (_c, js) = jetstream(&server.url()).await;
    submit(
        &js,
        &object_job("m1", "nats-object://uploads/m1.mp4", "s3://media/hls/m1"),
        "process:m1",
    )
    .await;
    let done = outcome(&js, "m1", 1).await.expect("processed");
    assert_eq!(done["master_playlist"], "s3://media/hls/m1/master.m3u8");
    let back = s.root().join("back");
    let tree = peer(&[
        "s3-tree",
        &moto.endpoint(),
        BUCKET,
        "hls/m1",
        &back.display().to_string(),
    ]);
    check_tree(&tree, &back, &["240p"]);
    // An object source with a local output: published as a local folder.
    let local_out = s.hls().join("m2");
    submit(
        &js,
        &object_job(
            "m2",
            "nats-object://uploads/m1.mp4",
            &local_out.display().to_string(),
        ),
        "process:m2",
    )
    .await;
    outcome(&js, "m2", 1).await.expect("processed");
    let manifest = assert_valid_output(&local_out, &["240p"]);
    assert_eq!(manifest["result"]["source"], "nats-object://uploads/m1.mp4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_s3_credentials_are_a_permanent_failure_and_the_secret_never_reaches_the_log() {
    let server = NatsServer::start();
    // Authentication enforced from the first request: the worker's key does not exist.
    let moto = Moto::start_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let s = Scratch::new();
    let args = worker_args(&server.url(), &s, &["s3://media/"]);
    let w = spawn_worker("w1", &s, &args, &aws_env(&moto.endpoint()));
    let (_c, js) = jetstream(&server.url()).await;
    submit(
        &js,
        &object_job("c1", "s3://media/uploads/c1.mp4", "s3://media/hls/c1"),
        "process:c1",
    )
    .await;
    let failed = outcome(&js, "c1", 1).await.expect_err("must fail");
    assert_eq!(failed["kind"], "invalid_request", "{failed}");
    assert_eq!(failed["permanent"], true);
    assert_eq!(failed["attempt"], 1, "retried: {failed}");
    let everything = format!("{}\n{failed}", w.log());
    assert!(
        !everything.contains(SECRET),
        "the secret leaked:\n{everything}"
    );
    // `--help` hides the environment's value too.
    let (_, help, _) = run_cli_env(
        &["run".into(), "--help".into()],
        &[("AWS_SECRET_ACCESS_KEY", SECRET)],
        Duration::from_secs(10),
    );
    assert!(help.contains("--s3-secret-access-key"), "{help}");
    assert!(!help.contains(SECRET), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_finished_object_job_is_reused_not_transcoded_again() {
    let server = NatsServer::start();
    let moto = Moto::start();
    let s = Scratch::new();
    let source = s.uploads().join("r1.mp4");
    make_video(&source, 320, 240, 2.0);
    s3_put(&moto, "uploads/r1.mp4", &source);
    let args = worker_args(&server.url(), &s, &["s3://media/"]);
    let w = spawn_worker("w1", &s, &args, &aws_env(&moto.endpoint()));
    let (_c, js) = jetstream(&server.url()).await;
    let job = object_job("r1", "s3://media/uploads/r1.mp4", "s3://media/hls/r1");
    submit(&js, &job, "process:r1").await;
    let first = outcome(&js, "r1", 1).await.expect("processed");
    assert_eq!(first["reused_output"], false);
    // The same job again (an ack that was lost looks the same to the worker).
    submit(&js, &job, "process:r1-again").await;
    let second = outcome(&js, "r1", 2).await.expect("processed");
    assert_eq!(second["reused_output"], true, "{second}");
    assert_eq!(second["fingerprint"], first["fingerprint"]);
    assert_eq!(second["master_playlist"], "s3://media/hls/r1/master.m3u8");
    assert_eq!(
        w.log().matches("source downloaded to scratch").count(),
        1,
        "{}",
        w.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_locations_outside_the_allowed_buckets_and_prefixes_are_invalid_requests() {
    let server = NatsServer::start();
    let moto = Moto::start();
    let s = Scratch::new();
    let args = worker_args(
        &server.url(),
        &s,
        &["s3://media/uploads/", "s3://media/hls/"],
    );
    let _w = spawn_worker("w1", &s, &args, &aws_env(&moto.endpoint()));
    let (_c, js) = jetstream(&server.url()).await;
    let cases = [
        ("x1", "s3://other/uploads/a.mp4", "s3://media/hls/x1"),
        ("x2", "s3://media/uploads-evil/a.mp4", "s3://media/hls/x2"),
        ("x3", "s3://media/uploads/a.mp4", "s3://media/private/x3"),
        ("x4", "nats-object://uploads/a.mp4", "s3://media/hls/x4"),
        (
            "x5",
            "s3://media/uploads/../secret.mp4",
            "s3://media/hls/x5",
        ),
        ("x6", "s3://media/uploads/a.mp4", "s3://media/hls/"),
    ];
    for (id, src, out) in cases {
        submit(&js, &object_job(id, src, out), &format!("process:{id}")).await;
    }
    for (id, src, out) in cases {
        let failed = outcome(&js, id, 1).await.expect_err("refused");
        assert_eq!(failed["kind"], "invalid_request", "{src} → {out}: {failed}");
    }
    // A local path is refused too once only object roots… are given besides the test root:
    // here the local root is allowed, a path outside it is not.
    submit(
        &js,
        &object_job("x7", "/etc/passwd", "s3://media/hls/x7"),
        "process:x7",
    )
    .await;
    assert_eq!(
        outcome(&js, "x7", 1).await.expect_err("refused")["kind"],
        "invalid_request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_mid_upload_is_retried_and_no_master_is_visible_before_the_ladder_is_complete()
{
    let server = NatsServer::start();
    let moto = Moto::start();
    let relay = Relay::start(moto.port);
    let s = Scratch::new();
    let source = s.uploads().join("o1.mp4");
    make_video(&source, 320, 240, 6.0);
    s3_put(&moto, "uploads/o1.mp4", &source);
    let mut args = worker_args(&server.url(), &s, &["s3://media/"]);
    args.extend([
        "--s3-retries".into(),
        "12".into(),
        "--s3-timeout".into(),
        "5".into(),
    ]);
    let w = spawn_worker("w1", &s, &args, &aws_env(&relay.endpoint()));
    // The peer watches the prefix directly (not through the relay) for the commit point.
    let endpoint = moto.endpoint();
    let watcher =
        std::thread::spawn(move || peer(&["s3-watch", &endpoint, BUCKET, "hls/o1", "100"]));
    let (_c, js) = jetstream(&server.url()).await;
    let mut job = object_job("o1", "s3://media/uploads/o1.mp4", "s3://media/hls/o1");
    job["preset"] = "slower".into();
    submit(&js, &job, "process:o1").await;
    w.wait_log("first segment uploaded", T);
    relay.set_down(true);
    let keys_during = peer(&["s3-keys", &moto.endpoint(), BUCKET, "hls/o1/"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !keys_during
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "hls/o1/master.m3u8"),
        "master visible during the outage: {keys_during}"
    );
    relay.set_down(false);
    let done = outcome(&js, "o1", 1)
        .await
        .expect("processed after the outage");
    assert_eq!(done["master_playlist"], "s3://media/hls/o1/master.m3u8");
    // The outage was seen and retried: by the S3 client (backoff) or by the queue (a failed
    // upload fails the attempt, which cleans up and is redelivered).
    let log = w.log();
    let retries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("backing off") || l.contains("an upload failed"))
        .collect();
    assert!(!retries.is_empty(), "no retry in the log:\n{log}");
    println!(
        "attempt {} after {} retry lines, e.g. {}",
        done["attempt"],
        retries.len(),
        retries[0]
    );
    let watched = watcher.join().unwrap();
    assert_eq!(watched["master_seen"], true, "{watched}");
    assert_eq!(watched["violations"], serde_json::json!([]), "{watched}");
    let back = s.root().join("back");
    let tree = peer(&[
        "s3-tree",
        &moto.endpoint(),
        BUCKET,
        "hls/o1",
        &back.display().to_string(),
    ]);
    check_tree(&tree, &back, &["240p"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_object_job_deletes_what_it_uploaded() {
    let server = NatsServer::start();
    let moto = Moto::start();
    let s = Scratch::new();
    let source = s.uploads().join("f1.mp4");
    make_video(&source, 320, 240, 8.0);
    s3_put(&moto, "uploads/f1.mp4", &source);
    let mut args = worker_args(&server.url(), &s, &["s3://media/"]);
    args.extend(["--grace".into(), "0".into()]);
    let mut w = spawn_worker("w1", &s, &args, &aws_env(&moto.endpoint()));
    let (_c, js) = jetstream(&server.url()).await;
    let mut job = object_job("f1", "s3://media/uploads/f1.mp4", "s3://media/hls/f1");
    job["preset"] = "slower".into();
    submit(&js, &job, "process:f1").await;
    w.wait_log("first segment uploaded", T);
    let before = peer(&["s3-keys", &moto.endpoint(), BUCKET, "hls/f1/"]);
    assert!(
        !before.as_array().unwrap().is_empty(),
        "nothing uploaded yet"
    );
    // Shutdown with no grace: the job is cancelled and handed back.
    w.signal(libc::SIGTERM);
    assert!(w.wait(T).success(), "{}", w.log());
    let after = peer(&["s3-keys", &moto.endpoint(), BUCKET, "hls/f1/"]);
    assert_eq!(
        after,
        serde_json::json!([]),
        "left behind: {after}\n{}",
        w.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_nats_object_put_leaves_no_orphan_chunks_and_submit_upload_fails() {
    let server = NatsServer::start();
    let (_c, js) = jetstream(&server.url()).await;
    // A bucket too small for the file: the stream refuses chunks once full, mid-put.
    js.create_object_store(async_nats::jetstream::object_store::Config {
        bucket: "tiny".into(),
        max_bytes: 400 * 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, common_block()).unwrap();
    let args: Vec<String> = [
        "submit",
        "--nats-url",
        &server.url(),
        "--video-id",
        "t1",
        "--source",
        &file.display().to_string(),
        "--upload",
        "nats-object://tiny/big.bin",
        "--output",
        "/tmp/unused",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (status, _out, err) = run_cli(&args, T);
    assert!(!status.success(), "the upload cannot fit: {err}");
    let mut stream = js.get_stream("OBJ_tiny").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, 0, "orphan chunks left: {state:?}");
    // No job was submitted for a source that is not there (the upload comes first).
    assert!(
        js.get_stream(STREAM).await.is_err(),
        "a job stream was set up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_upload_puts_a_local_file_into_s3_and_the_job_names_the_url() {
    let server = NatsServer::start();
    let moto = Moto::start();
    let s = Scratch::new();
    let source = s.uploads().join("u1.mp4");
    make_video(&source, 320, 240, 2.0);
    s3_put(&moto, "marker", &source);
    let args = worker_args(&server.url(), &s, &["s3://media/"]);
    let _w = spawn_worker("w1", &s, &args, &aws_env(&moto.endpoint()));
    let submit_args: Vec<String> = [
        "submit",
        "--nats-url",
        &server.url(),
        "--video-id",
        "u1",
        "--source",
        &source.display().to_string(),
        "--upload",
        "s3://media/uploads/u1.mp4",
        "--output",
        "s3://media/hls/u1",
        "--quality",
        "240p",
        "--segment-seconds",
        "1",
        "--wait",
        "--json",
        "--timeout",
        "100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = aws_env(&moto.endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, out, err) = run_cli_env(&submit_args, &env, T);
    assert!(status.success(), "{out}\n{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        report["processed"]["master_playlist"],
        "s3://media/hls/u1/master.m3u8"
    );
    let keys = peer(&["s3-keys", &moto.endpoint(), BUCKET, "uploads/"]);
    assert_eq!(keys, serde_json::json!(["uploads/u1.mp4"]));
    let (_c, js) = jetstream(&server.url()).await;
    let jobs = messages(&js, STREAM, "video.process").await;
    let job: Value = serde_json::from_slice(&jobs[0].payload).unwrap();
    assert_eq!(job["source_path"], "s3://media/uploads/u1.mp4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcode_reads_an_s3_source_and_writes_a_nats_object_ladder() {
    let server = NatsServer::start();
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("t1.mp4");
    make_video(&source, 320, 240, 2.0);
    s3_put(&moto, "in/t1.mp4", &source);
    let args: Vec<String> = [
        "transcode",
        "s3://media/in/t1.mp4",
        "nats-object://ladders/t1",
        "--nats-url",
        &server.url(),
        "--create-buckets",
        "--quality",
        "240p",
        "--preset",
        "ultrafast",
        "--json",
        "--scratch",
        &dir.path().display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = aws_env(&moto.endpoint());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, out, err) = run_cli_env(&args, &env, T);
    assert!(status.success(), "{out}\n{err}");
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["output_dir"], "nats-object://ladders/t1");
    assert!(
        result["upload"]["master_seconds"].as_f64().is_some(),
        "{result}"
    );
    let back = dir.path().join("back");
    let tree = peer(&[
        "nats-tree",
        &server.url(),
        "ladders",
        "t1",
        &back.display().to_string(),
    ]);
    check_tree(&tree, &back, &["240p"]);
}

/// A source of `seconds` of 320x240 noise, coded losslessly: ~2.9 MB a second that no
/// encoder can shrink, with the MP4 index at its end (no `faststart`).
fn make_noise_video(path: &Path, seconds: f64) {
    make_clip(
        path,
        &format!("testsrc2=size=320x240:rate=25:duration={seconds},noise=alls=80:allf=t"),
        seconds,
        &["-preset", "ultrafast", "-qp", "0"],
    );
}

/// [`make_noise_video`] of 4 s put in S3 as `uploads/<name>` by the peer; its local copy.
fn noise_source_in_s3(moto: &Moto, s: &Scratch, name: &str) -> PathBuf {
    let source = s.uploads().join(name);
    make_noise_video(&source, 4.0);
    s3_put(moto, format!("uploads/{name}"), &source);
    source
}

/// The files of a local ladder (segments, playlists, thumbnail), name → bytes.
fn ladder_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "manifest.json")
        .map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_read_as_it_arrives_is_decoded_during_its_download_into_the_same_ladder() {
    let server = NatsServer::start();
    let moto = Moto::start();
    // ~3 MB/s: the download of the source takes ~5 s, and the first frames come after its
    // tail and first chunk (~2 s), with room for a loaded machine.
    let relay = Relay::start_throttled(moto.port, Some(Duration::from_millis(20)));
    let s = Scratch::new();
    let source = noise_source_in_s3(&moto, &s, "a1.mp4");
    let size = std::fs::metadata(&source).unwrap().len();
    // Larger than the tail fetched first by a ranged GET, where this MP4 keeps its index.
    assert!(size > 9 << 20, "the source is only {size} bytes");
    let run = OverlappedRun::start(&server, &s, &relay, "a1", "s3://media/uploads/a1.mp4").await;
    let (w, js, out, ticks) = (&run.worker, &run.js, &run.out, &run.ticks);
    assert_eq!(run.done["result"]["source"], "s3://media/uploads/a1.mp4");
    assert!(
        w.log().contains("overlapped=true"),
        "the download did not run alongside the media work:\n{}",
        w.log()
    );
    // Frames were encoded while bytes of the source were still on their way.
    let (frames, got) = *ticks
        .iter()
        .find(|(frames, got)| *frames > 0 && *got < size)
        .expect("no frame was encoded before the source was whole");
    println!("{frames} frames encoded with {got} of {size} bytes downloaded");

    // The same job on the local file: the same bytes in every file of the ladder.
    let reference = s.root().join("out/a1-local");
    let mut local = object_job("a1-local", &source.display().to_string(), "");
    local["output_path"] = reference.display().to_string().into();
    submit(js, &local, "process:a1-local").await;
    outcome(js, "a1-local", 1).await.expect("processed");
    assert_valid_output(out, &["240p"]);
    let (ours, theirs) = (ladder_files(out), ladder_files(&reference));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &ours {
        assert!(
            bytes == &theirs[name],
            "{name} differs from the local source's"
        );
    }
}

/// An MP4 whose index (moov) comes after its media data and is larger than the tail fetched
/// first (an 8 MB cover picture inside it): the demuxer waits for the index far ahead of the
/// download, the worker fetches what it waits for by ranged GETs, and frames are encoded
/// while the download is still on its way (without them, nothing before the whole source).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_larger_than_the_tail_is_fetched_by_range_when_the_job_waits_for_it() {
    let server = NatsServer::start();
    let moto = Moto::start();
    // ~3 MB/s per connection: ~8 s for the source (24 MB), ~2 s for the part of its index beyond
    // the tail.
    let relay = Relay::start_throttled(moto.port, Some(Duration::from_millis(20)));
    let s = Scratch::new();
    let plain = s.root().join("plain.mp4");
    make_noise_video(&plain, 4.0);
    let cover = s.root().join("cover.png");
    run_ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "nullsrc=s=2400x2400,format=rgb24,geq=r='random(1)*255':g='random(2)*255':b='random(3)*255'",
        "-frames:v",
        "1",
        cover.to_str().unwrap(),
    ]);
    let source = s.uploads().join("big-index.mp4");
    run_ffmpeg(&[
        "-i",
        plain.to_str().unwrap(),
        "-i",
        cover.to_str().unwrap(),
        "-map",
        "0",
        "-map",
        "1",
        "-c",
        "copy",
        "-disposition:v:1",
        "attached_pic",
        source.to_str().unwrap(),
    ]);
    let (moov_at, moov_size) = top_level_box(&source, b"moov");
    let size = std::fs::metadata(&source).unwrap().len();
    assert!(
        moov_size > (5 << 20) && moov_at > (9 << 20) && moov_at + moov_size == size,
        "the fixture's index is {moov_size} bytes at {moov_at} of {size}"
    );
    s3_put(&moto, "uploads/big-index.mp4", &source);

    let run = OverlappedRun::start(
        &server,
        &s,
        &relay,
        "bi",
        "s3://media/uploads/big-index.mp4",
    )
    .await;
    let (frames, got) = *run
        .ticks
        .iter()
        .find(|(frames, got)| *frames > 0 && *got < moov_at)
        .expect("no frame was encoded before the download reached the index");
    println!("{frames} frames encoded with {got} of {size} bytes downloaded (index at {moov_at})");
    assert!(
        run.worker
            .log()
            .contains("fetched by range ahead of the download"),
        "no ranged GET served the job's wait:\n{}",
        run.worker.log()
    );
    assert_valid_output(&run.out, &["240p"]);
}

/// One job on an S3 source read as it arrives, through a worker behind `relay` (progress
/// every 0.2 s), into `out/<id>` under the scratch root.
struct OverlappedRun {
    worker: Worker,
    js: async_nats::jetstream::Context,
    out: PathBuf,
    /// Its `video.processed` event.
    done: Value,
    /// (frames, bytes_downloaded) of each progress event, in order.
    ticks: Vec<(u64, u64)>,
}

impl OverlappedRun {
    async fn start(
        server: &NatsServer,
        s: &Scratch,
        relay: &Relay,
        id: &str,
        source: &str,
    ) -> OverlappedRun {
        use futures_util::StreamExt;
        let mut args = worker_args(&server.url(), s, &["s3://media/uploads/"]);
        args.extend(["--progress-interval".into(), "0.2".into()]);
        let worker = spawn_worker("w1", s, &args, &aws_env(&relay.endpoint()));
        let (client, js) = jetstream(&server.url()).await;
        let mut progress = client
            .subscribe(format!("video.progress.{id}"))
            .await
            .unwrap();
        let out = s.root().join("out").join(id);
        let job = object_job(id, source, &out.display().to_string());
        submit(&js, &job, &format!("process:{id}")).await;
        let done = outcome(&js, id, 1).await.expect("processed");
        let mut ticks = Vec::new();
        while let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(200), progress.next()).await
        {
            let p: Value = serde_json::from_slice(&m.payload).unwrap();
            if let (Some(f), Some(b)) = (p["frames"].as_u64(), p["bytes_downloaded"].as_u64()) {
                ticks.push((f, b));
            }
        }
        OverlappedRun {
            worker,
            js,
            out,
            done,
            ticks,
        }
    }
}

/// Runs the Debian `ffmpeg` CLI on `args` (fixtures only).
fn run_ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .status()
        .expect("run ffmpeg (Debian package `ffmpeg`)");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// Where the top-level box `kind` of the MP4 at `path` starts, and its size.
fn top_level_box(path: &Path, kind: &[u8; 4]) -> (u64, u64) {
    let d = std::fs::read(path).unwrap();
    let mut at = 0usize;
    while at + 8 <= d.len() {
        let mut size = u32::from_be_bytes(d[at..at + 4].try_into().unwrap()) as u64;
        if size == 1 {
            size = u64::from_be_bytes(d[at + 8..at + 16].try_into().unwrap());
        }
        if &d[at + 4..at + 8] == kind {
            return (at as u64, size);
        }
        assert!(size >= 8, "a box of {size} bytes at {at}");
        at += size as usize;
    }
    panic!("no {kind:?} box in {}", path.display());
}

/// `--s3-timeout` bounds each read of a source's GET, not its whole body: a source that takes
/// longer to arrive than the timeout, but keeps arriving, is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_slower_to_download_than_the_s3_timeout_but_moving_is_read_whole() {
    let server = NatsServer::start();
    let moto = Moto::start();
    // ~3 MB/s: ~5 s for the source, against a 2 s timeout.
    let relay = Relay::start_throttled(moto.port, Some(Duration::from_millis(20)));
    let s = Scratch::new();
    noise_source_in_s3(&moto, &s, "t1.mp4");
    let mut args = worker_args(&server.url(), &s, &["s3://media/uploads/"]);
    args.extend([
        "--s3-timeout".into(),
        "2".into(),
        "--s3-retries".into(),
        "0".into(),
        "--source-read".into(),
        "download".into(),
    ]);
    let _w = spawn_worker("w1", &s, &args, &aws_env(&relay.endpoint()));
    let (_c, js) = jetstream(&server.url()).await;
    let out = s.root().join("out/t1");
    let job = object_job(
        "t1",
        "s3://media/uploads/t1.mp4",
        &out.display().to_string(),
    );
    submit(&js, &job, "process:t1").await;
    let done = outcome(&js, "t1", 1).await.expect("processed");
    assert_eq!(done["attempt"], 1, "{done}");
    assert_valid_output(&out, &["240p"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_while_the_source_arrives_fails_the_job_with_the_store_error_and_publishes_nothing(
) {
    let server = NatsServer::start();
    let moto = Moto::start();
    // ~2 MB/s: the cut comes long before the source is whole (~7 s).
    let relay = Relay::start_throttled(moto.port, Some(Duration::from_millis(30)));
    let s = Scratch::new();
    noise_source_in_s3(&moto, &s, "c1.mp4");
    let mut args = worker_args(&server.url(), &s, &["s3://media/uploads/"]);
    args.extend(["--s3-retries".into(), "0".into()]);
    let w = spawn_worker("w1", &s, &args, &aws_env(&relay.endpoint()));
    let (client, js) = jetstream(&server.url()).await;
    let mut progress = client.subscribe("video.progress.c1").await.unwrap();
    let out = s.root().join("out/c1");
    let job = object_job(
        "c1",
        "s3://media/uploads/c1.mp4",
        &out.display().to_string(),
    );
    submit(&js, &job, "process:c1").await;
    // Cut once the job reads the arriving source.
    use futures_util::StreamExt;
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "no progress before the cut");
        let m = tokio::time::timeout(T, progress.next())
            .await
            .unwrap()
            .unwrap();
        let p: Value = serde_json::from_slice(&m.payload).unwrap();
        if p["bytes_downloaded"].as_u64().is_some_and(|b| b > 0) {
            break;
        }
    }
    relay.set_down(true);
    // Every attempt fails on the store (the relay stays down): dead-lettered as output_io.
    let failed = outcome(&js, "c1", 1).await.expect_err("the job failed");
    assert_eq!(failed["kind"], "output_io", "{failed}");
    assert_eq!(failed["retries_exhausted"], true, "{failed}");
    // The attempt that was reading the arriving source failed with the store's error, not
    // with the media work's view of it (a source that ends early is invalid media).
    let log = w.log();
    let first = log
        .lines()
        .find(|l| l.contains("attempt=1") && l.contains("transient failure"))
        .unwrap_or_else(|| panic!("no failure of attempt 1 in the log:\n{log}"));
    assert!(
        first.contains("error=output_io: object storage: s3://media/uploads/c1.mp4"),
        "{first}"
    );
    assert!(!log.contains("invalid_media"), "{log}");
    assert!(
        !out.exists(),
        "an output was published from a partial source"
    );
    let leftovers: Vec<_> = std::fs::read_dir(s.root().join("out"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "left in the output folder: {leftovers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnail_and_metadata_jobs_read_object_sources_and_store_the_thumbnail_under_the_prefix()
{
    let server = NatsServer::start();
    let moto = Moto::start();
    let s = Scratch::new();
    let source = s.uploads().join("m1.mp4");
    make_video(&source, 640, 360, 3.0);
    s3_put(&moto, "uploads/m1.mp4", &source);
    peer(&[
        "nats-put",
        &server.url(),
        "sources",
        "m1.mp4",
        &source.display().to_string(),
    ]);
    let mut args = worker_args(
        &server.url(),
        &s,
        &["s3://media/", "nats-object://sources/"],
    );
    let kinds = args.iter().position(|a| a == "--kinds").unwrap();
    args[kinds + 1] = "thumbnail,metadata".into();
    let _w = spawn_worker("w1", &s, &args, &aws_env(&moto.endpoint()));
    let (_c, js) = jetstream(&server.url()).await;
    let thumb = serde_json::json!({"video_id": "m1", "source_path": "s3://media/uploads/m1.mp4",
        "output_path": "s3://media/thumbs/m1", "thumbnail_time": "00:00:02"});
    publish_job(&js, "video.thumbnail", "m1", thumb.to_string().into_bytes()).await;
    let meta = serde_json::json!({"video_id": "m2", "source_path": "nats-object://sources/m1.mp4"});
    publish_job(&js, "video.metadata", "m2", meta.to_string().into_bytes()).await;

    let t = outcome(&js, "m1", 1).await.expect("thumbnail processed");
    assert_eq!(t["job"], "thumbnail");
    assert_eq!(t["thumbnail"], "s3://media/thumbs/m1/thumbnail.jpg", "{t}");
    let back = s.root().join("back");
    let tree = peer(&[
        "s3-tree",
        &moto.endpoint(),
        BUCKET,
        "thumbs/m1",
        &back.display().to_string(),
    ]);
    let files: Vec<&String> = tree.as_object().unwrap().keys().collect();
    assert_eq!(files, ["thumbnail.jpg"], "{tree}");
    assert_eq!(tree["thumbnail.jpg"]["content_type"], "image/jpeg");
    let probe = ffprobe(&back.join("thumbnail.jpg"));
    assert_eq!(probe["streams"][0]["codec_name"], "mjpeg");
    assert_eq!(probe["streams"][0]["width"], 640);

    let m = outcome(&js, "m2", 1).await.expect("metadata processed");
    assert_eq!(m["job"], "metadata");
    assert_eq!(m["result"]["video"]["width"], 640, "{m}");
    assert_eq!(m["result"]["video"]["codec"], "h264");
    assert!(m["result"]["audio"].is_object(), "{m}");
}

/// The worker's peak RSS while it downloads a large source (1 GiB unless `VW_BIG_SOURCE_MB`
/// says otherwise) compared with a small one: it must not grow with the source. It moves a
/// gigabyte through moto (~25 s on the 2-core machine).
#[test]
fn a_large_s3_source_is_streamed_to_scratch_in_bounded_memory() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let big_mb: u64 = std::env::var("VW_BIG_SOURCE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let mut peaks = HashMap::new();
    for mb in [16, big_mb] {
        let path = dir.path().join(format!("src-{mb}.bin"));
        {
            let mut f = std::fs::File::create(&path).unwrap();
            let block = common_block();
            for _ in 0..mb {
                f.write_all(&block).unwrap();
            }
        }
        s3_put(&moto, format!("big/{mb}.bin"), &path);
        std::fs::remove_file(&path).unwrap();
        let out = dir.path().join(format!("out-{mb}"));
        let env = aws_env(&moto.endpoint());
        let mut child = Command::new(worker_bin())
            .args(["transcode", &format!("s3://media/big/{mb}.bin")])
            .arg(&out)
            .args(["--scratch", &dir.path().display().to_string()])
            // Whole first: this source is not media, and a transcode reading it as it arrives
            // would stop at its first bytes.
            .args(["--source-read", "download"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut peak_kb = 0u64;
        while child.try_wait().unwrap().is_none() {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
                if let Some(kb) = status
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    peak_kb = peak_kb.max(kb);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "source {mb} MiB: peak RSS of `transcode` {} MiB",
            peak_kb / 1024
        );
        peaks.insert(mb, peak_kb);
    }
    let (small, big) = (peaks[&16], peaks[&big_mb]);
    assert!(
        big < small + 64 * 1024,
        "peak RSS grew with the source: {} MiB for 16 MiB, {} MiB for {big_mb} MiB",
        small / 1024,
        big / 1024
    );
}

/// 1 MiB of incompressible-looking bytes (the source is not media: only the download counts).
fn common_block() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
