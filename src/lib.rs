//! video-worker: turns uploaded videos into HLS ladders, in-process, through the FFmpeg
//! libraries. One decode per source, one libx264 encoder per quality on its own thread,
//! audio encoded once, segments cut on a shared IDR grid, output published atomically.
//!
//! The map of the crate (the bench, `video-worker bench`, is its own crate in `crates/bench`,
//! outside the product binary). The library takes plain configuration values
//! (`queue::worker::WorkerConfig`, `queue::NatsConfig`, `queue::Topology`,
//! `queue::submit::SubmitOptions`, `media::TranscodeRequest`), each default in its `Default`
//! or a named constant; the binary's `cli` module owns clap and the configuration file
//! (flags > environment > file > defaults).
//!
//! - [`check`]: `video-worker check`: an HLS VOD ladder (ours or anyone's, in a folder or over
//!   http(s)) against the rules of Apple's HLS Authoring Specification, by number: `measure`
//!   (m3u8-rs, and the FFmpeg libraries in-process: IDRs, durations, key frames; their http(s)
//!   protocols for a URL) → `model::Ladder` → the pure `rules`; also run on every job's staging
//!   output before it is published.
//! - [`error`]: `JobError` and its `ErrorKind`, which decides exit status / Ack, Nak or Term.
//! - [`isolation`]: each job's media work in a child process of this binary (`job-exec`):
//!   limits, progress lines, a stall/wall/cancel watchdog, signal deaths as typed errors.
//! - [`job`]: the wire contract: job payload → validated `Job` (ids, sizes, confined paths, an
//!   output it may replace), the `video.processed` / `video.failed` / progress event payloads.
//! - [`ladder`]: qualities, bitrates, no-upscale and orientation rules → `Ladder`.
//! - [`media`]: everything that touches FFmpeg (no tokio inside):
//!   - `media::probe`: opening a source safely (file protocol, container whitelist), `SourceInfo`;
//!   - `media::arriving`: an object source read while the worker still downloads it (a chunk
//!     map shared with the worker; a custom AVIO that waits for each chunk and marks what it
//!     waits for, which the worker fetches by range when the download is far from it; publish
//!     only once the source is whole and verified);
//!   - `media::pipeline`: the fan-out: thread budget, channels, rendition threads, joining;
//!   - `media::demux`: packets (bounded read errors) and the video decoder (per-frame limits);
//!   - `media::decode`: the single decode, orientation + constant frame rate, progress;
//!   - `media::graph`: filter graphs, rebuilt when a frame's size, format or layout changes;
//!     the deinterlacer (bwdif) for interlaced sources;
//!   - `media::rendition`: one thread per quality: scale → libx264 → segmenter;
//!   - `media::audio`: decode → stereo 48 kHz → AAC, once per job, never past the video;
//!   - `media::hls`: the `Segmenter` (MPEG-TS or fMP4, keyframe byte ranges), RFC 8216 bit
//!     rates, the playlists (media, I-frame, master with the audio group);
//!   - `media::quality`: `--measure-quality`, each rendition's PSNR against its input;
//!   - `media::thumbnail`; `media::output` (which folder may be replaced, per-output lock,
//!     staging dir, fsync, atomic publish); `media::manifest` (manifest.json and the request
//!     fingerprint); `media::confine` (paths opened without following swapped-in symlinks);
//!   - `media::ffi`: the FFmpeg calls ffmpeg-next lacks, each `unsafe` block argued (every
//!     `unsafe` block in the crate carries a `// SAFETY:` comment; clippy denies one without).
//! - [`queue`]: everything that touches NATS (no FFmpeg inside): connection (credentials read
//!   from URLs, secrets redacted), stream/consumer setup with drift reports, the worker (`run`:
//!   lanes, execution through a job process, the pure `disposition` of each message and its one
//!   executor, the max-deliveries backstop), events, dead letters, callbacks, `submit`,
//!   `streams`.
//! - [`storage`]: sources and outputs in S3 (`s3://`) and the JetStream object store
//!   (`nats-object://`): typed locations and their confinement, classified store errors, the
//!   source streamed to scratch (whole first, or read by the job as it arrives: `--source-read
//!   overlap`), segments uploaded as they close, master last (commit point).
//! - [`telemetry`]: operating the worker: `--log-format text|json` (a job's lines carry its
//!   video_id, kind, sequence and attempt; stage timings at its end), Prometheus metrics, and
//!   `/metrics`, `/healthz`, `/readyz` on `--metrics-addr`.

/// `FromStr` and `Display` of a fieldless enum by the names it has on the command line and in
/// files: `named_enum!(Type, "what it is", { Variant => "name", … });`.
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?} ({})",
                        $what,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $($ty::$variant => $name,)+
                })
            }
        }
    };
}

pub mod check;
pub mod error;
pub mod isolation;
pub mod job;
pub mod ladder;
pub mod media;
pub mod queue;
pub mod storage;
pub mod telemetry;

pub use error::{ErrorKind, JobError};

/// `video-worker --version`: ours, and the FFmpeg we were built against and run with.
pub fn version_string() -> String {
    format!(
        "{} (built against FFmpeg {}, libavcodec {}; running FFmpeg {})",
        env!("CARGO_PKG_VERSION"),
        env!("VW_FFMPEG_VERSION"),
        env!("VW_LIBAVCODEC_VERSION"),
        media::ffi::runtime_version()
    )
}
