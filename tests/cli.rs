//! The command line's own outputs: shell completions and man pages generated from its clap
//! definition, so they cannot drift from the flags; and `config`, the effective configuration
//! (flags > environment > file > defaults), which never shows a secret.

use std::path::Path;
use std::process::{Command, Output};

/// The subcommands a user or a completion script must see (`job-exec` is internal and hidden).
const SUBCOMMANDS: [&str; 8] = [
    "transcode",
    "run",
    "submit",
    "streams",
    "config",
    "bench",
    "completions",
    "man",
];

fn video_worker(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_video-worker"))
        .args(args)
        .output()
        .expect("running video-worker");
    assert!(
        out.status.success(),
        "video-worker {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(args: &[&str]) -> String {
    String::from_utf8(video_worker(args).stdout).expect("UTF-8 output")
}

#[test]
fn completions_for_each_shell_name_every_subcommand_and_the_run_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&["completions", shell]);
        assert!(script.len() > 500, "{shell}: only {} bytes", script.len());
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack `{sub}`");
        }
        // The run command's flags are completed too, not only the command names.
        assert!(script.contains("allow-root"), "{shell}: no --allow-root");
    }
}

#[test]
fn completion_script_for_bash_is_valid_bash() {
    let script = stdout(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("video-worker.bash");
    std::fs::write(&path, script).unwrap();
    // `bash -n` parses without running: a syntax error in the generated script fails here.
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn man_page_is_roff_naming_every_subcommand() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH video-worker 1"), "no title header");
    assert!(page.contains("SUBCOMMANDS"), "no SUBCOMMANDS section");
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("video\\-worker\\-{sub}(1)")),
            "man page does not name video-worker-{sub}(1)"
        );
    }
    assert!(
        !page.contains("job\\-exec"),
        "man page names the internal job-exec"
    );
}

#[test]
fn man_dir_writes_one_page_per_command_with_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    video_worker(&["man", "--dir", dir.path().to_str().unwrap()]);
    let run = std::fs::read_to_string(dir.path().join("video-worker-run.1")).unwrap();
    assert!(run.contains(".TH video-worker-run 1"), "{run:.300}");
    assert!(
        run.contains("\\-\\-allow\\-root"),
        "run's page lacks --allow-root"
    );
    for sub in SUBCOMMANDS {
        assert!(
            dir.path().join(format!("video-worker-{sub}.1")).is_file(),
            "no page for {sub}"
        );
    }
}

/// `video-worker config` with exactly this environment (nothing inherited, so the machine's
/// own NATS_URL or VW_* cannot leak in), parsed back.
/// Returns stdout and stderr together (for the secret checks), and stdout parsed.
fn effective(flags: &[&str], env: &[(&str, &str)], file: Option<&Path>) -> (String, toml::Table) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_video-worker"));
    cmd.env_clear()
        .envs(env.iter().copied())
        .arg("config")
        .args(flags);
    if let Some(file) = file {
        cmd.arg("--config").arg(file);
    }
    let out = cmd.output().expect("running video-worker config");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "config {flags:?} {env:?} failed: {stderr}"
    );
    let table = stdout
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("config printed no TOML ({e}):\n{stdout}"));
    (format!("{stdout}{stderr}"), table)
}

/// The value of the highest layer that gives one.
fn pick<T>(
    (in_file, in_env, in_flag): (bool, bool, bool),
    flag: T,
    env: T,
    file: T,
    default: T,
) -> T {
    if in_flag {
        flag
    } else if in_env {
        env
    } else if in_file {
        file
    } else {
        default
    }
}

#[test]
fn config_precedence_is_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.toml");
    std::fs::write(
        &file,
        "grace = 11\njobs = 2\n[nats]\nurls = [\"nats://file:4222\"]\n[topology]\nreplicas = 2\n",
    )
    .unwrap();
    // Every combination of (file, environment, flag) giving a value: the highest one wins.
    for in_file in [false, true] {
        for in_env in [false, true] {
            for in_flag in [false, true] {
                let mut flags: Vec<&str> = Vec::new();
                let mut env: Vec<(&str, &str)> = Vec::new();
                if in_env {
                    env.extend([
                        ("VW_GRACE", "22"),
                        ("VW_JOBS", "3"),
                        ("NATS_URL", "nats://env:4222"),
                        ("VW_REPLICAS", "3"),
                    ]);
                }
                if in_flag {
                    flags.extend([
                        "--grace",
                        "33",
                        "--jobs",
                        "4",
                        "--nats-url",
                        "nats://flag:4222",
                        "--replicas",
                        "4",
                    ]);
                }
                let (_, c) = effective(&flags, &env, in_file.then_some(file.as_path()));
                let row = (in_file, in_env, in_flag);
                assert_eq!(
                    c["grace"].as_float(),
                    Some(pick(row, 33.0, 22.0, 11.0, 30.0)),
                    "{row:?}"
                );
                assert_eq!(
                    c["jobs"].as_integer(),
                    Some(pick(row, 4, 3, 2, 1)),
                    "{row:?}"
                );
                assert_eq!(
                    c["nats"]["urls"][0].as_str(),
                    Some(pick(
                        row,
                        "nats://flag:4222",
                        "nats://env:4222",
                        "nats://file:4222",
                        "nats://127.0.0.1:4222"
                    )),
                    "{row:?}"
                );
                assert_eq!(
                    c["topology"]["replicas"].as_integer(),
                    Some(pick(row, 4, 3, 2, 1)),
                    "{row:?}"
                );
            }
        }
    }
}

