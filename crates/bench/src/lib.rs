//! `video-worker bench` (the `video-worker-bench` binary, a development tool kept out of the
//! product binary and its image): our pipeline side by side with the CLI workers it replaces,
//! each at its best, at equal quality, on real footage. Our pipeline is the `video-worker`
//! binary beside this one (`--worker`), run as `video-worker transcode`. Three modes:
//!
//! ```text
//! source: --source, else the real footage in target/footage (scripts/fetch-footage.sh),
//!         else synthetic testsrc2 + sine (smoke runs only; labelled so in every report)
//!
//! compare (default)  per run, interleaved: seed-cli · per --ffmpeg: single command with
//!   (compare.rs)     ffmpeg's default threading and with our split · in-process · floor
//!                    └► PSNR/SSIM of every contender; one peer per FFmpeg (its faster
//!                       threading); parity and ratios against each; report.json, chart.svg
//! --videos N --jobs K   N clips of the source, K jobs at a time: in-process (each on its share
//!   (throughput.rs)     of the cores) against seed-cli; jobs/hour, CPU s per output minute,
//!                       peak RSS per job; throughput.json
//! --cores 1,2        in-process and each single command under `taskset` at each core count,
//!   (scaling.rs)     with the thread plan at that count; scaling.json
//! ```
//!
//! Every command is a child process measured from outside (wall, user+sys CPU and `ru_maxrss`
//! from `wait4`). The bench calls the `ffmpeg` CLI for the baselines, the floor and the
//! measurements, never for our pipeline.

pub mod child;
mod compare;
pub mod metrics;
pub mod pipelines;
pub mod report;
mod scaling;
mod throughput;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use child::{Measured, Progress};
use pipelines::{Ffmpeg, Rung, Setup, Synthetic};
use video_worker::ladder::{Ladder, Quality};
use video_worker::media::{self, Limits, SourceInfo};

/// `video-worker bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Source video to benchmark on. Default: the real footage that scripts/fetch-footage.sh
    /// puts in target/footage, else a synthetic source (smoke runs only).
    #[arg(long, conflicts_with = "synthetic")]
    pub source: Option<PathBuf>,
    /// Synthetic source HEIGHTp:SECONDS (smoke runs only): testsrc2 16:9 at 25 fps with a sine
    /// track, made with the ffmpeg CLI and cached in --out.
    #[arg(long)]
    pub synthetic: Option<String>,
    /// Ladder, comma separated.
    #[arg(long, value_delimiter = ',', default_values = video_worker::ladder::DEFAULT_QUALITIES.iter().copied())]
    pub quality: Vec<String>,
    /// libx264 preset for every pipeline.
    #[arg(long, default_value = video_worker::media::DEFAULT_PRESET)]
    pub preset: String,
    /// Interleaved runs of each contender (the tables show medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Working directory: source cache, outputs, logs, the JSON reports, chart.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// An ffmpeg CLI to compare against, repeatable: each is a single-command peer; the first
    /// also runs seed-cli, the floor and the measurements. Default: `ffmpeg` (Debian's) and
    /// target/tools/ffmpeg7 when setup installed it.
    #[arg(long)]
    pub ffmpeg: Vec<PathBuf>,
    /// Throughput mode: N different clips of the source through each pipeline, --jobs at a
    /// time.
    #[arg(long, conflicts_with = "cores")]
    pub videos: Option<usize>,
    /// Throughput mode: concurrent jobs, comma separated to compare several (1,2,4).
    #[arg(long, value_delimiter = ',', default_value = "2", requires = "videos")]
    pub jobs: Vec<usize>,
    /// Throughput mode: length of each clip (default: the source split in --videos parts,
    /// 2 to 10 s each).
    #[arg(long, requires = "videos")]
    pub clip_seconds: Option<f64>,
    /// Scaling mode: core counts to run at (under taskset), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
    /// The `video-worker` binary whose `transcode` is measured as in-process. Default: the
    /// one beside this program (`cargo build --release` puts both in target/release).
    #[arg(long)]
    pub worker: Option<PathBuf>,
}

/// The parity verdict of a finished bench (the caller turns it into an exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    Passed,
    /// The report was written, without the ratios that parity did not allow.
    Failed,
}

/// What the source is, as every report labels it.
#[derive(Debug, Clone, PartialEq)]
enum SourceKind {
    /// Real footage with its credit line (licence and origin).
    Footage(String),
    /// A file given with --source.
    Given,
    Synthetic(Synthetic),
}

