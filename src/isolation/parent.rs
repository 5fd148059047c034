//! The worker's side of a job process: spawn it with its limits, feed it the request, relay its
//! progress, watch it (stall, wall time, cancel), and turn every way it can end into a result
//! or a typed `JobError`. Async (tokio); no FFmpeg here.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use super::{signal_name, ChildMessage, ChildOutcome, ChildRequest, ChildResult, MediaJob};
use crate::error::{ErrorKind, JobError};
use crate::media::ProgressTick;

/// A protocol line is a progress tick or a result: far below this. More is a broken child.
const MAX_LINE_BYTES: u64 = 16 << 20;

/// Lines of the child's stderr kept to explain a death (a Rust allocation failure, a panic).
const STDERR_TAIL_LINES: usize = 20;

/// How the job process is started: this binary's hidden `job-exec` subcommand by default.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl ChildCommand {
    /// `<this executable> job-exec`.
    pub fn current_exe() -> Result<ChildCommand, JobError> {
        let program = std::env::current_exe()
            .map_err(|e| JobError::internal(format!("locating this executable: {e}")))?;
        Ok(ChildCommand {
            program,
            args: vec!["job-exec".into()],
        })
    }
}

/// What one job process may use. A zero turns that limit off.
#[derive(Debug, Clone)]
pub struct ChildLimits {
    /// Address space the job may map beyond the loaded binary (RLIMIT_AS = baseline + this,
    /// set by the child on itself). Virtual, not resident: thread stacks and malloc arenas
    /// count in full, so give it room (4 GiB is ample for a 4K ladder).
    pub memory_bytes: u64,
    /// CPU seconds, summed over all threads (RLIMIT_CPU: SIGXCPU, then SIGKILL 5 s later).
    pub cpu_seconds: u64,
    /// Wall-clock seconds from spawn to result.
    pub wall_seconds: u64,
    /// Longest time without a line from the child (ready, progress, result) before it is
    /// killed. Thumbnail and probe jobs write no progress: for them this bounds the whole job.
    pub stall_seconds: u64,
    /// Time between SIGTERM (cancel) and SIGKILL.
    pub cancel_grace: Duration,
}

impl Default for ChildLimits {
    fn default() -> Self {
        ChildLimits {
            memory_bytes: 4 << 30,
            cpu_seconds: 0,
            wall_seconds: 0,
            stall_seconds: 120,
            cancel_grace: Duration::from_secs(10),
        }
    }
}

/// What the caller hears while the job runs.
#[derive(Debug, Clone)]
pub enum ChildEvent {
    /// The process exists (its pid: for logs, and for tests that kill it).
    Spawned { pid: u32 },
    /// The child read its request and its limits are in force.
    Ready,
    /// The media work made progress: the moment for an in-progress ack.
    Progress(ProgressTick),
}

/// One line from the child's stdout.
enum Line {
    Message(ChildMessage),
    /// Not a protocol line (or one too long): the child is not what we think it is.
    Garbage(String),
}

/// Why the parent killed the child.
#[derive(Debug, Clone, PartialEq)]
enum Kill {
    Stalled,
    WallTime,
    /// What it wrote instead of a protocol line (the start of it).
    Garbage(String),
    CancelGraceOver,
    /// It closed its stdout but did not exit.
    OutputClosed,
}

/// What watching a job process established.
#[derive(Default)]
struct Watched {
    result: Option<ChildOutcome>,
    killed: Option<Kill>,
    /// SIGTERM was sent (cancel).
    cancelled: bool,
    last_tick: Option<ProgressTick>,
}

