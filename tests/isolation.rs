//! Process isolation (`video_worker::isolation`): each job's media work runs in a real child
//! process (`video-worker job-exec`), and every way that process can end comes back as a result
//! or a typed error: a signal death, a stall, the memory limit, a cancel, a broken child.
//! Fixtures are made with Debian's `ffmpeg` CLI; outputs are compared with an in-process run.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{assert_no_staging_left, h264_aac_mp4, scratch_dir};
use tokio::sync::oneshot;
use video_worker::isolation::{self, ChildCommand, ChildEvent, ChildLimits, MediaJob};
use video_worker::ladder::Quality;
use video_worker::media::{self, TranscodeRequest};
use video_worker::{ErrorKind, JobError};

fn job_exec() -> ChildCommand {
    ChildCommand {
        program: env!("CARGO_BIN_EXE_video-worker").into(),
        args: vec!["job-exec".into()],
    }
}

fn request(source: &Path, output: &Path, qualities: &[&str], preset: &str) -> TranscodeRequest {
    let mut req = TranscodeRequest::new(source, output).unwrap();
    req.qualities = Quality::parse_list(qualities).unwrap();
    req.preset = preset.into();
    // Some tests pick `veryslow` to make a job last: allow it (the default stops at `slow`).
    req.limits.slowest_preset = "placebo";
    req.threads = 2;
    req.segment_seconds = 2.0;
    req.thumbnail_time = 1.0;
    req
}

fn limits(stall_seconds: u64) -> ChildLimits {
    ChildLimits {
        stall_seconds,
        cancel_grace: Duration::from_secs(5),
        ..ChildLimits::default()
    }
}

fn staging_dirs(parent: &Path) -> Vec<String> {
    fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".staging-"))
        .collect()
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Field 5 of /proc/<pid>/stat (after the parenthesised command name).
fn process_group(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2)?.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// What a run through `isolation::run` did.
struct Run {
    result: Result<isolation::ChildResult, JobError>,
    pid: u32,
    ticks: usize,
    /// Names of the staging dirs seen beside the output at the first progress tick.
    staging_at_first_tick: Vec<String>,
    elapsed: Duration,
}

/// Runs `job` in a job process; at its first progress tick, `at_first_tick(pid)` is called
/// (to signal the child) and the staging beside `output` is recorded.
async fn run(
    job: &MediaJob,
    command: &ChildCommand,
    limits: &ChildLimits,
    output: &Path,
    at_first_tick: impl FnOnce(u32),
    cancel: impl std::future::Future<Output = ()>,
) -> Run {
    let mut pid = 0;
    let mut ticks = 0;
    let mut staging_at_first_tick = Vec::new();
    let mut at_first_tick = Some(at_first_tick);
    let started = Instant::now();
    // A watchdog that does not fire must fail the test, not hang it.
    let result = tokio::time::timeout(
        Duration::from_secs(90),
        isolation::run(
            job,
            command,
            limits,
            |event| match event {
                ChildEvent::Spawned { pid: p } => pid = p,
                ChildEvent::Ready => {}
                ChildEvent::Progress(_) => {
                    ticks += 1;
                    if let Some(f) = at_first_tick.take() {
                        staging_at_first_tick = staging_dirs(output.parent().unwrap());
                        f(pid);
                    }
                }
            },
            cancel,
        ),
    )
    .await
    .expect("isolation::run returned within 90 s");
    Run {
        result,
        pid,
        ticks,
        staging_at_first_tick,
        elapsed: started.elapsed(),
    }
}

/// A trigger for the first progress tick and the cancel future it resolves.
fn cancel_at_first_tick() -> (impl FnOnce(u32), impl std::future::Future<Output = ()>) {
    let (tx, rx) = oneshot::channel::<()>();
    (
        move |_| {
            let _ = tx.send(());
        },
        async move {
            let _ = rx.await;
        },
    )
}

fn probe_of(source: PathBuf) -> MediaJob {
    MediaJob::probe(&source, &media::Limits::default())
}

