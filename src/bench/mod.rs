//! `video-worker bench`: our pipeline side by side with the CLI worker it replaces, at equal
//! quality, on the same source and ladder.
//!
//! ```text
//! source (given, or synthetic: testsrc2 + sine via the ffmpeg CLI, cached in --out)
//!   └► per run, interleaved:  seed-cli (ffmpeg per quality) · ffmpeg-single · in-process · floor
//!        each a child process measured from outside: wall, user+sys CPU, ru_maxrss (wait4)
//!   └► after run 1: PSNR/SSIM of every rendition against the source scaled with bicubic
//!   └► medians, floor efficiencies, parity (in-process vs ffmpeg-single), ratios
//!   └► table on stdout, report.json + chart.svg in --out
//! ```
//!
//! The floor is what no pipeline can beat: one decode plus libx264 alone encoding pre-scaled
//! frames of each rendition, with our settings and thread counts. The bench calls the `ffmpeg`
//! CLI for the baselines, the floor and the measurements, never for our pipeline.

pub mod child;
pub mod metrics;
pub mod pipelines;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::ladder::{Ladder, Quality};
use crate::media::{self, Limits};
use child::{Measured, Progress, Usage};
use metrics::RenditionQuality;
use pipelines::{Pipeline, Rung, Setup, Synthetic};
use report::{FloorRun, Part, QualityRecord, Report, RunRecord};

/// `video-worker bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Source video to benchmark on (instead of a synthetic one).
    #[arg(long, conflicts_with = "synthetic")]
    pub source: Option<PathBuf>,
    /// Synthetic source HEIGHTp:SECONDS: testsrc2 16:9 at 25 fps with a sine track, made with
    /// the ffmpeg CLI and cached in --out.
    #[arg(long, default_value = "1080p:10")]
    pub synthetic: String,
    /// Ladder, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1080p,720p,480p")]
    pub quality: Vec<String>,
    /// libx264 preset for every pipeline.
    #[arg(long, default_value = "medium")]
    pub preset: String,
    /// Interleaved runs of each pipeline (the table shows medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Working directory: source cache, outputs, logs, report.json, chart.svg.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// The ffmpeg CLI for the baselines and measurements.
    #[arg(long, default_value = "ffmpeg")]
    pub ffmpeg: PathBuf,
}

/// The parity verdict of a finished bench (the caller turns it into an exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    Passed,
    /// The report was written, without speed ratios.
    Failed,
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
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
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
    // "ffmpeg version 5.1.9-0+deb12u1 Copyright (c) …" → "ffmpeg 5.1.9-0+deb12u1"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("ffmpeg version "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("unknown");
    Ok(format!("ffmpeg {version}"))
}

/// Everything one bench invocation works with.
struct Bench<'a> {
    args: &'a BenchArgs,
    setup: Setup,
    /// The ladder's names as `transcode --quality` takes them.
    qualities: Vec<String>,
    exe: PathBuf,
    duration: f64,
    logs: PathBuf,
    progress: Progress,
    /// Each kind of command as first run (for report.json).
    commands: BTreeMap<String, String>,
}

