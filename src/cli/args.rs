//! The flags of each command, each also settable by an environment variable where the
//! platform guide names one. Defaults are read from the library's `Default` impls and
//! constants (so `--help` shows them and they are spelled once). Field names are the arg ids
//! and the configuration file's keys at once: `layers` relies on it to lay the given flags over
//! the file (a debug build panics on a name that is not an arg).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::Args;
use serde::Serialize;

use video_worker::job::{parse_timestamp, JobKind};
use video_worker::ladder;
use video_worker::media::{self, Limits};
use video_worker::queue::connect::DEFAULT_NATS_URL;
use video_worker::queue::setup::MAX_REPLICAS;
use video_worker::queue::submit::{SubmitOptions, DEFAULT_WAIT_TIMEOUT_SECONDS};
use video_worker::queue::worker::{Concurrency, WorkerConfig};
use video_worker::queue::{NatsConfig, Topology};
use video_worker::storage::{Secret, SourceRead, StorageConfig};

/// `process`, `thumbnail` or `metadata`, offered as such to completions.
fn job_kind() -> impl TypedValueParser<Value = JobKind> {
    clap::builder::PossibleValuesParser::new(JobKind::ALL.map(JobKind::as_str))
        .try_map(|s| s.parse::<JobKind>())
}

/// A libx264 preset name, checked.
fn preset_name(s: &str) -> Result<String, String> {
    media::probe::parse_preset(s).map(String::from)
}

/// HH:MM:SS[.fff] or seconds.
fn timestamp(s: &str) -> Result<f64, String> {
    parse_timestamp(s).map_err(|e| e.message)
}

/// How to reach the NATS server(s): the `[nats]` table of the file.
#[derive(Debug, Clone, Args, Serialize)]
pub struct NatsArgs {
    /// Server URL(s), comma separated for a cluster (nats://, tls://). Credentials may be
    /// written in the URL (`nats://user:password@host`, `nats://token@host`); they are used
    /// for the connection and never printed.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        value_delimiter = ',',
        default_values_t = NatsConfig::default().urls,
        hide_env_values = true
    )]
    pub urls: Vec<String>,
    /// User name (server `authorization { user, password }`); needs a password.
    #[arg(long = "nats-user", env = "NATS_USER")]
    pub user: Option<String>,
    /// Password for --nats-user.
    #[arg(long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Authentication token.
    #[arg(long = "nats-token", env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// NKey seed (`SU…`).
    #[arg(
        long = "nats-nkey-seed",
        env = "NATS_NKEY_SEED",
        hide_env_values = true
    )]
    pub nkey_seed: Option<String>,
    /// Credentials file (JWT + NKey seed, `.creds`).
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// CA bundle (PEM) to verify the server with; replaces the system roots.
    #[arg(long = "nats-ca", env = "NATS_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --nats-key.
    #[arg(long = "nats-cert", env = "NATS_CERT")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for --nats-cert.
    #[arg(long = "nats-key", env = "NATS_KEY")]
    pub key: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    #[arg(long = "nats-require-tls", env = "NATS_REQUIRE_TLS")]
    pub require_tls: bool,
    /// Connection name shown by the server (`nats server report connections`).
    #[arg(long = "nats-name", env = "NATS_NAME", default_value_t = NatsConfig::default().name)]
    pub name: String,
    /// Attempts for the first connect (reconnects after that are unlimited).
    #[arg(long = "nats-connect-attempts", default_value_t = NatsConfig::default().connect_attempts)]
    pub connect_attempts: u32,
    /// Timeout of one connection attempt, seconds.
    #[arg(long = "nats-connect-timeout", default_value_t = NatsConfig::default().connect_timeout)]
    pub connect_timeout: f64,
}

