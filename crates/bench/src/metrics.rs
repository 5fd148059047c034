//! The pure arithmetic of the bench: reading FFmpeg's `psnr`/`ssim` summaries, medians and
//! spreads, the parity verdict and the ratios it guards, efficiencies against the floor.

use serde::Serialize;

/// Quality parity between the in-process pipeline and ffmpeg-single, per rendition (issue 4).
pub const PSNR_TOLERANCE_DB: f64 = 0.1;
pub const SSIM_TOLERANCE: f64 = 0.001;
/// Relative bitrate difference allowed (3 %).
pub const BITRATE_TOLERANCE: f64 = 0.03;

/// The average PSNR (dB) from the `psnr` filter's summary on stderr:
/// `[Parsed_psnr_3 @ 0x…] PSNR y:43.61 u:46.26 v:46.53 average:44.43 min:41.88 max:47.02`.
/// Identical pictures give `average:inf`.
pub fn parse_psnr(log: &str) -> Option<f64> {
    log.lines()
        .rev()
        .filter(|l| l.contains("PSNR ") && l.contains(" average:"))
        .find_map(|l| value_after(l, " average:"))
}

/// The combined SSIM from the `ssim` filter's summary on stderr:
/// `[Parsed_ssim_4 @ 0x…] SSIM Y:0.990182 (20.079731) U:… V:… All:0.990755 (20.342289)`.
pub fn parse_ssim(log: &str) -> Option<f64> {
    log.lines()
        .rev()
        .filter(|l| l.contains("SSIM ") && l.contains(" All:"))
        .find_map(|l| value_after(l, " All:"))
}

fn value_after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let token = rest.split_whitespace().next()?;
    match token {
        "inf" => Some(f64::INFINITY),
        t => t.parse().ok(),
    }
}

/// Median, minimum and maximum of a set of runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values. An even count takes the mean of the two middle values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// `ours / theirs`, or `None` when it means nothing (no baseline, zero or not finite).
pub fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    let r = ours / theirs;
    (theirs > 0.0 && r.is_finite()).then_some(r)
}

/// CPU efficiency: the floor's CPU time over the pipeline's (1.0 = no CPU spent beyond one
/// decode and the x264 encodes themselves).
pub fn cpu_efficiency(floor_cpu: f64, measured_cpu: f64) -> Option<f64> {
    ratio(floor_cpu, measured_cpu)
}

/// Wall efficiency: the best wall time the floor allows (all cores busy with the floor's CPU
/// work, but never shorter than the longest single rendition encode) over the measured wall.
pub fn wall_efficiency(
    floor_cpu: f64,
    cores: usize,
    longest_encode_wall: f64,
    measured_wall: f64,
) -> Option<f64> {
    let bound = (floor_cpu / cores.max(1) as f64).max(longest_encode_wall);
    ratio(bound, measured_wall)
}

/// What was measured for one rendition of one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RenditionQuality {
    /// Average PSNR in dB against the source scaled to the rendition's size.
    pub psnr: f64,
    pub ssim: f64,
    /// Bit/s over all the rendition's segments (video, audio and MPEG-TS overhead).
    pub bitrate: f64,
}

/// The parity check of one rendition: in-process against ffmpeg-single.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParityCheck {
    pub rendition: String,
    pub in_process: Option<RenditionQuality>,
    pub ffmpeg_single: Option<RenditionQuality>,
    /// Why the rendition fails parity; empty when it passes.
    pub failures: Vec<String>,
}

