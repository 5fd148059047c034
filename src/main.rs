//! Thin binary: parse the command line, call the library, print the result.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use video_worker::job::{parse_timestamp, resolve_path};
use video_worker::ladder::Quality;
use video_worker::media::{self, Limits, ProgressTick, TranscodeRequest};
use video_worker::queue::status::StreamsArgs;
use video_worker::queue::submit::SubmitArgs;
use video_worker::queue::worker::WorkerArgs;
use video_worker::queue::QueueError;
use video_worker::storage::{self, StorageArgs};
use video_worker::telemetry::logs::{self, LogFormat};
use video_worker::JobError;

#[derive(Parser)]
#[command(name = "video-worker", about = "In-process HLS transcoding worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: text, or one JSON object per line. Filter with RUST_LOG (or VW_LOG)
    /// (e.g. `info,async_nats=warn`).
    #[arg(long, global = true, value_enum, env = "VW_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Transcode one source into an HLS ladder (master + media playlists, segments, thumbnail).
    Transcode(Box<TranscodeArgs>),
    /// Run the JetStream worker: pull jobs from video.process / video.thumbnail /
    /// video.metadata, ack each when its output is complete.
    Run(Box<WorkerArgs>),
    /// Publish a job (deduplicated by video_id); with --wait, follow it to its outcome.
    Submit(Box<SubmitArgs>),
    /// Show stream, consumer and dead-letter state.
    Streams(Box<StreamsArgs>),
    /// Benchmark against the CLI workers: runs `video-worker-bench` (a development tool built
    /// beside this binary, not part of it) with the arguments that follow; see its --help.
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<OsString>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout, e.g.
    /// `video-worker completions bash > /etc/bash_completion.d/video-worker`.
    Completions {
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, e.g. `video-worker man | man -l -`; with --dir,
    /// write one page per command (video-worker.1, video-worker-run.1, …) there instead.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Internal: the job process `run` starts per job. Reads one JSON request on stdin,
    /// writes JSON lines (progress, result) on stdout.
    #[command(hide = true)]
    JobExec,
}

#[derive(Args)]
struct TranscodeArgs {
    /// Source video: a local file, `s3://BUCKET/KEY` or `nats-object://BUCKET/NAME`.
    source: PathBuf,
    /// Output directory; it appears only when complete. An existing one is replaced only if
    /// it is empty or an earlier `transcode` output (see --force). Or an object prefix
    /// (`s3://BUCKET/PREFIX`, `nats-object://BUCKET/PREFIX`): master.m3u8 is stored last.
    output_dir: PathBuf,
    /// Replace OUTPUT_DIR even if it is not an earlier output of this command (a folder that
    /// holds the source is refused all the same).
    #[arg(long)]
    force: bool,
    /// Qualities to produce, comma separated (1080p, 720p, 480p, 360p, 240p, 144p).
    #[arg(long, value_delimiter = ',', default_value = "1080p,720p,480p")]
    quality: Vec<String>,
    /// Thumbnail time: HH:MM:SS[.fff] or seconds; clamped to the video.
    #[arg(long, default_value = "00:00:05")]
    thumbnail_time: String,
    /// Segment length in seconds (Apple's HLS authoring value: 6).
    #[arg(long, default_value_t = media::DEFAULT_SEGMENT_SECONDS)]
    segment_seconds: f64,
    /// Keyframe interval in seconds (Apple's HLS authoring value: 2).
    #[arg(long, default_value_t = media::DEFAULT_GOP_SECONDS)]
    gop_seconds: f64,
    /// libx264 preset.
    #[arg(long, default_value = "medium")]
    preset: String,
    /// Audio as its own rendition, stored once (`separate`), or muxed into every video
    /// rendition (`muxed`, for players that cannot take an audio group).
    #[arg(long, default_value = "separate")]
    audio: media::AudioLayout,
    /// Segment container: MPEG-TS (`ts`) or fragmented MP4 / CMAF (`fmp4`: an init segment
    /// per rendition and `.m4s` segments).
    #[arg(long, default_value = "ts")]
    segments: media::hls::SegmentFormat,
    /// An interlaced source keeps its field rate (50i → 50p) in renditions whose shorter side
    /// is at most this; larger ones get its frame rate (50i → 25p). 0: never.
    #[arg(long, default_value_t = video_worker::ladder::DEFAULT_FIELD_RATE_UP_TO)]
    field_rate_up_to: u32,
    /// Measure each rendition's PSNR against the scaled source while encoding (libx264's
    /// own statistics), reported in the result.
    #[arg(long)]
    measure_quality: bool,
    /// Encoder threads shared by all renditions (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print one JSON object with the result (or the error) on stdout.
    #[arg(long)]
    json: bool,
    /// Refuse sources wider than this.
    #[arg(long, default_value_t = Limits::default().max_width)]
    max_width: u32,
    /// Refuse sources taller than this.
    #[arg(long, default_value_t = Limits::default().max_height)]
    max_height: u32,
    /// Refuse sources longer than this many seconds.
    #[arg(long, default_value_t = Limits::default().max_duration)]
    max_duration: f64,
    /// The slowest libx264 preset a job may use (ultrafast … placebo).
    #[arg(long, default_value = Limits::default().slowest_preset, value_parser = media::probe::parse_preset)]
    max_preset: &'static str,
    /// NATS server for `nats-object://` locations.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[command(flatten)]
    storage: StorageArgs,
}

