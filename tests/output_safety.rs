//! Nothing outside a job's own output is ever removed or replaced, and what is published is
//! durable and written by one job at a time (issue 7, sections 1 and 5; review items C1, C16,
//! S1, S4, S5, S8). Through the real binary: `transcode` on the command line and `run` fed by a
//! real nats-server.

mod common;
mod nats;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use common::{
    age_by, assert_refused_output, assert_valid_hls, h264_aac_mp4, run_worker, scratch_dir,
    snapshot, traced_calls, transcode, transcode_ok, Expect,
};

/// Small and fast, with the default preset (the output checks expect its High profile).
const QUICK: &[&str] = &[
    "--quality",
    "144p",
    "--threads",
    "1",
    "--segment-seconds",
    "2",
    "--thumbnail-time",
    "0.5",
];

/// The review's C1 repro: a job whose `output_path` is the uploads folder deleted the source,
/// another user's video and a note. Now that job, one naming the folder of every output, and
/// one naming another video's output are refused as `invalid_request`, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_may_not_replace_the_uploads_folder_the_outputs_folder_or_another_videos_output() {
    let server = nats::NatsServer::start();
    let s = nats::Scratch::new();
    let source = s.uploads().join("a.mp4");
    nats::make_video(&source, 320, 240, 2.0);
    fs::copy(&source, s.uploads().join("other-users-video.mp4")).unwrap();
    fs::write(s.uploads().join("notes.txt"), "important").unwrap();

    let worker = nats::Worker::spawn("w1", &s.logs(), &nats::base_args(&server.url(), &s.root()));
    worker.wait_log("serving", Duration::from_secs(60));
    let (_c, js) = nats::jetstream(&server.url()).await;
    let other = s.hls().join("vid-other");
    let good = nats::job("vid-other", &source, &other, &["144p"]);
    nats::publish_job(&js, "video.process", "vid-other", good.to_string().into()).await;
    nats::eventually(
        Duration::from_secs(90),
        "the first video's output",
        || async { (!nats::events(&js, "video.processed").await.is_empty()).then_some(()) },
    )
    .await;
    nats::assert_valid_output(&other, &["144p"]);

    let uploads_before = snapshot(&s.uploads());
    let hls_before = snapshot(&s.hls());
    let cases = [
        ("vid-a", s.uploads()),
        ("vid-b", s.hls()),
        ("vid-c", other.clone()),
    ];
    for (id, output) in &cases {
        let payload = nats::job(id, &source, output, &["144p"]);
        nats::publish_job(&js, "video.process", id, payload.to_string().into()).await;
    }
    let failed = nats::eventually(Duration::from_secs(60), "three failed events", || async {
        let ev = nats::events(&js, "video.failed").await;
        (ev.len() >= cases.len()).then_some(ev)
    })
    .await;
    for (id, _) in &cases {
        let event = failed
            .iter()
            .find(|e| e["video_id"] == *id)
            .unwrap_or_else(|| panic!("no failed event for {id}: {failed:?}"));
        assert_eq!(event["kind"], "invalid_request", "{event}");
        assert_eq!(event["attempt"], 1, "refused before any retry: {event}");
    }
    assert_eq!(snapshot(&s.uploads()), uploads_before, "uploads changed");
    assert_eq!(snapshot(&s.hls()), hls_before, "outputs changed");
    let processed = nats::events(&js, "video.processed").await;
    assert_eq!(
        processed.len(),
        1,
        "only the first job succeeded: {processed:?}"
    );
}

/// `transcode` applies the same rules: the source's folder, a folder it did not make and a
/// file in the way (S8: not `output_io`, which would be retried) are refused; `--force`
/// replaces a folder the user names, but never one that holds the source.
#[test]
fn transcode_refuses_folders_it_did_not_make_unless_forced_and_never_the_sources_folder() {
    let tmp = scratch_dir();
    let uploads = tmp.path().join("uploads");
    fs::create_dir(&uploads).unwrap();
    let source = h264_aac_mp4(&uploads, "a.mp4", 320, 240, 1.0);
    fs::write(uploads.join("notes.txt"), "important").unwrap();
    let foreign = tmp.path().join("site");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("index.html"), "<html>").unwrap();
    let file = tmp.path().join("file-in-the-way");
    fs::write(&file, "keep me").unwrap();
    let before = snapshot(tmp.path());

    for (out, force) in [
        (&uploads, false),
        (&uploads, true),
        (&tmp.path().to_path_buf(), true),
    ] {
        let mut options = QUICK.to_vec();
        if force {
            options.push("--force");
        }
        let error = assert_refused_output(&source, out, &options, "invalid_request");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("source"),
            "the refusal says why: {error}"
        );
    }
    assert_refused_output(&source, &foreign, QUICK, "invalid_request");
    assert_refused_output(&source, &file, QUICK, "invalid_request");
    assert_eq!(
        snapshot(tmp.path()),
        before,
        "a refused transcode changed files"
    );

    let mut forced = QUICK.to_vec();
    forced.push("--force");
    let result = transcode_ok(&source, &foreign, &forced);
    assert_valid_hls(&source, &foreign, &result, &Expect::ladder(&["144p"]));
    assert!(!foreign.join("index.html").exists());
}

