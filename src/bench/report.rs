//! What the bench found, in three forms: `report.json` (everything, raw runs included), the
//! table on the terminal, and a bar chart (SVG) of wall and CPU time with the floor drawn in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::child::Usage;
use super::metrics::{self, ParityCheck, RenditionQuality, Spread};
use super::pipelines::{Pipeline, Rung, Synthetic};

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
    /// First line of `ffmpeg -version`: the baselines' FFmpeg.
    pub ffmpeg_cli: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub source: String,
    pub synthetic: Option<Synthetic>,
    pub qualities: Vec<String>,
    pub preset: String,
    pub runs: usize,
    pub segment_seconds: f64,
    pub gop_seconds: f64,
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

/// One run of one pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
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

/// Quality of one rendition of one pipeline (measured on its first run).
#[derive(Debug, Clone, Serialize)]
pub struct QualityRecord {
    pub pipeline: Pipeline,
    pub rendition: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    #[serde(flatten)]
    pub quality: RenditionQuality,
}

/// Medians and spreads of one pipeline over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineSummary {
    pub pipeline: Pipeline,
    pub wall_s: Spread,
    pub cpu_s: Spread,
    pub max_rss_mb: Spread,
    /// Floor CPU / median CPU; withheld (null) when parity fails.
    pub cpu_efficiency: Option<f64>,
    /// max(floor CPU / cores, longest encode wall) / median wall; withheld when parity fails.
    pub wall_efficiency: Option<f64>,
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

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub config: Config,
    pub source: SourceSummary,
    pub renditions: Vec<Rung>,
    /// The command lines as first run, by kind (`logs/run<N>-<kind>.log` holds their stderr).
    pub commands: BTreeMap<String, String>,
    pub runs: Vec<RunRecord>,
    pub floor_runs: Vec<FloorRun>,
    pub quality: Vec<QualityRecord>,
    pub summary: Vec<PipelineSummary>,
    pub floor: FloorSummary,
    /// "passed" or "failed": in-process against ffmpeg-single, every rendition.
    pub parity: &'static str,
    pub parity_checks: Vec<ParityCheck>,
    /// Keyed "in-process/seed-cli" and "in-process/ffmpeg-single"; null when parity failed.
    pub ratios: Option<BTreeMap<String, Ratios>>,
}

fn spread(values: impl Iterator<Item = f64>) -> Spread {
    let v: Vec<f64> = values.collect();
    Spread::of(&v).unwrap_or(Spread {
        median: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
    })
}

/// Everything derived from the raw measurements: summaries, floor, parity, ratios.
pub struct Derived {
    pub summary: Vec<PipelineSummary>,
    pub floor: FloorSummary,
    pub parity_checks: Vec<ParityCheck>,
    pub ratios: Option<BTreeMap<String, Ratios>>,
}