/// Where a command-line path points: an object, or a local path.
fn location(path: &std::path::Path) -> Result<storage::Location, JobError> {
    let text = path.to_string_lossy();
    if storage::is_object_url(&text) {
        return storage::ObjectUrl::parse(&text, false).map(storage::Location::Object);
    }
    Ok(storage::Location::Local(path.to_path_buf()))
}

/// `transcode` with an object source or output: download, transcode here, upload.
fn transcode_objects(
    args: &TranscodeArgs,
    progress: std::sync::Arc<dyn Fn(&ProgressTick) + Send + Sync>,
) -> Result<(media::Outcome, Option<storage::run::UploadReport>), JobError> {
    let req = request(args)?;
    let source = match location(&args.source)? {
        storage::Location::Local(_) => storage::Location::Local(req.source.clone()),
        object => object,
    };
    let output = match location(&args.output_dir)? {
        storage::Location::Local(_) => storage::Location::Local(req.output_dir.clone()),
        object => object,
    };
    let rt = runtime().map_err(|e| JobError::internal(e.to_string()))?;
    rt.block_on(async {
        let uses_nats = [&source, &output].iter().any(|l| {
            matches!(l, storage::Location::Object(u) if u.scheme == storage::Scheme::NatsObject)
        });
        let nats = match uses_nats {
            true => {
                let url = args
                    .storage
                    .object_nats_url
                    .as_deref()
                    .unwrap_or(&args.nats_url);
                Some(storage::connect_nats(url).await?)
            }
            false => None,
        };
        let stores = std::sync::Arc::new(storage::Stores::new(args.storage.clone(), nats));
        let cancel = std::sync::Arc::new(AtomicBool::new(false));
        storage::run::transcode(stores, &source, &output, req, cancel, progress).await
    })
}

fn request(args: &TranscodeArgs) -> Result<TranscodeRequest, JobError> {
    // The library refuses a symlink on the paths it is given (one swapped in after they were
    // checked); the command line's paths are the user's own, so their symlinks are resolved
    // here, once.
    let source = args
        .source
        .canonicalize()
        .unwrap_or_else(|_| args.source.clone());
    let output = std::path::absolute(&args.output_dir)
        .ok()
        .and_then(|p| resolve_path(&p))
        .unwrap_or_else(|| args.output_dir.clone());
    let mut req = TranscodeRequest::new(source, output)?;
    req.qualities = Quality::parse_list(&args.quality)?;
    req.thumbnail_time = parse_timestamp(&args.thumbnail_time)?;
    req.segment_seconds = args.segment_seconds;
    req.gop_seconds = args.gop_seconds;
    req.preset = args.preset.clone();
    req.threads = args.threads;
    req.force = args.force;
    req.audio_layout = args.audio;
    req.field_rate_up_to = args.field_rate_up_to;
    req.measure_quality = args.measure_quality;
    req.segments = args.segments;
    req.limits = Limits {
        max_width: args.max_width,
        max_height: args.max_height,
        max_duration: args.max_duration,
        slowest_preset: args.max_preset,
    };
    Ok(req)
}