/// Runs `job` in a job process and returns its result.
///
/// - `on_event` is called for the spawn, the ready line and every progress tick (a few per
///   second while a transcode advances; never while it is stuck).
/// - `cancel` resolving means stop: SIGTERM (the child cancels and cleans its staging), then
///   SIGKILL after `limits.cancel_grace`. The result is then `cancelled` (or the job's own
///   result if it finished first).
/// - Every abnormal end is a `JobError`: killed by a signal → `crashed` naming the signal
///   (`out of memory` when the child's stderr shows a refused allocation); SIGXCPU or the
///   wall-time limit → `limit_exceeded`; no line for `stall_seconds` → `stalled`; exit without
///   a result, or output that is not the protocol → `crashed`. The child's staging is then
///   removed here (a dead process cannot remove its own).
///
/// Call it from async code on a runtime worker thread: the child's PR_SET_PDEATHSIG is tied
/// to the spawning thread (a `spawn_blocking` thread that retires would kill the child; the
/// child also stops when its stdin closes, which covers a dead worker process). Dropping the
/// future kills the child (kill_on_drop) but leaves its staging to the stale sweep: cancel
/// through `cancel` instead.
pub async fn run(
    job: &MediaJob,
    command: &ChildCommand,
    limits: &ChildLimits,
    mut on_event: impl FnMut(ChildEvent),
    cancel: impl Future<Output = ()>,
) -> Result<ChildResult, JobError> {
    let mut request = serde_json::to_vec(&ChildRequest {
        job: job.clone(),
        memory_bytes: limits.memory_bytes,
    })
    .map_err(|e| JobError::internal(format!("job request: {e}")))?;
    request.push(b'\n');

    let oom_kills_before = oom_kills();
    let started = Instant::now();
    let mut child = spawn(command, limits)?;
    let pid = child.id().unwrap_or(0);
    on_event(ChildEvent::Spawned { pid });

    // Kept open until the end: the child reads end of file as "the worker is gone".
    let mut stdin = child.stdin.take();
    if let Some(s) = stdin.as_mut() {
        // A request fits in the pipe's buffer; the timeout is for a child that never reads.
        match tokio::time::timeout(limits.cancel_grace, s.write_all(&request)).await {
            Ok(Ok(())) => {}
            // The child died or hangs before reading: its exit status or the watchdog says why.
            Ok(Err(e)) => tracing::warn!(pid, error = %e, "job request not written"),
            Err(_) => tracing::warn!(pid, "job request not read by the job process"),
        }
    }
    let (tx, lines) = mpsc::channel::<Line>(64);
    let reader = child
        .stdout
        .take()
        .map(|out| tokio::spawn(read_lines(out, tx)));
    let stderr = child
        .stderr
        .take()
        .map(|err| tokio::spawn(stderr_tail(err, pid).in_current_span()));

    let mut watched = watch(&mut child, lines, limits, started, &mut on_event, cancel).await;
    let status = reap(&mut child, &mut watched.killed, limits).await;
    drop(stdin);
    if let Some(r) = reader {
        r.abort();
    }
    let stderr = match stderr {
        Some(task) => tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let ending = Ending {
        pid,
        elapsed: started.elapsed().as_secs_f64(),
        last_tick: watched.last_tick.as_ref(),
        stderr: &stderr,
        limits,
        oom_killer_acted: matches!(
            (oom_kills_before, oom_kills()),
            (Some(before), Some(after)) if after > before
        ),
    };
    let error = match watched.result.take() {
        Some(ChildOutcome::Ok(r)) => {
            if let Ok(s) = &status {
                if !s.success() {
                    tracing::warn!(pid, status = %s, "job process ended abnormally after its result");
                }
            }
            return Ok(r);
        }
        // Its own error: it removed its staging itself, unless it died right after.
        Some(ChildOutcome::Err(e)) => ending.refused_allocation(e),
        None => ending.explain(&watched, &status),
    };
    if watched.killed.is_some() || status.as_ref().map_or(true, |s| !s.success()) {
        tracing::warn!(pid, error = %error, "job process ended abnormally");
    }
    clean_staging(job, pid).await;
    Err(error)
}

fn spawn(command: &ChildCommand, limits: &ChildLimits) -> Result<Child, JobError> {
    let mut cmd = tokio::process::Command::new(&command.program);
    cmd.args(&command.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let parent = std::process::id() as libc::pid_t;
    let cpu_seconds = limits.cpu_seconds;
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: `before_exec` makes only the prctl, getppid, setpgid and setrlimit
    // system calls, allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || before_exec(parent, cpu_seconds));
    }
    cmd.spawn().map_err(|e| {
        JobError::internal(format!(
            "starting the job process {}: {e}",
            command.program.display()
        ))
    })
}

/// Relays the child's lines until its output closes, and enforces the stall, wall-time and
/// cancel rules meanwhile.
async fn watch(
    child: &mut Child,
    mut lines: mpsc::Receiver<Line>,
    limits: &ChildLimits,
    started: Instant,
    on_event: &mut impl FnMut(ChildEvent),
    cancel: impl Future<Output = ()>,
) -> Watched {
    let pid = child.id().unwrap_or(0);
    let stall = (limits.stall_seconds > 0).then(|| Duration::from_secs(limits.stall_seconds));
    let wall = (limits.wall_seconds > 0).then(|| Duration::from_secs(limits.wall_seconds));
    let never = started + Duration::from_secs(86_400 * 365);
    let mut w = Watched::default();
    let mut last_line = Instant::now();
    let mut term_sent: Option<Instant> = None;
    let mut killed_at: Option<Instant> = None;
    tokio::pin!(cancel);
    loop {
        let stall_at = stall.map_or(never, |s| last_line + s);
        let wall_at = wall.map_or(never, |w| started + w);
        let grace_at = term_sent.map_or(never, |t| t + limits.cancel_grace);
        // A killed process closes its output at once, unless it is stuck in uninterruptible
        // I/O (a hung network mount): then stop waiting for it.
        let give_up_at = killed_at.map_or(never, |t| t + limits.cancel_grace);
        let watching = w.killed.is_none();
        let mut kill_for = None;
        tokio::select! {
            line = lines.recv() => match line {
                None => break,
                Some(Line::Message(m)) => {
                    last_line = Instant::now();
                    match m {
                        ChildMessage::Ready { address_space_limit } => {
                            tracing::debug!(pid, ?address_space_limit, "job process ready");
                            on_event(ChildEvent::Ready);
                        }
                        ChildMessage::Progress(t) => {
                            w.last_tick = Some(t.clone());
                            on_event(ChildEvent::Progress(t));
                        }
                        ChildMessage::Done(o) => w.result = Some(o),
                    }
                }
                Some(Line::Garbage(text)) => kill_for = Some(Kill::Garbage(text)),
            },
            _ = tokio::time::sleep_until(stall_at), if watching && stall.is_some() => {
                kill_for = Some(Kill::Stalled);
            }
            _ = tokio::time::sleep_until(wall_at), if watching && wall.is_some() => {
                kill_for = Some(Kill::WallTime);
            }
            _ = &mut cancel, if watching && term_sent.is_none() => {
                tracing::info!(pid, "cancelling the job process (SIGTERM)");
                terminate(pid);
                term_sent = Some(Instant::now());
                w.cancelled = true;
            }
            _ = tokio::time::sleep_until(grace_at), if watching && term_sent.is_some() => {
                kill_for = Some(Kill::CancelGraceOver);
            }
            _ = tokio::time::sleep_until(give_up_at), if killed_at.is_some() => {
                tracing::error!(pid, "the job process does not die after SIGKILL; leaving it");
                break;
            }
        }
        if let Some(why) = kill_for.filter(|_| w.killed.is_none()) {
            tracing::warn!(pid, ?why, "killing the job process (SIGKILL)");
            if let Err(e) = child.start_kill() {
                tracing::warn!(pid, error = %e, "SIGKILL not sent");
            }
            w.killed = Some(why);
            killed_at = Some(Instant::now());
        }
    }
    w
}

/// Waits for the child's exit status once its output closed, killing it if it lingers.
async fn reap(
    child: &mut Child,
    killed: &mut Option<Kill>,
    limits: &ChildLimits,
) -> std::io::Result<ExitStatus> {
    if let Ok(status) = tokio::time::timeout(limits.cancel_grace, child.wait()).await {
        return status;
    }
    if killed.is_none() {
        *killed = Some(Kill::OutputClosed);
    }
    let _ = child.start_kill();
    match tokio::time::timeout(limits.cancel_grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => Err(std::io::Error::other("it did not exit after SIGKILL")),
    }
}

/// In the forked child, before exec. Only async-signal-safe system calls.
fn before_exec(parent: libc::pid_t, cpu_seconds: u64) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getppid has no arguments and cannot fail.
    if unsafe { libc::getppid() } != parent {
        // The worker died between fork and prctl: the death signal will never come.
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    // Its own process group: a Ctrl-C (SIGINT to the terminal's foreground group) reaches
    // the worker, which decides what happens to the job, instead of killing the job at once.
    // SAFETY: setpgid with integer arguments only.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // No core files: a crashing job must not fill the disk with multi-GB dumps.
    set_limit(libc::RLIMIT_CORE, 0, 0)?;
    if cpu_seconds > 0 {
        // SIGXCPU at the soft limit (reported as limit_exceeded), SIGKILL 5 s later if ignored.
        set_limit(libc::RLIMIT_CPU, cpu_seconds, cpu_seconds.saturating_add(5))?;
    }
    Ok(())
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let rlim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit struct that lives on this stack across the call.
    if unsafe { libc::setrlimit(resource, &rlim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SIGTERM: the child's cancel.
fn terminate(pid: u32) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill takes two integers. `pid` is our child, not yet reaped (we hold its `Child`
    // and wait for it only after the last signal), so the number cannot name another process.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
        tracing::warn!(pid, error = %std::io::Error::last_os_error(), "SIGTERM not sent");
    }
}

/// Reads protocol lines until end of file (or a line that is not one).
async fn read_lines(out: impl AsyncRead + Unpin, tx: mpsc::Sender<Line>) {
    let mut out = BufReader::new(out);
    loop {
        let mut buf = Vec::new();
        match (&mut out)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = match serde_json::from_slice::<ChildMessage>(&buf) {
            Ok(m) => Line::Message(m),
            Err(_) => {
                let text = String::from_utf8_lossy(&buf[..buf.len().min(200)]);
                Line::Garbage(text.trim_end().to_string())
            }
        };
        let stop = matches!(line, Line::Garbage(_));
        if tx.send(line).await.is_err() || stop {
            // Drain the rest so the child never blocks on a full pipe while it is killed.
            let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
            return;
        }
    }
}

/// Logs the child's stderr line by line and keeps its last lines.
async fn stderr_tail(err: impl AsyncRead + Unpin, pid: u32) -> Vec<String> {
    let mut err = BufReader::new(err);
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    loop {
        let mut buf = Vec::new();
        match (&mut err).take(64 << 10).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        tracing::warn!(pid, "job process: {line}");
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into()
}

/// Removes what a dead (or killed) job process left, off the async threads.
async fn clean_staging(job: &MediaJob, pid: u32) {
    if pid == 0 {
        return;
    }
    let (job, span) = (job.clone(), tracing::Span::current());
    let _ =
        tokio::task::spawn_blocking(move || span.in_scope(|| job.remove_leftovers_of(pid))).await;
}

/// How many processes the kernel's out-of-memory killer killed in this process's memory
/// cgroup (which its children share): cgroup v2 `memory.events`, or v1 `memory.oom_control`.
fn oom_kills() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let text = std::fs::read_to_string(oom_kill_file(&cgroups)?).ok()?;
    oom_kill_count(&text)
}

/// The file that counts OOM kills, from `/proc/self/cgroup`: a v1 memory controller if there
/// is one, else the v2 hierarchy.
fn oom_kill_file(proc_self_cgroup: &str) -> Option<PathBuf> {
    let mut v2 = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some(
                Path::new("/sys/fs/cgroup/memory")
                    .join(path)
                    .join("memory.oom_control"),
            );
        }
        if controllers.is_empty() {
            v2 = Some(Path::new("/sys/fs/cgroup").join(path).join("memory.events"));
        }
    }
    v2
}

fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.signal(), s.code()) {
            (Some(sig), _) => format!("killed by {}", signal_name(sig)),
            (None, Some(code)) => format!("exit status {code}"),
            (None, None) => s.to_string(),
        },
        Err(e) => format!("status unknown: {e}"),
    }
}