/// Streams, subjects and consumers: the `[topology]` table of the file.
#[derive(Debug, Clone, Args, Serialize)]
pub struct TopologyArgs {
    /// Job stream.
    #[arg(long = "stream", env = "VW_STREAM", default_value_t = Topology::default().stream)]
    pub stream: String,
    /// Dead-letter stream.
    #[arg(
        long = "dlq-stream",
        env = "VW_DLQ_STREAM",
        default_value_t = Topology::default().dlq_stream
    )]
    pub dlq_stream: String,
    /// Subject prefix: jobs are `<prefix>.process` …, events `<prefix>.processed` ….
    #[arg(
        long = "subject-prefix",
        env = "VW_SUBJECT_PREFIX",
        default_value_t = Topology::default().prefix
    )]
    pub prefix: String,
    /// Durable consumer of `<prefix>.process`.
    #[arg(long = "consumer", env = "VW_CONSUMER", default_value_t = Topology::default().consumer)]
    pub consumer: String,
    /// Durable consumer of `<prefix>.thumbnail`.
    #[arg(long = "thumbnail-consumer", default_value_t = Topology::default().thumbnail_consumer)]
    pub thumbnail_consumer: String,
    /// Durable consumer of `<prefix>.metadata`.
    #[arg(long = "metadata-consumer", default_value_t = Topology::default().metadata_consumer)]
    pub metadata_consumer: String,
    /// Consumer ack wait, seconds (a running job sends in-progress acks every third of it).
    #[arg(long = "ack-wait", env = "VW_ACK_WAIT", default_value_t = Topology::default().ack_wait)]
    pub ack_wait: f64,
    /// Deliveries of one job before it goes to the dead-letter stream.
    #[arg(
        long = "max-deliver",
        env = "VW_MAX_DELIVER",
        default_value_t = Topology::default().max_deliver
    )]
    pub max_deliver: i64,
    /// Consumer redelivery backoff, seconds, comma separated (none by default; when set, the
    /// server uses its first value as the ack wait).
    #[arg(long = "backoff", value_delimiter = ',')]
    pub backoff: Vec<f64>,
    /// Maximum age of stored jobs and events, days.
    #[arg(long = "max-age-days", default_value_t = Topology::default().max_age_days)]
    pub max_age_days: u64,
    /// Maximum age of dead letters, days.
    #[arg(long = "dlq-max-age-days", default_value_t = Topology::default().dlq_max_age_days)]
    pub dlq_max_age_days: u64,
    /// Largest message the stream accepts, bytes.
    #[arg(long = "max-msg-size", default_value_t = Topology::default().max_msg_size)]
    pub max_msg_size: i32,
    /// Duplicate window, seconds (a re-submitted video_id within it is stored once).
    #[arg(long = "duplicate-window", default_value_t = Topology::default().duplicate_window)]
    pub duplicate_window: u64,
    /// Replicas of the job and dead-letter streams (3 on a three-node cluster); the consumers
    /// inherit the stream's.
    #[arg(
        long = "replicas",
        env = "VW_REPLICAS",
        default_value_t = Topology::default().replicas,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_REPLICAS as u64)
    )]
    pub replicas: usize,
}

