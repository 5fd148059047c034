//! `video-worker job-exec`: the job process. Reads one `ChildRequest` line on stdin, sets its
//! memory limit, runs the media work in-process and writes `ChildMessage` lines on stdout,
//! the result last. Exit status 0 means a result line was written (success or a `JobError`);
//! anything else (a signal, another status, no result line) is the parent's to explain.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{ChildMessage, ChildOutcome, ChildRequest, ChildResult, MediaJob};
use crate::error::{ErrorKind, JobError};
use crate::media::{self, ProgressTick};

/// Set by SIGTERM (the parent's cancel) or by the parent going away; the media code polls it.
static CANCEL: AtomicBool = AtomicBool::new(false);

/// A request is a job description: far below this.
const MAX_REQUEST_BYTES: u64 = 1 << 20;

/// How long a child whose parent vanished gets to clean its staging before it aborts.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);

extern "C" fn on_sigterm(_: libc::c_int) {
    // An atomic store is async-signal-safe.
    CANCEL.store(true, Ordering::Relaxed);
}

/// The child's `main`.
pub fn main() -> ExitCode {
    let protocol = match protocol_pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("job-exec: cannot set up the protocol pipe: {e}");
            return ExitCode::from(2);
        }
    };
    let out = Mutex::new(protocol);
    let write = |m: &ChildMessage| {
        if let Ok(mut line) = serde_json::to_vec(m) {
            line.push(b'\n');
            if let Ok(mut w) = out.lock() {
                // A parent that stopped reading is gone: nothing useful to do with the error.
                let _ = w.write_all(&line).and_then(|()| w.flush());
            }
        }
    };
    // SAFETY: installs a handler that only stores to an atomic (async-signal-safe); the
    // handler is a plain `extern "C" fn` that lives as long as the program.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let mut stdin = BufReader::new(std::io::stdin());
    let request = match read_request(&mut stdin) {
        Ok(r) => r,
        Err(e) => {
            write(&ChildMessage::Done(ChildOutcome::Err(e)));
            return ExitCode::SUCCESS;
        }
    };
    watch_parent(stdin);
    let address_space_limit = match limit_memory(request.memory_bytes) {
        Ok(l) => l,
        Err(e) => {
            write(&ChildMessage::Done(ChildOutcome::Err(e)));
            return ExitCode::SUCCESS;
        }
    };
    crate::media::keep_freed_memory();
    write(&ChildMessage::Ready {
        address_space_limit,
    });
    let progress = |t: &ProgressTick| write(&ChildMessage::Progress(t.clone()));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        execute(request.job, &progress)
    }))
    .unwrap_or_else(|_| Err(JobError::internal("the job process panicked")));
    let outcome = match result {
        Ok(r) => ChildOutcome::Ok(r),
        Err(e) => {
            let headroom = address_space_limit
                .zip(vm_kib("VmPeak:"))
                .map(|(limit, peak)| limit.saturating_sub(peak));
            ChildOutcome::Err(out_of_memory(e, request.memory_bytes, headroom))
        }
    };
    write(&ChildMessage::Done(outcome));
    ExitCode::SUCCESS
}

/// Keeps a private duplicate of stdout for the protocol and points fd 1 at stderr, so that
/// nothing a library prints can corrupt the protocol lines.
fn protocol_pipe() -> std::io::Result<File> {
    let protocol = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    // SAFETY: dup2 on two descriptors this process owns for its whole life (stderr, stdout);
    // Rust's stdout handle keeps writing to fd 1, which now is the stderr pipe.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(protocol)
}

fn read_request(stdin: &mut impl BufRead) -> Result<ChildRequest, JobError> {
    let mut line = Vec::new();
    stdin
        .take(MAX_REQUEST_BYTES)
        .read_until(b'\n', &mut line)
        .map_err(|e| JobError::internal(format!("job process: reading the request: {e}")))?;
    serde_json::from_slice(&line)
        .map_err(|e| JobError::internal(format!("job process: unreadable request: {e}")))
}

/// The parent keeps our stdin open for the life of the job: end of file means it is gone
/// (PR_SET_PDEATHSIG fires only when the parent *thread* that spawned us exits, and not at
/// all in the moment between fork and prctl). Then cancel, so staging is cleaned, and abort if
/// the media work does not stop in time.
fn watch_parent(mut stdin: BufReader<std::io::Stdin>) {
    let spawned = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            let mut sink = [0u8; 256];
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            CANCEL.store(true, Ordering::Relaxed);
            std::thread::sleep(ORPHAN_GRACE);
            std::process::abort();
        });
    if let Err(e) = spawned {
        eprintln!("job-exec: parent watch not started: {e}");
    }
}