impl ParityCheck {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// `a` and `b` differ by at most `tol` (equal infinities, as from two lossless encodes, too;
/// a NaN never).
fn within(a: f64, b: f64, tol: f64) -> bool {
    a == b || (a - b).abs() <= tol
}

/// Compares one rendition. A missing measurement fails: parity cannot be shown without it.
pub fn check_parity(
    rendition: &str,
    ours: Option<RenditionQuality>,
    theirs: Option<RenditionQuality>,
) -> ParityCheck {
    let mut failures = Vec::new();
    match (ours, theirs) {
        (Some(o), Some(t)) => {
            if !within(o.psnr, t.psnr, PSNR_TOLERANCE_DB) {
                failures.push(format!(
                    "PSNR {:.3} dB vs {:.3} dB (Δ {:+.3} dB, allowed ±{PSNR_TOLERANCE_DB})",
                    o.psnr,
                    t.psnr,
                    o.psnr - t.psnr
                ));
            }
            if !within(o.ssim, t.ssim, SSIM_TOLERANCE) {
                failures.push(format!(
                    "SSIM {:.5} vs {:.5} (Δ {:+.5}, allowed ±{SSIM_TOLERANCE})",
                    o.ssim,
                    t.ssim,
                    o.ssim - t.ssim
                ));
            }
            match ratio(o.bitrate, t.bitrate) {
                Some(r) if (r - 1.0).abs() <= BITRATE_TOLERANCE => {}
                r => failures.push(format!(
                    "bitrate {:.0} kb/s vs {:.0} kb/s ({}, allowed ±{:.0} %)",
                    o.bitrate / 1000.0,
                    t.bitrate / 1000.0,
                    r.map(|r| format!("{:+.1} %", (r - 1.0) * 100.0))
                        .unwrap_or_else(|| "no ratio".into()),
                    BITRATE_TOLERANCE * 100.0
                )),
            }
        }
        (None, _) => failures.push("no in-process measurement".into()),
        (_, None) => failures.push("no ffmpeg-single measurement".into()),
    }
    ParityCheck {
        rendition: rendition.to_string(),
        in_process: ours,
        ffmpeg_single: theirs,
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FFMPEG_STDERR: &str = "\
Output #0, null, to 'pipe:':
  Stream #0:0: Video: wrapped_avframe, yuv420p(progressive), 640x360, q=2-31, 200 kb/s, 25 fps
frame=   50 fps=0.0 q=-0.0 Lsize=N/A time=00:00:02.00 bitrate=N/A speed=5.1x
video:23kB audio:0kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown
[Parsed_psnr_5 @ 0x55c1d2a0f2c0] PSNR y:43.617594 u:46.263937 v:46.538005 average:44.430170 min:41.883621 max:47.022468
[Parsed_ssim_6 @ 0x55c1d2a10b40] SSIM Y:0.990182 (20.079731) U:0.992911 (21.493549) V:0.993206 (21.678853) All:0.990755 (20.342289)
";

    #[test]
    fn psnr_and_ssim_summaries_are_read_from_ffmpeg_stderr() {
        assert_eq!(parse_psnr(FFMPEG_STDERR), Some(44.430170));
        assert_eq!(parse_ssim(FFMPEG_STDERR), Some(0.990755));
        let lossless = "[Parsed_psnr_0 @ 0x1] PSNR y:inf u:inf v:inf average:inf min:inf max:inf";
        assert_eq!(parse_psnr(lossless), Some(f64::INFINITY));
        assert_eq!(parse_psnr("frame=1 fps=0"), None);
        assert_eq!(parse_ssim("[Parsed_ssim_0 @ 0x1] SSIM Y:0.9 (1.0)"), None);
    }

    #[test]
    fn spread_takes_the_median_and_the_extremes() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn ratios_and_efficiencies() {
        assert_eq!(ratio(8.0, 10.0), Some(0.8));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(cpu_efficiency(19.0, 20.0), Some(0.95));
        // 2 cores: 20 s of floor CPU could finish in 10 s, but one encode alone takes 12 s.
        assert_eq!(wall_efficiency(20.0, 2, 12.0, 15.0), Some(0.8));
        assert_eq!(wall_efficiency(20.0, 2, 4.0, 12.5), Some(0.8));
    }

    fn q(psnr: f64, ssim: f64, bitrate: f64) -> Option<RenditionQuality> {
        Some(RenditionQuality {
            psnr,
            ssim,
            bitrate,
        })
    }

    #[test]
    fn parity_passes_within_the_tolerances() {
        let c = check_parity(
            "720p",
            q(40.05, 0.9805, 2_850_000.0),
            q(40.0, 0.9800, 2_800_000.0),
        );
        assert!(c.passed(), "{:?}", c.failures);
        let c = check_parity(
            "1080p",
            q(f64::INFINITY, 1.0, 1e6),
            q(f64::INFINITY, 1.0, 1e6),
        );
        assert!(c.passed(), "{:?}", c.failures);
    }

    #[test]
    fn parity_fails_on_each_measure_and_says_which() {
        let c = check_parity(
            "480p",
            q(39.8, 0.9780, 1_500_000.0),
            q(40.0, 0.9800, 1_400_000.0),
        );
        assert!(!c.passed());
        assert_eq!(c.failures.len(), 3, "{:?}", c.failures);
        assert!(c.failures[0].starts_with("PSNR 39.800 dB vs 40.000 dB"));
        assert!(c.failures[1].starts_with("SSIM"));
        assert!(c.failures[2].contains("+7.1 %"), "{}", c.failures[2]);
        let c = check_parity("480p", None, q(40.0, 0.98, 1e6));
        assert_eq!(c.failures, vec!["no in-process measurement".to_string()]);
        let c = check_parity("480p", q(f64::NAN, 0.98, 1e6), q(40.0, 0.98, 1e6));
        assert!(!c.passed());
    }
}