pub fn derive(
    runs: &[RunRecord],
    floor_runs: &[FloorRun],
    quality: &[QualityRecord],
    rungs: &[Rung],
    cores: usize,
) -> Derived {
    let floor_cpu = spread(floor_runs.iter().map(|f| f.cpu_s));
    let longest = spread(floor_runs.iter().map(|f| f.longest_encode_wall_s));
    let wall_bound = (floor_cpu.median / cores.max(1) as f64).max(longest.median);
    let floor = FloorSummary {
        cpu_s: floor_cpu,
        decode_cpu_s: spread(floor_runs.iter().map(|f| f.decode.cpu_s)),
        longest_encode_wall_s: longest,
        wall_bound_s: wall_bound,
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
    };

    let measured = |p: Pipeline, name: &str| {
        quality
            .iter()
            .find(|q| q.pipeline == p && q.rendition == name)
            .map(|q| q.quality)
    };
    let parity_checks: Vec<ParityCheck> = rungs
        .iter()
        .map(|r| {
            metrics::check_parity(
                &r.name,
                measured(Pipeline::InProcess, &r.name),
                measured(Pipeline::FfmpegSingle, &r.name),
            )
        })
        .collect();
    let passed = parity_checks.iter().all(ParityCheck::passed);

    let summary: Vec<PipelineSummary> = Pipeline::ALL
        .iter()
        .map(|&p| {
            let mine = || runs.iter().filter(move |r| r.pipeline == p);
            let wall = spread(mine().map(|r| r.usage.wall_s));
            let cpu = spread(mine().map(|r| r.cpu_s));
            PipelineSummary {
                pipeline: p,
                wall_s: wall,
                cpu_s: cpu,
                max_rss_mb: spread(mine().map(|r| r.usage.max_rss_kb as f64 / 1024.0)),
                cpu_efficiency: passed
                    .then(|| metrics::cpu_efficiency(floor_cpu.median, cpu.median))
                    .flatten(),
                wall_efficiency: passed
                    .then(|| {
                        metrics::wall_efficiency(
                            floor_cpu.median,
                            cores,
                            longest.median,
                            wall.median,
                        )
                    })
                    .flatten(),
            }
        })
        .collect();

    let ratios = passed.then(|| {
        let of = |p: Pipeline| summary.iter().find(|s| s.pipeline == p);
        let ours = of(Pipeline::InProcess);
        [Pipeline::SeedCli, Pipeline::FfmpegSingle]
            .iter()
            .filter_map(|&base| {
                let (o, b) = (ours?, of(base)?);
                Some((
                    format!("{}/{}", Pipeline::InProcess, base),
                    Ratios {
                        wall: metrics::ratio(o.wall_s.median, b.wall_s.median),
                        cpu: metrics::ratio(o.cpu_s.median, b.cpu_s.median),
                        max_rss: metrics::ratio(o.max_rss_mb.median, b.max_rss_mb.median),
                    },
                ))
            })
            .collect()
    });
    Derived {
        summary,
        floor,
        parity_checks,
        ratios,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:.digits$}"),
        None => "—".into(),
    }
}

