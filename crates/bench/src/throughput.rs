//! `bench --videos N --jobs K`: a host's throughput. N different clips of the source go
//! through each pipeline, K jobs at a time: in-process jobs each on its share of the cores
//! (`transcode --threads cores/K`, what `run --jobs K` gives a job), against seed-cli jobs
//! (the platform's commands, one ffmpeg per quality, unchanged). Per batch: jobs per hour,
//! CPU seconds per output minute, peak RSS per job. No quality check here: seed-cli's output
//! is not meant to match ours (the compare mode checks our quality).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::child::{self, Measured, Usage};
use super::compare::Command;
use super::metrics::{self, Spread};
use super::pipelines::{self, Pipeline, Setup};
use super::report::{self, Machine};
use super::{fresh_dir, remove_dir, rendition_bytes, BenchArgs, Common};
use video_worker::media::{self, Limits};
use video_worker::queue::worker::Concurrency;

/// The clips' (offset, length) in seconds: `videos` clips spread evenly over the source,
/// `seconds` long each (default: the source split in `videos` parts, 2 to 10 s each; clips
/// overlap when the source is shorter than that).
pub fn clip_plan(duration: f64, videos: usize, seconds: Option<f64>) -> Vec<(f64, f64)> {
    let len = seconds
        .unwrap_or(duration / videos.max(1) as f64)
        .clamp(2.0, 10.0)
        .min(duration);
    let room = (duration - len).max(0.0);
    (0..videos)
        .map(|i| {
            let offset = match videos {
                0 | 1 => 0.0,
                n => room * i as f64 / (n - 1) as f64,
            };
            // Millisecond offsets: the clip's file name and the command say the same.
            ((offset * 1000.0).floor() / 1000.0, len)
        })
        .collect()
}

/// One source clip, made once and cached in --out.
#[derive(Debug, Clone, Serialize)]
pub struct Clip {
    pub path: PathBuf,
    pub offset_s: f64,
    /// Its duration as probed (the output minutes it yields).
    pub duration_s: f64,
}

fn make_clips(args: &BenchArgs, common: &Common, videos: usize) -> Result<Vec<Clip>> {
    let plan = clip_plan(common.duration, videos, args.clip_seconds);
    let stem = common
        .source
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "source".into());
    let dir = args.out.join("clips").join(stem);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut clips = Vec::new();
    for (i, (offset, len)) in plan.into_iter().enumerate() {
        let path = dir.join(format!(
            "clip{i:02}-at{}ms-{}ms.mp4",
            (offset * 1000.0).round(),
            (len * 1000.0).round()
        ));
        if !path.is_file() {
            let partial = path.with_extension("partial");
            child::run_quiet(Measured {
                label: format!("cutting clip {i}"),
                program: common.ffmpeg(),
                args: pipelines::clip_args(&common.source, offset, len, &partial),
                log: common.logs.join(format!("clip{i:02}")),
            })?;
            std::fs::rename(&partial, &path)
                .with_context(|| format!("renaming {} into place", partial.display()))?;
            eprintln!("made {}", path.display());
        }
        let info = media::probe(&path, &Limits::default())
            .map_err(|e| anyhow!("clip {}: {e}", path.display()))?;
        let duration_s = info
            .video
            .duration
            .or(info.duration)
            .ok_or_else(|| anyhow!("clip {}: unknown duration", path.display()))?;
        clips.push(Clip {
            path,
            offset_s: offset,
            duration_s,
        });
    }
    Ok(clips)
}

/// One job of a batch: its commands, run one after another, into `dir`.
struct Job {
    label: String,
    dir: PathBuf,
    /// Our pipeline publishes its directory itself (it must not exist); the CLI writes into
    /// an existing one.
    fresh_dir: bool,
    commands: Vec<Command>,
}

/// Runs `jobs`, at most `k` at a time, each measured on its own; returns each job's usage
/// (in `jobs` order) and the batch's wall time. The first failure stops new jobs starting.
fn run_batch(jobs: &[Job], k: usize, logs: &Path) -> Result<(Vec<Usage>, f64)> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<Usage>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..k.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() || failed.load(Ordering::Relaxed) {
                    break;
                }
                let result = run_job(&jobs[i], logs);
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                if let Ok(usage) = &result {
                    eprintln!(
                        "  {} · {:.1} s wall, {:.1} s CPU, {:.0} MB peak",
                        jobs[i].label,
                        usage.wall_s,
                        usage.cpu_s(),
                        usage.max_rss_kb as f64 / 1024.0
                    );
                }
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(result);
                }
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let results = results
        .into_inner()
        .map_err(|_| anyhow!("a throughput job thread panicked"))?;
    let mut usages = Vec::new();
    for (job, r) in jobs.iter().zip(results) {
        match r {
            Some(Ok(u)) => usages.push(u),
            Some(Err(e)) => return Err(e.context(format!("throughput job {}", job.label))),
            None => bail!(
                "throughput job {} did not run (an earlier job failed)",
                job.label
            ),
        }
    }
    Ok((usages, wall))
}

