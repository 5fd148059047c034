//! The worker's Prometheus metrics: their names (all under `video_worker_`, base units, counters
//! ending in `_total`), help texts, histogram buckets, and the one-line hooks the worker calls.
//!
//! The `metrics` facade records; `metrics-exporter-prometheus` (no HTTP server of its own: the
//! worker serves `/metrics` itself, see `health`) renders the text format. Without
//! `--metrics-addr` no recorder is installed and every hook is a no-op.
//!
//! Not here on purpose: what nats-server's exporter already reports about streams and consumers
//! (pending, ack pending, redelivered counts per consumer).

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::isolation::ChildResult;
use crate::job::JobKind;

pub(crate) const BUILD_INFO: &str = "video_worker_build_info";
pub(crate) const JOBS: &str = "video_worker_jobs_total";
pub(crate) const JOB_FAILURES: &str = "video_worker_job_failures_total";
pub(crate) const JOB_DURATION: &str = "video_worker_job_duration_seconds";
pub(crate) const STAGE_DURATION: &str = "video_worker_job_stage_duration_seconds";
pub(crate) const IN_FLIGHT: &str = "video_worker_jobs_in_flight";
pub(crate) const SLOTS: &str = "video_worker_job_slots";
pub(crate) const SLOTS_FREE: &str = "video_worker_job_slots_free";
pub(crate) const REDELIVERIES: &str = "video_worker_redeliveries_total";
pub(crate) const DEAD_LETTERS: &str = "video_worker_dead_letters_total";
pub(crate) const CALLBACKS: &str = "video_worker_callbacks_total";
pub(crate) const FRAMES_DECODED: &str = "video_worker_frames_decoded_total";
pub(crate) const FRAMES_ENCODED: &str = "video_worker_frames_encoded_total";
pub(crate) const ENCODE_FPS: &str = "video_worker_encode_fps";
pub(crate) const READ_BYTES: &str = "video_worker_source_read_bytes_total";
pub(crate) const WRITTEN_BYTES: &str = "video_worker_output_written_bytes_total";
pub(crate) const NATS_CONNECTED: &str = "video_worker_nats_connected";
pub(crate) const NATS_RECONNECTS: &str = "video_worker_nats_reconnects_total";
pub(crate) const NATS_SLOW_CONSUMER: &str = "video_worker_nats_slow_consumer_total";

/// Whole jobs: a metadata probe takes tens of milliseconds, a long 1080p ladder an hour.
const JOB_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0,
];
/// Stages: from a millisecond (an ack) to the transcode itself.
const STAGE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1200.0,
    3600.0,
];
/// Frames per second of one rendition's encoder: from a 4K `veryslow` (~1) to a 144p
/// `ultrafast` (thousands: 240p ultrafast measured ~4000 on one thread here).
const FPS_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// What a job's message ended as (the `outcome` label of `video_worker_jobs_total`).
pub(crate) const OUTCOMES: [&str; 4] = ["succeeded", "retried", "handed_back", "dead_lettered"];

/// Installs the process-wide recorder (once; `run` is the only caller) and returns the handle
/// that renders the scrape.
pub(crate) fn install() -> Result<PrometheusHandle, String> {
    let buckets = [
        (JOB_DURATION, JOB_BUCKETS),
        (STAGE_DURATION, STAGE_BUCKETS),
        (ENCODE_FPS, FPS_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, values) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_string()), values)
            .map_err(|e| format!("metrics buckets of {name}: {e}"))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    describe();
    gauge!(
        BUILD_INFO,
        "version" => env!("CARGO_PKG_VERSION"),
        "ffmpeg" => crate::media::ffi::runtime_version(),
        "ffmpeg_built" => env!("VW_FFMPEG_VERSION"),
    )
    .set(1.0);
    Ok(handle)
}

fn describe() {
    describe_gauge!(
        BUILD_INFO,
        "Always 1: the worker's version and the FFmpeg it runs with (ffmpeg) and was built against (ffmpeg_built)"
    );
    describe_counter!(
        JOBS,
        "Job messages settled, by kind and outcome: succeeded (acked), retried (nak), handed_back (worker stopping), dead_lettered"
    );
    describe_counter!(
        JOB_FAILURES,
        "Failed job attempts, by kind and error kind (retried or dead-lettered)"
    );
    describe_histogram!(
        JOB_DURATION,
        "Seconds from a job message's receipt to its final ack, by kind and outcome"
    );
    describe_histogram!(
        STAGE_DURATION,
        "Seconds a job spent in each stage: validate, fetch (object source), start (job process), probe, transcode, thumbnail, publish, upload (object output), record (events, dead letter), ack"
    );
    describe_gauge!(IN_FLIGHT, "Jobs running now, per lane (job kind)");
    describe_gauge!(
        SLOTS,
        "Job slots per lane (--jobs, --thumbnail-jobs, --metadata-jobs)"
    );
    describe_gauge!(SLOTS_FREE, "Job slots without a running job, per lane");
    describe_counter!(
        REDELIVERIES,
        "Job messages received again after an earlier attempt (redelivered, or a hand-back copy of a tried job)"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Dead letters stored (video.failed + DLQ copy), by kind"
    );
    describe_counter!(
        CALLBACKS,
        "callback_url POSTs after a job's ack, by outcome (delivered, failed)"
    );
    describe_counter!(
        FRAMES_DECODED,
        "Source video frames decoded by finished transcodes"
    );
    describe_counter!(
        FRAMES_ENCODED,
        "Frames encoded by finished transcodes, per rendition"
    );
    describe_histogram!(
        ENCODE_FPS,
        "Encode speed of each finished rendition, frames per second: its frames over the seconds its thread spent scaling, encoding and muxing (not waiting for frames)"
    );
    describe_counter!(
        READ_BYTES,
        "Bytes of sources read by finished transcodes (each reads its source once, whole)"
    );
    describe_counter!(
        WRITTEN_BYTES,
        "Bytes of media written by finished jobs (segments, thumbnails), by kind"
    );
    describe_gauge!(NATS_CONNECTED, "1 while the NATS connection is up");
    describe_counter!(
        NATS_RECONNECTS,
        "NATS connections re-established after a loss"
    );
    describe_counter!(
        NATS_SLOW_CONSUMER,
        "Times the NATS client dropped messages of a subscription whose buffer was full"
    );
}