/// S1: before the command returns (and before a worker acks), every published file and
/// directory was fsynced, and the parent was fsynced after the rename that published them.
#[test]
fn every_published_file_and_the_parent_are_fsynced_before_the_transcode_returns() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 320, 240, 2.0);
    let out = tmp.path().join("hls");
    let log = tmp.path().join("strace.log");
    let status = std::process::Command::new("strace")
        .args([
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,rename,renameat2",
            "-o",
        ])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_video-worker"))
        .arg("transcode")
        .arg(&source)
        .arg(&out)
        .args(QUICK)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run strace (Debian package `strace`)");
    assert!(status.success(), "traced transcode failed");

    let fsyncs = traced_calls(&log, "fsync");
    let synced = |path: &Path| -> Option<usize> {
        let wanted = format!("<{}>", path.display());
        fsyncs
            .iter()
            .find(|(_, arg)| arg.ends_with(&wanted))
            .map(|(i, _)| *i)
    };
    // The worker renames through `/proc/self/fd/<parent>/…`: match the names, not the paths.
    let renames = traced_calls(&log, "rename");
    let (publish, args) = renames
        .iter()
        .find(|(_, args)| args.ends_with("/hls\""))
        .expect("the staging directory is renamed to the output");
    let publish = *publish;
    let staging_name = args
        .split('"')
        .nth(1)
        .and_then(|from| Path::new(from).file_name())
        .expect("staging path in the rename")
        .to_owned();
    let staging = tmp.path().join(staging_name);

    let mut files: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for name in &files {
        let at = synced(&staging.join(name))
            .unwrap_or_else(|| panic!("{name} was never fsynced: {fsyncs:?}"));
        assert!(at < publish, "{name} fsynced after it was published");
    }
    assert!(
        synced(&staging).is_some_and(|at| at < publish),
        "staging dir not fsynced"
    );
    let parent_synced_after = fsyncs
        .iter()
        .any(|(i, arg)| *i > publish && arg.ends_with(&format!("<{}>", tmp.path().display())));
    assert!(
        parent_synced_after,
        "parent not fsynced after the rename: {fsyncs:?}"
    );
}

/// S4: a job for an output whose lock another job holds waits for it; it neither writes
/// beside nor replaces the output meanwhile.
#[test]
fn a_transcode_waits_while_another_job_holds_the_outputs_lock() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 320, 240, 1.0);
    let out = tmp.path().join("hls");
    let lock = fs::File::create(tmp.path().join(".hls.lock")).unwrap();
    // SAFETY: flock on a descriptor `lock` owns and keeps open; no memory is passed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let job = std::thread::spawn({
        let (source, out) = (source.clone(), out.clone());
        move || transcode(&source, &out, QUICK)
    });
    // A 1 s 144p transcode takes well under a second here; 3 s later nothing may exist yet.
    std::thread::sleep(Duration::from_secs(3));
    let early: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".hls.staging") || n == "hls")
        .collect();
    assert!(
        early.is_empty(),
        "written while the lock was held: {early:?}"
    );
    drop(lock);

    let run = job.join().unwrap();
    assert!(run.status.success(), "{}", run.describe());
    let result = common::one_json_object(&run);
    assert_valid_hls(&source, &out, &result, &Expect::ladder(&["144p"]));
    assert!(!tmp.path().join(".hls.lock").exists(), "lock file left");
}