fn run_job(job: &Job, logs: &Path) -> Result<Usage> {
    if job.fresh_dir {
        remove_dir(&job.dir)?;
    } else {
        fresh_dir(&job.dir)?;
    }
    let mut total = Usage::default();
    for (n, cmd) in job.commands.iter().enumerate() {
        let f = child::run_quiet(Measured {
            label: job.label.clone(),
            program: &cmd.program,
            args: cmd.args.clone(),
            log: logs.join(format!("{}-{n}", job.label)),
        })?;
        total = total.then(f.usage);
    }
    Ok(total)
}

/// One batch: N jobs of one pipeline, K at a time.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub pipeline: Pipeline,
    pub jobs: usize,
    pub run: usize,
    pub wall_s: f64,
    /// Sum of the jobs' user+sys CPU.
    pub cpu_s: f64,
    pub per_job: Vec<Usage>,
}

/// One pipeline at one K, over the runs.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputSummary {
    pub pipeline: Pipeline,
    pub jobs: usize,
    /// Encoder threads each in-process job gets (cores / K); seed-cli leaves them to ffmpeg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_per_job: Option<usize>,
    pub jobs_per_hour: Spread,
    pub cpu_s_per_output_minute: Spread,
    /// Peak RSS of one job (its largest process), over every job of every run.
    pub peak_rss_mb_per_job: Spread,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub machine: Machine,
    pub source: String,
    pub source_kind: String,
    pub clips: Vec<Clip>,
    pub qualities: Vec<String>,
    pub preset: String,
    pub runs: usize,
    pub summary: Vec<ThroughputSummary>,
    /// in-process jobs/hour over seed-cli's at the same K, and over seed-cli's best K.
    pub ratios: BTreeMap<String, Option<f64>>,
    pub commands: BTreeMap<String, String>,
    pub batches: Vec<Batch>,
}

fn spread(v: &[f64]) -> Spread {
    Spread::of(v).unwrap_or(Spread {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
    })
}

/// Summaries per (pipeline, K) and the jobs/hour ratios, from the batches.
fn summarize(
    batches: &[Batch],
    output_minutes: f64,
    videos: usize,
    cores: usize,
) -> (Vec<ThroughputSummary>, BTreeMap<String, Option<f64>>) {
    let mut keys: Vec<(Pipeline, usize)> = batches.iter().map(|b| (b.pipeline, b.jobs)).collect();
    keys.sort();
    keys.dedup();
    let summary: Vec<ThroughputSummary> = keys
        .iter()
        .map(|&(pipeline, k)| {
            let mine: Vec<&Batch> = batches
                .iter()
                .filter(|b| b.pipeline == pipeline && b.jobs == k)
                .collect();
            let per_hour: Vec<f64> = mine
                .iter()
                .map(|b| videos as f64 * 3600.0 / b.wall_s)
                .collect();
            let cpu: Vec<f64> = mine.iter().map(|b| b.cpu_s / output_minutes).collect();
            let rss: Vec<f64> = mine
                .iter()
                .flat_map(|b| b.per_job.iter().map(|u| u.max_rss_kb as f64 / 1024.0))
                .collect();
            ThroughputSummary {
                pipeline,
                jobs: k,
                threads_per_job: (pipeline == Pipeline::InProcess)
                    .then(|| Concurrency::Jobs(k).plan(cores).threads_per_job),
                jobs_per_hour: spread(&per_hour),
                cpu_s_per_output_minute: spread(&cpu),
                peak_rss_mb_per_job: spread(&rss),
            }
        })
        .collect();
    let rate = |p: Pipeline, k: usize| {
        summary
            .iter()
            .find(|s| s.pipeline == p && s.jobs == k)
            .map(|s| s.jobs_per_hour.median)
    };
    let best_seed = summary
        .iter()
        .filter(|s| s.pipeline == Pipeline::SeedCli)
        .max_by(|a, b| a.jobs_per_hour.median.total_cmp(&b.jobs_per_hour.median));
    let mut ratios = BTreeMap::new();
    for s in summary.iter().filter(|s| s.pipeline == Pipeline::InProcess) {
        let ours = s.jobs_per_hour.median;
        if let Some(seed) = rate(Pipeline::SeedCli, s.jobs) {
            ratios.insert(
                format!("in-process K={k}/seed-cli K={k}", k = s.jobs),
                metrics::ratio(ours, seed),
            );
        }
        if let Some(best) = best_seed.filter(|b| b.jobs != s.jobs) {
            ratios.insert(
                format!("in-process K={}/seed-cli best K={}", s.jobs, best.jobs),
                metrics::ratio(ours, best.jobs_per_hour.median),
            );
        }
    }
    // `run --jobs auto` on this host is one of the measured K: say which, against the best K
    // of seed-cli (issue 8's throughput target).
    let auto = Concurrency::Auto.plan(cores);
    if let (Some(ours), Some(best)) = (rate(Pipeline::InProcess, auto.slots), best_seed) {
        ratios.insert(
            format!(
                "in-process --jobs auto (K={})/seed-cli best K={}",
                auto.slots, best.jobs
            ),
            metrics::ratio(ours, best.jobs_per_hour.median),
        );
    }
    (summary, ratios)
}

