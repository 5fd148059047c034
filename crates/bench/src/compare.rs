//! The comparison: every contender of a round (seed-cli, each FFmpeg's single command in both
//! threadings, in-process) run interleaved `--runs` times with the floor, then quality,
//! peers, parity and ratios.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::child::{self, Measured, Progress, Usage};
use super::metrics::{self, RenditionQuality};
use super::pipelines::{self, Contender, Pipeline, Rung, Setup};
use super::report::{self, FloorRun, Part, QualityRecord, Report, RunRecord};
use super::{fresh_dir, remove_dir, rendition_bytes, BenchArgs, Common, Parity};
use video_worker::media::{self, Limits};

/// A command to measure: what runs it (`taskset -c …` in the scaling mode) and the command.
pub(super) struct Command {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Command {
    pub fn new(program: &Path, args: Vec<String>) -> Command {
        Command {
            program: program.to_path_buf(),
            args,
        }
    }

    /// The same command pinned to the first `cores` CPUs with `taskset` (which execs it, so
    /// `wait4` still measures the command itself).
    pub fn pinned(self, cores: Option<usize>) -> Command {
        match cores {
            None => self,
            Some(n) => {
                let mut args = vec![
                    "-c".to_string(),
                    format!("0-{}", n.saturating_sub(1)),
                    self.program.to_string_lossy().into_owned(),
                ];
                args.extend(self.args);
                Command {
                    program: PathBuf::from("taskset"),
                    args,
                }
            }
        }
    }
}

/// Runs contenders and measurements, logging each command and keeping the first command
/// line of each kind for the report.
pub(super) struct Runner<'a> {
    pub common: &'a Common,
    pub setup: Setup,
    /// The ladder's names as `transcode --quality` takes them.
    pub qualities: Vec<String>,
    pub out: PathBuf,
    pub progress: Progress,
    /// Each kind of command as first run (for the report).
    pub commands: BTreeMap<String, String>,
    /// Pin every contender to this many CPUs (the scaling mode).
    pub pin: Option<usize>,
}