/// S4: a thumbnail job adds `thumbnail.jpg` under the output's lock: while another job holds
/// it (and may be exchanging the directory) nothing is written; after the release the
/// thumbnail is added, through a temporary name, and the lock file is gone.
#[test]
fn a_thumbnail_job_waits_while_another_job_holds_the_outputs_lock() {
    use std::sync::atomic::AtomicBool;
    use video_worker::media::{thumbnail, Limits};
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 320, 240, 1.0);
    let out = tmp.path().join("thumbs");
    let lock = fs::File::create(tmp.path().join(".thumbs.lock")).unwrap();
    // SAFETY: flock on a descriptor `lock` owns and keeps open; no memory is passed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let job = std::thread::spawn({
        let (source, out) = (source.clone(), out.clone());
        move || {
            let cancel = AtomicBool::new(false);
            thumbnail::thumbnail_only(&source, &out, 0.5, &Limits::default(), &cancel)
        }
    });
    // Decoding half a second of 320x240 takes well under a second; 3 s later nothing may exist.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!job.is_finished(), "the thumbnail job did not wait");
    assert!(
        fs::symlink_metadata(&out).is_err(),
        "written while the lock was held"
    );
    drop(lock);

    let done = job.join().unwrap().expect("thumbnail job");
    assert_eq!(done.path, out.join("thumbnail.jpg"));
    let jpeg = fs::read(&done.path).unwrap();
    assert_eq!(jpeg.len() as u64, done.bytes);
    assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]));
    let names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["thumbnail.jpg"], "no temporary file left");
    assert!(!tmp.path().join(".thumbs.lock").exists(), "lock file left");
}

/// S5: the output path was checked as a folder, then a symlink to another folder was put in
/// its place: the thumbnail job is refused as `invalid_request` and writes nothing there.
#[test]
fn a_thumbnail_job_refuses_a_symlink_swapped_onto_its_output_and_writes_nothing_through_it() {
    use std::sync::atomic::AtomicBool;
    use video_worker::media::{thumbnail, Limits};
    let tmp = scratch_dir();
    let root = tmp.path().canonicalize().unwrap();
    let source = h264_aac_mp4(&root, "upload.mp4", 320, 240, 1.0);
    let elsewhere = root.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let out = root.join("thumbs");
    std::os::unix::fs::symlink(&elsewhere, &out).unwrap();

    let cancel = AtomicBool::new(false);
    let e = thumbnail::thumbnail_only(&source, &out, 0.5, &Limits::default(), &cancel)
        .expect_err("a symlinked output is refused");
    assert_eq!(e.kind, video_worker::ErrorKind::InvalidRequest, "{e}");
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "written through the symlink"
    );
    assert!(
        fs::symlink_metadata(&out).unwrap().file_type().is_symlink(),
        "the symlink itself is left alone"
    );
    assert!(!root.join(".thumbs.lock").exists(), "lock file left");
}

/// S4: two concurrent transcodes of one output: both succeed one after the other, and the
/// published output is exactly one of them, whole.
#[test]
fn two_concurrent_transcodes_of_one_output_publish_one_whole_output() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 320, 240, 2.0);
    let out = tmp.path().join("hls");
    let ladders = ["144p", "240p"];
    let runs: Vec<_> = ladders
        .iter()
        .map(|ladder| {
            let (source, out) = (source.clone(), out.clone());
            let mut options = QUICK.to_vec();
            options[1] = ladder;
            let options: Vec<String> = options.iter().map(|s| s.to_string()).collect();
            std::thread::spawn(move || {
                let mut args = vec!["transcode".to_string()];
                args.push(source.display().to_string());
                args.push(out.display().to_string());
                args.push("--json".into());
                args.extend(options);
                run_worker(&args)
            })
        })
        .map(|t| t.join().unwrap())
        .collect();
    for run in &runs {
        assert!(run.status.success(), "{}", run.describe());
    }
    let master = fs::read_to_string(out.join("master.m3u8")).unwrap();
    let last = ladders
        .iter()
        .position(|l| master.contains(&format!("{l}.m3u8")))
        .expect("the master names one of the ladders");
    let result = common::one_json_object(&runs[last]);
    assert_valid_hls(&source, &out, &result, &Expect::ladder(&[ladders[last]]));
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["hls", "upload.mp4"], "staging or lock left");
}

/// C16: staging left by a crashed job on another host (a replaced pod) is swept once it is
/// older than the stale age; a fresh one, maybe a live worker's, is kept.
#[test]
fn stale_staging_of_any_host_is_swept_and_fresh_staging_kept() {
    let tmp = scratch_dir();
    let source = h264_aac_mp4(tmp.path(), "upload.mp4", 320, 240, 1.0);
    let out = tmp.path().join("hls");
    let stale = tmp.path().join(".hls.staging-oldpod_7f9c-1-0");
    let fresh = tmp.path().join(".hls.staging-newpod_3b1a-1-0");
    for dir in [&stale, &fresh] {
        fs::create_dir(dir).unwrap();
        fs::write(dir.join("144p_000.ts"), b"partial").unwrap();
    }
    age_by(&stale, Duration::from_secs(7 * 3600));
    transcode_ok(&source, &out, QUICK);
    assert!(
        !stale.exists(),
        "a 7 h old staging dir of another host is swept"
    );
    assert!(fresh.exists(), "a fresh staging dir is never swept");
}
