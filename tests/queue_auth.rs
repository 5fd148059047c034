//! Test 10: authentication and TLS against a real nats-server, one per test:
//! - `authorization { user, password }` (the platform guide's setup),
//! - `authorization { token }`,
//! - `authorization { users = [ { nkey } ] }` with a user key made at test time,
//! - `tls { cert_file, key_file }` (server verified with --nats-ca) and the same with
//!   `ca_file` + `verify: true` (mutual TLS), certificates made at test time with `openssl`.
//!
//! Each accepts the right credentials, from flags (worker) or environment (`submit --wait`
//! of a small job), and refuses wrong ones with a clear error and without retrying.

mod nats;

use std::path::{Path, PathBuf};
use std::process::Command;
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

/// C11: `NATS_URL=nats://user:password@host`, the form every NATS client accepts, connects
/// (async-nats alone ignores URL userinfo), and the password shows up neither in the log
/// nor in `run --help` nor in a connect error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_nats_url_connect_and_are_never_printed() {
    let server = NatsServer::start_with(Some(AUTH));
    let scratch = Scratch::new();
    let secret_url = format!("nats://vw:s3cret-pw@127.0.0.1:{}", server.port);
    let mut args = base_args(&secret_url, &scratch.root());
    // The URL comes from the environment, as in a compose file.
    let at = args.iter().position(|a| a == "--nats-url").unwrap();
    args.drain(at..at + 2);
    args.extend(s(&["--kinds", "metadata"]));
    let mut w = Worker::spawn_env("w1", &scratch.logs(), &args, &[("NATS_URL", &secret_url)]);
    w.wait_log("serving", T);
    let (_c, js) = async {
        let client =
            async_nats::ConnectOptions::with_user_and_password("vw".into(), "s3cret-pw".into())
                .connect(server.url())
                .await
                .unwrap();
        (client.clone(), async_nats::jetstream::new(client))
    }
    .await;
    consumer_info(&js, "VIDEO_METADATA").await;
    w.signal(libc::SIGTERM);
    assert!(w.wait(T).success());
    assert!(w.log().contains("connected to NATS"), "{}", w.log());
    assert!(!w.log().contains("s3cret-pw"), "{}", w.log());

    let (status, stdout, stderr) =
        run_cli_env(&s(&["run", "--help"]), &[("NATS_URL", &secret_url)], T);
    assert!(status.success());
    assert!(
        !stdout.contains("s3cret-pw") && !stderr.contains("s3cret-pw"),
        "{stdout}"
    );

    // A connect error names the server without its credentials.
    let closed = format!("nats://vw:s3cret-pw@127.0.0.1:{}", server.port + 1);
    let (status, stdout, stderr) = run_cli_env(
        &s(&["streams", "--nats-connect-attempts", "1"]),
        &[("NATS_URL", &closed)],
        T,
    );
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(
        !stderr.contains("s3cret-pw") && !stdout.contains("s3cret-pw"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers of the token, nkey and TLS tests
// ---------------------------------------------------------------------------------------------

/// A small source (320x180, 2 s) in the scratch uploads.
fn small_source(scratch: &Scratch) -> PathBuf {
    let source = scratch.uploads().join("in.mp4");
    make_video(&source, 320, 180, 2.0);
    source
}

/// `submit --wait` of a 144p job through `url` with `extra` flags and `env`: must succeed,
/// report `video.processed` for `id`, and leave a valid output.
fn submit_ok(
    url: &str,
    scratch: &Scratch,
    source: &Path,
    id: &str,
    extra: &[String],
    env: &[(&str, &str)],
    worker: &Worker,
) {
    let output = scratch.hls().join(id);
    let mut args = s(&[
        "submit",
        "--nats-url",
        url,
        "--video-id",
        id,
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
    ]);
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = run_cli_env(&args, env, T);
    assert!(status.success(), "{stdout}\n{stderr}\n{}", worker.log());
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["processed"]["video_id"], id);
    assert_valid_output(&output, &["144p"]);
}

/// `streams` with `extra` flags and `env` is refused: exit 1 in well under the connect
/// retries' backoff (5 attempts would take 15 s), stderr naming every one of `words`.
fn assert_refused(what: &str, url: &str, extra: &[String], env: &[(&str, &str)], words: &[&str]) {
    let mut args = s(&["streams", "--nats-url", url, "--nats-connect-attempts", "5"]);
    args.extend_from_slice(extra);
    let started = Instant::now();
    let (status, stdout, stderr) = run_cli_env(&args, env, T);
    assert_eq!(status.code(), Some(1), "{what}: {stdout}\n{stderr}");
    for w in words {
        assert!(
            stderr.contains(w),
            "{what}: no {w:?} in the error: {stderr}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{what}: a refusal must not be retried ({:?}): {stderr}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Token
// ---------------------------------------------------------------------------------------------

#[test]
fn token_auth() {
    let server = NatsServer::start_with(Some("authorization {\n  token: \"t0k-3n_secret\"\n}\n"));
    let url = server.url();
    let scratch = Scratch::new();
    let source = small_source(&scratch);

    // The worker with the token by flag, submit with it from the environment.
    let mut args = base_args(&url, &scratch.root());
    args.extend(s(&["--nats-token", "t0k-3n_secret"]));
    let worker = Worker::spawn("w-token", &scratch.logs(), &args);
    worker.wait_log("serving", T);
    submit_ok(
        &url,
        &scratch,
        &source,
        "token-1",
        &[],
        &[("NATS_TOKEN", "t0k-3n_secret")],
        &worker,
    );

    let words = ["authorization violation", "--nats-token"];
    assert_refused(
        "wrong token (flag)",
        &url,
        &s(&["--nats-token", "wrong"]),
        &[],
        &words,
    );
    assert_refused(
        "wrong token (env)",
        &url,
        &[],
        &[("NATS_TOKEN", "t0k-3n_secreT")],
        &words,
    );
    assert_refused("no token", &url, &[], &[], &words);
    drop(worker);
}

// ---------------------------------------------------------------------------------------------
// NKey
// ---------------------------------------------------------------------------------------------

#[test]
fn nkey_auth() {
    let user = nkeys::KeyPair::new_user();
    let other = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let config = format!(
        "authorization {{\n  users = [\n    {{ nkey: \"{}\" }}\n  ]\n}}\n",
        user.public_key()
    );
    let server = NatsServer::start_with(Some(&config));
    let url = server.url();
    let scratch = Scratch::new();
    let source = small_source(&scratch);

    // The worker with the seed by flag, submit with it from the environment.
    let mut args = base_args(&url, &scratch.root());
    args.extend(s(&["--nats-nkey-seed", &seed]));
    let worker = Worker::spawn("w-nkey", &scratch.logs(), &args);
    worker.wait_log("serving", T);
    assert!(!worker.log().contains(&seed), "the seed was logged");
    submit_ok(
        &url,
        &scratch,
        &source,
        "nkey-1",
        &[],
        &[("NATS_NKEY_SEED", &seed)],
        &worker,
    );

    // The seed of a key the server does not know, and no seed: refused.
    let words = ["authorization violation", "--nats-nkey-seed"];
    let other_seed = other.seed().unwrap();
    assert_refused(
        "seed of another key",
        &url,
        &s(&["--nats-nkey-seed", &other_seed]),
        &[],
        &words,
    );
    assert_refused(
        "seed of another key (env)",
        &url,
        &[],
        &[("NATS_NKEY_SEED", &other_seed)],
        &words,
    );
    assert_refused("no seed", &url, &[], &[], &words);
    // Not a seed at all (a public key): the client cannot sign; said so, not retried.
    assert_refused(
        "public key instead of seed",
        &url,
        &s(&["--nats-nkey-seed", &user.public_key()]),
        &[],
        &["--nats-nkey-seed"],
    );
    drop(worker);
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// Certificates made with the `openssl` CLI (EC P-256): a CA, a server certificate for
/// 127.0.0.1/localhost and a client certificate signed by it; a second, unrelated CA with a
/// client certificate of its own.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("vw-pki-")
            .tempdir()
            .expect("temp dir");
        let pki = Pki { dir };
        pki.ca("ca", "vw test CA");
        pki.ca("rogue-ca", "vw rogue CA");
        pki.leaf(
            "server",
            "ca",
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        pki.leaf("client", "ca", "vw-client", "extendedKeyUsage=clientAuth\n");
        pki.leaf(
            "rogue-client",
            "rogue-ca",
            "vw-client",
            "extendedKeyUsage=clientAuth\n",
        );
        pki
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn new_key(&self, name: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ]);
    }

    fn ca(&self, name: &str, cn: &str) {
        self.new_key(name);
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
        ]);
    }

    fn leaf(&self, name: &str, ca: &str, cn: &str, extensions: &str) {
        self.new_key(name);
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        std::fs::write(self.dir.path().join(format!("{name}.ext")), extensions).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// A server `tls` block; with `verify`, client certificates signed by our CA are required.
    fn server_config(&self, verify: bool) -> String {
        let mut c = format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
            self.path("server.pem"),
            self.path("server.key")
        );
        if verify {
            c += &format!("  ca_file: \"{}\"\n  verify: true\n", self.path("ca.pem"));
        }
        c + "}\n"
    }
}

/// Server TLS only: the client verifies the server with --nats-ca (`tls://` URL, or a
/// `nats://` URL upgraded because the server requires TLS); without our CA, or with another
/// one, the connection is refused with a TLS error; --nats-require-tls refuses a plain server.
#[test]
fn tls_server_verified_with_ca() {
    let pki = Pki::new();
    let server = NatsServer::start_with(Some(&pki.server_config(false)));
    let nats_url = server.url();
    let tls_url = format!("tls://127.0.0.1:{}", server.port);
    let scratch = Scratch::new();
    let source = small_source(&scratch);
    let ca = pki.path("ca.pem");

    // Worker: tls:// and --nats-ca; submit: nats:// and NATS_CA.
    let mut args = base_args(&tls_url, &scratch.root());
    args.extend(s(&["--nats-ca", &ca]));
    let worker = Worker::spawn("w-tls", &scratch.logs(), &args);
    worker.wait_log("serving", T);
    submit_ok(
        &nats_url,
        &scratch,
        &source,
        "tls-1",
        &[],
        &[("NATS_CA", &ca)],
        &worker,
    );

    let words = ["TLS failed", "--nats-ca"];
    assert_refused("no CA (nats://)", &nats_url, &[], &[], &words);
    assert_refused("no CA (tls://)", &tls_url, &[], &[], &words);
    assert_refused(
        "another CA",
        &tls_url,
        &s(&["--nats-ca", &pki.path("rogue-ca.pem")]),
        &[],
        &words,
    );

    // Require TLS (flag, env) against a server without TLS.
    let plain = NatsServer::start();
    assert_refused(
        "--nats-require-tls, plain server",
        &plain.url(),
        &s(&["--nats-require-tls", "--nats-ca", &ca]),
        &[],
        &["TLS failed"],
    );
    assert_refused(
        "NATS_REQUIRE_TLS, plain server",
        &plain.url(),
        &[],
        &[("NATS_REQUIRE_TLS", "true"), ("NATS_CA", &ca)],
        &["TLS failed"],
    );
    drop(worker);
}

/// Mutual TLS (`verify: true`): the worker (flags) and submit (environment) present a client
/// certificate of our CA and are served; no client certificate, or one of another CA, is
/// refused with a TLS error, and a worker without one exits 1.
#[test]
fn mutual_tls() {
    let pki = Pki::new();
    let server = NatsServer::start_with(Some(&pki.server_config(true)));
    let url = server.url();
    let scratch = Scratch::new();
    let source = small_source(&scratch);
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );

    let mut args = base_args(&url, &scratch.root());
    args.extend(s(&[
        "--nats-require-tls",
        "--nats-ca",
        &ca,
        "--nats-cert",
        &cert,
        "--nats-key",
        &key,
    ]));
    let worker = Worker::spawn("w-mtls", &scratch.logs(), &args);
    worker.wait_log("serving", T);
    submit_ok(
        &url,
        &scratch,
        &source,
        "mtls-1",
        &[],
        &[("NATS_CA", &ca), ("NATS_CERT", &cert), ("NATS_KEY", &key)],
        &worker,
    );

    let words = ["TLS failed", "--nats-cert"];
    assert_refused(
        "no client certificate",
        &url,
        &s(&["--nats-ca", &ca]),
        &[],
        &words,
    );
    assert_refused(
        "client certificate of another CA",
        &url,
        &s(&[
            "--nats-ca",
            &ca,
            "--nats-cert",
            &pki.path("rogue-client.pem"),
            "--nats-key",
            &pki.path("rogue-client.key"),
        ]),
        &[],
        &words,
    );

    // A worker without a client certificate exits 1 rather than running unconnected.
    let mut bad = base_args(&url, &scratch.root());
    bad.extend(s(&["--nats-ca", &ca]));
    let mut w2 = Worker::spawn("w-mtls-nocert", &scratch.logs(), &bad);
    let status = w2.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", w2.log());
    assert!(w2.log().contains("TLS failed"), "{}", w2.log());
    drop(worker);
}