/// `video-worker run` (and `config`) options: the file's top level, `[nats]`, `[topology]`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Do not create or check streams and consumers (operator-managed setups).
    #[arg(long)]
    pub no_setup: bool,
    /// Exit when an existing stream or consumer differs from the expected config.
    #[arg(long)]
    pub fail_on_drift: bool,
    /// Job kinds to serve (each has its own consumer), comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = job_kind(),
        default_values_t = WorkerConfig::default().kinds
    )]
    pub kinds: Vec<JobKind>,
    /// Concurrent transcodes: a number (the cores are split evenly between them), or `auto`
    /// (one job per 8 cores, at least one, each on its share: what the container runs).
    #[arg(long, env = "VW_JOBS", default_value_t = WorkerConfig::default().jobs)]
    pub jobs: Concurrency,
    /// Concurrent thumbnail jobs.
    #[arg(long, default_value_t = WorkerConfig::default().thumbnail_jobs)]
    pub thumbnail_jobs: usize,
    /// Concurrent metadata jobs.
    #[arg(long, default_value_t = WorkerConfig::default().metadata_jobs)]
    pub metadata_jobs: usize,
    /// Directory that source_path and output_path must lie in (repeatable; resolved, so `..`
    /// and symlinks cannot leave it), or an object prefix (`s3://bucket/prefix/`,
    /// `nats-object://bucket/`); several may be joined by `:`. None: any path (a warning is
    /// logged).
    #[arg(long = "allow-root", env = "VW_ALLOW_ROOTS")]
    pub allow_roots: Vec<PathBuf>,
    /// Seconds running jobs get to finish after SIGTERM/SIGINT before they are cancelled and
    /// handed back (stored again as a fresh message, so no delivery is used up).
    #[arg(long, env = "VW_GRACE", default_value_t = WorkerConfig::default().grace)]
    pub grace: f64,
    /// Longest wait of one pull request, seconds.
    #[arg(long, default_value_t = WorkerConfig::default().pull_wait)]
    pub pull_wait: f64,
    /// Nak delay after the first failed delivery of a transient error, seconds; doubles per
    /// delivery.
    #[arg(long, default_value_t = WorkerConfig::default().nak_delay)]
    pub nak_delay: f64,
    /// Longest Nak delay, seconds.
    #[arg(long, default_value_t = WorkerConfig::default().nak_max_delay)]
    pub nak_max_delay: f64,
    /// Seconds between two progress events of one job (at least 1).
    #[arg(long, default_value_t = WorkerConfig::default().progress_interval)]
    pub progress_interval: f64,
    /// Host (or host:port) callbacks may go to (repeatable). None: any host, but never a
    /// link-local address (see --callback-allow-link-local).
    #[arg(
        long = "callback-allow-host",
        env = "VW_CALLBACK_HOSTS",
        value_delimiter = ','
    )]
    pub callback_allow_hosts: Vec<String>,
    /// Allow callbacks to link-local addresses (169.254.0.0/16, fe80::/10: where clouds
    /// serve instance metadata and credentials). Off: refused even when the host is listed.
    #[arg(long)]
    pub callback_allow_link_local: bool,
    /// Timeout of one callback POST, seconds.
    #[arg(long, default_value_t = WorkerConfig::default().callback_timeout)]
    pub callback_timeout: f64,
    /// Tries of one callback POST.
    #[arg(long, default_value_t = WorkerConfig::default().callback_attempts)]
    pub callback_attempts: u32,
    /// libx264 preset (a job's `preset` field overrides it).
    #[arg(long, default_value_t = WorkerConfig::default().preset, value_parser = preset_name)]
    pub preset: String,
    /// Encoder threads per transcode (default: --jobs' share of the cores).
    #[arg(long, default_value_t = WorkerConfig::default().threads)]
    pub threads: usize,
    /// Segment length, seconds (a job's `segment_seconds` overrides it).
    #[arg(long, default_value_t = WorkerConfig::default().segment_seconds)]
    pub segment_seconds: f64,
    /// Keyframe interval, seconds (a job's `gop_seconds` overrides it).
    #[arg(long, default_value_t = WorkerConfig::default().gop_seconds)]
    pub gop_seconds: f64,
    /// Audio as its own rendition (`separate`) or muxed into every video rendition (`muxed`).
    #[arg(long, default_value_t = WorkerConfig::default().audio)]
    pub audio: media::AudioLayout,
    /// Segment container: MPEG-TS (`ts`) or fragmented MP4 / CMAF (`fmp4`).
    #[arg(long, default_value_t = WorkerConfig::default().segments)]
    pub segments: media::hls::SegmentFormat,
    /// Measure each rendition's PSNR against the scaled source while encoding; reported in
    /// `video.processed`.
    #[arg(long)]
    pub measure_quality: bool,
    /// Refuse sources wider than this.
    #[arg(long, default_value_t = WorkerConfig::default().max_width)]
    pub max_width: u32,
    /// Refuse sources taller than this.
    #[arg(long, default_value_t = WorkerConfig::default().max_height)]
    pub max_height: u32,
    /// Refuse sources longer than this many seconds.
    #[arg(long, default_value_t = WorkerConfig::default().max_duration)]
    pub max_duration: f64,
    /// The slowest libx264 preset a job may ask for (ultrafast … placebo).
    #[arg(long, default_value_t = WorkerConfig::default().max_preset, value_parser = preset_name)]
    pub max_preset: String,
    /// Memory a job process may map beyond the loaded binary, MiB (RLIMIT_AS; virtual size:
    /// a 1080p three-rung ladder peaks near 2 GiB with 8 to 32 encoder threads). 0: no limit.
    #[arg(long, env = "VW_JOB_MEMORY_MIB", default_value_t = WorkerConfig::default().job_memory_mib)]
    pub job_memory_mib: u64,
    /// CPU seconds a job process may use, all threads together (RLIMIT_CPU). 0: no limit.
    #[arg(long, env = "VW_JOB_CPU_SECONDS", default_value_t = WorkerConfig::default().job_cpu_seconds)]
    pub job_cpu_seconds: u64,
    /// Wall-clock seconds a job may run. 0: no limit.
    #[arg(long, env = "VW_JOB_WALL_SECONDS", default_value_t = WorkerConfig::default().job_wall_seconds)]
    pub job_wall_seconds: u64,
    /// Seconds without progress after which a job process is killed (`stalled`); it also
    /// ends the job's in-progress acks. Thumbnail and metadata jobs report no progress: for
    /// them it bounds the whole job.
    #[arg(long, env = "VW_JOB_STALL_SECONDS", default_value_t = WorkerConfig::default().job_stall_seconds)]
    pub job_stall_seconds: u64,
    /// Seconds the last delivery of a job keeps retrying to store its outcome (event, dead
    /// letter) while holding the message in progress: nothing retries after it.
    #[arg(long, default_value_t = WorkerConfig::default().record_patience)]
    pub record_patience: f64,
    /// Consecutive failed recoveries of a lane's consumer (deleted, stream recreated) after
    /// which the worker exits non-zero so that its supervisor restarts it.
    #[arg(long, default_value_t = WorkerConfig::default().recover_attempts)]
    pub recover_attempts: u32,
    /// Name in events and logs (default: <hostname>-<pid>).
    #[arg(long)]
    pub worker_name: Option<String>,
    /// Sources and outputs in S3 and the NATS object store: the `[storage]` table.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Address to serve Prometheus `/metrics`, `/healthz` and `/readyz` on (e.g.
    /// 0.0.0.0:9090). Off by default.
    #[arg(long, env = "VW_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// `video-worker submit` options (`[nats]` and `[topology]` may come from the file).
