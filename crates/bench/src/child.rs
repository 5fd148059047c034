//! Running one measured child process: wall time from outside, CPU time and peak RSS from the
//! kernel's accounting of that child alone (`wait4`), output to log files (no pipes that a
//! chatty child could fill), and the progress line on stderr while it runs.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// What one child (or a sequence of children) cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    /// Peak resident set size (`ru_maxrss`, KiB on Linux).
    pub max_rss_kb: u64,
}

impl Usage {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }

    /// Adds a child that ran after this one: times add up, the peak is the larger peak.
    pub fn then(self, next: Usage) -> Usage {
        Usage {
            wall_s: self.wall_s + next.wall_s,
            user_s: self.user_s + next.user_s,
            sys_s: self.sys_s + next.sys_s,
            max_rss_kb: self.max_rss_kb.max(next.max_rss_kb),
        }
    }
}

/// Waits for `pid` and returns its exit status and its own resource usage.
fn wait4(pid: libc::pid_t) -> std::io::Result<(ExitStatus, libc::rusage)> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `rusage` is a plain C struct of integers, for which all-zero bytes are a
        // valid value; `wait4` writes into the two out-pointers, which point at live locals
        // for the duration of the call. `pid` is a child of this process that nothing else
        // waits for (the `Child` handle is never waited on), so it is reaped exactly once.
        let (r, usage) = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            let r = libc::wait4(pid, &mut status, 0, &mut usage);
            (r, usage)
        };
        if r == pid {
            return Ok((ExitStatus::from_raw(status), usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn seconds(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// The progress line on stderr: `[ 3/14] run 1/3 · ffmpeg-single · 4.2 s`, redrawn in place
/// on a terminal, one line per step elsewhere.
pub struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    started: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn line(&self, label: &str, elapsed: Option<Duration>) -> String {
        let step = format!("[{:>3}/{}] {label}", self.done + 1, self.total);
        match elapsed {
            Some(e) => format!(
                "{step} · {:.1} s (bench {:.0} s)",
                e.as_secs_f64(),
                self.started.elapsed().as_secs_f64()
            ),
            None => format!(
                "{step} (bench {:.0} s)",
                self.started.elapsed().as_secs_f64()
            ),
        }
    }

    fn show(&self, label: &str, elapsed: Duration) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{}", self.line(label, Some(elapsed)));
        let _ = err.flush();
    }

    /// Clears the in-place line (before the table is printed).
    pub fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

/// One command to measure, with where its output goes.
pub struct Measured<'a> {
    pub label: String,
    pub program: &'a Path,
    pub args: Vec<String>,
    /// stdout goes to `<log>.out`, stderr to `<log>.log`.
    pub log: PathBuf,
}

/// What a measured child left behind.
pub struct Finished {
    pub usage: Usage,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// Runs `m` to completion, measuring it, with the progress line showing it. A child that
/// fails is an error naming its log.
pub fn run(m: Measured<'_>, progress: &mut Progress) -> Result<Finished> {
    if !progress.tty {
        eprintln!("{}", progress.line(&m.label, None));
    }
    let finished = execute(&m, progress.tty.then_some(&*progress));
    progress.done += 1;
    finished
}

/// Runs `m` to completion, measuring it, with no progress line: for children that run
/// side by side (the throughput bench), whose caller reports them itself.
pub fn run_quiet(m: Measured<'_>) -> Result<Finished> {
    execute(&m, None)
}

fn execute(m: &Measured<'_>, progress: Option<&Progress>) -> Result<Finished> {
    let stdout = m.log.with_extension("out");
    let stderr = m.log.with_extension("log");
    let out = File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?;
    let err = File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
    let mut cmd = Command::new(m.program);
    cmd.args(&m.args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", m.program.display()))?;
    let pid = child.id() as libc::pid_t;
    let running = AtomicBool::new(true);
    let waited = std::thread::scope(|s| {
        if let Some(progress) = progress {
            let (running, label) = (&running, &m.label);
            s.spawn(move || {
                while running.load(Ordering::Relaxed) {
                    progress.show(label, started.elapsed());
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
        let r = wait4(pid);
        running.store(false, Ordering::Relaxed);
        r
    });
    let wall = started.elapsed();
    let (status, ru) = waited.with_context(|| format!("waiting for {}", m.label))?;
    // `child` was reaped by wait4 above; dropping the handle does not wait again.
    drop(child);
    if let Some(progress) = progress {
        progress.show(&m.label, wall);
    }
    if !status.success() {
        bail!(
            "{} failed ({status}); command: {} {}\n{}",
            m.label,
            m.program.display(),
            shell_words(&m.args),
            tail(&stderr, 15)
        );
    }
    Ok(Finished {
        usage: Usage {
            wall_s: wall.as_secs_f64(),
            user_s: seconds(ru.ru_utime),
            sys_s: seconds(ru.ru_stime),
            max_rss_kb: ru.ru_maxrss.max(0) as u64,
        },
        stdout,
        stderr,
    })
}

/// The command line as one could paste it into a shell (for error messages and the report).
pub fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` lines of a log, for an error message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    format!(
        "last lines of {}:\n{}",
        path.display(),
        lines[from..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_measured_by_its_own_rusage() {
        let dir = tempfile::tempdir().unwrap();
        let mut progress = Progress::new(1);
        let f = run(
            Measured {
                label: "busy loop".into(),
                program: Path::new("/bin/sh"),
                args: vec![
                    "-c".into(),
                    "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo done".into(),
                ],
                log: dir.path().join("busy"),
            },
            &mut progress,
        )
        .unwrap();
        assert!(f.usage.wall_s > 0.0);
        assert!(f.usage.cpu_s() > 0.0, "{:?}", f.usage);
        assert!(f.usage.max_rss_kb > 0);
        assert_eq!(std::fs::read_to_string(f.stdout).unwrap(), "done\n");

        let e = run(
            Measured {
                label: "failing".into(),
                program: Path::new("/bin/sh"),
                args: vec!["-c".into(), "echo oops >&2; exit 3".into()],
                log: dir.path().join("fail"),
            },
            &mut progress,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("failing failed") && e.contains("oops"), "{e}");
    }

    #[test]
    fn sequential_usage_adds_times_and_keeps_the_peak() {
        let a = Usage {
            wall_s: 1.0,
            user_s: 1.5,
            sys_s: 0.25,
            max_rss_kb: 100,
        };
        let b = Usage {
            wall_s: 2.0,
            user_s: 3.0,
            sys_s: 0.25,
            max_rss_kb: 80,
        };
        let c = a.then(b);
        assert_eq!((c.wall_s, c.cpu_s(), c.max_rss_kb), (3.0, 5.0, 100));
    }

    #[test]
    fn shell_words_quotes_what_a_shell_would_split() {
        let args = vec!["-vf".to_string(), "scale=-2:360".into(), "a b".into()];
        assert_eq!(shell_words(&args), "-vf scale=-2:360 'a b'");
    }
}