#[test]
fn config_file_comes_from_vw_config_too_and_its_output_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.toml");
    std::fs::write(&file, "preset = \"fast\"\nkinds = [\"thumbnail\"]\n").unwrap();
    let path = file.to_str().unwrap();
    let (_, from_env) = effective(&[], &[("VW_CONFIG", path)], None);
    assert_eq!(from_env["preset"].as_str(), Some("fast"));
    assert_eq!(from_env["kinds"].as_array().unwrap().len(), 1);
    // What `config` prints is a configuration file that gives the same configuration.
    let (printed, first) = effective(&[], &[], Some(&file));
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, printed).unwrap();
    let (_, second) = effective(&[], &[], Some(&again));
    assert_eq!(first, second);
}

#[test]
fn config_refuses_a_file_with_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.toml");
    std::fs::write(&file, "[nats]\nurl = \"nats://typo:4222\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_video-worker"))
        .env_clear()
        .args(["config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `url`"), "{stderr}");
}

#[test]
fn config_never_prints_a_secret_from_a_flag_the_environment_the_file_or_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("worker.toml");
    std::fs::write(
        &file,
        "[nats]\nuser = \"alice\"\npassword = \"file-pass-1\"\ntoken = \"file-token-2\"\n\
         nkey_seed = \"SUFILESEED3\"\nurls = [\"nats://bob:file-url-pass-4@h1:4222\"]\n\
         [storage]\ns3_secret_access_key = \"file-aws-secret-6\"\n\
         s3_session_token = \"file-aws-session-7\"\n",
    )
    .unwrap();
    let secrets_of = |prefix: &str| {
        [
            format!("{prefix}-pass-1"),
            format!("{prefix}-token-2"),
            format!("SU{}SEED3", prefix.to_uppercase()),
            format!("{prefix}-url-pass-4"),
            format!("{prefix}-url-token-5"),
            format!("{prefix}-aws-secret-6"),
            format!("{prefix}-aws-session-7"),
        ]
    };
    let env_secrets = secrets_of("env");
    let flag_secrets = secrets_of("flag");
    let env_url = format!(
        "nats://carol:{}@h2:4222,nats://{}@h3:4222",
        env_secrets[3], env_secrets[4]
    );
    let flag_url = format!(
        "nats://dave:{}@h4:4222,nats://{}@h5:4222",
        flag_secrets[3], flag_secrets[4]
    );
    let env: [(&str, &str); 7] = [
        ("AWS_SECRET_ACCESS_KEY", env_secrets[5].as_str()),
        ("AWS_SESSION_TOKEN", env_secrets[6].as_str()),
        ("NATS_USER", "erin"),
        ("NATS_PASSWORD", env_secrets[0].as_str()),
        ("NATS_TOKEN", env_secrets[1].as_str()),
        ("NATS_NKEY_SEED", env_secrets[2].as_str()),
        ("NATS_URL", env_url.as_str()),
    ];
    let flags: [&str; 12] = [
        "--s3-secret-access-key",
        flag_secrets[5].as_str(),
        "--s3-session-token",
        flag_secrets[6].as_str(),
        "--nats-password",
        flag_secrets[0].as_str(),
        "--nats-token",
        flag_secrets[1].as_str(),
        "--nats-nkey-seed",
        flag_secrets[2].as_str(),
        "--nats-url",
        flag_url.as_str(),
    ];
    let all: Vec<String> = secrets_of("file")
        .into_iter()
        .chain(env_secrets.iter().cloned())
        .chain(flag_secrets.iter().cloned())
        .collect();
    // Each layer winning in turn: file alone, environment over it, flags over both.
    let (no_flags, no_env): (&[&str], &[(&str, &str)]) = (&[], &[]);
    for (flags, env) in [
        (no_flags, no_env),
        (no_flags, &env[..]),
        (&flags[..], &env[..]),
    ] {
        let (output, config) = effective(flags, env, Some(&file));
        for secret in &all {
            assert!(
                !output.contains(secret.as_str()),
                "`config` printed {secret}:\n{output}"
            );
        }
        let nats = &config["nats"];
        for key in ["password", "token", "nkey_seed"] {
            assert_eq!(nats[key].as_str(), Some("<redacted>"), "{key}: {output}");
        }
        for key in ["s3_secret_access_key", "s3_session_token"] {
            assert_eq!(
                config["storage"][key].as_str(),
                Some("<redacted>"),
                "{key}: {output}"
            );
        }
        let urls = nats["urls"].as_array().unwrap();
        assert!(
            urls.iter().all(|u| u.as_str().unwrap().contains("***@h")),
            "{urls:?}"
        );
    }
}
