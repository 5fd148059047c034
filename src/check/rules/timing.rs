//! Segmentation and timing (1.13, 7.4–7.7, 8.1–8.3, 8.22): key frames, IDRs, durations declared
//! against the media's own timestamps.

use super::{Outcome, EPSILON};
use crate::check::model::{Ladder, Media, Segment};

/// Video playlists of the variants (I-frame playlists not included).
pub(super) fn video_media(l: &Ladder) -> Vec<&Media> {
    l.playback_media().filter(|m| m.has_video()).collect()
}

pub(super) fn r1_13(l: &Ladder) -> Outcome {
    let frame = l.frame_duration();
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for m in video_media(l) {
        let mut keys: Vec<f64> = m
            .segments
            .iter()
            .filter_map(|s| s.media.as_ref()?.video.as_ref())
            .flat_map(|v| v.keyframes.iter().copied())
            .collect();
        keys.sort_by(f64::total_cmp);
        let end = m
            .segments
            .iter()
            .filter_map(|s| s.media.as_ref()?.video.as_ref())
            .map(|v| v.end)
            .fold(f64::NEG_INFINITY, f64::max);
        // The last GOP runs to the end of the video.
        let gaps = keys.windows(2).map(|w| w[1] - w[0]).chain(
            keys.last()
                .filter(|_| end.is_finite())
                .map(|k| end - k - frame),
        );
        let Some(gap) = gaps.reduce(f64::max) else {
            continue;
        };
        let line = format!("{}: longest key frame interval {gap:.3} s", m.uri);
        if gap > 2.0 + frame / 2.0 {
            failures.push(line.clone());
        }
        if worst.as_ref().is_none_or(|(w, _)| gap > *w) {
            worst = Some((gap, line));
        }
    }
    match worst {
        None => Outcome::na("no video segments measured"),
        Some((_, line)) => Outcome::of(format!("worst {line}"), failures),
    }
}

pub(super) fn r7_4(l: &Ladder) -> Outcome {
    let mut total = 0;
    let mut failures = Vec::new();
    for m in video_media(l) {
        for s in &m.segments {
            let Some(v) = s.media.as_ref().and_then(|x| x.video.as_ref()) else {
                continue;
            };
            total += 1;
            if !v.starts_with_idr || !v.decodes_alone {
                failures.push(format!(
                    "{}: {}",
                    s.uri,
                    if !v.starts_with_idr {
                        "first access unit is not an IDR"
                    } else {
                        "a fresh decoder's first picture is not a key frame at the start"
                    }
                ));
            }
        }
    }
    if total == 0 {
        return Outcome::na("no video segments measured");
    }
    Outcome::of(
        format!(
            "{} of {total} video segments start with an IDR and decode alone",
            total - failures.len()
        ),
        failures,
    )
}

pub(super) fn r7_5(l: &Ladder) -> Outcome {
    let failures: Vec<String> = l
        .playback_media()
        .filter(|m| m.target_duration != 6)
        .map(|m| format!("{}: EXT-X-TARGETDURATION {}", m.uri, m.target_duration))
        .collect();
    let mut targets: Vec<u64> = l.playback_media().map(|m| m.target_duration).collect();
    targets.sort();
    targets.dedup();
    Outcome::of(format!("target durations {targets:?} s"), failures)
}

pub(super) fn r7_6(l: &Ladder) -> Outcome {
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for m in l.playback_media() {
        let tolerance = l.time_unit(m) + EPSILON;
        let n = m.segments.len();
        // The last segment holds whatever remains.
        for s in m.segments.iter().take(n.saturating_sub(1)) {
            let off = (s.duration - 6.0).abs();
            let line = format!("{}: {:.3} s", s.uri, s.duration);
            if off > tolerance {
                failures.push(line.clone());
            }
            if worst.as_ref().is_none_or(|(w, _)| off > *w) {
                worst = Some((off, line));
            }
        }
    }
    match worst {
        None => Outcome::na("no playlist with more than one segment"),
        Some((off, line)) => Outcome::of(
            format!("furthest from 6 s: {line} ({off:.3} s off; tolerance one frame)"),
            failures,
        ),
    }
}

/// A segment's real duration: from its first frame to the next segment's (or to its end).
pub(super) fn actual_durations(l: &Ladder, m: &Media) -> Vec<Option<f64>> {
    let starts = track_starts(l, m);
    (0..m.segments.len())
        .map(|i| Some(starts.get(i + 1).copied().flatten()? - starts[i]?))
        .collect()
}

/// Start of each segment and, last, the end of the last one: video times when the playlist
/// has video, audio times otherwise. An audio playlist's content starts no earlier than the
/// ladder's first video frame: the AAC encoder's priming (1024 samples stamped before it) is
/// not content, and muxed audio is not timed by it either.
pub(super) fn track_starts(l: &Ladder, m: &Media) -> Vec<Option<f64>> {
    let video = m.has_video();
    let span = |s: &Segment| -> Option<(f64, f64)> {
        let media = s.media.as_ref()?;
        if video {
            media.video.as_ref().map(|v| (v.start, v.end))
        } else {
            media.audio.as_ref().map(|a| (a.start, a.end))
        }
    };
    let mut starts: Vec<Option<f64>> = m.segments.iter().map(|s| span(s).map(|x| x.0)).collect();
    starts.push(m.segments.last().and_then(|s| span(s).map(|x| x.1)));
    if let (false, Some(origin), Some(Some(first))) = (video, l.video_start(), starts.first_mut()) {
        *first = first.max(origin);
    }
    starts
}