fn transcode(args: TranscodeArgs) -> ExitCode {
    let bar = (std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(100);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {percent:>3}% {msg} (elapsed {elapsed}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let shown = bar.clone();
    let progress = move |tick: &ProgressTick| {
        if let Some(bar) = &shown {
            bar.set_position(tick.percent.round() as u64);
            bar.set_message(format!("{} frames, {:.1} fps", tick.frames, tick.fps));
        }
    };
    let cancel = AtomicBool::new(false);
    let objects = [&args.source, &args.output_dir]
        .iter()
        .any(|p| storage::is_object_url(&p.to_string_lossy()));
    let mut upload = None;
    let result = if objects {
        transcode_objects(&args, std::sync::Arc::new(progress)).map(|(outcome, report)| {
            upload = report;
            outcome
        })
    } else {
        request(&args).and_then(|req| media::transcode(&req, &cancel, &progress))
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(outcome) => {
            if args.json {
                let mut value = serde_json::to_value(&outcome).unwrap_or_default();
                if let (Some(report), Some(map)) = (&upload, value.as_object_mut()) {
                    map.insert("upload".into(), json!(report));
                }
                println!("{value}");
            } else {
                println!(
                    "{}: {} renditions, {:.2} s, {} frames decoded, in {:.1} s",
                    outcome.output_dir.display(),
                    outcome.renditions.len(),
                    outcome.duration,
                    outcome.frames_decoded,
                    outcome.elapsed_seconds
                );
                for r in &outcome.renditions {
                    println!(
                        "  {:>6} {}x{} {} segments, {} kb/s avg, {} kb/s peak, {}",
                        r.quality,
                        r.width,
                        r.height,
                        r.segments,
                        r.average_bandwidth / 1000,
                        r.bandwidth / 1000,
                        r.codecs
                    );
                }
                if let Some(a) = &outcome.audio {
                    println!(
                        "  {:>6} {} ({}) {} segments, {} kb/s avg, {} kb/s peak, {}",
                        "audio",
                        a.name,
                        a.language,
                        a.segments,
                        a.average_bandwidth / 1000,
                        a.bandwidth / 1000,
                        a.codecs
                    );
                }
                for s in &outcome.skipped {
                    println!("  skipped {}: {}", s.quality, s.reason);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    json!({ "error": { "kind": e.kind, "message": e.message } })
                );
            } else {
                eprintln!("error ({}): {}", e.kind, e.message);
            }
            ExitCode::from(1)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stopping only on Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, QueueError> {
    // Few threads: the async side only moves messages; the media work runs on its own threads.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| QueueError::Config(format!("starting the async runtime: {e}")))
}

fn queue_error(e: QueueError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}

fn run(args: WorkerArgs) -> ExitCode {
    let result = runtime()
        .and_then(|rt| rt.block_on(video_worker::queue::worker::run(args, shutdown_signal())));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => queue_error(e),
    }
}

fn submit(args: SubmitArgs) -> ExitCode {
    let show = std::io::stderr().is_terminal() && !args.json;
    let on_progress = move |p: &video_worker::job::ProgressEvent| {
        if show {
            eprint!(
                "\r{}: {:>5.1}% {:?} {} frames {:.1} fps ETA {}   ",
                p.video_id,
                p.percent,
                p.stage,
                p.frames,
                p.fps,
                p.eta_seconds
                    .map(|e| format!("{e:.0} s"))
                    .unwrap_or_else(|| "?".into())
            );
        }
    };
    let result = runtime()
        .and_then(|rt| rt.block_on(video_worker::queue::submit::submit(&args, &on_progress)));
    if show {
        eprintln!();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => return queue_error(e),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        println!(
            "submitted {} to {} (stream {} sequence {}{})",
            report.video_id,
            report.subject,
            report.stream,
            report.sequence,
            if report.duplicate {
                ", duplicate: already stored"
            } else {
                ""
            }
        );
        if let Some(p) = &report.processed {
            println!(
                "processed by {} (attempt {}{}): {}",
                p.worker,
                p.attempt,
                if p.reused_output {
                    ", output reused"
                } else {
                    ""
                },
                p.master_playlist
                    .as_ref()
                    .or(p.thumbnail.as_ref())
                    .map(|x| x.display().to_string())
                    .unwrap_or_else(|| "metadata".into())
            );
        }
        if let Some(f) = &report.failed {
            println!("failed ({}): {} (attempt {})", f.kind, f.message, f.attempt);
        }
        if report.timed_out {
            println!("timed out waiting for the outcome");
        }
    }
    if report.succeeded(args.wait) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn streams(args: StreamsArgs) -> ExitCode {
    let result = runtime().and_then(|rt| rt.block_on(video_worker::queue::status::streams(&args)));
    match result {
        Ok(status) => {
            if args.json {
                println!("{}", serde_json::to_string(&status).unwrap_or_default());
            } else {
                println!("{status}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => queue_error(e),
    }
}

/// `video-worker bench ARGS` = `video-worker-bench ARGS`, git-style: the bench is its own
/// binary (crates/bench) so that it is not in the product binary or its image. Looked for
/// beside this binary first (both land in target/release), then on PATH.
fn bench(args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    const BENCH: &str = "video-worker-bench";
    let program = std::env::current_exe()
        .map(|exe| exe.with_file_name(BENCH))
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(BENCH));
    // exec only returns on failure.
    let error = std::process::Command::new(&program).args(args).exec();
    eprintln!(
        "error: cannot run {} ({error}): the bench is a separate development binary; build it \
         with `cargo build --release` (target/release/{BENCH})",
        program.display()
    );
    ExitCode::from(1)
}

/// The command line's definition, with the version `--version` prints (ours and FFmpeg's).
fn command() -> clap::Command {
    Cli::command().version(video_worker::version_string())
}

/// `video-worker completions SHELL`.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = command();
    clap_complete::generate(shell, &mut cmd, "video-worker", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `video-worker man [--dir DIR]`.
fn man(dir: Option<PathBuf>) -> ExitCode {
    let result = match &dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(command(), dir)),
        None => clap_mangen::Man::new(command()).render(&mut std::io::stdout()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the man page: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The worker logs what it does; the one-shot commands only warnings.
    let (default_level, format) = match cli.command {
        Command::Run(_) => ("info", cli.log_format),
        // The job process's stderr is relayed line by line into the worker's own log: text.
        Command::JobExec => ("warn", LogFormat::Text),
        _ => ("warn", cli.log_format),
    };
    logs::init(format, default_level);
    match cli.command {
        Command::Transcode(args) => transcode(*args),
        Command::Run(args) => run(*args),
        Command::Submit(args) => submit(*args),
        Command::Streams(args) => streams(*args),
        Command::Bench { args } => bench(args),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir),
        Command::JobExec => video_worker::isolation::job_exec(),
    }
}
