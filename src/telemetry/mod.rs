//! Operating the worker: what it tells the people who run it.
//!
//! - [`logs`]: `--log-format text|json`, `VW_LOG` / `RUST_LOG`.
//! - `metrics`: the Prometheus metrics (names, buckets) and the hooks the worker calls.
//! - `health`: readiness, and the `--metrics-addr` listener (`/healthz`, `/readyz`,
//!   `/metrics`).
//! - here: a job's stage clock. Each job runs inside [`timed`]; the worker marks where it is
//!   with [`enter`], and [`job_finished`] logs the stage timings at the job's end and records
//!   them as histograms. The clock is task-local, so that the hooks are one line each and no
//!   signature carries it.

pub(crate) mod health;
pub mod logs;
pub(crate) mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::job::JobKind;
use crate::queue::QueueError;

/// Installs the metrics recorder and serves `/metrics`, `/healthz` and `/readyz` on `addr`
/// until the returned endpoint is dropped.
pub(crate) async fn serve(
    addr: SocketAddr,
    health: Arc<health::Health>,
) -> Result<health::Endpoint, QueueError> {
    let handle = metrics::install().map_err(QueueError::Config)?;
    health::serve(addr, health, Some(handle))
        .await
        .map_err(|e| QueueError::Config(format!("--metrics-addr {addr}: {e}")))
}

/// Where a job is, as the worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Parse and validate the payload, check paths, look for a finished output.
    Validate,
    /// Download an object-store source to scratch (`s3://`, `nats-object://`).
    Fetch,
    /// Start the job process, until it has read its request and set its limits.
    Start,
    /// Open and probe the source, plan the ladder, open the encoders: until the first frames
    /// are out (the whole job of a `video.metadata` probe).
    Probe,
    /// Decode, scale, encode and segment (one stage: they run concurrently).
    Transcode,
    /// A `video.thumbnail` job's decode and JPEG.
    Thumbnail,
    /// Playlists, manifest, fsync and the atomic rename.
    Publish,
    /// An object-store output: what is left to upload after the media work (segments are
    /// uploaded as they close, during `transcode`), master last.
    Upload,
    /// Store the outcome: `video.processed`, or `video.failed` and the dead letter, or the
    /// hand-back copy.
    Record,
    /// The final Ack/Nak/Term, until the server confirms it.
    Ack,
}

impl Stage {
    const ALL: [Stage; 10] = [
        Stage::Validate,
        Stage::Fetch,
        Stage::Start,
        Stage::Probe,
        Stage::Transcode,
        Stage::Thumbnail,
        Stage::Publish,
        Stage::Upload,
        Stage::Record,
        Stage::Ack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Validate => "validate",
            Stage::Fetch => "fetch",
            Stage::Start => "start",
            Stage::Probe => "probe",
            Stage::Transcode => "transcode",
            Stage::Thumbnail => "thumbnail",
            Stage::Publish => "publish",
            Stage::Upload => "upload",
            Stage::Record => "record",
            Stage::Ack => "ack",
        }
    }
}

/// Seconds spent per stage so far, and the stage running now.
struct Clock {
    current: Stage,
    since: Instant,
    spent: [Option<f64>; Stage::ALL.len()],
}

impl Clock {
    fn new() -> Clock {
        Clock {
            current: Stage::Validate,
            since: Instant::now(),
            spent: [None; Stage::ALL.len()],
        }
    }

    fn close_current(&mut self, now: Instant) {
        let i = self.current as usize;
        let t = now.duration_since(self.since).as_secs_f64();
        self.spent[i] = Some(self.spent[i].unwrap_or(0.0) + t);
        self.since = now;
    }

    fn enter(&mut self, stage: Stage) {
        if stage != self.current {
            self.close_current(Instant::now());
            self.current = stage;
        }
    }
}

tokio::task_local! {
    static CLOCK: Mutex<Clock>;
}

/// Runs one job's future with its stage clock (starting in [`Stage::Validate`]).
pub(crate) async fn timed<F: Future>(job: F) -> F::Output {
    CLOCK.scope(Mutex::new(Clock::new()), job).await
}

/// The job running on this task is now in `stage` (a no-op outside [`timed`]).
pub(crate) fn enter(stage: Stage) {
    let _ = CLOCK.try_with(|c| {
        if let Ok(mut c) = c.lock() {
            c.enter(stage);
        }
    });
}

/// The stage timings of the job on this task, the running stage closed.
fn stage_times() -> Vec<(Stage, f64)> {
    CLOCK
        .try_with(|c| {
            let Ok(mut c) = c.lock() else {
                return Vec::new();
            };
            c.close_current(Instant::now());
            Stage::ALL
                .iter()
                .zip(c.spent)
                .filter_map(|(s, t)| Some((*s, t?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The job's message is settled: records its metrics, and logs one line with its outcome and
/// stage timings (in its span, so with its video_id, kind, sequence and attempt).
pub(crate) fn job_finished(
    kind: JobKind,
    outcome: &'static str,
    error: Option<&'static str>,
    started: Instant,
) {
    let seconds = started.elapsed().as_secs_f64();
    let stages = stage_times();
    let at = |s: Stage| {
        stages
            .iter()
            .find(|(x, _)| *x == s)
            .map_or(0.0, |(_, t)| (t * 1000.0).round() / 1000.0)
    };
    tracing::info!(
        outcome,
        error,
        seconds = (seconds * 1000.0).round() / 1000.0,
        validate_seconds = at(Stage::Validate),
        fetch_seconds = at(Stage::Fetch),
        start_seconds = at(Stage::Start),
        probe_seconds = at(Stage::Probe),
        transcode_seconds = at(Stage::Transcode),
        thumbnail_seconds = at(Stage::Thumbnail),
        publish_seconds = at(Stage::Publish),
        upload_seconds = at(Stage::Upload),
        record_seconds = at(Stage::Record),
        ack_seconds = at(Stage::Ack),
        "job finished"
    );
    // After the line: whoever sees the count can find the line.
    metrics::job_settled(kind, outcome, error, seconds);
    for (stage, t) in &stages {
        metrics::stage_time(kind, stage.as_str(), *t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_jobs_time_is_split_over_the_stages_it_entered() {
        let stages = timed(async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            enter(Stage::Start);
            enter(Stage::Transcode);
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            enter(Stage::Transcode);
            enter(Stage::Record);
            stage_times()
        })
        .await;
        let names: Vec<_> = stages.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["validate", "start", "transcode", "record"]);
        assert!(stages[0].1 >= 0.02, "{stages:?}");
        assert!(stages[2].1 >= 0.03, "{stages:?}");
        assert!(stages[1].1 < 0.02, "{stages:?}");
        // Outside a job: nothing, and no panic.
        enter(Stage::Ack);
        assert!(stage_times().is_empty());
    }
}
