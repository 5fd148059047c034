//! What the bench found, in three forms: `report.json` (everything, raw runs included), the
//! table on the terminal, and a bar chart (SVG) of wall and CPU time with the floor drawn in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::child::Usage;
use super::metrics::{self, ParityCheck, RenditionQuality, Spread};
use super::pipelines::{Contender, Ffmpeg, Pipeline, Rung, Threading};

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs (what our pipeline's thread budget is).
    pub cores: usize,
    pub physical_cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// UTC, ISO 8601.
    pub date: String,
    /// `release` or `debug`: a debug build's in-process numbers mean nothing.
    pub build: &'static str,
    pub video_worker: String,
    /// The FFmpeg our pipeline links (`media::ffi::runtime_version`).
    pub ffmpeg_libs: String,
    /// The ffmpeg CLIs of the baselines, in `--ffmpeg` order; the first also runs seed-cli, the
    /// floor and the measurements.
    pub ffmpeg_cli: Vec<Ffmpeg>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub source: String,
    /// What the source is: real footage (with its credit), a given file, or synthetic (smoke
    /// only).
    pub source_kind: String,
    pub qualities: Vec<String>,
    pub preset: String,
    pub runs: usize,
    pub segment_seconds: f64,
    pub gop_seconds: f64,
    /// Decoder threads of the tuned single commands and the floor.
    pub decoder_threads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceSummary {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub duration_s: f64,
    pub has_audio: bool,
    pub size_bytes: u64,
}

/// One named part of a measurement (a seed-cli quality, a floor encode).
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub label: String,
    #[serde(flatten)]
    pub usage: Usage,
    pub cpu_s: f64,
}

impl Part {
    pub fn new(label: impl Into<String>, usage: Usage) -> Part {
        Part {
            label: label.into(),
            usage,
            cpu_s: usage.cpu_s(),
        }
    }
}

/// One run of one contender.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// The contender's label (`Contender::label`).
    pub contender: String,
    pub pipeline: Pipeline,
    pub run: usize,
    #[serde(flatten)]
    pub usage: Usage,
    pub cpu_s: f64,
    /// Bytes of MPEG-TS segments per rendition.
    pub bytes: BTreeMap<String, u64>,
    /// The processes it took, when more than one (seed-cli: one per quality).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
    /// `elapsed_seconds` as the in-process pipeline reports it itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_reported_s: Option<f64>,
}

/// One measurement of the floor: a decode plus x264 alone per rendition.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRun {
    pub run: usize,
    pub decode: Part,
    pub encodes: Vec<Part>,
    /// Decode CPU + every encode's CPU.
    pub cpu_s: f64,
    pub longest_encode_wall_s: f64,
}

/// Quality of one rendition of one contender (measured on its first run).
#[derive(Debug, Clone, Serialize)]
pub struct QualityRecord {
    pub contender: String,
    pub rendition: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    #[serde(flatten)]
    pub quality: RenditionQuality,
}

/// Medians and spreads of one contender over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct ContenderSummary {
    pub contender: String,
    pub pipeline: Pipeline,
    pub wall_s: Spread,
    pub cpu_s: Spread,
    pub max_rss_mb: Spread,
    /// Floor CPU / median CPU; withheld (null) when in-process is at parity with no peer.
    pub cpu_efficiency: Option<f64>,
    /// max(floor CPU / cores, longest encode wall) / median wall; withheld likewise.
    pub wall_efficiency: Option<f64>,
}

/// One FFmpeg's single-command peer: the faster (median wall) of its threadings.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    /// `ffmpeg7.0-single`.
    pub name: String,
    pub ffmpeg: String,
    pub winner: Threading,
    /// The winning contender's label.
    pub contender: String,
    /// Median wall of each threading, as they ran.
    pub wall_s: BTreeMap<Threading, f64>,
    /// In-process is at quality parity with the winner on every rendition.
    pub parity: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloorSummary {
    pub cpu_s: Spread,
    pub decode_cpu_s: Spread,
    pub longest_encode_wall_s: Spread,
    /// The shortest wall time the floor allows: max(median CPU / cores, longest encode wall).
    pub wall_bound_s: f64,
    /// Median CPU and wall of each rendition's encode.
    pub encodes: Vec<FloorEncode>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloorEncode {
    pub rendition: String,
    pub threads: usize,
    pub cpu_s: f64,
    pub wall_s: f64,
}

/// in-process over a baseline, from the medians.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratios {
    pub wall: Option<f64>,
    pub cpu: Option<f64>,
    pub max_rss: Option<f64>,
}