impl Bench<'_> {
    fn measure(
        &mut self,
        label: String,
        program: &Path,
        args: Vec<String>,
        log: &str,
    ) -> Result<child::Finished> {
        // One entry per kind of command: `run2-seed-cli-720p` is filed as `seed-cli-720p`.
        let kind = log
            .strip_prefix("run")
            .and_then(|rest| rest.split_once('-'))
            .filter(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
            .map_or(log, |(_, kind)| kind);
        self.commands
            .entry(kind.to_string())
            .or_insert_with(|| format!("{} {}", program.display(), child::shell_words(&args)));
        child::run(
            Measured {
                label,
                program,
                args,
                log: self.logs.join(log),
            },
            &mut self.progress,
        )
    }

    fn output_dir(&self, p: Pipeline) -> PathBuf {
        self.args.out.join(p.label())
    }

    fn run_pipeline(&mut self, p: Pipeline, run: usize) -> Result<RunRecord> {
        let dir = self.output_dir(p);
        let runs = self.args.runs;
        let tag = format!("run {run}/{runs} · {p}");
        let mut parts = Vec::new();
        let mut self_reported_s = None;
        let usage = match p {
            Pipeline::SeedCli => {
                fresh_dir(&dir)?;
                let mut total = Usage::default();
                for rung in self.setup.rungs.clone() {
                    let args = pipelines::seed_cli_args(&self.setup, &rung, &dir);
                    let ffmpeg = self.setup.ffmpeg.clone();
                    let f = self.measure(
                        format!("{tag} {}", rung.name),
                        &ffmpeg,
                        args,
                        &format!("run{run}-{p}-{}", rung.name),
                    )?;
                    total = total.then(f.usage);
                    parts.push(Part::new(rung.name.clone(), f.usage));
                }
                total
            }
            Pipeline::FfmpegSingle => {
                fresh_dir(&dir)?;
                let args = pipelines::ffmpeg_single_args(&self.setup, &dir);
                let ffmpeg = self.setup.ffmpeg.clone();
                self.measure(tag, &ffmpeg, args, &format!("run{run}-{p}"))?
                    .usage
            }
            Pipeline::InProcess => {
                // The pipeline publishes the directory itself; a leftover one would add a
                // replace to its time.
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("removing {}", dir.display()))?;
                }
                let args = pipelines::in_process_args(&self.setup, &self.qualities, &dir);
                let exe = self.exe.clone();
                let f = self.measure(tag, &exe, args, &format!("run{run}-{p}"))?;
                let text = std::fs::read_to_string(&f.stdout)?;
                let outcome: serde_json::Value = serde_json::from_str(text.trim())
                    .with_context(|| format!("in-process --json output: {text:?}"))?;
                self_reported_s = outcome.get("elapsed_seconds").and_then(|v| v.as_f64());
                f.usage
            }
        };
        let mut bytes = BTreeMap::new();
        for rung in &self.setup.rungs {
            let b = rendition_bytes(&dir, &rung.name)?;
            if b == 0 {
                bail!(
                    "{p} produced no segments for {} in {}",
                    rung.name,
                    dir.display()
                );
            }
            bytes.insert(rung.name.clone(), b);
        }
        Ok(RunRecord {
            pipeline: p,
            run,
            usage,
            cpu_s: usage.cpu_s(),
            bytes,
            parts,
            self_reported_s,
        })
    }

    fn raw_file(&self, rung: &Rung) -> PathBuf {
        self.args
            .out
            .join("floor")
            .join(format!("{}.yuv", rung.name))
    }

    fn prescale(&mut self) -> Result<()> {
        fresh_dir(&self.args.out.join("floor"))?;
        let raw: Vec<PathBuf> = self.setup.rungs.iter().map(|r| self.raw_file(r)).collect();
        let args = pipelines::prescale_args(&self.setup, &raw);
        let ffmpeg = self.setup.ffmpeg.clone();
        self.measure(
            "floor: pre-scaling raw frames".into(),
            &ffmpeg,
            args,
            "prescale",
        )?;
        Ok(())
    }

    fn run_floor(&mut self, run: usize) -> Result<FloorRun> {
        let runs = self.args.runs;
        let ffmpeg = self.setup.ffmpeg.clone();
        let args = pipelines::floor_decode_args(&self.setup);
        let decode = self
            .measure(
                format!("run {run}/{runs} · floor decode"),
                &ffmpeg,
                args,
                &format!("run{run}-floor-decode"),
            )?
            .usage;
        let mut encodes = Vec::new();
        for rung in self.setup.rungs.clone() {
            let args = pipelines::floor_encode_args(&self.setup, &rung, &self.raw_file(&rung));
            let f = self.measure(
                format!("run {run}/{runs} · floor x264 {}", rung.name),
                &ffmpeg,
                args,
                &format!("run{run}-floor-{}", rung.name),
            )?;
            encodes.push(Part::new(rung.name.clone(), f.usage));
        }
        Ok(FloorRun {
            run,
            cpu_s: decode.cpu_s() + encodes.iter().map(|e| e.cpu_s).sum::<f64>(),
            longest_encode_wall_s: encodes.iter().map(|e| e.usage.wall_s).fold(0.0, f64::max),
            decode: Part::new("decode", decode),
            encodes,
        })
    }

    fn measure_quality(&mut self, p: Pipeline, record: &RunRecord) -> Result<Vec<QualityRecord>> {
        let dir = self.output_dir(p);
        let mut out = Vec::new();
        for rung in self.setup.rungs.clone() {
            let first = dir.join(format!("{}_000.ts", rung.name));
            let info = media::probe(&first, &Limits::default())
                .map_err(|e| anyhow!("probing {}: {e}", first.display()))?;
            let (w, h) = (info.video.width, info.video.height);
            let playlist = dir.join(format!("{}.m3u8", rung.name));
            let args = pipelines::quality_args(&playlist, &self.setup.source, w, h);
            let ffmpeg = self.setup.ffmpeg.clone();
            let f = self.measure(
                format!("quality · {p} {}", rung.name),
                &ffmpeg,
                args,
                &format!("quality-{p}-{}", rung.name),
            )?;
            let log = std::fs::read_to_string(&f.stderr)?;
            let psnr = metrics::parse_psnr(&log)
                .ok_or_else(|| anyhow!("no PSNR summary in {}", f.stderr.display()))?;
            let ssim = metrics::parse_ssim(&log)
                .ok_or_else(|| anyhow!("no SSIM summary in {}", f.stderr.display()))?;
            let bytes = record.bytes.get(&rung.name).copied().unwrap_or(0);
            out.push(QualityRecord {
                pipeline: p,
                rendition: rung.name.clone(),
                width: w,
                height: h,
                bytes,
                quality: RenditionQuality {
                    psnr,
                    ssim,
                    bitrate: bytes as f64 * 8.0 / self.duration,
                },
            });
        }
        Ok(out)
    }
}