/// A stand-in for a broken job process: a shell script given a probe request.
async fn run_script(dir: &Path, script: &str, limits: &ChildLimits, cancel_on_tick: bool) -> Run {
    let job = probe_of(dir.join("x.mp4"));
    let command = ChildCommand {
        program: "/bin/sh".into(),
        args: vec![OsString::from("-c"), script.into()],
    };
    if cancel_on_tick {
        let (trigger, cancel) = cancel_at_first_tick();
        run(&job, &command, limits, dir, trigger, cancel).await
    } else {
        run(&job, &command, limits, dir, |_| {}, never()).await
    }
}

/// A progress line as the job process writes it.
const TICK: &str = r#"{"progress":{"stage":"transcoding","frames":1,"total_frames":null,"percent":1.0,"fps":1.0,"eta_seconds":null}}"#;

fn never() -> std::future::Pending<()> {
    std::future::pending()
}

fn expect_error(run: &Run, kind: ErrorKind) -> &JobError {
    match &run.result {
        Err(e) if e.kind == kind => e,
        other => panic!("expected a {kind} error, got {other:?}"),
    }
}

/// A 360p transcode of a source long enough that it is still running at its first tick, in
/// a fresh directory; returns the directory, the job's output path and the run.
async fn run_slow_transcode(
    preset: &str,
    limits: &ChildLimits,
    at_first_tick: impl FnOnce(u32),
    cancel: impl std::future::Future<Output = ()>,
) -> (tempfile::TempDir, PathBuf, Run) {
    let dir = scratch_dir();
    let source = h264_aac_mp4(dir.path(), "slow.mp4", 640, 360, 12.0);
    let out = dir.path().join("out");
    let job = MediaJob::transcode(&request(&source, &out, &["360p"], preset));
    let run = run(&job, &job_exec(), limits, &out, at_first_tick, cancel).await;
    (dir, out, run)
}

#[tokio::test]
async fn a_transcode_through_a_job_process_gives_the_same_output_as_in_process() {
    let dir = scratch_dir();
    let source = h264_aac_mp4(dir.path(), "src.mp4", 640, 360, 3.0);
    let in_process = dir.path().join("in-process");
    let isolated = dir.path().join("isolated");

    // One encoder thread per rendition: x264's rate control under VBV with frame threads
    // depends on thread timing, so only single-threaded encodes are byte-for-byte repeatable.
    let request = |out: &Path| {
        let mut req = request(&source, out, &["360p", "240p"], "ultrafast");
        req.threads = 1;
        req
    };
    let req = request(&in_process);
    let expected = media::transcode(&req, &AtomicBool::new(false), &|_| {}).unwrap();

    let req = request(&isolated);
    let job = MediaJob::transcode(&req);
    let run = run(&job, &job_exec(), &limits(30), &isolated, |_| {}, never()).await;
    let outcome = match run.result {
        Ok(isolation::ChildResult::Transcode(o)) => o,
        other => panic!("expected a transcode outcome, got {other:?}"),
    };
    assert!(run.ticks > 0, "no progress relayed");
    assert_eq!(outcome.output_dir, isolated);
    assert_eq!(outcome.frames_encoded, expected.frames_encoded);
    assert_eq!(outcome.has_audio, expected.has_audio);
    assert_eq!(
        serde_json::to_value(&outcome.renditions).unwrap(),
        serde_json::to_value(&expected.renditions).unwrap()
    );
    // Same encoder settings, same input: byte-identical segments and playlists.
    let mut names: Vec<_> = fs::read_dir(&in_process)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let mut isolated_names: Vec<_> = fs::read_dir(&isolated)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    isolated_names.sort();
    assert_eq!(names, isolated_names);
    for name in names
        .iter()
        .filter(|n| n.to_string_lossy() != "manifest.json")
    {
        assert!(
            fs::read(in_process.join(name)).unwrap() == fs::read(isolated.join(name)).unwrap(),
            "{name:?} differs"
        );
    }
    assert_no_staging_left(dir.path());
}

