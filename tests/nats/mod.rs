//! Fixtures of the NATS tests (`tests/queue_*.rs`): a real `nats-server` per test (JetStream,
//! its own port and store directory, killed on drop), media made at test time with Debian's
//! `ffmpeg` CLI, the worker binary as a child process, and readers of broker state.
//!
//! The server binary comes from `NATS_SERVER_BIN`, else `PATH` (`scripts/test.sh` points
//! `NATS_SERVER_BIN` at Debian's 2.9.10 and then at a current server).

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, message::StreamMessage};
use serde_json::Value;
use tempfile::TempDir;

pub const STREAM: &str = "VIDEO_PROCESSING";
pub const DLQ: &str = "VIDEO_PROCESSING_DLQ";
pub const CONSUMER: &str = "VIDEO_WORKER";

// ---------------------------------------------------------------------------------------------
// nats-server
// ---------------------------------------------------------------------------------------------

fn server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "NATS_SERVER_BIN={} does not exist",
            bin.display()
        );
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found: set NATS_SERVER_BIN or put nats-server on PATH \
                 (Debian: apt-get install nats-server; scripts/setup.sh does it)"
            )
        })
}

/// Version of the server under test, e.g. "2.9.10".
pub fn server_version() -> String {
    let out = Command::new(server_binary())
        .arg("--version")
        .output()
        .expect("run nats-server --version");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("nats-server: v")
        .to_string()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// A nats-server with JetStream, on loopback, with its own store; killed on drop.
pub struct NatsServer {
    pub port: u16,
    dir: TempDir,
    config: Option<String>,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        Self::start_with(None)
    }

    /// `config`: extra lines of a server config file (e.g. an `authorization` block).
    pub fn start_with(config: Option<&str>) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("vw-nats-")
            .tempdir()
            .expect("temp dir");
        let mut server = NatsServer {
            port: free_port(),
            dir,
            config: config.map(str::to_string),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let store = self.dir.path().join("store");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log");
        let mut cmd = Command::new(server_binary());
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(&store);
        if let Some(extra) = &self.config {
            let conf = self.dir.path().join("server.conf");
            fs::write(&conf, extra).expect("server config");
            cmd.arg("-c").arg(&conf);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server accepts a connection and greets with INFO.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("nats-server exited at start ({status}):\n{}", self.log());
                }
            }
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("INFO") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept connections on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store.
    pub fn restart(&mut self, down_for: Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Media fixtures and output checks
// ---------------------------------------------------------------------------------------------

/// A test video (H.264 + AAC in MP4) made with Debian's ffmpeg CLI.
pub fn make_video(path: &Path, width: u32, height: u32, seconds: f64) {
    make_clip(
        path,
        &format!("testsrc2=size={width}x{height}:rate=25:duration={seconds}"),
        seconds,
        &["-preset", "ultrafast", "-g", "50"],
    );
}

/// A clip of the lavfi `video` source with a 440 Hz tone, coded by libx264 with `x264_args`
/// and AAC, made with Debian's ffmpeg CLI.
pub fn make_clip(path: &Path, video: &str, seconds: f64, x264_args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", video])
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={seconds}"
        ))
        .args(["-map", "0:v", "-map", "1:a", "-c:v", "libx264"])
        .args(x264_args)
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"])
        .arg(path)
        .status()
        .expect("run ffmpeg (Debian package `ffmpeg`)");
    assert!(
        status.success(),
        "ffmpeg fixture failed: {}",
        path.display()
    );
}