/// Makes the synthetic source unless --out already holds it.
fn synthetic_source(args: &BenchArgs, spec: Synthetic, logs: &Path) -> Result<PathBuf> {
    let path = args.out.join(spec.file_name());
    if path.is_file() && std::fs::metadata(&path)?.len() > 0 {
        eprintln!("using the cached synthetic source {}", path.display());
        return Ok(path);
    }
    let partial = path.with_extension("partial");
    let mut progress = Progress::new(1);
    child::run(
        Measured {
            label: format!("making the synthetic source {}", path.display()),
            program: &args.ffmpeg,
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

/// Runs the whole bench and writes `report.json` and `chart.svg` into `args.out`; prints the
/// progress on stderr and the table on stdout.
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
    let requested = Quality::parse_list(&args.quality).map_err(|e| anyhow!("{e}"))?;
    let ffmpeg_cli = ffmpeg_version(&args.ffmpeg)?;
    let libs = media::ffi::runtime_version();
    if !ffmpeg_cli.ends_with(&libs) {
        eprintln!(
            "warning: the baselines run {ffmpeg_cli}, our pipeline FFmpeg {libs}: \
             the comparison is between FFmpeg builds too"
        );
    }
    let logs = args.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let (source, synthetic) = match &args.source {
        Some(path) => (path.clone(), None),
        None => {
            let spec = Synthetic::parse(&args.synthetic).map_err(|e| anyhow!(e))?;
            (synthetic_source(args, spec, &logs)?, Some(spec))
        }
    };

    media::init().map_err(|e| anyhow!("{e}"))?;
    let info = media::probe(&source, &Limits::default())
        .map_err(|e| anyhow!("source {}: {e}", source.display()))?;
    let duration = info
        .video
        .duration
        .or(info.duration)
        .filter(|d| *d > 0.0)
        .ok_or_else(|| anyhow!("source {}: unknown duration", source.display()))?;
    let ladder = Ladder::plan(
        &requested,
        info.video.display_width,
        info.video.display_height,
    );
    for s in &ladder.skipped {
        eprintln!("skipping {}: {}", s.quality, s.reason);
    }
    let cores = num_cpus::get();
    // As `media::pipeline::run` gives its encoders: the whole core count, split by pixels.
    let pixels: Vec<u64> = ladder
        .renditions
        .iter()
        .map(|r| u64::from(r.width) * u64::from(r.height))
        .collect();
    let threads = media::split_threads(cores, &pixels);
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
    let fps = info.video.frame_rate;
    let fps_f = f64::from(fps);
    let segment_seconds = media::DEFAULT_SEGMENT_SECONDS;
    let gop_seconds = media::DEFAULT_GOP_SECONDS;
    let setup = Setup {
        ffmpeg: args.ffmpeg.clone(),
        source: source.clone(),
        rungs,
        preset: args.preset.clone(),
        fps: (fps.numerator(), fps.denominator()),
        gop_frames: ((gop_seconds * fps_f).round() as u64).max(1),
        segment_frames: ((segment_seconds * fps_f).round() as u64).max(1),
        segment_seconds,
        gop_seconds,
        // The CLI baselines decode with FFmpeg's frame threading (what a CLI user gets); our
        // pipeline uses one decoder thread (see `media::decode`), which measured the same wall
        // time with less memory. This favours the baselines, not us.
        decoder_threads: cores.min(4),
        has_audio: info.audio.is_some(),
        audio_bitrate: media::DEFAULT_AUDIO_BITRATE,
    };
    let n = setup.rungs.len();
    let steps = 1 + args.runs * (n + 1 + 1 + 1 + n) + 3 * n;
    let raw_bytes: u64 = setup
        .rungs
        .iter()
        .map(|r| u64::from(r.width) * u64::from(r.height) * 3 / 2)
        .sum::<u64>()
        * (duration * fps_f).ceil() as u64;
    eprintln!(
        "bench: {} ({}x{}, {:.2} s), {} rendition(s), {} run(s), {steps} measured steps; \
         the floor's raw frames take {:.0} MB in {} while it runs",
        source.display(),
        info.video.width,
        info.video.height,
        duration,
        n,
        args.runs,
        raw_bytes as f64 / 1e6,
        args.out.join("floor").display()
    );

    let mut bench = Bench {
        args,
        qualities: setup.rungs.iter().map(|r| r.name.clone()).collect(),
        setup,
        exe: std::env::current_exe().context("finding this program's own path")?,
        duration,
        logs,
        progress: Progress::new(steps),
        commands: BTreeMap::new(),
    };
    // A fallback rendition at the source's own size ("180p") is not a name `transcode`
    // takes: ask it for what was requested, it plans the same ladder.
    if bench.qualities.iter().any(|q| Quality::named(q).is_err()) {
        bench.qualities = args.quality.clone();
    }

    bench.prescale()?;
    let mut runs = Vec::new();
    let mut floor_runs = Vec::new();
    let mut quality = Vec::new();
    for run in 1..=args.runs {
        let mut first = Vec::new();
        for p in Pipeline::ALL {
            let record = bench.run_pipeline(p, run)?;
            if run == 1 {
                first.push(record.clone());
            }
            runs.push(record);
        }
        floor_runs.push(bench.run_floor(run)?);
        // Quality once per pipeline, from the first run's output, after the whole round so
        // the measurement never sits between two timed pipelines of the same round.
        for record in &first {
            quality.extend(bench.measure_quality(record.pipeline, record)?);
        }
    }
    bench.progress.finish();
    let _ = std::fs::remove_dir_all(args.out.join("floor"));

    let derived = report::derive(&runs, &floor_runs, &quality, &bench.setup.rungs, cores);
    let passed = derived.parity_checks.iter().all(|c| c.passed());
    let report = Report {
        machine: report::Machine {
            cores,
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
            video_worker: crate::version_string(),
            ffmpeg_cli,
        },
        config: report::Config {
            source: source.display().to_string(),
            synthetic,
            qualities: bench.setup.rungs.iter().map(|r| r.name.clone()).collect(),
            preset: args.preset.clone(),
            runs: args.runs,
            segment_seconds,
            gop_seconds,
            decoder_threads: bench.setup.decoder_threads,
        },
        source: report::SourceSummary {
            width: info.video.width,
            height: info.video.height,
            fps: fps_f,
            duration_s: duration,
            has_audio: info.audio.is_some(),
            size_bytes: info.size_bytes,
        },
        renditions: bench.setup.rungs.clone(),
        commands: bench.commands.clone(),
        runs,
        floor_runs,
        quality,
        summary: derived.summary,
        floor: derived.floor,
        parity: if passed { "passed" } else { "failed" },
        parity_checks: derived.parity_checks,
        ratios: derived.ratios,
    };
    let json = args.out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = args.out.join("chart.svg");
    std::fs::write(&svg, report.svg()).with_context(|| format!("writing {}", svg.display()))?;
    print!("{}", report.table());
    println!("\nreport: {} · chart: {}", json.display(), svg.display());
    Ok(if passed {
        Parity::Passed
    } else {
        Parity::Failed
    })
}