/// The parity of in-process against one single-command contender, one rendition.
#[derive(Debug, Clone, Serialize)]
pub struct PeerParity {
    /// The single-command contender's label.
    pub against: String,
    #[serde(flatten)]
    pub check: ParityCheck,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub config: Config,
    pub source: SourceSummary,
    pub renditions: Vec<Rung>,
    /// Who ran in each round, in order.
    pub contenders: Vec<Contender>,
    /// The command lines as first run, by kind (`logs/run<N>-<kind>.log` holds their stderr).
    pub commands: BTreeMap<String, String>,
    pub runs: Vec<RunRecord>,
    pub floor_runs: Vec<FloorRun>,
    pub quality: Vec<QualityRecord>,
    pub summary: Vec<ContenderSummary>,
    pub floor: FloorSummary,
    /// One single-command peer per FFmpeg, at its faster threading.
    pub peers: Vec<Peer>,
    /// The fastest peer (median wall): what the targets compare against (its ratio only when
    /// in-process is at parity with it).
    pub best_peer: Option<String>,
    /// "passed" when in-process is at parity with every peer's winning threading, else
    /// "failed".
    pub parity: &'static str,
    /// In-process against every single-command contender (both threadings of each FFmpeg).
    pub parity_checks: Vec<PeerParity>,
    /// Keyed "in-process/seed-cli" and "in-process/<peer>"; a peer's ratio only at parity
    /// with it, seed-cli's only at parity with some peer.
    pub ratios: BTreeMap<String, Ratios>,
}

fn spread(values: impl Iterator<Item = f64>) -> Spread {
    let v: Vec<f64> = values.collect();
    Spread::of(&v).unwrap_or(Spread {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
    })
}

/// Everything derived from the raw measurements: summaries, floor, peers, parity, ratios.
pub struct Derived {
    pub summary: Vec<ContenderSummary>,
    pub floor: FloorSummary,
    pub peers: Vec<Peer>,
    pub best_peer: Option<String>,
    pub parity_checks: Vec<PeerParity>,
    pub ratios: BTreeMap<String, Ratios>,
}

impl Derived {
    /// In-process is at parity with every peer's winning threading (and there is a peer).
    pub fn passed(&self) -> bool {
        !self.peers.is_empty() && self.peers.iter().all(|p| p.parity)
    }
}

fn floor_summary(floor_runs: &[FloorRun], rungs: &[Rung], cores: usize) -> FloorSummary {
    let floor_cpu = spread(floor_runs.iter().map(|f| f.cpu_s));
    let longest = spread(floor_runs.iter().map(|f| f.longest_encode_wall_s));
    FloorSummary {
        cpu_s: floor_cpu,
        decode_cpu_s: spread(floor_runs.iter().map(|f| f.decode.cpu_s)),
        longest_encode_wall_s: longest,
        wall_bound_s: (floor_cpu.median / cores.max(1) as f64).max(longest.median),
        encodes: rungs
            .iter()
            .map(|r| {
                let parts = || {
                    floor_runs
                        .iter()
                        .flat_map(|f| f.encodes.iter().filter(|e| e.label == r.name))
                };
                FloorEncode {
                    rendition: r.name.clone(),
                    threads: r.threads,
                    cpu_s: spread(parts().map(|e| e.cpu_s)).median,
                    wall_s: spread(parts().map(|e| e.usage.wall_s)).median,
                }
            })
            .collect(),
    }
}

