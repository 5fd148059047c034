//! The command line: clap's definitions live here, in the binary; the library receives plain
//! configuration values (`WorkerConfig`, `NatsConfig`, `Topology`, `SubmitOptions`,
//! `TranscodeRequest`), made by [`layers`] from flags, environment and the configuration file.

pub mod args;
pub mod layers;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Parser, Subcommand};

use video_worker::telemetry::logs::LogFormat;

pub use args::{StreamsArgs, SubmitArgs, TranscodeArgs, WorkerArgs};

/// `text` or `json`, offered as such to completions.
fn log_format() -> impl TypedValueParser<Value = LogFormat> {
    clap::builder::PossibleValuesParser::new(LogFormat::ALL.map(LogFormat::as_str))
        .try_map(|s| s.parse::<LogFormat>())
}

#[derive(Parser)]
#[command(name = "video-worker", about = "In-process HLS transcoding worker")]
pub struct Cli {
    /// Configuration file (TOML) for `run`, `config`, and the `[nats]` and `[topology]` of
    /// `submit` and `streams`. Precedence: flags > environment > this file > defaults; see
    /// `video-worker config`.
    #[arg(long, env = "VW_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log lines on stderr: text, or one JSON object per line. Filter with RUST_LOG (or VW_LOG)
    /// (e.g. `info,async_nats=warn`).
    #[arg(
        long,
        global = true,
        env = "VW_LOG_FORMAT",
        value_parser = log_format(),
        default_value_t = LogFormat::default()
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Transcode one source into an HLS ladder (master + media playlists, segments, thumbnail).
    Transcode(Box<TranscodeArgs>),
    /// Run the JetStream worker: pull jobs from video.process / video.thumbnail /
    /// video.metadata, ack each when its output is complete.
    Run(Box<WorkerArgs>),
    /// Publish a job (deduplicated by video_id); with --wait, follow it to its outcome.
    Submit(Box<SubmitArgs>),
    /// Show stream, consumer and dead-letter state.
    Streams(Box<StreamsArgs>),
    /// Print the effective configuration of `run` with these flags, environment and
    /// --config file, as TOML (a file `run --config` reads back), secrets redacted.
    Config(Box<WorkerArgs>),
    /// Benchmark against the CLI workers: runs `video-worker-bench` (a development tool built
    /// beside this binary, not part of it) with the arguments that follow; see its --help.
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<OsString>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout, e.g.
    /// `video-worker completions bash > /etc/bash_completion.d/video-worker`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) on stdout, e.g. `video-worker man | man -l -`; with --dir,
    /// write one page per command (video-worker.1, video-worker-run.1, …) there instead.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check an HLS VOD ladder (a folder, its master playlist, or a file:// URL) against
    /// Apple's HLS Authoring Specification, rule by rule. Exit status 2: a MUST is broken.
    Check(CheckArgs),
    /// Internal: the job process `run` starts per job. Reads one JSON request on stdin,
    /// writes JSON lines (progress, result) on stdout.
    #[command(hide = true)]
    JobExec,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The ladder: a folder holding master.m3u8, a master playlist, or a file:// or
    /// http(s):// URL of one (an http(s) URL ending in `/`: its master.m3u8).
    pub target: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Certificate authorities (PEM) to trust for an https ladder instead of the system's.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,
}