/// Checks a published HLS output: master playlist parsed with m3u8-rs naming each expected
/// quality, each media playlist complete (ENDLIST) with its segments present, one segment of
/// each decoded by ffprobe, a thumbnail and a manifest; no staging directory beside it.
pub fn assert_valid_output(dir: &Path, qualities: &[&str]) -> Value {
    let master_text = fs::read(dir.join("master.m3u8"))
        .unwrap_or_else(|e| panic!("{}/master.m3u8: {e}", dir.display()));
    let master = match m3u8_rs::parse_playlist_res(&master_text) {
        Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => m,
        other => panic!("master.m3u8 is not a master playlist: {other:?}"),
    };
    let uris: Vec<&str> = master.variants.iter().map(|v| v.uri.as_str()).collect();
    // One EXT-X-STREAM-INF and one EXT-X-I-FRAME-STREAM-INF per quality.
    let (iframes, variants): (Vec<_>, Vec<_>) = master.variants.iter().partition(|v| v.is_i_frame);
    assert_eq!(variants.len(), qualities.len(), "variants {uris:?}");
    assert_eq!(iframes.len(), qualities.len(), "I-frame variants {uris:?}");
    let mut segment_counts = Vec::new();
    for q in qualities {
        let uri = format!("{q}.m3u8");
        let variant = variants
            .iter()
            .find(|v| v.uri == uri)
            .unwrap_or_else(|| panic!("no variant {uri} in {uris:?}"));
        assert!(variant.bandwidth > 0);
        assert!(variant.resolution.is_some());
        let codecs = variant.codecs.as_deref().unwrap_or_default();
        assert!(
            codecs.contains("avc1.") && codecs.contains("mp4a.40.2"),
            "{codecs}"
        );
        let media_text = fs::read(dir.join(&uri)).expect("media playlist");
        let media = match m3u8_rs::parse_playlist_res(&media_text) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(m)) => m,
            other => panic!("{uri} is not a media playlist: {other:?}"),
        };
        assert!(media.end_list, "{uri} has no EXT-X-ENDLIST");
        assert!(!media.segments.is_empty());
        for s in &media.segments {
            let seg = dir.join(&s.uri);
            assert!(
                fs::metadata(&seg).map(|m| m.len() > 0).unwrap_or(false),
                "segment {} missing or empty",
                seg.display()
            );
        }
        segment_counts.push(media.segments.len());
        let first = dir.join(&media.segments[0].uri);
        let probe = ffprobe(&first);
        let streams = probe["streams"].as_array().expect("ffprobe streams");
        assert!(
            streams.iter().any(|s| s["codec_name"] == "h264"),
            "no h264 in {}: {probe}",
            first.display()
        );
        decode_all(&first);
    }
    // The audio: its own rendition (the default layout), named by every variant.
    let audio = master
        .alternatives
        .iter()
        .find(|a| a.media_type == m3u8_rs::AlternativeMediaType::Audio)
        .unwrap_or_else(|| panic!("no audio group in master.m3u8"));
    assert!(variants
        .iter()
        .all(|v| v.audio.as_ref() == Some(&audio.group_id)));
    let audio_text = fs::read(dir.join(audio.uri.as_deref().expect("audio URI"))).expect("audio");
    let audio_media = m3u8_rs::parse_media_playlist_res(&audio_text).expect("audio playlist");
    segment_counts.push(audio_media.segments.len());
    let first = dir.join(&audio_media.segments[0].uri);
    let probe = ffprobe(&first);
    let streams = probe["streams"].as_array().expect("ffprobe streams");
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "{probe}");
    decode_all(&first);
    assert!(
        segment_counts.windows(2).all(|w| w[0] == w[1]),
        "renditions differ in segment count: {segment_counts:?}"
    );
    assert!(dir.join("thumbnail.jpg").is_file());
    let manifest: Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    assert_no_staging(dir.parent().expect("output parent"));
    manifest
}

/// No `.name.staging-*` (or other dot) directory left beside outputs.
pub fn assert_no_staging(parent: &Path) {
    let leftovers: Vec<String> = fs::read_dir(parent)
        .expect("read output parent")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "left in {}: {leftovers:?}",
        parent.display()
    );
}

pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

/// Decodes a whole file with ffmpeg; any decode error fails.
pub fn decode_all(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "decoding {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The worker binary
// ---------------------------------------------------------------------------------------------

pub fn worker_bin() -> &'static str {
    env!("CARGO_BIN_EXE_video-worker")
}

/// A `video-worker run` child; killed on drop (its log is printed when the test failed).
pub struct Worker {
    child: Option<Child>,
    log: PathBuf,
    pub name: String,
}