#[tokio::test]
async fn a_segfault_in_the_job_process_is_a_crashed_error_naming_sigsegv_and_leaves_no_staging() {
    let (dir, out, run) = run_slow_transcode(
        "medium",
        &limits(30),
        |pid| {
            // Rust's runtime catches the first SIGSEGV (to tell a stack overflow apart), puts
            // back the default action and returns: a real fault then faults again and kills,
            // but a sent signal is absorbed. The second one kills, like a real fault.
            signal(pid, "SEGV");
            std::thread::sleep(Duration::from_millis(50));
            signal(pid, "SEGV");
        },
        never(),
    )
    .await;
    let e = expect_error(&run, ErrorKind::Crashed);
    assert!(e.message.contains("SIGSEGV"), "{}", e.message);
    assert!(!e.kind.is_permanent());
    assert_eq!(
        run.staging_at_first_tick.len(),
        1,
        "the job had a staging dir when it was killed"
    );
    assert_no_staging_left(dir.path());
    assert!(!out.exists());
    assert!(!process_exists(run.pid), "child {} not reaped", run.pid);
}

#[tokio::test]
async fn a_job_process_without_progress_is_killed_as_stalled_after_the_stall_time() {
    let mut own_group = false;
    let (dir, _out, run) = run_slow_transcode(
        "medium",
        &limits(3),
        |pid| {
            own_group = process_group(pid) == Some(pid);
            signal(pid, "STOP")
        },
        never(),
    )
    .await;
    let e = expect_error(&run, ErrorKind::Stalled);
    // A Ctrl-C at the worker's terminal goes to its process group, not to the job's.
    assert!(
        own_group,
        "the job process is not in a process group of its own"
    );
    assert!(e.message.contains("no progress for 3 s"), "{}", e.message);
    assert!(
        run.elapsed >= Duration::from_secs(3) && run.elapsed < Duration::from_secs(20),
        "{:?}",
        run.elapsed
    );
    assert_eq!(run.staging_at_first_tick.len(), 1);
    assert_no_staging_left(dir.path());
    assert!(!process_exists(run.pid), "child {} not reaped", run.pid);
}

#[tokio::test]
async fn a_cancelled_job_process_stops_with_cancelled_and_cleans_its_staging() {
    let (trigger, cancel) = cancel_at_first_tick();
    let (dir, out, run) = run_slow_transcode("medium", &limits(30), trigger, cancel).await;
    let e = expect_error(&run, ErrorKind::Cancelled);
    // The child honoured SIGTERM itself (its own error), well within the grace period.
    assert!(!e.message.contains("did not stop"), "{}", e.message);
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
    assert_eq!(run.staging_at_first_tick.len(), 1);
    assert_no_staging_left(dir.path());
    assert!(!out.exists());
}

