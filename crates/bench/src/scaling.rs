//! `bench --cores 1,2`: wall time of in-process and of each FFmpeg's single command (at its
//! default threading) with the process pinned to the first N CPUs by `taskset`, beside the
//! thread plan our pipeline makes at N. Both plan from the CPUs they may run on (our
//! `num_cpus::get` and ffmpeg's `av_cpu_count` read the affinity mask), so the pin is all it
//! takes.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use video_worker::media;

use super::child::Progress;
use super::compare::{steps_of, Runner};
use super::metrics::Spread;
use super::pipelines::{Contender, Threading};
use super::report::{self, Machine, RunRecord};
use super::{BenchArgs, Common};

/// What our pipeline does with N cores.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadPlan {
    /// Video decoder threads (`media::decoder_threads`: one up to a budget of 8, then one per 8).
    pub decoder_threads: usize,
    /// x264 threads per rendition, in ladder order (`media::split_threads`: the budget split
    /// by pixels, at least one each); x264 picks its lookahead threads itself.
    pub x264_threads: Vec<(String, usize)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScalingResult {
    pub contender: String,
    pub wall_s: Spread,
    pub cpu_s: Spread,
    pub max_rss_mb: Spread,
    /// Median wall at the first core count over the median wall here.
    pub speedup: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScalingPoint {
    pub cores: usize,
    pub plan: ThreadPlan,
    pub results: Vec<ScalingResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScalingReport {
    pub machine: Machine,
    pub source: String,
    pub source_kind: String,
    pub qualities: Vec<String>,
    pub preset: String,
    pub runs: usize,
    pub points: Vec<ScalingPoint>,
    pub commands: BTreeMap<String, String>,
    pub raw: Vec<(usize, RunRecord)>,
}

impl ScalingReport {
    pub fn table(&self) -> String {
        let mut t = String::new();
        t.push_str(&format!(
            "video-worker bench --cores · {} · {} · {} · ladder {} · preset {} · {} run{} \
             (interleaved)\n",
            self.machine.date,
            self.source,
            self.source_kind,
            self.qualities.join(","),
            self.preset,
            self.runs,
            if self.runs == 1 { "" } else { "s" }
        ));
        t.push_str(&format!(
            "{:<6} {:<34} {:<26} {:<22} {:<22} {:>8}\n",
            "cores", "our plan: decoder · x264 threads", "contender", "wall s", "CPU s", "speedup"
        ));
        for p in &self.points {
            let plan = format!(
                "{} · {}",
                p.plan.decoder_threads,
                p.plan
                    .x264_threads
                    .iter()
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (i, r) in p.results.iter().enumerate() {
                let (cores, plan) = if i == 0 {
                    (p.cores.to_string(), plan.as_str())
                } else {
                    (String::new(), "")
                };
                t.push_str(&format!(
                    "{cores:<6} {plan:<34} {:<26} {:<22} {:<22} {:>8}\n",
                    r.contender,
                    report::cell(&r.wall_s, 2),
                    report::cell(&r.cpu_s, 2),
                    report::opt(r.speedup, 2),
                ));
            }
        }
        t.lines().map(|l| format!("{}\n", l.trim_end())).collect()
    }
}

pub(super) fn run(args: &BenchArgs, common: &Common) -> Result<()> {
    let available = num_cpus::get();
    if let Some(&bad) = args.cores.iter().find(|&&c| c == 0 || c > available) {
        bail!("--cores {bad}: this process may run on 1 to {available} CPUs");
    }
    let mut contenders: Vec<Contender> = common
        .ffmpegs
        .iter()
        .map(|f| Contender::single(f, Threading::Default))
        .collect();
    contenders.push(Contender::in_process());
    let setups = args
        .cores
        .iter()
        .map(|&c| common.setup(args, c))
        .collect::<Result<Vec<_>>>()?;
    let first = setups[0].clone();
    let n = first.rungs.len();
    let steps =
        args.runs * args.cores.len() * contenders.iter().map(|c| steps_of(c, n)).sum::<usize>();
    eprintln!(
        "bench --cores {}: {} ({}), {} contenders × {} run(s)",
        args.cores
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        common.source.display(),
        common.kind.describe(),
        contenders.len(),
        args.runs
    );
    let mut runner = Runner {
        common,
        qualities: common.qualities(args, &first),
        setup: first,
        out: args.out.join("scaling"),
        progress: Progress::new(steps),
        commands: BTreeMap::new(),
        pin: None,
    };
    let mut raw: Vec<(usize, RunRecord)> = Vec::new();
    for run in 1..=args.runs {
        for (&cores, setup) in args.cores.iter().zip(&setups) {
            runner.setup = setup.clone();
            runner.pin = Some(cores);
            for c in &contenders {
                let tag = format!("run {run}/{} · {cores} core(s) · {}", args.runs, c.label);
                let log = format!("run{run}-cores{cores}-{}", c.label);
                let mut record = runner.run_contender(c, &tag, &log)?;
                record.run = run;
                raw.push((cores, record));
            }
        }
    }
    runner.progress.finish();

    let spread = |v: Vec<f64>| {
        Spread::of(&v).unwrap_or(Spread {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        })
    };
    let of = |cores: usize, label: &str, f: &dyn Fn(&RunRecord) -> f64| {
        spread(
            raw.iter()
                .filter(|(c, r)| *c == cores && r.contender == label)
                .map(|(_, r)| f(r))
                .collect(),
        )
    };
    let base_cores = args.cores[0];
    let points = args
        .cores
        .iter()
        .zip(&setups)
        .map(|(&cores, setup)| ScalingPoint {
            cores,
            plan: ThreadPlan {
                decoder_threads: media::decoder_threads(cores),
                x264_threads: setup
                    .rungs
                    .iter()
                    .map(|r| (r.name.clone(), r.threads))
                    .collect(),
            },
            results: contenders
                .iter()
                .map(|c| {
                    let wall = of(cores, &c.label, &|r| r.usage.wall_s);
                    let base = of(base_cores, &c.label, &|r| r.usage.wall_s);
                    ScalingResult {
                        contender: c.label.clone(),
                        wall_s: wall,
                        cpu_s: of(cores, &c.label, &|r| r.cpu_s),
                        max_rss_mb: of(cores, &c.label, &|r| r.usage.max_rss_kb as f64 / 1024.0),
                        speedup: super::metrics::ratio(base.median, wall.median),
                    }
                })
                .collect(),
        })
        .collect();
    let report = ScalingReport {
        machine: super::machine(&common.ffmpegs),
        source: common.source.display().to_string(),
        source_kind: common.kind.describe(),
        qualities: runner.qualities.clone(),
        preset: args.preset.clone(),
        runs: args.runs,
        points,
        commands: runner.commands.clone(),
        raw,
    };
    let json = args.out.join("scaling.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    print!("{}", report.table());
    println!("\nreport: {}", json.display());
    Ok(())
}