impl ThroughputReport {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let total: f64 = self.clips.iter().map(|c| c.duration_s).sum();
        t.push_str(&format!(
            "video-worker bench --videos {} · {} · {} cores ({}) · {} build\n",
            self.clips.len(),
            self.machine.date,
            self.machine.cores,
            self.machine.cpu_model,
            self.machine.build
        ));
        t.push_str(&format!(
            "clips of {} ({}): {} × ~{:.1} s = {:.1} s of video · ladder {} · preset {} · {} run{}\n\n",
            self.source,
            self.source_kind,
            self.clips.len(),
            total / self.clips.len().max(1) as f64,
            total,
            self.qualities.join(","),
            self.preset,
            self.runs,
            if self.runs == 1 { "" } else { "s" }
        ));
        t.push_str(&format!(
            "{:<12} {:>3} {:>8} {:<24} {:<24} {:<24}\n",
            "pipeline",
            "K",
            "thr/job",
            "jobs per hour",
            "CPU s per output min",
            "peak RSS MB per job"
        ));
        for s in &self.summary {
            t.push_str(&format!(
                "{:<12} {:>3} {:>8} {:<24} {:<24} {:<24}\n",
                s.pipeline.label(),
                s.jobs,
                s.threads_per_job
                    .map_or_else(|| "ffmpeg".to_string(), |n| n.to_string()),
                report::cell(&s.jobs_per_hour, 1),
                report::cell(&s.cpu_s_per_output_minute, 1),
                report::cell(&s.peak_rss_mb_per_job, 0),
            ));
        }
        t.push('\n');
        for (k, r) in &self.ratios {
            t.push_str(&format!("{k:<40} jobs/hour {}×\n", report::opt(*r, 3)));
        }
        t.lines().map(|l| format!("{}\n", l.trim_end())).collect()
    }
}

/// What every batch's jobs are made from.
struct Host<'a> {
    common: &'a Common,
    clips: Vec<Clip>,
    /// The ladder and settings; each job swaps in its clip as the source.
    base: Setup,
    qualities: Vec<String>,
    out: PathBuf,
}

impl Host<'_> {
    /// The `pipeline`'s N jobs for a batch of `k` at a time in run `run`.
    fn jobs(&self, pipeline: Pipeline, k: usize, run: usize) -> Vec<Job> {
        let (common, qualities) = (self.common, &self.qualities);
        let threads = (num_cpus::get() / k).max(1);
        self.clips
            .iter()
            .enumerate()
            .map(|(i, clip)| {
                let setup = Setup {
                    source: clip.path.clone(),
                    ..self.base.clone()
                };
                let label = format!("run{run}-{}-k{k}-job{i:02}", pipeline.label());
                let dir = self
                    .out
                    .join(format!("{}-k{k}", pipeline.label()))
                    .join(format!("job{i:02}"));
                let commands = match pipeline {
                    Pipeline::InProcess => vec![Command::new(
                        &common.exe,
                        pipelines::in_process_args(&setup, qualities, &dir, Some(threads)),
                    )],
                    _ => setup
                        .rungs
                        .iter()
                        .map(|r| {
                            Command::new(common.ffmpeg(), pipelines::seed_cli_args(&setup, r, &dir))
                        })
                        .collect(),
                };
                Job {
                    label,
                    fresh_dir: pipeline == Pipeline::InProcess,
                    dir,
                    commands,
                }
            })
            .collect()
    }
}