impl SourceKind {
    fn describe(&self) -> String {
        match self {
            SourceKind::Footage(credit) => format!("real footage: {credit}"),
            SourceKind::Given => "given source".into(),
            // Test patterns decode and encode unlike camera footage or film: never a result.
            SourceKind::Synthetic(s) => {
                format!(
                    "synthetic testsrc2 {}p {} s (smoke only)",
                    s.height, s.seconds
                )
            }
        }
    }
}

/// What every mode starts from: the FFmpegs, the source, the logs.
struct Common {
    ffmpegs: Vec<Ffmpeg>,
    source: PathBuf,
    kind: SourceKind,
    info: SourceInfo,
    duration: f64,
    logs: PathBuf,
    /// The `video-worker` binary (in-process contender: `video-worker transcode`).
    exe: PathBuf,
}

impl Common {
    /// The first `--ffmpeg`: seed-cli, the floor, measurements, clips.
    fn ffmpeg(&self) -> &Path {
        &self.ffmpegs[0].path
    }

    /// The ladder for this source and the command lines' settings, with the thread plan our
    /// pipeline makes for `budget` encoder threads.
    fn setup(&self, args: &BenchArgs, budget: usize) -> Result<Setup> {
        plan_setup(args, self.ffmpeg(), &self.source, &self.info, budget)
    }

    /// The ladder's names as `transcode --quality` takes them.
    fn qualities(&self, args: &BenchArgs, setup: &Setup) -> Vec<String> {
        let names: Vec<String> = setup.rungs.iter().map(|r| r.name.clone()).collect();
        // A fallback rendition at the source's own size ("180p") is not a name `transcode`
        // takes: ask it for what was requested, it plans the same ladder.
        if names.iter().any(|q| Quality::named(q).is_err()) {
            args.quality.clone()
        } else {
            names
        }
    }
}

/// The command lines' settings for `source`: our ladder, our GOP and segment grid, and the
/// thread plan `media::pipeline::run` makes for `budget` encoder threads.
fn plan_setup(
    args: &BenchArgs,
    ffmpeg: &Path,
    source: &Path,
    info: &SourceInfo,
    budget: usize,
) -> Result<Setup> {
    let requested = Quality::parse_list(&args.quality).map_err(|e| anyhow!("{e}"))?;
    let ladder = Ladder::plan(
        &requested,
        info.video.display_width,
        info.video.display_height,
    );
    let pixels: Vec<u64> = ladder
        .renditions
        .iter()
        .map(|r| u64::from(r.width) * u64::from(r.height))
        .collect();
    let threads = media::split_threads(budget, &pixels);
    let rungs: Vec<Rung> = ladder
        .renditions
        .iter()
        .zip(threads)
        .map(|(r, threads)| Rung {
            name: r.name.clone(),
            width: r.width,
            height: r.height,
            bitrate: r.bitrate,
            seed_height: Quality::named(&r.name)
                .map(|q| q.short_side)
                .unwrap_or(r.width.min(r.height)),
            threads,
        })
        .collect();
    if rungs.is_empty() {
        bail!(
            "no rendition of {} fits the source ({}x{})",
            args.quality.join(","),
            info.video.display_width,
            info.video.display_height
        );
    }
    let fps = info.video.frame_rate;
    let fps_f = f64::from(fps);
    let segment_seconds = media::DEFAULT_SEGMENT_SECONDS;
    let gop_seconds = media::DEFAULT_GOP_SECONDS;
    Ok(Setup {
        ffmpeg: ffmpeg.to_path_buf(),
        source: source.to_path_buf(),
        rungs,
        preset: args.preset.clone(),
        fps: (fps.numerator(), fps.denominator()),
        gop_frames: ((gop_seconds * fps_f).round() as u64).max(1),
        segment_frames: ((segment_seconds * fps_f).round() as u64).max(1),
        segment_seconds,
        gop_seconds,
        // The tuned single command decodes with FFmpeg's frame threading; our pipeline uses
        // one decoder thread (see `media::demux`), which measured the same wall time with
        // less memory.
        decoder_threads: budget.min(4),
        has_audio: info.audio.is_some(),
        audio_bitrate: media::DEFAULT_AUDIO_BITRATE,
    })
}