#[derive(Debug, Clone, Args, Serialize)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Job JSON from this file (`-`: standard input). Flags below override its fields.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Job kind: the subject it goes to (`video.process`, `video.thumbnail`, `video.metadata`).
    #[arg(long, value_parser = job_kind(), default_value_t = JobKind::default())]
    pub kind: JobKind,
    #[arg(long)]
    pub video_id: Option<String>,
    /// Source file path, as the worker sees it.
    #[arg(long)]
    pub source: Option<String>,
    /// Output directory, as the worker sees it.
    #[arg(long)]
    pub output: Option<String>,
    /// Qualities, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub quality: Vec<String>,
    #[arg(long)]
    pub thumbnail_time: Option<String>,
    #[arg(long)]
    pub user_id: Option<String>,
    #[arg(long)]
    pub callback_url: Option<String>,
    #[arg(long)]
    pub segment_seconds: Option<f64>,
    #[arg(long)]
    pub gop_seconds: Option<f64>,
    #[arg(long)]
    pub preset: Option<String>,
    /// `Nats-Msg-Id` of the job (default `<kind>:<video_id>`): a second submit with the same
    /// id within the duplicate window is not stored again.
    #[arg(long)]
    pub msg_id: Option<String>,
    /// Wait for the job's outcome; exit 0 only on success.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = DEFAULT_WAIT_TIMEOUT_SECONDS)]
    pub timeout: f64,
    /// Do not create the stream when it is missing.
    #[arg(long)]
    pub no_setup: bool,
    /// Print one JSON object (the PubAck, and with --wait the event) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Upload the local --source file to this object URL first (`s3://BUCKET/KEY`,
    /// `nats-object://BUCKET/NAME`), and submit the job with the URL as its source.
    #[arg(long)]
    pub upload: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