/// `RLIMIT_AS` = what is mapped now (the binary and its libraries, a few hundred MB of
/// address space) + `memory_bytes`. Set here rather than before exec because the loader
/// itself needs the baseline. Returns the limit set.
fn limit_memory(memory_bytes: u64) -> Result<Option<u64>, JobError> {
    if memory_bytes == 0 {
        return Ok(None);
    }
    let baseline = vm_kib("VmSize:").ok_or_else(|| {
        JobError::internal("job process: cannot read its address-space size in /proc/self/status")
    })?;
    let limit = baseline.saturating_add(memory_bytes);
    let rlim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads one rlimit struct that lives on this stack across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlim) } != 0 {
        return Err(JobError::internal(format!(
            "job process: setting the memory limit: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(Some(limit))
}

/// One of the process's address-space sizes in `/proc/self/status` (`VmSize:` now, `VmPeak:`
/// the most it ever mapped), in bytes.
fn vm_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn execute(job: MediaJob, progress: &dyn Fn(&ProgressTick)) -> Result<ChildResult, JobError> {
    media::init()?;
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| JobError::internal(format!("job process: result: {e}")))
    };
    match job {
        MediaJob::Transcode(spec) => {
            media::transcode(&spec, &CANCEL, progress).map(|o| ChildResult::Transcode(Box::new(o)))
        }
        MediaJob::Thumbnail {
            source,
            output_dir,
            time,
            limits,
        } => {
            let outcome =
                media::thumbnail::thumbnail_only(&source, &output_dir, time, &limits, &CANCEL)?;
            json(serde_json::to_value(outcome)).map(ChildResult::Thumbnail)
        }
        MediaJob::Probe { source, limits } => {
            let info = media::probe(&source, &limits)?;
            json(serde_json::to_value(info)).map(ChildResult::Probe)
        }
    }
}

/// A job whose address space came this close to its limit had a mapping refused: a thread's
/// stack (8 MiB), a frame pool, a codec's buffers.
const NEAR_THE_LIMIT: u64 = 16 << 20;

/// An allocation refused under our address-space limit comes back from FFmpeg as ENOMEM
/// ("Cannot allocate memory") and from the OS as error 12, whatever kind the media code gave
/// it: that is this job's memory limit, not a property of the input to give up on at once.
/// Some refusals leave no such word: libx264 reports a thread it could not start (its stack
/// did not fit) as a generic external-library error. Those are known by `headroom`, what was
/// left between the job's peak address space and its limit.
fn out_of_memory(e: JobError, memory_bytes: u64, headroom: Option<u64>) -> JobError {
    if memory_bytes == 0 || e.kind == ErrorKind::Cancelled {
        return e;
    }
    let enomem = e.message.contains("Cannot allocate memory") || e.message.contains("os error 12");
    let near = headroom.filter(|&h| h < NEAR_THE_LIMIT);
    if !enomem && near.is_none() {
        return e;
    }
    let peak = match near {
        Some(h) => format!(" (its address space peaked {} MiB below it)", h >> 20),
        None => String::new(),
    };
    JobError::crashed(format!(
        "out of memory: an allocation failed under the job's memory limit of {} MiB{peak}: {}",
        memory_bytes >> 20,
        e.message
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enomem_under_a_limit_is_an_out_of_memory_crash_and_other_errors_pass() {
        let e = JobError::invalid_media("decoding: Cannot allocate memory");
        let oom = out_of_memory(e.clone(), 512 << 20, Some(300 << 20));
        assert_eq!(oom.kind, ErrorKind::Crashed);
        assert!(oom.message.starts_with("out of memory"), "{}", oom.message);
        assert!(oom.message.contains("512 MiB"), "{}", oom.message);
        assert_eq!(out_of_memory(e.clone(), 0, None), e);
        let other = JobError::invalid_media("no video stream");
        assert_eq!(
            out_of_memory(other.clone(), 1 << 30, Some(900 << 20)),
            other
        );
    }

    #[test]
    fn an_error_at_the_limit_without_enomem_is_an_out_of_memory_crash() {
        let x264 =
            JobError::internal("libx264 for 1080p: open: Generic error in an external library");
        let oom = out_of_memory(x264.clone(), 64 << 20, Some(5 << 20));
        assert_eq!(oom.kind, ErrorKind::Crashed);
        assert!(
            oom.message.contains("peaked 5 MiB below it"),
            "{}",
            oom.message
        );
        assert!(oom.message.ends_with(&x264.message), "{}", oom.message);
        // Far from the limit, or with no limit, the job's own error stands.
        assert_eq!(out_of_memory(x264.clone(), 64 << 20, Some(40 << 20)), x264);
        assert_eq!(out_of_memory(x264.clone(), 0, Some(0)), x264);
        let cancelled = JobError::cancelled("cancelled");
        assert_eq!(
            out_of_memory(cancelled.clone(), 64 << 20, Some(0)),
            cancelled
        );
    }
}
