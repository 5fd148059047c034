//! Test 10: a server with `authorization { user, password }` (the platform guide's setup)
//! accepts the right credentials, from flags or environment, and refuses wrong ones with a
//! clear error and without retrying.

mod nats;

use std::time::{Duration, Instant};

use nats::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);
const AUTH: &str = "authorization {\n  user: vw\n  password: \"s3cret-pw\"\n}\n";

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_auth() {
    let server = NatsServer::start_with(Some(AUTH));
    let url = server.url();
    let scratch = Scratch::new();
    let source = scratch.uploads().join("in.mp4");
    make_video(&source, 640, 360, 2.0);

    // Right credentials by flag: the worker serves.
    let mut args = base_args(&url, &scratch.root());
    args.extend(s(&["--nats-user", "vw", "--nats-password", "s3cret-pw"]));
    let worker = Worker::spawn("w1", &scratch.logs(), &args);
    worker.wait_log("serving", T);

    // Right credentials from the environment: submit --wait succeeds.
    let output = scratch.hls().join("auth-1");
    let (status, stdout, stderr) = run_cli_env(
        &s(&[
            "submit",
            "--nats-url",
            &url,
            "--video-id",
            "auth-1",
            "--source",
            &source.display().to_string(),
            "--output",
            &output.display().to_string(),
            "--quality",
            "144p",
            "--segment-seconds",
            "2",
            "--wait",
            "--timeout",
            "60",
            "--json",
        ]),
        &[("NATS_USER", "vw"), ("NATS_PASSWORD", "s3cret-pw")],
        T,
    );
    assert!(status.success(), "{stdout}\n{stderr}\n{}", worker.log());
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["processed"]["video_id"], "auth-1");
    assert_valid_output(&output, &["144p"]);

    // Wrong password, and no credentials at all: refused at once with a clear message.
    for (what, extra) in [
        (
            "wrong password",
            s(&["--nats-user", "vw", "--nats-password", "wrong"]),
        ),
        ("no credentials", vec![]),
    ] {
        let mut a = s(&[
            "streams",
            "--nats-url",
            &url,
            "--nats-connect-attempts",
            "5",
        ]);
        a.extend(extra);
        let started = Instant::now();
        let (status, stdout, stderr) = run_cli(&a, T);
        assert_eq!(status.code(), Some(1), "{what}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("authorization violation") && stderr.contains("--nats-password"),
            "{what}: unclear error: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: refused credentials must not be retried ({:?})",
            started.elapsed()
        );
    }

    // A worker with the wrong password exits 1 rather than running without a connection.
    let mut bad = base_args(&url, &scratch.root());
    bad.extend(s(&["--nats-user", "vw", "--nats-password", "nope"]));
    let mut w2 = Worker::spawn("w2", &scratch.logs(), &bad);
    let status = w2.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    assert!(w2.log().contains("authorization violation"), "{}", w2.log());
    drop(worker);
}