impl Runner<'_> {
    pub fn measure(&mut self, label: String, cmd: Command, log: &str) -> Result<child::Finished> {
        // One entry per kind of command: `run2-seed-cli-720p` is filed as `seed-cli-720p`.
        let kind = log
            .strip_prefix("run")
            .and_then(|rest| rest.split_once('-'))
            .filter(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
            .map_or(log, |(_, kind)| kind);
        self.commands.entry(kind.to_string()).or_insert_with(|| {
            format!(
                "{} {}",
                cmd.program.display(),
                child::shell_words(&cmd.args)
            )
        });
        child::run(
            Measured {
                label,
                program: &cmd.program,
                args: cmd.args,
                log: self.common.logs.join(log),
            },
            &mut self.progress,
        )
    }

    pub fn output_dir(&self, c: &Contender) -> PathBuf {
        self.out.join(&c.label)
    }

    /// One run of `c`; `tag` names it in the progress line and `log` in the log files.
    pub fn run_contender(&mut self, c: &Contender, tag: &str, log: &str) -> Result<RunRecord> {
        let dir = self.output_dir(c);
        let mut parts = Vec::new();
        let mut self_reported_s = None;
        let ffmpeg = c.ffmpeg.as_ref().map(|f| f.path.clone());
        let usage = match (c.pipeline, ffmpeg, c.threading) {
            (Pipeline::SeedCli, Some(ffmpeg), _) => {
                fresh_dir(&dir)?;
                let mut total = Usage::default();
                for rung in self.setup.rungs.clone() {
                    let args = pipelines::seed_cli_args(&self.setup, &rung, &dir);
                    let f = self.measure(
                        format!("{tag} {}", rung.name),
                        Command::new(&ffmpeg, args).pinned(self.pin),
                        &format!("{log}-{}", rung.name),
                    )?;
                    total = total.then(f.usage);
                    parts.push(Part::new(rung.name.clone(), f.usage));
                }
                total
            }
            (Pipeline::FfmpegSingle, Some(ffmpeg), Some(threading)) => {
                fresh_dir(&dir)?;
                let args = pipelines::ffmpeg_single_args(&self.setup, &dir, threading);
                let cmd = Command::new(&ffmpeg, args).pinned(self.pin);
                self.measure(tag.to_string(), cmd, log)?.usage
            }
            (Pipeline::InProcess, _, _) => {
                remove_dir(&dir)?;
                let args = pipelines::in_process_args(&self.setup, &self.qualities, &dir, None);
                let cmd = Command::new(&self.common.exe, args).pinned(self.pin);
                let f = self.measure(tag.to_string(), cmd, log)?;
                let text = std::fs::read_to_string(&f.stdout)?;
                let outcome: serde_json::Value = serde_json::from_str(text.trim())
                    .with_context(|| format!("in-process --json output: {text:?}"))?;
                self_reported_s = outcome.get("elapsed_seconds").and_then(|v| v.as_f64());
                f.usage
            }
            _ => bail!("contender {} lacks its ffmpeg or threading", c.label),
        };
        let mut bytes = BTreeMap::new();
        for rung in &self.setup.rungs {
            let b = rendition_bytes(&dir, &rung.name)?;
            if b == 0 {
                bail!(
                    "{} produced no segments for {} in {}",
                    c.label,
                    rung.name,
                    dir.display()
                );
            }
            bytes.insert(rung.name.clone(), b);
        }
        Ok(RunRecord {
            contender: c.label.clone(),
            pipeline: c.pipeline,
            run: 0,
            usage,
            cpu_s: usage.cpu_s(),
            bytes,
            parts,
            self_reported_s,
        })
    }

    fn raw_file(&self, rung: &Rung) -> PathBuf {
        self.out.join("floor").join(format!("{}.yuv", rung.name))
    }

    fn prescale(&mut self) -> Result<()> {
        fresh_dir(&self.out.join("floor"))?;
        let raw: Vec<PathBuf> = self.setup.rungs.iter().map(|r| self.raw_file(r)).collect();
        let cmd = Command::new(
            &self.setup.ffmpeg,
            pipelines::prescale_args(&self.setup, &raw),
        );
        self.measure("floor: pre-scaling raw frames".into(), cmd, "prescale")?;
        Ok(())
    }

    fn run_floor(&mut self, run: usize, runs: usize) -> Result<FloorRun> {
        let ffmpeg = self.setup.ffmpeg.clone();
        let cmd = Command::new(&ffmpeg, pipelines::floor_decode_args(&self.setup));
        let decode = self
            .measure(
                format!("run {run}/{runs} · floor decode"),
                cmd,
                &format!("run{run}-floor-decode"),
            )?
            .usage;
        let mut encodes = Vec::new();
        for rung in self.setup.rungs.clone() {
            let args = pipelines::floor_encode_args(&self.setup, &rung, &self.raw_file(&rung));
            let f = self.measure(
                format!("run {run}/{runs} · floor x264 {}", rung.name),
                Command::new(&ffmpeg, args),
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

    fn measure_quality(&mut self, record: &RunRecord) -> Result<Vec<QualityRecord>> {
        let dir = self.out.join(&record.contender);
        let mut out = Vec::new();
        for rung in self.setup.rungs.clone() {
            let first = dir.join(format!("{}_000.ts", rung.name));
            let info = media::probe(&first, &Limits::default())
                .map_err(|e| anyhow!("probing {}: {e}", first.display()))?;
            let (w, h) = (info.video.width, info.video.height);
            let playlist = dir.join(format!("{}.m3u8", rung.name));
            let args = pipelines::quality_args(&playlist, &self.setup.source, w, h);
            let f = self.measure(
                format!("quality · {} {}", record.contender, rung.name),
                Command::new(&self.setup.ffmpeg.clone(), args),
                &format!("quality-{}-{}", record.contender, rung.name),
            )?;
            let log = std::fs::read_to_string(&f.stderr)?;
            let psnr = metrics::parse_psnr(&log)
                .ok_or_else(|| anyhow!("no PSNR summary in {}", f.stderr.display()))?;
            let ssim = metrics::parse_ssim(&log)
                .ok_or_else(|| anyhow!("no SSIM summary in {}", f.stderr.display()))?;
            let bytes = record.bytes.get(&rung.name).copied().unwrap_or(0);
            out.push(QualityRecord {
                contender: record.contender.clone(),
                rendition: rung.name.clone(),
                width: w,
                height: h,
                bytes,
                quality: RenditionQuality {
                    psnr,
                    ssim,
                    bitrate: bytes as f64 * 8.0 / self.common.duration,
                },
            });
        }
        Ok(out)
    }
}

/// Measured steps of one run of `c` with `rungs` renditions (for the progress line).
pub(super) fn steps_of(c: &Contender, rungs: usize) -> usize {
    match c.pipeline {
        Pipeline::SeedCli => rungs,
        Pipeline::FfmpegSingle | Pipeline::InProcess => 1,
    }
}

pub(super) fn run(args: &BenchArgs, common: &Common) -> Result<Parity> {
    let cores = num_cpus::get();
    let setup = common.setup(args, cores)?;
    let contenders = Contender::round(&common.ffmpegs);
    let n = setup.rungs.len();
    let per_round: usize = contenders.iter().map(|c| steps_of(c, n)).sum::<usize>() + 1 + n;
    let steps = 1 + args.runs * per_round + contenders.len() * n;
    let fps = f64::from(common.info.video.frame_rate);
    let raw_bytes: u64 = setup
        .rungs
        .iter()
        .map(|r| u64::from(r.width) * u64::from(r.height) * 3 / 2)
        .sum::<u64>()
        * (common.duration * fps).ceil() as u64;
    eprintln!(
        "bench: {} ({}x{}, {:.2} s; {}), {} rendition(s), {} contenders × {} run(s), {steps} \
         measured steps; the floor's raw frames take {:.0} MB in {} while it runs",
        common.source.display(),
        common.info.video.width,
        common.info.video.height,
        common.duration,
        common.kind.describe(),
        n,
        contenders.len(),
        args.runs,
        raw_bytes as f64 / 1e6,
        args.out.join("floor").display()
    );

    let mut runner = Runner {
        common,
        qualities: common.qualities(args, &setup),
        setup,
        out: args.out.clone(),
        progress: Progress::new(steps),
        commands: BTreeMap::new(),
        pin: None,
    };
    runner.prescale()?;
    let mut runs = Vec::new();
    let mut floor_runs = Vec::new();
    let mut quality = Vec::new();
    for run in 1..=args.runs {
        let mut first = Vec::new();
        for c in &contenders {
            let tag = format!("run {run}/{} · {}", args.runs, c.label);
            let mut record = runner.run_contender(c, &tag, &format!("run{run}-{}", c.label))?;
            record.run = run;
            if run == 1 {
                first.push(record.clone());
            }
            runs.push(record);
        }
        floor_runs.push(runner.run_floor(run, args.runs)?);
        // Quality once per contender, from the first run's output, after the whole round so
        // the measurement never sits between two timed contenders of the same round.
        for record in &first {
            quality.extend(runner.measure_quality(record)?);
        }
    }
    runner.progress.finish();
    let _ = std::fs::remove_dir_all(args.out.join("floor"));

    let derived = report::derive(
        &contenders,
        &runs,
        &floor_runs,
        &quality,
        &runner.setup.rungs,
        cores,
    );
    let passed = derived.passed();
    let info = &common.info;
    let report = Report {
        machine: super::machine(&common.ffmpegs),
        config: report::Config {
            source: common.source.display().to_string(),
            source_kind: common.kind.describe(),
            qualities: runner.setup.rungs.iter().map(|r| r.name.clone()).collect(),
            preset: args.preset.clone(),
            runs: args.runs,
            segment_seconds: runner.setup.segment_seconds,
            gop_seconds: runner.setup.gop_seconds,
            decoder_threads: runner.setup.decoder_threads,
        },
        source: report::SourceSummary {
            width: info.video.width,
            height: info.video.height,
            fps,
            duration_s: common.duration,
            has_audio: info.audio.is_some(),
            size_bytes: info.size_bytes,
        },
        renditions: runner.setup.rungs.clone(),
        contenders,
        commands: runner.commands.clone(),
        runs,
        floor_runs,
        quality,
        summary: derived.summary,
        floor: derived.floor,
        peers: derived.peers,
        best_peer: derived.best_peer,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_command_runs_under_taskset_on_the_first_cpus() {
        let cmd = Command::new(Path::new("/usr/bin/ffmpeg"), vec!["-i".into(), "a".into()]);
        let pinned = cmd.pinned(Some(2));
        assert_eq!(pinned.program, Path::new("taskset"));
        assert_eq!(pinned.args, ["-c", "0-1", "/usr/bin/ffmpeg", "-i", "a"]);
        let one = Command::new(Path::new("x"), vec![]).pinned(Some(1));
        assert_eq!(one.args, ["-c", "0-0", "x"]);
        let free = Command::new(Path::new("x"), vec!["y".into()]).pinned(None);
        assert_eq!(
            (free.program.as_path(), free.args),
            (Path::new("x"), vec!["y".into()])
        );
    }
}
