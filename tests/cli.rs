//! The command line's own outputs: shell completions and man pages generated from its clap
//! definition, so they cannot drift from the flags.

use std::process::{Command, Output};

/// The subcommands a user or a completion script must see (`job-exec` is internal and hidden).
const SUBCOMMANDS: [&str; 7] = [
    "transcode",
    "run",
    "submit",
    "streams",
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
fn completions_for_each_shell_name_every_subcommand_and_not_the_internal_one() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&["completions", shell]);
        assert!(script.len() > 500, "{shell}: only {} bytes", script.len());
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} completions lack `{sub}`");
        }
        assert!(
            !script.contains("job-exec"),
            "{shell} completions offer the internal job-exec"
        );
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
    assert!(!page.contains("job\\-exec"), "man page names the internal job-exec");
}

#[test]
fn man_dir_writes_one_page_per_command_with_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    video_worker(&["man", "--dir", dir.path().to_str().unwrap()]);
    let run = std::fs::read_to_string(dir.path().join("video-worker-run.1")).unwrap();
    assert!(run.contains(".TH video-worker-run 1"), "{run:.300}");
    assert!(run.contains("\\-\\-allow\\-root"), "run's page lacks --allow-root");
    for sub in SUBCOMMANDS {
        assert!(
            dir.path().join(format!("video-worker-{sub}.1")).is_file(),
            "no page for {sub}"
        );
    }
}