impl SubmitArgs {
    /// The library's options, with NATS and the topology as the layers made them.
    pub fn options(&self, nats: NatsConfig, topology: Topology) -> SubmitOptions {
        SubmitOptions {
            nats,
            topology,
            file: self.file.clone(),
            kind: self.kind,
            video_id: self.video_id.clone(),
            source: self.source.clone(),
            output: self.output.clone(),
            quality: self.quality.clone(),
            thumbnail_time: self.thumbnail_time.clone(),
            user_id: self.user_id.clone(),
            callback_url: self.callback_url.clone(),
            segment_seconds: self.segment_seconds,
            gop_seconds: self.gop_seconds,
            preset: self.preset.clone(),
            msg_id: self.msg_id.clone(),
            wait: self.wait,
            timeout: self.timeout,
            no_setup: self.no_setup,
            upload: self.upload.clone(),
            storage: self.storage.config(),
        }
    }
}

/// `video-worker streams` options (`[nats]` and `[topology]` may come from the file).
#[derive(Debug, Clone, Args, Serialize)]
pub struct StreamsArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `video-worker transcode` options (one-shot: flags only, no configuration file).
#[derive(Debug, Clone, Args)]
pub struct TranscodeArgs {
    /// Source video file (local path).
    pub source: PathBuf,
    /// Output directory; it appears only when complete. An existing one is replaced only if
    /// it is empty or an earlier `transcode` output (see --force).
    pub output_dir: PathBuf,
    /// Replace OUTPUT_DIR even if it is not an earlier output of this command (a folder that
    /// holds the source is refused all the same).
    #[arg(long)]
    pub force: bool,
    /// Qualities to produce, comma separated (1080p, 720p, 480p, 360p, 240p, 144p).
    #[arg(long, value_delimiter = ',', default_values = ladder::DEFAULT_QUALITIES.iter().copied())]
    pub quality: Vec<String>,
    /// Thumbnail time: HH:MM:SS[.fff] or seconds; clamped to the video.
    #[arg(long, default_value_t = media::DEFAULT_THUMBNAIL_SECONDS, value_parser = timestamp)]
    pub thumbnail_time: f64,
    /// Segment length in seconds (Apple's HLS authoring value: 6).
    #[arg(long, default_value_t = media::DEFAULT_SEGMENT_SECONDS)]
    pub segment_seconds: f64,
    /// Keyframe interval in seconds (Apple's HLS authoring value: 2).
    #[arg(long, default_value_t = media::DEFAULT_GOP_SECONDS)]
    pub gop_seconds: f64,
    /// libx264 preset.
    #[arg(long, default_value = media::DEFAULT_PRESET)]
    pub preset: String,
    /// Audio as its own rendition, stored once (`separate`), or muxed into every video
    /// rendition (`muxed`, for players that cannot take an audio group).
    #[arg(long, default_value_t = media::AudioLayout::default())]
    pub audio: media::AudioLayout,
    /// Segment container: MPEG-TS (`ts`) or fragmented MP4 / CMAF (`fmp4`: an init segment
    /// per rendition and `.m4s` segments).
    #[arg(long, default_value_t = media::hls::SegmentFormat::default())]
    pub segments: media::hls::SegmentFormat,
    /// An interlaced source keeps its field rate (50i → 50p) in renditions whose shorter side
    /// is at most this; larger ones get its frame rate (50i → 25p). 0: never.
    #[arg(long, default_value_t = ladder::DEFAULT_FIELD_RATE_UP_TO)]
    pub field_rate_up_to: u32,
    /// Measure each rendition's PSNR against the scaled source while encoding (libx264's
    /// own statistics), reported in the result.
    #[arg(long)]
    pub measure_quality: bool,
    /// Encoder threads shared by all renditions (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print one JSON object with the result (or the error) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Refuse sources wider than this.
    #[arg(long, default_value_t = Limits::default().max_width)]
    pub max_width: u32,
    /// Refuse sources taller than this.
    #[arg(long, default_value_t = Limits::default().max_height)]
    pub max_height: u32,
    /// Refuse sources longer than this many seconds.
    #[arg(long, default_value_t = Limits::default().max_duration)]
    pub max_duration: f64,
    /// The slowest libx264 preset a job may use (ultrafast … placebo).
    #[arg(long, default_value = Limits::default().slowest_preset, value_parser = media::probe::parse_preset)]
    pub max_preset: &'static str,
    /// NATS server for `nats-object://` locations.
    #[arg(long, env = "NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub nats_url: String,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// Object storage options (`run`, `transcode`, `submit --upload`; the `[storage]` table of the
/// file). S3 settings come from the environment AWS tools use; each flag overrides its
/// variable. Secret values are hidden in `--help`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct StorageArgs {
    /// Local directory for object sources and outputs while a job runs (one folder per job,
    /// removed after it).
    #[arg(long, env = "VW_SCRATCH", default_value_os_t = StorageConfig::default().scratch)]
    pub scratch: PathBuf,
    /// Largest object source accepted, bytes (its download is refused beyond).
    #[arg(long, env = "VW_MAX_SOURCE_BYTES", default_value_t = StorageConfig::default().max_source_bytes)]
    pub max_source_bytes: u64,
    /// Concurrent uploads of one job's output files.
    #[arg(long, default_value_t = StorageConfig::default().upload_concurrency)]
    pub upload_concurrency: usize,
    /// Create a missing JetStream object store bucket for an output (never for a source).
    #[arg(long)]
    pub create_buckets: bool,
    /// NATS server of the object store (default: the worker's own connection; `transcode`
    /// and `submit` use their --nats-url).
    #[arg(long, env = "VW_OBJECT_NATS_URL")]
    pub object_nats_url: Option<String>,
    /// S3 endpoint (MinIO, Ceph, R2…); path-style requests are used whenever it is set.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "AWS_REGION", default_value_t = StorageConfig::default().s3_region)]
    pub s3_region: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<Secret>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<Secret>,
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<Secret>,
    /// Allow plain-HTTP S3 endpoints (a local store).
    #[arg(long, env = "AWS_ALLOW_HTTP")]
    pub s3_allow_http: bool,
    /// Tries of one S3 request on a 5xx, a timeout or throttling (with exponential backoff).
    #[arg(long, default_value_t = StorageConfig::default().s3_retries)]
    pub s3_retries: usize,
    /// Timeout of one S3 request, seconds; of each read for a source's GET (its body may take
    /// longer as long as it keeps moving).
    #[arg(long, default_value_t = StorageConfig::default().s3_timeout)]
    pub s3_timeout: f64,
    /// How a transcode reads an object source: `download` (whole, digest checked, then
    /// decoded) or `overlap` (decoded while it arrives; published once whole and checked).
    #[arg(long, env = "VW_SOURCE_READ", default_value_t = StorageConfig::default().source_read)]
    pub source_read: SourceRead,
}

impl StorageArgs {
    /// The options as given (flags, environment, defaults): for `transcode` and `submit`,
    /// which read no configuration file for them.
    pub fn config(&self) -> StorageConfig {
        StorageConfig {
            scratch: self.scratch.clone(),
            max_source_bytes: self.max_source_bytes,
            upload_concurrency: self.upload_concurrency,
            create_buckets: self.create_buckets,
            object_nats_url: self.object_nats_url.clone(),
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: self.s3_region.clone(),
            s3_access_key_id: self.s3_access_key_id.clone(),
            s3_secret_access_key: self.s3_secret_access_key.clone(),
            s3_session_token: self.s3_session_token.clone(),
            s3_allow_http: self.s3_allow_http,
            s3_retries: self.s3_retries,
            s3_timeout: self.s3_timeout,
            source_read: self.source_read,
        }
    }
}
