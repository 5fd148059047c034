//! Thin binary: parse the command line (`cli`: clap's definitions, and the layering of flags,
//! environment and configuration file into the library's plain configuration), call the
//! library, print the result.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use video_worker::job::resolve_path;
use video_worker::ladder::Quality;
use video_worker::media::{self, Limits, ProgressTick, TranscodeRequest};
use video_worker::queue::worker::WorkerConfig;
use video_worker::queue::QueueError;
use video_worker::storage;
use video_worker::telemetry::logs::{self, LogFormat};
use video_worker::JobError;

mod cli;

use cli::{layers, CheckArgs, Cli, Command, StreamsArgs, SubmitArgs, TranscodeArgs, WorkerArgs};

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
        let stores = std::sync::Arc::new(storage::Stores::new(args.storage.config(), nats));
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
    req.thumbnail_time = args.thumbnail_time;
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
    // This process lives for one job, as the worker's job processes do.
    media::keep_freed_memory();
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

/// Flags and environment over the configuration file over the defaults (see `cli::layers`).
fn worker_config(
    args: &WorkerArgs,
    matches: &ArgMatches,
    file: Option<&Path>,
) -> Result<WorkerConfig, QueueError> {
    layers::worker(args, matches, layers::read_file(file)?)
}

fn run(args: &WorkerArgs, matches: &ArgMatches, file: Option<&Path>) -> ExitCode {
    let result = worker_config(args, matches, file).and_then(|config| {
        runtime()?.block_on(video_worker::queue::worker::run(config, shutdown_signal()))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => queue_error(e),
    }
}

/// `video-worker config`: what `run` would run with, as TOML, secrets redacted.
fn config(args: &WorkerArgs, matches: &ArgMatches, file: Option<&Path>) -> ExitCode {
    match worker_config(args, matches, file).and_then(|c| layers::to_toml(&c)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => queue_error(e),
    }
}

fn submit(args: &SubmitArgs, matches: &ArgMatches, file: Option<&Path>) -> ExitCode {
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
    let result = layers::read_file(file)
        .and_then(|file| layers::connection(&args.nats, &args.topology, matches, file))
        .and_then(|c| {
            let options = args.options(c.nats, c.topology);
            runtime()?.block_on(video_worker::queue::submit::submit(&options, &on_progress))
        });
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

fn streams(args: &StreamsArgs, matches: &ArgMatches, file: Option<&Path>) -> ExitCode {
    let result = layers::read_file(file)
        .and_then(|file| layers::connection(&args.nats, &args.topology, matches, file))
        .and_then(|c| {
            runtime()?.block_on(video_worker::queue::status::streams(&c.nats, &c.topology))
        });
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
        Some(dir) => {
            std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command(), dir))
        }
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

fn check(args: &CheckArgs) -> ExitCode {
    if let Some(pem) = &args.ca_file {
        video_worker::check::trust_ca_file(pem);
    }
    let report = video_worker::check::master_location(&args.target)
        .and_then(|master| video_worker::check::check(&master));
    match report {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", report.to_text());
            }
            if report.failed_musts().next().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            if args.json {
                println!("{}", json!({ "error": e }));
            } else {
                eprintln!("error: {e}");
            }
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
    // The subcommand's own matches: where `layers` asks which values the user gave.
    let sub = matches.subcommand().map_or(&matches, |(_, m)| m);
    let file = cli.config.as_deref();
    match cli.command {
        Command::Transcode(args) => transcode(*args),
        Command::Run(args) => run(&args, sub, file),
        Command::Submit(args) => submit(&args, sub, file),
        Command::Streams(args) => streams(&args, sub, file),
        Command::Config(args) => config(&args, sub, file),
        Command::Bench { args } => bench(args),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir),
        Command::Check(args) => check(&args),
        Command::JobExec => video_worker::isolation::job_exec(),
    }
}