/// Each FFmpeg's single commands grouped into a peer, the faster threading winning.
fn peers(
    contenders: &[Contender],
    summary: &[ContenderSummary],
    parity_checks: &[PeerParity],
) -> Vec<Peer> {
    let wall_of = |label: &str| {
        summary
            .iter()
            .find(|s| s.contender == label)
            .map_or(f64::NAN, |s| s.wall_s.median)
    };
    let mut peers: Vec<Peer> = Vec::new();
    for c in contenders {
        let (Pipeline::FfmpegSingle, Some(ffmpeg), Some(threading)) =
            (c.pipeline, &c.ffmpeg, c.threading)
        else {
            continue;
        };
        let wall = wall_of(&c.label);
        let name = format!("{}-single", ffmpeg.tag);
        match peers.iter_mut().find(|p| p.name == name) {
            Some(p) => {
                if wall < p.wall_s[&p.winner] {
                    p.winner = threading;
                    p.contender = c.label.clone();
                }
                p.wall_s.insert(threading, wall);
            }
            None => peers.push(Peer {
                name,
                ffmpeg: ffmpeg.version.clone(),
                winner: threading,
                contender: c.label.clone(),
                wall_s: BTreeMap::from([(threading, wall)]),
                parity: false,
            }),
        }
    }
    for p in &mut peers {
        let mine: Vec<&PeerParity> = parity_checks
            .iter()
            .filter(|c| c.against == p.contender)
            .collect();
        p.parity = !mine.is_empty() && mine.iter().all(|c| c.check.passed());
    }
    peers
}

pub fn derive(
    contenders: &[Contender],
    runs: &[RunRecord],
    floor_runs: &[FloorRun],
    quality: &[QualityRecord],
    rungs: &[Rung],
    cores: usize,
) -> Derived {
    let floor = floor_summary(floor_runs, rungs, cores);
    let measured = |label: &str, rendition: &str| {
        quality
            .iter()
            .find(|q| q.contender == label && q.rendition == rendition)
            .map(|q| q.quality)
    };
    let ours = Pipeline::InProcess.label();
    let parity_checks: Vec<PeerParity> = contenders
        .iter()
        .filter(|c| c.pipeline == Pipeline::FfmpegSingle)
        .flat_map(|c| {
            rungs.iter().map(|r| PeerParity {
                against: c.label.clone(),
                check: metrics::check_parity(
                    &r.name,
                    measured(ours, &r.name),
                    measured(&c.label, &r.name),
                ),
            })
        })
        .collect();

    let mut summary: Vec<ContenderSummary> = contenders
        .iter()
        .map(|c| {
            let mine = || runs.iter().filter(|r| r.contender == c.label);
            ContenderSummary {
                contender: c.label.clone(),
                pipeline: c.pipeline,
                wall_s: spread(mine().map(|r| r.usage.wall_s)),
                cpu_s: spread(mine().map(|r| r.cpu_s)),
                max_rss_mb: spread(mine().map(|r| r.usage.max_rss_kb as f64 / 1024.0)),
                cpu_efficiency: None,
                wall_efficiency: None,
            }
        })
        .collect();
    let peers = peers(contenders, &summary, &parity_checks);
    // The fastest peer, at parity or not: a peer off parity withholds its ratio, it does not
    // hand the targets to a slower one.
    let best_peer = peers
        .iter()
        .min_by(|a, b| a.wall_s[&a.winner].total_cmp(&b.wall_s[&b.winner]))
        .map(|p| p.name.clone());

    // Efficiencies and the seed-cli ratio mean something once in-process is shown to encode
    // as intended: at parity with at least one peer.
    let at_parity = peers.iter().any(|p| p.parity);
    if at_parity {
        for s in &mut summary {
            s.cpu_efficiency = metrics::cpu_efficiency(floor.cpu_s.median, s.cpu_s.median);
            s.wall_efficiency = metrics::wall_efficiency(
                floor.cpu_s.median,
                cores,
                floor.longest_encode_wall_s.median,
                s.wall_s.median,
            );
        }
    }
    let of = |label: &str| summary.iter().find(|s| s.contender == label);
    let mut ratios = BTreeMap::new();
    if let Some(o) = of(ours) {
        let mut baselines: Vec<(&str, &str)> = peers
            .iter()
            .filter(|p| p.parity)
            .map(|p| (p.name.as_str(), p.contender.as_str()))
            .collect();
        if at_parity {
            baselines.insert(0, (Pipeline::SeedCli.label(), Pipeline::SeedCli.label()));
        }
        for (name, label) in baselines {
            if let Some(b) = of(label) {
                ratios.insert(
                    format!("{ours}/{name}"),
                    Ratios {
                        wall: metrics::ratio(o.wall_s.median, b.wall_s.median),
                        cpu: metrics::ratio(o.cpu_s.median, b.cpu_s.median),
                        max_rss: metrics::ratio(o.max_rss_mb.median, b.max_rss_mb.median),
                    },
                );
            }
        }
    }
    Derived {
        summary,
        floor,
        peers,
        best_peer,
        parity_checks,
        ratios,
    }
}

