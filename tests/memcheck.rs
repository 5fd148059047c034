//! Valgrind memcheck over `video-worker transcode` of small fixtures (issue 7, "Proof"): no
//! memcheck error may be attributed to this crate's code. The work is done by
//! `scripts/valgrind.sh` (fixtures, valgrind runs, attribution of each error by its innermost
//! non-system frame); this test runs it on the binary under test, so `cargo test` and
//! `scripts/test.sh` count it like any other test.

use std::process::Command;

#[test]
fn memcheck_finds_no_error_in_our_code_when_transcoding_small_fixtures() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/valgrind.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_video-worker"))
        .output()
        .expect("run scripts/valgrind.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "memcheck found errors in our code, or a run failed (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    assert!(
        stdout.contains("memcheck: ") && stdout.contains(", 0 ours, 0 runs failed"),
        "the summary line is missing:\n{stdout}\n{stderr}"
    );
}
