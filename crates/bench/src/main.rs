//! `video-worker-bench` (also reached as `video-worker bench`, which forwards here): parse the
//! command line, run the bench, turn its verdict into an exit status.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

use video_worker_bench::{BenchArgs, Parity};

/// Benchmark our pipeline against the CLI workers (seed-cli, one single ffmpeg command per
/// --ffmpeg, each at its faster threading) at equal quality: table on stdout, report.json and
/// chart.svg in --out. With --videos N --jobs K: a host's throughput (throughput.json); with
/// --cores 1,2: wall time under taskset (scaling.json). Exit status 3: quality parity failed.
#[derive(Parser)]
#[command(name = "video-worker bench", bin_name = "video-worker-bench")]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    // `--version` as the worker prints it: ours and the FFmpeg libraries'.
    let matches = Cli::command()
        .version(video_worker::version_string())
        .get_matches();
    let args = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli.args,
        Err(e) => e.exit(),
    };
    match video_worker_bench::run(&args) {
        Ok(Parity::Passed) => ExitCode::SUCCESS,
        Ok(Parity::Failed) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
