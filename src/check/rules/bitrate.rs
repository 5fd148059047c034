//! Bit rates (1.26, 1.27, 1.30, 9.13, 9.14): declared BANDWIDTH and AVERAGE-BANDWIDTH against
//! the peak and average segment bit rates measured per RFC 8216bis, over each variant's playable
//! combinations (its playlist with each audio rendition of its group).

use super::{kbps, off_percent, Outcome};
use crate::check::model::{Ladder, Media, Variant};

/// The playable combinations of one variant: its own playlist (video, and audio muxed in it)
/// with each audio rendition of its group that has a playlist of its own.
pub(super) fn combinations<'a>(l: &'a Ladder, v: &Variant) -> Option<Vec<Vec<&'a Media>>> {
    let main = l.media(&v.uri)?;
    let audio = v
        .audio_group
        .as_deref()
        .map(|g| l.audio_playlists(g))
        .unwrap_or_default();
    if audio.is_empty() {
        return Some(vec![vec![main]]);
    }
    Some(audio.into_iter().map(|a| vec![main, a]).collect())
}

/// The largest sum over the variant's combinations of `rate` (peak or average).
pub(super) fn combined(l: &Ladder, v: &Variant, rate: fn(&Media) -> f64) -> Option<f64> {
    combinations(l, v)?
        .iter()
        .map(|c| c.iter().map(|m| rate(m)).sum::<f64>())
        .reduce(f64::max)
}

/// A 10 % tolerance rule (1.26, 1.27) over every variant.
pub(super) fn within_ten_percent(
    l: &Ladder,
    declared: fn(&Variant) -> Option<u64>,
    attribute: &str,
    rate: fn(&Media) -> f64,
) -> Outcome {
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for v in &l.master.variants {
        let (Some(d), Some(m)) = (declared(v), combined(l, v, rate)) else {
            continue;
        };
        let off = off_percent(d as f64, m);
        let line = format!(
            "{}: {attribute} {} vs measured {} ({off:.1}% off)",
            v.uri,
            kbps(d as f64),
            kbps(m)
        );
        if off > 10.0 {
            failures.push(line.clone());
        }
        if worst.as_ref().is_none_or(|(w, _)| off > *w) {
            worst = Some((off, line));
        }
    }
    match worst {
        None => Outcome::na(format!("no variant with {attribute} and readable segments")),
        Some((_, line)) => Outcome::of(format!("worst {line}"), failures),
    }
}

pub(super) fn r1_26(l: &Ladder) -> Outcome {
    within_ten_percent(
        l,
        |v| v.average_bandwidth,
        "AVERAGE-BANDWIDTH",
        Media::average_bit_rate,
    )
}

pub(super) fn r1_27(l: &Ladder) -> Outcome {
    within_ten_percent(l, |v| Some(v.bandwidth), "BANDWIDTH", Media::peak_bit_rate)
}

pub(super) fn r1_30(l: &Ladder) -> Outcome {
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for v in &l.master.variants {
        let (Some(peak), Some(avg)) = (
            combined(l, v, Media::peak_bit_rate),
            combined(l, v, Media::average_bit_rate),
        ) else {
            continue;
        };
        let ratio = if avg > 0.0 { peak / avg * 100.0 } else { 0.0 };
        let line = format!(
            "{}: peak {} is {ratio:.0}% of average {}",
            v.uri,
            kbps(peak),
            kbps(avg)
        );
        if ratio > 200.0 {
            failures.push(line.clone());
        }
        if worst.as_ref().is_none_or(|(w, _)| ratio > *w) {
            worst = Some((ratio, line));
        }
    }
    match worst {
        None => Outcome::na("no variant with readable segments"),
        Some((_, line)) => Outcome::of(format!("worst {line}"), failures),
    }
}

pub(super) fn r9_13(l: &Ladder) -> Outcome {
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for v in &l.master.variants {
        let Some(combos) = combinations(l, v) else {
            continue;
        };
        let Some(peak) = combined(l, v, Media::peak_bit_rate) else {
            continue;
        };
        let line = format!(
            "{}: BANDWIDTH {} vs largest sum of peaks {} over {} combination(s)",
            v.uri,
            kbps(v.bandwidth as f64),
            kbps(peak),
            combos.len()
        );
        // Half a percent for the millisecond rounding of EXTINF in the measured durations.
        if (v.bandwidth as f64) < peak * 0.995 {
            failures.push(line.clone());
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return Outcome::na("no variant with readable segments");
    }
    let measured = failures.first().unwrap_or(&lines[0]).clone();
    Outcome::of(measured, failures)
}

pub(super) fn r9_14(l: &Ladder) -> Outcome {
    let failures: Vec<String> = l
        .master
        .variants
        .iter()
        .filter(|v| v.average_bandwidth.is_none())
        .map(|v| format!("{}: no AVERAGE-BANDWIDTH", v.uri))
        .collect();
    Outcome::of(
        format!(
            "{} of {} EXT-X-STREAM-INF have AVERAGE-BANDWIDTH",
            l.master.variants.len() - failures.len(),
            l.master.variants.len()
        ),
        failures,
    )
}