#[tokio::test]
async fn a_job_process_that_ignores_sigterm_is_killed_after_the_grace_and_reported_cancelled() {
    let dir = scratch_dir();
    let mut l = limits(30);
    l.cancel_grace = Duration::from_secs(1);
    let script = format!("trap '' TERM; echo '{TICK}'; exec sleep 30");
    let run = run_script(dir.path(), &script, &l, true).await;
    let e = expect_error(&run, ErrorKind::Cancelled);
    assert!(
        e.message.contains("did not stop within 1 s"),
        "{}",
        e.message
    );
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[tokio::test]
async fn a_1080p_transcode_over_its_memory_limit_is_an_out_of_memory_crash() {
    let dir = scratch_dir();
    let source = common::h264_mp4(dir.path(), "hd.mp4", 1920, 1080, 2.0);
    let out = dir.path().join("out");
    let job = MediaJob::transcode(&request(&source, &out, &["1080p"], "ultrafast"));
    let mut l = limits(30);
    l.memory_bytes = 64 << 20;
    let run = run(&job, &job_exec(), &l, &out, |_| {}, never()).await;
    let e = expect_error(&run, ErrorKind::Crashed);
    assert!(
        e.message.starts_with("out of memory") && e.message.contains("64 MiB"),
        "{}",
        e.message
    );
    assert_no_staging_left(dir.path());
    assert!(!out.exists());

    // The same job with the default limit succeeds: the limit was the cause.
    let run = run_default(&job, &out).await;
    assert!(run.is_ok(), "{run:?}");
}

async fn run_default(job: &MediaJob, out: &Path) -> Result<isolation::ChildResult, JobError> {
    run(job, &job_exec(), &limits(30), out, |_| {}, never())
        .await
        .result
}

#[tokio::test]
async fn garbage_on_the_job_processs_stdout_is_a_crash() {
    let dir = scratch_dir();
    let script = "echo 'Segmentation fault'; exec sleep 30";
    let run = run_script(dir.path(), script, &limits(30), false).await;
    let e = expect_error(&run, ErrorKind::Crashed);
    assert!(e.message.contains("Segmentation fault"), "{}", e.message);
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[tokio::test]
async fn a_job_process_that_exits_without_a_result_is_a_crash_with_its_status_and_last_words() {
    let dir = scratch_dir();
    let script = "read line; echo 'libfoo: assertion failed' >&2; exit 3";
    let run = run_script(dir.path(), script, &limits(30), false).await;
    let e = expect_error(&run, ErrorKind::Crashed);
    assert!(e.message.contains("status 3"), "{}", e.message);
    assert!(
        e.message.contains("libfoo: assertion failed"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_job_over_its_wall_time_is_killed_as_limit_exceeded() {
    let mut l = limits(30);
    l.wall_seconds = 2;
    let (dir, _out, run) = run_slow_transcode("veryslow", &l, |_| {}, never()).await;
    let e = expect_error(&run, ErrorKind::LimitExceeded);
    assert!(
        e.message.contains("wall-time limit of 2 s"),
        "{}",
        e.message
    );
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    assert_no_staging_left(dir.path());
}

#[tokio::test]
async fn probe_and_thumbnail_jobs_run_in_the_job_process() {
    let dir = scratch_dir();
    let source = h264_aac_mp4(dir.path(), "src.mp4", 320, 240, 2.0);
    let probe = probe_of(source.clone());
    let info = match run_default(&probe, dir.path()).await {
        Ok(isolation::ChildResult::Probe(v)) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(info["video"]["width"], 320);
    assert_eq!(info["video"]["height"], 240);

    let out = dir.path().join("thumbs");
    let thumb = MediaJob::thumbnail(&source, &out, 1.0, &media::Limits::default());
    let result = match run_default(&thumb, &out).await {
        Ok(isolation::ChildResult::Thumbnail(v)) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        result["path"].as_str().map(PathBuf::from),
        Some(out.join("thumbnail.jpg"))
    );
    assert!(fs::metadata(out.join("thumbnail.jpg")).unwrap().len() > 0);

    let missing = probe_of(dir.path().join("missing.mp4"));
    let e = run_default(&missing, dir.path()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::SourceNotFound, "{e}");
}

/// The review's C2 file (issue 7): a rotated MP4 whose H.264 stream shrinks to 4096x16
/// mid-stream. Before the filter graph is rebuilt on such changes, libavfilter reads out of
/// bounds and dies with SIGSEGV, which took the whole worker down. In a job process it ends
/// that one job; once the media code handles the change it gets a clean outcome instead.
#[tokio::test]
async fn a_source_that_segfaults_libavfilter_ends_one_job_not_the_worker() {
    let dir = scratch_dir();
    let d = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:size=480x360:rate=25:duration=0.4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-bsf:v",
        "h264_mp4toannexb",
        &d("s1.ts"),
    ]);
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=4096x16:rate=25:duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-output_ts_offset",
        "0.4",
        &d("s2.ts"),
    ]);
    let mut joined = fs::read(d("s1.ts")).unwrap();
    joined.extend(fs::read(d("s2.ts")).unwrap());
    fs::write(d("s.ts"), joined).unwrap();
    common::ffmpeg(&[
        "-i",
        &d("s.ts"),
        "-c",
        "copy",
        "-metadata:s:v",
        "rotate=90",
        &d("crash_rot.mp4"),
    ]);
    let out = dir.path().join("out");
    let mut req = request(Path::new(&d("crash_rot.mp4")), &out, &["144p"], "ultrafast");
    req.threads = 1;
    let result = run_default(&MediaJob::transcode(&req), &out).await;
    match &result {
        Err(e) if e.kind == ErrorKind::Crashed => {
            assert!(e.message.contains("SIGSEGV"), "{}", e.message)
        }
        Err(e) => assert!(
            matches!(e.kind, ErrorKind::InvalidMedia | ErrorKind::LimitExceeded),
            "{e}"
        ),
        Ok(_) => assert!(out.join("master.m3u8").is_file()),
    }
    assert_no_staging_left(dir.path());
}

/// The worker holds the job process's stdin open; if the worker dies without killing it,
/// end of file on stdin makes the job cancel itself and remove its staging.
#[test]
fn a_job_process_whose_worker_is_gone_cancels_and_removes_its_staging() {
    use std::io::{BufRead, BufReader, Write};
    let dir = scratch_dir();
    let source = h264_aac_mp4(dir.path(), "slow.mp4", 640, 360, 12.0);
    let out = dir.path().join("out");
    let req = request(&source, &out, &["360p"], "medium");
    let line = serde_json::json!({
        "job": MediaJob::transcode(&req),
        "memory_bytes": 0,
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_video-worker"))
        .arg("job-exec")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{line}").unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first_tick = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with(r#"{"progress""#));
    assert!(first_tick.is_some(), "no progress line");
    assert_eq!(staging_dirs(dir.path()).len(), 1);
    drop(stdin);
    let last = lines.map(|l| l.unwrap()).last().unwrap_or_default();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(last.contains(r#""kind":"cancelled""#), "last line: {last}");
    assert_no_staging_left(dir.path());
    assert!(!out.exists());
}

#[tokio::test]
async fn a_job_over_its_cpu_time_is_killed_as_limit_exceeded() {
    let mut l = limits(30);
    l.cpu_seconds = 1;
    let (dir, _out, run) = run_slow_transcode("veryslow", &l, |_| {}, never()).await;
    let e = expect_error(&run, ErrorKind::LimitExceeded);
    assert!(
        e.message.contains("CPU-time limit of 1 s") && e.message.contains("SIGXCPU"),
        "{}",
        e.message
    );
    assert_no_staging_left(dir.path());
}

/// User + system CPU time of this process's reaped children: what job processes cost,
/// whatever else the machine runs.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given; both live across the call.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The cost of a job process, measured (not a pass/fail test):
/// `cargo test --release --test isolation -- --ignored --nocapture job_process_cost`.
#[tokio::test]
#[ignore]
async fn job_process_cost() {
    const RUNS: usize = 20;
    let dir = scratch_dir();
    let source = h264_aac_mp4(dir.path(), "src.mp4", 640, 360, 4.0);
    media::init().unwrap();
    let limits_default = media::Limits::default();
    let mut in_process = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        media::probe(&source, &limits_default).unwrap();
        in_process.push(t.elapsed());
    }
    let (mut ready, mut isolated) = (Vec::new(), Vec::new());
    let cpu_before = children_cpu();
    for _ in 0..RUNS {
        let mut spawned = None;
        let mut ready_after = None;
        let t = Instant::now();
        let r = isolation::run(
            &probe_of(source.clone()),
            &job_exec(),
            &limits(30),
            |e| match e {
                ChildEvent::Spawned { .. } => spawned = Some(Instant::now()),
                ChildEvent::Ready => ready_after = spawned.map(|s| s.elapsed()),
                ChildEvent::Progress(_) => {}
            },
            never(),
        )
        .await;
        isolated.push(t.elapsed());
        assert!(r.is_ok(), "{r:?}");
        ready.push(ready_after.expect("a ready line"));
    }
    let cpu_per_job = (children_cpu() - cpu_before) / RUNS as u32;
    println!(
        "probe, median of {RUNS}: in-process {:.1} ms; job process {:.1} ms \
         (spawn → ready line {:.1} ms); CPU (user+sys) per job process {:.1} ms",
        median(in_process).as_secs_f64() * 1e3,
        median(isolated).as_secs_f64() * 1e3,
        median(ready).as_secs_f64() * 1e3,
        cpu_per_job.as_secs_f64() * 1e3,
    );

    const TRANSCODES: usize = 5;
    let (mut in_process, mut isolated) = (Vec::new(), Vec::new());
    for i in 0..TRANSCODES {
        let out = dir.path().join(format!("a{i}"));
        let req = request(&source, &out, &["360p", "240p"], "veryfast");
        let t = Instant::now();
        media::transcode(&req, &AtomicBool::new(false), &|_| {}).unwrap();
        in_process.push(t.elapsed());
        let out = dir.path().join(format!("b{i}"));
        let job = MediaJob::transcode(&request(&source, &out, &["360p", "240p"], "veryfast"));
        let t = Instant::now();
        run_default(&job, &out).await.unwrap();
        isolated.push(t.elapsed());
    }
    println!(
        "4 s 360p → 360p+240p veryfast transcode, median of {TRANSCODES}: in-process {:.0} ms; \
         job process {:.0} ms",
        median(in_process).as_secs_f64() * 1e3,
        median(isolated).as_secs_f64() * 1e3,
    );
}

#[tokio::test]
async fn a_job_process_that_closes_its_output_but_lingers_is_killed_as_a_crash() {
    let dir = scratch_dir();
    let mut l = limits(30);
    l.cancel_grace = Duration::from_secs(1);
    let run = run_script(dir.path(), "exec >&-; exec sleep 30", &l, false).await;
    let e = expect_error(&run, ErrorKind::Crashed);
    assert!(e.message.contains("did not exit"), "{}", e.message);
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

/// Set in the environment of the intermediate worker that `a_job_process_dies_with_its_worker`
/// starts (this test binary again, running only `worker_for_the_death_test`).
const DEATH_TEST_SOURCE: &str = "VW_ISOLATION_DEATH_TEST_SOURCE";

/// Not a test on its own: the stand-in worker of `a_job_process_dies_with_its_worker`. It runs
/// a slow transcode through `isolation::run`, prints the job process's pid at the first tick,
/// and waits to be killed.
#[tokio::test]
#[ignore]
async fn worker_for_the_death_test() {
    let Some(source) = std::env::var_os(DEATH_TEST_SOURCE) else {
        return;
    };
    let source = PathBuf::from(source);
    let out = source.with_file_name("out");
    let job = MediaJob::transcode(&request(&source, &out, &["360p"], "veryslow"));
    let at_first_tick = |pid: u32| println!("JOB PROCESS {pid}");
    let _ = run(
        &job,
        &job_exec(),
        &limits(300),
        &out,
        at_first_tick,
        never(),
    )
    .await;
}

fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waiting for a reaper is dead too.
        Ok(stat) => stat[stat.rfind(')').unwrap() + 1..]
            .trim_start()
            .starts_with('Z'),
    }
}

/// A worker killed with SIGKILL cannot stop its job processes: PR_SET_PDEATHSIG does.
#[test]
fn a_job_process_dies_with_its_worker() {
    use std::io::{BufRead, BufReader};
    let dir = scratch_dir();
    let source = h264_aac_mp4(dir.path(), "slow.mp4", 640, 360, 12.0);
    let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "worker_for_the_death_test",
            "--nocapture",
        ])
        .env(DEATH_TEST_SOURCE, &source)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let job_pid: u32 = BufReader::new(worker.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("JOB PROCESS ").map(|p| p.parse().unwrap()))
        .expect("the stand-in worker reports its job process");
    assert!(!is_dead(job_pid));
    worker.kill().unwrap();
    worker.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_dead(job_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        is_dead(job_pid),
        "job process {job_pid} outlived its worker"
    );
}

/// Rust aborts (SIGABRT) on a refused allocation after printing one line; under a memory limit
/// that line is what tells an out-of-memory end from any other abort.
#[tokio::test]
async fn an_abort_after_a_refused_allocation_is_an_out_of_memory_crash() {
    let dir = scratch_dir();
    let script = "read line; echo 'memory allocation of 1048576 bytes failed' >&2; kill -ABRT $$";
    let run = run_script(dir.path(), script, &limits(30), false).await;
    let e = expect_error(&run, ErrorKind::Crashed);
    assert!(
        e.message.starts_with("out of memory") && e.message.contains("SIGABRT"),
        "{}",
        e.message
    );

    // The same abort without that line is a plain crash.
    let script = "read line; kill -ABRT $$";
    let run = run_script(dir.path(), script, &limits(30), false).await;
    let e = expect_error(&run, ErrorKind::Crashed);
    assert!(
        !e.message.contains("out of memory") && e.message.contains("SIGABRT"),
        "{}",
        e.message
    );
}
