//! Process isolation: a job's media work runs in a child process of this same binary
//! (`video-worker job-exec`), so that a crash inside the FFmpeg libraries (SIGSEGV in a filter,
//! an abort, an out-of-memory death) or a wedged decoder ends that one job, not the worker.
//! The libraries still run in-process in the child: no ffmpeg CLI.
//!
//! ```text
//! worker (tokio)                                job process (`video-worker job-exec`)
//! parent::run ── one JSON `ChildRequest` line on stdin ──► child::main: limits, SIGTERM → cancel
//!    ▲  stall / wall / cancel watchdog                       media::transcode | thumbnail | probe
//!    └──── JSON `ChildMessage` lines on stdout: ready, progress…, done(result) ◄──┘
//! ```
//!
//! - this module: the wire types (the request, the lines the child writes, the result).
//! - `parent`: spawning, limits, the watchdog, and turning every abnormal end into a typed
//!   `JobError` (`crashed`, `stalled`, `limit_exceeded`, `cancelled`).
//! - `child`: the child's `main`.
//!
//! The media code does not know whether it runs here or in `transcode`: the child is only a
//! boundary (crash, memory, stall), not a second design.

mod child;
mod parent;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::media::{Limits, Outcome, ProgressTick, TranscodeRequest};

/// The job process's `main` (`video-worker job-exec`).
pub use child::main as job_exec;
pub use parent::{run, ChildCommand, ChildEvent, ChildLimits};

/// The media work of one job, as it crosses the pipe to the child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaJob {
    /// A full transcode (`video.process`).
    Transcode(TranscodeRequest),
    /// A thumbnail only (`video.thumbnail`): `<output_dir>/thumbnail.jpg`.
    Thumbnail {
        source: PathBuf,
        output_dir: PathBuf,
        /// Seconds from the start of the video; clamped to the video.
        time: f64,
        limits: Limits,
    },
    /// A probe only (`video.metadata`).
    Probe { source: PathBuf, limits: Limits },
}

impl MediaJob {
    pub fn transcode(req: &TranscodeRequest) -> MediaJob {
        MediaJob::Transcode(req.clone())
    }

    pub fn thumbnail(source: &Path, output_dir: &Path, time: f64, limits: &Limits) -> MediaJob {
        MediaJob::Thumbnail {
            source: source.to_path_buf(),
            output_dir: output_dir.to_path_buf(),
            time,
            limits: *limits,
        }
    }

    pub fn probe(source: &Path, limits: &Limits) -> MediaJob {
        MediaJob::Probe {
            source: source.to_path_buf(),
            limits: *limits,
        }
    }

    /// Removes what the job process `pid` left behind if it died mid-job: a transcode's
    /// staging dir beside its output, a thumbnail's temporary file inside the output dir (a
    /// probe writes nothing). Never the `.old-` name: between the two renames of a publish
    /// without RENAME_EXCHANGE, that holds the previous complete output. Blocking (file system).
    pub(crate) fn remove_leftovers_of(&self, pid: u32) {
        match self {
            MediaJob::Transcode(t) => crate::media::output::remove_staging_of(&t.output_dir, pid),
            MediaJob::Thumbnail { output_dir, .. } => remove_thumbnail_tmp_of(output_dir, pid),
            MediaJob::Probe { .. } => {}
        }
    }
}

/// The one line the parent writes on the child's stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildRequest {
    pub(crate) job: MediaJob,
    /// Address space the job may map beyond what the loaded binary maps (0: unlimited).
    pub(crate) memory_bytes: u64,
}

/// One line the child writes on its stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChildMessage {
    /// The request was read and the limits are in force; the media work starts.
    Ready {
        /// The RLIMIT_AS the child set on itself (bytes; None: unlimited).
        address_space_limit: Option<u64>,
    },
    Progress(ProgressTick),
    /// The last line: the job's result.
    Done(ChildOutcome),
}

/// `Result<ChildResult, JobError>` with a stable, explicit wire shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChildOutcome {
    Ok(ChildResult),
    Err(JobError),
}

/// What a job process produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildResult {
    /// Boxed: the outcome is far larger than the other results (serde's wire shape is the same).
    Transcode(Box<Outcome>),
    /// `media::thumbnail::ThumbnailOutcome` as JSON (`path`, `time`, `bytes`, `source`).
    Thumbnail(serde_json::Value),
    /// `media::SourceInfo` as JSON.
    Probe(serde_json::Value),
}

impl ChildResult {
    /// The result as it goes into `video.processed`'s `result`.
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            ChildResult::Transcode(o) => serde_json::to_value(o).unwrap_or_default(),
            ChildResult::Thumbnail(v) | ChildResult::Probe(v) => v.clone(),
        }
    }
}