pub(super) fn run(args: &BenchArgs, common: &Common, videos: usize) -> Result<()> {
    if videos == 0 || args.jobs.contains(&0) {
        bail!("--videos and --jobs must be at least 1");
    }
    let cores = num_cpus::get();
    let clips = make_clips(args, common, videos)?;
    // Every clip has the source's size, so one ladder serves all; the thread plan inside each
    // in-process job follows its --threads.
    let base = common.setup(args, cores)?;
    let host = Host {
        common,
        qualities: common.qualities(args, &base),
        base,
        clips,
        out: args.out.join("throughput"),
    };
    eprintln!(
        "bench --videos {videos} --jobs {}: {} clips of {} ({}), {} run(s)",
        args.jobs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        host.clips.len(),
        common.source.display(),
        common.kind.describe(),
        args.runs
    );
    let mut batches = Vec::new();
    let mut commands = BTreeMap::new();
    for run in 1..=args.runs {
        for &k in &args.jobs {
            for pipeline in [Pipeline::SeedCli, Pipeline::InProcess] {
                let jobs = host.jobs(pipeline, k, run);
                for (n, cmd) in jobs[0].commands.iter().enumerate() {
                    commands
                        .entry(format!("{}-k{k}-{n}", pipeline.label()))
                        .or_insert_with(|| {
                            format!(
                                "{} {}",
                                cmd.program.display(),
                                child::shell_words(&cmd.args)
                            )
                        });
                }
                eprintln!(
                    "run {run}/{} · {} · {videos} jobs, {k} at a time",
                    args.runs,
                    pipeline.label()
                );
                let (per_job, wall_s) = run_batch(&jobs, k, &common.logs)?;
                for job in &jobs {
                    for rung in &host.base.rungs {
                        if rendition_bytes(&job.dir, &rung.name)? == 0 {
                            bail!("{} produced no {} segments", job.label, rung.name);
                        }
                    }
                }
                eprintln!(
                    "  batch: {wall_s:.1} s wall, {:.0} jobs/hour",
                    videos as f64 * 3600.0 / wall_s
                );
                batches.push(Batch {
                    pipeline,
                    jobs: k,
                    run,
                    wall_s,
                    cpu_s: per_job.iter().map(Usage::cpu_s).sum(),
                    per_job,
                });
            }
        }
    }
    let output_minutes = host.clips.iter().map(|c| c.duration_s).sum::<f64>() / 60.0;
    let (summary, ratios) = summarize(&batches, output_minutes, videos, cores);
    let report = ThroughputReport {
        machine: super::machine(&common.ffmpegs),
        source: common.source.display().to_string(),
        source_kind: common.kind.describe(),
        clips: host.clips,
        qualities: host.qualities,
        preset: args.preset.clone(),
        runs: args.runs,
        summary,
        ratios,
        commands,
        batches,
    };
    let json = args.out.join("throughput.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    print!("{}", report.table());
    println!("\nreport: {}", json.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_spread_over_the_source_without_overlap_when_it_is_long_enough() {
        assert_eq!(
            clip_plan(30.0, 3, None),
            [(0.0, 10.0), (10.0, 10.0), (20.0, 10.0)]
        );
        // 12 clips of a 30 s source: 2.5 s each, back to back.
        let twelve = clip_plan(30.0, 12, None);
        assert_eq!(twelve.len(), 12);
        assert!(twelve.iter().all(|&(_, len)| len == 2.5));
        assert_eq!(twelve[11], (27.5, 2.5));
        // Never shorter than 2 s: 30 clips of 30 s overlap.
        assert!(clip_plan(30.0, 30, None)
            .iter()
            .all(|&(o, len)| len == 2.0 && o <= 28.0));
        // A given length, clamped to the source.
        assert_eq!(clip_plan(4.0, 2, Some(10.0)), [(0.0, 4.0), (0.0, 4.0)]);
        assert_eq!(clip_plan(10.0, 1, Some(3.0)), [(0.0, 3.0)]);
    }

    fn usage(wall: f64, cpu: f64, rss_mb: u64) -> Usage {
        Usage {
            wall_s: wall,
            user_s: cpu,
            sys_s: 0.0,
            max_rss_kb: rss_mb * 1024,
        }
    }

    #[test]
    fn throughput_is_jobs_per_hour_and_cpu_per_output_minute() {
        let batch = |pipeline, jobs, wall_s, rss| Batch {
            pipeline,
            jobs,
            run: 1,
            wall_s,
            cpu_s: 120.0,
            per_job: vec![usage(10.0, 60.0, rss), usage(10.0, 60.0, rss + 100)],
        };
        let batches = [
            batch(Pipeline::SeedCli, 1, 100.0, 200),
            batch(Pipeline::SeedCli, 2, 80.0, 200),
            batch(Pipeline::InProcess, 2, 60.0, 500),
        ];
        // 2 videos, 1 output minute in all.
        let (summary, ratios) = summarize(&batches, 1.0, 2, 2);
        let ours = summary
            .iter()
            .find(|s| s.pipeline == Pipeline::InProcess)
            .unwrap();
        assert_eq!(ours.jobs_per_hour.median, 120.0);
        assert_eq!(ours.cpu_s_per_output_minute.median, 120.0);
        assert_eq!(ours.peak_rss_mb_per_job.max, 600.0);
        assert_eq!(ours.threads_per_job, Some(1));
        assert_eq!(ratios["in-process K=2/seed-cli K=2"], Some(120.0 / 90.0));
        // Seed-cli's best K is this K: no second line saying the same.
        assert_eq!(ratios.len(), 1);
    }
}
