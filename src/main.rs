//! Thin binary: parse the command line, call the library, print the result.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use video_worker::job::parse_timestamp;
use video_worker::ladder::Quality;
use video_worker::media::{self, Limits, ProgressTick, TranscodeRequest};
use video_worker::JobError;

#[derive(Parser)]
#[command(name = "video-worker", about = "In-process HLS transcoding worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Transcode one source into an HLS ladder (master + media playlists, segments, thumbnail).
    Transcode(TranscodeArgs),
}

#[derive(Args)]
struct TranscodeArgs {
    /// Source video file (local path).
    source: PathBuf,
    /// Output directory; it appears only when complete (an existing one is replaced).
    output_dir: PathBuf,
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
}

fn request(args: &TranscodeArgs) -> Result<TranscodeRequest, JobError> {
    let mut req = TranscodeRequest::new(&args.source, &args.output_dir)?;
    req.qualities = Quality::parse_list(&args.quality)?;
    req.thumbnail_time = parse_timestamp(&args.thumbnail_time)?;
    req.segment_seconds = args.segment_seconds;
    req.gop_seconds = args.gop_seconds;
    req.preset = args.preset.clone();
    req.threads = args.threads;
    req.limits = Limits {
        max_width: args.max_width,
        max_height: args.max_height,
        max_duration: args.max_duration,
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
    let progress = |tick: &ProgressTick| {
        if let Some(bar) = &bar {
            bar.set_position(tick.percent.round() as u64);
            bar.set_message(format!("{} frames, {:.1} fps", tick.frames, tick.fps));
        }
    };
    let cancel = AtomicBool::new(false);
    let result = request(&args).and_then(|req| media::transcode(&req, &cancel, &progress));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(outcome) => {
            if args.json {
                println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let version = video_worker::version_string();
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Transcode(args) => transcode(args),
    }
}