/// The name of a signal as people search for it (`SIGSEGV`), with what it usually means here.
pub(crate) fn signal_name(sig: i32) -> String {
    let (name, meaning) = match sig {
        libc::SIGSEGV => ("SIGSEGV", "invalid memory access"),
        libc::SIGABRT => ("SIGABRT", "abort"),
        libc::SIGKILL => ("SIGKILL", "killed"),
        libc::SIGBUS => ("SIGBUS", "bus error"),
        libc::SIGFPE => ("SIGFPE", "arithmetic fault"),
        libc::SIGILL => ("SIGILL", "illegal instruction"),
        libc::SIGTERM => ("SIGTERM", "terminated"),
        libc::SIGXCPU => ("SIGXCPU", "CPU time limit"),
        libc::SIGXFSZ => ("SIGXFSZ", "file size limit"),
        libc::SIGPIPE => ("SIGPIPE", "broken pipe"),
        libc::SIGSYS => ("SIGSYS", "bad system call"),
        libc::SIGTRAP => ("SIGTRAP", "trap"),
        libc::SIGINT => ("SIGINT", "interrupted"),
        libc::SIGQUIT => ("SIGQUIT", "quit"),
        libc::SIGHUP => ("SIGHUP", "hang-up"),
        _ => return format!("signal {sig}"),
    };
    format!("{name} ({meaning})")
}

/// The host part of staging names, as `media::output::staging_path` writes it.
fn staging_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['/', '.', '-'], "_"))
        .unwrap_or_else(|_| "host".into())
}

/// Removes the temporary thumbnail process `pid` left in `output_dir`
/// (`.thumbnail.jpg.tmp-<host>-<pid>-<n>`, named by `media::output::staging_path`), which
/// `media::output::remove_staging_of` does not cover.
fn remove_thumbnail_tmp_of(output_dir: &Path, pid: u32) {
    let prefix = format!(
        ".{}.tmp-{}-{pid}-",
        crate::media::thumbnail::FILE_NAME,
        staging_host()
    );
    let Ok(entries) = std::fs::read_dir(output_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_ours = name
            .to_string_lossy()
            .strip_prefix(&prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_ours {
            tracing::info!(file = %entry.path().display(), pid, "removing a dead job's temporary thumbnail");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::Quality;

    #[test]
    fn a_transcode_request_crosses_the_pipe_unchanged() {
        let mut req = TranscodeRequest::new("/in/a.mp4", "/out/a").unwrap();
        req.qualities = Quality::parse_list(&["720p", "144p"]).unwrap();
        req.thumbnail_time = 1.5;
        req.preset = "veryfast".into();
        req.threads = 3;
        req.limits.max_duration = 12.0;
        req.fingerprint = Some("f".into());
        req.video_id = Some("v".into());
        req.force = true;
        let line = serde_json::to_string(&MediaJob::Transcode(req.clone())).unwrap();
        let MediaJob::Transcode(back) = serde_json::from_str(&line).unwrap() else {
            panic!("not a transcode: {line}");
        };
        assert_eq!(back, req);
    }

    #[test]
    fn only_the_dead_processs_leftovers_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("video-1");
        let host = staging_host();
        let staging = root.path().join(format!(".video-1.staging-{host}-4242-0"));
        let other_pid = root.path().join(format!(".video-1.staging-{host}-42424-0"));
        let old_output = root.path().join(format!(".video-1.old-{host}-4242-1"));
        for d in [&staging, &other_pid, &old_output, &out] {
            std::fs::create_dir(d).unwrap();
        }
        let tmp = out.join(format!(".thumbnail.jpg.tmp-{host}-4242-3"));
        let other_tmp = out.join(format!(".thumbnail.jpg.tmp-{host}-4243-3"));
        for f in [&tmp, &other_tmp] {
            std::fs::write(f, b"x").unwrap();
        }
        let job = MediaJob::Transcode(TranscodeRequest::new("/in/a.mp4", &out).unwrap());
        job.remove_leftovers_of(4242);
        let thumb = MediaJob::thumbnail(Path::new("/in/a.mp4"), &out, 1.0, &Limits::default());
        thumb.remove_leftovers_of(4242);
        assert!(!staging.exists());
        assert!(!tmp.exists());
        for kept in [&other_pid, &old_output, &out, &other_tmp] {
            assert!(kept.exists(), "{}", kept.display());
        }
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(
            signal_name(libc::SIGSEGV),
            "SIGSEGV (invalid memory access)"
        );
        assert_eq!(signal_name(64), "signal 64");
    }
}
