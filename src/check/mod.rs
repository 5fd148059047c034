//! `video-worker check`: reads an HLS VOD ladder (ours or anyone's) and reports the rules of
//! Apple's "HLS Authoring Specification for Apple Devices" it keeps or breaks, by their
//! numbers, each MUST or SHOULD with the measured value. Apple's own validator
//! (mediastreamvalidator) runs only on macOS; this is the part of it the worker needs.
//!
//! ```text
//! measure (m3u8-rs + FFmpeg libraries, in-process) ─► model::Ladder ─► rules::evaluate ─► Finding…
//! ```
//!
//! The worker runs the same check on its staging folder before it publishes
//! ([`before_publish`]): a MUST broken there is our bug, and the job fails as `internal`.
//! Like `media`, this module calls FFmpeg (segments are demuxed and a picture decoded) and
//! never runs on a tokio thread.

pub(crate) mod measure;
pub(crate) mod model;
pub(crate) mod rules;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{JobError, Result};
pub use rules::{Finding, Level, Verdict};

/// The result of checking one ladder.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The master playlist's path or URL.
    pub master: String,
    pub playlists: usize,
    pub segments: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn failed_musts(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.failed_must())
    }

    /// The report as text: one line per rule, then the subjects that break it.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}: {} playlists, {} segments\n",
            self.master, self.playlists, self.segments
        );
        for f in &self.findings {
            let verdict = match f.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
                Verdict::NotApplicable => "n/a",
            };
            let level = match f.level {
                Level::Must => "MUST",
                Level::Should => "SHOULD",
            };
            out += &format!("{verdict:<4} {level:<6} {:<5} {}\n", f.rule, f.measured);
            if f.verdict == Verdict::Fail {
                out += &format!("                  rule: {}\n", f.text);
                for line in f.failures.iter().take(10) {
                    out += &format!("                  - {line}\n");
                }
                if f.failures.len() > 10 {
                    out += &format!("                  … {} more\n", f.failures.len() - 10);
                }
            }
        }
        let count = |v: Verdict| self.findings.iter().filter(|f| f.verdict == v).count();
        out += &format!(
            "{} rules: {} pass, {} fail ({} MUST), {} not applicable\n",
            self.findings.len(),
            count(Verdict::Pass),
            count(Verdict::Fail),
            self.failed_musts().count(),
            count(Verdict::NotApplicable)
        );
        out
    }
}

pub use measure::{trust_ca_file, Location};

/// Where the master playlist of `target` is: a folder (its `master.m3u8`), a playlist path,
/// a `file://` URL of one, or an `http(s)://` URL of one (a URL ending in `/`: its
/// `master.m3u8`), read through libavformat's http(s) protocols.
pub fn master_location(target: &str) -> std::result::Result<Location, String> {
    let master = crate::media::hls::playlist::MASTER;
    if target.starts_with("http://") || target.starts_with("https://") {
        let url = url::Url::parse(target).map_err(|e| format!("{target}: {e}"))?;
        let url = match url.path().ends_with('/') {
            true => url.join(master).map_err(|e| format!("{target}: {e}"))?,
            false => url,
        };
        return Ok(Location::Web(url));
    }
    let path = match target.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        None if target.contains("://") => {
            return Err(format!(
                "{target}: a ladder is read from a folder, a path, a file:// or an http(s):// URL"
            ))
        }
        None => PathBuf::from(target),
    };
    if path.is_dir() {
        return Ok(Location::master_file(path.join(master)));
    }
    Ok(Location::master_file(path))
}

/// Measures and checks the ladder whose master playlist is `master`, its segments read on one
/// thread per core.
pub fn check(master: &Location) -> std::result::Result<Report, String> {
    check_on(master, num_cpus::get())
}

/// [`check`] on `threads` threads.
fn check_on(master: &Location, threads: usize) -> std::result::Result<Report, String> {
    crate::media::init().map_err(|e| e.message)?;
    let ladder = measure::measure(master, threads)?;
    Ok(Report {
        master: master.to_string(),
        playlists: ladder.media.len() + 1,
        segments: ladder.media.iter().map(|m| m.segments.len()).sum(),
        findings: rules::evaluate(&ladder),
    })
}

/// The publish hook: checks the finished ladder in `staging` before it is published, on the
/// job's `threads` (its encoders are done by then; 0 is taken as 1). A MUST broken there is a
/// bug of ours: an `internal` error that names the rule and its measured value, and nothing
/// is published.
pub fn before_publish(staging: &Path, threads: usize) -> Result<()> {
    let master = Location::master_file(staging.join(crate::media::hls::playlist::MASTER));
    let report = check_on(&master, threads)
        .map_err(|e| JobError::internal(format!("checking the output before publishing: {e}")))?;
    let broken: Vec<String> = report
        .failed_musts()
        .map(|f| {
            format!(
                "rule {} (MUST: {}): {}{}",
                f.rule,
                f.text,
                f.measured,
                f.failures
                    .first()
                    .map(|x| format!("; {x}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    if broken.is_empty() {
        return Ok(());
    }
    Err(JobError::internal(format!(
        "the output breaks Apple's HLS authoring spec, nothing published: {}",
        broken.join(" | ")
    )))
}