pub(super) fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:.digits$}"),
        None => "—".into(),
    }
}

pub(super) fn cell(s: &Spread, digits: usize) -> String {
    if s.min == s.max {
        format!("{:.digits$}", s.median)
    } else {
        format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            s.median, s.min, s.max
        )
    }
}

impl Report {
    pub fn passed(&self) -> bool {
        self.parity == "passed"
    }

    /// The terminal table (also what the README's "Benchmark" section quotes).
    pub fn table(&self) -> String {
        let mut t = String::new();
        let m = &self.machine;
        let c = &self.config;
        let src = &self.source;
        let _ = writeln!(
            t,
            "video-worker bench · {} · {} cores ({}) · in-process on FFmpeg {} · {} build",
            m.date, m.cores, m.cpu_model, m.ffmpeg_libs, m.build
        );
        let _ = writeln!(
            t,
            "source {} ({}x{}, {:.2} fps, {:.2} s, {}) · {}",
            c.source,
            src.width,
            src.height,
            src.fps,
            src.duration_s,
            if src.has_audio {
                "with audio"
            } else {
                "no audio"
            },
            c.source_kind
        );
        let _ = writeln!(
            t,
            "ladder {} · preset {} · {} run{} (interleaved)",
            self.renditions
                .iter()
                .map(|r| format!("{} {}x{} {} thr", r.name, r.width, r.height, r.threads))
                .collect::<Vec<_>>()
                .join(", "),
            c.preset,
            c.runs,
            if c.runs == 1 { "" } else { "s" }
        );
        for f in &m.ffmpeg_cli {
            let _ = writeln!(t, "{}: {} ({})", f.tag, f.path.display(), f.version);
        }
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<26} {:<22} {:<22} {:<22} {:>8} {:>9}",
            "contender", "wall s", "CPU s", "peak RSS MB", "CPU eff", "wall eff"
        );
        let _ = writeln!(
            t,
            "{:<26} {:<22} {:<22} {:<22}",
            "", "median (min–max)", "median (min–max)", "median (min–max)"
        );
        for s in &self.summary {
            let _ = writeln!(
                t,
                "{:<26} {:<22} {:<22} {:<22} {:>8} {:>9}",
                s.contender,
                cell(&s.wall_s, 2),
                cell(&s.cpu_s, 2),
                cell(&s.max_rss_mb, 1),
                opt(s.cpu_efficiency, 2),
                opt(s.wall_efficiency, 2),
            );
        }
        let f = &self.floor;
        let _ = writeln!(
            t,
            "{:<26} {:<22} {:<22} (wall bound = max(CPU / {} cores, longest encode {:.2} s))",
            "floor",
            format!("{:.2} (bound)", f.wall_bound_s),
            cell(&f.cpu_s, 2),
            m.cores,
            f.longest_encode_wall_s.median
        );
        let encodes = f
            .encodes
            .iter()
            .map(|e| {
                format!(
                    "{} {:.2} s CPU / {:.2} s wall ({} thr)",
                    e.rendition, e.cpu_s, e.wall_s, e.threads
                )
            })
            .collect::<Vec<_>>()
            .join(" · ");
        let _ = writeln!(
            t,
            "{:<26} decode {:.2} s CPU · {encodes}",
            "", f.decode_cpu_s.median
        );

        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "single-command peers (each FFmpeg at its faster threading, by median wall):"
        );
        for p in &self.peers {
            let walls = p
                .wall_s
                .iter()
                .map(|(th, w)| format!("{} {w:.2} s", th.label()))
                .collect::<Vec<_>>()
                .join(", ");
            let best = if self.best_peer.as_deref() == Some(p.name.as_str()) {
                " · BEST"
            } else {
                ""
            };
            let _ = writeln!(
                t,
                "  {:<24} {} won ({walls}) · parity {}{best}",
                p.name,
                p.winner.describe(),
                if p.parity { "yes" } else { "NO" }
            );
        }

        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "quality vs the source scaled with bicubic (first run): PSNR dB / SSIM / kb/s"
        );
        let _ = write!(t, "{:<26}", "contender");
        for r in &self.renditions {
            let _ = write!(t, " {:<26}", format!("{} {}x{}", r.name, r.width, r.height));
        }
        let _ = writeln!(t);
        for s in &self.summary {
            let _ = write!(t, "{:<26}", s.contender);
            for r in &self.renditions {
                let q = self
                    .quality
                    .iter()
                    .find(|q| q.contender == s.contender && q.rendition == r.name);
                let text = match q {
                    Some(q) => format!(
                        "{:.2} / {:.4} / {:.0}",
                        q.quality.psnr,
                        q.quality.ssim,
                        q.quality.bitrate / 1000.0
                    ),
                    None => "—".into(),
                };
                let _ = write!(t, " {text:<26}");
            }
            let _ = writeln!(t);
        }

        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "parity (in-process vs each peer's winning threading, every rendition: PSNR ±{} dB, SSIM ±{}, bitrate ±{:.0} %): {}",
            metrics::PSNR_TOLERANCE_DB,
            metrics::SSIM_TOLERANCE,
            metrics::BITRATE_TOLERANCE * 100.0,
            self.parity.to_uppercase()
        );
        for check in self.parity_checks.iter().filter(|c| !c.check.passed()) {
            let compared = self.peers.iter().any(|p| p.contender == check.against);
            for why in &check.check.failures {
                let _ = writeln!(
                    t,
                    "  vs {} {}: {why}{}",
                    check.against,
                    check.check.rendition,
                    if compared {
                        ""
                    } else {
                        " (the slower threading: shown, not compared)"
                    }
                );
            }
        }
        for (k, r) in &self.ratios {
            let best = match &self.best_peer {
                Some(b) if k.ends_with(&format!("/{b}")) => " (best peer)",
                _ => "",
            };
            let _ = writeln!(
                t,
                "{:<40} wall {}×  CPU {}×  peak RSS {}×",
                format!("{k}{best}"),
                opt(r.wall, 3),
                opt(r.cpu, 3),
                opt(r.max_rss, 3)
            );
        }
        if let Some(best) = self
            .peers
            .iter()
            .find(|p| Some(&p.name) == self.best_peer.as_ref())
        {
            if !best.parity {
                let _ = writeln!(
                    t,
                    "no ratio against the best peer {}: in-process is not at quality parity with \
                     its {} (see above)",
                    best.name,
                    best.winner.describe()
                );
            }
        }
        if self.ratios.is_empty() {
            let _ = writeln!(
                t,
                "no speed ratio or efficiency reported: in-process is at quality parity with no \
                 peer, so the times are not comparable"
            );
        }
        // Padded columns leave trailing blanks; a pasted table is cleaner without them.
        t.lines().map(|l| format!("{}\n", l.trim_end())).collect()
    }

    /// A grouped bar chart: per contender, median wall and CPU seconds with min–max whiskers;
    /// the floor's CPU and wall bound as dashed lines across the chart.
    pub fn svg(&self) -> String {
        const W: f64 = 900.0;
        const H: f64 = 480.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 130.0;
        const TOP: f64 = 80.0;
        const BOTTOM: f64 = 120.0;
        const WALL: &str = "#4e79a7";
        const CPU: &str = "#f28e2b";
        let plot_w = W - LEFT - RIGHT;
        let plot_h = H - TOP - BOTTOM;
        let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
        let top_value = self
            .summary
            .iter()
            .flat_map(|s| [s.wall_s.max, s.cpu_s.max])
            .chain([self.floor.cpu_s.median, self.floor.wall_bound_s])
            .map(finite)
            .fold(0.0, f64::max);
        let (step, ymax) = axis(top_value);
        let y = |v: f64| TOP + plot_h - finite(v) / ymax * plot_h;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"##
        );
        let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="white"/>"##);
        let title = format!(
            "video-worker bench · preset {} · median of {} run{}",
            self.config.preset,
            self.config.runs,
            if self.config.runs == 1 { "" } else { "s" }
        );
        let source = format!(
            "{} · {} ({}x{}, {:.1} s) → {}",
            // "real footage: <credit>" is long; the table and report.json carry the credit.
            self.config.source_kind.split(':').next().unwrap_or(""),
            self.config.source.rsplit('/').next().unwrap_or(""),
            self.source.width,
            self.source.height,
            self.source.duration_s,
            self.renditions
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
        let machine = format!(
            "{} cores ({}) · {} · {} · parity {}",
            self.machine.cores,
            self.machine.cpu_model,
            self.machine
                .ffmpeg_cli
                .iter()
                .map(|f| format!("ffmpeg {}", f.version))
                .collect::<Vec<_>>()
                .join(", "),
            self.machine.date,
            self.parity
        );
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{}</text>"##,
            xml(&title)
        );
        for (k, line) in [source, machine].iter().enumerate() {
            let _ = writeln!(
                s,
                r##"<text x="{LEFT}" y="{}" fill="#555">{}</text>"##,
                38 + 16 * k,
                xml(line)
            );
        }
        // Axis and grid.
        let mut v = 0.0;
        while v <= ymax + 1e-9 {
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                yy + 4.0,
                trim_number(v)
            );
            v += step;
        }
        let _ = writeln!(
            s,
            r##"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">seconds</text>"##,
            TOP + plot_h / 2.0
        );
        // Bars.
        let group_w = plot_w / self.summary.len().max(1) as f64;
        let bar_w = (group_w * 0.3).min(60.0);
        for (i, p) in self.summary.iter().enumerate() {
            let gx = LEFT + group_w * i as f64 + group_w / 2.0;
            for (j, (spread, color)) in [(&p.wall_s, WALL), (&p.cpu_s, CPU)].iter().enumerate() {
                let x = gx - bar_w + j as f64 * bar_w;
                let top = y(spread.median);
                let _ = writeln!(
                    s,
                    r##"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"##,
                    bar_w - 4.0,
                    TOP + plot_h - top
                );
                let cx = x + (bar_w - 4.0) / 2.0;
                let _ = writeln!(
                    s,
                    r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/>"##,
                    y(spread.min),
                    y(spread.max)
                );
                let _ = writeln!(
                    s,
                    r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
                    y(spread.max) - 4.0,
                    short_secs(spread.median)
                );
            }
            // Contender names are long (ffmpeg7.0-single-default): slanted, ending under
            // their bars.
            let ly = TOP + plot_h + 16.0;
            let _ = writeln!(
                s,
                r##"<text x="{gx:.1}" y="{ly:.1}" text-anchor="end" font-size="11" font-weight="bold" transform="rotate(-20 {gx:.1} {ly:.1})">{}</text>"##,
                xml(&p.contender)
            );
        }
        // Floor lines.
        for (value, color, label) in [
            (
                self.floor.cpu_s.median,
                CPU,
                format!("floor CPU {} s", short_secs(self.floor.cpu_s.median)),
            ),
            (
                self.floor.wall_bound_s,
                WALL,
                format!("floor wall {} s", short_secs(self.floor.wall_bound_s)),
            ),
        ] {
            let yy = y(value);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"##,
                LEFT + plot_w,
                LEFT + plot_w + 6.0,
                yy + 4.0,
                xml(&label)
            );
        }
        // Legend, under the pipeline names.
        let ly = TOP + plot_h + 84.0;
        let mut lx = LEFT;
        for (color, label) in [(WALL, "wall time"), (CPU, "CPU time (user+sys)")] {
            let _ = writeln!(
                s,
                r##"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{:.1}" y="{ly:.1}">{label}</text>"##,
                ly - 10.0,
                lx + 18.0
            );
            lx += 36.0 + 7.0 * label.len() as f64;
        }
        let _ = writeln!(
            s,
            r##"<line x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#555" stroke-width="2" stroke-dasharray="6 4"/><text x="{:.1}" y="{ly:.1}" fill="#555">floor (x264 alone + one decode) · whiskers: min–max</text>"##,
            lx + 24.0,
            ly - 4.0,
            ly - 4.0,
            lx + 30.0
        );
        if !self.passed() {
            let _ = writeln!(
                s,
                r##"<text x="{LEFT}" y="{:.1}" fill="#c00" font-weight="bold">parity FAILED against a peer: its ratios are withheld (see the table or report.json)</text>"##,
                H - 12.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// A round tick step and the axis top above `max` (1, 2 or 5 × 10^k; about 5 ticks).
fn axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 1.0);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil().max(1.0) * step)
}