pub(super) fn r7_7(l: &Ladder) -> Outcome {
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for m in l.playback_media() {
        let actual = actual_durations(l, m);
        for (s, a) in m.segments.iter().zip(actual) {
            let longest = a.unwrap_or(0.0).max(s.duration);
            let over = longest - m.target_duration as f64;
            let line = format!(
                "{}: {longest:.3} s against EXT-X-TARGETDURATION {}",
                s.uri, m.target_duration
            );
            if over > 0.5 + EPSILON {
                failures.push(line.clone());
            }
            if worst.as_ref().is_none_or(|(w, _)| over > *w) {
                worst = Some((over, line));
            }
        }
    }
    match worst {
        None => Outcome::na("no segments"),
        Some((_, line)) => Outcome::of(format!("longest {line}"), failures),
    }
}

pub(super) fn r8_1(l: &Ladder) -> Outcome {
    let mut worst: Option<(f64, String)> = None;
    let mut failures = Vec::new();
    for m in l.playback_media() {
        let starts = track_starts(l, m);
        if starts.iter().any(Option::is_none) || starts.len() < 2 {
            continue;
        }
        let starts: Vec<f64> = starts.into_iter().flatten().collect();
        // E(k) = declared time − real time at boundary k; the error of any contiguous group
        // i..j is E(j+1) − E(i), so the worst group's error is max E − min E.
        let mut declared = 0.0;
        let (mut lo, mut hi) = (0.0f64, 0.0f64);
        for (k, s) in m.segments.iter().enumerate() {
            declared += s.duration;
            let e = declared - (starts[k + 1] - starts[0]);
            lo = lo.min(e);
            hi = hi.max(e);
        }
        let unit = l.time_unit(m);
        let err = hi - lo;
        let line = format!(
            "{}: EXTINF sums drift {:.1} ms from the media (one frame: {:.1} ms)",
            m.uri,
            err * 1000.0,
            unit * 1000.0
        );
        if err > unit + EPSILON {
            failures.push(line.clone());
        }
        if worst.as_ref().is_none_or(|(w, _)| err > *w) {
            worst = Some((err, line));
        }
    }
    match worst {
        None => Outcome::na("no playlist whose segments could all be measured"),
        Some((_, line)) => Outcome::of(format!("worst {line}"), failures),
    }
}

pub(super) fn r8_2(l: &Ladder) -> Outcome {
    let all: Vec<(String, u64)> = l
        .playback_media()
        .map(|m| (m.uri.clone(), m.target_duration))
        .collect();
    let Some(first) = all.first().map(|x| x.1) else {
        return Outcome::na("no media playlists");
    };
    let failures: Vec<String> = all
        .iter()
        .filter(|(_, t)| *t != first)
        .map(|(u, t)| format!("{u}: {t} s, {} has {first} s", all[0].0))
        .collect();
    Outcome::of(
        format!("{} playlists, target duration {first} s", all.len()),
        failures,
    )
}

pub(super) fn r8_3(l: &Ladder) -> Outcome {
    // Audio playlists end on a whole AAC frame: the coarsest playlist's unit is the tolerance.
    let unit = l
        .playback_media()
        .map(|m| l.time_unit(m))
        .fold(l.frame_duration(), f64::max);
    let all: Vec<(&str, f64)> = l
        .playback_media()
        .map(|m| (m.uri.as_str(), m.total_duration()))
        .collect();
    let (Some(lo), Some(hi)) = (
        all.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
        all.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
    ) else {
        return Outcome::na("no media playlists");
    };
    let spread = hi.1 - lo.1;
    let line = format!(
        "{} lasts {:.3} s, {} {:.3} s ({:.1} ms apart)",
        hi.0,
        hi.1,
        lo.0,
        lo.1,
        spread * 1000.0
    );
    let failures = if spread > unit + EPSILON {
        vec![line.clone()]
    } else {
        vec![]
    };
    Outcome::of(line, failures)
}

pub(super) fn r8_22(l: &Ladder) -> Outcome {
    let all: Vec<&Media> = l.playback_media().collect();
    let Some(reference) = all.first() else {
        return Outcome::na("no media playlists");
    };
    let boundaries = |m: &Media| -> Vec<f64> {
        m.segments
            .iter()
            .scan(0.0, |t, s| {
                *t += s.duration;
                Some(*t)
            })
            .collect()
    };
    let r = boundaries(reference);
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for m in &all[1..] {
        let b = boundaries(m);
        // Every boundary but the end of the content, which 8.3 compares.
        let inner = |x: &[f64]| x.len().saturating_sub(1);
        if inner(&b) != inner(&r) {
            failures.push(format!(
                "{}: {} segments, {} has {}",
                m.uri,
                b.len(),
                reference.uri,
                r.len()
            ));
            continue;
        }
        let off = r
            .iter()
            .zip(&b)
            .take(inner(&r))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        worst = worst.max(off);
        if off > l.time_unit(reference).max(l.time_unit(m)) + EPSILON {
            failures.push(format!(
                "{}: a boundary {:.1} ms from {}'s",
                m.uri,
                off * 1000.0,
                reference.uri
            ));
        }
    }
    Outcome::of(
        format!(
            "{} playlists, boundaries at most {:.1} ms apart",
            all.len(),
            worst * 1000.0
        ),
        failures,
    )
}