/// The slot gauges of one lane; [`SlotGauges::busy`] counts a running job.
pub(crate) struct SlotGauges {
    in_flight: Gauge,
    free: Gauge,
}

impl SlotGauges {
    /// Also registers the lane's counters at zero, so that rates exist before the first job.
    pub fn new(kind: JobKind, capacity: u32) -> SlotGauges {
        let k = kind.as_str();
        gauge!(SLOTS, "kind" => k).set(f64::from(capacity));
        for outcome in OUTCOMES {
            counter!(JOBS, "kind" => k, "outcome" => outcome).absolute(0);
        }
        counter!(REDELIVERIES, "kind" => k).absolute(0);
        counter!(DEAD_LETTERS, "kind" => k).absolute(0);
        let (in_flight, free) = (
            gauge!(IN_FLIGHT, "kind" => k),
            gauge!(SLOTS_FREE, "kind" => k),
        );
        in_flight.set(0.0);
        free.set(f64::from(capacity));
        SlotGauges { in_flight, free }
    }

    /// Counts a job as running until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.in_flight.increment(1.0);
        self.free.decrement(1.0);
        Busy(self)
    }
}

/// A running job (see [`SlotGauges::busy`]).
pub(crate) struct Busy<'a>(&'a SlotGauges);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.in_flight.decrement(1.0);
        self.0.free.increment(1.0);
    }
}

/// A job message that was tried before.
pub(crate) fn redelivered(kind: JobKind) {
    counter!(REDELIVERIES, "kind" => kind.as_str()).increment(1);
}

/// A dead letter was stored.
pub(crate) fn dead_lettered(kind: JobKind) {
    counter!(DEAD_LETTERS, "kind" => kind.as_str()).increment(1);
}

/// A callback POST ended.
pub(crate) fn callback(delivered: bool) {
    let outcome = if delivered { "delivered" } else { "failed" };
    counter!(CALLBACKS, "outcome" => outcome).increment(1);
}

/// A job's message was settled.
pub(crate) fn job_settled(
    kind: JobKind,
    outcome: &'static str,
    error: Option<&'static str>,
    seconds: f64,
) {
    let k = kind.as_str();
    counter!(JOBS, "kind" => k, "outcome" => outcome).increment(1);
    if let Some(error) = error {
        counter!(JOB_FAILURES, "kind" => k, "error" => error).increment(1);
    }
    metrics::histogram!(JOB_DURATION, "kind" => k, "outcome" => outcome).record(seconds);
}

/// Time one job spent in one stage.
pub(crate) fn stage_time(kind: JobKind, stage: &'static str, seconds: f64) {
    metrics::histogram!(STAGE_DURATION, "kind" => kind.as_str(), "stage" => stage).record(seconds);
}

/// What the job process produced: frames, encode speed and bytes, counted in the worker from
/// the job process's result line.
pub(crate) fn media_done(kind: JobKind, result: &ChildResult) {
    match result {
        ChildResult::Transcode(o) => {
            counter!(FRAMES_DECODED).increment(o.frames_decoded);
            counter!(READ_BYTES).increment(o.source_bytes);
            let mut written = 0;
            for r in &o.renditions {
                let q = r.quality.clone();
                counter!(FRAMES_ENCODED, "rendition" => q.clone()).increment(r.frames);
                let busy = o.encode_seconds.get(&r.quality).copied().unwrap_or(0.0);
                if busy > 0.0 && r.frames > 0 {
                    metrics::histogram!(ENCODE_FPS, "rendition" => q)
                        .record(r.frames as f64 / busy);
                }
                written += r.bytes;
            }
            counter!(WRITTEN_BYTES, "kind" => kind.as_str()).increment(written);
        }
        ChildResult::Thumbnail(v) => {
            let bytes = v.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0);
            counter!(WRITTEN_BYTES, "kind" => kind.as_str()).increment(bytes);
        }
        ChildResult::Probe(_) => {}
    }
}