/// Seconds with about three significant digits (0.72, 7.2, 72).
fn short_secs(v: f64) -> String {
    match v {
        v if !v.is_finite() => "?".into(),
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

fn trim_number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Now, UTC, as `2026-11-27T04:05:06Z` (no date crate for one timestamp).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    utc_from_unix(secs)
}

fn utc_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-from-civil, inverted (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_time_formats_as_utc() {
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_from_unix(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(axis(23.0), (5.0, 25.0));
        assert_eq!(axis(1.2), (0.5, 1.5));
        assert_eq!(axis(0.0), (1.0, 1.0));
    }

    fn usage(wall: f64, cpu: f64, rss_kb: u64) -> Usage {
        Usage {
            wall_s: wall,
            user_s: cpu,
            sys_s: 0.0,
            max_rss_kb: rss_kb,
        }
    }

    fn rung() -> Rung {
        Rung {
            name: "360p".into(),
            width: 640,
            height: 360,
            bitrate: 800_000,
            seed_height: 360,
            threads: 2,
        }
    }

    fn ffmpeg(tag: &str) -> Ffmpeg {
        Ffmpeg {
            path: tag.into(),
            version: format!("{tag}-test"),
            tag: tag.into(),
        }
    }

    /// Two FFmpegs: 5.1's tuned command is its faster, 7.0's default one; every single
    /// command measures PSNR 40.0 but 7.0's default (`ff7_default_psnr`).
    fn fixture(in_process_psnr: f64, ff7_default_psnr: f64) -> Derived {
        let contenders = Contender::round(&[ffmpeg("ffmpeg5.1"), ffmpeg("ffmpeg7.0")]);
        let runs: Vec<RunRecord> = [
            ("seed-cli", 10.0, 18.0),
            ("ffmpeg5.1-single-default", 8.5, 15.0),
            ("ffmpeg5.1-single-tuned", 8.0, 15.0),
            ("ffmpeg7.0-single-default", 7.5, 14.0),
            ("ffmpeg7.0-single-tuned", 7.8, 14.0),
            ("in-process", 6.0, 12.0),
        ]
        .iter()
        .zip(&contenders)
        .map(|(&(label, wall, cpu), c)| {
            assert_eq!(label, c.label);
            RunRecord {
                contender: c.label.clone(),
                pipeline: c.pipeline,
                run: 1,
                usage: usage(wall, cpu, 102_400),
                cpu_s: cpu,
                bytes: BTreeMap::new(),
                parts: vec![],
                self_reported_s: None,
            }
        })
        .collect();
        let floor = vec![FloorRun {
            run: 1,
            decode: Part::new("decode", usage(0.5, 1.0, 1)),
            encodes: vec![Part::new("360p", usage(5.0, 10.0, 1))],
            cpu_s: 11.0,
            longest_encode_wall_s: 5.0,
        }];
        let q = |contender: &str, psnr| QualityRecord {
            contender: contender.into(),
            rendition: "360p".into(),
            width: 640,
            height: 360,
            bytes: 1,
            quality: RenditionQuality {
                psnr,
                ssim: 0.98,
                bitrate: 800_000.0,
            },
        };
        let quality = vec![
            q("ffmpeg5.1-single-default", 40.0),
            q("ffmpeg5.1-single-tuned", 40.0),
            q("ffmpeg7.0-single-default", ff7_default_psnr),
            q("ffmpeg7.0-single-tuned", 40.0),
            q("in-process", in_process_psnr),
        ];
        derive(&contenders, &runs, &floor, &quality, &[rung()], 2)
    }

    #[test]
    fn each_ffmpeg_is_one_peer_at_its_faster_threading() {
        let d = fixture(40.05, 40.0);
        let winners: Vec<(&str, Threading, &str)> = d
            .peers
            .iter()
            .map(|p| (p.name.as_str(), p.winner, p.contender.as_str()))
            .collect();
        assert_eq!(
            winners,
            [
                (
                    "ffmpeg5.1-single",
                    Threading::Tuned,
                    "ffmpeg5.1-single-tuned"
                ),
                (
                    "ffmpeg7.0-single",
                    Threading::Default,
                    "ffmpeg7.0-single-default"
                ),
            ]
        );
        assert_eq!(d.peers[0].wall_s[&Threading::Default], 8.5);
        assert_eq!(d.best_peer.as_deref(), Some("ffmpeg7.0-single"));
        assert!(d.passed());
    }

    #[test]
    fn ratios_and_efficiencies_come_from_the_medians_when_parity_holds() {
        let d = fixture(40.05, 40.0);
        let best = d.ratios["in-process/ffmpeg7.0-single"];
        assert_eq!(best.wall, Some(0.8));
        assert_eq!(best.cpu, Some(12.0 / 14.0));
        assert_eq!(best.max_rss, Some(1.0));
        assert_eq!(d.ratios["in-process/ffmpeg5.1-single"].wall, Some(0.75));
        assert_eq!(d.ratios["in-process/seed-cli"].wall, Some(0.6));
        let ours = &d.summary[5];
        assert_eq!(ours.pipeline, Pipeline::InProcess);
        assert_eq!(ours.cpu_efficiency, Some(11.0 / 12.0));
        // bound = max(11 / 2, 5) = 5.5 s
        assert_eq!(ours.wall_efficiency, Some(5.5 / 6.0));
        assert_eq!(d.floor.wall_bound_s, 5.5);
    }

    #[test]
    fn a_peer_off_parity_gets_no_ratio_but_stays_the_best() {
        let d = fixture(40.05, 41.0);
        assert!(!d.passed());
        assert!(!d.peers[1].parity && d.peers[0].parity);
        assert!(!d.ratios.contains_key("in-process/ffmpeg7.0-single"));
        assert!(d.ratios.contains_key("in-process/ffmpeg5.1-single"));
        assert_eq!(d.best_peer.as_deref(), Some("ffmpeg7.0-single"));
        assert!(d.ratios.contains_key("in-process/seed-cli"));
        let failed: Vec<&str> = d
            .parity_checks
            .iter()
            .filter(|c| !c.check.passed())
            .map(|c| c.against.as_str())
            .collect();
        assert_eq!(failed, ["ffmpeg7.0-single-default"]);
    }

    #[test]
    fn parity_with_no_peer_withholds_every_ratio_and_efficiency() {
        let d = fixture(39.5, 40.0);
        assert!(!d.passed());
        assert!(d.ratios.is_empty());
        assert!(d.summary.iter().all(|s| s.cpu_efficiency.is_none()));
    }
}