fn cell(s: &Spread, digits: usize) -> String {
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
            "video-worker bench · {} · {} cores ({}) · {} · {} build",
            m.date, m.cores, m.cpu_model, m.ffmpeg_cli, m.build
        );
        let _ = writeln!(
            t,
            "source {} ({}x{}, {:.2} fps, {:.2} s, {}) · ladder {} · preset {} · {} run{} (interleaved)",
            c.source,
            src.width,
            src.height,
            src.fps,
            src.duration_s,
            if src.has_audio { "with audio" } else { "no audio" },
            self.renditions
                .iter()
                .map(|r| format!("{} {}x{} {} thr", r.name, r.width, r.height, r.threads))
                .collect::<Vec<_>>()
                .join(", "),
            c.preset,
            c.runs,
            if c.runs == 1 { "" } else { "s" }
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<14} {:<22} {:<22} {:<22} {:>8} {:>9}",
            "pipeline", "wall s", "CPU s", "peak RSS MB", "CPU eff", "wall eff"
        );
        let _ = writeln!(
            t,
            "{:<14} {:<22} {:<22} {:<22}",
            "", "median (min–max)", "median (min–max)", "median (min–max)"
        );
        for s in &self.summary {
            let _ = writeln!(
                t,
                "{:<14} {:<22} {:<22} {:<22} {:>8} {:>9}",
                s.pipeline.label(),
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
            "{:<14} {:<22} {:<22} (wall bound = max(CPU / {} cores, longest encode {:.2} s))",
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
            "{:<14} decode {:.2} s CPU · {encodes}",
            "", f.decode_cpu_s.median
        );

        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "quality vs the source scaled with bicubic (first run): PSNR dB / SSIM / kb/s"
        );
        let _ = write!(t, "{:<20}", "rendition");
        for p in Pipeline::ALL {
            let _ = write!(t, " {:<26}", p.label());
        }
        let _ = writeln!(t);
        for r in &self.renditions {
            let _ = write!(t, "{:<20}", format!("{} {}x{}", r.name, r.width, r.height));
            for p in Pipeline::ALL {
                let q = self
                    .quality
                    .iter()
                    .find(|q| q.pipeline == p && q.rendition == r.name);
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
            "parity (in-process vs ffmpeg-single, every rendition: PSNR ±{} dB, SSIM ±{}, bitrate ±{:.0} %): {}",
            metrics::PSNR_TOLERANCE_DB,
            metrics::SSIM_TOLERANCE,
            metrics::BITRATE_TOLERANCE * 100.0,
            self.parity.to_uppercase()
        );
        match &self.ratios {
            Some(ratios) => {
                for (k, r) in ratios {
                    let _ = writeln!(
                        t,
                        "{k:<26} wall {}×  CPU {}×  peak RSS {}×",
                        opt(r.wall, 3),
                        opt(r.cpu, 3),
                        opt(r.max_rss, 3)
                    );
                }
            }
            None => {
                for check in self.parity_checks.iter().filter(|c| !c.passed()) {
                    for why in &check.failures {
                        let _ = writeln!(t, "  {}: {why}", check.rendition);
                    }
                }
                let _ = writeln!(
                    t,
                    "no speed ratio or efficiency reported: the pipelines did not produce the \
                     same quality, so their times are not comparable"
                );
            }
        }
        // Padded columns leave trailing blanks; a pasted table is cleaner without them.
        t.lines().map(|l| format!("{}\n", l.trim_end())).collect()
    }

    /// A grouped bar chart: per pipeline, median wall and CPU seconds with min–max whiskers;
    /// the floor's CPU and wall bound as dashed lines across the chart.
    pub fn svg(&self) -> String {
        const W: f64 = 760.0;
        const H: f64 = 450.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 130.0;
        const TOP: f64 = 80.0;
        const BOTTOM: f64 = 90.0;
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
            "{} ({}x{}, {:.1} s) → {}",
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
            self.machine.ffmpeg_cli,
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
            let _ = writeln!(
                s,
                r##"<text x="{gx:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"##,
                TOP + plot_h + 20.0,
                p.pipeline.label()
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
        let ly = TOP + plot_h + 44.0;
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
                r##"<text x="{LEFT}" y="{:.1}" fill="#c00" font-weight="bold">parity FAILED: the times are not comparable (see report.json)</text>"##,
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

    fn fixture(in_process_psnr: f64) -> Derived {
        let runs: Vec<RunRecord> = [
            (Pipeline::SeedCli, 10.0, 18.0),
            (Pipeline::FfmpegSingle, 8.0, 15.0),
            (Pipeline::InProcess, 6.0, 12.0),
        ]
        .iter()
        .map(|&(pipeline, wall, cpu)| RunRecord {
            pipeline,
            run: 1,
            usage: usage(wall, cpu, 102_400),
            cpu_s: cpu,
            bytes: BTreeMap::new(),
            parts: vec![],
            self_reported_s: None,
        })
        .collect();
        let floor = vec![FloorRun {
            run: 1,
            decode: Part::new("decode", usage(0.5, 1.0, 1)),
            encodes: vec![Part::new("360p", usage(5.0, 10.0, 1))],
            cpu_s: 11.0,
            longest_encode_wall_s: 5.0,
        }];
        let q = |pipeline, psnr| QualityRecord {
            pipeline,
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
            q(Pipeline::FfmpegSingle, 40.0),
            q(Pipeline::InProcess, in_process_psnr),
        ];
        derive(&runs, &floor, &quality, &[rung()], 2)
    }

    #[test]
    fn ratios_and_efficiencies_come_from_the_medians_when_parity_holds() {
        let d = fixture(40.05);
        let ratios = d.ratios.expect("parity passed");
        let single = ratios["in-process/ffmpeg-single"];
        assert_eq!(single.wall, Some(0.75));
        assert_eq!(single.cpu, Some(0.8));
        assert_eq!(single.max_rss, Some(1.0));
        assert_eq!(ratios["in-process/seed-cli"].wall, Some(0.6));
        let ours = &d.summary[2];
        assert_eq!(ours.pipeline, Pipeline::InProcess);
        assert_eq!(ours.cpu_efficiency, Some(11.0 / 12.0));
        // bound = max(11 / 2, 5) = 5.5 s
        assert_eq!(ours.wall_efficiency, Some(5.5 / 6.0));
        assert_eq!(d.floor.wall_bound_s, 5.5);
    }

    #[test]
    fn a_parity_failure_withholds_every_ratio() {
        let d = fixture(39.5);
        assert!(d.ratios.is_none());
        assert!(d.summary.iter().all(|s| s.cpu_efficiency.is_none()));
        assert!(!d.parity_checks[0].passed());
    }
}