/// What is known about a job process that ended without a result.
struct Ending<'a> {
    pid: u32,
    elapsed: f64,
    last_tick: Option<&'a ProgressTick>,
    stderr: &'a [String],
    limits: &'a ChildLimits,
    /// The kernel's out-of-memory killer killed something in our cgroup while the job ran.
    oom_killer_acted: bool,
}

impl Ending<'_> {
    /// " after 3.2 s at 41%, frame 120 (pid 812)": where the job was when it ended.
    fn context(&self) -> String {
        let at = match self.last_tick {
            Some(t) => format!(" at {:.0}%, frame {}", t.percent, t.frames),
            None => ", before any progress".to_string(),
        };
        format!(" after {:.1} s{at} (pid {})", self.elapsed, self.pid)
    }

    /// The error for a job process that ended without a result.
    fn explain(&self, watched: &Watched, status: &std::io::Result<ExitStatus>) -> JobError {
        let limits = self.limits;
        match (&watched.killed, watched.cancelled) {
            (Some(Kill::Stalled), _) => JobError::stalled(format!(
                "the job process made no progress for {} s and was killed (SIGKILL){}",
                limits.stall_seconds,
                self.context()
            )),
            (Some(Kill::WallTime), _) => JobError::limit_exceeded(format!(
                "the job ran longer than its wall-time limit of {} s and was killed{}",
                limits.wall_seconds,
                self.context()
            )),
            (Some(Kill::Garbage(text)), _) => JobError::crashed(format!(
                "the job process wrote {text:?} instead of a protocol line and was killed{}",
                self.context()
            )),
            (Some(Kill::OutputClosed), _) => JobError::crashed(format!(
                "the job process closed its output without a result but did not exit, and \
                 was killed{}",
                self.context()
            )),
            (Some(Kill::CancelGraceOver), _) => JobError::cancelled(format!(
                "cancelled; the job process did not stop within {:.0} s of SIGTERM and was \
                 killed",
                limits.cancel_grace.as_secs_f64()
            )),
            (None, true) => JobError::cancelled(format!(
                "cancelled; the job process ended without a result ({})",
                describe(status)
            )),
            (None, false) => self.died(status),
        }
    }

    /// The line of the child's stderr that says an allocation was refused: Rust's abort
    /// message, x264's, or the ENOMEM text. Under RLIMIT_AS a refused allocation is the only
    /// trace an out-of-memory end leaves, and these are the ones seen in practice.
    fn allocation_failure(&self) -> Option<&String> {
        self.stderr.iter().rev().find(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("memory allocation of") || l.contains("malloc of size"))
                && l.contains("failed")
                || l.contains("cannot allocate memory")
                || l.contains("out of memory")
        })
    }

    /// The job's own error, unless an allocation was refused under the memory limit: then the
    /// real cause is the limit (x264, for one, reports it as a generic external-library error).
    fn refused_allocation(&self, e: JobError) -> JobError {
        if self.limits.memory_bytes == 0
            || matches!(e.kind, ErrorKind::Cancelled | ErrorKind::Crashed)
        {
            return e;
        }
        match self.allocation_failure() {
            Some(line) => JobError::crashed(format!(
                "out of memory: an allocation failed under the job's memory limit of {} MiB \
                 ({line}): {}",
                self.limits.memory_bytes >> 20,
                e.message
            )),
            None => e,
        }
    }

    fn died(&self, status: &std::io::Result<ExitStatus>) -> JobError {
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                return JobError::crashed(format!(
                    "the job process ended without a result; its status is unknown ({e}){}",
                    self.context()
                ))
            }
        };
        let last_words = self
            .stderr
            .last()
            .map(|l| format!("; its last words: {l:?}"))
            .unwrap_or_default();
        match status.signal() {
            Some(libc::SIGXCPU) => JobError::limit_exceeded(format!(
                "the job used its CPU-time limit of {} s and was killed by SIGXCPU{}",
                self.limits.cpu_seconds,
                self.context()
            )),
            Some(libc::SIGKILL) if self.oom_killer_acted => JobError::crashed(format!(
                "out of memory: the job process was killed by SIGKILL from the kernel's \
                 out-of-memory killer (the memory limit of the worker's cgroup){}",
                self.context()
            )),
            Some(sig) => match self.allocation_failure() {
                Some(line) => JobError::crashed(format!(
                    "out of memory: the job process was killed by {} after an allocation \
                     failed under its memory limit of {} MiB ({line}){}",
                    signal_name(sig),
                    self.limits.memory_bytes >> 20,
                    self.context()
                )),
                None => JobError::crashed(format!(
                    "the job process was killed by {}{}{}{last_words}",
                    signal_name(sig),
                    if sig == libc::SIGKILL {
                        // Not ours: every SIGKILL the worker sends is reported as its reason.
                        " (not sent by the worker: the kernel's out-of-memory killer, or an operator)"
                    } else {
                        ""
                    },
                    self.context()
                )),
            },
            None => JobError::crashed(format!(
                "the job process exited with {} without a result{}{last_words}",
                status
                    .code()
                    .map_or_else(|| status.to_string(), |c| format!("status {c}")),
                self.context()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_counted_in_the_memory_cgroup_of_v1_or_v2() {
        let v1 = "9:name=systemd:/\n4:memory:/pod/abc\n1:cpu:/\n0::/\n";
        assert_eq!(
            oom_kill_file(v1),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/pod/abc/memory.oom_control"
            ))
        );
        assert_eq!(
            oom_kill_file("0::/kubepods/pod1/c2\n"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/kubepods/pod1/c2/memory.events"
            ))
        );
        assert_eq!(
            oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Some(3)
        );
        assert_eq!(
            oom_kill_count("low 0\nhigh 0\nmax 2\noom 2\noom_kill 1\n"),
            Some(1)
        );
        assert_eq!(oom_kill_count("oom 2\n"), None);
    }
}