/// Flags every test worker gets: fast pulls, small Nak delays, one encoder thread (tests run
/// in parallel on two cores), the test's root as the only allowed root.
pub fn base_args(url: &str, root: &Path) -> Vec<String> {
    [
        "run",
        "--nats-url",
        url,
        "--allow-root",
        &root.display().to_string(),
        "--pull-wait",
        "1",
        "--nak-delay",
        "0.2",
        "--nak-max-delay",
        "1",
        "--preset",
        "ultrafast",
        "--threads",
        "1",
        // Long jobs use LONG_PRESET (`slower`), past the default `--max-preset slow`.
        "--max-preset",
        "placebo",
        "--nats-connect-attempts",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Worker {
    pub fn spawn(name: &str, log_dir: &Path, args: &[String]) -> Worker {
        let log = log_dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).expect("worker log");
        let mut all = args.to_vec();
        all.extend(["--worker-name".into(), name.to_string()]);
        let child = Command::new(worker_bin())
            .args(&all)
            .env("VW_LOG", "info,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start video-worker run");
        Worker {
            child: Some(child),
            log,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({}, {sig})", self.pid());
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the log to contain `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "worker {} did not log {text:?} within {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("worker running");
        loop {
            if let Some(status) = child.try_wait().expect("wait worker") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker {} still running after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "----- log of worker {} -----\n{}",
                self.name,
                self.log()
            );
        }
    }
}

/// Runs `video-worker <args>` to completion: (exit status, stdout, stderr).
pub fn run_cli(args: &[String], timeout: Duration) -> (ExitStatus, String, String) {
    run_cli_env(args, &[], timeout)
}

/// `run_cli` with extra environment variables.
pub fn run_cli_env(
    args: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let mut child = Command::new(worker_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start video-worker");
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("video-worker {args:?} ran longer than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Broker state
// ---------------------------------------------------------------------------------------------

pub async fn jetstream(url: &str) -> (async_nats::Client, jetstream::Context) {
    let client = async_nats::connect(url)
        .await
        .expect("test client connects");
    let js = jetstream::new(client.clone());
    (client, js)
}

pub async fn consumer_info(js: &jetstream::Context, name: &str) -> consumer::Info {
    js.get_stream_no_info(STREAM)
        .await
        .expect("stream")
        .consumer_info(name)
        .await
        .expect("consumer info")
}

/// Every message of `stream` on `subject`, in order.
pub async fn messages(js: &jetstream::Context, stream: &str, subject: &str) -> Vec<StreamMessage> {
    let mut s = js.get_stream(stream).await.expect("stream");
    let state = s.info().await.expect("stream info").state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = s.get_raw_message(seq).await {
            if m.subject.as_str() == subject {
                out.push(m);
            }
        }
    }
    out
}

/// The JSON bodies of `messages`.
pub async fn events(js: &jetstream::Context, subject: &str) -> Vec<Value> {
    messages(js, STREAM, subject)
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("event JSON"))
        .collect()
}

/// Polls `check` until it returns Some, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes a job to `subject` with the given Msg-Id, awaiting the PubAck.
pub async fn publish_job(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    payload: Vec<u8>,
) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    js.publish_with_headers(subject.to_string(), headers, payload.into())
        .await
        .expect("publish")
        .await
        .expect("pub ack")
        .sequence
}

/// A job payload in the guide's shape, with small test settings.
pub fn job(video_id: &str, source: &Path, output: &Path, qualities: &[&str]) -> Value {
    serde_json::json!({
        "video_id": video_id,
        "source_path": source,
        "output_path": output,
        "user_id": "user-456",
        "quality": qualities,
        "thumbnail_time": "00:00:01",
        "segment_seconds": 2,
        "metadata": { "title": "test", "duration": 4 }
    })
}

/// A scratch root for a test: sources in `uploads/`, outputs in `hls/`, logs in `logs/`.
pub struct Scratch {
    pub dir: TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("vw-queue-")
            .tempdir()
            .expect("temp dir");
        for d in ["uploads", "hls", "logs"] {
            fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        Scratch { dir }
    }
    /// Canonical root (tempdir may sit behind a symlink).
    pub fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().expect("canonical root")
    }
    pub fn uploads(&self) -> PathBuf {
        self.root().join("uploads")
    }
    pub fn hls(&self) -> PathBuf {
        self.root().join("hls")
    }
    pub fn logs(&self) -> PathBuf {
        self.root().join("logs")
    }
}

/// A job that runs for several seconds on this class of machine (x264 `slower` on 16 s of
/// 640x360, two renditions, one thread: about 7 s alone, more when tests run in parallel):
/// long enough to outlive a 2 s ack wait, to be killed, or to see a server restart.
pub const LONG_SECONDS: f64 = 16.0;
pub const LONG_PRESET: &str = "slower";

// ---------------------------------------------------------------------------------------------
// Issue 7 (outcomes, hand-backs, credentials)
// ---------------------------------------------------------------------------------------------

impl Worker {
    /// `spawn` with extra environment variables (e.g. `NATS_URL` with credentials).
    pub fn spawn_env(name: &str, log_dir: &Path, args: &[String], env: &[(&str, &str)]) -> Worker {
        let log = log_dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).expect("worker log");
        let mut all = args.to_vec();
        all.extend(["--worker-name".into(), name.to_string()]);
        let child = Command::new(worker_bin())
            .args(&all)
            .envs(env.iter().copied())
            .env("VW_LOG", "info,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start video-worker run");
        Worker {
            child: Some(child),
            log,
            name: name.to_string(),
        }
    }
}

/// An HTTP endpoint that reads each request's head, reports it, and never answers (a hung
/// callback receiver). Returns the URL and a receiver of the request heads.
pub fn hanging_http_endpoint() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().expect("addr").port()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let _ = tx.send(head);
            held.push(stream);
        }
    });
    (url, rx)
}

/// Takes the next message of a durable consumer with this test's own client and never acks
/// it: a delivery used up by a "worker" that died.
pub async fn steal_delivery(js: &jetstream::Context, consumer: &str) -> jetstream::Message {
    use futures_util::StreamExt;
    let c: consumer::PullConsumer = js
        .get_stream_no_info(STREAM)
        .await
        .expect("stream")
        .get_consumer(consumer)
        .await
        .expect("consumer");
    let mut batch = c
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch");
    batch
        .next()
        .await
        .expect("a message to steal")
        .expect("message")
}

/// Number of messages stored in `stream`.
pub async fn stream_len(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .expect("stream")
        .info()
        .await
        .expect("stream info")
        .state
        .messages
}

/// Pids of the live children of `parent` (the worker's job processes), from /proc.
pub fn child_pids(parent: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            // /proc/<pid>/stat: "pid (comm) state ppid …"; comm may hold spaces.
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A JetStream cluster on loopback (tests/queue_cluster.rs)
// ---------------------------------------------------------------------------------------------

/// One node of a [`NatsCluster`]: its `server_name`, the server, and its monitoring port
/// (`/connz` tells which node a client is connected to).
pub struct ClusterNode {
    pub name: String,
    pub server: NatsServer,
    pub monitor_port: u16,
}

/// `size` nats-servers with JetStream, each with its own store, routed to each other on
/// loopback: the production shape of NATS. Every node is killed on drop.
pub struct NatsCluster {
    pub nodes: Vec<ClusterNode>,
}

impl NatsCluster {
    pub fn start(size: usize) -> NatsCluster {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let nodes = (0..size)
            .map(|i| {
                let name = format!("n{}", i + 1);
                let monitor_port = free_port();
                let routes: Vec<String> = route_ports
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, p)| format!("\"nats-route://127.0.0.1:{p}\""))
                    .collect();
                let config = format!(
                    "server_name: {name}\nhttp: \"127.0.0.1:{monitor_port}\"\n\
                     cluster {{\n  name: vw-test\n  listen: \"127.0.0.1:{}\"\n  \
                     routes: [{}]\n}}\n",
                    route_ports[i],
                    routes.join(", ")
                );
                ClusterNode {
                    name,
                    server: NatsServer::start_with(Some(&config)),
                    monitor_port,
                }
            })
            .collect();
        NatsCluster { nodes }
    }

    /// Every node's client URL, comma separated (what a deployment gives its clients).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.server.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&mut self, name: &str) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no cluster node {name}"))
    }

    /// The node that holds a client connection named `connection_name`, from each node's
    /// monitoring `/connz`.
    pub fn node_serving(&self, connection_name: &str) -> Option<String> {
        let needle = format!("\"name\": \"{connection_name}\"");
        self.nodes
            .iter()
            .find(|n| {
                http_get(n.monitor_port, "/connz")
                    .is_some_and(|body| body.replace("\":\"", "\": \"").contains(&needle))
            })
            .map(|n| n.name.clone())
    }

    /// Every node's log, for assertion messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("----- {} -----\n{}", n.name, n.server.log()))
            .collect()
    }
}

/// A plain HTTP/1.0 GET on loopback; the body, or None when the server is not answering.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}