/// Bytes of the MPEG-TS segments of rendition `name` in `dir` (`<name>_NNN.ts`).
fn rendition_bytes(dir: &Path, name: &str) -> Result<u64> {
    let prefix = format!("{name}_");
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let is_segment = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".ts"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if is_segment {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

fn fresh_dir(dir: &Path) -> Result<()> {
    remove_dir(dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Removes `dir` when it exists (our pipeline publishes its output directory itself; a
/// leftover one would add a replace to its time).
fn remove_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The machine, for every report.
fn machine(ffmpegs: &[Ffmpeg]) -> report::Machine {
    report::Machine {
        cores: num_cpus::get(),
        physical_cores: num_cpus::get_physical(),
        cpu_model: cpu_model(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        date: report::utc_now(),
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        video_worker: video_worker::version_string(),
        ffmpeg_libs: media::ffi::runtime_version(),
        ffmpeg_cli: ffmpegs.to_vec(),
    }
}

/// `5.1.9-0+deb12u1` from "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) …".
fn ffmpeg_version(ffmpeg: &Path) -> Result<String> {
    let out = std::process::Command::new(ffmpeg)
        .arg("-version")
        .output()
        .with_context(|| {
            format!(
                "running `{} -version` (the bench needs the ffmpeg CLI: apt-get install ffmpeg)",
                ffmpeg.display()
            )
        })?;
    if !out.status.success() {
        bail!("`{} -version` failed ({})", ffmpeg.display(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("ffmpeg version "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("unknown")
        .to_string())
}

/// Where setup puts the bench's tools and footage: `target/` beside this binary when it runs
/// from a build (target/release/video-worker-bench), and `target/` in the working directory.
fn target_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .filter(|t| t.file_name().is_some_and(|n| n == "target"))
    {
        dirs.push(target);
    }
    dirs.push(PathBuf::from("target"));
    dirs
}

/// The FFmpegs to compare: `--ffmpeg` as given, or Debian's `ffmpeg` plus setup's FFmpeg 7.
/// Each gets a tag unique among them (`ffmpeg5.1`, `ffmpeg7.0`, `ffmpeg5.1-2`).
fn resolve_ffmpegs(given: &[PathBuf]) -> Result<Vec<Ffmpeg>> {
    let mut paths: Vec<(PathBuf, bool)> = given.iter().map(|p| (p.clone(), true)).collect();
    if paths.is_empty() {
        paths.push((PathBuf::from("ffmpeg"), true));
        if let Some(ffmpeg7) = target_dirs()
            .into_iter()
            .map(|t| t.join("tools").join("ffmpeg7"))
            .find(|p| p.is_file())
        {
            paths.push((ffmpeg7, false));
        }
    }
    let mut ffmpegs: Vec<Ffmpeg> = Vec::new();
    for (path, required) in paths {
        let version = match ffmpeg_version(&path) {
            Ok(v) => v,
            Err(e) if !required => {
                eprintln!("warning: skipping {}: {e:#}", path.display());
                continue;
            }
            Err(e) => return Err(e),
        };
        let tag = unique_tag(&ffmpegs, Ffmpeg::tag_of(&version));
        ffmpegs.push(Ffmpeg { path, version, tag });
    }
    Ok(ffmpegs)
}

/// `base`, or `base-2`, `base-3`… when an FFmpeg already has it (two builds of one version
/// are two peers, and their labels name their output directories).
fn unique_tag(ffmpegs: &[Ffmpeg], base: String) -> String {
    let taken = |tag: &str| ffmpegs.iter().any(|f| f.tag == tag);
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|tag| !taken(tag))
        .unwrap_or(base)
}

/// The real footage setup fetched: the first `*.mp4` in target/footage with a `.credit` line
/// beside it (scripts/fetch-footage.sh writes both).
fn default_footage() -> Option<(PathBuf, String)> {
    for dir in target_dirs().into_iter().map(|t| t.join("footage")) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut clips: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "mp4"))
            .collect();
        clips.sort();
        for clip in clips {
            let credit_file = PathBuf::from(format!("{}.credit", clip.display()));
            if let Ok(credit) = std::fs::read_to_string(&credit_file) {
                return Some((clip, credit.trim().to_string()));
            }
        }
    }
    None
}

/// Makes the synthetic source unless --out already holds it.
fn synthetic_source(out: &Path, ffmpeg: &Path, spec: Synthetic, logs: &Path) -> Result<PathBuf> {
    let path = out.join(spec.file_name());
    if path.is_file() && std::fs::metadata(&path)?.len() > 0 {
        eprintln!("using the cached synthetic source {}", path.display());
        return Ok(path);
    }
    let partial = path.with_extension("partial");
    let mut progress = Progress::new(1);
    child::run(
        Measured {
            label: format!("making the synthetic source {}", path.display()),
            program: ffmpeg,
            args: spec.args(&partial),
            log: logs.join("synthetic"),
        },
        &mut progress,
    )?;
    progress.finish();
    std::fs::rename(&partial, &path)
        .with_context(|| format!("renaming {} into place", partial.display()))?;
    Ok(path)
}

/// The source every mode works on, with what it is.
fn resolve_source(args: &BenchArgs, ffmpeg: &Path, logs: &Path) -> Result<(PathBuf, SourceKind)> {
    if let Some(path) = &args.source {
        return Ok((path.clone(), SourceKind::Given));
    }
    let spec = match &args.synthetic {
        Some(spec) => spec.as_str(),
        None => match default_footage() {
            Some((path, credit)) => return Ok((path, SourceKind::Footage(credit))),
            None => {
                eprintln!(
                    "warning: no real footage in target/footage (scripts/fetch-footage.sh \
                     fetches it): using a synthetic source, good for a smoke run only"
                );
                "1080p:10"
            }
        },
    };
    let spec = Synthetic::parse(spec).map_err(|e| anyhow!(e))?;
    let path = synthetic_source(&args.out, ffmpeg, spec, logs)?;
    Ok((path, SourceKind::Synthetic(spec)))
}

/// The `video-worker` binary to measure: `--worker`, else `video-worker` beside this program.
fn worker_binary(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .context("finding this program's own path")?
            .with_file_name("video-worker"),
    };
    if !path.is_file() {
        bail!(
            "no video-worker binary at {} (build both with `cargo build --release`, or give \
             --worker)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs the bench in the mode its arguments ask for, writes its JSON report (and chart) into
/// `args.out`, prints the progress on stderr and the table on stdout.
pub fn run(args: &BenchArgs) -> Result<Parity> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build: the in-process numbers are not representative \
             (build with --release)"
        );
    }
    let ffmpegs = resolve_ffmpegs(&args.ffmpeg)?;
    let libs = media::ffi::runtime_version();
    for f in &ffmpegs {
        if !f.version.starts_with(&libs) {
            eprintln!(
                "note: {} is FFmpeg {}, our pipeline links FFmpeg {libs}: that comparison is \
                 between FFmpeg builds too",
                f.path.display(),
                f.version
            );
        }
    }
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let (source, kind) = resolve_source(args, &ffmpegs[0].path, &logs)?;

    media::init().map_err(|e| anyhow!("{e}"))?;
    let info = media::probe(&source, &Limits::default())
        .map_err(|e| anyhow!("source {}: {e}", source.display()))?;
    let duration = info
        .video
        .duration
        .or(info.duration)
        .filter(|d| *d > 0.0)
        .ok_or_else(|| anyhow!("source {}: unknown duration", source.display()))?;
    let common = Common {
        ffmpegs,
        source,
        kind,
        info,
        duration,
        logs,
        exe: worker_binary(args.worker.as_deref())?,
    };
    if let Some(videos) = args.videos {
        throughput::run(args, &common, videos)?;
        Ok(Parity::Passed)
    } else if !args.cores.is_empty() {
        scaling::run(args, &common)?;
        Ok(Parity::Passed)
    } else {
        compare::run(args, &common)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_builds_of_one_version_get_distinct_tags() {
        let mut ffmpegs = Vec::new();
        for version in ["5.1.9-0+deb12u1", "7.0.2-static", "5.1.6", "5.1.9"] {
            let tag = unique_tag(&ffmpegs, Ffmpeg::tag_of(version));
            ffmpegs.push(Ffmpeg {
                path: version.into(),
                version: version.into(),
                tag,
            });
        }
        let tags: Vec<&str> = ffmpegs.iter().map(|f| f.tag.as_str()).collect();
        assert_eq!(
            tags,
            ["ffmpeg5.1", "ffmpeg7.0", "ffmpeg5.1-2", "ffmpeg5.1-3"]
        );
    }

    #[test]
    fn synthetic_sources_are_labelled_smoke_only() {
        let s = Synthetic::parse("1080p:10").unwrap();
        assert_eq!(
            SourceKind::Synthetic(s).describe(),
            "synthetic testsrc2 1080p 10 s (smoke only)"
        );
        assert!(SourceKind::Footage("Big Buck Bunny · CC BY 3.0".into())
            .describe()
            .starts_with("real footage: Big Buck Bunny"));
    }
}
